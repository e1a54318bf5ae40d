"""Environment steps per second through the real protocol (player + mlagents client + adapter).

Prints, beside a bare gRPC unary round trip between two processes measured in the same run:
1 instance with 1, 4 and 16 areas, and 1/2/4 single-area instances in parallel processes.
Bounded in time: each figure runs for ``--seconds`` (default 2).

    python benchmarks/unity_throughput.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import numpy as np
from _timing import gym_steps_per_second, vector_steps_per_second

from rlrunner.entry.unity_env import make_unity_env, unity_env_config
from rlrunner.envs import resolve_environment
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.gym_env import UnityGymEnv, UnityVectorEnv

METHOD = "/bench.Echo/Call"
ENVIRONMENT = EnvironmentSpec(name="Basic", num_areas=1, base_port=7800, timeout_s=30.0)


def basic_config(num_areas: int = 1) -> dict[str, Any]:
    """The env config of the bundled Basic player with ``num_areas`` areas."""
    environment = ENVIRONMENT.model_copy(update={"num_areas": num_areas})
    return unity_env_config(environment, resolve_environment("Basic"), seed=None, log_dir=None)

_CLIENT = """
import sys, time, grpc
channel = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
call = channel.unary_unary(sys.argv[3])
call(b"x" * 64, wait_for_ready=True, timeout=30)
deadline, calls = time.perf_counter() + float(sys.argv[2]), 0
start = time.perf_counter()
while time.perf_counter() < deadline:
    call(b"x" * 64)
    calls += 1
print(calls / (time.perf_counter() - start))
"""


def bare_grpc_rate(seconds: float) -> float:
    """Unary calls per second: a server in this process, a client in another."""
    server = grpc.server(ThreadPoolExecutor(max_workers=2), options=(("grpc.so_reuseport", 0),))
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Call": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        out = subprocess.run(
            [sys.executable, "-c", _CLIENT, str(port), str(seconds), METHOD], capture_output=True, text=True, check=True
        )
        return float(out.stdout.strip())
    finally:
        server.stop(None)


def single_area_rate(seconds: float) -> float:
    """Environment steps per second of one UnityGymEnv (always-right policy, resets included)."""
    env = make_unity_env(basic_config())
    assert isinstance(env, UnityGymEnv)
    try:
        return gym_steps_per_second(env, 2, seconds)
    finally:
        env.close()


def areas_rate(areas: int, seconds: float) -> float:
    """Environment steps per second of one UnityVectorEnv with ``areas`` areas."""
    env = make_unity_env(basic_config(areas))
    assert isinstance(env, UnityVectorEnv)
    try:
        return vector_steps_per_second(env, np.full(areas, 2), seconds)
    finally:
        env.close()


def parallel_rate(instances: int, seconds: float) -> float:
    """Total steps per second of ``instances`` single-area envs, one per process."""
    command = [sys.executable, __file__, "--worker", "--seconds", str(seconds)]
    workers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(instances)]
    rates = [float(w.communicate(timeout=seconds + 60)[0].strip()) for w in workers]
    return sum(rates)


def main() -> None:
    """Measure and print every figure with its ratio to the bare gRPC round trip."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(single_area_rate(args.seconds))
        return
    bare = bare_grpc_rate(args.seconds)
    print(f"bare gRPC unary round trip (2 processes): {bare:8.0f} calls/s ({1e6 / bare:.0f} us)")
    rows = [
        ("1 instance, 1 area", single_area_rate(args.seconds)),
        ("1 instance, 4 areas", areas_rate(4, args.seconds)),
        ("1 instance, 16 areas", areas_rate(16, args.seconds)),
    ] + [(f"{n} instances x 1 area (processes)", parallel_rate(n, args.seconds)) for n in (1, 2, 4)]
    for label, rate in rows:
        print(f"{label:34s} {rate:8.0f} env steps/s  {rate / bare:6.0%} of bare gRPC")


if __name__ == "__main__":
    main()
