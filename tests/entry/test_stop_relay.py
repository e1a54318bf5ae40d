"""The image's stop relay: SIGTERM to the container reaches the launcher, not the toolkit that started it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

TOOLKIT = """
import subprocess, sys
sys.exit(subprocess.call([sys.executable, "train_unity.py", "--rlrunner_run_id", "x"]))
"""
LAUNCHER = """
import signal, sys, time
def stop(signum, frame):
    print("launcher: saved a checkpoint, stopping", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("launcher: training", flush=True)
time.sleep(60)
sys.exit(1)
"""


def test_sigterm_reaches_the_launcher_and_the_relay_exits_with_its_status(tmp_path: Path, sessions: list[int]) -> None:
    (tmp_path / "toolkit.py").write_text(TOOLKIT)
    (tmp_path / "train_unity.py").write_text(LAUNCHER)
    relay = subprocess.Popen(
        [sys.executable, "-m", "rlrunner.entry.stop_relay", "sh", "-c", f"{sys.executable} toolkit.py; exit $?"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    sessions.append(relay.pid)
    assert relay.stdout is not None
    assert relay.stdout.readline() == "launcher: training\n"
    time.sleep(0.2)
    os.kill(relay.pid, signal.SIGTERM)  # what tini passes on from `docker stop`
    out, err = relay.communicate(timeout=30)
    assert relay.returncode == 0, err
    assert out == "launcher: saved a checkpoint, stopping\n"
    assert err.startswith("rlrunner: SIGTERM: stopping the launcher (pid ")


def test_sigterm_before_the_launcher_starts_stops_the_command(tmp_path: Path, sessions: list[int]) -> None:
    relay = subprocess.Popen(
        [sys.executable, "-m", "rlrunner.entry.stop_relay", "sleep", "60"], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    sessions.append(relay.pid)
    time.sleep(1.0)
    os.kill(relay.pid, signal.SIGTERM)
    _, err = relay.communicate(timeout=30)
    assert relay.returncode == 128 + signal.SIGTERM
    assert "stopping the launcher" in err
