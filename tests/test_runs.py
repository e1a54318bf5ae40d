"""`rlrunner runs` and `rlrunner compare` over run directories (real ones: tests/backends/test_local.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from shared import BASIC_PPO

from rlrunner.cli import main
from rlrunner.contract.identity import run_id, run_identity
from rlrunner.contract.run_dir import MetricsTable, atomic_write_json
from rlrunner.loader import load_spec
from rlrunner.runs import Run, curve_series


def fake_run(runs: Path, *overrides: str, returns: tuple[float, ...], exit_code: int | None = 0, started: str = "2026-12-02T00:00:00+00:00") -> Path:
    spec, _ = load_spec(BASIC_PPO, list(overrides))
    folder = runs / f"{spec.name}-{run_id(spec)}"
    record = {"run_id": run_id(spec), "name": spec.name, "backend": "local", "identity": run_identity(spec), "started": started,
              "exit_code": exit_code, "wall_s": 12.5}
    atomic_write_json(folder / "run.json", record)
    table = MetricsTable(folder / "metrics.csv")
    for index, value in enumerate(returns, start=1):
        table.add({"iteration": index, "timesteps": 500.0 * index, "episode_return_mean": value})
    if exit_code == 0:
        atomic_write_json(folder / "model" / "evaluation.json", {"mean": returns[-1], "episodes": 3})
    return folder


def test_runs_lists_filters_and_prints_json(runs: Path) -> None:
    fake_run(runs, returns=(0.1, 0.5), started="2026-12-02T00:00:01+00:00")
    fake_run(runs, "training.seed=1", returns=(0.2,), exit_code=5, started="2026-12-02T00:00:02+00:00")
    (runs / "sweeps" / "x").mkdir(parents=True)
    result = CliRunner().invoke(main, ["runs", "--output", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [(r["status"], r["steps"], r["evaluation"]) for r in rows] == [("completed", 1000, 0.5), ("failed", 500, None)]
    failed = CliRunner().invoke(main, ["runs", "--status", "failed", "--output", "json"])
    assert [r["run_id"] for r in json.loads(failed.stdout)] == [rows[1]["run_id"]]
    assert json.loads(CliRunner().invoke(main, ["runs", "--name", "other*", "--output", "json"]).stdout) == []
    text = CliRunner().invoke(main, ["runs"]).output
    assert f"{rows[0]['run_id']}  basic-ppo" in text and "completed" in text and "2 runs under runs" in text


def test_compare_groups_seeds_and_names_the_differing_fields(runs: Path) -> None:
    seeds = [fake_run(runs, f"training.seed={seed}", returns=(0.1 * seed, 0.2 * seed, 0.3)) for seed in (0, 1, 2)]
    other = fake_run(runs, "algorithm.hyperparameters.lr=0.001", returns=(0.5, 0.9, 0.92))
    series = curve_series([Run.read(path) for path in [*seeds, other]])
    assert [s["label"] for s in series] == ["algorithm.hyperparameters.lr=0.0001 (3 seeds)", "algorithm.hyperparameters.lr=0.001"]
    assert series[0]["steps"] == [500, 1000, 1500] and series[0]["mean"] == pytest.approx([0.1, 0.2, 0.3])
    assert series[0]["low"][1] == 0.0 and series[0]["high"][1] == 0.4 and series[1]["mean"] == [0.5, 0.9, 0.92]

    result = CliRunner().invoke(main, ["compare", *map(str, [*seeds, other]), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["differing_fields"] == ["algorithm.hyperparameters.lr", "training.seed"]
    assert [row["values"]["training.seed"] for row in data["runs"]] == [0, 1, 2, 0]
    assert Path(data["picture"]).read_bytes()[:4] == b"\x89PNG"
    assert [s["label"] for s in data["series"]] == [s["label"] for s in series]
    text = CliRunner().invoke(main, ["compare", str(seeds[0]), str(other)]).output
    assert "algorithm.hyperparameters.lr" in text and "learning curves: runs/comparisons/" in text
    missing = CliRunner().invoke(main, ["compare", str(runs)])
    assert missing.exit_code == 2 and missing.output == f"{runs}: not a run directory (no run.json or job.json)\n"


def test_status_of_a_local_run_dir(runs: Path) -> None:
    folder = fake_run(runs, returns=(0.1, 0.5))
    result = CliRunner().invoke(main, ["status", str(folder), "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "completed" and json.loads(result.stdout)["evaluation"] == 0.5
    text = CliRunner().invoke(main, ["status", str(folder)]).output
    assert "status               completed\n" in text and "steps                1000\n" in text
