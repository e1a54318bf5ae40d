"""UnityMultiAgentEnv over scripted scenes (real DecisionSteps/TerminalSteps, no process).

Each scene is a list of exchanges; an exchange maps a behaviour to the agents that ask for a decision
(``{unity_id: (obs value, reward)}``) and the agents that end (``{unity_id: (obs value, reward, interrupted)}``).
RLlib's own ``MultiAgentEpisode`` replays what the adapter returns, so its invariants are checked too.
"""

from __future__ import annotations

import resource
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from mlagents_envs.base_env import (
    ActionSpec,
    ActionTuple,
    BaseEnv,
    BehaviorMapping,
    BehaviorSpec,
    DecisionSteps,
    TerminalSteps,
)
from ray.rllib.env.multi_agent_episode import MultiAgentEpisode
from unity_fakes import decision_steps, terminal_steps, vector_spec

from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.multi_agent import UnityMultiAgentEnv, behavior_of, policy_name

A = "Striker?team=0"
B = "Goalie?team=1"
Decide = dict[int, tuple[float, float]]
End = dict[int, tuple[float, float, bool]]
Exchange = dict[str, tuple[Decide, End]]

SPECS = {A: BehaviorSpec([vector_spec(2)], ActionSpec(0, (3,))), B: BehaviorSpec([vector_spec(1)], ActionSpec(2, ()))}


def _steps(spec: BehaviorSpec, decide: Decide, end: End, group_reward: float) -> tuple[DecisionSteps, TerminalSteps]:
    size = spec.observation_specs[0].shape[0]

    def obs(values: list[float]) -> list[np.ndarray]:
        return [np.repeat(np.array(values, np.float32)[:, None], size, axis=1)]

    decision = decision_steps(
        obs([decide[i][0] for i in decide]), list(decide), [decide[i][1] for i in decide], group_reward=group_reward
    )
    terminal = terminal_steps(
        obs([end[i][0] for i in end]), list(end), [end[i][1] for i in end], [end[i][2] for i in end], group_reward
    )
    return decision, terminal


class SceneEnv(BaseEnv):  # type: ignore[misc]
    """A BaseEnv whose exchanges come from ``scene(index)``; records the actions per behaviour."""

    def __init__(self, scene: Callable[[int], Exchange], specs: dict[str, BehaviorSpec] = SPECS, group_reward: float = 0.0):
        self._scene = scene
        self._specs = specs
        self._group_reward = group_reward
        self.index = -1
        self.resets = 0
        self.actions: deque[dict[str, ActionTuple]] = deque(maxlen=32)
        self._sent: dict[str, ActionTuple] = {}
        self._current: dict[str, tuple[DecisionSteps, TerminalSteps]] = {}
        self.closed = False

    def _advance(self) -> None:
        self.actions.append(self._sent)
        self._sent = {}
        self.index += 1
        exchange = self._scene(self.index)
        self._current = {
            name: _steps(spec, *exchange.get(name, ({}, {})), self._group_reward) for name, spec in self._specs.items()
        }

    def reset(self) -> None:
        self.resets += 1
        self._advance()

    def step(self) -> None:
        for name, (decision, _) in self._current.items():
            if len(decision):
                assert name in self._sent, f"no actions for {name}"
                assert len(self._sent[name].discrete if name == A else self._sent[name].continuous) == len(decision)
        self._advance()

    def close(self) -> None:
        self.closed = True

    @property
    def behavior_specs(self) -> BehaviorMapping:
        return BehaviorMapping(self._specs if self.index >= 0 else {})

    def set_actions(self, behavior_name: str, action: ActionTuple) -> None:
        self._sent[behavior_name] = action

    def set_action_for_agent(self, behavior_name: str, agent_id: int, action: ActionTuple) -> None:
        raise NotImplementedError

    def get_steps(self, behavior_name: str) -> tuple[DecisionSteps, TerminalSteps]:
        return self._current[behavior_name]


def scripted(*exchanges: Exchange) -> Callable[[int], Exchange]:
    return lambda index: exchanges[index] if index < len(exchanges) else {}


class Recorder:
    """Drives the adapter like RLlib's env runner, feeding a real MultiAgentEpisode."""

    def __init__(self, env: UnityMultiAgentEnv) -> None:
        self.env = env
        self.episode: MultiAgentEpisode | None = None
        self.episodes = 0

    def _new_episode(self, obs: dict[str, Any]) -> None:
        self.episode = MultiAgentEpisode(agent_to_module_mapping_fn=lambda aid, _: policy_name(behavior_of(aid)))
        self.episode.add_env_reset(observations=obs, infos={})
        self.episodes += 1

    def reset(self) -> dict[str, Any]:
        obs, _ = self.env.reset()
        self._new_episode(obs)
        return obs

    def step(self, obs: dict[str, Any]) -> tuple[dict[str, Any], ...]:
        assert self.episode is not None
        actions = {aid: self.env.get_action_space(aid).sample() for aid in obs if aid in self.env.agents}
        result = self.env.step(actions)
        obs, rewards, terminateds, truncateds, infos = result
        self.episode.add_env_step(obs, actions, rewards, infos, terminateds=terminateds, truncateds=truncateds)
        # RLlib's env runner resets an env only on __all__, and starts a new episode when its own
        # bookkeeping says done: the two must agree.
        assert self.episode.is_done == (terminateds["__all__"] or truncateds["__all__"])
        return result


def test_policy_name_and_agent_ids() -> None:
    assert policy_name("Striker?team=0") == policy_name("Striker?team=1") == "Striker"
    assert behavior_of("Striker?team=0#12") == "Striker?team=0"


def test_multi_agent_spaces_and_first_decisions_of_both_behaviours() -> None:
    unity = SceneEnv(scripted({A: ({1: (0.5, 0.0), 2: (0.6, 0.0)}, {}), B: ({7: (0.1, 0.0)}, {})}))
    env = UnityMultiAgentEnv(unity)
    assert env.behaviors == sorted([A, B])
    assert env.get_action_space(f"{A}#5") == spaces.Discrete(3)
    assert env.get_action_space(f"{B}#0") == spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert env.get_observation_space(f"{A}#0") == spaces.Box(-np.inf, np.inf, (2,), np.float32)
    obs, _ = env.reset()
    assert sorted(obs) == [f"{B}#0", f"{A}#0", f"{A}#1"]  # ids count per behaviour
    assert obs[f"{A}#1"].tolist() == pytest.approx([0.6, 0.6]) and obs[f"{B}#0"].tolist() == pytest.approx([0.1])
    assert unity.resets == 1  # the specs' reset is the first episode's start


def test_multi_agent_agents_deciding_every_2nd_and_5th_step() -> None:
    def scene(index: int) -> Exchange:
        return {
            A: ({1: (index, 0.1)} if index % 2 == 0 else {}, {}),
            B: ({9: (index, 0.2)} if index % 5 == 0 else {}, {}),
        }

    unity = SceneEnv(scene)
    env = UnityMultiAgentEnv(unity)
    run = Recorder(env)
    obs = run.reset()
    seen = []
    for _ in range(6):
        obs, rewards, _, _, _ = run.step(obs)
        seen.append((unity.index, sorted(obs), rewards))
    a, b = f"{B}#0", f"{A}#0"
    assert [s[0] for s in seen] == [2, 4, 5, 6, 8, 10]  # exchanges without decisions are stepped through
    assert [s[1] for s in seen] == [[b], [b], [a], [b], [b], [a, b]]
    assert seen[2][2] == {a: pytest.approx(0.2)}
    # Actions went only to the behaviours that asked: exchange 1 (after step 0) had nobody to act.
    assert set(unity.actions[1]) == {A, B} and unity.actions[2] == {} and set(unity.actions[3]) == {A}
    assert len(run.episode.agent_episodes[a]) == 2 and len(run.episode.agent_episodes[b]) == 5  # type: ignore[union-attr]


def test_multi_agent_terminal_then_same_id_decides_again() -> None:
    unity = SceneEnv(
        scripted(
            {A: ({1: (0.0, 0.0)}, {})},
            {A: ({1: (5.0, 0.0)}, {1: (4.0, 1.0, False)})},  # episode ends and restarts under the same id
            {A: ({1: (6.0, 0.5)}, {})},
        )
    )
    run = Recorder(UnityMultiAgentEnv(unity, episode_horizon=100))
    obs = run.reset()
    obs, rewards, terminateds, truncateds, _ = run.step(obs)
    old, new = f"{A}#0", f"{A}#1"
    assert obs[old].tolist() == [4.0, 4.0] and rewards[old] == 1.0 and terminateds[old] and not truncateds[old]
    assert obs[new].tolist() == [5.0, 5.0]
    # Every agent of the episode is done: the RLlib episode ends here, and the agent that just
    # started is the first of the next one (RLlib would otherwise end the episode on its own).
    assert terminateds["__all__"] and run.episode.is_done and run.env.agents == []  # type: ignore[union-attr]
    obs = run.reset()
    assert list(obs) == [old] and obs[old].tolist() == [5.0, 5.0] and unity.resets == 1
    obs, rewards, _, _, _ = run.step(obs)
    assert list(obs) == [old] and rewards == {old: 0.5}
    assert run.env.pop_finished() == {A: [(1.0, 1)]}


def test_multi_agent_done_and_absent_from_decisions_interrupted_and_group_rewards() -> None:
    unity = SceneEnv(
        scripted(
            {A: ({1: (0.0, 0.0), 2: (0.0, 0.0)}, {})},
            {A: ({2: (1.0, 0.0)}, {1: (9.0, 0.5, True)})},  # agent 1 is interrupted (max step) and gone
        ),
        group_reward=0.25,
    )
    run = Recorder(UnityMultiAgentEnv(unity))
    obs = run.reset()
    obs, rewards, terminateds, truncateds, _ = run.step(obs)
    one, two = f"{A}#0", f"{A}#1"
    assert truncateds[one] and not terminateds[one] and obs[one].tolist() == [9.0, 9.0]
    assert rewards == {one: 0.75, two: 0.25}  # group rewards count
    assert run.env.agents == [two]


def test_multi_agent_new_ids_appear_and_terminal_only_exchanges_are_collected() -> None:
    unity = SceneEnv(
        scripted(
            {A: ({1: (0.0, 0.0)}, {})},
            {A: ({}, {1: (3.0, -1.0, False)})},  # only a terminal: nobody to act, keep going
            {},  # an empty exchange
            {A: ({4: (1.0, 0.0)}, {}), B: ({5: (2.0, 0.0)}, {})},  # newly spawned agents of both behaviours
        )
    )
    run = Recorder(UnityMultiAgentEnv(unity))
    obs = run.reset()
    obs, rewards, terminateds, _, _ = run.step(obs)
    assert unity.index == 3
    assert terminateds[f"{A}#0"] and rewards[f"{A}#0"] == -1.0
    assert sorted(obs) == [f"{B}#0", f"{A}#0", f"{A}#1"]


def test_multi_agent_cut_truncates_everyone_without_resetting_unity() -> None:
    def scene(index: int) -> Exchange:
        decide: Decide = {1: (index, 1.0)}
        if index % 3 == 0:
            decide[2] = (index, 1.0)  # agent 2 decides every 3rd exchange
        if index < 2:
            decide[3] = (index, 0.0)  # agent 3 vanishes after exchange 1, without a terminal step
        return {A: (decide, {})}

    unity = SceneEnv(scene)
    run = Recorder(UnityMultiAgentEnv(unity, episode_horizon=4))
    obs = run.reset()
    for _ in range(4):
        obs, _, _, truncateds, _ = run.step(obs)
    assert truncateds["__all__"] and run.episode.is_done  # type: ignore[union-attr]
    # Everyone in the episode got a final observation: the deciders their new one, the waiting
    # and the vanished agent their latest one.
    assert {aid for aid, done in truncateds.items() if done} - {"__all__"} == set(obs)
    assert obs[f"{A}#2"].tolist() == [1.0, 1.0]  # agent 3, last seen in exchange 1
    obs = run.reset()
    assert sorted(obs) == [f"{A}#0"] and unity.resets == 1  # agent 1 waits for its action: first of the new episode
    obs, _, _, _, _ = run.step(obs)
    assert sorted(obs) == [f"{A}#0"]
    obs, _, _, _, _ = run.step(obs)
    assert sorted(obs) == [f"{A}#0", f"{A}#1"] and unity.index == 6  # agent 2 decides again, under a fresh id


def test_multi_agent_max_episode_steps_truncates_and_continues_under_a_new_id() -> None:
    unity = SceneEnv(lambda index: {A: ({1: (index, 1.0)}, {})})
    run = Recorder(UnityMultiAgentEnv(unity, max_episode_steps=2))
    obs = run.reset()
    obs, _, _, truncateds, _ = run.step(obs)
    assert list(obs) == [f"{A}#0"] and not truncateds.get(f"{A}#0")
    obs, rewards, _, truncateds, _ = run.step(obs)
    assert truncateds[f"{A}#0"] and rewards == {f"{A}#0": 1.0, f"{A}#1": 0.0}
    assert obs[f"{A}#0"].tolist() == obs[f"{A}#1"].tolist() == [2.0, 2.0]
    assert truncateds["__all__"] and run.env.agents == []  # its only agent is done: so is the RLlib episode
    obs = run.reset()
    assert {aid: o.tolist() for aid, o in obs.items()} == {f"{A}#0": [2.0, 2.0]}


def test_multi_agent_behaviour_that_appears_later_is_an_error() -> None:
    unity = SceneEnv(scripted({A: ({1: (0.0, 0.0)}, {})}), specs={A: SPECS[A]})
    env = UnityMultiAgentEnv(unity)
    env.reset()
    unity._specs = SPECS
    with pytest.raises(UnityEnvError, match=r"behaviour\(s\) Goalie\?team=1 appeared after the start"):
        env.step({f"{A}#0": 0})


def test_multi_agent_memory_stays_flat_over_100000_exchanges() -> None:
    # 12 agents deciding every 2nd or 5th exchange, episodes of 7-40 decisions, new ids on respawn,
    # and every 97th agent vanishing without a terminal step.
    state = {"next_id": 12, "ids": list(range(12)), "age": [0] * 12}

    def scene(index: int) -> Exchange:
        decide: Decide = {}
        end: End = {}
        for slot, agent in enumerate(state["ids"]):
            if index % (2 if slot % 2 else 5):
                continue
            state["age"][slot] += 1
            if state["age"][slot] >= 7 + (agent * 7) % 34:
                if agent % 97:
                    end[agent] = (1.0, 1.0, False)
                state["ids"][slot] = state["next_id"]
                state["next_id"] += 1
                state["age"][slot] = 0
            decide[state["ids"][slot]] = (0.5, 0.01)
        return {A: (decide, end)}

    unity = SceneEnv(scene, specs={A: SPECS[A]})
    env = UnityMultiAgentEnv(unity, episode_horizon=500)
    env.reset()
    sizes = []
    episodes = 0
    while env.exchanges < 100_000:
        _, _, _, truncateds, _ = env.step({aid: 1 for aid in env.agents})
        if truncateds["__all__"]:
            episodes += 1
            env.pop_finished()
            env.reset()
            if env.exchanges > 20_000:
                sizes.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, len(env._live), env._next_index[A]))
    assert state["next_id"] > 10_000 and episodes > 100
    assert max(live for _, live, _ in sizes) < 12 + 120  # the scene's 12, plus vanished ones until pruned
    assert max(ids for _, _, ids in sizes) < 200  # agent ids restart in every RLlib episode
    assert sizes[-1][0] - sizes[0][0] < 20_000, sizes[:: max(len(sizes) // 10, 1)]  # peak RSS (KiB) flat


def test_multi_agent_max_episode_steps_counts_the_episode_so_far_and_rounds_end_an_episode() -> None:
    def scene(index: int) -> Exchange:
        exchange: Exchange = {A: ({1: (index, 0.5)}, {})}  # agent 1 decides every exchange and never ends
        if index % 2 == 0:  # agent 5 of B decides every 2nd exchange and ends at exchange 4
            exchange[B] = ({5: (index, 0.0)}, {}) if index != 4 else ({}, {5: (index, 1.0, False)})
        return exchange

    # max_episode_steps: agent 1's RLlib agent episode ends after 2 decisions and counts for the metrics
    run = Recorder(UnityMultiAgentEnv(SceneEnv(scene), max_episode_steps=2, rounds=True))
    obs = run.reset()
    obs, _, _, truncateds, _ = run.step(obs)
    assert not truncateds.get(f"{A}#0")
    obs, rewards, _, truncateds, _ = run.step(obs)
    assert truncateds[f"{A}#0"] and rewards[f"{A}#0"] == 0.5 and not truncateds["__all__"]
    assert run.env.pop_finished() == {A: [(1.5, 3)]}  # Unity's three decisions, their rewards
    # rounds: the RLlib episode ends once B finished an agent episode too (exchange 4), not at the horizon
    for _ in range(2):
        obs, _, terminateds, truncateds, _ = run.step(obs)
    assert terminateds[f"{B}#0"] and truncateds["__all__"] and run.episode.is_done  # type: ignore[union-attr]
    assert run.env.pop_finished() == {A: [(1.0, 2)], B: [(1.0, 2)]}  # A's next 2 decisions; B: 2 decisions and the terminal reward
