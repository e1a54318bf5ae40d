"""UnityGymEnv / UnityVectorEnv over a scripted BaseEnv (real mlagents step objects, no process)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from mlagents_envs.base_env import ActionSpec, BehaviorSpec

from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.gym_env import UnityGymEnv, UnityVectorEnv

F = Any  # the ``fakes`` fixture's type, kept loose for tests


def test_gym_env_continuous_actions_and_spaces(fakes: F) -> None:
    obs = [np.ones((1, 3), np.float32)]
    env = UnityGymEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(3)], ActionSpec(2, ())),
            [
                (fakes.decision_steps(obs, [1]), fakes.terminal_steps([np.zeros((0, 3))], [])),
                (fakes.decision_steps(obs, [1], reward=0.5), fakes.terminal_steps([np.zeros((0, 3))], [])),
            ],
        )
    )
    assert env.action_space == spaces.Box(-1.0, 1.0, (2,), np.float32)
    assert env.observation_space == spaces.Box(-np.inf, np.inf, (3,), np.float32)
    first, info = env.reset()
    assert first.tolist() == [1.0, 1.0, 1.0] and info == {}
    _, reward, terminated, truncated, _ = env.step(np.array([0.5, -0.5], np.float32))
    assert (reward, terminated, truncated) == (0.5, False, False)
    assert env.unity_env.actions[-1].continuous.tolist() == [[0.5, -0.5]]


def test_gym_env_multidiscrete_masks_and_flattening(fakes: F) -> None:
    obs = [np.zeros((1, 2), np.float32)]
    mask = [np.array([[False, True]]), np.array([[True, False, False]])]  # ML-Agents: True = forbidden
    script = [(fakes.decision_steps(obs, [4], mask=mask), fakes.terminal_steps([np.zeros((0, 2))], []))] * 2
    plain = UnityGymEnv(fakes.ScriptedEnv(fakes.spec([fakes.vector_spec(2)], ActionSpec(0, (2, 3))), script))
    assert plain.action_space == spaces.MultiDiscrete([2, 3])
    _, info = plain.reset()
    assert [m.tolist() for m in info["action_mask"]] == [[1, 0], [0, 1, 1]]
    flat = UnityGymEnv(fakes.ScriptedEnv(fakes.spec([fakes.vector_spec(2)], ActionSpec(0, (2, 3))), script), flatten_branched=True)
    assert flat.action_space == spaces.Discrete(6)
    _, info = flat.reset()
    assert info["action_mask"].tolist() == [0, 1, 1, 0, 0, 0]
    flat.step(5)
    assert flat.unity_env.actions[-1].discrete.tolist() == [[1, 2]]


def test_gym_env_visual_uint8_and_multiple_obs(fakes: F) -> None:
    image = np.full((1, 4, 4, 3), 0.5, np.float32)
    camera = fakes.spec([fakes.visual_spec((4, 4, 3))], ActionSpec(0, (3,)))
    alone = UnityGymEnv(fakes.ScriptedEnv(camera, [(fakes.decision_steps([image], [1]), fakes.terminal_steps([np.zeros((0, 4, 4, 3))], []))]), uint8_visual=True)
    assert alone.observation_space == spaces.Box(0, 255, (4, 4, 3), np.uint8)
    first, _ = alone.reset()
    assert first.dtype == np.uint8 and int(first[0, 0, 0]) == 127
    obs = [image, np.ones((1, 2), np.float32)]
    script = [(fakes.decision_steps(obs, [1]), fakes.terminal_steps([np.zeros((0, 4, 4, 3)), np.zeros((0, 2))], []))]
    specs = fakes.spec([fakes.visual_spec((4, 4, 3)), fakes.vector_spec(2)], ActionSpec(0, (3,)))
    flat = UnityGymEnv(fakes.ScriptedEnv(specs, script), uint8_visual=True)  # a camera beside a vector: one flat Box
    assert flat.observation_space.shape == (50,) and flat.observation_space.dtype == np.float32
    both, _ = flat.reset()
    assert both.dtype == np.float32 and both[:48].tolist() == [127.0] * 48 and both[48:].tolist() == [1.0, 1.0]
    multi = UnityGymEnv(fakes.ScriptedEnv(specs, script), allow_multiple_obs=True)
    assert multi.observation_space == spaces.Tuple(
        [spaces.Box(0.0, 1.0, (4, 4, 3), np.float32), spaces.Box(-np.inf, np.inf, (2,), np.float32)]
    )
    image_obs, vector_obs = multi.reset()[0]
    assert image_obs.shape == (4, 4, 3) and vector_obs.tolist() == [1.0, 1.0]


def test_gym_env_terminal_and_next_decision_in_one_step(fakes: F) -> None:
    def vec(value: float) -> list[np.ndarray]:
        return [np.full((1, 1), value, np.float32)]

    empty = fakes.terminal_steps([np.zeros((0, 1))], [])
    env = UnityGymEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(1)], ActionSpec(0, (3,))),
            [
                (fakes.decision_steps(vec(0), [1]), empty),
                (fakes.decision_steps(vec(9), [2]), fakes.terminal_steps(vec(5), [1], reward=1.0)),
                (fakes.decision_steps(vec(3), [2], reward=-0.1), empty),
            ],
        )
    )
    env.reset()
    obs, reward, terminated, truncated, info = env.step(2)
    assert (obs.tolist(), reward, terminated, truncated) == ([5.0], 1.0, True, False)
    assert info["max_step_reached"] is False
    with pytest.raises(UnityEnvError):
        env.step(2)
    obs, _ = env.reset()  # the new episode's decision already arrived: no RESET exchange
    assert obs.tolist() == [9.0] and env.unity_env.resets == 1
    assert env.step(0)[:4] == (pytest.approx([3.0]), pytest.approx(-0.1), False, False)


def test_gym_env_max_step_reached_is_truncation(fakes: F) -> None:
    one = [np.zeros((1, 1), np.float32)]
    env = UnityGymEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(1)], ActionSpec(0, (3,))),
            [
                (fakes.decision_steps(one, [1]), fakes.terminal_steps([np.zeros((0, 1))], [])),
                (fakes.decision_steps(one, [2]), fakes.terminal_steps(one, [1], interrupted=True)),
            ],
        )
    )
    env.reset()
    _, _, terminated, truncated, info = env.step(0)
    assert (terminated, truncated, info["max_step_reached"]) == (False, True, True)


def test_gym_env_episode_step_limit_truncates_then_resets(fakes: F) -> None:
    one = [np.zeros((1, 1), np.float32)]
    no_terminal = fakes.terminal_steps([np.zeros((0, 1))], [])
    env = UnityGymEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(1)], ActionSpec(0, (3,))), [(fakes.decision_steps(one, [1]), no_terminal)] * 4
        ),
        max_episode_steps=2,
    )
    env.reset()
    assert env.step(0)[3] is False and env.step(0)[3] is True
    env.reset()
    assert env.unity_env.resets == 2  # the Unity episode was cut short, so RESET is sent


def test_gym_env_rejects_several_behaviours(fakes: F) -> None:
    specs = {
        "A?team=0": BehaviorSpec([fakes.vector_spec(1)], ActionSpec(0, (2,))),
        "B?team=0": BehaviorSpec([fakes.vector_spec(1)], ActionSpec(0, (2,))),
    }
    with pytest.raises(UnityEnvError) as excinfo:
        UnityGymEnv(
            fakes.ScriptedEnv(
                specs, [(fakes.decision_steps([np.zeros((0, 1))], []), fakes.terminal_steps([np.zeros((0, 1))], []))]
            )
        )
    assert str(excinfo.value) == (
        "unity_env: the environment has 2 behaviours (A?team=0, B?team=0); "
        "this adapter drives exactly one (use one behaviour per Unity build)"
    )


def test_vector_env_autoreset_next_step_with_noop(fakes: F) -> None:
    def vec(*values: float) -> list[np.ndarray]:
        return [np.array(values, np.float32).reshape(-1, 1)]

    empty = fakes.terminal_steps([np.zeros((0, 1))], [])
    env = UnityVectorEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(1)], ActionSpec(0, (3,))),
            [
                (fakes.decision_steps(vec(0, 0), [1, 2]), empty),
                # area 1 (agent 2) ends; its next agent 3 is listed first
                (fakes.decision_steps(vec(10, 1), [3, 1], reward=-0.1), fakes.terminal_steps(vec(7), [2], reward=0.5)),
                (fakes.decision_steps(vec(2, 11), [1, 3], reward=-0.2), empty),
            ],
        ),
        num_envs=2,
    )
    obs, info = env.reset()
    assert obs.tolist() == [[0.0], [0.0]] and info["action_mask"].shape == (2, 3)
    obs, rewards, terminated, truncated, _ = env.step(np.array([2, 1]))
    assert obs.tolist() == [[1.0], [7.0]] and rewards.tolist() == pytest.approx([-0.1, 0.5])
    assert terminated.tolist() == [False, True] and truncated.tolist() == [False, False]
    obs, rewards, terminated, _, _ = env.step(np.array([2, 2]))
    # area 1 was auto-reset: its action became the no-op, it reports the new episode's obs
    assert env.unity_env.actions[-1].discrete.tolist() == [[0], [2]]  # rows: agent 3 (area 1), agent 1 (area 0)
    assert obs.tolist() == [[2.0], [11.0]] and rewards.tolist() == pytest.approx([-0.2, 0.0])
    assert terminated.tolist() == [False, False]


def test_vector_env_wrong_agent_count_is_clear(fakes: F) -> None:
    empty = fakes.terminal_steps([np.zeros((0, 1))], [])
    env = UnityVectorEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(1)], ActionSpec(0, (3,))),
            [
                (fakes.decision_steps([np.zeros((3, 1), np.float32)], [1, 2, 3]), empty),
            ],
        ),
        num_envs=2,
    )
    with pytest.raises(UnityEnvError) as excinfo:
        env.reset()
    assert str(excinfo.value) == (
        "unity_env: 3 agents of B?team=0 requested a decision, expected 2 (one per area); "
        "the areas path needs the areas' agents to decide together (the same DecisionRequester period and offset): "
        "a spec with a `behaviors:` section trains on the multi-agent path"
    )


def test_vector_env_steps_through_exchanges_without_decisions(fakes: F) -> None:
    """A DecisionRequester period above 1: agents end between decision steps, each reported at once in an exchange
    without decisions; the vector step ends with the areas' next decisions, carrying every terminal."""

    def vec(*values: float) -> list[np.ndarray]:
        return [np.array(values, np.float32).reshape(-1, 1)]

    empty = fakes.terminal_steps([np.zeros((0, 1))], [])
    nobody = fakes.decision_steps([np.zeros((0, 1), np.float32)], [])
    env = UnityVectorEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(1)], ActionSpec(2, ())),
            [
                (fakes.decision_steps(vec(0, 0, 0), [1, 2, 3]), empty),
                (nobody, fakes.terminal_steps(vec(-5), [3], reward=-1.0)),  # area 2 ends between decisions
                (nobody, fakes.terminal_steps(vec(6), [1], reward=0.3, interrupted=True)),  # then area 0
                (fakes.decision_steps(vec(1, 2, 3), [4, 2, 5], reward=0.5), empty),  # the next decision step
                (fakes.decision_steps(vec(7, 8, 9), [4, 2, 5], reward=0.5), empty),
            ],
        ),
        num_envs=3,
    )
    env.reset()
    obs, rewards, terminated, truncated, _ = env.step(np.zeros((3, 2), np.float32))
    assert obs.tolist() == [[6.0], [2.0], [-5.0]]  # the final observations of the areas that ended
    assert rewards.tolist() == pytest.approx([0.3, 0.5, -1.0])
    assert terminated.tolist() == [False, False, True] and truncated.tolist() == [True, False, False]
    assert len(env.unity_env.actions) == 1  # the exchanges without decisions carried no actions
    obs, rewards, terminated, truncated, _ = env.step(np.ones((3, 2), np.float32))
    # next-step autoreset: areas 0 and 2 (the free ones, in order) now report their new agents' (4 and 5) observations
    assert obs.tolist() == [[7.0], [8.0], [9.0]]
    assert rewards.tolist() == pytest.approx([0.0, 0.5, 0.0]) and not terminated.any() and not truncated.any()


def test_vector_env_areas_deciding_apart_is_clear(fakes: F) -> None:
    empty = fakes.terminal_steps([np.zeros((0, 1))], [])
    one = fakes.decision_steps([np.zeros((1, 1), np.float32)], [2])
    env = UnityVectorEnv(
        fakes.ScriptedEnv(
            fakes.spec([fakes.vector_spec(1)], ActionSpec(1, ())),
            [(fakes.decision_steps([np.zeros((2, 1), np.float32)], [1, 2]), empty), (one, empty)],
        ),
        num_envs=2,
    )
    env.reset()
    with pytest.raises(UnityEnvError, match=r"^unity_env: 1 agents of B\?team=0 requested a decision, expected 2 "):
        env.step(np.zeros((2, 1), np.float32))
