"""Who plays behind an adapter, for tests of the env creator and of evaluation that check the player is gone."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import rlrunner.unity.launch  # noqa: F401  (imports mlagents_envs with its protobuf warnings filtered)


def _players_of(env: Any) -> tuple[int, int]:
    base = env.unity_env
    return base.process.pid, base.port


@pytest.fixture
def players_of() -> Callable[[Any], tuple[int, int]]:
    """(pid, port) of the player behind an adapter."""
    return _players_of
