"""RLlib ``MultiAgentEnv`` (new API stack) over an ML-Agents ``BaseEnv``: any scene, any behaviours.

Unity's side of the protocol decides who acts: an agent gets an observation (and so an action)
only when it appears in its behaviour's ``DecisionSteps``; ``TerminalSteps`` end its episode
(terminated, or truncated when ``interrupted``) with its final observation and reward. Group
rewards are added to the agent's reward. Exchanges in which no agent asks for a decision are
stepped through inside one ``step()`` (rewards reported for an agent in the meantime are summed).

Agent ids. RLlib does not let an agent act again after it is done within one episode, and Unity
may reuse an agent id after a terminal step, so every agent episode gets its own RLlib agent id,
``"<behaviour>#<n>"`` (``n`` counts from 0 per behaviour in every RLlib episode, so ids repeat across
episodes and RLlib's per-agent metrics stay bounded). RLlib's connectors look agents' spaces up by
id in a fixed table, so ``possible_agents`` lists ``AGENT_IDS`` ids per behaviour and an RLlib episode
is cut early when half of them are used. ``behavior_of(agent_id)`` gives the behaviour back; the
policy mapping lives with the algorithm (``rlrunner.entry.algorithm``).

Episodes. A Unity scene never ends, so the adapter cuts it into RLlib episodes of
``episode_horizon`` steps without resetting Unity: at the cut every live agent is truncated (an
agent waiting for its next decision with its latest observation), and ``reset()`` hands the
agents that are still waiting for an action to the next episode under fresh ids. Only the first
``reset()`` sends Unity a RESET. Episode state is per RLlib episode, so memory stays flat.
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium
import numpy as np
from ray.rllib.env.multi_agent_env import MultiAgentEnv

from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.gym_env import _MAX_SILENT_STEPS, _player_errors, _rewards
from rlrunner.unity.spaces import Converter, Obs, scene_converters

with warnings.catch_warnings():
    # mlagents-envs 0.28's generated code uses protobuf 3's deprecated descriptor factories.
    warnings.filterwarnings("ignore", message="Call to deprecated create function", category=DeprecationWarning)
    from mlagents_envs.base_env import BaseEnv, DecisionSteps, TerminalSteps

AGENT_SEPARATOR = "#"
EPISODE_HORIZON = 1000
"""Default length of one RLlib episode cut from the never-ending scene (environment steps)."""
AGENT_IDS = 1024
"""Agent ids per behaviour in ``possible_agents``; an RLlib episode is cut once half are used."""
RETURNS_KEPT = 1000
"""Finished agent-episode returns kept per behaviour until ``pop_finished`` drains them."""


def policy_name(behavior: str) -> str:
    """The default policy (RLModule) id of a behaviour: its name without ``?team=N``."""
    return behavior.split("?", 1)[0]


def behavior_of(agent_id: str) -> str:
    """The fully qualified behaviour name of an RLlib agent id made by this adapter."""
    return agent_id.rsplit(AGENT_SEPARATOR, 1)[0]


@dataclass
class _Agent:
    """One live Unity agent episode (keyed by behaviour and Unity agent id)."""

    agent_id: str  # its RLlib agent id in the current RLlib episode ("" once the episode was cut)
    last_obs: Obs = None
    decisions: int = 0  # decisions in this RLlib agent episode (for max_episode_steps)
    unity_return: float = 0.0  # the whole Unity episode's return (metrics)
    unity_length: int = 0
    seen: int = 0  # the exchange it last appeared in


class UnityMultiAgentEnv(MultiAgentEnv):
    """Every agent of every behaviour of a Unity scene as one RLlib ``MultiAgentEnv``."""

    def __init__(
        self,
        env: BaseEnv,
        *,
        uint8_visual: bool = False,
        flatten_branched: bool = False,
        allow_multiple_obs: bool = False,
        max_episode_steps: int | None = None,
        episode_horizon: int = EPISODE_HORIZON,
        rounds: bool = False,
    ) -> None:
        """`rounds`: an RLlib episode ends as soon as every behaviour finished an agent episode in it (evaluation:
        N RLlib episodes give every behaviour at least N agent episodes, instead of N horizons of steps)."""
        super().__init__()  # type: ignore[no-untyped-call]
        self._env = env
        self._fresh = not env.behavior_specs
        if self._fresh:
            with _player_errors(env, "reset()"):
                env.reset()  # specs arrive with the first message that carries agents
        self._conv = scene_converters(
            env.behavior_specs,
            uint8_visual=uint8_visual,
            flatten_branched=flatten_branched,
            allow_multiple_obs=allow_multiple_obs,
        )
        self.behaviors = list(self._conv)
        self.possible_agents = [f"{name}{AGENT_SEPARATOR}{n}" for name in self.behaviors for n in range(AGENT_IDS)]
        self.agents = []
        self.observation_spaces = None
        self.action_spaces = None
        self.observation_space = gymnasium.spaces.Dict(
            {str(aid): self._conv[behavior_of(str(aid))].observation_space for aid in self.possible_agents}
        )
        self.action_space = gymnasium.spaces.Dict(
            {str(aid): self._conv[behavior_of(str(aid))].action_space for aid in self.possible_agents}
        )
        self._max_episode_steps = max_episode_steps
        self._horizon = episode_horizon
        self._rounds = rounds
        self._finished_in_episode: set[str] = set()
        self._live: dict[tuple[str, int], _Agent] = {}
        self._waiting: dict[str, DecisionSteps] = {}  # decisions Unity waits for, per behaviour
        self._steps_now: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self._next_index = dict.fromkeys(self.behaviors, 0)
        self._open: set[str] = set()  # agents of this RLlib episode that are not done
        self._steps = 0
        self._exchanges = 0
        self._started = False
        self._finished: dict[str, deque[tuple[float, int]]] = {
            name: deque(maxlen=RETURNS_KEPT) for name in self.behaviors
        }
        self._closed = False

    @property
    def unity_env(self) -> BaseEnv:
        """The underlying ML-Agents environment."""
        return self._env

    @property
    def exchanges(self) -> int:
        """Protocol exchanges (Unity steps) so far."""
        return self._exchanges

    def get_observation_space(self, agent_id: Any) -> gymnasium.Space[Any]:
        """The observation space of the agent's behaviour."""
        return self._conv[behavior_of(str(agent_id))].observation_space

    def get_action_space(self, agent_id: Any) -> gymnasium.Space[Any]:
        """The action space of the agent's behaviour."""
        return self._conv[behavior_of(str(agent_id))].action_space

    def pop_finished(self) -> dict[str, list[tuple[float, int]]]:
        """(return, decisions) of every Unity agent episode that ended since the last call, per behaviour."""
        result = {name: list(done) for name, done in self._finished.items() if done}
        for done in self._finished.values():
            done.clear()
        return result

    # --- the RLlib API -------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[Any, Obs], dict[Any, Any]]:
        """Start an RLlib episode; Unity is reset only the first time."""
        super().reset(seed=seed, options=options)
        if not self._started:
            self._started = True
            with _player_errors(self._env, "reset()"):
                if not self._fresh:
                    self._env.reset()
                self._fresh = False
                self._exchanges += 1
                self._collect()
                while not self._waiting:
                    self._exchange()
            for name, decision in self._waiting.items():
                for unity_id, reward in zip(decision.agent_id, _rewards(decision), strict=True):
                    agent = self._agent(name, int(unity_id))
                    agent.unity_return += float(reward)
                    agent.unity_length += 1
        self._next_index = dict.fromkeys(self.behaviors, 0)
        self._steps = 0
        self._finished_in_episode = set()
        for agent in self._live.values():
            agent.agent_id = ""  # a new RLlib episode: new ids when they next decide
        obs: dict[Any, Obs] = {}
        for name, decision in self._waiting.items():
            conv = self._conv[name]
            for row, unity_id in enumerate(decision.agent_id):
                agent = self._agent(name, int(unity_id))
                agent.agent_id = self._new_id(name)
                agent.decisions = 0
                obs[agent.agent_id] = agent.last_obs = _row(conv.observations(decision.obs, slice(row, row + 1)))
        self.agents = list(obs)
        self._open = set(obs)
        return obs, {}

    def step(  # type: ignore[override]
        self, action_dict: dict[Any, Any]
    ) -> tuple[dict[Any, Obs], dict[Any, Any], dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
        """Send the actions of the agents that were asked; run Unity until some agent must decide."""
        if not self._started:
            raise UnityEnvError("unity_env: step() called before reset()")
        self._send(action_dict)
        obs: dict[Any, Obs] = {}
        rewards: dict[Any, Any] = {}
        terminateds: dict[Any, Any] = {"__all__": False}
        truncateds: dict[Any, Any] = {"__all__": False}
        with _player_errors(self._env, "step()"):
            for _ in range(_MAX_SILENT_STEPS):
                self._exchange()
                self._apply(obs, rewards, terminateds, truncateds)
                if self._waiting:
                    break
            else:
                raise UnityEnvError(f"unity_env: no agent requested a decision in {_MAX_SILENT_STEPS} steps")
        self._steps += 1
        ended = {aid for aid in obs if terminateds.get(aid) or truncateds.get(aid)}
        if self._open and self._open <= ended:
            # Every agent of this RLlib episode is done (RLlib would end the episode on its own):
            # end it for the env runner too; the agents that just started begin the next one.
            everyone = terminateds if all(terminateds.get(aid) for aid in self._open) else truncateds
            everyone["__all__"] = True
            self._drop_ids()
        elif (
            self._steps >= self._horizon
            or max(self._next_index.values()) >= AGENT_IDS // 2
            or (self._rounds and len(self._finished_in_episode) == len(self.behaviors))
        ):
            self._cut(obs, rewards, truncateds)
        else:
            self._open = {aid for aid in (self._open | set(obs)) if aid not in ended}
        self.agents = [aid for aid in obs if aid not in ended and not truncateds["__all__"] and not terminateds["__all__"]]
        return obs, rewards, terminateds, truncateds, {}

    def close(self) -> None:
        """Close the Unity environment (idempotent)."""
        if not self._closed:
            self._closed = True
            self._env.close()

    # --- internals ------------------------------------------------------------------------------

    def _new_id(self, behavior: str) -> str:
        index = self._next_index[behavior]
        if index >= AGENT_IDS:
            raise UnityEnvError(f"unity_env: more than {AGENT_IDS // 2} agents of {behavior} started in one step")
        self._next_index[behavior] = index + 1
        return f"{behavior}{AGENT_SEPARATOR}{index}"

    def _send(self, action_dict: dict[Any, Any]) -> None:
        for name, decision in self._waiting.items():
            conv = self._conv[name]
            actions = []
            noop = None
            for unity_id in decision.agent_id:
                agent = self._live[(name, int(unity_id))]
                action = action_dict.get(agent.agent_id)
                if action is None:  # RLlib acts for every agent it was given; a no-op otherwise
                    noop = noop if noop is not None else conv.noop(1)
                    action = _single_action(conv, noop)
                actions.append(np.asarray(action))
            self._env.set_actions(name, conv.action_tuple(np.stack(actions)))
        self._waiting = {}

    def _exchange(self) -> None:
        self._env.step()
        self._exchanges += 1
        self._collect()

    def _collect(self) -> None:
        self._steps_now = {name: self._env.get_steps(name) for name in self.behaviors}
        extra = set(self._env.behavior_specs) - set(self.behaviors)
        if extra:
            raise UnityEnvError(
                f"unity_env: behaviour(s) {', '.join(sorted(extra))} appeared after the start; the scene must "
                f"register every behaviour in its first step (known: {', '.join(self.behaviors)})"
            )
        for name, (decision, _) in self._steps_now.items():
            if len(decision):
                self._waiting[name] = decision

    def _agent(self, name: str, unity_id: int) -> _Agent:
        agent = self._live.get((name, unity_id))
        if agent is None:
            agent = self._live[(name, unity_id)] = _Agent(agent_id="")
        agent.seen = self._exchanges
        return agent

    def _apply(
        self,
        obs: dict[str, Obs],
        rewards: dict[str, float],
        terminateds: dict[str, bool],
        truncateds: dict[str, bool],
    ) -> None:
        for name, (decision, terminal) in self._steps_now.items():
            conv = self._conv[name]
            if len(terminal):
                self._end(name, conv, terminal, obs, rewards, terminateds, truncateds)
            if not len(decision):
                continue
            decision_rewards = _rewards(decision)
            for row, unity_id in enumerate(decision.agent_id):
                agent = self._agent(name, int(unity_id))
                reward = float(decision_rewards[row])
                agent.unity_return += reward
                agent.unity_length += 1
                observation = _row(conv.observations(decision.obs, slice(row, row + 1)))
                if agent.agent_id:
                    rewards[agent.agent_id] = rewards.get(agent.agent_id, 0.0) + reward
                    limit = self._max_episode_steps
                    if limit is not None and agent.decisions + 1 >= limit:
                        # Unity cannot reset one agent: its RLlib agent episode ends here and it
                        # goes on under a new id from the same observation; the metrics count the
                        # episode so far as one (as the fast path's truncated episodes count).
                        obs[agent.agent_id] = observation
                        truncateds[agent.agent_id] = True
                        agent.agent_id = ""
                        self._record(name, agent.unity_return, agent.unity_length)
                        agent.unity_return, agent.unity_length = 0.0, 0
                if not agent.agent_id:
                    agent.agent_id = self._new_id(name)
                    agent.decisions = 0
                    rewards.setdefault(agent.agent_id, 0.0)
                else:
                    agent.decisions += 1
                obs[agent.agent_id] = agent.last_obs = observation

    def _end(
        self,
        name: str,
        conv: Converter,
        terminal: TerminalSteps,
        obs: dict[str, Obs],
        rewards: dict[str, float],
        terminateds: dict[str, bool],
        truncateds: dict[str, bool],
    ) -> None:
        terminal_rewards = _rewards(terminal)
        for row, unity_id in enumerate(terminal.agent_id):
            agent = self._live.pop((name, int(unity_id)), None)
            if agent is None:
                continue  # ended before it ever decided: nothing RLlib saw
            reward = float(terminal_rewards[row])
            self._record(name, agent.unity_return + reward, agent.unity_length)
            if not agent.agent_id:
                continue  # its RLlib agent episode was already cut; this reward belongs to no step
            interrupted = bool(terminal.interrupted[row])
            obs[agent.agent_id] = _row(conv.observations(terminal.obs, slice(row, row + 1)))
            rewards[agent.agent_id] = rewards.get(agent.agent_id, 0.0) + reward
            terminateds[agent.agent_id] = not interrupted
            truncateds[agent.agent_id] = interrupted

    def _record(self, name: str, episode_return: float, length: int) -> None:
        self._finished[name].append((episode_return, length))
        self._finished_in_episode.add(name)

    def _drop_ids(self) -> None:
        for agent in self._live.values():
            agent.agent_id = ""
        self._open = set()

    def _cut(self, obs: dict[str, Obs], rewards: dict[str, float], truncateds: dict[str, bool]) -> None:
        truncateds["__all__"] = True
        self._open = set()
        stale_before = self._exchanges - _MAX_SILENT_STEPS
        for key, agent in list(self._live.items()):
            if agent.agent_id and agent.agent_id not in obs:
                # Acted and waits for its next decision: its latest observation ends the episode.
                obs[agent.agent_id] = agent.last_obs
                rewards.setdefault(agent.agent_id, 0.0)
            if agent.agent_id:
                truncateds[agent.agent_id] = True
            agent.agent_id = ""
            if agent.seen < stale_before:
                del self._live[key]  # vanished without a terminal step long ago


def _row(value: Obs) -> Obs:
    if isinstance(value, tuple):
        return tuple(part[0] for part in value)
    return value[0]


def _single_action(conv: Converter, noop: Any) -> Any:
    if conv.spec.action_spec.continuous_size > 0:
        return noop.continuous[0]
    if conv.flattener is not None:
        return 0
    discrete = noop.discrete[0]
    return discrete[0] if len(discrete) == 1 else discrete


__all__ = ["AGENT_SEPARATOR", "EPISODE_HORIZON", "UnityMultiAgentEnv", "behavior_of", "policy_name"]
