"""Multi-host training on this machine: 1 host vs N emulated hosts (one Ray cluster on loopback addresses).

Runs `rlrunner run experiments/basic_ppo.yaml --local --hosts N` for each host count, with a light
learner (1 epoch per iteration) so that an iteration is mostly sampling, and reports:

* training throughput: environment steps per wall second between the end of the first iteration
  and the end of the last one (from metrics.csv; the first iteration pays for warm-up);
* env runners: how many, and on which hosts (cluster.json);
* cluster formation: from the head launcher's start to every host's node being alive (cluster.json),
  and the whole run's wall time (run.json).

Every host reports this machine's CPU count (SM_NUM_CPUS), so `env_runners: auto` gives 1 host
CPUs - 1 env runners and 2 hosts 2 x CPUs - 1: on 2 cores, 1 and 3 env runners on the same 2 cores.

    python benchmarks/cluster.py [--hosts 1 2] [--iterations 8] [--env-runners auto]
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "experiments" / "basic_ppo.yaml"


def run(hosts: int, iterations: int, env_runners: str, run_dir: Path) -> dict[str, Any]:
    """One training run; returns its figures."""
    command = [
        sys.executable, "-m", "rlrunner.cli", "run", str(SPEC), "--local", "--run-dir", str(run_dir), "--hosts", str(hosts),
        "--set", f"training.stop.iterations={iterations}",
        "--set", f"training.env_runners={env_runners}",
        "--set", "training.evaluation_episodes=1",
        "--set", "training.stop.timesteps=100000000",
        "--set", "training.checkpoint_frequency=1000",
        "--set", "algorithm.hyperparameters.num_epochs=1",
        "--set", "algorithm.hyperparameters.train_batch_size_per_learner=1000",
        "--set", "algorithm.hyperparameters.minibatch_size=500",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=ROOT)
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{hosts} host(s): exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with open(run_dir / "metrics.csv", newline="") as handle:
        rows = [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]
    first, last = rows[0], rows[-1]
    rate = (last["timesteps"] - first["timesteps"]) / (last["time_s"] - first["time_s"])
    cluster_file = run_dir / "output" / "data" / "cluster.json"
    cluster = json.loads(cluster_file.read_text()) if cluster_file.is_file() else {}
    record = json.loads((run_dir / "run.json").read_text())
    runners = cluster.get("env_runners") or {}
    placement = {host: sum(1 for h in runners.values() if h == host) for host in sorted(set(runners.values()))}
    built = re.search(r"building \w+ with (\d+) env runner\(s\) on (\d+) CPU", (run_dir / "launcher.log").read_text())
    return {
        "hosts": hosts,
        "steps_per_s": rate,
        "iterations": int(last["iteration"]),
        "timesteps": int(last["timesteps"]),
        "env_runners": int(built.group(1)) if built else None,
        "cpus": int(built.group(2)) if built else None,
        "placement": placement or None,
        "formation_s": cluster.get("formation_s"),
        "first_iteration_s": record.get("first_iteration_s"),
        "wall_s": wall,
    }


def main() -> None:
    """Run the configurations and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--env-runners", default="auto", help="training.env_runners (auto: all hosts' CPUs - 1)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="rlrunner-bench-cluster-") as folder:
        for hosts in args.hosts:
            result = run(hosts, args.iterations, args.env_runners, Path(folder) / f"hosts-{hosts}")
            results.append(result)
            print(json.dumps(result), flush=True)
    base = results[0]["steps_per_s"]
    print()
    print("| hosts | Ray CPUs | env runners (where) | env steps/s | vs 1st | cluster formed | first iteration | run wall |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        where = ", ".join(f"{h}: {n}" for h, n in (r["placement"] or {}).items())
        runners = f"{r['env_runners']} ({where})" if where else str(r["env_runners"])
        formed = f"{r['formation_s']:.1f} s" if r["formation_s"] is not None else "—"
        first = f"{r['first_iteration_s']:.1f} s" if r["first_iteration_s"] is not None else "—"
        print(
            f"| {r['hosts']} | {r['cpus']} | {runners} | {r['steps_per_s']:,.0f} | {r['steps_per_s'] / base:.2f}× | {formed} | {first} | {r['wall_s']:.1f} s |"
        )


if __name__ == "__main__":
    main()
