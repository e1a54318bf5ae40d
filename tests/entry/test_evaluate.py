"""evaluate_policy and `rlrunner evaluate`: the exported ONNX policy played in Basic through the real protocol."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from policy_models import write_model_dir  # noqa: E402

from rlrunner.cli import main  # noqa: E402
from rlrunner.contract.errors import UsageError  # noqa: E402
from rlrunner.entry.evaluate import evaluate_policy, evaluation_env_config, play_vector, recorded_executable  # noqa: E402
from rlrunner.entry.unity_env import make_unity_env  # noqa: E402
from rlrunner.envs import resolve_environment  # noqa: E402
from rlrunner.schema import EnvironmentSpec  # noqa: E402
from rlrunner.unity.errors import UnityEnvError  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    r"ignore:distutils Version classes are deprecated:DeprecationWarning:mlagents_envs\.environment"
)

STAY, LEFT, RIGHT = 0, 1, 2
OPTIMAL = 0.93  # 7 moves right: 7 x -0.01 + 1.0


class Recorder:
    """An env factory that makes the real Unity env and remembers it (to check the player is gone)."""

    def __init__(self, players_of: Callable[[Any], tuple[int, int]]) -> None:
        self.players: list[tuple[int, int]] = []
        self._players_of = players_of

    def __call__(self, config: Mapping[str, Any]) -> Any:
        env = make_unity_env(config)
        self.players.append(self._players_of(env))
        return env


def test_evaluate_optimal_policy_scores_0_93_and_closes_the_player(
    tmp_path: Path, players_of: Callable[[Any], tuple[int, int]], player_gone: Callable[[int, int], None]
) -> None:
    model_dir = write_model_dir(tmp_path / "model", constant=RIGHT)
    recorder = Recorder(players_of)
    result = evaluate_policy(model_dir, episodes=5, env_factory=recorder)
    assert result["episodes"] == 5
    assert result["mean"] == result["max"] == result["min"] == pytest.approx(OPTIMAL, abs=1e-6)
    assert (result["mean_length"], result["lengths"]) == (7.0, [7] * 5)
    # the contract of every run: the figures per behaviour as the scene names it (here the one, also at the top)
    assert list(result["behaviors"]) == ["Basic?team=0"] and result["behaviors"]["Basic?team=0"]["mean"] == result["mean"]
    player_gone(*recorder.players[0])


def test_evaluate_plays_areas_side_by_side(tmp_path: Path) -> None:
    environment = {"name": "Basic", "num_areas": 4, "max_episode_steps": 50, "timeout_s": 30.0}
    model_dir = write_model_dir(tmp_path / "model", constant=LEFT, environment=environment)
    result = evaluate_policy(model_dir, episodes=10)
    assert result["episodes"] == 10
    assert result["returns"] == pytest.approx([0.07] * 10, abs=1e-6)  # 3 moves left: 3 x -0.01 + 0.1
    assert result["lengths"] == [3] * 10


def test_evaluate_step_limit_truncates_a_policy_that_never_ends(tmp_path: Path) -> None:
    environment = {"name": "Basic", "timeout_s": 30.0}  # no max_episode_steps: standing still never ends
    model_dir = write_model_dir(tmp_path / "model", constant=STAY, environment=environment)
    result = evaluate_policy(model_dir, episodes=2, step_limit=20)
    assert result["lengths"] == [20, 20]
    assert result["mean"] == pytest.approx(-0.2, abs=1e-5)


def test_evaluate_stochastic_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    environment = {"name": "Basic", "num_areas": 2, "max_episode_steps": 30, "timeout_s": 30.0}
    model_dir = write_model_dir(tmp_path / "model", environment=environment)
    first = evaluate_policy(model_dir, episodes=6, greedy=False, seed=11)
    assert first["returns"] == evaluate_policy(model_dir, episodes=6, greedy=False, seed=11)["returns"]
    assert first["greedy"] is False and first["seed"] == 11


def test_evaluate_closes_the_env_when_the_policy_fails(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "model", obs_size=20)

    class WrongObs:
        closed = False

        def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
            return np.zeros(7, np.float32), {}

        def close(self) -> None:
            self.closed = True

    env = WrongObs()
    with pytest.raises(ValueError, match=r"^observations: expected shape \[batch, 20\], got \[1, 7\]$"):
        evaluate_policy(model_dir, episodes=1, env_factory=lambda config: env)
    assert env.closed


class ScriptedVectorEnv:
    """Two areas with next-step autoreset: area 0 ends every 2 steps (+1 each), area 1 every 3 steps (+1 each)."""

    num_envs = 2

    def __init__(self) -> None:
        self.t = 0
        self.resetting = np.zeros(2, dtype=bool)
        self.steps = np.zeros(2, dtype=np.int64)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        return np.zeros((2, 20), np.float32), {}

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        rewards = np.where(self.resetting, 0.0, 1.0)
        self.steps = np.where(self.resetting, 0, self.steps + 1)
        terminated = ~self.resetting & (self.steps == np.array([2, 3]))
        self.resetting = terminated.copy()
        return np.zeros((2, 20), np.float32), rewards, terminated, np.zeros(2, dtype=bool), {}


def test_play_vector_skips_autoreset_steps_and_shares_episodes_between_areas() -> None:
    returns, lengths = play_vector(ScriptedVectorEnv(), lambda obs: np.zeros(len(obs), np.int64), 5)
    assert lengths == [2, 2, 3, 3, 3]  # a fixed share per area (2 and 3), so short episodes are not favoured
    assert returns == [2.0, 2.0, 3.0, 3.0, 3.0]


def test_evaluation_env_config_adds_seed_and_a_step_limit() -> None:
    executable = Path("/builds/Basic.x86_64")
    config = evaluation_env_config(EnvironmentSpec(name="Basic"), executable, seed=3, step_limit=None)
    assert config == {
        "environment": EnvironmentSpec(name="Basic", max_episode_steps=1000),
        "executable": "/builds/Basic.x86_64",
        "seed": 3,
        "log_dir": None,
        "players": 1,
    }
    recorded = EnvironmentSpec(name="Basic", max_episode_steps=100)
    assert evaluation_env_config(recorded, executable, seed=None, step_limit=None)["environment"].max_episode_steps == 100
    assert evaluation_env_config(recorded, executable, seed=None, step_limit=20)["environment"].max_episode_steps == 20


def test_recorded_executable_resolves_a_name_and_never_a_recorded_program() -> None:
    assert recorded_executable(EnvironmentSpec(name="Basic")) == resolve_environment("Basic")
    with pytest.raises(UsageError) as refused:
        recorded_executable(EnvironmentSpec(binary="/builds/Game.x86_64"))
    assert str(refused.value) == (
        "environment.binary: the model dir names the program /builds/Game.x86_64; evaluate starts a program from a model dir "
        "only when you name it: --binary /builds/Game.x86_64 (or --env NAME for a registry player)"
    )
    with pytest.raises(UsageError) as unknown:
        recorded_executable(EnvironmentSpec(name="Basicc"))
    assert "is neither bundled nor in ML-Agents' registry; name the player with --env NAME or --binary PATH" in str(unknown.value)
    with pytest.raises(UnityEnvError) as excinfo:
        recorded_executable(EnvironmentSpec(binary="s3://bucket/builds/Game.x86_64"))
    assert str(excinfo.value) == (
        "environment.binary: s3://bucket/builds/Game.x86_64 is on S3; evaluation needs a local player build"
    )


def test_cli_evaluate_run_dir_writes_evaluation_json(tmp_path: Path) -> None:
    write_model_dir(tmp_path / "run" / "model", constant=RIGHT)
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--episodes", "3", "--output", "json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    written = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert printed == written
    assert written["episodes"] == 3
    assert written["mean"] == written["max"] == written["min"] == pytest.approx(OPTIMAL, abs=1e-6)


def test_cli_evaluate_prints_a_plain_table_off_a_terminal(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "run" / "model", constant=RIGHT)
    result = CliRunner().invoke(main, ["evaluate", str(model_dir), "--episodes", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "evaluation (greedy)",
        "episodes              2",
        "mean             0.9300",
        "max              0.9300",
        "min              0.9300",
        "mean length         7.0",
        f"written to {tmp_path / 'run' / 'evaluation.json'}",
    ]


def test_cli_evaluate_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"{tmp_path}: not a model dir (policy.onnx, policy.json missing)"


def test_cli_evaluate_never_starts_a_program_named_by_a_model_dir_from_elsewhere(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    program = tmp_path / "evil.sh"
    program.write_text(f"#!/bin/sh\ntouch {marker}\n")
    program.chmod(0o755)
    model_dir = write_model_dir(tmp_path / "model", constant=RIGHT, environment={"binary": str(program)})
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "rlrunner.cli", "evaluate", str(model_dir)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr == (
        f"error: environment.binary: the model dir names the program {program}; evaluate starts a program from a model dir "
        f"only when you name it: --binary {program} (or --env NAME for a registry player)\n"
    )
    assert not marker.exists() and not (tmp_path / "evaluation.json").exists()
    for args in (["--binary", str(tmp_path / "missing")], ["--env", "Basicc"]):
        refused = CliRunner().invoke(main, ["evaluate", str(model_dir), "--episodes", "1", *args])
        assert refused.exit_code == 2 and not marker.exists(), refused.output
    named = CliRunner().invoke(main, ["evaluate", str(model_dir), "--episodes", "2", "--env", "Basic", "--output", "json"])
    assert named.exit_code == 0, named.output
    assert json.loads(named.output)["mean"] == pytest.approx(OPTIMAL, abs=1e-6)
