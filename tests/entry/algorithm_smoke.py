"""Build, train one iteration, checkpoint and export each algorithm case given on stdin (JSON).

Run as a subprocess by test_algorithm.py so that Ray starts once for every case and its warnings stay
out of pytest. Each case is `{"id", "spec"}`: `spec` is an experiment's data (validated by the real
schema) whose environment is a Unity player (Basic, or the continuous test player). Prints one JSON
line per case.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

from rlrunner.entry.train_unity import configure_ray_environment

configure_ray_environment()

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402


def run_case(case: dict, workdir: Path) -> dict:
    import onnxruntime
    import torch
    from ray.tune.registry import register_env

    from rlrunner.entry import algorithm
    from rlrunner.entry.export import export_policy, load_rl_module
    from rlrunner.entry.train_unity import action_postprocessing, resolve_executable
    from rlrunner.entry.unity_env import make_unity_env
    from rlrunner.schema import Experiment

    experiment = Experiment.model_validate(case["spec"])
    executable = resolve_executable(experiment.environment, {})
    env_config = algorithm.env_config(experiment, executable, log_dir=str(workdir / "players"))
    register_env(algorithm.ENV_NAME, make_unity_env)
    probe = make_unity_env(env_config)
    spaces = (probe.observation_space, probe.action_space)
    probe.close()
    algorithm.check_spaces(experiment.algorithm.name, *spaces)
    config = algorithm.build_algorithm_config(experiment, num_cpus=2, env_config=env_config)
    started = time.monotonic()
    algo = config.build_algo()
    try:
        result = algo.train()
        checkpoint = Path(algo.save_to_path(str(workdir / "checkpoint")))
    finally:
        algo.stop()
    model_dir = workdir / "model"
    export_policy(checkpoint, model_dir, experiment=experiment.to_data(), post=action_postprocessing(experiment))
    module = load_rl_module(checkpoint)
    size = spaces[0].shape[0]
    rng = np.random.default_rng(1)
    if size > 1:  # Basic: one-hot positions
        obs = np.eye(size, dtype=np.float32)[rng.integers(0, size, 1000)]
    else:  # Slide: a position on [-1, 1]
        obs = rng.uniform(-1, 1, (1000, size)).astype(np.float32)
    session = onnxruntime.InferenceSession(str(model_dir / "policy.onnx"), providers=["CPUExecutionProvider"])
    actions, _ = session.run(None, {"obs": obs})
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(obs)})
        if "actions" in out:
            expected = out["actions"].numpy()
        else:
            dist = module.get_inference_action_dist_cls().from_logits(out["action_dist_inputs"])
            expected = dist.to_deterministic().sample().numpy()
    if isinstance(spaces[1], gym.spaces.Box):
        low, high = spaces[1].low, spaces[1].high
        expected = np.clip(low + (expected + 1.0) * (high - low) / 2.0, low, high)
        agree = bool(np.allclose(actions, expected.reshape(actions.shape), atol=1e-5))
    else:
        agree = bool(np.array_equal(actions, expected.reshape(actions.shape)))
    return {
        "id": case["id"],
        "ok": True,
        "timesteps": int(result.get("num_env_steps_sampled_lifetime", 0)),
        "iteration": int(algo.iteration),
        "actions_dtype": str(actions.dtype),
        "actions_shape": list(actions.shape),
        "onnx_agrees": agree,
        "policy": json.loads((model_dir / "policy.json").read_text()),
        "seconds": round(time.monotonic() - started, 2),
    }


def main() -> int:
    import ray

    cases = json.load(sys.stdin)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    try:
        for case in cases:
            with tempfile.TemporaryDirectory(prefix=f"rlrunner-{case['id']}-") as workdir:
                try:
                    line = run_case(case, Path(workdir))
                except Exception as error:  # report and go on with the other cases
                    line = {"id": case["id"], "ok": False, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
            print(json.dumps(line), flush=True)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
