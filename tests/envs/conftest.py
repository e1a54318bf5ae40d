"""Fixtures that launch the bundled Basic player and prove that it is gone afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from rlrunner.entry.unity_env import launch_options
from rlrunner.envs import resolve_environment
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.launch import ManagedUnityEnvironment, launch_unity


@pytest.fixture
def basic_unity(player_gone: Callable[[int, int], None]) -> Iterator[ManagedUnityEnvironment]:
    """A real UnityEnvironment (loopback subclass) connected to the bundled Basic player."""
    options = launch_options(EnvironmentSpec(name="Basic", base_port=7300, timeout_s=20), num_areas=1, seed=0, log_dir=None)
    env = launch_unity(resolve_environment("Basic"), options)
    assert env.process is not None
    pid, port = env.process.pid, env.port
    yield env
    env.close()
    player_gone(pid, port)
