"""What the ML-Agents Unity package checks when it loads a model, written down with its sources, and a checker.

Used by the export tests (`tests/entry/test_export_mlagents.py`, `tests/test_export.py`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rlrunner.contract import unity_model as names
from rlrunner.contract.unity_model import UnityBehavior

# What com.unity.ml-agents checks when it loads a model, and what ML-Agents' trainer writes:
#  [P] ml-agents/mlagents/trainers/torch_entities/model_serialization.py (ModelSerializer: input/output names,
#      dynamic batch axis, NCHW visual inputs via _get_onnx_shape, SerializationSettings.onnx_opset = 9 in settings.py)
#  [N] ml-agents/mlagents/trainers/torch_entities/networks.py (SimpleActor.forward: output order; version_number
#      = MODEL_EXPORT_VERSION = 3, memory_size, *_action_output_shape as float parameters) and action_model.py
#      (discrete actions: argmax per branch, torch.cat -> [batch, branches] int64; masks: logit*m - 1e8*(1-m))
#  [L] com.unity.ml-agents/Runtime/Inference/SentisModelParamLoader.cs (CheckModel, CheckModelVersion,
#      CheckInputTensorPresence, CheckInputTensorShape, CheckOutputTensorShape, CheckDiscreteActionOutputShape,
#      CheckContinuousActionOutputShape) and BarracudaModelParamLoader.cs before it
#  [E] com.unity.ml-agents/Runtime/Inference/SentisModelExtensions.cs (CheckExpectedTensors, GetVersion,
#      SupportsContinuousAndDiscrete, ContinuousOutputSize, DiscreteOutputSize, GetInputTensors: float inputs)
#  [T] com.unity.ml-agents/Runtime/Inference/TensorNames.cs (the names)
#  [G] com.unity.ml-agents/Runtime/Inference/GeneratorImpl.cs (ActionMaskInputGenerator: 1.0 = allowed, 0.0 = masked;
#      ObservationGenerator: one input per sensor, written as floats)
UNITY_LOADER_CHECKS: dict[str, Any] = {
    "constants": {  # [E] CheckExpectedTensors: required; read as float tensors; [L] CheckModelVersion
        "version_number": {"rank": 1, "dtype": "tensor(float)", "value": [3.0], "supported": (2, 3)},
        "memory_size": {"rank": 1, "dtype": "tensor(float)", "value": [0.0]},  # > 0 would need recurrent_in/out
    },
    "observation_input": {"prefix": "obs_", "dtype": "tensor(float)", "batch_axis": "dynamic", "visual_layout": "NCHW"},  # [L][P][T]
    "allowed_extra_inputs": ("prev_action", "epsilon", "action_masks", "sequence_length", "recurrent_in"),  # [L] CheckInputTensorShape
    "action_masks": {"dtype": "tensor(float)", "rank": 2, "width": "sum of branch sizes", "required_if": "discrete"},  # [L][G]
    "continuous": {  # [E] HasContinuousOutputs / ContinuousOutputSize, [N]
        "outputs": ("continuous_actions", "deterministic_continuous_actions"), "rank": 2, "dtype": "tensor(float)",
        "shape_constant": "continuous_action_output_shape", "shape_constant_rank": 1,  # value [continuous_size]
    },
    "discrete": {  # [E] HasDiscreteOutputs / DiscreteOutputSize, [L] CheckDiscreteActionOutputShape, [N]
        "outputs": ("discrete_actions", "deterministic_discrete_actions"), "rank": 2, "dtype": "tensor(int64)",
        "shape_constant": "discrete_action_output_shape", "shape_constant_rank": 2,  # value [[branch sizes]]
    },
    "output_order": ("version_number", "memory_size", "<kind>_actions", "<kind>_action_output_shape", "deterministic_<kind>_actions"),  # [N]
    "opset": 9,  # [P]; rlrunner falls back to 11, 13, 15 only for modules with ops opset 9 lacks (Sentis reads 7-15)
}



def check_against_unity_loader(session: Any, behavior: UnityBehavior, opset: int = UNITY_LOADER_CHECKS["opset"]) -> None:
    checks = UNITY_LOADER_CHECKS
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    # One float input per sensor, batch axis dynamic, visual NCHW ([L] CheckInputTensorPresence/Shape)
    for index, shape in enumerate(behavior.observation_shapes):
        value = inputs[f"{checks['observation_input']['prefix']}{index}"]
        assert value.type == checks["observation_input"]["dtype"]
        expected = [shape[2], shape[0], shape[1]] if len(shape) == 3 else list(shape)
        assert value.shape == ["batch", *expected]
    unexpected = [n for n in inputs if not n.startswith("obs_") and n not in checks["allowed_extra_inputs"]]
    assert unexpected == []
    assert len([n for n in inputs if n.startswith("obs_")]) == len(behavior.observation_shapes)
    # Constants ([E] CheckExpectedTensors, [L] CheckModelVersion)
    feeds = {
        name: np.zeros([2 if d == "batch" else d for d in value.shape], dtype=np.float32) for name, value in inputs.items()
    }
    if names.ACTION_MASKS in feeds:
        feeds[names.ACTION_MASKS][:] = 1.0
    values = dict(zip(outputs, session.run(list(outputs), feeds), strict=True))
    for name, expected in checks["constants"].items():
        assert outputs[name].type == expected["dtype"] and len(outputs[name].shape) == expected["rank"]
        assert values[name].tolist() == expected["value"]
    low, high = checks["constants"]["version_number"]["supported"]
    assert low <= values["version_number"][0] <= high
    assert list(outputs)[:2] == ["version_number", "memory_size"]
    for kind, size in (("continuous", behavior.continuous_size), ("discrete", len(behavior.discrete_branches))):
        rule = checks[kind]
        if size == 0:
            assert not set(rule["outputs"]) & set(outputs) and rule["shape_constant"] not in outputs
            continue
        for name in rule["outputs"]:
            assert outputs[name].type == rule["dtype"] and outputs[name].shape[0] == "batch"
            assert len(outputs[name].shape) == rule["rank"] and values[name].shape == (2, size)
        constant = values[rule["shape_constant"]]
        assert outputs[rule["shape_constant"]].type == "tensor(float)" and constant.ndim == rule["shape_constant_rank"]
        order = [n.replace("<kind>", kind) for n in checks["output_order"]]
        assert list(outputs) == order
        if kind == "continuous":
            assert constant.tolist() == [float(behavior.continuous_size)]  # [E] ContinuousOutputSize
        else:
            assert constant.tolist() == [[float(b) for b in behavior.discrete_branches]]  # [L] CheckDiscreteActionOutputShape
            mask = inputs[names.ACTION_MASKS]  # [L] HasDiscreteOutputs needs action_masks
            assert mask.type == checks["action_masks"]["dtype"] and mask.shape == ["batch", sum(behavior.discrete_branches)]
    import onnx

    assert onnx.load(session._model_path).opset_import[0].version == opset
