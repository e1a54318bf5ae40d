"""launch_unity and ManagedUnityEnvironment: the player's start, its environment, and mlagents' own step input."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mlagents_envs.base_env import ActionTuple

from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.launch import PYTHON_VARIABLE, LaunchOptions, ManagedUnityEnvironment, launch_unity

pytestmark = pytest.mark.filterwarnings(
    r"ignore:distutils Version classes are deprecated:DeprecationWarning:mlagents_envs\.environment"
)


def options(**changes: Any) -> LaunchOptions:
    values: dict[str, Any] = {
        "base_port": 7700,
        "no_graphics": True,
        "player_args": (),
        "time_scale": 20.0,
        "parameters": {},
        "timeout_s": 1.0,
        "num_areas": 1,
        "seed": 0,
        "log_dir": None,
    }
    return LaunchOptions(**(values | changes))


def test_launch_timeout_names_port_and_what_to_check_and_passes_the_player_its_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PYTHON_VARIABLE, raising=False)
    seen = tmp_path / "seen.txt"
    silent = tmp_path / "Silent.x86_64"
    silent.write_text(f'#!/bin/sh\necho "${PYTHON_VARIABLE} $EXTRA" > {seen}\nexec sleep 30\n')
    silent.chmod(0o755)
    with pytest.raises(UnityEnvError) as excinfo:
        launch_unity(silent, options(player_environment={"EXTRA": "extra"}))
    assert re.fullmatch(
        re.escape(f"{silent}: the player did not connect to 127.0.0.1:") + r"\d+"
        + re.escape(
            " within 1 s. Check that it is a Linux ML-Agents build (communication API 1.x) with an agent whose "
            "Behavior Type is Default, that it starts headless (no_graphics: true on a server), and its "
            "player log (set environment.log_dir)"
        ),
        str(excinfo.value),
    )
    assert seen.read_text() == f"{sys.executable} extra\n"
    assert PYTHON_VARIABLE not in os.environ  # given to the player, not set in this process


def test_launch_refuses_a_missing_or_non_executable_player(tmp_path: Path) -> None:
    with pytest.raises(UnityEnvError) as excinfo:
        launch_unity(tmp_path / "Nope.x86_64", options())
    assert str(excinfo.value) == f"{tmp_path / 'Nope.x86_64'}: no such Unity player executable"
    plain = tmp_path / "Plain.x86_64"
    plain.write_text("#!/bin/sh\n")
    with pytest.raises(UnityEnvError) as excinfo:
        launch_unity(plain, options())
    assert str(excinfo.value) == f"{plain}: not executable (chmod +x it)"


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
