"""The run directory: atomic writes, the one refusal rule for used run dirs, metrics.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from rlrunner.contract.errors import EXIT_USAGE, UsageError
from rlrunner.contract.metrics import METRIC_NAMES
from rlrunner.contract.run_dir import (
    RUN_FILE,
    MetricsTable,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    check_run_dir,
    read_curve,
    remove_run_dir,
    resumable_run,
    update_record,
)


def test_atomic_write_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "run.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_text(path, '{"a": 2}\n')
    assert json.loads(path.read_text()) == {"a": 2}
    assert [p.name for p in path.parent.iterdir()] == ["run.json"]


def test_a_failed_atomic_write_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})  # not JSON: fails before anything replaces the file
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_update_record_merges_values(tmp_path: Path) -> None:
    path = tmp_path / RUN_FILE
    update_record(path, run_id="abc", launcher_pid=1)
    assert update_record(path, launcher_pid=2, exit_code=0) == {"run_id": "abc", "launcher_pid": 2, "exit_code": 0}


def test_check_run_dir_refuses_a_used_dir_without_resume_and_a_resume_of_another_run(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    identity = {"training": {"stop": {"timesteps": 1000}, "seed": 0}}
    check_run_dir(run, identity, resume=False, record_file=RUN_FILE)  # new: fine
    with pytest.raises(UsageError) as none_here:
        check_run_dir(run, identity, resume=True, record_file=RUN_FILE)
    assert str(none_here.value) == f"{run.root}: --resume needs an existing run directory with run.json (none here)"
    update_record(run.file(RUN_FILE), identity=identity, name="basic")
    with pytest.raises(UsageError) as used:
        check_run_dir(run, identity, resume=False, record_file=RUN_FILE)
    assert used.value.exit_code == EXIT_USAGE
    assert str(used.value) == (
        f"{run.root}: the run directory exists; continue it with --resume, replace it with --force, or pick another with --run-dir"
    )
    assert check_run_dir(run, identity, resume=True, record_file=RUN_FILE) == {}
    longer = {"training": {"stop": {"timesteps": 3000}, "seed": 0}}
    assert check_run_dir(run, longer, resume=True, record_file=RUN_FILE) == {"training.stop.timesteps": (1000, 3000)}
    with pytest.raises(UsageError) as other:
        check_run_dir(run, {"training": {"stop": {"timesteps": 3000}, "seed": 1}}, resume=True, record_file=RUN_FILE)
    assert str(other.value) == (
        f"{run.root}: --resume: the spec differs from the run's in training.seed 0 -> 1; "
        "only raised stop criteria (training.stop.*) may change; start a new run (another --run-dir, or --force)"
    )
    assert resumable_run(tmp_path, "basic", longer) is None  # the folder is not named basic-*
    named = RunDir(tmp_path / "basic-0123456789")
    update_record(named.file(RUN_FILE), identity=identity, name="basic", started="2026-12-02T00:00:00+00:00")
    assert resumable_run(tmp_path, "basic", longer) == named.root
    other = RunDir(tmp_path / "basic-9876543210")
    update_record(other.file(RUN_FILE), identity={"training": {"seed": 5}}, name="basic", started="2026-12-02T01:00:00+00:00")
    assert resumable_run(tmp_path, "basic", longer) == named.root  # the one it continues, though older
    assert resumable_run(tmp_path, "basic", {"training": {"seed": 7}}) == other.root  # none: the newest, to list what differs
    assert resumable_run(tmp_path, "other", longer) is None


def test_remove_run_dir_refuses_a_folder_that_is_not_a_run_dir(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a run directory"):
        remove_run_dir(RunDir(tmp_path))
    assert (tmp_path / "notes.txt").is_file()
    run = RunDir(tmp_path / "run")
    update_record(run.file(RUN_FILE), run_id="x")
    remove_run_dir(run)
    assert not run.root.exists()


def test_metrics_table_replaces_iterations_a_resumed_run_repeats(tmp_path: Path) -> None:
    table = MetricsTable(tmp_path / "metrics.csv")
    for iteration in (1, 2, 3):
        table.add({"iteration": iteration, "timesteps": iteration * 500, "episode_return_mean": 0.1 * iteration})
    again = MetricsTable(tmp_path / "metrics.csv")  # a resume from the checkpoint of iteration 2
    again.add({"iteration": 3, "timesteps": 1500, "episode_return_mean": 0.5})
    again.add({"iteration": 4, "timesteps": 2000, "episode_return_mean": 0.6})
    rows = metrics_rows(tmp_path)
    assert [(r["iteration"], r.get("episode_return_mean")) for r in rows] == [(1, 0.1), (2, 0.2), (3, 0.5), (4, 0.6)]
    with open(tmp_path / "metrics.csv", newline="") as handle:
        assert next(csv.reader(handle)) == list(METRIC_NAMES)


    assert read_curve(tmp_path / "metrics.csv") == [(500.0, 0.1), (1000.0, 0.2), (1500.0, 0.5), (2000.0, 0.6)]


def metrics_rows(folder: Path) -> list[dict[str, float]]:
    with open(folder / "metrics.csv", newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]
