"""Serving fixtures: a model dir for Basic's spaces, a multi-policy one, and real `rlrunner serve` subprocesses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from http_helpers import ServerProcess, assert_port_free, start_server, stop_server, wait_healthy
from policy_models import write_model_dir, write_policies_model_dir


@pytest.fixture(scope="session")
def basic_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random policy for Basic's spaces (obs 20, Discrete(3)), exported like the launcher does."""
    return write_model_dir(tmp_path_factory.mktemp("basic") / "model")


@pytest.fixture(scope="session")
def policies_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A multi-policy model dir: Walker (obs 20, Discrete(3), teams 0 and 1) and Reacher (obs 8, Box(2))."""
    return write_policies_model_dir(tmp_path_factory.mktemp("policies") / "model")


@pytest.fixture(scope="module")
def server(basic_model_dir: Path) -> Iterator[ServerProcess]:
    """`rlrunner serve` on a free loopback port, healthy; stopped and its port freed afterwards."""
    yield from serving(basic_model_dir)


@pytest.fixture(scope="module")
def policies_server(policies_model_dir: Path) -> Iterator[ServerProcess]:
    """`rlrunner serve` on the multi-policy model dir, healthy; stopped and its port freed afterwards."""
    yield from serving(policies_model_dir)


def serving(model_dir: Path) -> Iterator[ServerProcess]:
    running = start_server(model_dir)
    try:
        wait_healthy(running.port)
        yield running
    finally:
        stop_server(running.process)
    assert running.process.returncode is not None
    assert_port_free(running.port)
