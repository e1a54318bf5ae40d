"""A small custom RLModule for PPO: one shared tanh MLP trunk, a policy head and a value head.

Referenced from `experiments/custom_model.yaml` as `algorithm.model.module: tiny_mlp:TinyMLP`;
`algorithm.model.module_config` arrives here as `self.model_config`.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn


class TinyMLP(TorchRLModule, ValueFunctionAPI):
    """Discrete or continuous actions from a flat observation; `hidden` sets the trunk width."""

    def setup(self) -> None:
        hidden = int(self.model_config.get("hidden", 32))
        layers = int(self.model_config.get("layers", 1))
        in_size = int(np.prod(self.observation_space.shape))
        trunk: list[nn.Module] = []
        for _ in range(layers):
            trunk += [nn.Linear(in_size, hidden), nn.Tanh()]
            in_size = hidden
        self._trunk = nn.Sequential(*trunk)
        if isinstance(self.action_space, gym.spaces.Discrete):
            outputs = int(self.action_space.n)
        else:
            outputs = 2 * int(np.prod(self.action_space.shape))  # mean and log std (diagonal Gaussian)
        self._policy = nn.Linear(in_size, outputs)
        self._value = nn.Linear(in_size, 1)
        nn.init.normal_(self._policy.weight, std=0.01)
        nn.init.zeros_(self._policy.bias)

    def _embed(self, batch: dict[str, Any]) -> torch.Tensor:
        return self._trunk(batch[Columns.OBS].float().flatten(1))

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {Columns.ACTION_DIST_INPUTS: self._policy(self._embed(batch))}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        embeddings = self._embed(batch)
        return {Columns.ACTION_DIST_INPUTS: self._policy(embeddings), Columns.EMBEDDINGS: embeddings}

    def compute_values(self, batch: dict[str, Any], embeddings: Any | None = None) -> torch.Tensor:
        if embeddings is None:
            embeddings = self._embed(batch)
        return self._value(embeddings).squeeze(-1)
