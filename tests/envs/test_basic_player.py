"""The bundled Basic player driven by the real mlagents_envs client."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from mlagents_envs.base_env import ActionSpec, ActionTuple, DimensionProperty, ObservationSpec, ObservationType
from mlagents_envs.environment import UnityEnvironment
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
from mlagents_envs.side_channel.side_channel_manager import SideChannelManager

from rlrunner.entry.unity_env import launch_options
from rlrunner.envs import BUNDLED_ENVIRONMENTS, resolve_environment
from rlrunner.envs.basic import player
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.launch import PYTHON_VARIABLE, ManagedUnityEnvironment, launch_unity
from rlrunner.unity.ports import reserve_port

pytestmark = pytest.mark.filterwarnings(
    r"ignore:distutils Version classes are deprecated:DeprecationWarning:mlagents_envs\.environment"
)

BEHAVIOR = "Basic?team=0"


def play_returns(env: UnityEnvironment, action: int, episodes: int) -> list[float]:
    """Episode returns of a constant action, read from DecisionSteps/TerminalSteps."""
    returns: list[float] = []
    total = 0.0
    env.reset()
    while len(returns) < episodes:
        decision, _ = env.get_steps(BEHAVIOR)
        env.set_actions(BEHAVIOR, ActionTuple(discrete=np.full((len(decision), 1), action, dtype=np.int32)))
        env.step()
        decision, terminal = env.get_steps(BEHAVIOR)
        if len(terminal):
            returns.append(round(total + float(terminal.reward[0]), 6))
            total = 0.0
        else:
            total += float(decision.reward[0])
    return returns


def test_player_always_right_scores_093(basic_unity: ManagedUnityEnvironment) -> None:
    assert play_returns(basic_unity, action=2, episodes=4) == [0.93] * 4


def test_player_always_left_scores_007(basic_unity: ManagedUnityEnvironment) -> None:
    assert play_returns(basic_unity, action=1, episodes=4) == [0.07] * 4


def test_player_behavior_spec_matches_basic(basic_unity: ManagedUnityEnvironment) -> None:
    basic_unity.reset()
    assert list(basic_unity.behavior_specs) == [BEHAVIOR]
    spec = basic_unity.behavior_specs[BEHAVIOR]
    assert spec.observation_specs == [
        ObservationSpec((20,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "Basic")
    ]
    assert spec.action_spec == ActionSpec(0, (3,))
    decision, _ = basic_unity.get_steps(BEHAVIOR)
    assert int(np.argmax(decision.obs[0][0])) == 10


def test_player_sends_terminal_and_next_decision_together(basic_unity: ManagedUnityEnvironment) -> None:
    basic_unity.reset()
    first_id = int(basic_unity.get_steps(BEHAVIOR)[0].agent_id[0])
    for _ in range(3):
        basic_unity.set_actions(BEHAVIOR, ActionTuple(discrete=np.array([[1]], dtype=np.int32)))
        basic_unity.step()
    decision, terminal = basic_unity.get_steps(BEHAVIOR)
    assert terminal.agent_id.tolist() == [first_id] and not terminal.interrupted[0]
    assert decision.agent_id.tolist() == [first_id + 1]
    assert int(np.argmax(terminal.obs[0][0])) == 7 and int(np.argmax(decision.obs[0][0])) == 10


def test_player_works_with_stock_unity_environment(
    tmp_path: Path, player_gone: Callable[[int, int], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    lease = reserve_port(7400)
    lease.release()  # the stock communicator binds the port itself
    monkeypatch.setenv(PYTHON_VARIABLE, sys.executable)  # the stock launch passes this process's environment on
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="distutils Version classes", category=DeprecationWarning)
        env = UnityEnvironment(
            str(resolve_environment("Basic")),
            base_port=lease.port,
            no_graphics=True,
            timeout_wait=20,
            log_folder=str(tmp_path),
        )
    try:
        assert play_returns(env, action=2, episodes=2) == [0.93, 0.93]
    finally:
        pid = env._process.pid
        env.close()
    player_gone(pid, lease.port)
    assert "connected" in (tmp_path / "Player-0.log").read_text()


def test_player_exits_with_status_0_without_port() -> None:
    executable = BUNDLED_ENVIRONMENTS["Basic"]
    assert os.access(executable, os.X_OK)
    result = subprocess.run(
        [str(executable), "-nographics", "-batchmode", "--unknown-flag"],
        env={**os.environ, "RLRUNNER_PYTHON": sys.executable},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0


def _side_channel_blob(**parameters: float) -> bytes:
    engine = EngineConfigurationChannel()
    engine.set_configuration_parameters(time_scale=5.0)
    channel = EnvironmentParametersChannel()
    for key, value in parameters.items():
        channel.set_float_parameter(key, value)
    return bytes(SideChannelManager([engine, channel]).generate_side_channel_messages())


def test_game_side_channel_moves_goals_and_start() -> None:
    game = player.Game(num_areas=1)
    player.apply_side_channel(game, _side_channel_blob(large_goal=12.0, small_goal=2.0, start_position=5.0))
    assert game.rules == player.Rules(small_goal=2, large_goal=12, start_position=5, max_steps=0)


def test_game_max_steps_sends_interrupted_terminal() -> None:
    game = player.Game(num_areas=1)
    player.apply_side_channel(game, _side_channel_blob(max_steps=2.0))
    game.reset()
    assert len(game.step([[0]])) == 1
    terminal, restart = game.step([[0]])
    assert terminal != restart and game.ids == [2] and game.steps == [0]


def test_game_ignores_unknown_and_out_of_range_parameters() -> None:
    game = player.Game(num_areas=1)
    player.apply_side_channel(game, _side_channel_blob(gravity=3.0, large_goal=40.0))
    assert game.rules == player.Rules()


def test_game_areas_have_unique_agent_ids() -> None:
    game = player.Game(num_areas=3)
    game.reset()
    game.step([[1], [1], [1]])
    game.step([[1], [1], [1]])
    game.step([[1], [2], [1]])  # areas 0 and 2 reach the small goal
    assert len(set(game.ids)) == 3 and game.ids[1] == 2


def test_parse_args_ignores_unknown_flags() -> None:
    args = player.parse_args(["-nographics", "--mlagents-port", "6001", "-logFile", "x.log", "-screen-width", "80"])
    assert (args.mlagents_port, args.log_file, args.nographics) == (6001, "x.log", True)


@pytest.mark.parametrize("name", sorted(BUNDLED_ENVIRONMENTS))
def test_bundled_environment_is_executable(name: str) -> None:
    assert os.access(resolve_environment(name), os.X_OK)


def test_game_physics_ms_parameter_is_a_float_in_range() -> None:
    game = player.Game(num_areas=1)
    player.apply_side_channel(game, _side_channel_blob(physics_ms=2.5))
    assert game.rules.physics_ms == 2.5
    player.apply_side_channel(game, _side_channel_blob(physics_ms=-1.0))
    assert game.rules.physics_ms == 2.5


def _seconds_per_step(env: ManagedUnityEnvironment, steps: int) -> float:
    env.reset()
    start = time.perf_counter()
    for _ in range(steps):
        env.set_actions(BEHAVIOR, ActionTuple(discrete=np.array([[0]], dtype=np.int32)))
        env.step()
    return (time.perf_counter() - start) / steps


@pytest.mark.parametrize(
    ("parameters", "player_args"),
    [({"physics_ms": 25.0}, []), ({}, ["--physics-ms", "25"])],
    ids=["environment-parameter", "command-line"],
)
def test_player_physics_ms_delays_every_step(
    parameters: dict[str, float], player_args: list[str], player_gone: Callable[[int, int], None]
) -> None:
    environment = EnvironmentSpec(name="Basic", base_port=7320, timeout_s=20, parameters=parameters, player_args=player_args)
    env = launch_unity(resolve_environment("Basic"), launch_options(environment, num_areas=1, seed=0, log_dir=None))
    assert env.process is not None
    pid, port = env.process.pid, env.port
    try:
        assert _seconds_per_step(env, 8) >= 0.025
    finally:
        env.close()
    player_gone(pid, port)


def test_player_refuses_a_negative_physics_ms() -> None:
    result = subprocess.run(
        [str(BUNDLED_ENVIRONMENTS["Basic"]), "--mlagents-port", "7399", "--physics-ms", "-2"],
        env={**os.environ, "RLRUNNER_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "Basic.x86_64: --physics-ms: must be in [0, 1000] (got -2)"


def test_uniform_sampler_on_start_position_covers_the_range_over_200_episodes(player_gone: Callable[[int, int], None]) -> None:
    """The spec's sampler goes through launch_unity's environment-parameters channel; the player draws per episode."""
    from rlrunner.entry.unity_env import launch_options
    from rlrunner.schema import EnvironmentSpec
    from rlrunner.unity.launch import launch_unity

    uniform = {"sampler_type": "uniform", "sampler_parameters": {"min_value": 0, "max_value": 20, "seed": 1}}
    spec = EnvironmentSpec.model_validate({"name": "Basic", "base_port": 7310, "timeout_s": 20, "parameters": {"start_position": uniform, "max_steps": 1}})
    env = launch_unity(resolve_environment("Basic"), launch_options(spec, num_areas=1, seed=0, log_dir=None))
    assert env.process is not None
    pid, port = env.process.pid, env.port
    starts: list[int] = []
    try:
        env.reset()
        while len(starts) < 200:
            decision, _ = env.get_steps(BEHAVIOR)
            one_hot = decision.obs[0][0]
            starts.append(int(np.argmax(one_hot)) if one_hot.any() else 20)  # position 20 has no one-hot slot
            env.set_actions(BEHAVIOR, ActionTuple(discrete=np.zeros((len(decision), 1), dtype=np.int32)))
            env.step()  # max_steps 1: every step ends the episode and the next one starts at a new draw
    finally:
        env.close()
    player_gone(pid, port)
    assert min(starts) == 0 and max(starts) == 20 and len(set(starts)) == 21
    assert 8.5 < sum(starts) / len(starts) < 11.5


def test_game_samplers_draw_per_episode_and_a_constant_replaces_them() -> None:
    game = player.Game(num_areas=1)
    channel = EnvironmentParametersChannel()
    channel.set_gaussian_sampler_parameters("large_goal", 15.0, 1.0, 3)
    channel.set_multirangeuniform_sampler_parameters("small_goal", [[1.0, 2.0], [4.0, 5.0]], 3)
    player.apply_side_channel(game, bytes(SideChannelManager([channel]).generate_side_channel_messages()))
    drawn = [(game.rules.large_goal, game.rules.small_goal) for _ in range(50) if game.reset()]
    assert min(g for g, _ in drawn) >= 12 and max(g for g, _ in drawn) <= 18 and len({g for g, _ in drawn}) > 2
    assert {s for _, s in drawn} <= {1, 2, 4, 5} and len({s for _, s in drawn}) > 1
    player.apply_side_channel(game, _side_channel_blob(large_goal=12.0))
    game.reset()
    assert game.rules.large_goal == 12 and "large_goal" not in game.samplers


def test_sampler_spec_errors_name_the_parameter() -> None:
    from shared import BASIC_PPO

    from rlrunner.loader import SpecError, load_spec

    with pytest.raises(SpecError) as error:
        load_spec(BASIC_PPO, ["environment.parameters.start_position={sampler_type: uniform, sampler_parameters: {min_value: 5}}"])
    (problem,) = error.value.problems
    assert str(problem).endswith("environment.parameters.start_position.sampler: sampler_parameters: uniform needs max_value")
