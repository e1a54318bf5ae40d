"""Sweep expansion, validation of every point before launch, bounded parallel running, summaries."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from shared import ROOT

from rlrunner.loader import SpecError, load_spec
from rlrunner.sweep import (
    PointResult,
    SweepPoint,
    dry_run_rows,
    expand,
    plot_curves,
    run_points,
    summarize,
    summary_csv,
)

BASE = """\
name: sweep-test
environment: {name: Basic}
algorithm:
  name: PPO
  hyperparameters: {lr: 1.0e-4}
training: {stop: {timesteps: 1000}}
compute: {instance_type: ml.c5.xlarge, max_run: 7200}
"""


def spec_with(tmp_path: Path, sweep: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(BASE + sweep)
    return path


def test_sweep_grid_times_seeds_gives_stable_distinct_run_ids() -> None:
    spec, document = load_spec(ROOT / "experiments" / "sweep_lr_seeds.yaml")
    points = expand(document, spec)
    assert [point.values for point in points] == [
        {"algorithm.hyperparameters.lr": 1e-4, "training.seed": 0},
        {"algorithm.hyperparameters.lr": 1e-4, "training.seed": 1},
        {"algorithm.hyperparameters.lr": 3e-4, "training.seed": 0},
        {"algorithm.hyperparameters.lr": 3e-4, "training.seed": 1},
    ]
    assert len({point.run_id for point in points}) == 4
    assert [point.run_id for point in expand(document, spec)] == [point.run_id for point in points]
    assert points[3].spec.algorithm.hyperparameters.lr == pytest.approx(3e-4)
    assert points[3].spec.training.seed == 1
    assert points[0].spec.sweep is None


def test_sweep_random_draws_are_seeded_and_within_bounds(tmp_path: Path) -> None:
    path = spec_with(
        tmp_path,
        "sweep:\n  method: random\n  samples: 25\n  seed: 7\n  parameters:\n    algorithm.hyperparameters.lr: {loguniform: [1.0e-5, 1.0e-3]}\n    algorithm.hyperparameters.num_epochs: {randint: [1, 5]}\n    algorithm.hyperparameters.gamma: [0.9, 0.99]\n",
    )
    spec, document = load_spec(path)
    first = expand(document, spec)
    again = expand(*reversed(load_spec(path)))  # type: ignore[arg-type]
    assert len(first) == 25
    assert [p.values for p in first] == [p.values for p in again]
    for point in first:
        assert 1e-5 <= point.values["algorithm.hyperparameters.lr"] <= 1e-3
        assert point.values["algorithm.hyperparameters.num_epochs"] in range(1, 6)
        assert point.values["algorithm.hyperparameters.gamma"] in (0.9, 0.99)


def test_sweep_invalid_point_names_the_point_and_the_field(tmp_path: Path) -> None:
    path = spec_with(tmp_path, "sweep:\n  parameters:\n    algorithm.hyperparameters.gamma: [0.9, 1.5]\n")
    spec, document = load_spec(path)
    with pytest.raises(SpecError) as caught:
        expand(document, spec)
    assert str(caught.value) == (
        f"{path}:10:44: algorithm.hyperparameters.gamma: must be <= 1.0 (got 1.5) "
        "[sweep point 1: algorithm.hyperparameters.gamma=1.5]"
    )


def test_sweep_unknown_path_is_reported_before_anything_runs(tmp_path: Path) -> None:
    path = spec_with(tmp_path, "sweep:\n  parameters:\n    algorithm.hyperparameters.lrr: [0.1]\n")
    spec, document = load_spec(path)
    with pytest.raises(
        SpecError, match=r"algorithm.hyperparameters.lrr: unknown key 'lrr'; did you mean 'lr'\? \[sweep point 0"
    ):
        expand(document, spec)


def test_sweep_dry_run_rows_estimate_cost_from_max_run(tmp_path: Path) -> None:
    spec, document = load_spec(
        spec_with(tmp_path, "sweep:\n  parameters:\n    algorithm.hyperparameters.lr: [0.1, 0.2]\n")
    )
    rows = dry_run_rows(expand(document, spec))
    assert [row["estimated_cost_usd"] for row in rows] == [pytest.approx(0.408), pytest.approx(0.408)]


def points_for(count: int, tmp_path: Path) -> list[SweepPoint]:
    spec, document = load_spec(
        spec_with(
            tmp_path,
            "sweep:\n  parameters:\n    algorithm.hyperparameters.lr: ["
            + ", ".join(str(0.001 * (i + 1)) for i in range(count))
            + "]\n",
        )
    )
    return expand(document, spec)


def test_run_points_bounds_parallelism_and_reports_failures_as_they_happen(tmp_path: Path) -> None:
    points = points_for(6, tmp_path)
    active, peak, lock = 0, 0, threading.Lock()
    reported: list[tuple[int, str]] = []
    both_running = threading.Barrier(2, timeout=10)  # points 0 and 1 run at the same time, or this breaks
    failure_reported = threading.Event()

    def launch(point: SweepPoint) -> PointResult:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            if point.index in (0, 1):
                both_running.wait()
            if point.index == 1:
                raise RuntimeError("player crashed")
            if point.index == 0:  # finishes only once the failure of point 1 was reported
                assert failure_reported.wait(timeout=10)
            return PointResult(point.run_id, "finished", mean_return=float(point.index))
        finally:
            with lock:
                active -= 1

    def report(point: SweepPoint, result: PointResult) -> None:
        reported.append((point.index, result.status))
        if result.status == "failed":
            failure_reported.set()

    results = run_points(points, launch=launch, finished=lambda p: None, max_parallel=2, report=report)
    assert peak == 2
    assert reported[0] == (1, "failed")
    assert [r.status for r in results] == ["finished", "failed", "finished", "finished", "finished", "finished"]
    assert results[1].message == "RuntimeError: player crashed"


def test_run_points_skips_finished_points(tmp_path: Path) -> None:
    points = points_for(3, tmp_path)
    launched: list[int] = []

    def launch(point: SweepPoint) -> PointResult:
        launched.append(point.index)
        return PointResult(point.run_id, "finished", mean_return=0.5)

    def finished(point: SweepPoint) -> PointResult | None:
        return PointResult(point.run_id, "skipped", mean_return=0.9) if point.index != 2 else None

    results = run_points(points, launch=launch, finished=finished, max_parallel=4, report=lambda p, r: None)
    assert launched == [2]
    assert [r.status for r in results] == ["skipped", "skipped", "finished"]


def test_summarize_groups_seeds_into_configurations() -> None:
    spec, document = load_spec(ROOT / "experiments" / "sweep_lr_seeds.yaml")
    points = expand(document, spec)
    results = [
        PointResult(p.run_id, "finished", mean_return=value)
        for p, value in zip(points, [0.9, 0.8, 0.5, None], strict=True)
    ]
    results[3].status = "failed"
    summary = summarize(points, results)
    assert summary["counts"] == {"finished": 3, "skipped": 0, "failed": 1}
    first, second = summary["configurations"]
    assert first["values"] == {"algorithm.hyperparameters.lr": 1e-4}
    assert (first["runs"], first["mean_return"], first["std_return"]) == (2, pytest.approx(0.85), pytest.approx(0.05))
    assert (second["runs"], second["mean_return"], second["std_return"]) == (1, 0.5, 0.0)
    assert summary_csv(summary).splitlines()[0] == "index,run_id,values,status,mean_return,best_checkpoint,message"


def test_sweep_picture_groups_seeds_into_one_line_with_a_band(tmp_path: Path) -> None:
    spec, document = load_spec(ROOT / "experiments" / "sweep_lr_seeds.yaml")
    points = expand(document, spec)
    curves = [[(500.0, 0.1), (1000.0, 0.5)], [(500.0, 0.3), (1000.0, 0.7)], [(500.0, 0.2)], []]
    results = [PointResult(p.run_id, "finished", curve=curve) for p, curve in zip(points, curves, strict=True)]
    series = plot_curves(points, results, tmp_path / "learning_curves.png")
    assert [s["label"] for s in series] == ["algorithm.hyperparameters.lr=0.0001 (2 seeds)", "algorithm.hyperparameters.lr=0.0003"]
    assert series[0]["steps"] == [500.0, 1000.0] and series[0]["mean"] == pytest.approx([0.2, 0.6])
    assert (series[0]["low"], series[0]["high"]) == ([0.1, 0.5], [0.3, 0.7])
    assert (tmp_path / "learning_curves.png").read_bytes()[:4] == b"\x89PNG"
