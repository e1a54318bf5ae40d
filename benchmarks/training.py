"""Training Basic: `rlrunner run --local` against a plain RLlib script on an in-process copy of Basic.

For each seed, in the same run:

* rlrunner: `rlrunner run SPEC --local` (the real launcher, Ray, the bundled player over gRPC), with a
  checkpoint every iteration so that each iteration's policy can be evaluated afterwards;
* plain: a plain RLlib script (PPOConfig built by hand from the spec's hyperparameters, same seed)
  on `PyBasic`, a pure-Python gymnasium copy of Basic's rules, in-process, run once per number of
  env runners in `--plain-runners` (default 0 and 1: sampling in the driver, one remote env
  runner); the faster one is its figure, as a careful user would pick.

Both policies are evaluated greedily (20 episodes, argmax of the RLModule's logits) on `PyBasic`
after every iteration; reported are the env steps and wall time (from the command's start,
evaluation time excluded) until that evaluation first reaches the threshold, and the startup
overhead (command start to the first iteration's result).

    python benchmarks/training.py --seeds 0 1 2 3 4    # about 2 minutes per seed on 2 cores
    python benchmarks/training.py --set training.env_runners=1   # rlrunner with another layout
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STARTED = time.monotonic()  # the plain script's clock starts before its heavy imports, like a command's

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "experiments" / "basic_ppo.yaml"
EVAL_EPISODES = 20


# --- a pure-Python copy of Basic (reference §1.1) -------------------------------------------------


def make_py_basic(config: dict[str, Any] | None = None) -> Any:
    """Basic's rules as a gymnasium env: start at 10, goals at 7 (+0.1) and 17 (+1), -0.01 per step."""
    import gymnasium as gym
    import numpy as np

    class PyBasic(gym.Env):  # type: ignore[misc]
        observation_space = gym.spaces.Box(-np.inf, np.inf, (20,), np.float32)
        action_space = gym.spaces.Discrete(3)

        def __init__(self, max_episode_steps: int | None) -> None:
            self.max_episode_steps = max_episode_steps
            self.position = 10
            self.steps = 0

        def _obs(self) -> Any:
            obs = np.zeros(20, np.float32)
            if self.position < 20:
                obs[self.position] = 1.0
            return obs

        def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict[str, Any]]:
            super().reset(seed=seed)
            self.position, self.steps = 10, 0
            return self._obs(), {}

        def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
            self.position = min(max(self.position + (0, -1, 1)[int(action)], 0), 20)
            self.steps += 1
            reward, done = -0.01, False
            if self.position == 7:
                reward, done = reward + 0.1, True
            elif self.position == 17:
                reward, done = reward + 1.0, True
            truncated = not done and self.max_episode_steps is not None and self.steps >= self.max_episode_steps
            return self._obs(), reward, done, truncated, {}

    return PyBasic((config or {}).get("max_episode_steps"))


def greedy_return(module: Any, max_episode_steps: int | None, episodes: int = EVAL_EPISODES) -> float:
    """Mean return of the module's greedy policy on PyBasic (at most 1000 steps per episode)."""
    import torch

    env = make_py_basic({"max_episode_steps": max_episode_steps or 1000})
    total = 0.0
    for _ in range(episodes):
        obs, _ = env.reset()
        done = False
        while not done:
            with torch.no_grad():
                logits = module.forward_inference({"obs": torch.as_tensor(obs[None])})["action_dist_inputs"]
            obs, reward, terminated, truncated, _ = env.step(int(logits.argmax(-1)[0]))
            total += reward
            done = terminated or truncated
    return total / episodes


# --- the plain RLlib script (run as a child process) -----------------------------------------------


def plain_main(spec_path: Path, seed: int, threshold: float, max_steps: int, runners: int, torch_threads: int | None = None) -> int:
    """Train PPO with the spec's hyperparameters on PyBasic; print one JSON line per iteration."""
    import yaml

    spec = yaml.safe_load(spec_path.read_text())
    hyperparameters = dict(spec["algorithm"]["hyperparameters"])
    model = dict(spec["algorithm"].get("model") or {})
    env_config = {"max_episode_steps": spec["environment"].get("max_episode_steps")}
    os.environ.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"})

    import ray
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.tune.registry import register_env

    if torch_threads is not None:  # torch's default is one thread per core
        import torch

        torch.set_num_threads(torch_threads)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, _node_ip_address="127.0.0.1")
    register_env("py-basic", make_py_basic)
    config = (
        PPOConfig()
        .environment("py-basic", env_config=env_config)
        .env_runners(num_env_runners=runners)
        .debugging(seed=seed)
        .update_from_dict(hyperparameters)
    )
    if model:
        config.rl_module(model_config=model)
    algo = config.build_algo()
    eval_s = 0.0
    try:
        while True:
            result = algo.train()
            trained = time.monotonic() - STARTED - eval_s
            steps = int(result["num_env_steps_sampled_lifetime"])
            before = time.monotonic()
            score = greedy_return(algo.learner_group._learner.module["default_policy"], env_config["max_episode_steps"])
            eval_s += time.monotonic() - before
            print(json.dumps({"iteration": algo.iteration, "timesteps": steps, "wall_s": trained, "greedy": score}), flush=True)
            if score >= threshold or steps >= max_steps:
                break
    finally:
        algo.stop()
        ray.shutdown()
    return 0


def run_plain(spec: Path, seed: int, threshold: float, max_steps: int, runners: int, torch_threads: int | None = None) -> dict[str, Any]:
    command = [
        sys.executable, __file__, "--plain", "--spec", str(spec), "--seed", str(seed), "--threshold", str(threshold),
        "--max-steps", str(max_steps), "--runners", str(runners),
    ]
    if torch_threads is not None:
        command += ["--plain-torch-threads", str(torch_threads)]
    process = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}, check=False)
    rows = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not rows:
        raise RuntimeError(f"plain script failed ({process.returncode}): {process.stderr[-3000:]}")
    hit = next((r for r in rows if r["greedy"] >= threshold), None)
    return {
        "runners": runners,
        "startup_s": rows[0]["wall_s"],
        "steps_to_threshold": hit["timesteps"] if hit else None,
        "wall_to_threshold_s": hit["wall_s"] if hit else None,
        "iterations": rows,
    }


def fastest(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The plain run that reached the threshold soonest (its other runs kept under "others")."""
    ranked = sorted(results, key=lambda r: r["wall_to_threshold_s"] if r["wall_to_threshold_s"] is not None else float("inf"))
    return {**ranked[0], "others": ranked[1:]}


# --- rlrunner run --local -------------------------------------------------------------------------


def run_rlrunner(spec: Path, seed: int, threshold: float, workdir: Path, overrides: list[str]) -> dict[str, Any]:
    """`rlrunner run --local`; every iteration's checkpoint is evaluated afterwards."""
    from rlrunner.contract.checkpoints import CheckpointStore
    from rlrunner.contract.metrics import parse_metrics_line
    from rlrunner.entry.export import load_rl_module

    run_dir = workdir / f"rlrunner-seed{seed}"
    command = [
        sys.executable, "-c", "from rlrunner.cli import main; main()", "run", str(spec), "--local", "--run-dir", str(run_dir),
        "--set", f"training.seed={seed}", "--set", "training.checkpoint_frequency=1", "--set", "training.keep_checkpoints=100",
    ]
    for override in overrides:
        command += ["--set", override]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    seen: dict[int, dict[str, float]] = {}
    assert process.stdout is not None
    for line in process.stdout:
        values = parse_metrics_line(line)
        if values:
            seen[int(values["iteration"])] = {"timesteps": int(values["timesteps"]), "wall_s": time.monotonic() - started}
    total_s = time.monotonic() - started
    if process.wait() != 0:
        raise RuntimeError(f"rlrunner run failed ({process.returncode}); see {run_dir}/launcher.log")
    max_episode_steps = json.loads((run_dir / "model" / "experiment.json").read_text())["environment"]["max_episode_steps"]
    rows = []
    for checkpoint in CheckpointStore(run_dir / "checkpoints", keep=100).complete():
        iteration = checkpoint.progress.iteration
        score = greedy_return(load_rl_module(checkpoint.path), max_episode_steps)
        rows.append({"iteration": iteration, **seen[iteration], "greedy": score})
    hit = next((r for r in rows if r["greedy"] >= threshold), None)
    evaluation = json.loads((run_dir / "model" / "evaluation.json").read_text())
    return {
        "startup_s": seen[min(seen)]["wall_s"],
        "steps_to_threshold": hit["timesteps"] if hit else None,
        "wall_to_threshold_s": hit["wall_s"] if hit else None,
        "total_s": total_s,
        "final_evaluation": {k: evaluation[k] for k in ("episodes", "mean", "max", "min")},
        "iterations": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=0.92)
    parser.add_argument("--max-steps", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=None, help="Also write the raw results here.")
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain-runners", type=int, nargs="+", default=[0, 1], help="Env runner counts the plain script tries.")
    parser.add_argument("--plain-torch-threads", type=int, default=None, help="torch.set_num_threads in the plain script (default: torch's own).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="A --set for the rlrunner run.")
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--runners", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        return plain_main(args.spec, args.seed, args.threshold, args.max_steps, args.runners, args.plain_torch_threads)

    results = []
    with tempfile.TemporaryDirectory(prefix="rlrunner-bench-") as workdir:
        for seed in args.seeds:
            plain = fastest([run_plain(args.spec, seed, args.threshold, args.max_steps, n, args.plain_torch_threads) for n in args.plain_runners])
            ours = run_rlrunner(args.spec, seed, args.threshold, Path(workdir), args.overrides)
            results.append({"seed": seed, "rlrunner": ours, "plain": plain})
            print(summary_row(results[-1]), flush=True)
    print()
    print(markdown(results, args.threshold))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a and b else "—"


def summary_row(result: dict[str, Any]) -> str:
    ours, plain = result["rlrunner"], result["plain"]
    return (
        f"seed {result['seed']}: rlrunner {ours['steps_to_threshold']} steps / {_s(ours['wall_to_threshold_s'])}, "
        f"plain ({plain['runners']} env runners) {plain['steps_to_threshold']} steps / {_s(plain['wall_to_threshold_s'])} "
        f"(other: {_others(plain)}), "
        f"ratio {_ratio(ours['wall_to_threshold_s'], plain['wall_to_threshold_s'])}; startup {ours['startup_s']:.1f} s vs "
        f"{plain['startup_s']:.1f} s; rlrunner total {ours['total_s']:.1f} s; final greedy evaluation {ours['final_evaluation']['mean']:.3f}"
    )


def _others(plain: dict[str, Any]) -> str:
    return ", ".join(f"{o['runners']} env runners {_s(o['wall_to_threshold_s'])}" for o in plain["others"]) or "-"


def _s(value: float | None) -> str:
    return f"{value:.1f} s" if value is not None else "not reached"


def markdown(results: list[dict[str, Any]], threshold: float) -> str:
    lines = [
        f"| seed | rlrunner: steps to {threshold} | rlrunner: wall | plain: steps | plain: wall (its env runners) | wall ratio | startup rlrunner / plain | final greedy eval (20 ep.) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ours, plain = r["rlrunner"], r["plain"]
        lines.append(
            f"| {r['seed']} | {ours['steps_to_threshold']} | {_s(ours['wall_to_threshold_s'])} | {plain['steps_to_threshold']} | "
            f"{_s(plain['wall_to_threshold_s'])} ({plain['runners']}) | {_ratio(ours['wall_to_threshold_s'], plain['wall_to_threshold_s'])} | "
            f"{ours['startup_s']:.1f} s / {plain['startup_s']:.1f} s | {ours['final_evaluation']['mean']:.3f} |"
        )
    walls = [(r["rlrunner"]["wall_to_threshold_s"], r["plain"]["wall_to_threshold_s"]) for r in results]
    if all(a and b for a, b in walls):
        lines.append(f"\nmedian wall ratio {statistics.median(a / b for a, b in walls):.2f}×")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
