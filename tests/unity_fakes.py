"""Builders for unit tests of the Unity adapters: real mlagents specs and step objects, and a scripted BaseEnv (no process).

`tests/unity/conftest.py` hands them out as the `fakes` fixture; a module that needs them at import time imports them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from mlagents_envs.base_env import (
    ActionSpec,
    ActionTuple,
    BaseEnv,
    BehaviorMapping,
    BehaviorSpec,
    DecisionSteps,
    DimensionProperty,
    ObservationSpec,
    ObservationType,
    TerminalSteps,
)

import rlrunner.unity.launch  # noqa: F401  (imports mlagents_envs with its protobuf warnings filtered)


def vector_spec(size: int) -> ObservationSpec:
    """A vector observation of ``size`` floats."""
    return ObservationSpec((size,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "vec")


def visual_spec(shape: tuple[int, int, int]) -> ObservationSpec:
    """A camera observation of ``shape`` (height, width, channels)."""
    props = (DimensionProperty.TRANSLATIONAL_EQUIVARIANCE,) * 2 + (DimensionProperty.NONE,)
    return ObservationSpec(shape, props, ObservationType.DEFAULT, "cam")


def spec(obs: list[ObservationSpec], actions: ActionSpec) -> dict[str, BehaviorSpec]:
    """One behaviour, ``B?team=0``, with these observations and actions."""
    return {"B?team=0": BehaviorSpec(obs, actions)}


def decision_steps(
    obs: Sequence[np.ndarray],
    ids: Sequence[int],
    reward: float | Sequence[float] = 0.0,
    mask: list[np.ndarray] | None = None,
    group_reward: float = 0.0,
) -> DecisionSteps:
    """Real DecisionSteps for len(ids) agents (``reward``: one for all, or one per agent)."""
    n = len(ids)
    return DecisionSteps(
        list(obs),
        np.full(n, reward, np.float32),
        np.array(ids, np.int32),
        mask,
        np.zeros(n, np.int32),
        np.full(n, group_reward, np.float32),
    )


def terminal_steps(
    obs: Sequence[np.ndarray],
    ids: Sequence[int],
    reward: float | Sequence[float] = 0.0,
    interrupted: bool | Sequence[bool] = False,
    group_reward: float = 0.0,
) -> TerminalSteps:
    """Real TerminalSteps for len(ids) agents (``reward``, ``interrupted``: one for all, or one per agent)."""
    n = len(ids)
    return TerminalSteps(
        list(obs),
        np.full(n, reward, np.float32),
        np.full(n, interrupted, bool),
        np.array(ids, np.int32),
        np.zeros(n, np.int32),
        np.full(n, group_reward, np.float32),
    )


class ScriptedEnv(BaseEnv):  # type: ignore[misc]
    """Replays (DecisionSteps, TerminalSteps) pairs, one per reset()/step(); records actions."""

    def __init__(self, specs: dict[str, BehaviorSpec], script: list[tuple[DecisionSteps, TerminalSteps]]) -> None:
        self._specs = specs
        self._script = list(script)
        self._current: tuple[DecisionSteps, TerminalSteps] | None = None
        self.actions: list[ActionTuple] = []
        self.resets = 0
        self.closed = False

    def _advance(self) -> None:
        self._current = self._script.pop(0)

    def reset(self) -> None:
        self.resets += 1
        self._advance()

    def step(self) -> None:
        self._advance()

    def close(self) -> None:
        self.closed = True

    @property
    def behavior_specs(self) -> BehaviorMapping:
        return BehaviorMapping(self._specs)

    def set_actions(self, behavior_name: str, action: ActionTuple) -> None:
        self.actions.append(action)

    def set_action_for_agent(self, behavior_name: str, agent_id: int, action: ActionTuple) -> None:
        raise NotImplementedError

    def get_steps(self, behavior_name: str) -> tuple[DecisionSteps, TerminalSteps]:
        assert self._current is not None
        return self._current
