"""The bundled Ball player (3DBall-like) through the real mlagents_envs client: continuous actions, a decision
every 5th Academy step, terminals between decisions, areas; and the areas path over it, at periods 5 and 1."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import numpy as np
from mlagents_envs.base_env import ActionTuple

from rlrunner.entry.unity_env import launch_options
from rlrunner.envs import resolve_environment
from rlrunner.envs.ball import player
from rlrunner.envs.ball.player import BEHAVIOR_NAME as BALL
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.gym_env import UnityVectorEnv
from rlrunner.unity.launch import ManagedUnityEnvironment, launch_unity


@contextmanager
def ball(
    player_gone: Callable[[int, int], None], num_areas: int = 1, **parameters: float
) -> Iterator[ManagedUnityEnvironment]:
    """A real UnityEnvironment connected to the bundled Ball player, with these environment parameters."""
    environment = EnvironmentSpec(name="Ball", base_port=7340, timeout_s=20, parameters=parameters)
    env = launch_unity(
        resolve_environment("Ball"), launch_options(environment, num_areas=num_areas, seed=0, log_dir=None)
    )
    assert env.process is not None
    pid, port = env.process.pid, env.port
    try:
        yield env
    finally:
        env.close()
        player_gone(pid, port)


def still(count: int) -> ActionTuple:
    return ActionTuple(continuous=np.zeros((count, 2), dtype=np.float32))


def exchanges(
    env: ManagedUnityEnvironment, count: int, act: Callable[[np.ndarray], np.ndarray] | None = None
) -> list[Mapping[str, object]]:
    """Step `count` times (actions from `act(obs)`, else the platform flat); per exchange: decisions and terminals."""
    seen = []
    for _ in range(count):
        decision, _ = env.get_steps(BALL)
        if len(decision):
            actions = act(decision.obs[0]) if act else np.zeros((len(decision), 2))
            env.set_actions(BALL, ActionTuple(continuous=actions.astype(np.float32)))
        env.step()
        decision, terminal = env.get_steps(BALL)
        seen.append(
            {
                "decision_ids": decision.agent_id.tolist(),
                "decision_rewards": decision.reward.astype(float).round(4).tolist(),
                "terminal_ids": terminal.agent_id.tolist(),
                "terminal_rewards": terminal.reward.astype(float).round(4).tolist(),
                "interrupted": terminal.interrupted.tolist(),
            }
        )
    return seen


def test_ball_has_12_agents_with_continuous_actions(player_gone: Callable[[int, int], None]) -> None:
    with ball(player_gone) as env:
        env.reset()
        spec = env.behavior_specs[BALL]
        assert list(env.behavior_specs) == [BALL]
        assert (spec.action_spec.continuous_size, spec.action_spec.discrete_branches) == (2, ())
        assert [o.shape for o in spec.observation_specs] == [(6,)]
        decision, terminal = env.get_steps(BALL)
        assert len(decision) == 12 and len(terminal) == 0
        obs = decision.obs[0]
        assert np.all(obs[:, :2] == 0) and np.all(np.abs(obs[:, 2:]) <= 0.5)  # flat platforms, balls near the middle


def test_ball_decides_every_5th_step_and_reports_a_terminal_between_decisions(
    player_gone: Callable[[int, int], None],
) -> None:
    # Episodes of 7 Academy steps: decisions at 0 and 5, the terminals at 7 alone, the next episodes decide at 10.
    with ball(player_gone, max_steps=7) as env:
        env.reset()
        first = env.get_steps(BALL)[0].agent_id.tolist()
        seen = exchanges(env, 4)
    at_5, at_7, at_10, at_15 = seen
    assert at_5["decision_ids"] == first and at_5["decision_rewards"] == [0.5] * 12  # 5 Academy steps of +0.1
    assert at_5["terminal_ids"] == []
    assert at_7["decision_ids"] == [] and at_7["terminal_ids"] == first  # an exchange with the terminals alone
    assert at_7["terminal_rewards"] == [0.2] * 12 and at_7["interrupted"] == [True] * 12  # Agent.MaxStep
    # new ids, at the next decision step
    assert len(at_10["decision_ids"]) == 12 and not set(at_10["decision_ids"]) & set(first)
    assert at_10["decision_rewards"] == [0.0] * 12  # the new episodes waited for their first decision
    assert at_15["decision_ids"] == at_10["decision_ids"] and at_15["decision_rewards"] == [0.5] * 12


def test_ball_decision_period_1_sends_terminal_and_next_decision_together(
    player_gone: Callable[[int, int], None],
) -> None:
    with ball(player_gone, decision_period=1, max_steps=3) as env:
        env.reset()
        first = env.get_steps(BALL)[0].agent_id.tolist()
        seen = exchanges(env, 3)
    assert [s["decision_rewards"] for s in seen[:2]] == [[0.1] * 12, [0.1] * 12]
    assert seen[2]["terminal_ids"] == first and seen[2]["terminal_rewards"] == [0.1] * 12
    assert len(seen[2]["decision_ids"]) == 12 and not set(seen[2]["decision_ids"]) & set(first)


def test_ball_falls_when_tilted_and_stays_up_under_a_controller(player_gone: Callable[[int, int], None]) -> None:
    with ball(player_gone, max_steps=0) as env:
        env.reset()
        tilted = exchanges(env, 40, lambda obs: np.ones((len(obs), 2)))
        env.reset()
        balanced = exchanges(env, 60, lambda obs: -2.0 * obs[:, 2:4] - 2.0 * obs[:, 4:6])
    falls = [r for s in tilted for r in s["terminal_rewards"]]
    assert len(falls) >= 12 and all(r < 0 for r in falls)  # every ball rolls off: -1 (plus the steps before)
    assert not any(s["interrupted"] for s in tilted if any(s["interrupted"]))
    assert any(s["terminal_ids"] and not s["decision_ids"] for s in tilted)  # some fell between decisions
    assert all(not s["terminal_ids"] for s in balanced)
    assert all(s["decision_rewards"] == [0.5] * 12 for s in balanced)


def test_ball_areas_multiply_agents(player_gone: Callable[[int, int], None]) -> None:
    with ball(player_gone, num_areas=3, agents_per_area=2) as env:
        env.reset()
        ids = env.get_steps(BALL)[0].agent_id.tolist()
    assert len(ids) == len(set(ids)) == 6


def test_areas_path_steps_through_terminals_between_decisions(player_gone: Callable[[int, int], None]) -> None:
    # Period 5: the areas decide together at Academy steps 0, 5, 10; episodes of 7 steps end between decisions
    # (an exchange with terminals alone, at step 7); the vector step ends at the next decision step.
    with ball(player_gone, num_areas=12, agents_per_area=1, max_steps=7) as env:
        vector = UnityVectorEnv(env, 12)
        vector.reset()
        results = [vector.step(np.zeros((12, 2), dtype=np.float32)) for _ in range(3)]
        assert env.get_steps(BALL)[0].reward.astype(float).round(4).tolist() == [0.5] * 12
    (_, at_5, *_), (final, at_10, terminated, truncated, _), (_, after, *_) = results
    assert at_5.astype(float).round(4).tolist() == [0.5] * 12
    assert at_10.astype(float).round(4).tolist() == [0.2] * 12  # the terminals' rewards (steps 5 and 6)
    assert truncated.all() and not terminated.any()  # Agent.MaxStep
    assert np.all(final[:, :2] == 0) and not np.all(final[:, 2:] == 0)  # the final observations
    assert after.tolist() == [0.0] * 12  # the reset observations (next-step autoreset)


def test_areas_path_drives_ball_with_decision_period_1(player_gone: Callable[[int, int], None]) -> None:
    with ball(player_gone, num_areas=12, agents_per_area=1, decision_period=1, max_steps=4) as env:
        vector = UnityVectorEnv(env, 12)
        obs, _ = vector.reset()
        assert obs.shape == (12, 6)
        results = [vector.step(np.zeros((12, 2), dtype=np.float32)) for _ in range(5)]
    assert [r[1].astype(float).round(4).tolist() for r in results[:4]] == [[0.1] * 12] * 4
    assert results[3][3].all() and not results[3][2].any()  # Agent.MaxStep: truncated everywhere at step 4
    assert results[4][1].tolist() == [0.0] * 12  # the reset observation (next-step autoreset)


def test_scene_ignores_parameters_out_of_range() -> None:
    scene = player.BallScene(num_areas=1)
    for key, value in (
        ("decision_period", 0.0),
        ("agents_per_area", -1.0),
        ("max_steps", -5.0),
        ("physics_ms", 2000.0),
        ("gravity", 3.0),
    ):
        scene.set_parameter(key, value)
    assert scene.rules == player.BallRules()
    scene.set_parameter("decision_period", 2.0)
    scene.set_parameter("physics_ms", 1.5)
    assert (scene.rules.decision_period, scene.rules.physics_ms) == (2, 1.5)


def test_ball_physics_ms_sleeps_per_academy_step(player_gone: Callable[[int, int], None]) -> None:
    with ball(player_gone, physics_ms=4.0) as env:
        env.reset()
        start = time.perf_counter()
        seen = exchanges(env, 5)
        elapsed = time.perf_counter() - start
    assert all(len(s["decision_ids"]) == 12 for s in seen)  # flat platforms: nobody falls, 5 decision steps
    assert elapsed >= 5 * 5 * 0.004  # 5 Academy steps of 4 ms per exchange
