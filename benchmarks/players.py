"""Env steps/s of one env runner's vector env over K Basic players whose exchanges overlap.

Each player spends ``--physics-ms`` per step (the Basic player's simulated engine time, as a real
Unity build does in physics); ``PlayersVectorEnv`` sends every player its action before it waits for
any. K = 1 is the plain ``UnityGymEnv`` (one player, what an env runner drives by default). The
cases are interleaved round by round and each figure is the median over ``--repeat`` rounds, so
that a loaded machine slows every case alike; the ratio to K = 1 is the figure the issue tracks
(target: at least 0.8 K).

    python benchmarks/players.py [--physics-ms 2] [--players 1 2 4] [--repeat 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np
from _timing import gym_steps_per_second, vector_steps_per_second

from rlrunner.entry.unity_env import make_unity_env, unity_env_config
from rlrunner.envs import resolve_environment
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.gym_env import UnityGymEnv
from rlrunner.unity.players import PlayersVectorEnv


def players_config(players: int, physics_ms: float) -> dict[str, Any]:
    """The env config of K Basic players (RLlib's vector entry point adds num_envs)."""
    environment = EnvironmentSpec(name="Basic", base_port=7900, timeout_s=30.0, parameters={"physics_ms": physics_ms})
    config = unity_env_config(environment, resolve_environment("Basic"), seed=None, log_dir=None, players=players)
    if players > 1:
        config["num_envs"] = players
    return config


def steps_per_second(players: int, physics_ms: float, seconds: float) -> float:
    """Env steps/s (all players together) of an always-right policy, resets included."""
    env = make_unity_env(players_config(players, physics_ms))
    try:
        if isinstance(env, PlayersVectorEnv):
            return vector_steps_per_second(env, np.full(players, 2), seconds)
        assert isinstance(env, UnityGymEnv)
        return gym_steps_per_second(env, 2, seconds)
    finally:
        env.close()


def main() -> None:
    """Interleave the cases, print medians and ratios to K = 1."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--physics-ms", type=float, default=2.0)
    parser.add_argument("--players", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    rates: dict[int, list[float]] = {k: [] for k in args.players}
    ratios: dict[int, list[float]] = {k: [] for k in args.players}
    for round_ in range(args.repeat):
        measured = {k: steps_per_second(k, args.physics_ms, args.seconds) for k in args.players}
        base = measured[args.players[0]]
        for k, rate in measured.items():
            rates[k].append(rate)
            ratios[k].append(rate / base)
        print(f"round {round_ + 1}: " + ", ".join(f"K={k} {rate:.0f}/s" for k, rate in measured.items()), flush=True)
    print(f"physics {args.physics_ms:g} ms per step; medians of {args.repeat} interleaved rounds of {args.seconds:g} s")
    for k in args.players:
        ratio = statistics.median(ratios[k])
        print(
            f"K={k}: {statistics.median(rates[k]):7.0f} env steps/s  {ratio:5.2f}x K={args.players[0]} "
            f"(same-round ratios {min(ratios[k]):.2f}-{max(ratios[k]):.2f}; target >= {0.8 * k:.1f}x)"
        )


if __name__ == "__main__":
    main()
