"""The runs under `runs/`: a table of them (`rlrunner runs`) and a comparison of some (`rlrunner compare`).

Everything here reads run directories (`rlrunner.contract.run_dir`): the record (run.json or job.json),
metrics.csv, the launcher's greedy evaluation in model/evaluation.json. Runs of one configuration that
differ only in `training.seed` are drawn as one mean line with a min-max band, as rl-baselines3-zoo's
plots do.
"""

from __future__ import annotations

import fnmatch
import json
import os
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlrunner.contract.errors import UsageError
from rlrunner.contract.identity import flatten, identity_changes
from rlrunner.contract.model_dir import read_evaluation
from rlrunner.contract.run_dir import JOB_FILE, METRICS_FILE, RUN_FILE, SWEEPS_DIR, MetricsTable, RunDir, read_json

STATUSES = ("running", "completed", "stopped", "failed", "submitted", "unknown")


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError, PermissionError):
        return False
    return True


def run_status(record: Mapping[str, Any]) -> str:
    """A run's status from its record: the record's own `status` when it has one, else what its fields imply."""
    if isinstance(record.get("status"), str):
        return str(record["status"])
    if record.get("backend") == "sagemaker":
        final = record.get("final_status")
        return {"Completed": "completed", "Failed": "failed", "Stopped": "stopped"}.get(str(final), "submitted")
    code = record.get("exit_code")
    if code is None:
        return "running" if _pid_alive(record.get("launcher_pid")) else "unknown"
    return "completed" if code == 0 else ("stopped" if code == 130 else "failed")


@dataclass(frozen=True)
class Run:
    """One run directory, read."""

    path: Path
    record: dict[str, Any]
    rows: list[dict[str, float]]
    evaluation: dict[str, Any] | None

    @classmethod
    def read(cls, path: Path) -> Run:
        """Read a run directory (UsageError when it is not one)."""
        record = read_json(path / RUN_FILE) or read_json(path / JOB_FILE)
        if record is None:
            raise UsageError(f"{path}: not a run directory (no {RUN_FILE} or {JOB_FILE})")
        return cls(path, record, MetricsTable(path / METRICS_FILE).rows, read_evaluation(RunDir(path).model))

    @property
    def run_id(self) -> str:
        """The run id it records."""
        return str(self.record.get("run_id") or "")

    @property
    def identity(self) -> dict[str, Any]:
        """The run identity it records (empty for runs recorded before identities were)."""
        identity = self.record.get("identity")
        return identity if isinstance(identity, dict) else {}

    def row(self) -> dict[str, Any]:
        """Its line in `rlrunner runs`."""
        last = self.rows[-1] if self.rows else {}
        return {
            "run_id": self.run_id,
            "name": self.record.get("name"),
            "status": run_status(self.record),
            "backend": self.record.get("backend") or ("sagemaker" if "job_name" in self.record else "local"),
            "steps": int(last["timesteps"]) if "timesteps" in last else None,
            "episode_return_mean": last.get("episode_return_mean"),
            "evaluation": None if self.evaluation is None else self.evaluation.get("mean"),
            "wall_s": self.record.get("wall_s"),
            "started": self.record.get("started") or self.record.get("submitted_at"),
            "run_dir": str(self.path),
        }


def list_runs(runs_root: Path, *, name: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """The rows of every run under `runs_root` (the sweeps folder left out), oldest first; `name` may be a glob."""
    rows = []
    for folder in sorted(runs_root.iterdir()) if runs_root.is_dir() else []:
        if folder.name == SWEEPS_DIR or not ((folder / RUN_FILE).is_file() or (folder / JOB_FILE).is_file()):
            continue
        row = Run.read(folder).row()
        if name is not None and not fnmatch.fnmatch(str(row["name"]), name) and name not in str(row["name"]):
            continue
        if status is not None and row["status"] != status:
            continue
        rows.append(row)
    return sorted(rows, key=lambda row: str(row["started"] or ""))


def differing_fields(runs: Sequence[Run]) -> dict[str, list[Any]]:
    """The identity fields (dotted paths) whose values differ between the runs: {path: [value per run]}."""
    paths: set[str] = set()
    for run in runs[1:]:
        paths |= set(identity_changes(runs[0].identity, run.identity))
    flat = [flatten(run.identity) for run in runs]
    return {path: [values.get(path) for values in flat] for path in sorted(paths)}


def configuration_key(run: Run) -> str:
    """Runs that differ only in their seed share a configuration."""
    identity = json.loads(json.dumps(run.identity))
    identity.get("training", {}).pop("seed", None)
    return json.dumps(identity, sort_keys=True) if identity else run.run_id


def comparison(runs: Sequence[Run]) -> dict[str, Any]:
    """Final metrics per run and the spec fields that differ (what `rlrunner compare` prints)."""
    differing = differing_fields(runs)
    return {
        "runs": [
            {**run.row(), "values": {path: values[index] for path, values in differing.items()}}
            for index, run in enumerate(runs)
        ],
        "differing_fields": sorted(differing),
    }


def band(label: str, run_ids: Sequence[str], curves: Sequence[Sequence[tuple[float, float]]]) -> dict[str, Any]:
    """One configuration's series: the mean return over its runs (seeds) at every step they all reached, with min and max."""
    by_step: dict[float, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    steps = sorted(step for step, values in by_step.items() if len(values) == len(curves))
    return {
        "label": f"{label} ({len(curves)} seeds)" if len(curves) > 1 else label,
        "run_ids": list(run_ids),
        "steps": steps,
        "mean": [statistics.fmean(by_step[step]) for step in steps],
        "low": [min(by_step[step]) for step in steps],
        "high": [max(by_step[step]) for step in steps],
    }


def curve_series(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One series per configuration (runs that differ only in their seed share one)."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(configuration_key(run), []).append(run)
    differing = differing_fields(runs)
    series = []
    for members in groups.values():
        index = runs.index(members[0])
        label = ", ".join(f"{path}={values[index]}" for path, values in differing.items() if path != "training.seed") or members[0].run_id
        curves = [[(row["timesteps"], row["episode_return_mean"]) for row in run.rows if "timesteps" in row and "episode_return_mean" in row] for run in members]
        series.append(band(label, [run.run_id for run in members], curves))
    return series


def plot_comparison(series: Iterable[Mapping[str, Any]], path: Path, *, title: str = "learning curves") -> Path:
    """The configurations' mean return over environment steps, each with its seeds' min-max band, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(8, 5), dpi=100)
    try:
        for line in series:
            drawn = axes.plot(line["steps"], line["mean"], label=line["label"])
            if len(line["run_ids"]) > 1:
                axes.fill_between(line["steps"], line["low"], line["high"], alpha=0.2, color=drawn[0].get_color())
        axes.set_xlabel("environment steps")
        axes.set_ylabel("episode return (mean)")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        if axes.lines:
            axes.legend(fontsize=7, loc="lower right")
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path
