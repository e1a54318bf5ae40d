"""Fixtures that launch the bundled Basic player and prove that it is gone afterwards."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import pytest

from rlrunner.entry.unity_env import LaunchOptions, ManagedUnityEnvironment, launch_unity
from rlrunner.envs import resolve_environment


def assert_player_gone(pid: int, port: int) -> None:
    """The player process is reaped and nothing listens on its port any more."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


@pytest.fixture
def basic_unity() -> Iterator[ManagedUnityEnvironment]:
    """A real UnityEnvironment (loopback subclass) connected to the bundled Basic player."""
    env = launch_unity(resolve_environment("Basic"), LaunchOptions(base_port=7300, timeout_s=20))
    assert env.process is not None
    pid, port = env.process.pid, env.port
    yield env
    env.close()
    assert_player_gone(pid, port)


@pytest.fixture
def player_gone() -> Callable[[int, int], None]:
    """``assert_player_gone(pid, port)`` for tests that manage their own players."""
    return assert_player_gone
