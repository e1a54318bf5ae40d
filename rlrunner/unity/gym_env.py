"""Gymnasium adapters over an ML-Agents ``BaseEnv`` (they receive it; ``launch`` starts players).

* ``UnityGymEnv``: one agent of one behaviour as a ``gymnasium.Env``.
* ``UnityVectorEnv``: N areas (agents) of one behaviour as a ``gymnasium.vector.VectorEnv``, so that
  one protocol exchange advances N environments.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, cast

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.ports import LOOPBACK
from rlrunner.unity.spaces import Converter, Obs

with warnings.catch_warnings():
    # mlagents-envs 0.28's generated code uses protobuf 3's deprecated descriptor factories.
    warnings.filterwarnings("ignore", message="Call to deprecated create function", category=DeprecationWarning)
    from mlagents_envs.base_env import ActionTuple, BaseEnv, DecisionSteps, TerminalSteps
    from mlagents_envs.exception import UnityException

_MAX_SILENT_STEPS = 10_000
"""Academy steps without a decision for the agent before the adapter gives up."""


def _single_behavior(env: BaseEnv) -> tuple[str, bool]:
    reset = not env.behavior_specs
    if reset:
        env.reset()  # specs arrive with the first message that carries agents
    names = list(env.behavior_specs)
    if len(names) != 1:
        raise UnityEnvError(
            f"unity_env: the environment has {len(names)} behaviours ({', '.join(names) or 'none'}); "
            "this adapter drives exactly one (use one behaviour per Unity build)"
        )
    return names[0], reset


@contextlib.contextmanager
def _player_errors(env: BaseEnv, action: str) -> Iterator[None]:
    """Turn mlagents' exceptions during an exchange into one error that names the player."""
    try:
        yield
    except UnityException as error:
        port = getattr(env, "port", None)
        process = getattr(env, "process", None)
        where = f"{LOOPBACK}:{port}" if port is not None else "unity_env"
        who = f" (player pid {process.pid})" if process is not None else ""
        raise UnityEnvError(f"{where}{who}: {action} failed, the Unity player stopped or hung: {error}") from error


def _rewards(steps: DecisionSteps | TerminalSteps) -> np.ndarray:
    # Group rewards are part of the agent's return (Ray PR #24016 fixed the same omission).
    return cast(np.ndarray, steps.reward + steps.group_reward)


def _first(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(part[0] for part in value)
    return value[0]


class UnityGymEnv(gymnasium.Env[Obs, Any]):
    """One agent of one ML-Agents behaviour as a gymnasium environment."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        env: BaseEnv,
        *,
        uint8_visual: bool = False,
        flatten_branched: bool = False,
        allow_multiple_obs: bool = False,
        max_episode_steps: int | None = None,
    ) -> None:
        self._env = env
        self._behavior, was_reset = _single_behavior(env)
        self._conv = Converter(env.behavior_specs[self._behavior], uint8_visual, flatten_branched, allow_multiple_obs)
        self.observation_space = self._conv.observation_space
        self.action_space = self._conv.action_space
        self._max_episode_steps = max_episode_steps
        self._agent_id = -1
        self._steps = 0
        # The first decision of a new episode, when Unity already sent it (after env.reset() in
        # _single_behavior, or beside a terminal step): reset() then needs no exchange.
        self._fresh: DecisionSteps | None = None
        self._needs_reset = True
        self._sent = False
        self._closed = False
        if was_reset:
            decision, _ = env.get_steps(self._behavior)
            self._fresh = decision if len(decision) else None

    @property
    def unity_env(self) -> BaseEnv:
        """The underlying ML-Agents environment."""
        return self._env

    @property
    def behavior_name(self) -> str:
        """The behaviour it drives, as the scene reports it (`Basic?team=0`)."""
        return self._behavior

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict[str, Any]]:
        """Start an episode: reuse Unity's pending first decision, or send RESET."""
        super().reset(seed=seed)
        decision = self._fresh
        if decision is None:
            with _player_errors(self._env, "reset()"):
                self._env.reset()
                decision = self._await_decision()
        self._fresh = None
        self._check_one_agent(decision)
        self._agent_id = int(decision.agent_id[0])
        self._steps = 0
        self._needs_reset = False
        return _first(self._conv.observations(decision.obs, slice(0, 1))), self._info(decision)

    def step(self, action: Any) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """Send one action; return (obs, reward, terminated, truncated, info)."""
        self.begin_step(action)
        return self.end_step()

    def begin_step(self, action: Any) -> None:
        """The first half of ``step``: send the action without waiting, when the env can (``end_step`` waits)."""
        if self._needs_reset:
            raise UnityEnvError("unity_env: step() called before reset() or after the episode ended")
        self._env.set_actions(self._behavior, self._conv.action_tuple(np.asarray([action])))
        begin = getattr(self._env, "begin_step", None)
        self._sent = begin is not None
        if begin is not None:
            with _player_errors(self._env, "step()"):
                begin()

    def end_step(self) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """The second half of ``step``: wait for Unity; return (obs, reward, terminated, truncated, info)."""
        with _player_errors(self._env, "step()"):
            if self._sent:
                self._env.end_step()
            else:
                self._env.step()
            decision, terminal = self._await_agent()
        if len(terminal) and self._agent_id in terminal.agent_id:
            return self._end_episode(decision, terminal)
        self._steps += 1
        truncated = self._max_episode_steps is not None and self._steps >= self._max_episode_steps
        self._needs_reset = truncated
        obs = _first(self._conv.observations(decision.obs, slice(0, 1)))
        return obs, float(_rewards(decision)[0]), False, truncated, self._info(decision)

    def _await_agent(self) -> tuple[DecisionSteps, TerminalSteps]:
        for _ in range(_MAX_SILENT_STEPS):
            decision, terminal = self._env.get_steps(self._behavior)
            if self._agent_id in terminal.agent_id:
                return decision, terminal
            if self._agent_id in decision.agent_id:
                self._check_one_agent(decision)
                return decision, terminal
            if len(decision):
                raise UnityEnvError(
                    f"unity_env: agent {decision.agent_id.tolist()} of {self._behavior} requested a "
                    f"decision, expected agent {self._agent_id}"
                )
            self._env.step()  # no decision requested this Academy step: let Unity run on
        raise UnityEnvError(f"unity_env: agent {self._agent_id} of {self._behavior} stopped requesting decisions")

    def _end_episode(
        self, decision: DecisionSteps, terminal: TerminalSteps
    ) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        row = int(np.flatnonzero(terminal.agent_id == self._agent_id)[0])
        interrupted = bool(terminal.interrupted[row])
        self._steps += 1
        limit = self._max_episode_steps is not None and self._steps >= self._max_episode_steps
        self._needs_reset = True
        self._fresh = decision if len(decision) else None
        obs = _first(self._conv.observations(terminal.obs, slice(row, row + 1)))
        info: dict[str, Any] = {"max_step_reached": interrupted}
        if self._conv.is_discrete:
            info["action_mask"] = _first(self._conv.all_allowed(1))
        reward = float(_rewards(terminal)[row])
        return obs, reward, not interrupted, interrupted or limit, info

    def _await_decision(self) -> DecisionSteps:
        for _ in range(_MAX_SILENT_STEPS):
            decision, _ = self._env.get_steps(self._behavior)
            if len(decision):
                return decision
            self._env.step()
        raise UnityEnvError(f"unity_env: behaviour {self._behavior} never requested a decision")

    def _check_one_agent(self, decision: DecisionSteps) -> None:
        if len(decision) > 1:
            raise UnityEnvError(
                f"unity_env: behaviour {self._behavior} has {len(decision)} agents; UnityGymEnv drives "
                "one (use num_areas > 1, i.e. UnityVectorEnv, for several)"
            )

    def _info(self, decision: DecisionSteps) -> dict[str, Any]:
        if not self._conv.is_discrete:
            return {}
        return {"action_mask": _first(self._conv.allowed_actions(decision, slice(0, 1)))}

    def close(self) -> None:
        """Close the Unity environment (idempotent)."""
        if not self._closed:
            self._closed = True
            self._env.close()


class UnityVectorEnv(VectorEnv[Obs, Any, Any]):
    """N areas (one agent each) of one behaviour; one exchange steps them all (NEXT_STEP autoreset).

    With next-step autoreset the action given to a finished area on the following step is
    ignored, but Unity has already started that area's next episode and waits for an action;
    it receives a no-op (zeros) and the observation after it becomes the reset observation.
    A ``max_episode_steps`` truncation cannot reset one area alone in Unity, so the next episode
    continues from the area's current state; prefer the player's own max-step parameter.
    The areas' agents must decide together (the same DecisionRequester period and offset); an agent
    that ends between two decision steps is reported in the step that ends at the next one.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        env: BaseEnv,
        num_envs: int,
        *,
        uint8_visual: bool = False,
        flatten_branched: bool = False,
        allow_multiple_obs: bool = False,
        max_episode_steps: int | None = None,
    ) -> None:
        self._env = env
        self._behavior, was_reset = _single_behavior(env)
        self._conv = Converter(env.behavior_specs[self._behavior], uint8_visual, flatten_branched, allow_multiple_obs)
        self.num_envs = num_envs
        self.single_observation_space = self._conv.observation_space
        self.single_action_space = self._conv.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._max_episode_steps = max_episode_steps
        self._area_of: dict[int, int] = {}
        self._rows = np.arange(num_envs)  # area -> row in the latest DecisionSteps
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._final: list[tuple[np.ndarray, Obs]] = []  # (areas, their final observations) of this step's terminals
        self._fresh = was_reset and len(env.get_steps(self._behavior)[0]) == num_envs
        self._closed = False

    @property
    def unity_env(self) -> BaseEnv:
        """The underlying ML-Agents environment."""
        return self._env

    @property
    def behavior_name(self) -> str:
        """The behaviour it drives, as the scene reports it (`Basic?team=0`)."""
        return self._behavior

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict[str, Any]]:
        """Reset every area (RESET, unless Unity's first decisions are still unused)."""
        super().reset(seed=seed)
        if not self._fresh:
            with _player_errors(self._env, "reset()"):
                self._env.reset()
        self._fresh = False
        decision, _ = self._env.get_steps(self._behavior)
        self._check_count(decision)
        self._area_of = {int(agent): area for area, agent in enumerate(decision.agent_id)}
        self._rows = np.arange(self.num_envs)
        self._steps[:] = 0
        self._autoreset[:] = False
        return self._conv.observations(decision.obs, self._rows), self._infos(decision)

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all areas with one exchange, or more when agents end between decision steps."""
        self._send(actions)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        ended = np.zeros(self.num_envs, dtype=bool)
        self._final = []
        for _ in range(_MAX_SILENT_STEPS):
            decision, terminal = self._env.get_steps(self._behavior)
            ended |= self._apply_terminal(terminal, rewards, terminated, truncated)
            if len(decision):
                break
            # No decision in this exchange: agents ended between decision steps (a DecisionRequester
            # period above 1) and the areas decide again, together, in a later exchange.
            with _player_errors(self._env, "step()"):
                self._env.step()
        else:
            raise UnityEnvError(
                f"unity_env: no agent of {self._behavior} requested a decision in {_MAX_SILENT_STEPS} steps"
            )
        self._map_decisions(decision, ended)
        live = ~ended
        rewards[live] = _rewards(decision)[self._rows[live]]
        self._steps += 1
        if self._max_episode_steps is not None:
            truncated |= live & (self._steps >= self._max_episode_steps)
        # Areas that were auto-reset on this step report the reset observation only.
        rewards[self._autoreset] = 0.0
        terminated[self._autoreset] = False
        truncated[self._autoreset] = False
        self._steps[self._autoreset] = 0
        obs = self._conv.observations(decision.obs, self._rows)
        if ended.any():
            obs = self._with_terminal_obs(obs, ended & ~self._autoreset)
        self._autoreset = (terminated | truncated).copy()
        return obs, rewards, terminated, truncated, self._infos(decision)

    def _send(self, actions: Any) -> None:
        batch = self._conv.action_tuple(np.asarray(actions)) if actions is not None else self._conv.noop(self.num_envs)
        if self._autoreset.any():
            noop = self._conv.noop(self.num_envs)
            for name in ("continuous", "discrete"):
                values = getattr(batch, name)
                if values.size:
                    values[self._autoreset] = getattr(noop, name)[self._autoreset]
        order = np.empty(self.num_envs, dtype=np.int64)
        order[self._rows] = np.arange(self.num_envs)  # row -> area
        self._env.set_actions(self._behavior, _reorder(batch, order))
        with _player_errors(self._env, "step()"):
            self._env.step()

    def _apply_terminal(
        self, terminal: TerminalSteps, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
    ) -> np.ndarray:
        ended = np.zeros(self.num_envs, dtype=bool)
        terminal_rewards = _rewards(terminal)
        areas: list[int] = []
        rows: list[int] = []
        for row, agent in enumerate(terminal.agent_id):
            area = self._area_of.pop(int(agent), None)
            if area is None:
                continue  # an agent we never saw (e.g. a noop episode that ended at once)
            ended[area] = True
            areas.append(area)
            rows.append(row)
            rewards[area] = terminal_rewards[row]
            interrupted = bool(terminal.interrupted[row])
            terminated[area] = not interrupted
            truncated[area] = interrupted
        if areas:  # the final observations, kept until the step's observations are built
            self._final.append((np.asarray(areas), self._conv.observations(terminal.obs, np.asarray(rows))))
        return ended

    def _map_decisions(self, decision: DecisionSteps, ended: np.ndarray) -> None:
        self._check_count(decision)
        free = iter(int(area) for area in np.flatnonzero(ended))
        rows = np.empty(self.num_envs, dtype=np.int64)
        for row, agent in enumerate(decision.agent_id):
            area = self._area_of.get(int(agent))
            if area is None:
                area = next(free, None)
                if area is None:
                    raise UnityEnvError(
                        f"unity_env: agent {agent} of {self._behavior} belongs to no area "
                        "(areas must keep one agent each, ending and restarting in the same message)"
                    )
                self._area_of[int(agent)] = area
            rows[area] = row
        self._rows = rows

    def _with_terminal_obs(self, obs: Obs, keep: np.ndarray) -> Obs:
        for areas, final in self._final:
            chosen = keep[areas]
            if not chosen.any():
                continue
            indices = areas[chosen]
            if isinstance(obs, tuple):
                for part, final_part in zip(obs, cast(tuple[np.ndarray, ...], final), strict=True):
                    part[indices] = final_part[chosen]
            else:
                obs[indices] = cast(np.ndarray, final)[chosen]
        return obs

    def _check_count(self, decision: DecisionSteps) -> None:
        if len(decision) != self.num_envs:
            raise UnityEnvError(
                f"unity_env: {len(decision)} agents of {self._behavior} requested a decision, expected "
                f"{self.num_envs} (one per area); the areas path needs the areas' agents to decide together "
                "(the same DecisionRequester period and offset): a spec with a `behaviors:` section trains on the "
                "multi-agent path"
            )

    def _infos(self, decision: DecisionSteps) -> dict[str, Any]:
        if not self._conv.is_discrete:
            return {}
        mask = self._conv.allowed_actions(decision, self._rows)
        return {"action_mask": mask, "_action_mask": np.ones(self.num_envs, dtype=bool)}

    def close(self, **kwargs: Any) -> None:
        """Close the Unity environment (idempotent)."""
        if not self._closed:
            self._closed = True
            self._env.close()


def _reorder(batch: ActionTuple, order: np.ndarray) -> ActionTuple:
    result = ActionTuple()
    if batch.continuous.size:
        result.add_continuous(batch.continuous[order])
    if batch.discrete.size:
        result.add_discrete(batch.discrete[order])
    return result


__all__ = ["UnityGymEnv", "UnityVectorEnv"]
