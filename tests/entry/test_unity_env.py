"""UnityGymEnv / UnityVectorEnv: unit tests over a scripted BaseEnv, integration over the Basic player."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env
from mlagents_envs.base_env import (
    ActionSpec,
    ActionTuple,
    BehaviorSpec,
    DimensionProperty,
    ObservationSpec,
    ObservationType,
)

from rlrunner.entry.unity_env import (
    UnityEnvError,
    UnityGymEnv,
    UnityVectorEnv,
    make_unity_env,
    resolve_binary,
)

pytestmark = pytest.mark.filterwarnings(
    r"ignore:distutils Version classes are deprecated:DeprecationWarning:mlagents_envs\.environment"
)

F = Any  # the ``fakes`` fixture's type, kept loose for tests


def vector_spec(size: int) -> ObservationSpec:
    return ObservationSpec((size,), (DimensionProperty.NONE,), ObservationType.DEFAULT, "vec")


def visual_spec(shape: tuple[int, int, int]) -> ObservationSpec:
    props = (DimensionProperty.TRANSLATIONAL_EQUIVARIANCE,) * 2 + (DimensionProperty.NONE,)
    return ObservationSpec(shape, props, ObservationType.DEFAULT, "cam")


def spec(obs: list[ObservationSpec], actions: ActionSpec) -> dict[str, BehaviorSpec]:
    return {"B?team=0": BehaviorSpec(obs, actions)}


BASIC_CONFIG: dict[str, Any] = {
    "name": "Basic",
    "binary": None,
    "no_graphics": True,
    "player_args": [],
    "time_scale": 20.0,
    "parameters": {},
    "max_episode_steps": None,
    "timeout_s": 20.0,
    "num_areas": 1,
    "uint8_visual": False,
    "flatten_branched": False,
    "allow_multiple_obs": False,
    "base_port": 7500,
    "seed": None,
    "log_dir": None,
}


# ---------------------------------------------------------------------------------- unit tests


def test_gym_env_continuous_actions_and_spaces(fakes: F) -> None:
    obs = [np.ones((1, 3), np.float32)]
    env = UnityGymEnv(
        fakes.ScriptedEnv(
            spec([vector_spec(3)], ActionSpec(2, ())),
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
    plain = UnityGymEnv(fakes.ScriptedEnv(spec([vector_spec(2)], ActionSpec(0, (2, 3))), script))
    assert plain.action_space == spaces.MultiDiscrete([2, 3])
    _, info = plain.reset()
    assert [m.tolist() for m in info["action_mask"]] == [[1, 0], [0, 1, 1]]
    flat = UnityGymEnv(fakes.ScriptedEnv(spec([vector_spec(2)], ActionSpec(0, (2, 3))), script), flatten_branched=True)
    assert flat.action_space == spaces.Discrete(6)
    _, info = flat.reset()
    assert info["action_mask"].tolist() == [0, 1, 1, 0, 0, 0]
    flat.step(5)
    assert flat.unity_env.actions[-1].discrete.tolist() == [[1, 2]]


def test_gym_env_visual_uint8_and_multiple_obs(fakes: F) -> None:
    image = np.full((1, 4, 4, 3), 0.5, np.float32)
    obs = [image, np.ones((1, 2), np.float32)]
    script = [(fakes.decision_steps(obs, [1]), fakes.terminal_steps([np.zeros((0, 4, 4, 3)), np.zeros((0, 2))], []))]
    specs = spec([visual_spec((4, 4, 3)), vector_spec(2)], ActionSpec(0, (3,)))
    single = UnityGymEnv(fakes.ScriptedEnv(specs, script), uint8_visual=True)
    assert single.observation_space == spaces.Box(0, 255, (4, 4, 3), np.uint8)
    first, _ = single.reset()
    assert first.dtype == np.uint8 and int(first[0, 0, 0]) == 127
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
            spec([vector_spec(1)], ActionSpec(0, (3,))),
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
            spec([vector_spec(1)], ActionSpec(0, (3,))),
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
            spec([vector_spec(1)], ActionSpec(0, (3,))), [(fakes.decision_steps(one, [1]), no_terminal)] * 4
        ),
        max_episode_steps=2,
    )
    env.reset()
    assert env.step(0)[3] is False and env.step(0)[3] is True
    env.reset()
    assert env.unity_env.resets == 2  # the Unity episode was cut short, so RESET is sent


def test_gym_env_rejects_several_behaviours(fakes: F) -> None:
    specs = {
        "A?team=0": BehaviorSpec([vector_spec(1)], ActionSpec(0, (2,))),
        "B?team=0": BehaviorSpec([vector_spec(1)], ActionSpec(0, (2,))),
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
            spec([vector_spec(1)], ActionSpec(0, (3,))),
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
            spec([vector_spec(1)], ActionSpec(0, (3,))),
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
        "areas need an agent that decides every step"
    )


def test_resolve_binary_s3_uses_train_channel(tmp_path: Path) -> None:
    build = tmp_path / "Game.x86_64"
    build.write_text("#!/bin/sh\n")
    path = resolve_binary(None, "s3://bucket/builds/Game.x86_64", {"SM_CHANNEL_TRAIN": str(tmp_path)})
    assert path == build and os.access(path, os.X_OK)
    with pytest.raises(UnityEnvError) as excinfo:
        resolve_binary(None, "s3://bucket/Game.x86_64", {})
    assert (
        str(excinfo.value)
        == "environment.binary: s3://bucket/Game.x86_64 needs the SageMaker train channel (SM_CHANNEL_TRAIN unset)"
    )


# ---------------------------------------------------------------------------- integration tests


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
def test_make_unity_env_basic_returns_and_check_env(fakes: F, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env(BASIC_CONFIG)
    pid, port = fakes.players_of(env)
    try:
        assert isinstance(env, UnityGymEnv)
        assert play(env, 2, 3) == [0.93] * 3 and play(env, 1, 2) == [0.07] * 2
        check_env(env, skip_render_check=True)
    finally:
        env.close()
    player_gone(pid, port)


def test_make_unity_env_parameters_move_large_goal(fakes: F, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env({**BASIC_CONFIG, "parameters": {"large_goal": 12.0, "max_steps": 5.0}})
    pid, port = fakes.players_of(env)
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
def test_vector_env_areas_advance_together(areas: int, fakes: F, player_gone: Callable[[int, int], None]) -> None:
    env = make_unity_env({**BASIC_CONFIG, "num_areas": areas})
    pid, port = fakes.players_of(env)
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

    for areas, mode in ((1, "sync"), (4, "vector_entry_point")):
        config = (
            PPOConfig()
            .environment(make_unity_env, env_config={**BASIC_CONFIG, "num_areas": areas, "max_episode_steps": 30})
            .env_runners(num_env_runners=0, num_envs_per_env_runner=areas, gym_env_vectorize_mode=mode)
        )
        runner = SingleAgentEnvRunner(config=config)
        try:
            episodes = runner.sample(num_timesteps=120, random_actions=True)
            done = [e for e in episodes if e.is_done]
            assert done and all(len(e) <= 30 for e in done)
            assert all(float(e.get_return()) <= 0.93 + 1e-6 for e in done)
        finally:
            runner.stop()


def test_adapters_created_concurrently_get_distinct_ports(fakes: F, player_gone: Callable[[int, int], None]) -> None:
    config = {**BASIC_CONFIG, "base_port": 7600}
    script = textwrap.dedent(f"""
        from rlrunner.entry.unity_env import make_unity_env
        env = make_unity_env({config!r})
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
        players = [fakes.players_of(env) for env in envs if env is not None]
        for env in envs:
            if env is not None:
                env.close()
    thread_ports = [port for _, port in players]
    assert len(set(thread_ports)) == 4 and len(set(ports)) >= 4  # processes may reuse freed ports
    for pid, port in players:
        player_gone(pid, port)


def test_killed_player_gives_clear_step_error_and_close_cleans_up(
    fakes: F, player_gone: Callable[[int, int], None]
) -> None:
    env = make_unity_env(BASIC_CONFIG)
    pid, port = fakes.players_of(env)
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


def test_launch_timeout_names_port_and_what_to_check(tmp_path: Path) -> None:
    silent = tmp_path / "Silent.x86_64"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(0o755)
    with pytest.raises(UnityEnvError) as excinfo:
        make_unity_env({**BASIC_CONFIG, "name": None, "binary": str(silent), "timeout_s": 1.0})
    message = str(excinfo.value)
    assert message.startswith(f"{silent}: the player did not connect to 127.0.0.1:")
    assert "within 1 s" in message and "no_graphics" in message


# ------------------------------------------------------- wire fast path vs mlagents' own protobuf


def _agent_info(agent_id: int, done: bool, obs: list[list[float]], **fields: Any) -> Any:
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto

    observations = []
    for values in obs:
        proto = ObservationProto(shape=[len(values)], name="vec")
        proto.float_data.data.extend(values)
        observations.append(proto)
    return AgentInfoProto(id=agent_id, done=done, observations=observations, **fields)


def _assert_steps_equal(fast: Any, slow: Any) -> None:
    for mine, theirs in zip(fast, slow, strict=True):
        assert type(mine) is type(theirs)
        for name in ("reward", "agent_id", "group_reward") + (
            ("interrupted",) if hasattr(theirs, "interrupted") else ()
        ):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name))
            assert getattr(mine, name).dtype == getattr(theirs, name).dtype, name
        assert list(mine.group_id) == list(theirs.group_id)
        for a, b in zip(mine.obs, theirs.obs, strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype and a.shape == b.shape and a.flags.writeable
        mask_a, mask_b = getattr(mine, "action_mask", None), getattr(theirs, "action_mask", None)
        assert (mask_a is None) == (mask_b is None)
        for a, b in zip(mask_a or [], mask_b or [], strict=True):
            np.testing.assert_array_equal(a, b)


def test_fast_steps_match_steps_from_proto() -> None:
    from mlagents_envs.rpc_utils import steps_from_proto

    from rlrunner.entry.unity_env import _fast_steps, _StepsPlan

    behavior = BehaviorSpec([vector_spec(3), vector_spec(2)], ActionSpec.create_discrete((2, 3)))
    infos = [
        _agent_info(
            5, False, [[1.0, -2.5, 3.0], [0.0, 1.0]], reward=-0.01, action_mask=[True, False, False, True, False]
        ),
        _agent_info(6, True, [[4.0, 5.0, 6.0], [7.0, 8.0]], reward=1.5, max_step_reached=True, group_id=2),
        _agent_info(7, False, [[0.5, 0.25, 0.0], [1.0, 0.0]], group_reward=0.5, action_mask=[True]),  # wrong size
        _agent_info(8, True, [[0.0, 0.0, 1.0], [9.0, 9.0]], reward=0.1),
    ]
    encoded = [info.SerializeToString() for info in infos]
    _assert_steps_equal(_fast_steps(encoded, _StepsPlan(behavior)), steps_from_proto(infos, behavior))
    # No agents, and continuous actions (no masks).
    continuous = BehaviorSpec([vector_spec(3), vector_spec(2)], ActionSpec.create_continuous(2))
    _assert_steps_equal(_fast_steps([], _StepsPlan(continuous)), steps_from_proto([], continuous))
    _assert_steps_equal(_fast_steps(encoded, _StepsPlan(continuous)), steps_from_proto(infos, continuous))


def test_fast_steps_falls_back_or_raises_like_mlagents() -> None:
    from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto

    from rlrunner.entry.unity_env import _fast_steps, _StepsPlan

    plan = _StepsPlan(BehaviorSpec([vector_spec(3)], ActionSpec.create_discrete((3,))))
    wrong_size = _agent_info(1, False, [[1.0, 2.0]]).SerializeToString()
    assert _fast_steps([wrong_size], plan) is None  # mlagents' own check reports it
    compressed = _agent_info(1, False, [])
    compressed.observations.append(ObservationProto(shape=[3], compression_type=1, compressed_data=b"png"))
    assert _fast_steps([compressed.SerializeToString()], plan) is None
    visual = _StepsPlan(BehaviorSpec([visual_spec((2, 2, 1))], ActionSpec.create_discrete((3,))))
    assert _fast_steps([_agent_info(1, False, [[0.0] * 4]).SerializeToString()], visual) is None
    with pytest.raises(RuntimeError, match="observations provided had NaN"):
        _fast_steps([_agent_info(1, False, [[1.0, float("nan"), 0.0]]).SerializeToString()], plan)
    with pytest.raises(RuntimeError, match="rewards provided had Infinite"):
        _fast_steps([_agent_info(1, True, [[1.0, 0.0, 0.0]], reward=float("inf")).SerializeToString()], plan)


def test_raw_output_splits_behaviours_and_defers_initialization_output() -> None:
    from mlagents_envs.communicator_objects.brain_parameters_pb2 import BrainParametersProto
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    from rlrunner.entry.unity_env import _decode_unity_message, _RawOutput

    message = UnityMessageProto()
    message.header.status = 200
    rl_output = message.unity_output.rl_output
    rl_output.agentInfos["A?team=0"].value.extend([_agent_info(1, False, [[1.0]]), _agent_info(2, True, [[2.0]])])
    rl_output.agentInfos["B?team=0"].value.extend([])
    rl_output.side_channel = b"side"
    status, output = _decode_unity_message(message.SerializeToString())
    raw = _RawOutput.decode(output)
    assert status == 200 and raw is not None and raw.side_channel == b"side"
    assert raw.agent_infos["A?team=0"] == [info.SerializeToString() for info in rl_output.agentInfos["A?team=0"].value]
    assert raw.agent_infos.get("B?team=0", []) == []
    message.unity_output.rl_initialization_output.brain_parameters.append(BrainParametersProto(brain_name="A?team=0"))
    assert _RawOutput.decode(_decode_unity_message(message.SerializeToString())[1]) is None
    farewell = UnityMessageProto()
    farewell.header.status = 400
    assert _decode_unity_message(farewell.SerializeToString())[0] == 400


@pytest.mark.parametrize(
    "actions",
    [
        {"d": ActionTuple(discrete=np.array([[2], [0], [1]], dtype=np.int32))},
        {"d": ActionTuple(discrete=np.array([[1, -1], [0, 3]], dtype=np.int32))},
        {"c": ActionTuple(continuous=np.array([[0.5, -1.0], [0.25, 1e-3]], dtype=np.float32))},
        {"d": ActionTuple(discrete=np.array([[1]], dtype=np.int32)), "c": ActionTuple(continuous=np.zeros((1, 1)))},
        {"d": ActionTuple(discrete=np.zeros((0, 1), dtype=np.int32))},
    ],
)
def test_step_input_matches_mlagents(actions: dict[str, Any]) -> None:
    from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
    from mlagents_envs.side_channel.side_channel_manager import SideChannelManager

    from rlrunner.entry.unity_env import ManagedUnityEnvironment

    def fake(cls: type) -> Any:
        env: Any = object.__new__(cls)
        env._env_state = {
            name: ([0] * len(action.discrete if action.discrete is not None else action.continuous), None)
            for name, action in actions.items()
        }
        channel = EngineConfigurationChannel()
        channel.set_configuration_parameters(time_scale=3.0)
        env._side_channel_manager = SideChannelManager([channel])
        env._action_cache = {}
        return env

    expected = UnityEnvironment._generate_step_input(fake(UnityEnvironment), actions)
    mine = fake(ManagedUnityEnvironment)
    for _ in range(2):  # the second call hits the action cache (and sends no side-channel message)
        encoded = ManagedUnityEnvironment._generate_step_input(mine, actions)
        assert UnityInputProto.FromString(encoded) == expected
        expected.rl_input.side_channel = b""
