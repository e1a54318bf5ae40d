"""The multi-agent path's pure parts: the behaviors spec section, policies per behaviour, the RLlib config, metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import yaml
from pydantic import ValidationError
from shared import EXPERIMENTS

from rlrunner.contract.checkpoints import Progress
from rlrunner.contract.identity import run_identity
from rlrunner.contract.metrics import behavior_metric, format_metrics_line, parse_metrics_line
from rlrunner.contract.run_dir import MetricsTable
from rlrunner.entry import algorithm, train_unity
from rlrunner.runner import render_experiment
from rlrunner.schema import Experiment, ExperimentSpec

DUO = EXPERIMENTS / "duo_ppo.yaml"
BOX = gym.spaces.Box(-np.inf, np.inf, (20,), np.float32)
SPACES = {"Runner?team=0": (BOX, gym.spaces.Discrete(3)), "Walker?team=0": (BOX, gym.spaces.Discrete(3))}


def duo(**behaviors: Any) -> Experiment:
    data = yaml.safe_load(DUO.read_text())
    if behaviors:
        data["behaviors"] = behaviors
    spec = ExperimentSpec.model_validate(data)
    return Experiment.model_validate(render_experiment(spec.on_this_machine(), spec_dir=EXPERIMENTS))


def test_behaviors_section_reaches_the_launcher_and_leaves_other_run_ids_alone() -> None:
    experiment = duo()
    assert experiment.behaviors["Walker"].hyperparameters == {"lr": 5.0e-4}
    basic = yaml.safe_load((EXPERIMENTS / "basic_ppo.yaml").read_text())
    assert "behaviors" not in run_identity(ExperimentSpec.model_validate(basic))
    assert run_identity(ExperimentSpec.model_validate(yaml.safe_load((EXPERIMENTS / "duo_ppo.yaml").read_text())))["behaviors"]


@pytest.mark.parametrize(
    ("behaviors", "message"),
    [
        ({"Walker": {"hyperparameters": {"lrr": 1}}}, "behaviors.Walker.hyperparameters.lrr: not an RLlib PPO config key"),
        ({"Walker": {"model": {"fcnet_hidden": [3]}}}, "behaviors.Walker.model.fcnet_hidden: not an RLlib DefaultModelConfig key"),
        (
            {"Walker": {"policy": "shared", "model": {"fcnet_hiddens": [8]}}, "Runner": {"policy": "shared"}},
            "behaviors.Runner: shares policy 'shared' with behaviors.Walker",
        ),
    ],
    ids=["hyperparameter-typo", "model-typo", "shared-policy-conflict"],
)
def test_behaviors_section_rejects_mistakes(behaviors: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        duo(**behaviors)


def test_behavior_policies_default_shared_and_missing() -> None:
    names = ["Runner?team=0", "Runner?team=1", "Walker?team=0"]
    assert algorithm.behavior_policies(names, duo()) == {"Runner?team=0": "Runner", "Runner?team=1": "Runner", "Walker?team=0": "Walker"}
    shared = duo(Walker={"policy": "both"}, Runner={"policy": "both"})
    assert set(algorithm.behavior_policies(names, shared).values()) == {"both"}
    with pytest.raises(algorithm.AlgorithmSetupError, match=r"^behaviors.Goalie: the scene has no behaviour 'Goalie'; it has Runner, Walker"):
        algorithm.behavior_policies(names, duo(Goalie={}))


def test_policy_mapping_is_by_behaviour_and_spaces_must_agree() -> None:
    mapping = algorithm.PolicyMapping({"Runner?team=0": "Runner", "Walker?team=0": "Walker"})
    assert mapping("Walker?team=0#17", None) == "Walker"
    other = {**SPACES, "Walker?team=0": (BOX, gym.spaces.Discrete(4))}
    with pytest.raises(algorithm.AlgorithmSetupError, match="share policy 'p' but their spaces differ"):
        algorithm.policy_spaces(other, {"Runner?team=0": "p", "Walker?team=0": "p"})


def test_multi_agent_config_one_module_per_policy_with_overrides() -> None:
    experiment = duo(Walker={"hyperparameters": {"lr": 5.0e-4}, "model": {"fcnet_hiddens": [8]}})
    config = algorithm.build_algorithm_config(experiment, num_cpus=2, env_config={}, multi_agent=True)
    served = algorithm.configure_multi_agent(config, experiment, SPACES)
    assert served == {"Runner": ["Runner?team=0"], "Walker": ["Walker?team=0"]}
    assert config.is_multi_agent and config.num_envs_per_env_runner == 1
    assert config.get_config_for_module("Walker").lr == 5.0e-4 and config.get_config_for_module("Runner").lr == 3.0e-4
    spec = config.get_multi_rl_module_spec(spaces={p: SPACES[names[0]] for p, names in served.items()})
    assert spec.rl_module_specs["Walker"].model_config["fcnet_hiddens"] == [8]
    assert spec.rl_module_specs["Runner"].model_config["fcnet_hiddens"] == [32]
    modules = spec.build()
    assert set(modules.keys()) == {"Runner", "Walker"}


def test_metrics_line_and_csv_carry_each_behaviour(tmp_path: Path) -> None:
    result = {
        "num_env_steps_sampled_lifetime": 900,
        "env_runners": {
            "num_agent_steps_sampled_lifetime": {"Runner?team=0#0": 500, "Walker?team=0#1": 200},
            "episode_return_mean": 12.0,  # RLlib's sum over a whole cut of the scene: not shown
            "agent_episodes": {"episode_return_mean": 0.5, "episode_return_max": 0.93, "episode_return_min": 0.07, "episode_len_mean": 9.0},
            "behaviors": {"Runner?team=0": {"episode_return_mean": 0.6}, "Walker?team=0": {"episode_return_mean": 0.3}},
        },
    }
    values = train_unity.iteration_metrics(result, Progress(iteration=2, timesteps=900, time_s=3.0))
    line = format_metrics_line(values)
    assert line == (
        "rlrunner-metrics iteration=2 timesteps=900 episode_return_mean=0.5 episode_return_max=0.93 "
        "episode_return_min=0.07 episode_len_mean=9 time_s=3 agent_timesteps=700 "
        "episode_return_mean.Runner_team0=0.6 episode_return_mean.Walker_team0=0.3"
    )
    parsed = parse_metrics_line(line)
    assert parsed is not None and parsed["episode_return_mean.Walker_team0"] == 0.3 and parsed["episode_return_mean"] == 0.5
    assert behavior_metric("Striker?team=1") == "episode_return_mean.Striker_team1"
    table = MetricsTable(tmp_path / "metrics.csv")
    table.add(parsed)
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0]
    assert header.endswith("time_s,agent_timesteps,episode_return_mean.Runner_team0,episode_return_mean.Walker_team0")
    assert MetricsTable(tmp_path / "metrics.csv").last == parsed
