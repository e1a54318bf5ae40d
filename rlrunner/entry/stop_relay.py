"""The training container's stop relay: `docker stop` (a stopped job, a reclaimed spot instance) reaches the launcher.

SageMaker stops a training container as `docker stop` does: SIGTERM to its first process, SIGKILL after a
grace period. tini (PID 1) passes SIGTERM to the entrypoint, but the toolkit's `train`, which starts the
launcher, dies of it at once (Python's default) and takes the container down before the launcher has saved
its checkpoint. This relay runs the command and, on SIGTERM or SIGINT, sends SIGTERM to every process below
it that runs the entry point (the launcher stops Ray and the players and saves; the toolkit then exits with
the launcher's status); before the launcher exists, to the command itself. It exits with the command's status.

    python -m rlrunner.entry.stop_relay xvfb-run … train
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rlrunner.contract.sagemaker_container import ENTRY_POINT

PROC = Path("/proc")


def descendants(root: int, proc: Path = PROC) -> list[int]:
    """Every process below `root` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    pending = [root]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def runs_entry_point(pid: int, proc: Path = PROC) -> bool:
    """Whether the process is `python …/train_unity.py …` (not a shell whose command line mentions it)."""
    try:
        args = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return len(args) > 1 and Path(args[1].decode(errors="replace")).name == ENTRY_POINT


def launchers(root: int, proc: Path = PROC) -> list[int]:
    """The processes below `root` that run the entry point."""
    return [pid for pid in descendants(root, proc) if runs_entry_point(pid, proc)]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; relay a stop to the launcher; exit with the command's status."""
    command = list(sys.argv[1:] if argv is None else argv)
    if not command:
        print("usage: python -m rlrunner.entry.stop_relay COMMAND [ARG...]", file=sys.stderr)
        return 2
    process = subprocess.Popen(command)

    def relay(signum: int, _frame: FrameType | None) -> None:
        targets = launchers(process.pid) or [process.pid]
        print(f"rlrunner: {signal.Signals(signum).name}: stopping the launcher (pid {', '.join(map(str, targets))})", file=sys.stderr, flush=True)
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, relay)
    code = process.wait()
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
