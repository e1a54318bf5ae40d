"""Export a trained RLModule as ML-Agents' inference model, `<Behavior>.onnx`, that Unity's inference engine loads.

One policy -> one file. The graph takes what Unity feeds a model (`rlrunner.contract.unity_model`):
one float input per observation of the behaviour (`obs_0`, `obs_1`, ... in the order of its
observation specs; visual ones channels first, values in [0, 1]) and, for discrete actions,
`action_masks` (1 = allowed, one column per action of every branch). Inside, it rebuilds the
observation the gymnasium adapter gave RLlib (`rlrunner.unity.spaces.Converter`: the first visual
observation, the vector observations concatenated, or for one camera beside vector sensors the image
flattened then the vector; `uint8_visual` as 0..255), runs the module's
greedy inference, and answers as ML-Agents' `SimpleActor.forward` does: `version_number`,
`memory_size`, then the action outputs with their shape constants.

Both action outputs of a kind (`continuous_actions` and `deterministic_continuous_actions`, or the
discrete pair) carry RLlib's greedy action, so the game plays what `rlrunner evaluate` measured,
whether or not "Deterministic Inference" is ticked. Continuous actions go through RLlib's own
unsquash and clip into the [-1, 1] Box the adapter declares (ML-Agents' trainer clamps to [-3, 3] and
divides by 3 instead: that is its training transform, not RLlib's). Discrete actions honour the mask
as ML-Agents' graph does: masked logits become `logit * mask - 1e8 * (1 - mask)` before the argmax.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import gymnasium
import numpy as np
import torch
from torch import nn

from rlrunner.contract import unity_model as names
from rlrunner.contract.unity_model import UnityBehavior
from rlrunner.entry.export import ActionPostprocessing, ExportError, GreedyPolicy, load_rl_module
from rlrunner.schema import EnvironmentSpec

MASKED_LOGIT = 1e8
"""What a masked action's logit loses (ML-Agents' MultiCategoricalDistribution._mask_branch)."""


class UnityPolicy(nn.Module):
    """(obs_0, ..., obs_n-1[, action_masks]) -> the outputs of ML-Agents' SimpleActor.forward, greedy."""

    def __init__(self, module: Any, behavior: UnityBehavior, environment: EnvironmentSpec, post: ActionPostprocessing) -> None:
        super().__init__()
        if environment.allow_multiple_obs:
            raise ExportError("export: environment.allow_multiple_obs: a Tuple observation has no ML-Agents export yet")
        self.behavior = behavior
        self.uint8_visual = environment.uint8_visual
        shapes = behavior.observation_shapes
        self.visual = [i for i, shape in enumerate(shapes) if len(shape) == 3]
        self.vector = [i for i, shape in enumerate(shapes) if len(shape) != 3]
        self.image_and_vector = _image_and_vector(behavior)
        self.greedy = GreedyPolicy(module, module.action_space, post)
        # ML-Agents keeps its constants as parameters of the actor; exported, they are the outputs Unity reads.
        self.version_number = nn.Parameter(torch.tensor([float(names.MODEL_EXPORT_VERSION)]), requires_grad=False)
        self.memory_size = nn.Parameter(torch.tensor([0.0]), requires_grad=False)
        self.continuous_shape = nn.Parameter(torch.tensor([float(behavior.continuous_size)]), requires_grad=False)
        self.discrete_shape = nn.Parameter(torch.tensor([[float(b) for b in behavior.discrete_branches]]), requires_grad=False)
        self._check_spaces(module, environment)
        branches = behavior.discrete_branches
        self.flattened = isinstance(module.action_space, gymnasium.spaces.Discrete) and len(branches) > 1
        if self.flattened:
            # The adapter's flat index -> one action per branch (ActionFlattener.table), and each flat
            # action's mask columns (one per branch).
            import itertools

            table = torch.tensor(list(itertools.product(*(range(b) for b in branches))), dtype=torch.int64)
            offsets = torch.tensor(np.cumsum([0, *branches[:-1]]), dtype=torch.int64)
            self.register_buffer("table", table)
            self.register_buffer("mask_columns", table + offsets)

    def _check_spaces(self, module: Any, environment: EnvironmentSpec) -> None:
        expected = _gym_observation_shape(self.behavior)
        got = tuple(module.observation_space.shape or ())
        if got != expected:
            raise ExportError(
                f"export: behaviour {self.behavior.name!r}: the module observes shape {got}, the scene's observations "
                f"{[list(s) for s in self.behavior.observation_shapes]} give {expected}"
            )
        space = module.action_space
        branches = self.behavior.discrete_branches
        if self.behavior.continuous_size and not isinstance(space, gymnasium.spaces.Box):
            raise ExportError(f"export: behaviour {self.behavior.name!r} has continuous actions, the module {space}")
        if branches and not isinstance(space, (gymnasium.spaces.Discrete, gymnasium.spaces.MultiDiscrete)):
            raise ExportError(f"export: behaviour {self.behavior.name!r} has discrete actions {list(branches)}, the module {space}")
        if self.behavior.continuous_size and branches:
            raise ExportError(f"export: behaviour {self.behavior.name!r}: hybrid actions are not supported")

    def gym_observation(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The observation the gymnasium adapter builds from the ML-Agents observations (Converter)."""
        if self.visual:
            image = inputs[self.visual[0]].permute(0, 2, 3, 1)  # NCHW as Unity feeds it -> the adapter's HWC
            if self.uint8_visual:
                image = torch.clamp(torch.floor(image * 255.0), 0.0, 255.0)  # the adapter's astype(uint8)
            if not self.image_and_vector:
                return image
        parts = [inputs[i].reshape(inputs[i].shape[0], -1) for i in self.vector]
        if self.image_and_vector:  # the adapter's flat observation: the image (HWC, C order), then the vector
            parts.insert(0, image.reshape(image.shape[0], -1))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """ML-Agents' outputs, in SimpleActor.forward's order."""
        count = len(self.behavior.observation_shapes)
        actions, dist_inputs = self.greedy(self.gym_observation(inputs[:count]))
        outputs: list[torch.Tensor] = [self.version_number, self.memory_size]
        if self.behavior.continuous_size:
            continuous = actions.reshape(-1, self.behavior.continuous_size)
            outputs += [continuous, self.continuous_shape, continuous]  # the exporter adds an Identity for the second
        else:
            discrete = self._masked_greedy(dist_inputs, inputs[count])
            outputs += [discrete, self.discrete_shape, discrete]
        return tuple(outputs)

    def _masked_greedy(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        if self.flattened:
            mask_columns = cast(torch.Tensor, self.mask_columns)
            allowed = torch.prod(masks[:, mask_columns.reshape(-1)].reshape(-1, *mask_columns.shape), dim=2)
            flat = torch.argmax(_mask(logits, allowed), dim=1)
            return cast(torch.Tensor, self.table)[flat]
        chosen = []
        start = 0
        for size in self.behavior.discrete_branches:
            branch = _mask(logits[:, start : start + size], masks[:, start : start + size])
            chosen.append(torch.argmax(branch, dim=1, keepdim=True))
            start += size
        return torch.cat(chosen, dim=1)


def _mask(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    # ML-Agents' form, which Barracuda/Sentis run as written (MultiCategoricalDistribution._mask_branch).
    return logits * allowed - MASKED_LOGIT * (-1.0 * allowed + 1.0)


def _image_and_vector(behavior: UnityBehavior) -> bool:
    # the adapter's ImageVectorLayout: one camera beside vector observations (without allow_multiple_obs)
    visual = [shape for shape in behavior.observation_shapes if len(shape) == 3]
    return len(visual) == 1 and len(visual) < len(behavior.observation_shapes)


def _gym_observation_shape(behavior: UnityBehavior) -> tuple[int, ...]:
    shapes = behavior.observation_shapes
    visual = [shape for shape in shapes if len(shape) == 3]
    if _image_and_vector(behavior):
        return (int(sum(int(np.prod(shape)) for shape in shapes)),)
    if visual:
        return tuple(visual[0])
    return (int(sum(int(np.prod(shape)) for shape in shapes)),)


def input_names(behavior: UnityBehavior) -> list[str]:
    """The model's inputs: one per observation, then the action masks of discrete branches."""
    inputs = [names.observation_name(i) for i in range(len(behavior.observation_shapes))]
    return inputs + ([names.ACTION_MASKS] if behavior.discrete_branches else [])


def output_names(behavior: UnityBehavior) -> list[str]:
    """The model's outputs, in ML-Agents' order (ModelSerializer.output_names)."""
    outputs = [names.VERSION_NUMBER, names.MEMORY_SIZE]
    if behavior.continuous_size:
        outputs += [names.CONTINUOUS_ACTIONS, names.CONTINUOUS_ACTION_OUTPUT_SHAPE, names.DETERMINISTIC_CONTINUOUS_ACTIONS]
    if behavior.discrete_branches:
        outputs += [names.DISCRETE_ACTIONS, names.DISCRETE_ACTION_OUTPUT_SHAPE, names.DETERMINISTIC_DISCRETE_ACTIONS]
    return outputs


def export_unity_model(
    module: Any, behavior: UnityBehavior, path: Path, *, environment: EnvironmentSpec, post: ActionPostprocessing
) -> dict[str, Any]:
    """Write `path` (ML-Agents' format) for one behaviour's module; return its description for unity_models.json."""
    wrapper = UnityPolicy(module, behavior, environment, post).eval()
    batch = 2
    dummy: list[torch.Tensor] = [torch.zeros((batch, *behavior.input_shape(i))) for i in range(len(behavior.observation_shapes))]
    if behavior.discrete_branches:
        dummy.append(torch.ones((batch, sum(behavior.discrete_branches))))
    inputs, outputs = input_names(behavior), output_names(behavior)
    axes = {name: {0: "batch"} for name in inputs}
    axes.update({name: {0: "batch"} for name in outputs if name.endswith("_actions")})
    partial = path.with_name(path.name + ".partial")
    _register_symbolics()
    errors = []
    for opset in names.OPSETS:  # ML-Agents' own opset first; a later one only for ops it lacks
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices (see export.py)
                torch.onnx.export(
                    wrapper, tuple(dummy), str(partial), input_names=inputs, output_names=outputs,
                    dynamic_axes=axes, opset_version=opset, dynamo=False,
                )  # fmt: skip
            _keep_every_input(partial, behavior)
            break
        except Exception as error:
            partial.unlink(missing_ok=True)
            errors.append(f"opset {opset}: {error}")
    else:
        raise ExportError(f"export: ML-Agents model of {behavior.name!r} failed ({type(module).__name__}): {errors[-1]}")
    partial.replace(path)
    return {
        "file": path.name,
        "behavior": behavior.name,
        "opset": opset,
        "version_number": names.MODEL_EXPORT_VERSION,
        "inputs": inputs,
        "outputs": outputs,
        **{k: v for k, v in behavior.to_json().items() if k != "name"},
    }


def _keep_every_input(path: Path, behavior: UnityBehavior) -> None:
    # torch drops inputs the graph does not read (the vector observations beside the visual one the
    # module sees); Unity expects an input for every sensor (CheckInputTensorPresence), so put them back.
    import onnx

    model = onnx.load(str(path))
    present = {value.name for value in model.graph.input}
    missing = [name for name in input_names(behavior) if name not in present]
    if not missing:
        return
    for index, name in enumerate(input_names(behavior)):
        if name in missing:
            dims = (sum(behavior.discrete_branches),) if name == names.ACTION_MASKS else behavior.input_shape(index)
            shape: list[str | int | None] = ["batch", *dims]
            model.graph.input.insert(index, onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shape))
    onnx.save(model, str(path))


def _nanmean_symbolic(g: Any, x: Any, dim: list[int], keepdim: int, dtype: Any) -> Any:
    # export.py's nanmean for RLlib's dueling DQN head, with opset 9's ReduceSum (axes as an attribute).
    isnan = g.op("IsNaN", x)
    zero = g.op("Constant", value_t=torch.tensor(0.0, dtype=torch.float32))
    total = g.op("ReduceSum", g.op("Where", isnan, zero, x), axes_i=dim, keepdims_i=keepdim)
    count = g.op("ReduceSum", g.op("Cast", g.op("Not", isnan), to_i=1), axes_i=dim, keepdims_i=keepdim)
    return g.op("Div", total, count)


def _register_symbolics() -> None:
    from torch.onnx import symbolic_helper

    from rlrunner.entry import export

    # ReduceSum takes its axes as an attribute up to opset 12 and as an input from 13 (export.py's form).
    for opset, symbolic in ((names.OPSET, _nanmean_symbolic), (13, export._nanmean_symbolic)):
        torch.onnx.register_custom_op_symbolic(  # type: ignore[attr-defined]
            "aten::nanmean", symbolic_helper.parse_args("v", "is", "i", "none")(symbolic), opset
        )


def export_unity_models(
    modules: Mapping[str, Any],
    behaviors: Sequence[UnityBehavior],
    model_dir: Path,
    *,
    environment: EnvironmentSpec,
    post: ActionPostprocessing,
) -> dict[str, dict[str, Any]]:
    """One `<Behavior>.onnx` per policy (`modules`: policy name -> RLModule) and unity_models.json; return the index."""
    model_dir.mkdir(parents=True, exist_ok=True)
    models: dict[str, dict[str, Any]] = {}
    for behavior in behaviors:
        if behavior.policy in models:
            continue  # teams of a behaviour share its policy
        module = modules.get(behavior.policy)
        if module is None:
            raise ExportError(f"export: no trained policy for behaviour {behavior.name!r} (policies: {', '.join(modules)})")
        models[behavior.policy] = export_unity_model(
            module, behavior, model_dir / behavior.model_file, environment=environment, post=post
        )
    names.write_index(model_dir, models)
    return models


def export_from_checkpoint(
    checkpoint: Path,
    behaviors: Sequence[UnityBehavior],
    model_dir: Path,
    *,
    environment: EnvironmentSpec,
    post: ActionPostprocessing,
    module: Any | None = None,
) -> dict[str, dict[str, Any]]:
    """Every behaviour's model from a checkpoint: a multi-agent run's manifest maps behaviours to its policies;
    otherwise the checkpoint's default module plays the one behaviour of the scene."""
    from rlrunner.contract.checkpoints import POLICIES_META, read_checkpoint

    found = read_checkpoint(checkpoint)
    policies: Mapping[str, Sequence[str]] = (found.meta.get(POLICIES_META) or {}) if found is not None else {}
    if policies:
        policy_of = {name: policy for policy, served in policies.items() for name in served}
        modules: dict[str, Any] = {}
        for behavior in behaviors:
            policy = policy_of.get(behavior.name, policy_of.get(behavior.policy))
            if policy is None:
                raise ExportError(f"export: no trained policy serves behaviour {behavior.name!r} (policies: {', '.join(sorted(policies))})")
            if behavior.policy not in modules:
                modules[behavior.policy] = load_rl_module(checkpoint, policy)
        return export_unity_models(modules, behaviors, model_dir, environment=environment, post=post)
    if len({b.policy for b in behaviors}) != 1:
        listed = ", ".join(b.name for b in behaviors) or "none"
        raise ExportError(f"export: a single-policy checkpoint needs exactly one behaviour, the scene has: {listed}")
    module = module if module is not None else load_rl_module(checkpoint)
    return export_unity_models({behaviors[0].policy: module}, behaviors, model_dir, environment=environment, post=post)


def recorded_behaviors(checkpoint: Path) -> list[UnityBehavior] | None:
    """The behaviours a checkpoint's manifest records (None: written before rlrunner recorded them)."""
    from rlrunner.contract.checkpoints import read_checkpoint

    found = read_checkpoint(checkpoint)
    return None if found is None else names.behaviors_from_meta(found.meta)
