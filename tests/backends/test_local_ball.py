"""The 3DBall-like scene end to end: `rlrunner run --local` on experiments/ball_ppo.yaml through the real Ball
player (12 agents of one behaviour in one area, continuous actions, decisions every 5th Academy step),
mlagents_envs and Ray, on the multi-agent path.

Baselines (`python benchmarks/ball.py baselines`, 12 x 200 agent episodes through the real protocol): random actions return
about 11, a flat platform about 16, the best is 50 (500 Academy steps of +0.1). PPO passes 30 after about 1,000
environment steps (12,000 agent steps) and holds 50 from about 1,600; the threshold, 30, is nearly twice what
either trivial policy scores.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from shared import EXPERIMENTS, run_local_spec

from rlrunner.contract.checkpoints import CheckpointStore
from rlrunner.processes import run_processes

BALL = EXPERIMENTS / "ball_ppo.yaml"
THRESHOLD = 30.0
"""Mean return the trained policy must reach; random actions score about 11, a flat platform about 16."""


@pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")
def test_run_local_trains_ball_past_the_threshold_on_the_multi_agent_path(tmp_path: Path, sessions: list[int]) -> None:
    result, run_dir, output = run_local_spec(
        BALL, tmp_path, sessions, "training.stop.timesteps=1600", "training.evaluation_episodes=12"
    )
    assert result.exit_code == 0, output[-4000:]
    log = (run_dir / "launcher.log").read_text()
    assert (
        "multi-agent path: 1 behaviour(s) (agents deciding first: Ball?team=0: 12); policies Ball <- Ball?team=0" in log
    )

    # metrics.csv: environment steps (exchanges), agent steps (12 agents, about one decision each per exchange)
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert int(rows[-1]["timesteps"]) == 1600 and int(rows[-1]["agent_timesteps"]) > 10 * 1600
    returns = [float(row["episode_return_mean.Ball_team0"]) for row in rows]
    assert returns[0] < THRESHOLD <= max(returns[-3:]), returns

    # the exported ONNX: its greedy (mean) actions match the RLModule's on 1,000 observations
    import onnxruntime
    import torch

    from rlrunner.entry.export import load_rl_module

    final = CheckpointStore(run_dir / "checkpoints", keep=3).newest()
    assert final is not None
    model = run_dir / "model"
    index = json.loads((model / "policies.json").read_text())
    assert {name: entry["behaviors"] for name, entry in index["policies"].items()} == {"Ball": ["Ball?team=0"]}
    obs = np.random.default_rng(0).uniform(-1.5, 1.5, (1000, 6)).astype(np.float32)
    session = onnxruntime.InferenceSession(
        str(model / index["policies"]["Ball"]["dir"] / "policy.onnx"), providers=["CPUExecutionProvider"]
    )
    (actions,) = session.run(["actions"], {"obs": obs})
    module = load_rl_module(final.path, "Ball")
    with torch.no_grad():
        inputs = module.forward_inference({"obs": torch.from_numpy(obs)})["action_dist_inputs"]
        means = module.get_inference_action_dist_cls().from_logits(inputs).to_deterministic().sample().numpy()
    assert actions.shape == (1000, 2) and actions.dtype == np.float32
    np.testing.assert_allclose(
        actions, np.clip(means, -1.0, 1.0), atol=1e-5
    )  # Box [-1, 1]: unsquashing is the identity
    assert 0 < np.mean(np.abs(actions) == 1.0) < 1  # some clipped, some not: the comparison covers both

    # the launcher's greedy evaluation, per behaviour as the scene names it
    evaluation = json.loads((model / "evaluation.json").read_text())
    figures = evaluation["behaviors"]["Ball?team=0"]
    assert list(evaluation["behaviors"]) == ["Ball?team=0"] and figures["episodes"] == 12
    assert figures["mean"] >= THRESHOLD, figures
    assert evaluation["mean"] == figures["mean"] and evaluation["episodes"] == 12  # one behaviour: also at the top level
    record = json.loads((run_dir / "run.json").read_text())
    assert record["exit_code"] == 0 and not run_processes(sessions=[record["launcher_pid"]])
