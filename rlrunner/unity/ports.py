"""Ports: the one place that probes, reserves or picks a TCP port.

A Unity player gets a loopback port reserved across processes (an exclusive ``flock`` on a lock
file, then a bind probe), so that env runners started side by side never race for one port.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlrunner.unity.errors import UnityEnvError

LOOPBACK = "127.0.0.1"
PORT_SPAN = 2000
"""How many ports above ``base_port`` are probed before giving up."""


@dataclass
class PortLease:
    """A loopback port reserved for one player, held by an exclusive ``flock`` on a lock file."""

    port: int
    _lock_fd: int

    def release(self) -> None:
        """Free the port for other processes (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock; a crashed process drops it too
            self._lock_fd = -1


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether nothing listens on ``host:port`` now (a bind probe, SO_REUSEADDR as a server would set)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def reserve_port(base_port: int, span: int = PORT_SPAN, skip: Sequence[int] = ()) -> PortLease:
    """Reserve the first free loopback port in [base_port, base_port + span), across processes."""
    directory = _lock_dir()
    for port in range(base_port, min(base_port + span, 65536)):
        if port in skip:
            continue
        fd = os.open(directory / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if port_is_free(port):
            return PortLease(port, fd)
        os.close(fd)
    raise UnityEnvError(f"{LOOPBACK}:{base_port}-{base_port + span - 1}: no free port for a Unity player")


def free_port() -> int:
    """A port free on every interface now, picked by the OS.

    Nothing holds it afterwards: bind it soon, and expect another process to win it rarely.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "rlrunner-ports"
    path.mkdir(mode=0o777, exist_ok=True)
    return path


__all__ = ["LOOPBACK", "PORT_SPAN", "PortLease", "free_port", "port_is_free", "reserve_port"]
