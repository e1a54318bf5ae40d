"""A real sweep on this machine: 2 learning rates x 2 seeds through the launcher, Ray and the Basic player."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

SPEC = """\
name: sweep-ci
environment: {name: Basic, max_episode_steps: 30}
algorithm:
  name: PPO
  hyperparameters: {lr: 1.0e-4, train_batch_size_per_learner: 200, minibatch_size: 100, num_epochs: 2}
  model: {fcnet_hiddens: [16]}
training:
  stop: {timesteps: 200}
  env_runners: 1
  evaluation_episodes: 2
compute: {instance_type: local}
sweep:
  parameters:
    algorithm.hyperparameters.lr: [1.0e-4, 3.0e-4]
  seeds: [0, 1]
  max_parallel: 2
"""


def sweep(folder: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "rlrunner.cli", "sweep", "sweep.yaml", "--output", "json", *extra]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900)


def test_sweep_local_runs_skips_and_reruns_only_missing_points(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(SPEC)
    first = sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads(first.stdout)
    assert [row["status"] for row in summary["points"]] == ["finished"] * 4
    assert all(row["mean_return"] is not None and row["best_checkpoint"] for row in summary["points"])
    assert [config["runs"] for config in summary["configurations"]] == [2, 2]
    sweep_dir = Path(tmp_path / summary["sweep_dir"])
    assert {"sweep.json", "sweep.csv", "learning_curves.png"} <= {p.name for p in sweep_dir.iterdir()}

    again = sweep(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [row["status"] for row in json.loads(again.stdout)["points"]] == ["skipped"] * 4

    shutil.rmtree(
        summary["points"][2]["run_dir"]
        if Path(summary["points"][2]["run_dir"]).is_absolute()
        else tmp_path / summary["points"][2]["run_dir"]
    )
    third = sweep(tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert [row["status"] for row in json.loads(third.stdout)["points"]] == [
        "skipped",
        "skipped",
        "finished",
        "skipped",
    ]


def test_sweep_with_an_invalid_point_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "sweep.yaml").write_text(SPEC.replace("lr: [1.0e-4, 3.0e-4]", "lr: [1.0e-4, -1]"))
    result = sweep(tmp_path)
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "sweep.yaml:14:44: algorithm.hyperparameters.lr: must be > 0.0 (got -1) [sweep point 2: algorithm.hyperparameters.lr=-1, training.seed=0]\n"
        "sweep.yaml:14:44: algorithm.hyperparameters.lr: must be > 0.0 (got -1) [sweep point 3: algorithm.hyperparameters.lr=-1, training.seed=1]"
    )
    assert not (tmp_path / "runs").exists()
