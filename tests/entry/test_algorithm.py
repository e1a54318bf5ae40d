"""experiment -> RLlib AlgorithmConfig (pure), and every supported algorithm built and trained for one iteration."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from shared import BASIC_PPO, ROOT

from rlrunner.entry import algorithm
from rlrunner.processes import descendants, run_processes, terminate
from rlrunner.runner import render_experiment
from rlrunner.schema import Experiment, ExperimentSpec

SMOKE = Path(__file__).with_name("algorithm_smoke.py")
SLIDE_PLAYER = Path(__file__).with_name("continuous_player.py")


def experiment_from(data: dict[str, Any], spec_dir: Path = ROOT / "experiments") -> Experiment:
    """Validate spec data with the real schema and render the launcher's experiment from it."""
    spec = ExperimentSpec.model_validate(data)
    return Experiment.model_validate(render_experiment(spec.on_this_machine(), spec_dir=spec_dir))


def basic_ppo(**changes: Any) -> dict[str, Any]:
    """experiments/basic_ppo.yaml as data, with top-level sections updated."""
    data = yaml.safe_load(BASIC_PPO.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return data


# --- pure ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "cpus", "expected"), [("auto", 2, 0), ("auto", 1, 0), ("auto", 3, 2), ("auto", 8, 7), (3, 2, 3), (0, 4, 0)])
def test_resolve_env_runners_auto_samples_in_the_driver_up_to_2_cpus(setting: Any, cpus: int, expected: int) -> None:
    assert algorithm.resolve_env_runners(setting, cpus) == expected


def test_resolve_env_runners_auto_in_a_cluster_is_remote() -> None:
    assert algorithm.resolve_env_runners("auto", 2, cluster=True) == 1


@pytest.mark.parametrize(
    ("setting", "cpus", "runners", "areas", "expected"),
    [("auto", 2, 0, 1, 2), ("auto", 2, 1, 1, 2), ("auto", 8, 7, 1, 1), ("auto", 16, 2, 1, 8), ("auto", 2, 0, 4, 1), (3, 2, 1, 1, 3)],
)
def test_resolve_players_auto_is_cpus_per_sampling_process(setting: Any, cpus: int, runners: int, areas: int, expected: int) -> None:
    assert algorithm.resolve_players(setting, cpus, runners, areas) == expected


def test_build_algorithm_config_players_use_one_overlapped_vector_env() -> None:
    data = basic_ppo(training={"stop": {"timesteps": 1}, "env_runners": 1, "envs_per_env_runner": 3})
    config = algorithm.build_algorithm_config(experiment_from(data), num_cpus=2, env_config={"seed": 0})
    assert config.num_env_runners == 1 and config.num_envs_per_env_runner == 3
    assert config.gym_env_vectorize_mode == gym.VectorizeMode.VECTOR_ENTRY_POINT
    assert config.env_config == {"seed": 0, "players": 3}


def test_build_algorithm_config_maps_basic_ppo() -> None:
    experiment = experiment_from(basic_ppo())
    env_config = algorithm.env_config(experiment, Path("/builds/Basic.x86_64"), log_dir="/tmp/logs")
    config = algorithm.build_algorithm_config(experiment, num_cpus=2, env_config=env_config)

    assert type(config).__name__ == "PPOConfig"
    assert (config.gamma, config.kl_coeff, config.lr) == (0.995, 1.0, 1e-4)
    assert (config.num_epochs, config.minibatch_size, config.train_batch_size_per_learner) == (20, 100, 500)
    assert config.num_env_runners == 0 and config.num_envs_per_env_runner == 2  # auto on 2 CPUs
    assert config.create_env_on_local_worker
    assert config.seed == 0
    assert config.restart_failed_env_runners is True
    assert config.framework_str == "torch"
    assert config.enable_rl_module_and_learner and config.enable_env_runner_and_connector_v2
    assert config.env == algorithm.ENV_NAME
    assert config.env_config == {**env_config, "players": 2}
    assert env_config == {
        "environment": experiment.environment,
        "executable": "/builds/Basic.x86_64",
        "seed": 0,
        "log_dir": "/tmp/logs",
        "players": 1,
    }


def test_build_algorithm_config_areas_use_one_vector_env_per_runner() -> None:
    data = basic_ppo(environment={"name": "Basic", "num_areas": 4}, training={"stop": {"timesteps": 1}, "env_runners": 2})
    experiment = experiment_from(data)
    config = algorithm.build_algorithm_config(experiment, num_cpus=2, env_config={})
    assert config.num_env_runners == 2
    assert config.num_envs_per_env_runner == 4
    assert config.gym_env_vectorize_mode == gym.VectorizeMode.VECTOR_ENTRY_POINT
    config.validate()


def test_build_algorithm_config_areas_and_envs_per_runner_conflict() -> None:
    data = basic_ppo(environment={"name": "Basic", "num_areas": 4}, training={"stop": {"timesteps": 1}, "envs_per_env_runner": 2})
    with pytest.raises(algorithm.AlgorithmSetupError) as error:
        algorithm.build_algorithm_config(experiment_from(data), num_cpus=2, env_config={})
    assert str(error.value) == (
        "training.envs_per_env_runner (2) and environment.num_areas (4): use one of them; each env runner "
        "drives either several players or one player with several areas"
    )


def test_build_algorithm_config_custom_module_spec() -> None:
    data = yaml.safe_load((ROOT / "experiments" / "custom_model.yaml").read_text())
    experiment = experiment_from(data)

    class Marker:
        pass

    config = algorithm.build_algorithm_config(experiment, num_cpus=2, env_config={}, module_class=Marker)
    spec = config.rl_module_spec
    assert spec.module_class is Marker
    assert spec.model_config == {"hidden": 32, "layers": 1}


def test_build_algorithm_config_default_model_keys() -> None:
    data = basic_ppo(algorithm={"name": "PPO", "hyperparameters": {"lr": 0.001}, "model": {"fcnet_hiddens": [64, 64], "vf_share_layers": False}})
    config = algorithm.build_algorithm_config(experiment_from(data), num_cpus=2, env_config={})
    assert config.model_config["fcnet_hiddens"] == [64, 64]
    assert config.model_config["vf_share_layers"] is False


def test_check_spaces_rejects_dqn_on_continuous_actions() -> None:
    box = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    with pytest.raises(algorithm.AlgorithmSetupError) as error:
        algorithm.check_spaces("DQN", gym.spaces.Box(-1.0, 1.0, (3,), np.float32), box)
    assert str(error.value) == (
        "algorithm.name: DQN does not support the environment's Box action space Box(-1.0, 1.0, (2,), float32); "
        "it supports Discrete (use PPO, APPO, IMPALA or SAC for continuous actions)"
    )


@pytest.mark.parametrize("name", ["PPO", "APPO", "IMPALA", "SAC"])
def test_check_spaces_accepts_continuous_actions(name: str) -> None:
    algorithm.check_spaces(name, gym.spaces.Box(-1, 1, (3,), np.float32), gym.spaces.Box(-1, 1, (2,), np.float32))


def test_check_spaces_rejects_tuple_observations() -> None:
    space = gym.spaces.Tuple([gym.spaces.Box(0, 1, (2,), np.float32)])
    with pytest.raises(algorithm.AlgorithmSetupError, match=r"^environment: observation space Tuple"):
        algorithm.check_spaces("PPO", space, gym.spaces.Discrete(3))


# --- every algorithm, one iteration, through the real player and Ray --------------------------


def slide_binary(tmp_path: Path) -> Path:
    """A Linux-build-like launcher for the continuous test player."""
    path = tmp_path / "Slide.x86_64"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SLIDE_PLAYER}" "$@"\n')
    path.chmod(0o755)
    return path


def case(case_id: str, name: str, hyperparameters: dict[str, Any], *, binary: Path | None = None) -> dict[str, Any]:
    """One smoke case: an experiment (validated by the schema) for `algorithm_smoke.py`."""
    environment = {"name": "Basic", "max_episode_steps": 50} if binary is None else {"binary": str(binary), "max_episode_steps": 30}
    data = basic_ppo(
        environment=environment,
        algorithm={"name": name, "hyperparameters": hyperparameters, "model": {"fcnet_hiddens": [32]}},
        training={"stop": {"iterations": 1}, "env_runners": 1},
    )
    data["environment"] = environment
    return {"id": case_id, "spec": render_experiment(ExperimentSpec.model_validate(data).on_this_machine())}


def test_algorithms_build_train_and_export(tmp_path: Path) -> None:
    """PPO, APPO, IMPALA, DQN, SAC on Basic; PPO and SAC on a continuous Unity env: 1 iteration, export, ONNX agrees."""
    slide = slide_binary(tmp_path)
    quick = {"min_time_s_per_iteration": 1}
    replay = {"train_batch_size_per_learner": 32, "num_steps_sampled_before_learning_starts": 64, "min_sample_timesteps_per_iteration": 100}
    cases = [
        case("ppo-basic", "PPO", {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 2}),
        case("appo-basic", "APPO", {"train_batch_size_per_learner": 100, **quick}),
        case("impala-basic", "IMPALA", {"train_batch_size_per_learner": 100, **quick}),
        case("dqn-basic", "DQN", replay),
        case("sac-discrete-basic", "SAC", replay),
        case("ppo-continuous", "PPO", {"train_batch_size_per_learner": 200, "minibatch_size": 100, "num_epochs": 2}, binary=slide),
        case("sac-continuous", "SAC", replay, binary=slide),
    ]
    before = descendants([os.getpid()])
    process = subprocess.Popen(
        [sys.executable, str(SMOKE)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    try:
        out, err = process.communicate(json.dumps(cases), timeout=420)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    leftovers = run_processes(sessions=[process.pid]) | (descendants([os.getpid()]) - before)
    terminate(leftovers)
    assert not leftovers, f"processes left behind: {sorted(leftovers)}"
    results = {r["id"]: r for r in (json.loads(line) for line in out.splitlines() if line.startswith('{"id"'))}
    assert process.returncode == 0, err[-3000:]
    failed = {k: v.get("error") + "\n" + textwrap.shorten(v.get("traceback", ""), 2000) for k, v in results.items() if not v["ok"]}
    assert not failed, failed
    assert sorted(results) == sorted(c["id"] for c in cases)
    for result in results.values():
        assert result["iteration"] == 1
        assert result["onnx_agrees"], result["id"]
    for case_id in ("ppo-basic", "appo-basic", "impala-basic", "dqn-basic", "sac-discrete-basic"):
        assert results[case_id]["actions_dtype"] == "int64" and results[case_id]["actions_shape"] == [1000]
        assert results[case_id]["policy"]["action_space"] == {"type": "discrete", "n": 3, "start": 0}
    for case_id in ("ppo-continuous", "sac-continuous"):
        assert results[case_id]["actions_dtype"] == "float32" and results[case_id]["actions_shape"] == [1000, 1]
        assert results[case_id]["policy"]["action_space"]["type"] == "box"
        assert results[case_id]["policy"]["action_space"]["low"] == [-1.0]


def test_case_helper_keeps_schema_valid() -> None:
    data = copy.deepcopy(case("x", "DQN", {"train_batch_size_per_learner": 32})["spec"])
    assert Experiment.model_validate(data).algorithm.name == "DQN"


def test_conv_filters_for_small_images_are_chosen_and_printed() -> None:
    filters, line = algorithm.conv_filters(gym.spaces.Box(0, 1, (1, 21, 3)), {})
    assert filters == [[16, [1, 3], 1], [32, [1, 3], [1, 2]]]
    assert line is not None and line.startswith("CNN encoder: conv_filters [[16, [1, 3], 1], [32, [1, 3], [1, 2]]] chosen for the small 1x21x3")
    assert algorithm.conv_filters(gym.spaces.Box(0, 1, (8, 20, 1)), {})[0] == [[16, [3, 3], 1], [32, [3, 3], [2, 2]]]


def test_conv_filters_keep_rllib_defaults_and_the_users_and_ignore_vectors() -> None:
    filters, line = algorithm.conv_filters(gym.spaces.Box(0, 1, (84, 84, 3)), {})
    assert filters is None and line is not None and "RLlib's default conv_filters" in line
    user = [[8, [1, 5], 1, "valid"]]
    filters, line = algorithm.conv_filters(gym.spaces.Box(0, 1, (1, 21, 3)), {"conv_filters": user})
    assert filters is None and line == f"CNN encoder: algorithm.model.conv_filters {user} on the 1x21x3 images"
    assert algorithm.conv_filters(gym.spaces.Box(0, 1, (20,)), {}) == (None, None)


@pytest.mark.parametrize(
    ("filters", "layer"),
    [([[16, [3, 3], 1, "valid"]], 0), ([[16, [1, 3], 2, "valid"], [32, [1, 11], 1, "valid"]], 1), ([[16, 3]], 0)],
)
def test_conv_filters_that_do_not_fit_the_image_are_located(filters: list[Any], layer: int) -> None:
    with pytest.raises(algorithm.AlgorithmSetupError, match=rf"^algorithm\.model\.conv_filters\[{layer}\] "):
        algorithm.conv_filters(gym.spaces.Box(0, 1, (1, 21, 3)), {"conv_filters": filters})
