"""The local backend: the run directory, the emulated container environment, and runs end to end.

End-to-end runs go through the real launcher, Ray and the bundled Basic player; every test checks by
pid that nothing it started is left.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from shared import BASIC_PPO, CUSTOM_MODEL, QUICK_TRAINING, ROOT

from rlrunner.backends import local
from rlrunner.cli import main
from rlrunner.contract.checkpoints import CheckpointStore, read_checkpoint
from rlrunner.contract.errors import UsageError
from rlrunner.contract.identity import identity_hash, run_id
from rlrunner.contract.metrics import TENSORBOARD_TAGS, parse_metrics_line
from rlrunner.contract.run_dir import git_commit
from rlrunner.contract.sagemaker_container import launcher_command
from rlrunner.loader import load_spec
from rlrunner.processes import process_table, run_processes
from rlrunner.runner import plan


def planned(spec: Path, *overrides: str) -> tuple[Any, Any, Path]:
    experiment_spec, document = load_spec(spec, overrides)
    return experiment_spec, plan(experiment_spec, spec_dir=document.base_dir, local=True), document.base_dir


def launcher_pid(run_dir: Path) -> int:
    return int(json.loads((run_dir / "run.json").read_text())["launcher_pid"])


def metrics_rows(run_dir: Path) -> list[dict[str, float]]:
    with open(run_dir / "metrics.csv", newline="") as handle:
        return [{k: float(v) for k, v in row.items() if v} for row in csv.DictReader(handle)]


# --- the run directory -----------------------------------------------------------------------


def test_prepare_run_dir_lays_out_the_opt_ml_tree(tmp_path: Path) -> None:
    spec, job, spec_dir = planned(CUSTOM_MODEL)
    run = local.RunDir(tmp_path / "run")
    record = local.prepare_run_dir(run, spec, job, spec_dir=spec_dir, resume=False)
    for folder in ("code", "input/config", "model", "output/data", "checkpoints"):
        assert (run.root / folder).is_dir(), folder
    assert sorted(path.name for path in run.code.iterdir()) == ["models", "train_unity.py"]  # the entry script and the source dir
    assert (run.code / "models" / "tiny_mlp.py").is_file()
    assert not list(run.code.rglob("__pycache__"))
    assert json.loads((run.input_config / "hyperparameters.json").read_text()) == {"rlrunner_run_id": json.dumps(job.run_id)}
    assert json.loads((run.input_config / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert (run.root / "spec_hash").read_text() == identity_hash(spec) + "\n"
    import yaml

    assert yaml.safe_load((run.root / "spec.yaml").read_text()) == spec.to_data()
    assert record["run_id"] == job.run_id and record["plan"] == job.to_json()
    git = git_commit(ROOT)
    assert git is not None and (run.root / "git_commit").read_text().startswith(git[0])


def test_prepare_run_dir_refuses_an_existing_run_without_resume(tmp_path: Path) -> None:
    spec, job, spec_dir = planned(BASIC_PPO)
    run = local.RunDir(tmp_path / "run")
    local.prepare_run_dir(run, spec, job, spec_dir=spec_dir, resume=False)
    with pytest.raises(UsageError) as error:
        local.prepare_run_dir(run, spec, job, spec_dir=spec_dir, resume=False)
    assert str(error.value).startswith(f"{run.root}: the run directory exists; continue it with --resume, replace it with --force")
    local.prepare_run_dir(run, spec, job, spec_dir=spec_dir, resume=True)


def test_prepare_run_dir_resume_needs_the_same_spec(tmp_path: Path) -> None:
    spec, job, spec_dir = planned(BASIC_PPO)
    run = local.RunDir(tmp_path / "run")
    with pytest.raises(UsageError, match=r"--resume needs an existing run directory with run.json \(none here\)$"):
        local.prepare_run_dir(run, spec, job, spec_dir=spec_dir, resume=True)
    local.prepare_run_dir(run, spec, job, spec_dir=spec_dir, resume=False)
    other, other_job, _ = planned(BASIC_PPO, "algorithm.hyperparameters.lr=0.001", "training.stop.timesteps=20000", "training.seed=3")
    with pytest.raises(UsageError) as error:
        local.prepare_run_dir(run, other, other_job, spec_dir=spec_dir, resume=True)
    assert str(error.value) == (
        f"{run.root}: --resume: the spec differs from the run's in algorithm.hyperparameters.lr 0.0001 -> 0.001, "
        "training.seed 0 -> 3; only raised stop criteria (training.stop.*) may change; start a new run (another --run-dir, or --force)"
    )
    lower, lower_job, _ = planned(BASIC_PPO, "training.stop.timesteps=5000")
    with pytest.raises(UsageError, match=r"in training.stop.timesteps 10000 -> 5000; only raised"):
        local.prepare_run_dir(run, lower, lower_job, spec_dir=spec_dir, resume=True)


def test_prepare_run_dir_resume_accepts_a_raised_stop_criterion(tmp_path: Path) -> None:
    spec, job, spec_dir = planned(BASIC_PPO)
    run = local.RunDir(tmp_path / "run")
    local.prepare_run_dir(run, spec, job, spec_dir=spec_dir, resume=False, invocation={"overrides": []})
    longer, longer_job, _ = planned(BASIC_PPO, "training.stop.timesteps=20000", "deploy.instance_type=ml.m5.large")
    record = local.prepare_run_dir(run, longer, longer_job, spec_dir=spec_dir, resume=True, invocation={"overrides": ["x"]})
    assert record["run_id"] == longer_job.run_id != job.run_id
    assert record["resume_changes"] == {"training.stop.timesteps": [10000, 20000]}
    assert record["continued"] == [{"from_run_id": job.run_id, "changes": {"training.stop.timesteps": [10000, 20000]}}]
    assert record["overrides"] == ["x"] and record["identity"]["training"]["stop"]["timesteps"] == 20000
    import yaml

    assert yaml.safe_load((run.root / "spec.yaml").read_text())["training"]["stop"]["timesteps"] == 20000
    assert local.prepare_run_dir(run, longer, longer_job, spec_dir=spec_dir, resume=True)["resume_changes"] == {}


def test_container_environment_is_the_plan_plus_the_toolkit_variables(tmp_path: Path) -> None:
    spec, job, _ = planned(BASIC_PPO)
    run = local.RunDir(tmp_path)
    base = {"PATH": "/usr/bin", "SM_CHANNEL_STALE": "/x", "RLRUNNER_EXPERIMENT_009": "stale", "RAY_ADDRESS": "10.0.0.1:6379"}
    env = local.launcher_environment(run, job, num_cpus=2, base=base)
    for key, value in job.environment.items():
        assert env[key] == value
    assert "SM_CHANNEL_STALE" not in env and "RLRUNNER_EXPERIMENT_009" not in env and "RAY_ADDRESS" not in env
    assert env["PATH"] == "/usr/bin"
    assert env["RLRUNNER_OPT_ML"] == str(tmp_path.resolve())
    assert env["SM_MODEL_DIR"] == str(tmp_path.resolve() / "model")
    assert env["SM_OUTPUT_DATA_DIR"] == str(tmp_path.resolve() / "output" / "data")
    assert env["SM_NUM_CPUS"] == "2" and env["SM_NUM_GPUS"] == "0"
    assert json.loads(env["SM_HOSTS"]) == ["algo-1"] and env["SM_CURRENT_HOST"] == "algo-1"
    assert json.loads(env["SM_HPS"]) == {"rlrunner_run_id": job.run_id}
    assert env["SM_HP_RLRUNNER_RUN_ID"] == job.run_id
    assert launcher_command(run, job.estimator["hyperparameters"], python="python") == [
        "python", str(tmp_path.resolve() / "code" / "train_unity.py"), "--rlrunner_run_id", job.run_id
    ]


def test_plot_learning_curve_writes_a_png(tmp_path: Path) -> None:
    rows = [{"timesteps": 500.0 * i, "episode_return_mean": 0.1 * i, "episode_return_min": 0.0, "episode_return_max": 0.93} for i in range(1, 5)]
    path = local.plot_learning_curve(rows, tmp_path / "curve.png", title="t")
    assert path is not None and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert local.plot_learning_curve([{"timesteps": 1.0}], tmp_path / "none.png", title="t") is None
    rows[-1]["env_steps_per_s"] = 80.0
    lines = local.curve_lines(rows, evaluation=0.93, target=0.9)
    assert lines["evaluation"] == (2000.0, 0.93) and lines["target"] == 0.9 and lines["steps_per_s"] == [(2000.0, 80.0)]
    assert lines["mean"] == [0.1 * i for i in range(1, 5)] and lines["band"] == ([0.0] * 4, [0.93] * 4)
    assert local.plot_learning_curve(rows, tmp_path / "marked.png", title="t", evaluation=0.93, target=0.9) is not None


@pytest.mark.parametrize(
    ("launcher", "expected"),
    [(0, 0), (3, 3), (4, 4), (5, 5), (1, 5), (-signal.SIGKILL, 4), (-signal.SIGTERM, 130), (128 + signal.SIGINT, 130)],
)
def test_map_exit(launcher: int, expected: int) -> None:
    assert local.map_exit(launcher) == expected


def test_progress_bar_counts_toward_the_stop_criterion() -> None:
    stream = io.StringIO()
    with local.Progress(stream, total=1000, unit="timesteps", bar=True) as progress:
        progress.line("rlrunner: building PPO")
        progress.metrics({"iteration": 1, "timesteps": 500, "episode_return_mean": 0.5, "env_steps_per_s": 123.4}, 500)
    text = stream.getvalue()
    assert "rlrunner: building PPO" in text and "500/1000" in text and "return 0.500" in text
    assert "123 steps/s" in text and "ETA" in text


# --- the command line --------------------------------------------------------------------------


def test_cli_run_non_local_hands_over_to_the_sagemaker_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from rlrunner.backends import sagemaker

    calls: list[dict[str, Any]] = []

    class Submitted:
        job_name, run_dir, console_url = "basic-ppo-2026", tmp_path, "https://console/x"

    def fake_submit(job: Any, spec: Any, **kwargs: Any) -> Any:
        calls.append({"job": job, "spec": spec, **kwargs})
        return Submitted()

    monkeypatch.setattr(sagemaker, "submit", fake_submit)
    result = CliRunner().invoke(main, ["run", str(BASIC_PPO), "--run-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output == f"training job basic-ppo-2026 started (run {calls[0]['job'].run_id}): https://console/x\n"
    assert calls[0]["job"].estimator["instance_type"] == "ml.c5.2xlarge"
    assert calls[0]["run_dir"] == tmp_path and calls[0]["resume"] is False


def test_cli_run_invalid_spec_exits_3(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(BASIC_PPO), "--local", "--set", "algorithm.hyperparameters.lr=-1"])
    assert result.exit_code == 3
    assert "algorithm.hyperparameters.lr" in result.output


def test_cli_run_existing_run_dir_needs_resume(tmp_path: Path) -> None:
    (tmp_path / "leftover").write_text("x")
    result = CliRunner().invoke(main, ["run", str(BASIC_PPO), "--local", "--run-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output == (
        f"{tmp_path}: the run directory exists; continue it with --resume, replace it with --force, or pick another with --run-dir\n"
    )
    result = CliRunner().invoke(main, ["run", str(BASIC_PPO), "--local", "--run-dir", str(tmp_path), "--force"])
    assert result.exit_code == 2
    assert result.output == f"{tmp_path}: --force: not a run directory (no spec.yaml, run.json or job.json); remove it yourself\n"


# --- end to end --------------------------------------------------------------------------------


# mlagents-envs 0.28 checks the protocol version with distutils' StrictVersion; unity_env filters that
# warning with catch_warnings, which another thread of this process (torch, Ray) can undo meanwhile.
@pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")
def test_run_local_trains_basic_end_to_end(tmp_path: Path, sessions: list[int]) -> None:
    """Real player, Ray and launcher: metrics lines match the plan's regexes, checkpoint, ONNX == RLModule greedy."""
    spec, job, spec_dir = planned(BASIC_PPO, *QUICK_TRAINING, "training.stop.timesteps=1000", "training.checkpoint_frequency=3")
    run_dir = tmp_path / "run"
    stream = io.StringIO()
    result = local.run_local(spec, job, spec_dir=spec_dir, run_dir=run_dir, stream=stream, on_start=lambda p: sessions.append(p.pid))
    output = stream.getvalue()
    assert result.exit_code == 0, output[-4000:]

    # every metrics line, read with the regexes SageMaker gets
    lines = [line for line in (run_dir / "launcher.log").read_text().splitlines() if parse_metrics_line(line)]
    assert len(lines) == 4
    for iteration, line in enumerate(lines, start=1):
        found = {d["Name"]: re.search(d["Regex"], line) for d in job.estimator["metric_definitions"]}
        assert all(found[name] for name in ("iteration", "timesteps", "time_s")), line
        assert float(found["iteration"].group(1)) == iteration  # type: ignore[union-attr]
        assert float(found["timesteps"].group(1)) == 250 * iteration  # type: ignore[union-attr]
    rows = metrics_rows(run_dir)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4] and rows[-1]["timesteps"] == 1000
    assert "episode_return_mean" in rows[-1]

    # checkpoints: every 3 iterations and at the end, complete
    store = CheckpointStore(run_dir / "checkpoints", keep=3)
    assert [c.path.name for c in store.complete()] == ["checkpoint_000003", "checkpoint_000004"]
    final = store.newest()
    assert final is not None and final.progress.iteration == 4 and final.progress.timesteps == 1000
    assert (final.path / "learner_group" / "learner" / "rl_module" / "default_policy").is_dir()

    # the model: ONNX greedy actions == the RLModule's greedy actions on 1,000 observations
    model = run_dir / "model"
    policy = json.loads((model / "policy.json").read_text())
    assert policy["run_id"] == job.run_id and policy["algorithm"] == "PPO"
    assert policy["observation_space"]["shape"] == [20] and policy["action_space"] == {"type": "discrete", "n": 3, "start": 0}
    assert json.loads((model / "experiment.json").read_text()) == job.experiment
    import onnxruntime
    import torch

    from rlrunner.entry.export import load_rl_module

    module = load_rl_module(final.path)
    rng = np.random.default_rng(0)
    obs = np.concatenate([np.eye(20, dtype=np.float32)[rng.integers(0, 20, 500)], rng.normal(size=(500, 20)).astype(np.float32)])
    session = onnxruntime.InferenceSession(str(model / "policy.onnx"), providers=["CPUExecutionProvider"])
    actions, logits = session.run(["actions", "action_dist_inputs"], {"obs": obs})
    with torch.no_grad():
        expected_logits = module.forward_inference({"obs": torch.from_numpy(obs)})["action_dist_inputs"].numpy()
    assert actions.dtype == np.int64 and actions.shape == (1000,)
    np.testing.assert_array_equal(actions, expected_logits.argmax(axis=-1))
    np.testing.assert_allclose(logits, expected_logits, atol=1e-5)

    # the rest of the run directory
    evaluation = json.loads((model / "evaluation.json").read_text())  # written by the launcher, as on SageMaker
    assert evaluation["episodes"] == 3 and evaluation["greedy"] is True
    assert result.evaluation is not None and result.evaluation["mean"] == evaluation["mean"]
    assert (run_dir / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads((run_dir / "run.json").read_text())
    assert record["exit_code"] == 0 and record["first_iteration_s"] > 0 and record["metrics"]["timesteps"] == 1000
    assert record["run_id"] == job.run_id and run_dir.joinpath("spec_hash").read_text().startswith(job.run_id)

    # the learner statistics: in every metrics line and in TensorBoard's event files, read with TensorBoard's reader
    expected = [name for name in TENSORBOARD_TAGS if name != "qf_loss"]  # PPO has no Q function
    assert all(name in rows[-1] for name in expected), sorted(set(expected) - set(rows[-1]))
    assert rows[-1]["lr"] == pytest.approx(1e-4) and rows[-1]["env_steps_per_s"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "output" / "tensorboard"))
    events.Reload()
    for name in expected:
        scalars = events.Scalars(TENSORBOARD_TAGS[name])
        assert [s.step for s in scalars] == [250, 500, 750, 1000], name
    assert events.Scalars("episode/return_mean")[-1].value == pytest.approx(rows[-1]["episode_return_mean"], rel=1e-5)
    assert not (run_dir / "output" / "failure").exists()
    assert not run_processes(sessions=[record["launcher_pid"]])


def test_readme_job_trains_basic_to_the_seeds_reward_and_stops_there(tmp_path: Path, sessions: list[int]) -> None:
    """The README's main job as it is: it stops when the greedy policy reaches the seed's reward, well before its step cap."""
    spec, job, spec_dir = planned(BASIC_PPO)
    assert spec.training.stop.evaluation_return_mean == 0.92 and spec.training.stop.timesteps == 10000
    run_dir = tmp_path / "run"
    result = local.run_local(spec, job, spec_dir=spec_dir, run_dir=run_dir, stream=io.StringIO(), on_start=lambda p: sessions.append(p.pid))
    log = (run_dir / "launcher.log").read_text()
    assert result.exit_code == 0, log[-4000:]
    rows = metrics_rows(run_dir)
    assert "stopped: evaluation_return_mean" in log and rows[-1]["evaluation_return_mean"] >= 0.92
    assert all(row["evaluation_return_mean"] < 0.92 for row in rows[:-1]) and rows[-1]["timesteps"] < 10000
    evaluation = json.loads((run_dir / "model" / "evaluation.json").read_text())
    assert evaluation["episodes"] == 20 and evaluation["mean"] >= 0.92  # the exported policy, greedy, as the README says


def rlrunner_cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from rlrunner.cli import main; main()", *args]


def wait_for_rows(run_dir: Path, count: int, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run_dir / "metrics.csv").is_file() and len(metrics_rows(run_dir)) >= count:
            return
        if process.poll() is not None:
            pytest.fail(f"rlrunner run exited early ({process.returncode}): {process.communicate()[0][-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"no {count} metrics rows within {timeout} s")


def test_killed_launcher_resumes_with_continuing_timesteps(tmp_path: Path, sessions: list[int]) -> None:
    """SIGKILL the launcher mid-training; `rlrunner run --resume` continues from the newest complete checkpoint."""
    run_dir = tmp_path / "run"
    args = ("run", str(BASIC_PPO), "--local", "--run-dir", str(run_dir), *[a for o in QUICK_TRAINING for a in ("--set", o)],
            "--set", "training.stop.timesteps=1750", "--set", "training.checkpoint_frequency=2")
    first = subprocess.Popen(rlrunner_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(first.pid)
    wait_for_rows(run_dir, 3, first, timeout=150)
    victim = launcher_pid(run_dir)
    sessions.append(victim)
    os.kill(victim, signal.SIGKILL)
    out, _ = first.communicate(timeout=60)
    assert first.returncode == 4, out[-3000:]
    assert "launcher status -9" in out
    assert not run_processes(sessions=[victim, first.pid])

    checkpoints = run_dir / "checkpoints"
    for folder in checkpoints.iterdir():  # a kill never leaves a checkpoint that looks complete but is not
        if folder.name.startswith("checkpoint_"):
            assert read_checkpoint(folder) is not None, folder
    resumed_from = CheckpointStore(checkpoints, keep=3).newest()
    assert resumed_from is not None and resumed_from.progress.iteration >= 2
    killed_rows = len(metrics_rows(run_dir))

    second = subprocess.Popen(
        rlrunner_cli(*args, "--resume"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    sessions.append(second.pid)
    out, _ = second.communicate(timeout=240)
    assert second.returncode == 0, out[-4000:]
    sessions.append(launcher_pid(run_dir))
    progress = resumed_from.progress
    assert f"resuming from {resumed_from.path} (iteration {progress.iteration}, timesteps {progress.timesteps})" in out
    log = (run_dir / "launcher.log").read_text()
    after = [v for v in (parse_metrics_line(line) for line in log.split("resuming from", 1)[1].splitlines()) if v]
    assert after[0]["iteration"] == progress.iteration + 1
    assert after[0]["timesteps"] == progress.timesteps + 250  # continuing, not restarting
    rows = metrics_rows(run_dir)
    assert [r["iteration"] for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= killed_rows
    assert rows[-1]["timesteps"] == 1750
    assert [r["timesteps"] for r in rows] == [250.0 * i for i in range(1, len(rows) + 1)]
    assert (run_dir / "model" / "policy.onnx").is_file() and (run_dir / "model" / "evaluation.json").is_file()


def test_console_filter_keeps_rlrunner_lines_metrics_errors_and_tracebacks() -> None:
    lines = [
        "rlrunner: run 1234: PPO on Basic",
        "2026-12-02 02:12:55,574\tWARNING algorithm_config.py:5160 -- You are running PPO on the new API stack!",
        "2026-12-02 02:12:55,601\tWARNING rl_module.py:463 -- DeprecationWarning: `RLModule(config=..)` has been deprecated. This will raise an error",
        "/x/y.py:3: DeprecationWarning: distutils Version classes are deprecated.",
        "  warnings.warn(",
        "(EnvRunner pid=12) some internal line",
        "rlrunner-metrics iteration=1 timesteps=250",
        "(EnvRunner pid=12) RuntimeError: the player went away",
        "Traceback (most recent call last):",
        '  File "x.py", line 1, in <module>',
        "ValueError: bad",
        "",
    ]
    shown = local.ConsoleFilter()
    assert [line for line in lines if shown(line)] == [lines[0], lines[6], *lines[7:11]]


def test_console_keeps_ray_and_rllib_warnings_in_the_launcher_log(tmp_path: Path, sessions: list[int]) -> None:
    """Not on a terminal: stdout and stderr carry rlrunner's lines and metrics lines; Ray's and RLlib's warnings
    stay in launcher.log."""
    run_dir = tmp_path / "run"
    args = ("run", str(BASIC_PPO), "--local", "--run-dir", str(run_dir), *[a for o in QUICK_TRAINING for a in ("--set", o)],
            "--set", "training.stop.timesteps=500")  # fmt: skip
    process = subprocess.Popen(rlrunner_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    sessions.append(process.pid)
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, (out + err)[-4000:]
    sessions.append(launcher_pid(run_dir))
    log = (run_dir / "launcher.log").read_text()
    assert "WARNING" in log and "DeprecationWarning" in log  # RLlib's new-API-stack notice and its deprecations
    console = out + err
    assert "WARNING" not in console and "Warning" not in console
    assert "rlrunner-metrics iteration=2 " in out
    assert "rlrunner: evaluation: mean" in out and err == ""


def test_ctrl_c_stops_the_launcher_ray_and_the_players(tmp_path: Path, sessions: list[int]) -> None:
    run_dir = tmp_path / "run"
    args = ("run", str(BASIC_PPO), "--local", "--run-dir", str(run_dir), *[a for o in QUICK_TRAINING for a in ("--set", o)])
    process = subprocess.Popen(rlrunner_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sessions.append(process.pid)
    wait_for_rows(run_dir, 1, process, timeout=150)
    victim = launcher_pid(run_dir)
    sessions.append(victim)
    tree = run_processes(sessions=[victim], roots=[victim])
    table = process_table()
    assert any("basic.player" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace") for pid in tree if pid in table)
    os.killpg(process.pid, signal.SIGINT)  # what a terminal sends to the foreground process group
    out, _ = process.communicate(timeout=90)
    assert process.returncode == 130, out[-3000:]
    assert "rlrunner: stopping: the launcher finishes the iteration in flight and writes a checkpoint" in out
    assert "rlrunner: stopped by the user; resume with: " in out
    assert not run_processes(sessions=[victim, process.pid], roots=[victim])
    assert not (run_dir / "output" / "failure").exists()  # a stop, not a failure (tests/backends/test_stops.py)
    assert json.loads((run_dir / "output" / "data" / "stopped.json").read_text())["signal"] == "SIGTERM"


def test_resume_trains_longer_and_init_from_starts_from_another_runs_weights(runs: Path, sessions: list[int]) -> None:
    """`run --local`, then `--resume` with a raised timesteps (same run dir, found by its identity), then `--init-from`."""
    quick = [a for o in QUICK_TRAINING for a in ("--set", o)]
    args = ("run", str(BASIC_PPO), "--local", *quick, "--set", "training.checkpoint_frequency=2")

    def cli(*extra: str) -> tuple[int, str]:
        process = subprocess.Popen(
            rlrunner_cli(*args, *extra), cwd=runs.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        sessions.append(process.pid)
        out, _ = process.communicate(timeout=300)
        return process.returncode, out

    code, out = cli("--set", "training.stop.timesteps=500")
    assert code == 0, out[-3000:]
    spec, _ = load_spec(BASIC_PPO, [*QUICK_TRAINING, "training.checkpoint_frequency=2", "training.stop.timesteps=500"])
    first = runs / f"basic-ppo-{run_id(spec)}"
    shown = Path("runs") / first.name  # as the command line names it, relative to the working folder
    assert f"run {run_id(spec)}: run directory {shown}" in out
    assert [p.name for p in runs.iterdir()] == [first.name]

    code, out = cli("--set", "training.stop.timesteps=1000", "--set", "training.seed=1", "--resume")
    assert code == 2 and "--resume: the spec differs from the run's in training.seed 0 -> 1; only raised stop criteria" in out

    code, out = cli("--set", "training.stop.timesteps=1000", "--set", "deploy.instance_type=ml.m5.large", "--resume")
    assert code == 0, out[-3000:]
    longer, _ = load_spec(BASIC_PPO, [*QUICK_TRAINING, "training.checkpoint_frequency=2", "training.stop.timesteps=1000"])
    assert f"continuing run {run_id(spec)} in {shown} as run {run_id(longer)}: training.stop.timesteps 500 -> 1000" in out
    assert "resuming from" in out and "(iteration 2, timesteps 500)" in out
    rows = metrics_rows(first)
    assert [r["timesteps"] for r in rows] == [250, 500, 750, 1000]
    record = json.loads((first / "run.json").read_text())
    assert record["run_id"] == run_id(longer) and record["continued"][0]["from_run_id"] == run_id(spec)
    assert "training.stop.timesteps=1000" in record["overrides"] and record["local"] is True

    code, out = cli("--set", "training.stop.iterations=1", "--set", "training.stop.timesteps=1000", "--init-from", str(first))
    assert code == 0, out[-3000:]
    started = next(p for p in runs.iterdir() if p != first)
    assert f"starting from the policy weights of {first / 'checkpoints' / 'checkpoint_000004'}" in out
    assert [r["timesteps"] for r in metrics_rows(started)] == [250]  # a new run: step 0, one iteration
    assert json.loads((started / "run.json").read_text())["identity"]["training"]["init_from"] == str(first)

    # the weights it started from are the other run's: one iteration of Adam steps (4 of lr 1e-4) away; a fresh network is ~0.1 away
    import torch

    from rlrunner.entry.export import load_rl_module

    def weights(checkpoint: Path) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in load_rl_module(checkpoint).parameters()])

    source = weights(first / "checkpoints" / "checkpoint_000004")
    assert (weights(started / "checkpoints" / "checkpoint_000001") - source).abs().max() < 0.01

    # `rlrunner runs` and `rlrunner compare` on these real run directories
    listed = {row["run_dir"]: row for row in json.loads(CliRunner().invoke(main, ["runs", "--runs-root", str(runs), "--output", "json"]).stdout)}
    assert (listed[str(first)]["status"], listed[str(first)]["steps"], listed[str(first)]["run_id"]) == ("completed", 1000, run_id(longer))
    assert listed[str(started)]["steps"] == 250 and listed[str(first)]["evaluation"] is not None
    picture = runs.parent / "compare.png"
    compared = CliRunner().invoke(main, ["compare", str(first), str(started), "--picture", str(picture), "--output", "json"])
    assert compared.exit_code == 0, compared.output
    data = json.loads(compared.stdout)
    assert data["differing_fields"] == ["training.init_from", "training.stop.iterations"]
    assert [row["steps"] for row in data["runs"]] == [1000, 250] and picture.read_bytes()[:4] == b"\x89PNG"
    assert [s["run_ids"] for s in data["series"]] == [[run_id(longer)], [listed[str(started)]["run_id"]]]
