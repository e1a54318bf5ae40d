"""Timing helpers shared by the benchmark scripts (each runs as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import statistics
import subprocess
import time
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
    env.reset()
    steps = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        _, _, terminated, truncated, _ = env.step(action)
        steps += 1
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def vector_steps_per_second(env: Any, actions: Any, seconds: float) -> float:
    """Sub-env steps/s (all together) of a vector env taking `actions` every step for `seconds` (it resets itself)."""
    env.reset()
    exchanges = 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        env.step(actions)
        exchanges += 1
    return exchanges * len(actions) / (time.perf_counter() - start)
