"""Model dirs that follow the launcher's export contract, built from small torch modules for tests."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

OBS_SIZE = 20
BASIC_ACTIONS = 3
BASIC_ENVIRONMENT: dict[str, Any] = {"name": "Basic", "max_episode_steps": 100, "timeout_s": 30.0}


def _module(action_space: dict[str, Any], obs_size: int, seed: int, constant: int | None) -> Any:
    import torch

    kind = action_space["type"]
    if kind == "discrete":
        width = action_space["n"]
    elif kind == "multi_discrete":
        width = sum(action_space["nvec"])
    else:
        width = 2 * math.prod(action_space["shape"])

    class Policy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.net = torch.nn.Sequential(torch.nn.Linear(obs_size, 16), torch.nn.Tanh(), torch.nn.Linear(16, width))
            if constant is not None:  # a scripted policy: always the same action, whatever it sees
                with torch.no_grad():
                    self.net[2].weight.zero_()
                    self.net[2].bias.copy_(torch.nn.functional.one_hot(torch.tensor(constant), width) * 5.0)

        def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            out = self.net(obs)
            if kind == "discrete":
                return torch.argmax(out, dim=-1), out
            if kind == "multi_discrete":
                parts = torch.split(out, list(action_space["nvec"]), dim=-1)
                return torch.stack([torch.argmax(p, dim=-1) for p in parts], dim=-1), out
            size = width // 2
            low = torch.tensor(action_space["low"], dtype=torch.float32)
            high = torch.tensor(action_space["high"], dtype=torch.float32)
            return torch.clamp(out[:, :size], low, high), out

    return Policy().eval()


def write_model_dir(
    model_dir: Path,
    *,
    action_space: dict[str, Any] | None = None,
    obs_size: int = OBS_SIZE,
    seed: int = 0,
    constant: int | None = None,
    environment: dict[str, Any] | None = None,
) -> Path:
    """Export a small random (or constant-action) policy to `model_dir` following the contract."""
    import torch

    action_space = action_space or {"type": "discrete", "n": BASIC_ACTIONS}
    model_dir.mkdir(parents=True, exist_ok=True)
    module = _module(action_space, obs_size, seed, constant)
    axes = {"obs": {0: "batch"}, "actions": {0: "batch"}, "action_dist_inputs": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(
            module, (torch.zeros(2, obs_size),), str(model_dir / "policy.onnx"), input_names=["obs"],
            output_names=["actions", "action_dist_inputs"], dynamic_axes=axes, dynamo=False, opset_version=17,
        )
    metadata = {
        "format": 1,
        "observation_space": {"type": "box", "shape": [obs_size], "dtype": "float32"},
        "action_space": action_space,
        "inputs": ["obs"],
        "outputs": ["actions", "action_dist_inputs"],
        "algorithm": "PPO",
        "run_id": "test000000",
    }
    (model_dir / "policy.json").write_text(json.dumps(metadata, indent=2))
    experiment = {
        "format": 1,
        "run_id": "test000000",
        "spec_hash": "0" * 64,
        "name": "test-policy",
        "environment": environment or BASIC_ENVIRONMENT,
        "algorithm": {"name": "PPO", "hyperparameters": {}, "model": {}},
        "training": {"stop": {"iterations": 1}, "seed": 0, "evaluation_episodes": 5},
    }
    (model_dir / "experiment.json").write_text(json.dumps(experiment, indent=2))
    return model_dir


def reference_actions(model_dir: Path, obs: Any, seed: int = 0) -> Any:
    """Greedy actions of the torch module that `model_dir` was exported from (rebuilt from its seed)."""
    import torch

    metadata = json.loads((model_dir / "policy.json").read_text())
    module = _module(metadata["action_space"], metadata["observation_space"]["shape"][0], seed, None)
    with torch.no_grad():
        return module(torch.as_tensor(obs, dtype=torch.float32))[0].numpy()


TWO_POLICIES: dict[str, dict[str, Any]] = {
    "Walker": {"behaviors": ["Walker?team=0", "Walker?team=1"], "action_space": {"type": "discrete", "n": BASIC_ACTIONS}, "seed": 1},
    "Reacher": {
        "behaviors": ["Reacher?team=0"],
        "action_space": {"type": "box", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 1.0]},
        "obs_size": 8,
        "seed": 2,
    },
}
"""Two policies with different spaces: Basic-like (obs 20, Discrete(3)) for two teams, and a continuous one (obs 8, Box(2))."""


def write_policies_model_dir(model_dir: Path, policies: dict[str, dict[str, Any]] | None = None) -> Path:
    """A multi-policy model dir as the launcher's export writes it: `write_model_dir` per policy under
    `policies/<policy>/` (each entry's options but `behaviors`), `policies.json` and `experiment.json`."""
    policies = policies if policies is not None else TWO_POLICIES
    index: dict[str, Any] = {"format": 1, "policies": {}}
    for name, options in policies.items():
        settings = {key: value for key, value in options.items() if key != "behaviors"}
        write_model_dir(model_dir / "policies" / name, **settings)
        index["policies"][name] = {"dir": f"policies/{name}", "behaviors": list(options["behaviors"]), "onnx": "policy.onnx"}
    (model_dir / "policies.json").write_text(json.dumps(index, indent=2))
    (model_dir / "experiment.json").write_text((model_dir / "policies" / next(iter(policies)) / "experiment.json").read_text())
    return model_dir
