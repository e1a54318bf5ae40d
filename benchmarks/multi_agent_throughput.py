"""The multi-agent path against the areas path on the same scene: 12 agents of one behaviour.

The scene is the bundled Basic player with 12 areas (one agent each, all deciding every step,
like 3DBall's 12 platforms). The areas path (``UnityVectorEnv``, the fast path) and the multi-agent
path (``UnityMultiAgentEnv``, what any other scene gets) play random actions through the real
protocol for ``--seconds`` each, alternately, ``--rounds`` times; printed: environment steps/s,
agent steps/s and the multi-agent path's share of the areas path's rate.

    python benchmarks/multi_agent_throughput.py [--seconds 3] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
from _timing import multi_agent_steps_per_second

from rlrunner.entry.unity_env import MULTI_AGENT, make_unity_env, unity_env_config
from rlrunner.envs import resolve_environment
from rlrunner.schema import EnvironmentSpec

AGENTS = 12
ENVIRONMENT = EnvironmentSpec(name="Basic", num_areas=AGENTS, base_port=7900, timeout_s=30.0)


def config(multi_agent: bool) -> dict[str, Any]:
    """Basic with 12 areas, for either path."""
    env_config = unity_env_config(ENVIRONMENT, resolve_environment("Basic"), seed=0, log_dir=None)
    return {**env_config, MULTI_AGENT: True} if multi_agent else env_config


def areas_rate(seconds: float) -> tuple[float, float]:
    """(env steps/s, agent steps/s) of UnityVectorEnv."""
    env = make_unity_env(config(False))
    rng = np.random.default_rng(0)
    try:
        env.reset()
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(rng.integers(0, 3, AGENTS))
            steps += 1
        rate = steps / (time.perf_counter() - start)
    finally:
        env.close()
    return rate, rate * AGENTS


def multi_agent_rate(seconds: float) -> tuple[float, float]:
    """(env steps/s, agent steps/s) of UnityMultiAgentEnv."""
    env = make_unity_env(config(True))
    rng = np.random.default_rng(0)
    try:
        rate, steps, decisions = multi_agent_steps_per_second(env, lambda n: rng.integers(0, 3, n).tolist(), seconds)
    finally:
        env.close()
    return rate, rate * decisions / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    areas, multi = [], []
    for _ in range(args.rounds):
        areas.append(areas_rate(args.seconds))
        multi.append(multi_agent_rate(args.seconds))
    for name, rates in (("areas path (UnityVectorEnv)", areas), ("multi-agent path (UnityMultiAgentEnv)", multi)):
        env_steps = statistics.median(r[0] for r in rates)
        agent_steps = statistics.median(r[1] for r in rates)
        print(f"{name:<40} {env_steps:>9,.0f} env steps/s {agent_steps:>10,.0f} agent steps/s")
    ratio = statistics.median(m[1] / a[1] for m, a in zip(multi, areas, strict=True))
    print(f"multi-agent / areas (agent steps/s, median of {args.rounds} same-run pairs): {ratio:.2f}")


if __name__ == "__main__":
    main()
