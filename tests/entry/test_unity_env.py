"""The RLlib env creator: a typed EnvironmentSpec and an executable in, UnityGymEnv/UnityVectorEnv over the Basic player out."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from rlrunner.entry.unity_env import make_unity_env, unity_env_config
from rlrunner.envs import resolve_environment
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.gym_env import UnityGymEnv, UnityVectorEnv
from rlrunner.unity.players import PlayersVectorEnv

pytestmark = pytest.mark.filterwarnings(
    r"ignore:distutils Version classes are deprecated:DeprecationWarning:mlagents_envs\.environment"
)

PlayersOf = Callable[[Any], tuple[int, int]]


def basic_config(**environment: Any) -> dict[str, Any]:
    """The env config of the bundled Basic player, with spec fields changed."""
    spec = EnvironmentSpec.model_validate({"name": "Basic", "timeout_s": 20.0, "base_port": 7500} | environment)
    return unity_env_config(spec, resolve_environment("Basic"), seed=None, log_dir=None)


def test_unity_env_config_carries_the_typed_spec() -> None:
    spec = EnvironmentSpec(name="Basic", num_areas=4)
    config = unity_env_config(spec, Path("/builds/Basic.x86_64"), seed=7, log_dir="/logs")
    assert config == {"environment": spec, "executable": "/builds/Basic.x86_64", "seed": 7, "log_dir": "/logs", "players": 1}
    assert config["environment"] is spec


def test_make_unity_env_refuses_an_untyped_environment() -> None:
    with pytest.raises(UnityEnvError) as excinfo:
        make_unity_env({"environment": {"name": "Basic"}, "executable": "/builds/Basic.x86_64"})
    assert str(excinfo.value) == (
        "unity_env: env_config['environment'] must be an EnvironmentSpec (built by unity_env_config), got dict"
    )


def play(env: UnityGymEnv, action: int, episodes: int) -> list[float]:
    returns = []
    for _ in range(episodes):
        env.reset()
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(action)
            total += reward
            done = terminated or truncated
        returns.append(round(total, 6))
    return returns


@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value is:UserWarning")
def test_make_unity_env_basic_returns_and_check_env(players_of: PlayersOf, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env(basic_config())
    pid, port = players_of(env)
    try:
        assert isinstance(env, UnityGymEnv)
        assert play(env, 2, 3) == [0.93] * 3 and play(env, 1, 2) == [0.07] * 2
        check_env(env, skip_render_check=True)
    finally:
        env.close()
    player_gone(pid, port)


def test_make_unity_env_parameters_move_large_goal(players_of: PlayersOf, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env(basic_config(parameters={"large_goal": 12.0, "max_steps": 5.0}))
    pid, port = players_of(env)
    try:
        assert play(env, 2, 2) == [0.98, 0.98]  # 2 moves to the large goal
        assert play(env, 0, 1) == [-0.05]  # player's MaxStep = 5 ends a standing agent
        env.reset()
        for _ in range(4):
            env.step(0)
        assert env.step(0)[2:4] == (False, True)
    finally:
        env.close()
    player_gone(pid, port)


@pytest.mark.parametrize("areas", [4, 16])
def test_vector_env_areas_advance_together(areas: int, players_of: PlayersOf, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env(basic_config(num_areas=areas))
    pid, port = players_of(env)
    try:
        assert isinstance(env, UnityVectorEnv) and env.num_envs == areas
        obs, _ = env.reset(seed=1)
        assert obs.shape == (areas, 20)
        actions = np.where(np.arange(areas) % 2 == 0, 2, 1)  # even areas go right, odd go left
        totals, finished = np.zeros(areas), [[] for _ in range(areas)]
        for _ in range(24):
            _, rewards, terminated, truncated, _ = env.step(actions)
            totals += rewards
            for area in np.flatnonzero(terminated | truncated):
                finished[area].append(round(float(totals[area]), 6))
                totals[area] = 0.0
        assert all(f[:2] == ([0.93, 0.93] if a % 2 == 0 else [0.07, 0.07]) for a, f in enumerate(finished))
    finally:
        env.close()
    player_gone(pid, port)


@pytest.mark.filterwarnings("ignore:.*Overriding environment rllib-single-agent-env-v0:UserWarning")
def test_env_runner_samples_gym_and_vector_env() -> None:
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    for areas, players, mode in ((1, 1, "sync"), (4, 1, "vector_entry_point"), (1, 3, "vector_entry_point")):
        env_config = basic_config(num_areas=areas, max_episode_steps=30) | {"players": players}
        config = (
            PPOConfig()
            .environment(make_unity_env, env_config=env_config)
            .env_runners(num_env_runners=0, num_envs_per_env_runner=max(areas, players), gym_env_vectorize_mode=mode)
        )
        runner = SingleAgentEnvRunner(config=config)
        try:
            episodes = runner.sample(num_timesteps=120, random_actions=True)
            done = [e for e in episodes if e.is_done]
            assert done and all(len(e) <= 30 for e in done)
            assert all(float(e.get_return()) <= 0.93 + 1e-6 for e in done)
        finally:
            runner.stop()


def test_adapters_created_concurrently_get_distinct_ports(players_of: PlayersOf, player_gone: Callable[[int, int], None]) -> None:
    config = basic_config(base_port=7600)
    script = textwrap.dedent(f"""
        from pathlib import Path
        from rlrunner.entry.unity_env import make_unity_env, unity_env_config
        from rlrunner.schema import EnvironmentSpec
        environment = EnvironmentSpec.model_validate({config["environment"].model_dump()!r})
        env = make_unity_env(unity_env_config(environment, Path({config["executable"]!r}), seed=None, log_dir=None))
        env.reset()
        total = sum(env.step(2)[1] for _ in range(7))
        print(env.unity_env.port, round(total, 6), flush=True)
        env.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    envs: list[Any] = [None] * 4
    errors: list[BaseException] = []

    def create(i: int) -> None:
        try:
            envs[i] = make_unity_env(config)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    try:
        assert not errors and all(p.returncode == 0 for p in procs)
        assert [float(o[1]) for o in outputs] == [0.93] * 4
        ports = [int(o[0]) for o in outputs] + [env.unity_env.port for env in envs]
        assert play(envs[0], 2, 1) == [0.93]
    finally:
        players = [players_of(env) for env in envs if env is not None]
        for env in envs:
            if env is not None:
                env.close()
    thread_ports = [port for _, port in players]
    assert len(set(thread_ports)) == 4 and len(set(ports)) >= 4  # processes may reuse freed ports
    for pid, port in players:
        player_gone(pid, port)


def test_killed_player_gives_clear_step_error_and_close_cleans_up(
    players_of: PlayersOf, player_gone: Callable[[int, int], None]
) -> None:
    env = make_unity_env(basic_config())
    pid, port = players_of(env)
    env.reset()
    env.step(2)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(UnityEnvError) as excinfo:
        env.step(2)
    assert str(excinfo.value) == (
        f"127.0.0.1:{port} (player pid {pid}): step() failed, the Unity player stopped or hung: "
        "Environment shut down with return code -9 (SIGKILL)."
    )
    env.close()
    player_gone(pid, port)


def players_config(players: int, **environment: Any) -> dict[str, Any]:
    """K Basic players as RLlib's vector entry point asks for them."""
    return basic_config(**environment) | {"players": players, "num_envs": players}


def test_players_vector_env_steps_every_player(players_of: PlayersOf, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env(players_config(3, max_episode_steps=5))
    assert isinstance(env, PlayersVectorEnv) and env.num_envs == 3
    players = [players_of(player) for player in env.envs]
    try:
        assert len({port for _, port in players}) == 3
        obs, info = env.reset(seed=1)
        assert obs.shape == (3, 20) and info["action_mask"].shape == (3, 3)
        actions = np.array([2, 1, 0])  # right: large goal in 7; left: small goal in 3; stay: truncated at 5
        totals, finished = np.zeros(3), [[] for _ in range(3)]
        ends: list[tuple[bool, bool]] = [(False, False)] * 3
        for _ in range(16):
            _, rewards, terminated, truncated, _ = env.step(actions)
            totals += rewards
            for index in np.flatnonzero(terminated | truncated):
                finished[index].append(round(float(totals[index]), 6))
                ends[index] = (bool(terminated[index]), bool(truncated[index]))
                totals[index] = 0.0
        assert finished[1][:2] == [0.07, 0.07] and finished[2][:2] == [-0.05, -0.05]
        assert ends[1] == (True, False) and ends[2] == (False, True)
        assert finished[0][:2] == [-0.05, -0.05]  # the 5-step limit comes before the large goal, 7 steps away
    finally:
        env.close()
    for pid, port in players:
        player_gone(pid, port)


def test_players_vector_env_overlaps_the_players_step_times(players_of: PlayersOf, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env(players_config(4, parameters={"physics_ms": 40.0}))
    assert isinstance(env, PlayersVectorEnv)
    players = [players_of(player) for player in env.envs]
    try:
        env.reset()
        start = time.perf_counter()
        for _ in range(5):
            env.step(np.zeros(4, dtype=np.int64))
        per_step = (time.perf_counter() - start) / 5
        assert 0.040 <= per_step < 0.120  # sequential exchanges would take at least 4 x 40 ms
    finally:
        env.close()
    for pid, port in players:
        player_gone(pid, port)


def test_players_vector_env_one_failed_start_closes_the_others(tmp_path: Path) -> None:
    from rlrunner.unity.players import open_players

    opened: list[Any] = []

    def open_one(index: int) -> Any:
        if index == 1:
            raise UnityEnvError("player 1 did not start")
        env = make_unity_env(basic_config(base_port=7650))
        opened.append(env)
        return env

    with pytest.raises(UnityEnvError, match="player 1 did not start"):
        open_players(3, open_one)
    assert len(opened) == 2 and all(env.unity_env.process is None for env in opened)
