"""The run directory: where every run (local, SageMaker, a sweep point) keeps what it is and what it made.

`runs/<name>-<run_id>/` holds the resolved spec (`spec.yaml`), its hash, the git commit, the run
record (`run.json` for a local run, `job.json` for a SageMaker job), `metrics.csv`, `launcher.log`,
`learning_curve.png`, and the `/opt/ml`-shaped tree of the local emulation (`model/`, `checkpoints/`,
`output/`, …), whose `model/` is also where a SageMaker job's model is downloaded to. Every file is
written atomically (`atomic_write_text`), so a reader never sees half of one.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlrunner.contract.errors import InvalidSpecError, UsageError
from rlrunner.contract.identity import LONGER_TRAINING, describe_changes, hash_identity, identity_changes, trains_longer
from rlrunner.contract.metrics import BEHAVIOR_PREFIX, EXTRA_NAMES, METRIC_NAMES
from rlrunner.contract.sagemaker_container import OptMl

RUNS_ROOT = Path("runs")
SWEEPS_DIR = "sweeps"
SPEC_FILE = "spec.yaml"
SPEC_HASH_FILE = "spec_hash"
GIT_COMMIT_FILE = "git_commit"
RUN_FILE = "run.json"
"""A local run's record."""
JOB_FILE = "job.json"
"""A SageMaker job's record."""
DEPLOYMENT_FILE = "deployment.json"
METRICS_FILE = "metrics.csv"
LOG_FILE = "launcher.log"
CURVE_FILE = "learning_curve.png"
HOSTS_DIR = "hosts"
"""Inside a local run dir: the emulated worker hosts' /opt/ml trees."""


def atomic_write_text(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False) as handle:
        handle.write(text)
    try:
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: Path, data: Any) -> Path:
    """`atomic_write_text` of indented JSON."""
    return atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object file, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class RunDir(OptMl):
    """A run directory; its `/opt/ml`-shaped part is what the local emulation mounts as the container's /opt/ml."""

    def file(self, name: str) -> Path:
        """A run file at the top of the run dir."""
        return self.root / name

    def host(self, name: str) -> RunDir:
        """An emulated worker host's tree inside this run dir."""
        return RunDir(self.root / HOSTS_DIR / name)

    @property
    def record(self) -> dict[str, Any] | None:
        """run.json or job.json, whichever the run has."""
        return read_json(self.file(RUN_FILE)) or read_json(self.file(JOB_FILE))

    @property
    def in_use(self) -> bool:
        """Whether the folder exists and holds anything."""
        return self.root.is_dir() and any(self.root.iterdir())


def default_run_dir(name: str, run_id: str, runs_root: Path = RUNS_ROOT) -> Path:
    """`runs/<name>-<run_id>/`."""
    return runs_root / f"{name}-{run_id}"


def git_commit(directory: Path) -> tuple[str, bool] | None:
    """(commit, dirty) of the git checkout holding `directory`, or None outside one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit, bool(status.strip())) if commit else None


def check_run_dir(run: RunDir, identity: Mapping[str, Any], *, resume: bool, record_file: str) -> dict[str, tuple[Any, Any]]:
    """A used run dir needs --resume; --resume needs a run dir with `record_file` whose run identity is this one,
    or differs only in raised stop criteria (train longer): those changes are returned."""
    if not resume:
        if run.in_use:
            raise UsageError(
                f"{run.root}: the run directory exists; continue it with --resume, replace it with --force, or pick another with --run-dir"
            )
        return {}
    if not run.file(record_file).is_file():
        raise UsageError(f"{run.root}: --resume needs an existing run directory with {record_file} (none here)")
    record = read_json(run.file(record_file)) or {}
    recorded = record.get("identity")
    if not isinstance(recorded, dict):  # a run recorded before identities were: its hash must match
        if record.get("spec_hash") not in (None, hash_identity(identity)):
            raise UsageError(f"{run.root}: --resume: the run was started from another spec; resume with the same spec or use a new --run-dir")
        return {}
    changes = identity_changes(recorded, identity)
    if changes and not trains_longer(changes):
        refused = {path: change for path, change in changes.items() if path not in LONGER_TRAINING or not trains_longer({path: change})}
        raise UsageError(
            f"{run.root}: --resume: the spec differs from the run's in {describe_changes(refused)}; "
            "only raised stop criteria (training.stop.*) may change; start a new run (another --run-dir, or --force)"
        )
    return changes


def resumable_run(runs_root: Path, name: str, identity: Mapping[str, Any]) -> Path | None:
    """The run dir `--resume` continues when its own does not exist: the newest run of experiment `name` under
    `runs_root` that this identity continues (the same, or stop criteria raised), else the newest run of `name`
    (whose check then lists what differs), else None."""
    found: list[tuple[bool, str, Path]] = []
    for folder in sorted(runs_root.glob(f"{name}-*")) if runs_root.is_dir() else []:
        record = read_json(folder / RUN_FILE) or read_json(folder / JOB_FILE) or {}
        recorded = record.get("identity")
        if record.get("name") == name and isinstance(recorded, dict):
            longer = trains_longer(identity_changes(recorded, identity))
            found.append((longer, str(record.get("started") or record.get("submitted_at") or ""), folder))
    return max(found)[2] if found else None


def remove_run_dir(run: RunDir) -> None:
    """Delete a run directory (`--force`); a folder that is not one (no spec.yaml, run.json or job.json) is refused."""
    if not run.in_use:
        return
    if not any(run.file(name).is_file() for name in (SPEC_FILE, RUN_FILE, JOB_FILE)):
        raise UsageError(f"{run.root}: --force: not a run directory (no {SPEC_FILE}, {RUN_FILE} or {JOB_FILE}); remove it yourself")
    shutil.rmtree(run.root)


def check_outside_sources(run: RunDir, sources: Iterable[str | Path]) -> None:
    """The run dir must not lie inside a folder copied into (or uploaded with) the job: it would copy itself."""
    root = run.root.resolve()
    for source in sources:
        folder = Path(source).resolve()
        if root == folder or folder in root.parents:
            raise InvalidSpecError(
                f"folder {folder} contains the run directory {run.root} (the job would copy it into itself); "
                "give source_dir a folder of its own, or pick another --run-dir",
                location="source_dir",
            )


def write_run_files(run: RunDir, spec_data: Mapping[str, Any], spec_hash: str, spec_dir: Path) -> tuple[str, bool] | None:
    """The files every run directory has: the resolved spec, its hash and the git commit; returns the commit."""
    import yaml

    atomic_write_text(run.file(SPEC_FILE), yaml.safe_dump(dict(spec_data), sort_keys=False))
    atomic_write_text(run.file(SPEC_HASH_FILE), spec_hash + "\n")
    git = git_commit(spec_dir)
    if git is not None:
        atomic_write_text(run.file(GIT_COMMIT_FILE), git[0] + (" (uncommitted changes)" if git[1] else "") + "\n")
    return git


def update_record(path: Path, **values: Any) -> dict[str, Any]:
    """Merge `values` into a JSON record file (created if missing); return the record."""
    record = read_json(path) or {}
    record.update(values)
    atomic_write_json(path, record)
    return record


def recorded_runs(runs_root: Path, record_file: str) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(run dir, record) of every run under `runs_root` that has `record_file`, sorted by folder name."""
    if not runs_root.is_dir():
        return
    for folder in sorted(runs_root.iterdir()):
        record = read_json(folder / record_file) if folder.is_dir() else None
        if record is not None:
            yield folder, record


# --------------------------------------------------------------------------------------------
# metrics.csv


class MetricsTable:
    """One row per iteration, parsed from the launcher's metrics lines; a resumed run replaces rows it repeats."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []
        if path.is_file():
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    self.rows.append({k: float(v) for k, v in row.items() if _is_column(k) and v not in ("", None)})

    def add(self, values: Mapping[str, float]) -> None:
        """Add an iteration's row (dropping rows from the same or later iterations) and rewrite the CSV."""
        iteration = values.get("iteration")
        if iteration is not None:
            self.rows = [row for row in self.rows if row.get("iteration", -1) < iteration]
        self.rows.append(dict(values))
        self.write()

    def write(self) -> None:
        """Write the CSV atomically."""
        # Multi-agent runs add agent steps and one column per behaviour after the fixed ones.
        extra = sorted({name for row in self.rows for name in row if name not in METRIC_NAMES and _is_column(name)})
        names = (*METRIC_NAMES, *(n for n in EXTRA_NAMES if n in extra), *(n for n in extra if n not in EXTRA_NAMES))
        lines = [",".join(names)]
        lines += [",".join(_cell(row.get(name)) for name in names) for row in self.rows]
        atomic_write_text(self.path, "\n".join(lines) + "\n")

    @property
    def last(self) -> dict[str, float] | None:
        """The newest row."""
        return self.rows[-1] if self.rows else None


def _is_column(name: str | None) -> bool:
    return name is not None and (name in METRIC_NAMES or name in EXTRA_NAMES or name.startswith(BEHAVIOR_PREFIX))


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def read_curve(metrics_csv: Path) -> list[tuple[float, float]]:
    """(timesteps, episode_return_mean) rows of a run's metrics.csv."""
    rows: Iterable[Mapping[str, float]] = MetricsTable(metrics_csv).rows
    return [(row["timesteps"], row["episode_return_mean"]) for row in rows if "timesteps" in row and "episode_return_mean" in row]
