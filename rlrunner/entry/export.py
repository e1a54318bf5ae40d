"""Export a trained RLModule for serving: `policy.onnx`, `policy.json` and `experiment.json`.

The ONNX graph reproduces RLlib's own greedy inference path: `forward_inference`, then the
action distribution's deterministic sample, then the env runner's unsquash/clip of Box actions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import gymnasium
import numpy as np
import torch
from torch import nn

from rlrunner.contract.errors import RunFailedError
from rlrunner.contract.model_dir import (
    EXPERIMENT_FILE,
    FORMAT,
    INPUT_NAME,
    METADATA_FILE,
    ONNX_FILE,
    OUTPUT_NAMES,
    POLICIES_DIR,
    POLICIES_FILE,
)
from rlrunner.contract.run_dir import atomic_write_json

OPSET = 17


class ExportError(RunFailedError):
    """The policy cannot be exported (unsupported spaces, or a module torch cannot trace)."""


@dataclass(frozen=True)
class ActionPostprocessing:
    """What RLlib's module-to-env pipeline does to Box actions (`normalize_actions`, `clip_actions`)."""

    normalize_actions: bool = True
    clip_actions: bool = False


class GreedyPolicy(nn.Module):
    """obs -> (greedy actions, action distribution inputs), as RLlib computes them with explore=False."""

    def __init__(self, module: Any, action_space: gymnasium.Space[Any], post: ActionPostprocessing) -> None:
        super().__init__()
        self.module = module
        self.action_space = action_space
        self.dist_cls = module.get_inference_action_dist_cls()
        self.post = post
        if isinstance(action_space, gymnasium.spaces.Box):
            self.register_buffer("low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("high", torch.as_tensor(action_space.high, dtype=torch.float32))
            self.bounded = bool(np.all(action_space.bounded_below) and np.all(action_space.bounded_above))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy actions and the action distribution inputs for a batch of observations."""
        out = self.module.forward_inference({"obs": obs})
        inputs = out.get("action_dist_inputs")
        if inputs is None:  # value-based modules (DQN) return actions; their Q-values are the inputs
            inputs = self.module.compute_q_values({"obs": obs})["qf_preds"]
        actions = out.get("actions")
        if actions is None:
            actions = self.dist_cls.from_logits(inputs).to_deterministic().sample()
        return self._postprocess(actions), inputs

    def _postprocess(self, actions: torch.Tensor) -> torch.Tensor:
        space = self.action_space
        if isinstance(space, gymnasium.spaces.Box):
            low, high = cast(torch.Tensor, self.low), cast(torch.Tensor, self.high)
            actions = actions.to(torch.float32).reshape((-1, *space.shape))
            if self.post.normalize_actions and self.bounded:
                actions = low + (actions + 1.0) * (high - low) / 2.0
            return torch.maximum(torch.minimum(actions, high), low)
        if isinstance(space, gymnasium.spaces.MultiDiscrete):
            return actions.to(torch.int64).reshape(-1, len(space.nvec))
        return actions.to(torch.int64).reshape(-1)


def _nanmean_symbolic(g: Any, x: Any, dim: list[int], keepdim: int, dtype: Any) -> Any:
    # RLlib's dueling DQN head centres advantages with Tensor.nanmean, which the TorchScript-based
    # exporter has no ONNX mapping for: sum of the non-NaN values over their count.
    isnan = g.op("IsNaN", x)
    zero = g.op("Constant", value_t=torch.tensor(0.0, dtype=torch.float32))
    axes = g.op("Constant", value_t=torch.tensor(dim, dtype=torch.int64))
    total = g.op("ReduceSum", g.op("Where", isnan, zero, x), axes, keepdims_i=keepdim)
    count = g.op("ReduceSum", g.op("Cast", g.op("Not", isnan), to_i=1), axes, keepdims_i=keepdim)  # to_i=1: FLOAT
    return g.op("Div", total, count)


def _register_symbolics() -> None:
    from torch.onnx import symbolic_helper

    torch.onnx.register_custom_op_symbolic(  # type: ignore[attr-defined]
        "aten::nanmean", symbolic_helper.parse_args("v", "is", "i", "none")(_nanmean_symbolic), OPSET
    )


def load_rl_module(checkpoint: Path, module_id: str | None = None) -> Any:
    """The trained RLModule (learner side, full) from an algorithm checkpoint (`module_id`: a multi-agent run's policy)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_LEARNER_GROUP, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
    from ray.rllib.core.rl_module.rl_module import RLModule

    subdir = Path(COMPONENT_LEARNER_GROUP) / COMPONENT_LEARNER / COMPONENT_RL_MODULE / (module_id or DEFAULT_MODULE_ID)
    module: Any = RLModule.from_checkpoint(str((checkpoint / subdir).resolve()))
    module.eval()
    return module


def space_description(space: gymnasium.Space[Any]) -> dict[str, Any]:
    """A JSON description of a gymnasium space, in the format `rlrunner.policy` reads."""
    if isinstance(space, gymnasium.spaces.Box):
        return {"type": "box", "shape": list(space.shape), "dtype": str(space.dtype), "low": _bounds(space.low), "high": _bounds(space.high)}
    if isinstance(space, gymnasium.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gymnasium.spaces.MultiDiscrete):
        return {"type": "multi_discrete", "nvec": [int(n) for n in space.nvec.reshape(-1)]}
    raise ExportError(f"export: {space} spaces are not supported (Box, Discrete, MultiDiscrete)")


def _bounds(values: np.ndarray) -> list[float] | None:
    # JSON has no infinity: an unbounded side is null as a whole.
    flat = values.reshape(-1).astype(float)
    return [float(v) for v in flat] if np.all(np.isfinite(flat)) else None


def export_policy(
    checkpoint: Path,
    model_dir: Path,
    *,
    experiment: Mapping[str, Any],
    post: ActionPostprocessing,
    module: Any | None = None,
) -> dict[str, Any]:
    """Write policy.onnx, policy.json and experiment.json into `model_dir`; return policy.json's content."""
    import warnings

    module = module if module is not None else load_rl_module(checkpoint)
    observation_space = module.observation_space
    action_space = module.action_space
    if not isinstance(observation_space, gymnasium.spaces.Box):
        raise ExportError(f"export: observation space {observation_space} is not a Box; the ONNX input is one tensor")
    description = {
        "format": FORMAT,
        "run_id": experiment.get("run_id"),
        "spec_hash": experiment.get("spec_hash"),
        "name": experiment.get("name"),
        "algorithm": experiment["algorithm"]["name"],
        "module_class": f"{type(module).__module__}.{type(module).__qualname__}",
        "observation_space": space_description(observation_space),
        "action_space": space_description(action_space),
        **({"observation_layout": module.observation_layout()} if hasattr(module, "observation_layout") else {}),
        "inputs": [INPUT_NAME],
        "outputs": list(OUTPUT_NAMES),
        "onnx": {
            "file": ONNX_FILE,
            "opset": OPSET,
            "inputs": {INPUT_NAME: {"dtype": "float32", "shape": ["batch", *observation_space.shape]}},
            "outputs": {
                "actions": _action_output(action_space),
                "action_dist_inputs": {"dtype": "float32", "shape": ["batch", "n"]},
            },
        },
        "greedy": True,
        "action_postprocessing": {"normalize_actions": post.normalize_actions, "clip_actions": post.clip_actions},
    }
    model_dir.mkdir(parents=True, exist_ok=True)
    wrapper = GreedyPolicy(module, action_space, post).eval()
    dummy = torch.zeros((2, *observation_space.shape), dtype=torch.float32)
    target = model_dir / ONNX_FILE
    partial = model_dir / (ONNX_FILE + ".partial")
    _register_symbolics()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # The TorchScript-based exporter warns that it is deprecated in favour of dynamo; that
            # exporter needs onnxscript, which rlrunner does not pin (DESIGN.md).
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper,
                (dummy,),
                str(partial),
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {0: "batch"}, "actions": {0: "batch"}, "action_dist_inputs": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as error:
        partial.unlink(missing_ok=True)
        raise ExportError(f"export: torch.onnx.export failed for {type(module).__name__}: {error}") from error
    partial.replace(target)
    atomic_write_json(model_dir / METADATA_FILE, description)
    atomic_write_json(model_dir / EXPERIMENT_FILE, dict(experiment))
    return description


def _action_output(space: gymnasium.Space[Any]) -> dict[str, Any]:
    if isinstance(space, gymnasium.spaces.Box):
        return {"dtype": "float32", "shape": ["batch", *space.shape]}
    if isinstance(space, gymnasium.spaces.MultiDiscrete):
        return {"dtype": "int64", "shape": ["batch", len(space.nvec)]}
    return {"dtype": "int64", "shape": ["batch"]}


def export_policies(
    checkpoint: Path,
    model_dir: Path,
    *,
    experiment: Mapping[str, Any],
    post: ActionPostprocessing,
    policies: Mapping[str, list[str]],
) -> dict[str, Any]:
    """A multi-policy run: `policies/<policy>/` (as `export_policy` writes it) per policy and `policies.json`."""
    index: dict[str, Any] = {"format": FORMAT, "policies": {}}
    for policy, behaviors in sorted(policies.items()):
        folder = model_dir / POLICIES_DIR / policy
        description = export_policy(checkpoint, folder, experiment=experiment, post=post, module=load_rl_module(checkpoint, policy))
        index["policies"][policy] = {"dir": f"{POLICIES_DIR}/{policy}", "behaviors": list(behaviors), "onnx": description["onnx"]["file"]}
    atomic_write_json(model_dir / EXPERIMENT_FILE, dict(experiment))
    atomic_write_json(model_dir / POLICIES_FILE, index)
    return index
