"""Greedy actions agree: the trained RLModule, the ONNX policy `evaluate` plays, and the HTTP server.

Trains Basic briefly through the local backend (the container launcher, then its export and evaluation),
so it exercises the real model dir contract end to end.
"""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_helpers import post_json, start_server, stop_server, wait_healthy

from rlrunner.contract.identity import run_id
from rlrunner.entry.evaluate import evaluate_policy
from rlrunner.policy import OnnxPolicy

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
SHORT_RUN = ["training.stop.timesteps=1000", "training.env_runners=1", "training.evaluation_episodes=3", "compute.instance_type=local"]

pytestmark = [
    pytest.mark.filterwarnings(r"ignore:distutils Version classes are deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir of experiments/basic_ppo.yaml trained for 1,000 steps (about a minute)."""
    from rlrunner.backends.local import run_local
    from rlrunner.loader import load_spec
    from rlrunner.runner import plan

    spec, document = load_spec(EXPERIMENTS / "basic_ppo.yaml", SHORT_RUN)
    job = plan(spec, spec_dir=document.base_dir, local=True)
    run_dir = tmp_path_factory.mktemp("trained") / f"{spec.name}-{run_id(spec)}"
    with open(tmp_path_factory.mktemp("log") / "run.log", "w") as stream, warnings.catch_warnings():
        # run_local leaves the launcher's stdout pipe to the garbage collector (reported to its owner)
        warnings.filterwarnings("ignore", "unclosed file", ResourceWarning)
        result = run_local(spec, job, spec_dir=document.base_dir, run_dir=run_dir, stream=stream, bar=False)
        gc.collect()
    assert result.exit_code == 0, (run_dir / "launcher.log").read_text()[-3000:]
    return run_dir


def rl_module_greedy_actions(run_dir: Path, obs: np.ndarray) -> np.ndarray:
    """Greedy actions of the trained RLModule itself: forward_inference, then the distribution's deterministic sample."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from ray.rllib.core.rl_module.rl_module import RLModule

        (checkpoint,) = sorted((run_dir / "checkpoints").glob("checkpoint_*"))[-1:]
        module = RLModule.from_checkpoint(str(checkpoint / "learner_group/learner/rl_module/default_policy"))
    module.eval()
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(obs)})
        dist = module.get_inference_action_dist_cls().from_logits(out["action_dist_inputs"])
        return dist.to_deterministic().sample().numpy()


def observations() -> np.ndarray:
    """1,000 observations: Basic's 20 real one-hot states, then random vectors."""
    rng = np.random.default_rng(0)
    return np.concatenate([np.eye(20, dtype=np.float32), rng.normal(size=(980, 20)).astype(np.float32)])


def test_greedy_actions_agree_between_rl_module_onnx_and_server_on_1000_observations(trained_run: Path) -> None:
    obs = observations()
    expected = rl_module_greedy_actions(trained_run, obs)
    onnx_actions = OnnxPolicy.from_dir(trained_run / "model").act(obs)
    server = start_server(trained_run)  # a run dir works too: serve finds model/
    try:
        wait_healthy(server.port)
        served: list[Any] = []
        for start in range(0, len(obs), 256):
            response = post_json(server.port, {"observations": obs[start : start + 256].tolist()})
            assert response.status == 200, response.body
            served.extend(response.json()["actions"])
    finally:
        stop_server(server.process)
    np.testing.assert_array_equal(onnx_actions, expected)
    np.testing.assert_array_equal(np.array(served), expected)


def test_evaluate_of_the_trained_run_matches_its_evaluation_json(trained_run: Path) -> None:
    recorded = json.loads((trained_run / "model" / "evaluation.json").read_text())
    again = evaluate_policy(trained_run / "model", episodes=recorded["episodes"], seed=recorded["seed"])
    assert again["returns"] == recorded["returns"]  # greedy and seeded: the same episodes
    assert -1.0 < again["mean"] <= 0.93 + 1e-6
