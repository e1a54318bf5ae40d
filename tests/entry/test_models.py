"""rlrunner's ImageVectorModule: the adapter's flat camera-and-vector observation, shapes, gradients, the launcher's choice."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
import pytest
import torch
from mlagents_envs.base_env import ActionSpec, BehaviorSpec, DimensionProperty, ObservationSpec, ObservationType

from rlrunner.entry.algorithm import AlgorithmSetupError, image_vector_choice
from rlrunner.entry.models import ImageVectorModule, image_vector_config
from rlrunner.unity.spaces import Converter, ImageVectorLayout

CAMERA = ObservationSpec(
    (1, 21, 3),
    (DimensionProperty.TRANSLATIONAL_EQUIVARIANCE,) * 2 + (DimensionProperty.NONE,),
    ObservationType.DEFAULT,
    "CameraSensor",
)


def vector(size: int) -> ObservationSpec:
    return ObservationSpec((size,), (DimensionProperty.NONE,), ObservationType.DEFAULT, f"Vector{size}")


def build(
    action_space: gymnasium.Space[Any],
    model: dict[str, Any] | None = None,
    image: tuple[int, int, int] = (1, 21, 3),
    size: int = 20,
) -> Any:
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (int(np.prod(image)) + size,), np.float32)
    torch.manual_seed(0)
    spec = RLModuleSpec(
        module_class=ImageVectorModule, observation_space=observation_space, action_space=action_space,
        model_config=image_vector_config(model or {}, image, size),
    )  # fmt: skip
    return spec.build()


def test_converter_gives_one_flat_box_of_the_image_then_the_vectors() -> None:
    spec = BehaviorSpec([vector(2), CAMERA, vector(3)], ActionSpec.create_discrete((3,)))
    conv = Converter(spec, uint8_visual=False, flatten_branched=False, allow_multiple_obs=False)
    assert conv.layout == ImageVectorLayout((1, 21, 3), 5) and conv.layout.image_size == 63
    space = conv.observation_space
    assert isinstance(space, gymnasium.spaces.Box) and space.shape == (68,) and space.dtype == np.float32
    assert np.all(space.low[:63] == 0.0) and np.all(space.high[:63] == 1.0) and np.all(np.isinf(space.high[63:]))
    rng = np.random.default_rng(0)
    obs = [
        rng.normal(size=(4, 2)).astype(np.float32),
        rng.random((4, 1, 21, 3)).astype(np.float32),
        rng.normal(size=(4, 3)).astype(np.float32),
    ]
    flat = conv.observations(obs, slice(None))
    np.testing.assert_array_equal(flat[:, :63], obs[1].reshape(4, 63))
    np.testing.assert_array_equal(flat[:, 63:], np.concatenate([obs[0], obs[2]], axis=1))
    assert space.contains(flat[0])
    uint8 = Converter(spec, uint8_visual=True, flatten_branched=False, allow_multiple_obs=False)
    assert uint8.observation_space.high[0] == 255.0
    np.testing.assert_array_equal(
        uint8.observations(obs, slice(None))[:, :63], (obs[1] * 255.0).astype(np.uint8).reshape(4, 63)
    )
    # the Tuple of allow_multiple_obs, a camera alone and a vector alone keep their spaces
    assert Converter(spec, False, False, allow_multiple_obs=True).layout is None
    assert Converter(
        BehaviorSpec([CAMERA], ActionSpec.create_discrete((3,))), False, False, False
    ).observation_space.shape == (1, 21, 3)


@pytest.mark.parametrize(
    ("action_space", "width"),
    [
        (gymnasium.spaces.Discrete(3), 3),
        (gymnasium.spaces.MultiDiscrete([3, 2]), 5),
        (gymnasium.spaces.Box(-1.0, 1.0, (2,)), 4),
    ],
    ids=["discrete", "multi-discrete", "continuous"],
)
def test_forward_shapes_and_gradients_reach_both_branches(action_space: gymnasium.Space[Any], width: int) -> None:
    from ray.rllib.core.columns import Columns

    module = build(action_space, {"fcnet_hiddens": [16], "head_fcnet_hiddens": [8]})
    obs = torch.randn(5, 83)
    out = module.forward_train({Columns.OBS: obs})
    assert out[Columns.ACTION_DIST_INPUTS].shape == (5, width)
    values = module.compute_values({Columns.OBS: obs}, out[Columns.EMBEDDINGS])
    assert values.shape == (5,)
    assert module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS].shape == (5, width)
    (out[Columns.ACTION_DIST_INPUTS].pow(2).sum() + values.pow(2).sum()).backward()
    for branch in (module.cnn, module.mlp, module.pi, module.vf):
        grads = [p.grad for p in branch.parameters()]
        assert grads and all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0


def test_both_parts_of_the_observation_change_the_output() -> None:
    from ray.rllib.core.columns import Columns

    module = build(gymnasium.spaces.Discrete(3))
    with torch.no_grad():
        for p in module.pi[-1].parameters():
            p.normal_()  # the head starts near zero; make differences visible
        base = torch.zeros(1, 83)
        image, vec = base.clone(), base.clone()
        image[0, 5] = 1.0
        vec[0, 70] = 1.0
        logits = [module.forward_inference({Columns.OBS: x})[Columns.ACTION_DIST_INPUTS] for x in (base, image, vec)]
    assert not torch.allclose(logits[0], logits[1]) and not torch.allclose(logits[0], logits[2])


def test_conv_filters_come_from_the_model_config_or_are_fitted_to_the_image() -> None:
    fitted = build(gymnasium.spaces.Discrete(3))
    assert fitted.conv_filters == [[16, [1, 3], 1], [32, [1, 3], [1, 2]]]  # what RLlib's default CNN gets for 1x21x3
    assert [m.out_channels for m in fitted.cnn.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32]
    own = build(gymnasium.spaces.Discrete(3), {"conv_filters": [[4, [1, 5], 1]]})
    assert [(m.out_channels, m.kernel_size) for m in own.cnn.modules() if isinstance(m, torch.nn.Conv2d)] == [
        (4, (1, 5))
    ]
    from ray.rllib.models.utils import get_filter_config

    rllib_size = build(gymnasium.spaces.Discrete(3), image=(42, 42, 1), size=4)
    assert rllib_size.conv_filters == get_filter_config([42, 42, 1]) != fitted.conv_filters  # RLlib's default for 42x42
    assert rllib_size.observation_layout() == {
        "image": {"offset": 0, "shape": [42, 42, 1]},
        "vector": {"offset": 1764, "size": 4},
    }


def test_a_layout_that_does_not_match_the_observation_space_is_refused() -> None:
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    spec = RLModuleSpec(
        module_class=ImageVectorModule, observation_space=gymnasium.spaces.Box(0, 1, (20,)), action_space=gymnasium.spaces.Discrete(3),
        model_config={"image_shape": [1, 21, 3], "vector_size": 20},
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"not the flat image \[1, 21, 3\] and vector \(20\) it expects \(83 values\)"):
        spec.build()
    missing = RLModuleSpec(
        module_class=ImageVectorModule,
        observation_space=gymnasium.spaces.Box(0, 1, (20,)),
        action_space=gymnasium.spaces.Discrete(3),
    )
    with pytest.raises(ValueError, match="model_config needs image_shape and vector_size"):
        missing.build()


def test_the_launcher_choice_line_and_its_refusals() -> None:
    layout = ImageVectorLayout((1, 21, 3), 20)
    config, line = image_vector_choice("PPO", layout, {"fcnet_hiddens": [32]}, "algorithm.model", named=False)
    assert config["image_shape"] == [1, 21, 3] and config["vector_size"] == 20 and config["fcnet_hiddens"] == [32]
    assert line.startswith(
        "model: rlrunner:ImageVectorModule (chosen for camera and vector observations): a CNN over the 1x21x3 images"
    )
    assert "conv_filters [[16, [1, 3], 1], [32, [1, 3], [1, 2]]]" in line
    with pytest.raises(
        AlgorithmSetupError, match=r"^algorithm.name: the scene observes a 1x21x3 camera image and a 20-value vector"
    ):
        image_vector_choice("DQN", layout, {}, "algorithm.model", named=False)
    with pytest.raises(
        AlgorithmSetupError, match=r"^behaviors.VisualBasic.model.conv_filters\[0\] .*does not fit the 1x21x3 image"
    ):
        image_vector_choice(
            "PPO", layout, {"conv_filters": [[8, [3, 3], 1, "valid"]]}, "behaviors.VisualBasic.model", named=False
        )


def experiment(algorithm: str = "PPO", **model: Any) -> Any:
    import yaml
    from shared import EXPERIMENTS

    from rlrunner.runner import render_experiment
    from rlrunner.schema import Experiment, ExperimentSpec

    data = yaml.safe_load((EXPERIMENTS / "visual_vector_basic_ppo.yaml").read_text())
    data["algorithm"]["model"] = model
    if algorithm != "PPO":
        data["algorithm"] = {"name": algorithm, "hyperparameters": {}, "model": model}
    spec = ExperimentSpec.model_validate(data)  # the shipped module needs no source_dir
    return Experiment.model_validate(render_experiment(spec.on_this_machine(), spec_dir=EXPERIMENTS))


def test_naming_the_module_for_a_scene_without_camera_and_vector_is_one_clear_error() -> None:
    from rlrunner.contract.errors import InvalidSpecError
    from rlrunner.entry import train_unity
    from rlrunner.entry.unity_env import Scene

    named = experiment(module="rlrunner:ImageVectorModule")
    assert train_unity.load_custom_module(None, named) is ImageVectorModule  # type: ignore[arg-type]  # (no source dir read)
    box = gymnasium.spaces.Box(-np.inf, np.inf, (20,), np.float32)
    scene = Scene(
        spaces={"Basic?team=0": (box, gymnasium.spaces.Discrete(3))}, agents={"Basic?team=0": 1}, behaviors=[]
    )
    with pytest.raises(InvalidSpecError) as error:
        train_unity._choose_models(None, scene, None, named, ImageVectorModule)
    assert str(error.value) == (
        "algorithm.model.module 'rlrunner:ImageVectorModule': behaviour Basic?team=0 does not observe one camera image "
        "and a vector together (its observation space is Box(-inf, inf, (20,), float32))"
    )
    dqn = experiment("DQN", module="rlrunner:ImageVectorModule")
    with pytest.raises(InvalidSpecError) as refused:
        train_unity.load_custom_module(None, dqn)  # type: ignore[arg-type]
    assert str(refused.value) == "algorithm.model.module 'rlrunner:ImageVectorModule': drives PPO, IMPALA, not DQN"
