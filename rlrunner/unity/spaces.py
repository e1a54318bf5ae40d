"""Gymnasium spaces of one ML-Agents behaviour, and the conversions to and from mlagents arrays.

Shared by every adapter (``gym_env``; ``multi_agent`` and the scene probe per behaviour: ``scene_converters``).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

import numpy as np
from gymnasium import spaces

from rlrunner.unity.errors import UnityEnvError

with warnings.catch_warnings():
    # mlagents-envs 0.28's generated code uses protobuf 3's deprecated descriptor factories.
    warnings.filterwarnings("ignore", message="Call to deprecated create function", category=DeprecationWarning)
    from mlagents_envs.base_env import ActionTuple, BehaviorSpec, DecisionSteps

Obs: TypeAlias = Any


class ActionFlattener:
    """Maps a Discrete index to one action per branch (the Cartesian product, as in UnityToGymWrapper)."""

    def __init__(self, branches: Sequence[int]) -> None:
        self.branches = tuple(branches)
        self.table = np.array(list(itertools.product(*(range(b) for b in branches))), dtype=np.int32)

    def mask(self, branch_masks: Sequence[np.ndarray]) -> np.ndarray:
        """Allowed flat actions given per-branch allowed vectors (rows = agents)."""
        allowed = np.ones((branch_masks[0].shape[0], len(self.table)), dtype=bool)
        for branch, branch_mask in enumerate(branch_masks):
            allowed &= branch_mask[:, self.table[:, branch]]
        return allowed


@dataclass(frozen=True)
class ImageVectorLayout:
    """Where a camera image and the vector lie in the flat observation of a behaviour that has both.

    The observation is one float32 Box: the image (height x width x channels, C order, as the
    adapter gives a visual observation: [0, 1], or 0..255 with ``uint8_visual``) then the vector
    observations concatenated in their order.
    """

    image_shape: tuple[int, int, int]
    vector_size: int

    @property
    def image_size(self) -> int:
        """Values of the image at the front of the observation."""
        return int(np.prod(self.image_shape))


@dataclass
class Converter:
    """Observation/action spaces of one behaviour and the conversions to and from mlagents arrays.

    One observation: a visual one (height x width x channels) or the vector ones concatenated. A
    behaviour with one camera and vector observations gets a flat Box of both (``layout``); with
    ``allow_multiple_obs`` every observation comes separately in a Tuple.
    """

    spec: BehaviorSpec
    uint8_visual: bool
    flatten_branched: bool
    allow_multiple_obs: bool

    def __post_init__(self) -> None:
        action_spec = self.spec.action_spec
        if action_spec.continuous_size > 0 and action_spec.discrete_size > 0:
            raise UnityEnvError("unity_env: hybrid (continuous + discrete) actions are not supported")
        self.visual = [i for i, o in enumerate(self.spec.observation_specs) if len(o.shape) == 3]
        self.vector = [i for i, o in enumerate(self.spec.observation_specs) if len(o.shape) != 3]
        if not self.visual and not self.vector:
            raise UnityEnvError("unity_env: the behaviour has no observations")
        self.vector_size = int(sum(np.prod(self.spec.observation_specs[i].shape) for i in self.vector))
        self.layout: ImageVectorLayout | None = None
        if not self.allow_multiple_obs and len(self.visual) == 1 and self.vector:
            height, width, channels = (int(v) for v in self.spec.observation_specs[self.visual[0]].shape)
            self.layout = ImageVectorLayout((height, width, channels), self.vector_size)
        self.flattener = (
            ActionFlattener(action_spec.discrete_branches)
            if self.flatten_branched and action_spec.discrete_size > 1
            else None
        )
        self.observation_space = self._observation_space()
        self.action_space = self._action_space()

    def _visual_space(self, index: int) -> spaces.Box:
        shape = self.spec.observation_specs[index].shape
        if self.uint8_visual:
            return spaces.Box(0, 255, shape, dtype=np.uint8)
        return spaces.Box(0.0, 1.0, shape, dtype=np.float32)

    def _vector_space(self) -> spaces.Box:
        return spaces.Box(-np.inf, np.inf, (self.vector_size,), dtype=np.float32)

    def _observation_space(self) -> spaces.Space[Any]:
        if self.allow_multiple_obs:
            parts: list[spaces.Space[Any]] = [self._visual_space(i) for i in self.visual]
            if self.vector:
                parts.append(self._vector_space())
            return spaces.Tuple(parts)
        if self.layout is not None:
            image = self._visual_space(self.visual[0])
            low = np.concatenate([image.low.reshape(-1), np.full(self.vector_size, -np.inf)]).astype(np.float32)
            high = np.concatenate([image.high.reshape(-1), np.full(self.vector_size, np.inf)]).astype(np.float32)
            return spaces.Box(low, high, dtype=np.float32)
        if self.visual:
            return self._visual_space(self.visual[0])
        return self._vector_space()

    def _action_space(self) -> spaces.Space[Any]:
        action_spec = self.spec.action_spec
        if action_spec.continuous_size > 0:
            return spaces.Box(-1.0, 1.0, (action_spec.continuous_size,), dtype=np.float32)
        branches = action_spec.discrete_branches
        if len(branches) == 1:
            return spaces.Discrete(branches[0])
        if self.flattener is not None:
            return spaces.Discrete(len(self.flattener.table))
        return spaces.MultiDiscrete(list(branches))

    @property
    def is_discrete(self) -> bool:
        """Whether actions are discrete (masks are reported)."""
        return bool(self.spec.action_spec.discrete_size > 0)

    def observations(self, obs: Sequence[np.ndarray], rows: np.ndarray | slice) -> Obs:
        """Gym observations for the given agent rows (batched along the first axis)."""
        if self.allow_multiple_obs:
            parts = [self._visual(obs[i][rows]) for i in self.visual]
            if self.vector:
                parts.append(self._vector(obs, rows))
            return tuple(parts)
        if self.layout is not None:
            image = self._visual(obs[self.visual[0]][rows])
            return np.concatenate([image.reshape(len(image), -1).astype(np.float32), self._vector(obs, rows)], axis=1)
        if self.visual:
            return self._visual(obs[self.visual[0]][rows])
        return self._vector(obs, rows)

    def _visual(self, array: np.ndarray) -> np.ndarray:
        if self.uint8_visual:
            return (array * 255.0).astype(np.uint8)
        return array.astype(np.float32, copy=False)

    def _vector(self, obs: Sequence[np.ndarray], rows: np.ndarray | slice) -> np.ndarray:
        if len(self.vector) == 1 and obs[self.vector[0]].ndim == 2:
            return obs[self.vector[0]][rows].astype(np.float32, copy=False)
        parts = [obs[i][rows].reshape(len(obs[i][rows]), -1) for i in self.vector]
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def action_tuple(self, actions: np.ndarray) -> ActionTuple:
        """An ``ActionTuple`` for a batch of gym actions (first axis = agents)."""
        if self.spec.action_spec.continuous_size > 0:
            return ActionTuple(continuous=np.asarray(actions, dtype=np.float32).reshape(len(actions), -1))
        discrete = np.asarray(actions, dtype=np.int32).reshape(len(actions), -1)
        if self.flattener is not None:
            discrete = self.flattener.table[discrete[:, 0]]
        return ActionTuple(discrete=discrete)

    def noop(self, count: int) -> ActionTuple:
        """Zero actions (the conventional no-op) for ``count`` agents."""
        return cast(ActionTuple, self.spec.action_spec.empty_action(count))

    def allowed_actions(self, decision: DecisionSteps, rows: np.ndarray | slice) -> Any:
        """The gymnasium-style mask (1 = allowed) of the given rows, or all-ones without masks."""
        branches = self.spec.action_spec.discrete_branches
        count = len(np.arange(len(decision))[rows])
        if decision.action_mask is None:
            per_branch = [np.ones((count, b), dtype=bool) for b in branches]
        else:
            per_branch = [~np.asarray(m[rows], dtype=bool) for m in decision.action_mask]
        if self.flattener is not None:
            return self.flattener.mask(per_branch).astype(np.int8)
        if len(branches) == 1:
            return per_branch[0].astype(np.int8)
        return tuple(m.astype(np.int8) for m in per_branch)

    def all_allowed(self, count: int) -> Any:
        """An all-ones mask for ``count`` agents (terminal steps carry no mask)."""
        branches = self.spec.action_spec.discrete_branches
        if self.flattener is not None:
            return np.ones((count, len(self.flattener.table)), dtype=np.int8)
        if len(branches) == 1:
            return np.ones((count, branches[0]), dtype=np.int8)
        return tuple(np.ones((count, b), dtype=np.int8) for b in branches)


def scene_converters(
    specs: Mapping[str, BehaviorSpec], *, uint8_visual: bool, flatten_branched: bool, allow_multiple_obs: bool
) -> dict[str, Converter]:
    """A ``Converter`` per behaviour of a scene, in name order; an error when the scene reported none."""
    if not specs:
        raise UnityEnvError("unity_env: the environment reported no behaviours")
    return {name: Converter(specs[name], uint8_visual, flatten_branched, allow_multiple_obs) for name in sorted(specs)}


__all__ = ["ActionFlattener", "Converter", "ImageVectorLayout", "Obs", "scene_converters"]
