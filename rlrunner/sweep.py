"""Sweeps: expand a spec's sweep block into full specs, validate them all, run them with bounded parallelism.

Each point is a complete spec with its own run id (`rlrunner.contract.identity`), so running a sweep
again skips the points that finished and re-runs the ones that failed or never ran.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import itertools
import json
import math
import os
import random
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlrunner.contract.identity import run_id
from rlrunner.contract.run_dir import (
    JOB_FILE,
    METRICS_FILE,
    RUN_FILE,
    RUNS_ROOT,
    SWEEPS_DIR,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    default_run_dir,
    read_curve,
    read_json,
)
from rlrunner.loader import Document, Location, Problem, SpecError, set_path, validate_document
from rlrunner.runner import plan
from rlrunner.schema import Distribution, ExperimentSpec, SweepSpec

# Linux on-demand list prices in us-east-1, USD per instance-hour (for estimates only).
INSTANCE_HOUR_USD = {
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.large": 0.102,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.c5.9xlarge": 1.836,
    "ml.c5.18xlarge": 3.672,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.p3.2xlarge": 3.825,
}


@dataclass(frozen=True)
class SweepPoint:
    """One run of a sweep: its swept values and its full spec."""

    index: int
    values: dict[str, Any]
    spec: ExperimentSpec

    @property
    def run_id(self) -> str:
        """The point's run id (`rlrunner.contract.identity`)."""
        return run_id(self.spec)

    @property
    def config_key(self) -> str:
        """The point's values without the seed: points that differ only in seed share it."""
        return json.dumps({k: v for k, v in self.values.items() if k != "training.seed"}, sort_keys=True)

    def label(self) -> str:
        """`lr=0.001, seed=1` style text for tables and messages."""
        return ", ".join(f"{path}={value}" for path, value in self.values.items()) or "(base spec)"


def sweep_id(points: Sequence[SweepPoint]) -> str:
    """Stable id of a whole sweep: hash of its points' run ids (a deploy-only or tag-only edit keeps it)."""
    return hashlib.sha256(json.dumps([point.run_id for point in points]).encode()).hexdigest()[:10]


def draw(distribution: Distribution, rng: random.Random) -> Any:
    """One value from a random-search distribution."""
    if distribution.uniform is not None:
        return rng.uniform(*distribution.uniform)
    if distribution.loguniform is not None:
        low, high = distribution.loguniform
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    if distribution.randint is not None:
        return rng.randint(*distribution.randint)
    assert distribution.choice is not None
    return rng.choice(distribution.choice)


def sweep_values(sweep: SweepSpec) -> list[dict[str, Any]]:
    """The swept values of every point, seeds last (grid: every combination; random: `samples` draws)."""
    if sweep.method == "grid":
        paths = list(sweep.parameters)
        lists = [sweep.parameters[path] for path in paths]
        combos = [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*lists)]
    else:
        rng = random.Random(sweep.seed)
        combos = []
        for _ in range(sweep.samples or 0):
            combos.append(
                {
                    path: draw(value, rng) if isinstance(value, Distribution) else rng.choice(value)
                    for path, value in sweep.parameters.items()
                }
            )
    if not sweep.seeds:
        return combos
    return [{**combo, "training.seed": seed} for combo in combos for seed in sweep.seeds]


def _value_location(document: Document, path: str, value: Any, sweep: SweepSpec) -> Location:
    """The sweep entry a value came from (the list item when the parameter is a list)."""
    if path not in sweep.parameters:  # the seeds axis
        key: tuple[str | int, ...] = ("sweep", "seeds", sweep.seeds.index(value))
    else:
        options = sweep.parameters[path]
        index = options.index(value) if isinstance(options, list) and value in options else None
        key = ("sweep", "parameters", path) + ((index,) if index is not None else ())
    return document.location_of(key)


def expand(document: Document, spec: ExperimentSpec) -> list[SweepPoint]:
    """Every point of the spec's sweep as a validated spec; all problems of all points at once."""
    if spec.sweep is None:
        return [SweepPoint(0, {}, spec)]
    problems: list[Problem] = []
    points: list[SweepPoint] = []
    seen: dict[tuple[str, str], int] = {}
    for index, values in enumerate(sweep_values(spec.sweep)):
        data = copy.deepcopy(document.data)
        del data["sweep"]
        point = Document(document.source, data, dict(document.locations), document.base_dir)
        for path, value in values.items():
            where = _value_location(document, path, value, spec.sweep)
            problem = set_path(point, tuple(path.split(".")), copy.deepcopy(value), where)
            if problem:
                problems.append(problem)
        label = ", ".join(f"{path}={value}" for path, value in values.items())
        try:
            points.append(SweepPoint(index, values, validate_document(point)))
        except SpecError as error:
            problems += [
                Problem(p.location, p.path, f"{p.message} [sweep point {index}: {label}]") for p in error.problems
            ]
    for done in points:
        # The same run and the same swept values: a value repeats. (Points that differ only where the run id
        # does not look, e.g. compute.instance_type, are different jobs of the same training.)
        key = (done.run_id, done.label())
        if key in seen:
            path = next(iter(done.values), "")
            where = _value_location(document, path, done.values[path], spec.sweep) if path else document.location_of(("sweep",))
            problems.append(
                Problem(where, "sweep", f"points {seen[key]} and {done.index} are the same run ({done.label()}); a value repeats")
            )
        seen.setdefault(key, done.index)
    if problems:
        raise SpecError(problems)
    return points


def estimated_cost_usd(spec: ExperimentSpec) -> float | None:
    """Upper bound of a point's SageMaker cost: instance-hours at list price over max_run (None: local or unknown)."""
    compute = spec.compute
    price = INSTANCE_HOUR_USD.get(compute.instance_type)
    if compute.is_local or price is None:
        return None
    return price * compute.instance_count * compute.max_run / 3600


def dry_run_rows(points: Sequence[SweepPoint]) -> list[dict[str, Any]]:
    """The dry-run table: one row per point."""
    return [
        {
            "index": point.index,
            "run_id": point.run_id,
            "values": point.values,
            "instance_type": point.spec.compute.instance_type,
            "instance_count": point.spec.compute.instance_count,
            "estimated_cost_usd": estimated_cost_usd(point.spec),
        }
        for point in points
    ]


# --- running -------------------------------------------------------------------------------------------


@dataclass
class PointResult:
    """How one point ended."""

    run_id: str
    status: str
    """`finished`, `failed` or `skipped` (finished in an earlier invocation)."""
    mean_return: float | None = None
    best_checkpoint: str | None = None
    run_dir: str | None = None
    message: str = ""
    curve: list[tuple[float, float]] = field(default_factory=list)
    """(timesteps, episode_return_mean) per iteration, for the comparison picture."""


Launch = Callable[[SweepPoint], PointResult]
Finished = Callable[[SweepPoint], PointResult | None]


def run_points(
    points: Sequence[SweepPoint],
    *,
    launch: Launch,
    finished: Finished,
    max_parallel: int,
    report: Callable[[SweepPoint, PointResult], None],
) -> list[PointResult]:
    """Launch every point not finished yet, at most `max_parallel` at once, reporting each end as it happens."""
    results: dict[int, PointResult] = {}
    pending: list[SweepPoint] = []
    for point in points:
        done = finished(point)
        if done is not None:
            results[point.index] = done
            report(point, done)
        else:
            pending.append(point)
    def guarded(point: SweepPoint) -> PointResult:
        try:
            return launch(point)
        except Exception as error:  # a failed point must not stop the others
            return PointResult(point.run_id, "failed", message=f"{type(error).__name__}: {error}")

    with ThreadPoolExecutor(max_workers=max(1, max_parallel)) as pool:
        running: dict[Future[PointResult], SweepPoint] = {}
        queue = list(pending)
        while queue or running:
            while queue and len(running) < max_parallel:
                point = queue.pop(0)
                running[pool.submit(guarded, point)] = point
            done_futures, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done_futures:
                point = running.pop(future)
                results[point.index] = future.result()  # reported here, in the calling thread, as each ends
                report(point, results[point.index])
    return [results[point.index] for point in points]


def summarize(points: Sequence[SweepPoint], results: Sequence[PointResult]) -> dict[str, Any]:
    """Per point status and return; per configuration mean and spread across seeds."""
    rows = [
        {
            "index": point.index,
            "run_id": point.run_id,
            "values": point.values,
            "status": result.status,
            "mean_return": result.mean_return,
            "best_checkpoint": result.best_checkpoint,
            "run_dir": result.run_dir,
            "message": result.message,
        }
        for point, result in zip(points, results, strict=True)
    ]
    groups: dict[str, list[float]] = {}
    labels: dict[str, dict[str, Any]] = {}
    for point, result in zip(points, results, strict=True):
        labels[point.config_key] = {k: v for k, v in point.values.items() if k != "training.seed"}
        if result.mean_return is not None:
            groups.setdefault(point.config_key, []).append(result.mean_return)
        else:
            groups.setdefault(point.config_key, [])
    configurations = [
        {
            "values": labels[key],
            "runs": len(returns),
            "mean_return": statistics.fmean(returns) if returns else None,
            "std_return": statistics.pstdev(returns) if len(returns) > 1 else (0.0 if returns else None),
        }
        for key, returns in groups.items()
    ]
    counts = {status: sum(1 for row in rows if row["status"] == status) for status in ("finished", "skipped", "failed")}
    return {"points": rows, "configurations": configurations, "counts": counts}


def summary_csv(summary: Mapping[str, Any]) -> str:
    """The per-point summary as CSV."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["index", "run_id", "values", "status", "mean_return", "best_checkpoint", "message"])
    for row in summary["points"]:
        writer.writerow(
            [
                row["index"],
                row["run_id"],
                json.dumps(row["values"], sort_keys=True),
                row["status"],
                row["mean_return"],
                row["best_checkpoint"],
                row["message"],
            ]
        )
    return out.getvalue()


def curve_series(points: Iterable[SweepPoint], results: Iterable[PointResult]) -> list[dict[str, Any]]:
    """One series per configuration: its seeds as a mean line with a min-max band."""
    from rlrunner.runs import band

    groups: dict[str, list[tuple[SweepPoint, PointResult]]] = {}
    for point, result in zip(points, results, strict=True):
        if result.curve:
            groups.setdefault(point.config_key, []).append((point, result))
    series = []
    for members in groups.values():
        label = ", ".join(f"{k}={v}" for k, v in members[0][0].values.items() if k != "training.seed") or "(base spec)"
        series.append(band(label, [point.run_id for point, _ in members], [result.curve for _, result in members]))
    return series


def plot_curves(points: Iterable[SweepPoint], results: Iterable[PointResult], path: Path) -> list[dict[str, Any]]:
    """A picture comparing the configurations' learning curves (seeds as a mean line and a band); returns its series."""
    from rlrunner.runs import plot_comparison

    series = curve_series(points, results)
    plot_comparison(series, path, title=f"sweep {path.parent.name}")
    return series


# --- backends: launch and finished-check for each point -----------------------------------------


def local_result(run_dir: Path, run_id: str, status: str | None = None) -> PointResult | None:
    """A point's result from its local run dir (None if it never finished a run)."""
    from rlrunner.contract.checkpoints import CheckpointStore

    run = RunDir(run_dir)
    record = read_json(run.file(RUN_FILE))
    if record is None or "exit_code" not in record:
        return None
    newest = CheckpointStore(run.checkpoints, keep=1).newest()
    evaluation = record.get("evaluation") or {}
    ok = record["exit_code"] == 0
    return PointResult(
        run_id,
        status or ("finished" if ok else "failed"),
        mean_return=evaluation.get("mean"),
        best_checkpoint=str(newest.path) if newest else None,
        run_dir=str(run_dir),
        message="" if ok else str(record.get("failure") or _not_ok(record)),
        curve=read_curve(run.file(METRICS_FILE)),
    )


def _not_ok(record: dict[str, Any]) -> str:
    if record.get("status") == "stopped":
        return "stopped (SIGTERM/Ctrl-C); the next sweep resumes it from its checkpoint"
    return f"exit code {record['exit_code']}"


def local_backend(spec_dir: Path, logs: Path, runs_root: Path = RUNS_ROOT) -> tuple[Launch, Finished]:
    """Launch and finished-check functions that run points on this machine, one run dir each."""
    from rlrunner.backends.local import run_local

    def run_dir_of(point: SweepPoint) -> Path:
        return default_run_dir(point.spec.name, point.run_id, runs_root)

    def launch(point: SweepPoint) -> PointResult:
        job = plan(point.spec, spec_dir=spec_dir, local=True)
        run_dir = run_dir_of(point)
        again = RunDir(run_dir).in_use  # a failed or interrupted earlier try: continue it
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{point.index:04d}-{point.run_id}.log", "w") as log:
            result = run_local(point.spec, job, spec_dir=spec_dir, run_dir=run_dir, resume=again, stream=log, bar=False)
        found = local_result(result.run_dir, point.run_id)
        if found is None:
            return PointResult(point.run_id, "failed", run_dir=str(result.run_dir), message=result.failure or f"exit code {result.exit_code}")
        return found

    def finished(point: SweepPoint) -> PointResult | None:
        found = local_result(run_dir_of(point), point.run_id, status="skipped")
        return found if found is not None and not found.message else None

    return launch, finished


def sagemaker_result(run_dir: Path, run_id: str, status: str | None = None) -> PointResult | None:
    """A point's result from its SageMaker run dir (None before its job ended): the launcher's greedy evaluation."""
    from rlrunner.contract.model_dir import read_evaluation

    run = RunDir(run_dir)
    record = read_json(run.file(JOB_FILE))
    final = None if record is None else record.get("final_status")
    if record is None or final is None:
        return None
    evaluation = read_evaluation(run.model) or {}
    ok = final == "Completed" and run.model.is_dir()
    return PointResult(
        run_id,
        status or ("finished" if ok else "failed"),
        mean_return=evaluation.get("mean"),
        best_checkpoint=record.get("checkpoint_s3_uri"),
        run_dir=str(run_dir),
        message="" if ok else f"job {record.get('job_name')} {final}: {record.get('failure_reason') or 'no model'}",
        curve=read_curve(run.file(METRICS_FILE)),
    )


def sagemaker_backend(
    spec_dir: Path,
    *,
    echo: Callable[[str], None] = print,
    runs_root: Path = RUNS_ROOT,
    poll_s: float = 30.0,
    session_factory: Callable[[], Any] | None = None,
) -> tuple[Launch, Finished]:
    """`launch` and `finished` for a sweep on SageMaker: each point is a job followed to its end."""
    from rlrunner import aws
    from rlrunner.backends import sagemaker

    def run_dir_of(point: SweepPoint) -> Path:
        return default_run_dir(point.spec.name, point.run_id, runs_root)

    def launch(point: SweepPoint) -> PointResult:
        run_dir = run_dir_of(point)

        def say(line: str) -> None:
            echo(f"point {point.index}: {line}")

        record = read_json(run_dir / JOB_FILE)
        ctx = (session_factory or aws.connect)()
        if record is not None and record.get("final_status") is None:  # an earlier try still running: follow it
            name = str(record["job_name"])
            if sagemaker.describe_job(ctx, name)["TrainingJobStatus"] not in sagemaker.TERMINAL_STATUSES:
                say(f"following {name}, started by an earlier sweep")
                description = sagemaker.follow_job(ctx, name, poll_s=poll_s, echo=say, metrics_csv=run_dir / METRICS_FILE)
                sagemaker.finish(ctx, description, run_dir, echo=say)
                return sagemaker_result(run_dir, point.run_id) or PointResult(point.run_id, "failed", message="no job record")
        job = plan(point.spec, spec_dir=spec_dir, environ=os.environ)
        sagemaker.submit(
            job, point.spec, run_dir=run_dir, spec_dir=spec_dir, resume=record is not None, wait=True, poll_s=poll_s,
            session_factory=lambda: ctx, echo=say,
        )  # fmt: skip
        return sagemaker_result(run_dir, point.run_id) or PointResult(point.run_id, "failed", message="no job record")

    def finished(point: SweepPoint) -> PointResult | None:
        result = sagemaker_result(run_dir_of(point), point.run_id, status="skipped")
        return result if result is not None and not result.message else None

    return launch, finished


@dataclass(frozen=True)
class SweepRun:
    """What `run_sweep` did: where it wrote, the per-point results and the summary."""

    folder: Path
    results: list[PointResult]
    summary: dict[str, Any]


def sweep_folder(spec: ExperimentSpec, document: Document, runs_root: Path = RUNS_ROOT) -> Path:
    """`runs/sweeps/<name>-<sweep id>/`: the sweep's summary, table, picture and point logs."""
    return runs_root / SWEEPS_DIR / f"{spec.name}-{sweep_id(expand(document, spec))}"


def run_sweep(
    points: Sequence[SweepPoint],
    *,
    folder: Path,
    launch: Launch,
    finished: Finished,
    max_parallel: int,
    report: Callable[[SweepPoint, PointResult], None],
) -> SweepRun:
    """Run the points, then write `sweep.json`, `sweep.csv` and `learning_curves.png` into `folder`."""
    results = run_points(points, launch=launch, finished=finished, max_parallel=max_parallel, report=report)
    summary = summarize(points, results)
    atomic_write_json(folder / "sweep.json", summary)
    atomic_write_text(folder / "sweep.csv", summary_csv(summary))
    plot_curves(points, results, folder / "learning_curves.png")
    return SweepRun(folder, results, summary)
