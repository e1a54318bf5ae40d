"""Process hygiene for the launcher and the local backend: whatever a run starts is gone when it ends.

Ray starts its workers in their own process groups and mlagents starts each player in its own
session, so killing a process group is not enough. The launcher makes itself a "child subreaper"
(orphans of its descendants re-parent to it) and stops every descendant before it exits. The local
backend, for a launcher that died, starts it in a new session and stops the members of that session
(Ray), their descendants, and the processes whose command line names the run directory (players
write their logs there), which also finds players orphaned by a crashed Ray worker. It never
touches other processes of its own, so several runs can share one backend process (a sweep).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class ProcessInfo:
    """One row of /proc: parent, session, state."""

    pid: int
    ppid: int
    session: int
    state: str

    @property
    def alive(self) -> bool:
        """Not a zombie (a zombie has exited; only its parent's wait() removes it)."""
        return self.state not in ("Z", "X")


def process_table() -> dict[int, ProcessInfo]:
    """Every process visible in /proc."""
    table: dict[int, ProcessInfo] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3:
            table[int(entry)] = ProcessInfo(int(entry), int(fields[1]), int(fields[3]), fields[0])
    return table


def become_subreaper() -> bool:
    """Make orphaned descendants re-parent to this process (Linux); return whether it worked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def descendants(roots: Iterable[int], table: dict[int, ProcessInfo] | None = None) -> set[int]:
    """Every live descendant of the `roots` (not the roots themselves)."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for info in table.values():
        if info.alive:
            children.setdefault(info.ppid, []).append(info.pid)
    found: set[int] = set()
    pending = list(roots)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def session_members(session: int, table: dict[int, ProcessInfo] | None = None) -> set[int]:
    """Live processes of a session (a process started with start_new_session=True leads one)."""
    table = process_table() if table is None else table
    return {info.pid for info in table.values() if info.session == session and info.alive}


def mentioning(text: str, table: dict[int, ProcessInfo] | None = None) -> set[int]:
    """Live processes whose command line contains `text` (e.g. a run directory in a player's -logFile)."""
    table = process_table() if table is None else table
    needle = text.encode()
    found: set[int] = set()
    for info in table.values():
        if not info.alive:
            continue
        try:
            with open(f"/proc/{info.pid}/cmdline", "rb") as handle:
                if needle in handle.read():
                    found.add(info.pid)
        except OSError:
            continue
    return found


def run_processes(*, sessions: Iterable[int] = (), roots: Iterable[int] = (), mention: str | None = None) -> set[int]:
    """Live processes of the `sessions`, the `roots`' descendants, those whose command line contains
    `mention`, and the descendants of all of those (never this process)."""
    table = process_table()
    members: set[int] = set()
    for session in sessions:
        members |= session_members(session, table)
    members |= descendants(list(roots), table)
    if mention:
        members |= mentioning(mention, table)
    return (members | descendants(members, table)) - {os.getpid()}


def terminate(pids: Iterable[int], grace_s: float = 3.0) -> set[int]:
    """SIGTERM the processes, SIGKILL those left after `grace_s`; reap the ones that are our children."""
    pending = {pid for pid in pids if pid != os.getpid()}
    stopped = set(pending)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pending:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while pending and time.monotonic() < deadline:
            _reap(pending)
            table = process_table()
            pending = {pid for pid in pending if pid in table and table[pid].alive}
            if pending:
                time.sleep(0.05)
        if not pending:
            break
    _reap(stopped)
    return stopped


def _reap(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def stop_descendants(grace_s: float = 3.0) -> set[int]:
    """Stop every process this one started, directly or not (it should be a subreaper); return them."""
    stopped = terminate(descendants([os.getpid()]), grace_s)
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:  # the launcher owns all its children
            pass
    return stopped
