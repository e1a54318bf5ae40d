"""The launcher's stop: SIGTERM/SIGINT during training finishes (or abandons) the iteration, checkpoints, records the stop.

The training loop runs here with a small stand-in for the RLlib algorithm (its train/save/restore), and
the real signal handlers, checkpoint store and stop record. The real launcher, Ray and player are in
tests/backends/test_stops.py.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from shared import BASIC_PPO

from rlrunner.contract.checkpoints import CheckpointStore
from rlrunner.contract.sagemaker_container import OPT_ML_VAR, read_container_env
from rlrunner.entry import train_unity
from rlrunner.loader import load_spec
from rlrunner.runner import render_experiment
from rlrunner.schema import Experiment


class StandInAlgorithm:
    """What the training loop uses of an RLlib Algorithm; `during(iteration)` runs inside each train()."""

    def __init__(self, during: Callable[[int], None] = lambda _iteration: None) -> None:
        self.iteration = 0
        self.during = during

    def train(self) -> dict[str, Any]:
        self.iteration += 1
        self.during(self.iteration)
        return {"num_env_steps_sampled_lifetime": 100 * self.iteration, "env_runners": {"episode_return_mean": 0.5}}

    def save_to_path(self, folder: str) -> None:
        Path(folder, "state.json").write_text(json.dumps({"iteration": self.iteration}))

    def restore_from_path(self, folder: str) -> None:
        self.iteration = json.loads(Path(folder, "state.json").read_text())["iteration"]


@pytest.fixture
def handlers() -> Iterator[None]:
    """Install the launcher's signal handlers for one test, and put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM)}
    train_unity.install_signal_handlers()
    try:
        yield
    finally:
        signal.alarm(0)
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def experiment(*overrides: str) -> Experiment:
    spec, document = load_spec(BASIC_PPO, ["training.stop.iterations=10", *overrides])
    return Experiment.model_validate(render_experiment(spec.on_this_machine(), spec_dir=document.base_dir))


def signal_at(iteration: int, sig: int = signal.SIGTERM, then_s: float = 0.2, repeat: bool = False) -> Callable[[int], None]:
    def during(current: int) -> None:
        if current == iteration:
            os.kill(os.getpid(), sig)
            if repeat:
                os.kill(os.getpid(), signal.SIGINT)
            time.sleep(then_s)  # the iteration goes on after the signal

    return during


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_signal_finishes_the_iteration_then_checkpoints(tmp_path: Path, handlers: None, sig: int) -> None:
    env = read_container_env({OPT_ML_VAR: str(tmp_path)})
    algo = StandInAlgorithm(signal_at(3, sig))
    with pytest.raises(train_unity.Stopped) as stopped:
        train_unity._train_loop(env, experiment("training.checkpoint_frequency=100"), algo)
    assert stopped.value.signum == sig and not stopped.value.abandoned
    assert stopped.value.progress.iteration == 3 and stopped.value.progress.timesteps == 300
    newest = CheckpointStore(env.checkpoint_dir, 3).newest()
    assert newest is not None and stopped.value.checkpoint == newest.path
    assert newest.path.name == "checkpoint_000003" and json.loads((newest.path / "state.json").read_text()) == {"iteration": 3}


def test_a_second_signal_changes_nothing(tmp_path: Path, handlers: None) -> None:
    env = read_container_env({OPT_ML_VAR: str(tmp_path)})
    with pytest.raises(train_unity.Stopped) as stopped:
        train_unity._train_loop(env, experiment("training.checkpoint_frequency=1"), StandInAlgorithm(signal_at(2, repeat=True)))
    assert stopped.value.signum == signal.SIGTERM and stopped.value.progress.iteration == 2
    assert [c.path.name for c in CheckpointStore(env.checkpoint_dir, 3).complete()] == ["checkpoint_000001", "checkpoint_000002"]


def test_an_iteration_past_the_grace_time_is_abandoned_keeping_the_last_checkpoint(
    tmp_path: Path, handlers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(train_unity, "ITERATION_GRACE_S", 1)
    env = read_container_env({OPT_ML_VAR: str(tmp_path)})
    started = time.monotonic()
    with pytest.raises(train_unity.Stopped) as stopped:
        train_unity._train_loop(env, experiment("training.checkpoint_frequency=2"), StandInAlgorithm(signal_at(3, then_s=30)))
    assert time.monotonic() - started < 10
    assert stopped.value.abandoned and stopped.value.progress.iteration == 2
    assert stopped.value.checkpoint is not None and stopped.value.checkpoint.name == "checkpoint_000002"
    assert [c.path.name for c in CheckpointStore(env.checkpoint_dir, 3).complete()] == ["checkpoint_000002"]


def test_resume_after_a_stop_continues_the_iterations(tmp_path: Path, handlers: None) -> None:
    env = read_container_env({OPT_ML_VAR: str(tmp_path)})
    with pytest.raises(train_unity.Stopped):
        train_unity._train_loop(env, experiment("training.checkpoint_frequency=100"), StandInAlgorithm(signal_at(4)))
    seen: list[int] = []
    final = train_unity._train_loop(env, experiment("training.checkpoint_frequency=100"), StandInAlgorithm(seen.append))
    assert seen == [5, 6, 7, 8, 9, 10] and final.name == "checkpoint_000010"


def test_a_signal_outside_the_loop_interrupts_and_survives_being_copied(handlers: None) -> None:
    with pytest.raises(train_unity.Interrupted) as interrupted:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert str(interrupted.value) == "SIGTERM" and interrupted.value.signum == signal.SIGTERM
    again = type(interrupted.value)(*interrupted.value.args)  # what Ray does to an exception it passes on
    assert str(again) == "SIGTERM" and copy.copy(interrupted.value).signum == signal.SIGTERM


def test_write_stopped_records_signal_progress_and_checkpoint(tmp_path: Path) -> None:
    env = read_container_env({OPT_ML_VAR: str(tmp_path)})
    from rlrunner.contract.checkpoints import Progress

    train_unity.write_stopped(env, signal.SIGTERM, Progress(4, 1000, 9.5), tmp_path / "checkpoints" / "checkpoint_000004", abandoned=False)
    assert json.loads(env.stopped_file.read_text()) == {
        "status": "stopped", "signal": "SIGTERM", "iteration": 4, "timesteps": 1000, "checkpoint": "checkpoint_000004",
        "abandoned_iteration": False, "iteration_grace_s": 60,
    }  # fmt: skip
    assert env.stopped_file == tmp_path / "output" / "data" / "stopped.json" and not env.failure_file.exists()
