"""RLModules that rlrunner ships, for observations RLlib's default model does not cover.

`ImageVectorModule` drives a behaviour that observes through a camera *and* vector sensors (the
adapter's flat observation, `rlrunner.unity.spaces.ImageVectorLayout`: the image, height x width x
channels in C order, then the vector). The launcher chooses it automatically for such a behaviour
and prints the choice; a spec names it as `algorithm.model.module: rlrunner:ImageVectorModule`
(no `source_dir` needed). It serves PPO and IMPALA (it implements `ValueFunctionAPI`); APPO needs
target networks and DQN and SAC their own heads, so they are refused for such a behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn

IMAGE_VECTOR_ALGORITHMS = ("PPO", "IMPALA")
"""The algorithms whose learners `ImageVectorModule` fits (a policy and a value function)."""

LAYOUT_KEYS = ("image_shape", "vector_size")
"""The module config keys that give the observation's layout (the launcher sets them from the scene)."""

MODEL_KEYS = (
    "conv_filters",
    "conv_activation",
    "fcnet_hiddens",
    "fcnet_activation",
    "head_fcnet_hiddens",
    "head_fcnet_activation",
)
"""The RLlib DefaultModelConfig keys the module reads; unset ones keep RLlib's defaults (RLlib merges them in too)."""


def model_defaults() -> dict[str, Any]:
    """RLlib's DefaultModelConfig values of the keys the module reads."""
    import dataclasses

    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    defaults = dataclasses.asdict(DefaultModelConfig())
    return {key: defaults[key] for key in MODEL_KEYS}


class ImageVectorModule(TorchRLModule, ValueFunctionAPI):
    """A CNN over the camera image and an MLP over the vector, concatenated, then a policy head and a value head.

    `model_config` (the spec's `algorithm.model`, or `module_config` when the spec names the module):

    - `image_shape` [height, width, channels] and `vector_size`: the observation's layout (set by the launcher);
    - `conv_filters` ([channels, kernel, stride(, padding)] per layer; default: RLlib's for its image sizes,
      else two small layers fitted to the image, as for RLlib's default CNN) and `conv_activation` (relu);
    - `fcnet_hiddens` ([256, 256]) and `fcnet_activation` (tanh): the MLP over the vector;
    - `head_fcnet_hiddens` ([]) and `head_fcnet_activation` (relu): the hidden layers of each head (`pi`,
      `vf`) over the concatenated features.

    The defaults in brackets are RLlib's DefaultModelConfig values, which RLlib merges into every module's config.
    """

    def setup(self) -> None:
        """Build the CNN, the vector MLP and the two heads from the model config and the spaces."""
        from ray.rllib.core.models.catalog import Catalog
        from ray.rllib.core.models.configs import CNNEncoderConfig

        given: dict[str, Any] = dict(self.model_config) if isinstance(self.model_config, Mapping) else {}
        config = {**model_defaults(), **{key: value for key, value in given.items() if value is not None}}
        missing = [key for key in LAYOUT_KEYS if key not in config]
        if missing:
            raise ValueError(
                f"ImageVectorModule: model_config needs {' and '.join(missing)} (the observation's layout)"
            )
        self.image_shape = tuple(int(v) for v in config["image_shape"])
        self.vector_size = int(config["vector_size"])
        if len(self.image_shape) != 3 or self.vector_size < 1:
            raise ValueError(
                f"ImageVectorModule: image_shape {list(self.image_shape)} must be [height, width, channels], vector_size >= 1"
            )
        self.image_size = int(np.prod(self.image_shape))
        observed = tuple(getattr(self.observation_space, "shape", None) or ())
        if observed != (self.image_size + self.vector_size,):
            raise ValueError(
                f"ImageVectorModule: the observation space {self.observation_space} is not the flat image "
                f"{list(self.image_shape)} and vector ({self.vector_size}) it expects ({self.image_size + self.vector_size} values)"
            )
        filters = config.get("conv_filters") or image_filters(self.image_shape)
        self.conv_filters = [list(layer) for layer in filters]
        encoder = CNNEncoderConfig(
            input_dims=list(self.image_shape),
            cnn_filter_specifiers=self.conv_filters,
            cnn_activation=config["conv_activation"],
        )
        self.cnn = encoder.build(framework="torch").net  # channels last in, flat features out
        self.mlp, vector_out = _mlp(self.vector_size, config["fcnet_hiddens"], config["fcnet_activation"])
        features = int(encoder.output_dims[0]) + vector_out
        action_space = self.action_space
        assert action_space is not None  # RLlib builds modules with both spaces
        if self.action_dist_cls is None and not isinstance(
            action_space, gymnasium.spaces.Discrete | gymnasium.spaces.Box
        ):
            self.action_dist_cls = Catalog._get_dist_cls_from_action_space(action_space, framework="torch")
        outputs = int(self.get_inference_action_dist_cls().required_input_dim(action_space))
        pi_body, pi_out = _mlp(features, config["head_fcnet_hiddens"], config["head_fcnet_activation"])
        vf_body, vf_out = _mlp(features, config["head_fcnet_hiddens"], config["head_fcnet_activation"])
        logits = nn.Linear(pi_out, outputs)
        nn.init.normal_(logits.weight, std=0.01)  # near-uniform first actions, as RLlib's heads start
        nn.init.zeros_(logits.bias)
        self.pi = nn.Sequential(pi_body, logits)
        self.vf = nn.Sequential(vf_body, nn.Linear(vf_out, 1))

    def observation_layout(self) -> dict[str, Any]:
        """Where the image and the vector lie in the flat observation (for the exported model's description)."""
        return {
            "image": {"offset": 0, "shape": list(self.image_shape)},
            "vector": {"offset": self.image_size, "size": self.vector_size},
        }

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The CNN's features of the image beside the MLP's of the vector, for a batch of flat observations."""
        obs = obs.float()
        image = obs[:, : self.image_size].reshape(-1, *self.image_shape)
        vector = obs[:, self.image_size :]
        return torch.cat([self.cnn(image), self.mlp(vector)], dim=1)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self.pi(self.features(batch[Columns.OBS]))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        embeddings = self.features(batch[Columns.OBS])
        return {Columns.ACTION_DIST_INPUTS: self.pi(embeddings), Columns.EMBEDDINGS: embeddings}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        """The value head over the shared features (PPO's GAE and value loss)."""
        if embeddings is None:
            embeddings = self.features(batch[Columns.OBS])
        values: torch.Tensor = self.vf(embeddings).squeeze(-1)
        return values


SMALL_IMAGE_FILTERS = (16, 32)
"""Output channels of the two CNN layers rlrunner chooses for an image RLlib has no default filters for."""


def small_image_filters(shape: Sequence[int]) -> list[Any]:
    """Two 3x3 layers (kernels cut to the image, the second of stride 2 along axes of 4 pixels or more) for a small image."""
    kernel = [min(3, int(shape[0])), min(3, int(shape[1]))]
    stride = [2 if shape[0] >= 4 else 1, 2 if shape[1] >= 4 else 1]
    return [[SMALL_IMAGE_FILTERS[0], kernel, 1], [SMALL_IMAGE_FILTERS[1], kernel, stride]]


def image_filters(shape: Sequence[int]) -> list[Any]:
    """The CNN filters for an image with no `conv_filters`: RLlib's default for its sizes, else `small_image_filters`."""
    from ray.rllib.models.utils import get_filter_config

    try:  # RLlib has defaults for 10x10, 42x42, 64x64, 84x84 and 96x96 only
        return list(get_filter_config(list(shape)))  # type: ignore[no-untyped-call]
    except ValueError:
        return small_image_filters(shape)


def image_vector_config(model: Mapping[str, Any], image_shape: Sequence[int], vector_size: int) -> dict[str, Any]:
    """The module config for one behaviour: the user's keys, the layout, and the CNN filters made explicit."""
    config = {
        **model_defaults(),
        **dict(model),
        "image_shape": [int(v) for v in image_shape],
        "vector_size": int(vector_size),
    }
    if not config.get("conv_filters"):
        config["conv_filters"] = image_filters(image_shape)
    return config


def _mlp(size: int, hiddens: Sequence[int], activation: str) -> tuple[nn.Module, int]:
    from ray.rllib.models.utils import get_activation_fn

    layers: list[nn.Module] = []
    act = get_activation_fn(activation, framework="torch")
    for hidden in hiddens:
        layers.append(nn.Linear(size, int(hidden)))
        if act is not None:
            layers.append(act())
        size = int(hidden)
    return nn.Sequential(*layers), size


__all__ = [
    "SMALL_IMAGE_FILTERS",
    "small_image_filters",
    "MODEL_KEYS",
    "model_defaults",
    "IMAGE_VECTOR_ALGORITHMS",
    "ImageVectorModule",
    "image_filters",
    "image_vector_config",
]
