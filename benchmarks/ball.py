"""The 3DBall-like scene (bundled Ball): paths' throughput, plain baselines and training time to a threshold.

``throughput``: 12 agents of one behaviour, random actions, real protocol, driven four ways in
interleaved rounds of ``--seconds`` each (median of ``--rounds``): the multi-agent path
(``UnityMultiAgentEnv``, 1 area x 12 agents) and the areas path (``UnityVectorEnv``, the fast path,
12 areas x 1 agent), each at decision period 5 (the scene as shipped) and 1. With period 5 both
step through the exchanges in which agents end between decision steps.

Printed: environment steps/s (RLlib ``step()`` calls), protocol exchanges/s, agent steps (decisions)/s.

``baselines``: mean return of ``--episodes`` agent episodes per policy (random actions, a flat platform, a
linear controller) through the multi-agent path. ``threshold RUN_DIR``: the first iteration of a run's
``metrics.csv`` whose Ball mean return reaches ``--threshold``, with its steps and training time.

    python benchmarks/ball.py throughput [--seconds 3] [--rounds 5]
    python benchmarks/ball.py baselines [--episodes 200]
    python benchmarks/ball.py threshold runs/ball-ppo-<run_id> [--threshold 30]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from _timing import multi_agent_steps_per_second

from rlrunner.entry.unity_env import MULTI_AGENT, make_unity_env, unity_env_config
from rlrunner.envs import resolve_environment
from rlrunner.schema import EnvironmentSpec

AGENTS = 12
BEHAVIOR = "Ball?team=0"
COLUMN = "episode_return_mean.Ball_team0"


def config(*, areas: int, agents_per_area: int, period: int, multi_agent: bool, physics_ms: float) -> dict[str, Any]:
    """The Ball scene with this layout, for either path."""
    parameters = {"agents_per_area": float(agents_per_area), "decision_period": float(period), "physics_ms": physics_ms}
    environment = EnvironmentSpec(name="Ball", num_areas=areas, base_port=7950, timeout_s=30.0, parameters=parameters)
    env_config = unity_env_config(environment, resolve_environment("Ball"), seed=0, log_dir=None)
    return {**env_config, MULTI_AGENT: True, "episode_horizon": 2**31} if multi_agent else env_config


def areas_rate(seconds: float, period: int, physics_ms: float) -> tuple[float, float, float]:
    """(env steps/s, exchanges/s, agent steps/s) of UnityVectorEnv over 12 areas x 1 agent."""
    env = make_unity_env(
        config(areas=AGENTS, agents_per_area=1, period=period, multi_agent=False, physics_ms=physics_ms)
    )
    base = env.unity_env
    exchanges = 0
    step = base.step

    def counted() -> None:
        nonlocal exchanges
        exchanges += 1
        step()

    base.step = counted  # count the exchanges the vector env makes
    rng = np.random.default_rng(0)
    try:
        env.reset()
        steps, start = 0, time.perf_counter()
        exchanges = 0
        while time.perf_counter() - start < seconds:
            env.step(rng.uniform(-1, 1, (AGENTS, 2)).astype(np.float32))
            steps += 1
        elapsed = time.perf_counter() - start
    finally:
        env.close()
    return steps / elapsed, exchanges / elapsed, steps * AGENTS / elapsed


def multi_agent_rate(seconds: float, period: int, physics_ms: float) -> tuple[float, float, float]:
    """(env steps/s, exchanges/s, agent steps/s) of UnityMultiAgentEnv over 1 area x 12 agents."""
    env = make_unity_env(
        config(areas=1, agents_per_area=AGENTS, period=period, multi_agent=True, physics_ms=physics_ms)
    )
    rng = np.random.default_rng(0)
    try:
        before = env.exchanges
        rate, steps, decisions = multi_agent_steps_per_second(
            env, lambda n: rng.uniform(-1, 1, (n, 2)).astype(np.float32), seconds
        )
        exchanges = env.exchanges - before
    finally:
        env.close()
    return rate, rate * exchanges / steps, rate * decisions / steps


def throughput(args: argparse.Namespace) -> None:
    """Interleaved rounds of the three ways; medians."""
    runs: dict[str, Callable[[], tuple[float, float, float]]] = {}
    for period in (5, 1):
        runs[f"multi-agent path, 1 area x 12, period {period}"] = partial(
            multi_agent_rate, args.seconds, period, args.physics_ms
        )
        runs[f"areas path, 12 areas x 1, period {period}"] = partial(areas_rate, args.seconds, period, args.physics_ms)
    rates: dict[str, list[tuple[float, float, float]]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, measure in runs.items():
            rates[name].append(measure())
    print(f"{'':<42} {'env steps/s':>12} {'exchanges/s':>12} {'agent steps/s':>14}   (median of {args.rounds})")
    for name, measured in rates.items():
        env_steps, exchanges, agent_steps = (statistics.median(r[i] for r in measured) for i in range(3))
        print(f"{name:<42} {env_steps:>12,.0f} {exchanges:>12,.0f} {agent_steps:>14,.0f}")
    for period in (5, 1):
        multi, areas = (
            rates[f"multi-agent path, 1 area x 12, period {period}"],
            rates[f"areas path, 12 areas x 1, period {period}"],
        )
        ratio = statistics.median(m[2] / a[2] for m, a in zip(multi, areas, strict=True))
        print(
            f"multi-agent / areas at period {period} (agent steps/s, median of {args.rounds} same-round pairs): {ratio:.2f}"
        )


def baselines(args: argparse.Namespace) -> None:
    """Mean return of plain policies over `--episodes` agent episodes, multi-agent path, the scene as shipped."""
    from rlrunner.entry.evaluate import play_multi_agent

    rng = np.random.default_rng(0)
    policies: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "random actions": lambda obs: rng.uniform(-1, 1, (len(obs), 2)),
        "flat platform (zeros)": lambda obs: np.zeros((len(obs), 2)),
        "linear controller": lambda obs: np.clip(-2.0 * obs[:, 2:4] - 2.0 * obs[:, 4:6], -1, 1),
    }
    for name, choose in policies.items():
        env = make_unity_env(config(areas=1, agents_per_area=AGENTS, period=5, multi_agent=True, physics_ms=0.0))
        try:
            played = play_multi_agent(env, {BEHAVIOR: "Ball"}, {"Ball": choose}, args.episodes, seed=0)[BEHAVIOR]
        finally:
            env.close()
        returns = [r for r, _ in played]
        print(
            f"{name:<24} mean return {statistics.mean(returns):6.2f} (min {min(returns):.1f}, max {max(returns):.1f}) over {len(returns)} agent episodes"
        )


def threshold(args: argparse.Namespace) -> None:
    """The first iteration at or past the threshold in a run's metrics.csv."""
    with open(Path(args.run_dir) / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        if row.get(COLUMN) and float(row[COLUMN]) >= args.threshold:
            print(
                f"mean return {float(row[COLUMN]):.2f} >= {args.threshold:g} at iteration {row['iteration']}: "
                f"{row['timesteps']} env steps, {row['agent_timesteps']} agent steps, {float(row['time_s']):.1f} s of training"
            )
            return
    print(f"never reached {args.threshold:g} in {len(rows)} iterations")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rate = commands.add_parser("throughput")
    rate.add_argument("--seconds", type=float, default=3.0)
    rate.add_argument("--rounds", type=int, default=5)
    rate.add_argument("--physics-ms", type=float, default=0.0)
    base = commands.add_parser("baselines")
    base.add_argument("--episodes", type=int, default=200)
    run = commands.add_parser("threshold")
    run.add_argument("run_dir")
    run.add_argument("--threshold", type=float, default=30.0)
    args = parser.parse_args()
    {"throughput": throughput, "baselines": baselines, "threshold": threshold}[args.command](args)


if __name__ == "__main__":
    main()
