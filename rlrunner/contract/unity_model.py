"""ML-Agents' inference model (`<Behavior>.onnx`): the names the Unity package checks, and the behaviours.

The launcher exports, beside the serving model, one ONNX file per behaviour in the format that
ML-Agents' own trainer writes (`mlagents/trainers/torch_entities/model_serialization.py`,
`networks.py` `SimpleActor.forward`) and that the Unity package checks when it loads a model
(`com.unity.ml-agents/Runtime/Inference/SentisModelParamLoader.cs`, `SentisModelExtensions.cs`,
`TensorNames.cs`). `unity_models.json` in the model dir lists them. A checkpoint's manifest records
the behaviours (`UnityBehavior.to_json`) so that a later `rlrunner export` needs no player.
No torch, onnx or mlagents import here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlrunner.contract.run_dir import atomic_write_json, read_json

MODEL_EXPORT_VERSION = 3
"""`version_number`: ModelApiVersion.MLAgents2_0 (SimpleActor.MODEL_EXPORT_VERSION)."""
OPSET = 9
"""ONNX opset of ML-Agents' exports (SerializationSettings.onnx_opset), loadable by Barracuda and Sentis."""
OPSETS = (OPSET, 11, 13, 15)
"""Tried in order: a module with an op opset 9 lacks (RLlib's DQN head: nan_to_num) gets the next; Sentis reads 7-15."""

OBSERVATION_PREFIX = "obs_"
ACTION_MASKS = "action_masks"
VERSION_NUMBER = "version_number"
MEMORY_SIZE = "memory_size"
CONTINUOUS_ACTIONS = "continuous_actions"
CONTINUOUS_ACTION_OUTPUT_SHAPE = "continuous_action_output_shape"
DETERMINISTIC_CONTINUOUS_ACTIONS = "deterministic_continuous_actions"
DISCRETE_ACTIONS = "discrete_actions"
DISCRETE_ACTION_OUTPUT_SHAPE = "discrete_action_output_shape"
DETERMINISTIC_DISCRETE_ACTIONS = "deterministic_discrete_actions"

INDEX_FILE = "unity_models.json"
"""In the model dir: {"format", "models": {policy name: {"file", "behavior", ...}}}."""
INDEX_FORMAT = 1
META_KEY = "behaviors"
"""Key of the behaviour list in a checkpoint manifest's meta."""


def observation_name(index: int) -> str:
    """The input name of the behaviour's `index`-th observation (TensorNames.GetObservationName)."""
    return f"{OBSERVATION_PREFIX}{index}"


def policy_name(behavior: str) -> str:
    """The policy (and file) name of a behaviour: the name without `?team=N`, as mlagents-learn names it."""
    return behavior.split("?", 1)[0]


@dataclass(frozen=True)
class UnityBehavior:
    """One behaviour as the scene reports it: its name, observation shapes (Unity's order) and actions."""

    name: str
    observation_shapes: tuple[tuple[int, ...], ...]
    """As mlagents_envs reports them: visual observations (rank 3) are (height, width, channels)."""
    continuous_size: int = 0
    discrete_branches: tuple[int, ...] = ()

    @property
    def policy(self) -> str:
        """The policy name (`Basic` for `Basic?team=0`)."""
        return policy_name(self.name)

    @property
    def model_file(self) -> str:
        """The exported file name, `<Behavior>.onnx`."""
        return f"{self.policy}.onnx"

    def input_shape(self, index: int) -> tuple[int, ...]:
        """The ONNX input shape of an observation without the batch axis: visual ones channels first (NCHW)."""
        shape = self.observation_shapes[index]
        return (shape[2], shape[0], shape[1]) if len(shape) == 3 else shape

    def to_json(self) -> dict[str, Any]:
        """The JSON form kept in checkpoint manifests and in unity_models.json."""
        return {
            "name": self.name,
            "observation_shapes": [list(shape) for shape in self.observation_shapes],
            "continuous_size": self.continuous_size,
            "discrete_branches": list(self.discrete_branches),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UnityBehavior:
        """The inverse of `to_json`."""
        return cls(
            name=str(data["name"]),
            observation_shapes=tuple(tuple(int(n) for n in shape) for shape in data["observation_shapes"]),
            continuous_size=int(data.get("continuous_size", 0)),
            discrete_branches=tuple(int(n) for n in data.get("discrete_branches", ())),
        )


def behaviors_from_meta(meta: Mapping[str, Any]) -> list[UnityBehavior] | None:
    """The behaviours a checkpoint manifest's meta records, or None (a checkpoint written before they were)."""
    recorded = meta.get(META_KEY)
    if not isinstance(recorded, list):
        return None
    return [UnityBehavior.from_json(item) for item in recorded]


def behaviors_meta(behaviors: Sequence[UnityBehavior]) -> dict[str, Any]:
    """The meta entry that records the behaviours in a checkpoint manifest."""
    return {META_KEY: [behavior.to_json() for behavior in behaviors]}


def write_index(model_dir: Path, models: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write unity_models.json (policy name -> description with its "file")."""
    return atomic_write_json(model_dir / INDEX_FILE, {"format": INDEX_FORMAT, "models": {k: dict(v) for k, v in models.items()}})


def unity_model_files(model_dir: Path) -> dict[str, Path]:
    """The exported Unity models of a model dir that exist, by policy name (empty without an index)."""
    index = read_json(model_dir / INDEX_FILE) or {}
    models = index.get("models") or {}
    found = {name: model_dir / str(entry.get("file")) for name, entry in models.items() if isinstance(entry, dict)}
    return {name: path for name, path in found.items() if path.is_file()}


def scene_behaviors(specs: Mapping[str, Any]) -> list[UnityBehavior]:
    """The behaviours of a scene from mlagents_envs' `behavior_specs` (name -> BehaviorSpec)."""
    return [
        UnityBehavior(
            name=name,
            observation_shapes=tuple(tuple(int(n) for n in o.shape) for o in spec.observation_specs),
            continuous_size=int(spec.action_spec.continuous_size),
            discrete_branches=tuple(int(b) for b in spec.action_spec.discrete_branches),
        )
        for name, spec in specs.items()
    ]
