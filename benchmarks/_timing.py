"""Timing helper shared by the benchmark scripts (each runs as `python benchmarks/NAME.py`, so this folder is on sys.path)."""

from __future__ import annotations

import statistics
import subprocess
import time


def cold(command: list[str], repeat: int) -> float:
    """Median wall seconds of a command over `repeat` cold runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
