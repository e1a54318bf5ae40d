"""A multi-behaviour scene end to end: `rlrunner run --local` on experiments/duo_ppo.yaml through the real
Duo player (two behaviours, agents deciding every 1st and 2nd step, respawning), mlagents_envs and Ray; the exported
model dir served over HTTP."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shared import BASIC_PPO, EXPERIMENTS, QUICK_TRAINING, run_local_spec

from rlrunner.contract.checkpoints import POLICIES_META, CheckpointStore
from rlrunner.contract.errors import EXIT_INVALID
from rlrunner.processes import run_processes

DUO = EXPERIMENTS / "duo_ppo.yaml"
BEHAVIORS = {"Runner": ["Runner?team=0"], "Walker": ["Walker?team=0"]}


@pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")
def test_run_local_trains_two_behaviours_with_a_policy_each(tmp_path: Path, sessions: list[int]) -> None:
    result, run_dir, output = run_local_spec(DUO, tmp_path, sessions, "training.stop.timesteps=1200", "training.evaluation_episodes=2")
    assert result.exit_code == 0, output[-4000:]
    log = (run_dir / "launcher.log").read_text()
    assert "multi-agent path: 2 behaviour(s)" in log and "policies Runner <- Runner?team=0; Walker <- Walker?team=0" in log

    # metrics.csv: environment steps, agent steps and each behaviour's mean return
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["timesteps"] for row in rows] == ["600", "1200"]
    assert int(rows[-1]["agent_timesteps"]) > 1200  # three agents, two of them deciding every step
    assert rows[-1]["episode_return_mean.Runner_team0"] and rows[-1]["episode_return_mean.Walker_team0"]

    # the checkpoint names the behaviours each policy serves (for exporters)
    final = CheckpointStore(run_dir / "checkpoints", keep=3).newest()
    assert final is not None and final.meta[POLICIES_META] == BEHAVIORS
    for policy in BEHAVIORS:
        assert (final.path / "learner_group" / "learner" / "rl_module" / policy).is_dir()

    # one ONNX per policy whose greedy actions match the RLModule's on 1,000 observations
    import onnxruntime
    import torch

    from rlrunner.entry.export import load_rl_module

    model = run_dir / "model"
    index = json.loads((model / "policies.json").read_text())
    assert {name: entry["behaviors"] for name, entry in index["policies"].items()} == BEHAVIORS
    rng = np.random.default_rng(0)
    obs = np.concatenate([np.eye(20, dtype=np.float32)[rng.integers(0, 20, 500)], rng.normal(size=(500, 20)).astype(np.float32)])
    for policy, entry in index["policies"].items():
        session = onnxruntime.InferenceSession(str(model / entry["dir"] / "policy.onnx"), providers=["CPUExecutionProvider"])
        (actions,) = session.run(["actions"], {"obs": obs})
        with torch.no_grad():
            logits = load_rl_module(final.path, policy).forward_inference({"obs": torch.from_numpy(obs)})["action_dist_inputs"]
        np.testing.assert_array_equal(actions, logits.numpy().argmax(axis=-1))

    # the launcher's evaluation: per behaviour, as the scene names them
    evaluation = json.loads((model / "evaluation.json").read_text())
    assert sorted(evaluation["behaviors"]) == ["Runner?team=0", "Walker?team=0"]
    assert all(figures["episodes"] == 2 for figures in evaluation["behaviors"].values())
    record = json.loads((run_dir / "run.json").read_text())
    assert record["exit_code"] == 0 and not run_processes(sessions=[record["launcher_pid"]])

    # `rlrunner serve RUN_DIR` answers each behaviour with its own policy, named as the scene names the behaviour
    from http_helpers import post_json, start_server, stop_server, wait_healthy

    from rlrunner.policy import OnnxPolicy

    server = start_server(run_dir)
    try:
        wait_healthy(server.port)
        for policy, behaviors in BEHAVIORS.items():
            expected = OnnxPolicy.from_dir(model / index["policies"][policy]["dir"]).act(obs)
            for name in (*behaviors, policy):
                response = post_json(server.port, {"observations": obs.tolist(), "policy": name})
                assert response.status == 200, response.body
                assert response.json()["actions"] == expected.tolist()
        assert post_json(server.port, {"observations": obs[:1].tolist()}).status == 400  # two policies: name one
    finally:
        stop_server(server.process)


def test_run_local_behaviour_absent_from_the_scene_exits_3(tmp_path: Path, sessions: list[int]) -> None:
    result, run_dir, output = run_local_spec(BASIC_PPO, tmp_path, sessions, *QUICK_TRAINING, "behaviors={Goalie: {}}")
    assert result.exit_code == EXIT_INVALID, output[-4000:]
    failure = (run_dir / "output" / "failure").read_text()
    assert failure.strip() == "behaviors.Goalie: the scene has no behaviour 'Goalie'; it has Basic (behaviour names without ?team=N)"
    assert "Traceback" not in (run_dir / "launcher.log").read_text()


@pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")
def test_run_local_trains_both_behaviours_to_a_greedy_threshold(tmp_path: Path, sessions: list[int]) -> None:
    """duo_ppo.yaml until both behaviours' greedy policies score 0.9 (Basic's game: 0.93 is the optimum; a random
    policy scores about -0.05 in training and -1.0 greedy, never reaching a goal). Stops well before the cap."""
    stop = ("training.stop.timesteps=12000", "training.stop.evaluation_return_mean={Runner: 0.9, Walker: 0.9}")
    result, run_dir, output = run_local_spec(DUO, tmp_path, sessions, *stop, "training.evaluation_episodes=3")
    assert result.exit_code == 0, output[-4000:]
    log = (run_dir / "launcher.log").read_text()
    assert "stopped: evaluation_return_mean Runner?team=0 " in log and ", Walker?team=0 " in log
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert int(rows[-1]["timesteps"]) < 12000
    evaluation = json.loads((run_dir / "model" / "evaluation.json").read_text())  # the exported policies, greedy
    assert {name: figures["mean"] >= 0.9 for name, figures in evaluation["behaviors"].items()} == {"Runner?team=0": True, "Walker?team=0": True}


def test_run_local_stop_criterion_for_a_behaviour_absent_from_the_scene_exits_3(tmp_path: Path, sessions: list[int]) -> None:
    result, run_dir, output = run_local_spec(BASIC_PPO, tmp_path, sessions, *QUICK_TRAINING, "training.stop.episode_return_mean={Goalie: 1.0}")
    assert result.exit_code == EXIT_INVALID, output[-4000:]
    failure = (run_dir / "output" / "failure").read_text()
    assert failure.strip() == "training.stop.episode_return_mean.Goalie: the scene has no behaviour 'Goalie'; it has Basic?team=0"
