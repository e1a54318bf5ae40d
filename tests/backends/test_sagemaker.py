"""The SageMaker backend against a moto server on 127.0.0.1: the real SDK and boto3, no patching of either.

The CreateTrainingJob request that went over HTTP is captured with a botocore event hook (moto does not echo
a job's Environment), and jobs are moved through states by editing moto's in-process record.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aws_helpers import put_model, quiet, throttle
from click.testing import CliRunner
from shared import BASIC_PPO, ROOT

from rlrunner import aws
from rlrunner.backends import sagemaker as backend
from rlrunner.cli import main
from rlrunner.contract.cluster_env import AUTH_TOKEN_PLACEHOLDER
from rlrunner.contract.errors import UsageError
from rlrunner.contract.experiment_env import MAX_VALUE_CHARS, decode_experiment_env
from rlrunner.contract.identity import identity_hash, run_id
from rlrunner.contract.metrics import METRIC_NAMES, format_metrics_line
from rlrunner.loader import load_spec
from rlrunner.runner import JobPlan, plan
from rlrunner.schema import ExperimentSpec

if TYPE_CHECKING:
    from tests.conftest import AwsTestEnv

EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))
DEFAULT_BUCKET = "sagemaker-us-east-1-123456789012"


# --- helpers -------------------------------------------------------------------------------------------


class Capture:
    """Request bodies of chosen operations, captured as they are sent."""

    def __init__(self) -> None:
        self.requests: dict[str, list[Any]] = {}

    def hook(self, operation: str) -> Callable[..., None]:
        def record(request: Any, **_: Any) -> None:
            body = request.body
            if operation.startswith("sagemaker."):
                body = json.loads(body)
            self.requests.setdefault(operation, []).append(body if operation.startswith("sagemaker.") else request.url)

        return record

    def of(self, operation: str) -> list[Any]:
        return self.requests.get(operation, [])


@pytest.fixture
def capture(monkeypatch: pytest.MonkeyPatch) -> Capture:
    """Every session rlrunner makes records CreateTrainingJob and S3 PutObject/multipart requests."""
    captured = Capture()
    connect = aws.connect

    def connect_and_capture(**kwargs: Any) -> aws.AwsContext:
        ctx = connect(**kwargs)
        for operation in ("sagemaker.CreateTrainingJob", "s3.PutObject", "s3.CreateMultipartUpload"):
            ctx.boto.events.register(f"before-send.{operation}", captured.hook(operation))
        return ctx

    monkeypatch.setattr(aws, "connect", connect_and_capture)
    return captured


def planned(path: Path, overrides: Sequence[str] = (), environ: dict[str, str] | None = None) -> tuple[JobPlan, ExperimentSpec]:
    spec, document = load_spec(path, overrides, environ={})
    env = {"SAGEMAKER_ROLE": "arn:aws:iam::123456789012:role/rlrunner-test"} if environ is None else environ
    return plan(spec, spec_dir=document.base_dir, environ=env), spec


def write_build(folder: Path, size: int = 4096) -> Path:
    """A fake Linux player build: an executable and a data folder."""
    (folder / "Game_Data").mkdir(parents=True, exist_ok=True)
    player = folder / "Game.x86_64"
    player.write_bytes(b"\x7fELF" + bytes(size))
    player.chmod(0o755)
    (folder / "Game_Data" / "level0").write_bytes(bytes(range(256)) * 4)
    return player


def binary_spec(tmp_path: Path) -> Path:
    write_build(tmp_path / "build")
    text = BASIC_PPO.read_text().replace("  name: Basic\n", "  binary: build/Game.x86_64\n", 1)
    path = tmp_path / "binary_ppo.yaml"
    path.write_text(text)
    return path


def now_ms() -> int:
    """CloudWatch (and moto) drop events older than 14 days."""
    return int(time.time() * 1000)


# --- the request that reaches SageMaker ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [[], ["compute.spot.max_wait=7200", "compute.instance_count=2", "compute.tags.team=rl"]],
    ids=["basic-ppo", "basic-ppo-spot-2-instances"],
)
def test_submit_request_carries_the_plan(aws_env: AwsTestEnv, capture: Capture, runs: Path, overrides: list[str]) -> None:
    job, spec = planned(BASIC_PPO, overrides)
    submitted = backend.submit(job, spec, run_dir=runs / "r", echo=quiet)

    (request,) = capture.of("sagemaker.CreateTrainingJob")
    assert request["TrainingJobName"] == submitted.job_name
    assert submitted.job_name.startswith("basic-ppo-") and len(submitted.job_name) <= 63
    assert request["AlgorithmSpecification"]["TrainingImage"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/rlrunner:0.1.0"
    assert request["AlgorithmSpecification"]["MetricDefinitions"] == job.estimator["metric_definitions"]
    # every definition captures its statistic from a launcher line (40 at most)
    line = format_metrics_line({name: 1.5 + index for index, name in enumerate(METRIC_NAMES)})
    captured = {d["Name"]: float(re.search(d["Regex"], line).group(1)) for d in request["AlgorithmSpecification"]["MetricDefinitions"]}  # type: ignore[union-attr]
    assert captured == {name: 1.5 + index for index, name in enumerate(METRIC_NAMES)} and len(captured) <= 40
    assert request["TensorBoardOutputConfig"] == {
        "LocalPath": "/opt/ml/output/tensorboard", "S3OutputPath": f"s3://{DEFAULT_BUCKET}/{submitted.job_name}/tensorboard"
    }
    assert request["RoleArn"] == aws_env.role
    assert request["ResourceConfig"]["InstanceType"] == "ml.c5.2xlarge"
    assert request["ResourceConfig"]["InstanceCount"] == job.estimator["instance_count"]
    assert request["ResourceConfig"]["VolumeSizeInGB"] == 30
    assert request["OutputDataConfig"]["S3OutputPath"] == f"s3://{DEFAULT_BUCKET}/"
    assert "InputDataConfig" not in request  # Basic is bundled: no train channel
    hyperparameters = request["HyperParameters"]
    assert json.loads(hyperparameters["rlrunner_run_id"]) == job.run_id
    assert json.loads(hyperparameters["sagemaker_program"]) == "train_unity.py"
    assert json.loads(hyperparameters["sagemaker_submit_directory"]).endswith(f"{submitted.job_name}/source/sourcedir.tar.gz")
    tags = {tag["Key"]: tag["Value"] for tag in request["Tags"]}
    assert tags["rlrunner:run-id"] == job.run_id and tags["rlrunner:spec-hash"] == identity_hash(spec)
    assert request["StoppingCondition"]["MaxRuntimeInSeconds"] == 3600
    if spec.compute.spot:
        assert tags["team"] == "rl"
        assert request["EnableManagedSpotTraining"] is True
        assert request["StoppingCondition"]["MaxWaitTimeInSeconds"] == 7200
        assert request["CheckpointConfig"] == {
            "S3Uri": f"s3://{DEFAULT_BUCKET}/rlrunner/checkpoints/{submitted.job_name}/",
            "LocalPath": "/opt/ml/checkpoints",
        }
    else:
        assert request.get("EnableManagedSpotTraining", False) is False
        assert "CheckpointConfig" not in request
    environment = dict(request["Environment"])
    planned_environment = dict(job.environment)
    if spec.compute.instance_count > 1:  # the plan reserves the slot of the hosts' Ray token; each job gets its own
        assert planned_environment.pop("RAY_AUTH_TOKEN") == AUTH_TOKEN_PLACEHOLDER
        assert len(environment.pop("RAY_AUTH_TOKEN")) == 64
    assert environment == planned_environment
    assert all(len(value) <= MAX_VALUE_CHARS for value in environment.values())
    assert decode_experiment_env(environment) == job.experiment

    record = json.loads((runs / "r" / "job.json").read_text())
    assert record["job_name"] == submitted.job_name and record["run_id"] == job.run_id
    assert record["region"] == "us-east-1" and record["plan"] == json.loads(json.dumps(job.to_json()))
    keys = {item["Key"] for item in aws_env.client("s3").list_objects_v2(Bucket=DEFAULT_BUCKET)["Contents"]}
    assert f"{submitted.job_name}/source/sourcedir.tar.gz" in keys


def test_run_command_submits_basic_ppo(aws_env: AwsTestEnv, capture: Capture, runs: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(BASIC_PPO)], catch_exceptions=False)

    assert result.exit_code == 0, result.output
    (request,) = capture.of("sagemaker.CreateTrainingJob")
    job, _ = planned(BASIC_PPO)
    assert decode_experiment_env(request["Environment"]) == job.experiment
    validated = CliRunner().invoke(main, ["validate", str(BASIC_PPO)]).output
    local_plan = CliRunner().invoke(main, ["plan", str(BASIC_PPO), "--local"]).output
    assert f"(run {job.run_id})" in result.output and f"(run id {job.run_id})" in validated and f"run id        {job.run_id}" in local_plan
    assert request["TrainingJobName"] in result.output
    assert "console.aws.amazon.com/sagemaker" in result.output and f"rlrunner status {request['TrainingJobName']}" in result.output
    jobs = aws_env.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert [summary["TrainingJobName"] for summary in jobs] == [request["TrainingJobName"]]


@pytest.mark.parametrize("outcome", ["Completed", "Failed"])
def test_run_wait_follows_the_job_to_its_end(aws_env: AwsTestEnv, runs: Path, monkeypatch: pytest.MonkeyPatch, outcome: str) -> None:
    connect = aws.connect

    def job_ends_at_once(**kwargs: Any) -> aws.AwsContext:
        ctx = connect(**kwargs)
        names: list[str] = []

        def named(params: dict[str, Any], **_: Any) -> None:
            names.append(params["TrainingJobName"])
            if outcome == "Completed":
                put_model(aws_env, backend.model_artifact_uri(params["OutputDataConfig"]["S3OutputPath"], names[-1]))

        def created(**_: Any) -> None:
            if outcome == "Failed":
                fail_job(aws_env, names[-1])

        ctx.boto.events.register("provide-client-params.sagemaker.CreateTrainingJob", named)
        ctx.boto.events.register("after-call.sagemaker.CreateTrainingJob", created)
        return ctx

    monkeypatch.setattr(aws, "connect", job_ends_at_once)
    result = run_cli(["run", str(BASIC_PPO), "--wait", "--run-dir", str(runs / "waited")])

    if outcome == "Completed":
        assert result.exit_code == 0, result.output
        assert (runs / "waited" / "model" / "policy.onnx").read_bytes() == b"onnx"
        assert "Completed / Completed" in result.output
    else:
        assert result.exit_code == 5, result.output
        assert result.output.splitlines()[-1].endswith(" Failed: AlgorithmError: the launcher exited 1")
        assert not (runs / "waited" / "model").exists()


def fail_job(env: AwsTestEnv, name: str) -> None:
    job = env.training_job(name)
    job.training_job_status = job.secondary_status = "Failed"
    job.failure_reason = "AlgorithmError: the launcher exited 1"


def test_submit_uploads_a_binary_folder_once(aws_env: AwsTestEnv, capture: Capture, runs: Path, tmp_path: Path) -> None:
    job, spec = planned(binary_spec(tmp_path))
    lines: list[str] = []

    first = backend.submit(job, spec, run_dir=runs / "a", echo=lines.append)
    uploads = [url for url in capture.of("s3.PutObject") if "/rlrunner/binaries/" in url]
    second = backend.submit(job, spec, run_dir=runs / "b", echo=lines.append)

    digest = backend.folder_digest(tmp_path / "build")
    channel = f"s3://{DEFAULT_BUCKET}/rlrunner/binaries/{digest}/"
    assert len(uploads) == 2  # Game.x86_64 and Game_Data/level0
    assert [url for url in capture.of("s3.PutObject") if "/rlrunner/binaries/" in url] == uploads
    assert any(line.startswith("player build already on S3") for line in lines)
    for request in capture.of("sagemaker.CreateTrainingJob"):
        (train,) = request["InputDataConfig"]
        assert train["ChannelName"] == "train"
        assert train["DataSource"]["S3DataSource"]["S3Uri"] == channel
    assert decode_experiment_env(capture.of("sagemaker.CreateTrainingJob")[0]["Environment"])["environment"]["binary"] == "/opt/ml/input/data/train/Game.x86_64"
    head = aws_env.client("s3").head_object(Bucket=DEFAULT_BUCKET, Key=f"rlrunner/binaries/{digest}/Game.x86_64")
    assert head["Metadata"]["mode"] == "755"
    assert first.job_name != second.job_name
    assert json.loads((runs / "b" / "job.json").read_text())["binary_uploaded"] is False


def test_folder_digest_covers_names_modes_and_bytes(tmp_path: Path) -> None:
    player = write_build(tmp_path / "build")
    before = backend.folder_digest(tmp_path / "build")
    player.chmod(0o644)
    after_mode = backend.folder_digest(tmp_path / "build")
    player.chmod(0o755)
    assert backend.folder_digest(tmp_path / "build") == before
    (tmp_path / "build" / "Game_Data" / "level0").write_bytes(b"changed")
    after_bytes = backend.folder_digest(tmp_path / "build")
    (tmp_path / "build" / "Game_Data" / "level0").rename(tmp_path / "build" / "Game_Data" / "level1")
    after_name = backend.folder_digest(tmp_path / "build")
    assert len({before, after_mode, after_bytes, after_name}) == 4


def test_every_experiment_builds_a_real_rlestimator(aws_env: AwsTestEnv) -> None:
    sagemaker = aws.import_sagemaker()
    ctx = aws.connect()
    session = ctx.sagemaker_session(aws_env.bucket)
    assert EXPERIMENTS, "experiments/ is empty"
    for path in EXPERIMENTS:
        job, _ = planned(path)
        estimator = sagemaker.rl.RLEstimator(sagemaker_session=session, **job.estimator)
        for key in ("entry_point", "source_dir", "dependencies", "image_uri", "role", "instance_type", "instance_count",
                    "output_path", "base_job_name", "metric_definitions", "environment", "checkpoint_s3_uri",
                    "checkpoint_local_path", "use_spot_instances", "max_run", "max_wait", "tags", "volume_size",
                    "debugger_hook_config", "disable_profiler"):
            assert getattr(estimator, key) == job.estimator[key], f"{path.name}: {key}"
        assert estimator.hyperparameters()["rlrunner_run_id"] == json.dumps(job.run_id)


# --- following jobs: status, logs, stop, download, --wait ------------------------------------------------


def submit_basic(runs: Path, name: str = "basic") -> backend.SubmittedJob:
    job, spec = planned(BASIC_PPO)
    return backend.submit(job, spec, run_dir=runs / name, echo=quiet)


def test_status_stop_and_download_through_the_cli(aws_env: AwsTestEnv, runs: Path) -> None:
    submitted = submit_basic(runs)
    moto_job = aws_env.training_job(submitted.job_name)
    moto_job.training_job_status, moto_job.secondary_status = "InProgress", "Training"
    cli = CliRunner()

    shown = cli.invoke(main, ["status", str(runs / "basic"), "--output", "json"], catch_exceptions=False)
    assert shown.exit_code == 0, shown.output
    (row,) = json.loads(shown.output)
    assert (row["job_name"], row["status"], row["secondary_status"]) == (submitted.job_name, "InProgress", "Training")
    assert row["tags"]["rlrunner:run-id"] == planned(BASIC_PPO)[0].run_id and row["model_dir"] is None

    stopped = cli.invoke(main, ["stop", submitted.job_name], catch_exceptions=False)
    assert stopped.exit_code == 0 and stopped.output.startswith(f"stopping training job {submitted.job_name}")
    again = cli.invoke(main, ["stop", str(runs / "basic")], catch_exceptions=False)
    assert again.output == f"training job {submitted.job_name} is already Stopping; nothing to stop\n"
    as_json = cli.invoke(main, ["stop", submitted.job_name, "--output", "json"], catch_exceptions=False)
    assert json.loads(as_json.stdout) == {"job_name": submitted.job_name, "message": again.output.strip()}

    moto_job.training_job_status = moto_job.secondary_status = "Completed"
    put_model(aws_env, moto_job.model_artifacts["S3ModelArtifacts"], extra={"meta/policy.json": b"{}"})
    listed = cli.invoke(main, ["status"], catch_exceptions=False)  # every run under ./runs; fetches the model
    assert listed.exit_code == 0, listed.output
    assert f"{submitted.job_name}  Completed / Completed" in listed.output
    assert (runs / "basic" / "model" / "policy.onnx").read_bytes() == b"onnx"

    (runs / "basic" / "model" / "policy.onnx").write_bytes(b"stale")
    fetched = cli.invoke(main, ["download", submitted.job_name], catch_exceptions=False)
    assert fetched.exit_code == 0, fetched.output
    assert (runs / "basic" / "model" / "policy.onnx").read_bytes() == b"onnx"
    assert (runs / "basic" / "model" / "meta" / "policy.json").is_file()
    fetched = cli.invoke(main, ["download", submitted.job_name, "--output", "json"], catch_exceptions=False)
    assert json.loads(fetched.stdout) == {"job_name": submitted.job_name, "run_dir": "runs/basic", "model_dir": "runs/basic/model"}
    assert json.loads((runs / "basic" / "job.json").read_text())["model_downloaded"]["from"].endswith("output/model.tar.gz")


def test_status_of_a_spec_finds_its_jobs_by_run_id_tag(aws_env: AwsTestEnv, runs: Path) -> None:
    first, second = submit_basic(runs, "first"), submit_basic(runs, "second")
    other_job, other_spec = planned(BASIC_PPO, ["algorithm.hyperparameters.lr=0.001"])
    backend.submit(other_job, other_spec, run_dir=runs / "other", echo=quiet)

    shown = CliRunner().invoke(main, ["status", str(BASIC_PPO), "--output", "json", "--no-download"], catch_exceptions=False)

    assert shown.exit_code == 0, shown.output
    assert sorted(row["job_name"] for row in json.loads(shown.output)) == sorted([first.job_name, second.job_name])


def test_logs_prints_the_jobs_cloudwatch_lines(aws_env: AwsTestEnv, runs: Path) -> None:
    submitted = submit_basic(runs)
    logs = aws_env.client("logs")
    logs.create_log_group(logGroupName=backend.LOG_GROUP)
    stream = f"{submitted.job_name}/algo-1-1700000000"
    logs.create_log_stream(logGroupName=backend.LOG_GROUP, logStreamName=stream)
    lines = ["starting Ray", "rlrunner-metrics iteration=1 timesteps=500 episode_return_mean=-0.42", "done"]
    logs.put_log_events(logGroupName=backend.LOG_GROUP, logStreamName=stream,
                        logEvents=[{"timestamp": now_ms() + i, "message": line} for i, line in enumerate(lines)])

    shown = CliRunner().invoke(main, ["logs", submitted.job_name], catch_exceptions=False)

    assert shown.exit_code == 0, shown.output
    assert shown.output.splitlines() == lines
    as_json = CliRunner().invoke(main, ["logs", submitted.job_name, "--output", "json"], catch_exceptions=False)
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == [{"job_name": submitted.job_name, "line": line} for line in lines]


def test_follow_job_prints_progress_then_wait_downloads_the_model(aws_env: AwsTestEnv, runs: Path) -> None:
    submitted = submit_basic(runs)
    moto_job = aws_env.training_job(submitted.job_name)
    moto_job.training_job_status, moto_job.secondary_status = "InProgress", "Starting"
    logs = aws_env.client("logs")
    logs.create_log_group(logGroupName=backend.LOG_GROUP)
    stream = f"{submitted.job_name}/algo-1-1"
    logs.create_log_stream(logGroupName=backend.LOG_GROUP, logStreamName=stream)
    steps = iter([
        ("Training", "rlrunner-metrics iteration=1 timesteps=500 episode_return_mean=-0.5 episode_return_max=0.2"),
        ("Training", "rlrunner-metrics iteration=2 timesteps=1000 episode_return_mean=0.61 episode_return_max=0.93"),
        ("Completed", None),
    ])

    def advance(_: float) -> None:
        secondary, line = next(steps)
        moto_job.secondary_status = secondary
        if secondary == "Completed":
            moto_job.training_job_status = "Completed"
            put_model(aws_env, moto_job.model_artifacts["S3ModelArtifacts"])
        if line:
            logs.put_log_events(logGroupName=backend.LOG_GROUP, logStreamName=stream,
                                logEvents=[{"timestamp": now_ms(), "message": line}])

    printed: list[str] = []
    ctx = aws.connect()
    metrics_csv = runs / "basic" / "metrics.csv"
    description = backend.follow_job(ctx, submitted.job_name, poll_s=0, echo=printed.append, sleep=advance, metrics_csv=metrics_csv)
    result = backend.finish(ctx, description, runs / "basic", echo=printed.append)

    progress = [line.split(" ", 1)[1].strip() for line in printed if "iteration" in line]
    assert progress == ["iteration 1  timesteps 500  return -0.5  max 0.2", "iteration 2  timesteps 1000  return 0.61  max 0.93"]
    statuses = [line.split(": ", 1)[1] for line in printed if submitted.job_name + ":" in line]
    assert statuses == ["InProgress / Starting", "InProgress / Training", "Completed / Completed"]
    assert (result.status, result.model_dir) == ("Completed", runs / "basic" / "model")
    assert (runs / "basic" / "model" / "policy.onnx").read_bytes() == b"onnx"
    blank = "," * (len(METRIC_NAMES) - 4)
    assert metrics_csv.read_text().splitlines()[1:] == [f"1,500,-0.5,0.2{blank}", f"2,1000,0.61,0.93{blank}"]


def test_a_used_run_dir_needs_resume_which_reuses_the_checkpoints(aws_env: AwsTestEnv, runs: Path) -> None:
    job, spec = planned(BASIC_PPO, ["compute.spot.max_wait=7200"])
    first = backend.submit(job, spec, run_dir=runs / "spot", echo=quiet)
    assert {"job.json", "spec.yaml", "spec_hash"} <= {path.name for path in (runs / "spot").iterdir()}
    with pytest.raises(UsageError, match="the run directory exists; continue it with --resume, replace it with --force, or pick another with --run-dir$"):
        backend.submit(job, spec, run_dir=runs / "spot", echo=quiet)
    printed: list[str] = []

    second = backend.submit(job, spec, run_dir=runs / "spot", resume=True, echo=printed.append)

    checkpoint = f"s3://{DEFAULT_BUCKET}/rlrunner/checkpoints/{first.job_name}/"
    description = aws_env.client("sagemaker").describe_training_job(TrainingJobName=second.job_name)
    assert description["CheckpointConfig"]["S3Uri"] == checkpoint
    assert printed[0] == f"resuming from the checkpoints in {checkpoint}"
    record = json.loads((runs / "spot" / "job.json").read_text())
    assert (record["job_name"], record["previous_jobs"]) == (second.job_name, [first.job_name])
    other_job, other_spec = planned(BASIC_PPO, ["compute.spot.max_wait=7200", "algorithm.hyperparameters.lr=0.001"])
    with pytest.raises(UsageError, match=r"--resume: the spec differs from the run's in algorithm.hyperparameters.lr 0.0001 -> 0.001;"):
        backend.submit(other_job, other_spec, run_dir=runs / "spot", resume=True, echo=quiet)
    longer_job, longer_spec = planned(BASIC_PPO, ["compute.spot.max_wait=7200", "training.stop.timesteps=20000"])
    said: list[str] = []
    backend.submit(longer_job, longer_spec, run_dir=runs / "spot", resume=True, echo=said.append)
    assert said[0] == f"continuing the run in {runs / 'spot'} as run {longer_job.run_id}: training.stop.timesteps 10000 -> 20000"
    assert json.loads((runs / "spot" / "job.json").read_text())["run_id"] == longer_job.run_id


def test_submit_wait_returns_the_final_status(aws_env: AwsTestEnv, runs: Path) -> None:
    job, spec = planned(BASIC_PPO)
    printed: list[str] = []

    def session_with_output() -> aws.AwsContext:
        ctx = aws.connect()

        def job_writes_its_model(params: dict[str, Any], **_: Any) -> None:
            put_model(aws_env, backend.model_artifact_uri(params["OutputDataConfig"]["S3OutputPath"], params["TrainingJobName"]))

        ctx.boto.events.register("provide-client-params.sagemaker.CreateTrainingJob", job_writes_its_model)
        return ctx

    result = backend.submit(job, spec, run_dir=runs / "w", wait=True, poll_s=0, session_factory=session_with_output, echo=printed.append)

    assert (result.status, result.model_dir) == ("Completed", runs / "w" / "model")
    assert (runs / "w" / "model" / "policy.onnx").is_file()
    assert any(line.endswith(f"model of {result.job_name} downloaded to {runs / 'w' / 'model'}") for line in printed)


def test_sweep_backend_runs_a_point_as_a_job_and_then_skips_it(aws_env: AwsTestEnv, runs: Path) -> None:
    from rlrunner.sweep import SweepPoint, sagemaker_backend

    _, spec = planned(BASIC_PPO, ["algorithm.hyperparameters.lr=0.001"])
    point = SweepPoint(0, {"algorithm.hyperparameters.lr": 0.001}, spec)

    def session_with_output() -> aws.AwsContext:
        ctx = aws.connect()

        def job_writes_its_model(params: dict[str, Any], **_: Any) -> None:
            put_model(aws_env, backend.model_artifact_uri(params["OutputDataConfig"]["S3OutputPath"], params["TrainingJobName"]), evaluation={"mean": 0.9})

        ctx.boto.events.register("provide-client-params.sagemaker.CreateTrainingJob", job_writes_its_model)
        return ctx

    launch, finished = sagemaker_backend(ROOT / "experiments", echo=quiet, runs_root=runs, poll_s=0, session_factory=session_with_output)
    assert finished(point) is None

    result = launch(point)

    assert (result.status, result.mean_return, result.message) == ("finished", 0.9, "")
    assert result.run_dir == str(runs / f"basic-ppo-{run_id(spec)}")
    skipped = finished(point)
    assert skipped is not None and skipped.status == "skipped"


# --- bad input and AWS failures: one line, exit 4, nothing half-submitted without saying so ----------------


def run_cli(args: list[str]) -> Any:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def nothing_created(env: AwsTestEnv) -> bool:
    jobs = env.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    buckets = {bucket["Name"] for bucket in env.client("s3").list_buckets()["Buckets"]}
    objects = [env.client("s3").list_objects_v2(Bucket=bucket).get("KeyCount", 0) for bucket in buckets]
    return not jobs and not any(objects)


def test_missing_credentials_is_a_clear_error(aws_env: AwsTestEnv, runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    job, spec = planned(BASIC_PPO)
    with pytest.raises(aws.AwsError) as error:
        backend.submit(job, spec, run_dir=runs / "r", echo=quiet)
    assert str(error.value) == (
        "AWS credentials: none found (set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run `aws configure`)"
    )
    shown = run_cli(["status", "some-job"])
    assert (shown.exit_code, shown.output) == (4, str(error.value) + "\n")


def test_missing_role_is_a_clear_error(aws_env: AwsTestEnv, runs: Path) -> None:
    job, spec = planned(BASIC_PPO, environ={})
    assert job.estimator["role"] is None
    with pytest.raises(aws.AwsError) as error:
        backend.submit(job, spec, run_dir=runs / "r", echo=quiet)
    assert str(error.value) == (
        "compute.role: no IAM role for the training job: set compute.role in the spec or $SAGEMAKER_ROLE "
        "(the current AWS identity arn:aws:sts::123456789012:user/moto is not a role)"
    )
    assert not (runs / "r").exists()


def test_role_of_an_assumed_role_identity_is_used() -> None:
    assert aws.role_from_identity("arn:aws:sts::123456789012:assumed-role/SageMakerRole/SageMaker") == (
        "arn:aws:iam::123456789012:role/SageMakerRole"
    )
    assert aws.role_from_identity("arn:aws:iam::123456789012:user/alice") is None


def test_output_bucket_that_does_not_exist_stops_before_anything_is_created(aws_env: AwsTestEnv, runs: Path) -> None:
    aws_env.client("s3").delete_bucket(Bucket=aws_env.bucket)
    job, spec = planned(BASIC_PPO, ["compute.output_path=s3://no-such-bucket/out"])
    with pytest.raises(aws.AwsError, match=r"^compute\.output_path: bucket no-such-bucket does not exist$"):
        backend.submit(job, spec, run_dir=runs / "r", echo=quiet)
    assert nothing_created(aws_env)


def test_s3_binary_that_does_not_exist_stops_before_anything_is_created(aws_env: AwsTestEnv, runs: Path) -> None:
    uri = f"s3://{aws_env.bucket}/builds/Game.x86_64"
    job, spec = planned(BASIC_PPO, ["environment.name=null", f"environment.binary={uri}"])
    with pytest.raises(aws.AwsError) as error:
        backend.submit(job, spec, run_dir=runs / "r", echo=quiet)
    assert str(error.value) == f"environment.binary: {uri} does not exist"
    assert nothing_created(aws_env)


def throttled_session(times: int, counter: list[int]) -> Callable[[], aws.AwsContext]:
    def factory() -> aws.AwsContext:
        ctx = aws.connect()
        ctx.boto.events.register("before-send.sagemaker.CreateTrainingJob", throttle(times, counter))
        return ctx

    return factory


def test_throttling_is_retried_with_backoff(aws_env: AwsTestEnv, runs: Path) -> None:
    job, spec = planned(BASIC_PPO)
    attempts: list[int] = []
    submitted = backend.submit(job, spec, run_dir=runs / "r", session_factory=throttled_session(2, attempts), echo=quiet)
    assert len(attempts) == 3
    assert aws_env.client("sagemaker").describe_training_job(TrainingJobName=submitted.job_name)["TrainingJobStatus"]


def test_throttling_that_persists_says_what_was_left_behind(aws_env: AwsTestEnv, runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    job, spec = planned(binary_spec(tmp_path))
    attempts: list[int] = []
    with pytest.raises(aws.AwsError) as error:
        backend.submit(job, spec, run_dir=runs / "r", session_factory=throttled_session(99, attempts), echo=quiet)
    digest = backend.folder_digest(tmp_path / "build")
    message = str(error.value)
    assert len(attempts) == 2
    assert message.startswith(
        "SageMaker CreateTrainingJob: throttled by AWS (ThrottlingException: Rate exceeded) after 2 attempts; "
        "try again later or raise AWS_MAX_ATTEMPTS; no training job basic-ppo-"
    )
    assert message.endswith(
        f"was created, but these exist: player build s3://{DEFAULT_BUCKET}/rlrunner/binaries/{digest}/, "
        f"source s3://{DEFAULT_BUCKET}/{message.split('no training job ')[1].split(' ')[0]}/source/sourcedir.tar.gz"
    )
    assert "\n" not in message
    assert not aws_env.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert not (runs / "r" / "job.json").exists()


def test_errors_reach_the_cli_as_exit_4(aws_env: AwsTestEnv, runs: Path) -> None:
    shown = run_cli(["stop", "no-such-job"])
    assert (shown.exit_code, shown.output) == (4, "training job no-such-job: not found in us-east-1\n")
    (runs / "local-run").mkdir(parents=True)
    empty = run_cli(["download", str(runs / "local-run")])
    assert (empty.exit_code, empty.output) == (4, f"{runs / 'local-run' / 'job.json'}: no SageMaker job recorded in this run directory\n")


def test_image_build_without_docker_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    shown = run_cli(["image", "build"])
    assert (shown.exit_code, shown.output) == (4, "docker: not found on PATH (install Docker to build or push the image)\n")


def fake_docker(folder: Path) -> Path:
    """A `docker` on PATH that answers like a BuildKit client, records its arguments and prints a line."""
    folder.mkdir(parents=True, exist_ok=True)
    docker = folder / "docker"
    docker.write_text(f'#!/bin/sh\necho "$@" >> {folder / "calls"}\necho "docker says $1"\n')
    docker.chmod(0o755)
    return folder / "calls"


def test_image_build_and_push_output_json(aws_env: AwsTestEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    calls = fake_docker(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:/usr/bin:/bin")
    built = run_cli(["image", "build", "--tag", "rlrunner:test", "--output", "json"])
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout) == {"tag": "rlrunner:test"}
    pushed = run_cli(["image", "push", "--tag", "rlrunner:test", "--output", "json"])
    assert pushed.exit_code == 0, pushed.output
    uri = json.loads(pushed.stdout)["image"]
    assert uri.endswith(".dkr.ecr.us-east-1.amazonaws.com/rlrunner:test")
    assert "+ docker push " + uri in pushed.stderr
    verbs = [line.split()[0] for line in calls.read_text().splitlines()]
    assert verbs == ["buildx", "build", "login", "tag", "push"]
    assert capfd.readouterr().out.count("docker says") == 0  # docker's own lines went to stderr, not stdout
    text = run_cli(["image", "push", "--tag", "rlrunner:test"])
    assert text.stdout.splitlines()[-1] == uri


# --- pure pieces ----------------------------------------------------------------------------------------------


def test_expand_image_only_expands_bare_names() -> None:
    assert backend.expand_image("rlrunner:0.1.0", "123456789012", "eu-west-1") == "123456789012.dkr.ecr.eu-west-1.amazonaws.com/rlrunner:0.1.0"
    assert backend.expand_image("111.dkr.ecr.us-east-1.amazonaws.com/x:1", "123456789012", "eu-west-1") == "111.dkr.ecr.us-east-1.amazonaws.com/x:1"
    assert backend.expand_image("rl:1", "123456789012", "cn-north-1").endswith(".amazonaws.com.cn/rl:1")


def test_telemetry_stays_off_unless_the_user_config_decides() -> None:
    assert aws.telemetry_config({})["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is True
    user = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": False}}}}
    assert aws.telemetry_config(user)["SageMaker"]["PythonSDK"]["Modules"]["TelemetryOptOut"] is False


def test_retry_config_follows_the_aws_variables() -> None:
    assert aws.retry_config({}) == {"mode": "standard", "total_max_attempts": 8}
    assert aws.retry_config({"AWS_RETRY_MODE": "adaptive", "AWS_MAX_ATTEMPTS": "3"}) == {"mode": "adaptive", "total_max_attempts": 3}


def test_make_job_name_fits_sagemakers_limit() -> None:
    import datetime as dt

    name = backend.make_job_name("a" * 39, dt.datetime(2026, 1, 2, 3, 4, 5, 678000))
    assert name == "a" * 39 + "-2026-01-02-03-04-05-678" and len(name) == 63

