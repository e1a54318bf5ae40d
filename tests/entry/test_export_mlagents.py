"""The ML-Agents inference model (`<Behavior>.onnx`): what Unity's loader checks, and the same greedy actions as RLlib.

Every layout exports an RLModule built from the adapter's spaces, loads the file with onnxruntime,
checks it against `UNITY_LOADER_CHECKS` (written down from the Unity package and ML-Agents' trainer,
sources below), then feeds 1,000 ML-Agents-shaped observations and compares with the actions RLlib's
own greedy path sends to Unity through rlrunner's adapter (`rlrunner.unity.spaces.Converter`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import gymnasium
import numpy as np
import pytest
from unity_loader import check_against_unity_loader

from rlrunner.contract import unity_model as names
from rlrunner.contract.unity_model import UnityBehavior, unity_model_files
from rlrunner.schema import EnvironmentSpec

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mlagents_envs.base_env import ActionSpec, BehaviorSpec, DimensionProperty, ObservationSpec, ObservationType

def vector(size: int) -> ObservationSpec:
    return ObservationSpec((size,), (DimensionProperty.NONE,), ObservationType.DEFAULT, f"vector{size}")


def visual(height: int, width: int, channels: int) -> ObservationSpec:
    props = (DimensionProperty.TRANSLATIONAL_EQUIVARIANCE, DimensionProperty.TRANSLATIONAL_EQUIVARIANCE, DimensionProperty.NONE)
    return ObservationSpec((height, width, channels), props, ObservationType.DEFAULT, "camera")


CNN = {"conv_filters": [[8, [4, 4], 2], [16, [3, 3], 2]], "head_fcnet_hiddens": [16]}
LAYOUTS: dict[str, tuple[str, BehaviorSpec, dict[str, Any], dict[str, Any] | None]] = {
    # id: (behaviour name, the scene's spec, adapter options, model config)
    "basic-discrete": ("Basic?team=0", BehaviorSpec([vector(20)], ActionSpec.create_discrete((3,))), {}, None),
    "continuous": ("Slide?team=0", BehaviorSpec([vector(1), vector(2)], ActionSpec.create_continuous(2)), {}, None),
    "multi-branch": ("Walker", BehaviorSpec([vector(6)], ActionSpec.create_discrete((3, 2, 4))), {}, None),
    "multi-branch-flattened": ("Walker", BehaviorSpec([vector(6)], ActionSpec.create_discrete((3, 2, 4))), {"flatten_branched": True}, None),
    "visual": ("Camera", BehaviorSpec([visual(12, 10, 3)], ActionSpec.create_discrete((3,))), {}, CNN),
    "visual-uint8": ("Camera", BehaviorSpec([visual(12, 10, 3)], ActionSpec.create_discrete((3,))), {"uint8_visual": True}, CNN),
    # a camera beside vector sensors: the adapter's flat observation and rlrunner's ImageVectorModule
    "vector-visual": ("Mixed", BehaviorSpec([vector(5), visual(12, 10, 1)], ActionSpec.create_discrete((2, 2))), {}, CNN),
    "visual-vector-uint8": ("Mixed", BehaviorSpec([visual(1, 21, 3), vector(20)], ActionSpec.create_discrete((3,))), {"uint8_visual": True}, {}),
    "visual-vectors-continuous": ("Mixed", BehaviorSpec([vector(2), visual(12, 10, 3), vector(3)], ActionSpec.create_continuous(2)), {}, CNN),
}


def converter(spec: BehaviorSpec, options: dict[str, Any]) -> Any:
    from rlrunner.unity.spaces import Converter

    return Converter(spec, options.get("uint8_visual", False), options.get("flatten_branched", False), False)


def build_module(conv: Any, model_config: dict[str, Any] | None, seed: int) -> Any:
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    torch.manual_seed(seed)
    module_class: type = DefaultPPOTorchRLModule
    if conv.layout is not None:  # what the launcher chooses for a camera beside vector sensors
        from rlrunner.entry.models import ImageVectorModule, image_vector_config

        module_class = ImageVectorModule
        model_config = image_vector_config(model_config or {}, conv.layout.image_shape, conv.layout.vector_size)
    spec = RLModuleSpec(
        module_class=module_class, observation_space=conv.observation_space, action_space=conv.action_space,
        model_config=model_config or {"fcnet_hiddens": [32, 32]},
    )  # fmt: skip
    module = spec.build().eval()
    with torch.no_grad():  # a freshly built head answers almost the same everywhere; continuous means beyond [-1, 1]
        for parameter in module.pi.parameters():
            parameter.mul_(40.0)
    return module


def behavior_of(name: str, spec: BehaviorSpec) -> UnityBehavior:
    return UnityBehavior(
        name, tuple(tuple(o.shape) for o in spec.observation_specs), spec.action_spec.continuous_size, tuple(spec.action_spec.discrete_branches)
    )


def mlagents_observations(spec: BehaviorSpec, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Observations as mlagents_envs hands them over (visual: HWC floats in [0, 1])."""
    return [
        (rng.random((count, *o.shape)) * rng.random((count, 1, 1, 1))).astype(np.float32) if len(o.shape) == 3 else rng.normal(0, 2, (count, *o.shape)).astype(np.float32)
        for o in spec.observation_specs
    ]


def onnx_feeds(spec: BehaviorSpec, obs: list[np.ndarray], masks: np.ndarray | None) -> dict[str, np.ndarray]:
    """What Unity feeds: obs_i per sensor, visual ones channels first; action_masks 1 = allowed."""
    feeds = {names.observation_name(i): np.transpose(o, (0, 3, 1, 2)) if o.ndim == 4 else o for i, o in enumerate(obs)}
    if masks is not None:
        feeds[names.ACTION_MASKS] = masks
    return feeds


def rllib_actions(module: Any, conv: Any, obs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """What RLlib's greedy inference sends to Unity through the adapter: the ActionTuple's array, and the logits."""
    from ray.rllib.utils.spaces.space_utils import unsquash_action

    gym_obs = conv.observations(obs, slice(None))
    with torch.no_grad():
        out = module.forward_inference({"obs": torch.as_tensor(np.asarray(gym_obs)).float()})
        logits = out["action_dist_inputs"]
        actions = module.get_inference_action_dist_cls().from_logits(logits).to_deterministic().sample().numpy()
    if isinstance(conv.action_space, gymnasium.spaces.Box):
        actions = unsquash_action(actions, conv.action_space)  # the env runner's normalize_actions=True path
        return conv.action_tuple(actions).continuous, logits.numpy()
    return conv.action_tuple(actions).discrete, logits.numpy()


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_export_mlagents_model_matches_unity_loader_and_rllib_greedy(layout: str, tmp_path: Path) -> None:
    from rlrunner.entry.export import ActionPostprocessing
    from rlrunner.entry.export_mlagents import export_unity_models

    name, spec, options, model_config = LAYOUTS[layout]
    conv = converter(spec, options)
    module = build_module(conv, model_config, seed=len(layout) + 1)
    behavior = behavior_of(name, spec)
    environment = EnvironmentSpec.model_validate({"name": "Basic", **options})
    index = export_unity_models({behavior.policy: module}, [behavior], tmp_path, environment=environment, post=ActionPostprocessing())

    path = tmp_path / f"{name.split('?')[0]}.onnx"
    assert unity_model_files(tmp_path) == {behavior.policy: path}
    assert index[behavior.policy]["behavior"] == name
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check_against_unity_loader(session, behavior)

    rng = np.random.default_rng(7)
    obs = mlagents_observations(spec, 1000, rng)
    expected, _ = rllib_actions(module, conv, obs)
    masks = np.ones((1000, sum(behavior.discrete_branches)), dtype=np.float32) if behavior.discrete_branches else None
    outputs = [o.name for o in session.get_outputs()]
    got = dict(zip(outputs, session.run(outputs, onnx_feeds(spec, obs, masks)), strict=True))
    if behavior.continuous_size:
        assert np.abs(expected).max() == 1.0  # some actions were clipped
        np.testing.assert_allclose(got["continuous_actions"], expected, atol=1e-5)
        np.testing.assert_allclose(got["deterministic_continuous_actions"], expected, atol=1e-5)
    else:
        assert len(np.unique(expected, axis=0)) > 1  # not a constant policy
        np.testing.assert_array_equal(got["discrete_actions"], expected)
        np.testing.assert_array_equal(got["deterministic_discrete_actions"], expected)


@pytest.mark.parametrize("layout", ["basic-discrete", "multi-branch", "multi-branch-flattened"])
def test_export_mlagents_model_honours_action_masks(layout: str, tmp_path: Path) -> None:
    from rlrunner.entry.export import ActionPostprocessing
    from rlrunner.entry.export_mlagents import export_unity_models

    name, spec, options, model_config = LAYOUTS[layout]
    conv = converter(spec, options)
    module = build_module(conv, model_config, seed=3)
    behavior = behavior_of(name, spec)
    environment = EnvironmentSpec.model_validate({"name": "Basic", **options})
    export_unity_models({behavior.policy: module}, [behavior], tmp_path, environment=environment, post=ActionPostprocessing())
    session = ort.InferenceSession(str(tmp_path / behavior.model_file), providers=["CPUExecutionProvider"])

    rng = np.random.default_rng(11)
    obs = mlagents_observations(spec, 1000, rng)
    branches = behavior.discrete_branches
    per_branch = []
    for size in branches:  # Unity's masks: some actions blocked, never a whole branch
        allowed = rng.random((1000, size)) < 0.6
        allowed[np.arange(1000), rng.integers(0, size, 1000)] = True
        per_branch.append(allowed)
    masks = np.concatenate(per_branch, axis=1).astype(np.float32)
    (got,) = session.run([names.DETERMINISTIC_DISCRETE_ACTIONS], onnx_feeds(spec, obs, masks))

    _, logits = rllib_actions(module, conv, obs)
    if conv.flattener is not None:
        flat_allowed = conv.flattener.mask(per_branch)
        expected = conv.flattener.table[np.argmax(np.where(flat_allowed, logits, -np.inf), axis=1)]
    else:
        splits = np.split(logits, np.cumsum(branches)[:-1], axis=1)
        expected = np.stack([np.argmax(np.where(a, s, -np.inf), axis=1) for s, a in zip(splits, per_branch, strict=True)], axis=1)
    np.testing.assert_array_equal(got, expected)
    for branch, allowed in enumerate(per_branch):
        assert allowed[np.arange(1000), got[:, branch]].all()


def test_export_mlagents_value_based_module_falls_back_to_the_next_opset(tmp_path: Path) -> None:
    """RLlib's DQN head uses nan_to_num, which opset 9 lacks: opset 11, same checks, RLlib's greedy actions."""
    from ray.rllib.algorithms.dqn import DQNConfig

    from rlrunner.entry.export import ActionPostprocessing
    from rlrunner.entry.export_mlagents import export_unity_models

    name, spec, options, _ = LAYOUTS["basic-discrete"]
    conv = converter(spec, options)
    torch.manual_seed(0)
    config = DQNConfig().rl_module(model_config={"fcnet_hiddens": [32]})  # dueling, as RLlib's default
    module_spec = config.get_default_rl_module_spec()
    module_spec.observation_space, module_spec.action_space = conv.observation_space, conv.action_space
    module_spec.model_config = config.model_config
    module = module_spec.build().eval()
    behavior = behavior_of(name, spec)
    index = export_unity_models({"Basic": module}, [behavior], tmp_path, environment=EnvironmentSpec(name="Basic"), post=ActionPostprocessing())
    assert index["Basic"]["opset"] == 11
    session = ort.InferenceSession(str(tmp_path / "Basic.onnx"), providers=["CPUExecutionProvider"])
    check_against_unity_loader(session, behavior, opset=11)

    obs = mlagents_observations(spec, 1000, np.random.default_rng(5))
    with torch.no_grad():
        expected = module.forward_inference({"obs": torch.from_numpy(obs[0])})["actions"].numpy()
    (got,) = session.run([names.DISCRETE_ACTIONS], onnx_feeds(spec, obs, np.ones((1000, 3), np.float32)))
    np.testing.assert_array_equal(got[:, 0], expected)


def test_export_mlagents_rejects_a_module_that_does_not_fit_the_behaviour(tmp_path: Path) -> None:
    from rlrunner.entry.export import ActionPostprocessing, ExportError
    from rlrunner.entry.export_mlagents import export_unity_models

    name, spec, options, _ = LAYOUTS["basic-discrete"]
    module = build_module(converter(spec, options), None, seed=0)
    wrong = UnityBehavior(name, ((21,),), 0, (3,))
    with pytest.raises(ExportError, match=r"^export: behaviour 'Basic\?team=0': the module observes shape \(20,\), the scene's observations \[\[21\]\] give \(21,\)$"):
        export_unity_models({"Basic": module}, [wrong], tmp_path, environment=EnvironmentSpec(name="Basic"), post=ActionPostprocessing())
    assert not list(tmp_path.glob("*.onnx*"))


def test_unity_behavior_round_trips_through_a_checkpoint_manifest() -> None:
    behavior = UnityBehavior("Mixed?team=1", ((5,), (12, 10, 1)), 0, (2, 2))
    meta = {"run_id": "x", **names.behaviors_meta([behavior])}
    assert names.behaviors_from_meta(meta) == [behavior]
    assert names.behaviors_from_meta({"run_id": "x"}) is None
    assert (behavior.policy, behavior.model_file, behavior.input_shape(1)) == ("Mixed", "Mixed.onnx", (1, 12, 10))
