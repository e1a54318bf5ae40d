"""Curriculum lessons (mlagents-learn's `environment_parameters.<name>.curriculum`): the schema, the launcher's
advance on the episode return mean, delivery to a real Basic player, and a real short run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from shared import BASIC_PPO, QUICK_TRAINING

from rlrunner.contract.checkpoints import CheckpointStore
from rlrunner.contract.metrics import parse_metrics_line
from rlrunner.entry.curriculum import Curriculum
from rlrunner.entry.unity_env import launch_options
from rlrunner.envs import resolve_environment
from rlrunner.loader import SpecError, load_spec
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity import launch

LESSONS = (
    "environment.parameters.start_position={curriculum: ["
    "{name: far, value: 10, completion_criteria: {measure: reward, threshold: -10, min_lesson_length: 1}}, "
    "{name: near, value: 16}]}"
)
"""Basic starting at 10, then (once any episode ended) at 16, one step from the large goal."""


def environment(curriculum: list[dict[str, object]], **extra: object) -> EnvironmentSpec:
    return EnvironmentSpec.model_validate({"name": "Basic", "parameters": {"start_position": {"curriculum": curriculum}}, **extra})


def test_curriculum_advances_on_the_return_mean_after_the_minimum_episodes() -> None:
    spec = environment([
        {"name": "a", "value": 1.0, "completion_criteria": {"threshold": 0.5, "min_lesson_length": 10}},
        {"name": "b", "value": {"sampler_type": "uniform", "sampler_parameters": {"min_value": 2, "max_value": 4}},
         "completion_criteria": {"threshold": 0.9, "behavior": "Basic"}},
        {"name": "c", "value": 3.0},
    ])  # fmt: skip
    curriculum = Curriculum.of(spec)
    assert curriculum is not None and curriculum.values() == {"start_position": 1.0}
    assert curriculum.advance(0.9, 6) == {}  # 6 episodes < min_lesson_length 10
    assert curriculum.advance(0.4, 6) == {}  # 12 episodes, but below the threshold
    changed = curriculum.advance(0.6, 1)
    assert changed == {"start_position": "start_position: lesson 1 (b) after 13 episodes of a at return 0.6 >= 0.5"}
    assert curriculum.values()["start_position"].sampler_type == "uniform"  # type: ignore[union-attr]
    assert curriculum.advance(0.95, 5, {"Basic": 0.2}) == {}  # the behaviour's own mean counts
    assert list(curriculum.advance(0.1, 5, {"Basic": 0.95})) == ["start_position"]
    assert curriculum.values() == {"start_position": 3.0} and curriculum.advance(5.0, 100) == {}  # the last lesson stays
    restarted = Curriculum.of(spec)
    assert restarted is not None and list(restarted.restore(curriculum.state())) == ["start_position"]
    assert restarted.values() == {"start_position": 3.0}
    assert Curriculum.of(EnvironmentSpec.model_validate({"name": "Basic", "parameters": {"start_position": 3}})) is None


@pytest.mark.parametrize(
    ("lessons", "message"),
    [
        ("[{name: a, value: 1}, {name: b, value: 2}]", "curriculum[0] (a): needs completion_criteria (every lesson but the last)"),
        ("[{name: a, value: 1, completion_criteria: {threshold: 1, measure: progress}}, {name: b, value: 2}]", "measure"),
        ("[]", "curriculum"),
    ],
)
def test_curriculum_errors_name_the_parameter(lessons: str, message: str) -> None:
    with pytest.raises(SpecError) as error:
        load_spec(BASIC_PPO, [f"environment.parameters.start_position={{curriculum: {lessons}}}"])
    text = "\n".join(str(problem) for problem in error.value.problems)
    assert "environment.parameters.start_position.curriculum" in text and message in text


def test_lesson_values_reach_an_open_player_and_later_ones(player_gone: Callable[[int, int], None]) -> None:
    spec = environment(
        [{"name": "far", "value": 10, "completion_criteria": {"threshold": 0}}, {"name": "near", "value": 16}], base_port=7330, timeout_s=20
    )
    first = launch.launch_unity(resolve_environment("Basic"), launch_options(spec, num_areas=1, seed=0, log_dir=None))
    assert first.process is not None
    pid, port = first.process.pid, first.port

    def start_position(env: launch.ManagedUnityEnvironment) -> int:
        decision, _ = env.get_steps("Basic?team=0")
        return int(np.argmax(decision.obs[0][0]))

    try:
        first.reset()
        assert start_position(first) == 10
        assert launch.set_lesson_values({"start_position": 16.0}) == 1
        first.reset()
        assert start_position(first) == 16
    finally:
        first.close()
        launch._lesson_values.clear()
    player_gone(pid, port)


def test_a_short_run_advances_the_lesson_and_the_player_gets_it(tmp_path: Path, sessions: list[int]) -> None:
    run_dir = tmp_path / "run"
    quick = [a for o in (*QUICK_TRAINING, "training.stop.timesteps=1250", "training.checkpoint_frequency=5", LESSONS) for a in ("--set", o)]
    command = [sys.executable, "-c", "from rlrunner.cli import main; main()", "run", str(BASIC_PPO), "--local", "--run-dir", str(run_dir), *quick]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(process.pid)
    out, _ = process.communicate(timeout=300)
    assert process.returncode == 0, out[-4000:]
    sessions.append(int(json.loads((run_dir / "run.json").read_text())["launcher_pid"]))
    assert "rlrunner: curriculum: start_position: lesson 1 (near) after " in out  # on the console too
    log = (run_dir / "launcher.log").read_text()
    before, after = log.split("rlrunner: curriculum: ", 1)
    assert "of far at return " in after.splitlines()[0] and "sent to " in after.splitlines()[0]
    lengths_before = [v["episode_len_mean"] for v in map(parse_metrics_line, before.splitlines()) if v]
    lengths_after = [v["episode_len_mean"] for v in map(parse_metrics_line, after.splitlines()[1:]) if v]
    assert lengths_before and len(lengths_after) >= 2
    players = "".join(path.read_text() for path in (run_dir / "output" / "data" / "players").glob("*.log"))
    assert "environment parameter start_position = 16" in players
    assert min(lengths_after[1:]) < lengths_before[0]  # one step from the large goal: shorter episodes
    newest = CheckpointStore(run_dir / "checkpoints", keep=3).newest()
    assert newest is not None and newest.meta["curriculum_lessons"] == {"start_position": 1}
    longer = subprocess.run(
        [*command, "--set", "training.stop.timesteps=1500", "--resume"], capture_output=True, text=True, timeout=300, start_new_session=True
    )
    assert longer.returncode == 0, (longer.stdout + longer.stderr)[-4000:]
    sessions.append(int(json.loads((run_dir / "run.json").read_text())["launcher_pid"]))
    assert "rlrunner: curriculum: start_position: lesson 1 (near), as checkpointed (sent to " in longer.stdout
