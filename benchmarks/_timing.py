"""Timing helpers shared by the benchmark scripts (each runs as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any


def cold(command: list[str], repeat: int) -> float:
    """Median wall seconds of a command over `repeat` cold runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gym_steps_per_second(env: Any, action: Any, seconds: float) -> float:
    """Steps/s of a gymnasium env taking `action` every step for `seconds`, resets at episode ends included."""

    def step() -> int:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        return 1

    env.reset()
    return _rate(step, seconds)


def vector_steps_per_second(env: Any, actions: Any, seconds: float) -> float:
    """Sub-env steps/s (all together) of a vector env taking `actions` every step for `seconds` (it resets itself)."""

    def step() -> int:
        env.step(actions)
        return len(actions)

    env.reset()
    return _rate(step, seconds)


def multi_agent_steps_per_second(env: Any, sample: Callable[[int], Any], seconds: float) -> tuple[float, int, int]:
    """(steps/s, steps, agent decisions) of a MultiAgentEnv whose acting agents take `sample(n)` (n actions) for
    `seconds`, resets at episode ends included."""
    counts = {"steps": 0, "decisions": 0}

    def step() -> int:
        actions = dict(zip(env.agents, sample(len(env.agents)), strict=True))
        _, _, terminateds, truncateds, _ = env.step(actions)
        if terminateds["__all__"] or truncateds["__all__"]:
            env.reset()
        counts["steps"] += 1
        counts["decisions"] += len(actions)
        return 1

    env.reset()
    rate = _rate(step, seconds)
    return rate, counts["steps"], counts["decisions"]


def _rate(step: Callable[[], int], seconds: float) -> float:
    """What `step` counts per second, calling it for `seconds`."""
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        count += step()
    return count / (time.perf_counter() - start)
