"""Stops and faults through the real `rlrunner run --local`, launcher, Ray and Basic player.

SIGTERM to the launcher (what SageMaker sends to stop a job or reclaim a spot instance) and Ctrl-C on
`rlrunner run --local` are stops: a complete checkpoint, `status: stopped`, and `--resume` continues
the timesteps. A full disk is one clear error (exit 4) with the previous checkpoint intact. Every test
checks by pid that nothing it started is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from backends.test_local import launcher_pid, metrics_rows, rlrunner_cli, wait_for_rows
from shared import BASIC_PPO, QUICK_TRAINING

from rlrunner.contract.checkpoints import CheckpointStore, read_checkpoint
from rlrunner.contract.metrics import parse_metrics_line
from rlrunner.processes import run_processes

OVERRIDES = (*QUICK_TRAINING, "training.stop.timesteps=2000", "training.checkpoint_frequency=100")
"""8 iterations of 250 steps; no periodic checkpoint before the end, so a stop's checkpoint is the only one."""


def run_args(run_dir: Path) -> list[str]:
    return ["run", str(BASIC_PPO), "--local", "--run-dir", str(run_dir), *[a for o in OVERRIDES for a in ("--set", o)]]


def check_stopped(run_dir: Path, out: str) -> int:
    """The run dir of a stopped run; returns the iteration it stopped after."""
    stopped = json.loads((run_dir / "output" / "data" / "stopped.json").read_text())
    assert stopped["status"] == "stopped" and stopped["signal"] == "SIGTERM" and stopped["abandoned_iteration"] is False
    newest = CheckpointStore(run_dir / "checkpoints", 3).newest()
    assert newest is not None and newest.path.name == stopped["checkpoint"]
    assert read_checkpoint(newest.path) is not None  # complete: manifest and every file it lists
    assert newest.progress.iteration == stopped["iteration"] == len(metrics_rows(run_dir))
    assert newest.progress.timesteps == stopped["timesteps"] == 250 * stopped["iteration"]
    assert not (run_dir / "output" / "failure").exists()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "stopped" and record["exit_code"] == 130 and record["launcher_exit"] == 0
    assert "Traceback" not in out
    return int(stopped["iteration"])


def resume(command: list[str], run_dir: Path, stopped_at: int, sessions: list[int]) -> None:
    """Run the resume command; it continues from the stop's checkpoint to the end."""
    second = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(second.pid)
    out, _ = second.communicate(timeout=300)
    sessions.append(launcher_pid(run_dir))
    assert second.returncode == 0, out[-4000:]
    assert f"(iteration {stopped_at}, timesteps {250 * stopped_at})" in out
    log = (run_dir / "launcher.log").read_text().rsplit("resuming from", 1)[1]
    after = [v for v in (parse_metrics_line(line) for line in log.splitlines()) if v]
    assert after[0]["iteration"] == stopped_at + 1 and after[0]["timesteps"] == 250 * (stopped_at + 1)
    assert [r["timesteps"] for r in metrics_rows(run_dir)] == [250.0 * i for i in range(1, 9)]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["status"] == "completed" and record["exit_code"] == 0
    assert not (run_dir / "output" / "data" / "stopped.json").exists()
    assert (run_dir / "model" / "policy.onnx").is_file()


def test_sigterm_to_the_launcher_is_a_stop_that_resumes(tmp_path: Path, sessions: list[int]) -> None:
    run_dir = tmp_path / "run"
    first = subprocess.Popen(rlrunner_cli(*run_args(run_dir)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(first.pid)
    wait_for_rows(run_dir, 2, first, timeout=200)
    launcher = launcher_pid(run_dir)
    sessions.append(launcher)
    os.kill(launcher, signal.SIGTERM)
    out, _ = first.communicate(timeout=150)
    assert first.returncode == 130, out[-3000:]
    stopped_at = check_stopped(run_dir, out)
    assert stopped_at >= 2 and "rlrunner: stopped: SIGTERM received" in out
    assert not run_processes(sessions=[launcher, first.pid], roots=[launcher])
    resume(rlrunner_cli(*run_args(run_dir), "--resume"), run_dir, stopped_at, sessions)


def test_ctrl_c_on_run_local_stops_and_prints_the_resume_command(tmp_path: Path, sessions: list[int]) -> None:
    run_dir = tmp_path / "run"
    first = subprocess.Popen(rlrunner_cli(*run_args(run_dir)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sessions.append(first.pid)
    wait_for_rows(run_dir, 2, first, timeout=200)
    launcher = launcher_pid(run_dir)
    sessions.append(launcher)
    os.killpg(first.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
    out, err = first.communicate(timeout=150)
    assert first.returncode == 130, (out + err)[-3000:]
    stopped_at = check_stopped(run_dir, out + err)
    assert not run_processes(sessions=[launcher, first.pid], roots=[launcher])
    last = err.strip().splitlines()[-1]
    prefix = "rlrunner: stopped by the user; resume with: "
    assert last.startswith(prefix), err[-2000:]
    command = shlex.split(last[len(prefix):])
    assert command == ["rlrunner", *run_args(run_dir), "--resume"]
    resume(rlrunner_cli(*command[1:]), run_dir, stopped_at, sessions)


def _can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs `unshare -m` and tmpfs mounts (root)")
def test_disk_full_is_one_error_with_the_previous_checkpoint_intact(tmp_path: Path, sessions: list[int]) -> None:
    """The run dir on a small tmpfs of its own; after the first checkpoint a filler takes all the space left."""
    mount, after = tmp_path / "small", tmp_path / "after"
    mount.mkdir()
    run_dir = mount / "run"
    command = rlrunner_cli(*run_args(run_dir), "--set", "training.checkpoint_frequency=1")
    script = (  # the mount lives as long as this shell: copy the run dir out (without the filler) before it ends
        f"mount -t tmpfs -o size=8m tmpfs {shlex.quote(str(mount))} || exit 99; {shlex.join(command)}; code=$?; "
        f"rm -f {shlex.quote(str(run_dir / 'filler'))}; cp -a {shlex.quote(str(run_dir))} {shlex.quote(str(after))}; exit $code"
    )
    first = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)  # fmt: skip
    sessions.append(first.pid)
    view = Path(f"/proc/{first.pid}/root") / str(run_dir).lstrip("/")  # the run dir as the namespace sees it
    wait_for_rows(view, 1, first, timeout=200)
    deadline = time.monotonic() + 60
    while CheckpointStore(view / "checkpoints", 3).newest() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    sessions.append(launcher_pid(view))
    with open(view / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
    out, err = first.communicate(timeout=200)
    assert first.returncode == 4, (out + err)[-3000:]
    assert "Traceback" not in out + err
    errors = [line for line in (out + err).splitlines() if line.startswith("rlrunner: error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0], (out + err)[-3000:]
    assert "the previous complete checkpoint checkpoint_0000" in errors[0] and "is intact" in errors[0]
    newest = CheckpointStore(after / "checkpoints", 3).newest()
    assert newest is not None and read_checkpoint(newest.path) is not None
    assert not [p for p in (after / "checkpoints").iterdir() if p.name.startswith(".")]  # no partial checkpoint left
    record = json.loads((after / "run.json").read_text())
    assert record["status"] == "failed" and record["exit_code"] == 4
    failure = after / "output" / "failure"
    assert not failure.exists() or "no space left on device" in failure.read_text()
