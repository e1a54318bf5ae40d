"""SageMaker backend: submit a JobPlan as an `RLEstimator` training job, follow it, stop it, fetch its model.

The plan (rlrunner.runner) is pure; this module fills in what only AWS knows (role, account, default bucket),
uploads what must be uploaded, and calls the SDK through `submit`, which takes its collaborators (session
factory, estimator factory) as parameters. Every AWS failure becomes `AwsError` (one line, exit 4), and a
failure after something was uploaded says what exists.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import json
import secrets
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlrunner import aws
from rlrunner.aws import (
    AwsContext,
    AwsError,
    aws_errors,
    check_bucket,
    check_s3_object,
    ensure_default_bucket,
    error_code,
    expand_image,
    parse_s3_uri,
    resolve_role,
)
from rlrunner.contract.cluster_env import AUTH_TOKEN_PLACEHOLDER, AUTH_TOKEN_VAR
from rlrunner.contract.identity import describe_changes, hash_identity, run_identity
from rlrunner.contract.metrics import parse_metrics_line
from rlrunner.contract.run_dir import (
    JOB_FILE,
    METRICS_FILE,
    RUNS_ROOT,
    MetricsTable,
    RunDir,
    atomic_write_json,
    check_outside_sources,
    check_run_dir,
    read_json,
    recorded_runs,
    write_run_files,
)
from rlrunner.runner import RUN_ID_TAG, JobPlan
from rlrunner.schema import ExperimentSpec

RECORD_FORMAT = 1
BINARY_PREFIX = "rlrunner/binaries"
CHECKPOINT_PREFIX = "rlrunner/checkpoints"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
UPLOAD_THREADS = 8
_HASH_BLOCK = 1 << 20


@dataclass(frozen=True)
class SubmittedJob:
    """A training job that was created; `status` is its final status when it was waited for."""

    job_name: str
    region: str
    run_dir: Path
    console_url: str
    status: str | None = None
    failure_reason: str | None = None
    model_dir: Path | None = None


@dataclass(frozen=True)
class BinaryUpload:
    """Where a local player build lives on S3, and whether this submission uploaded it."""

    uri: str
    digest: str
    uploaded: bool
    files: int
    bytes: int


# --- pure helpers ------------------------------------------------------------------------------------










def make_job_name(base: str, now: dt.datetime) -> str:
    """`<base>-<YYYY-mm-dd-HH-MM-SS-mmm>` like the SDK's `name_from_base` (at most 63 characters)."""
    stamp = now.strftime("%Y-%m-%d-%H-%M-%S-") + f"{now.microsecond // 1000:03d}"
    return f"{base[: 63 - len(stamp) - 1]}-{stamp}"


def console_url(region: str, job_name: str) -> str:
    """The SageMaker console page of a training job."""
    domain = "amazonaws.cn" if region.startswith("cn-") else "aws.amazon.com"
    return f"https://{region}.console.{domain}/sagemaker/home?region={region}#/jobs/{job_name}"




def model_artifact_uri(output_path: str, job_name: str) -> str:
    """Where SageMaker puts a job's `model.tar.gz`."""
    return f"{output_path.rstrip('/')}/{job_name}/output/model.tar.gz"


def resolve_estimator_kwargs(
    planned: Mapping[str, Any], *, role: str, image_uri: str, bucket: str, job_name: str
) -> dict[str, Any]:
    """The plan's RLEstimator kwargs with what only AWS knows: role, full image URI, output and checkpoint paths."""
    kwargs = dict(planned)
    kwargs["role"] = role
    kwargs["image_uri"] = image_uri
    kwargs["output_path"] = planned.get("output_path") or f"s3://{bucket}/"
    if planned.get("tensorboard_output_config"):
        s3 = f"{str(kwargs['output_path']).rstrip('/')}/{job_name}/tensorboard"
        kwargs["tensorboard_output_config"] = {**planned["tensorboard_output_config"], "s3_output_path": s3}
    if planned.get("use_spot_instances") and not planned.get("checkpoint_s3_uri"):
        kwargs["checkpoint_s3_uri"] = f"s3://{bucket}/{CHECKPOINT_PREFIX}/{job_name}/"
    environment = dict(planned.get("environment") or {})
    if environment.get(AUTH_TOKEN_VAR) == AUTH_TOKEN_PLACEHOLDER:
        # The hosts' Ray nodes listen on the VPC: a token per job (its slot reserved by the plan) keeps others out.
        kwargs["environment"] = {**environment, AUTH_TOKEN_VAR: secrets.token_hex(32)}
    return kwargs


def summarize(description: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of DescribeTrainingJob a person (or `status --output json`) wants."""

    def when(key: str) -> str | None:
        value = description.get(key)
        return value.isoformat() if isinstance(value, dt.datetime) else (str(value) if value else None)

    metrics = {m["MetricName"]: m["Value"] for m in description.get("FinalMetricDataList", []) if "MetricName" in m}
    return {
        "job_name": description.get("TrainingJobName"),
        "status": description.get("TrainingJobStatus"),
        "secondary_status": description.get("SecondaryStatus"),
        "failure_reason": description.get("FailureReason"),
        "created": when("CreationTime"),
        "ended": when("TrainingEndTime"),
        "instance": f"{description.get('ResourceConfig', {}).get('InstanceCount', '?')} x "
        f"{description.get('ResourceConfig', {}).get('InstanceType', '?')}",
        "spot": bool(description.get("EnableManagedSpotTraining")),
        "billable_seconds": description.get("BillableTimeInSeconds"),
        "model_artifact": description.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
        "final_metrics": metrics,
    }


def format_progress(values: Mapping[str, float]) -> str:
    """One progress line from a launcher metrics line."""
    parts = []
    for name, label in (("iteration", "iteration"), ("timesteps", "timesteps"), ("episode_return_mean", "return"),
                        ("episode_return_max", "max"), ("time_s", "time_s")):
        if name in values:
            value = values[name]
            parts.append(f"{label} {int(value)}" if name in ("iteration", "timesteps") else f"{label} {value:.4g}")
    return "  ".join(parts)


# --- the player build folder: content hash and upload ---------------------------------------------------


def folder_files(folder: Path) -> list[Path]:
    """Every regular file under `folder` (symlinks to files followed), sorted by relative path."""
    return sorted((path for path in folder.rglob("*") if path.is_file()), key=lambda p: p.relative_to(folder).as_posix())


def folder_digest(folder: Path) -> str:
    """SHA-256 over each file's relative name, permission bits and bytes."""
    digest = hashlib.sha256()
    for path in folder_files(folder):
        mode = stat.S_IMODE(path.stat().st_mode)
        digest.update(f"{path.relative_to(folder).as_posix()}\0{mode:o}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            while block := handle.read(_HASH_BLOCK):
                digest.update(block)
    return digest.hexdigest()


def _listed_sizes(s3: Any, bucket: str, prefix: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            sizes[item["Key"][len(prefix):]] = int(item["Size"])
    return sizes


def upload_binary_folder(s3: Any, folder: Path, bucket: str, *, echo: Callable[[str], None] = print) -> BinaryUpload:
    """Upload a player build to `s3://<bucket>/rlrunner/binaries/<sha256>/`, unless that prefix already holds it."""
    if not folder.is_dir():
        raise AwsError(f"environment.binary: folder {folder} does not exist")
    files = folder_files(folder)
    local = {path.relative_to(folder).as_posix(): path.stat().st_size for path in files}
    digest = folder_digest(folder)
    prefix = f"{BINARY_PREFIX}/{digest}/"
    uri = f"s3://{bucket}/{prefix}"
    total = sum(local.values())
    with aws_errors(f"{uri} (player build)"):
        if _listed_sizes(s3, bucket, prefix) == local:
            echo(f"player build already on S3: {uri} ({len(files)} files, same content hash)")
            return BinaryUpload(uri, digest, False, len(files), total)
        echo(f"uploading player build {folder} ({len(files)} files, {total / 1e6:.1f} MB) to {uri}")

        def put(path: Path) -> None:
            mode = f"{stat.S_IMODE(path.stat().st_mode):o}"
            s3.upload_file(str(path), bucket, prefix + path.relative_to(folder).as_posix(), ExtraArgs={"Metadata": {"mode": mode}})

        with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            for future in [pool.submit(put, path) for path in files]:
                future.result()
    return BinaryUpload(uri, digest, True, len(files), total)


# --- preflight: everything checked before anything is uploaded or created -------------------------------










# --- the run directory's record -------------------------------------------------------------------------


def read_record(run_dir: Path) -> dict[str, Any]:
    """The job record a SageMaker run left in its run directory."""
    path = run_dir / JOB_FILE
    record = read_json(path)
    if record is None:
        raise AwsError(f"{path}: no SageMaker job recorded in this run directory")
    return record


def write_record(run_dir: Path, record: Mapping[str, Any]) -> Path:
    """Write `job.json` atomically."""
    return atomic_write_json(run_dir / JOB_FILE, dict(record))


def job_runs(runs_root: Path = RUNS_ROOT) -> list[tuple[Path, dict[str, Any]]]:
    """Every run directory under `runs_root` with a job record, newest submission first."""
    return sorted(recorded_runs(runs_root, JOB_FILE), key=lambda item: str(item[1].get("submitted_at", "")), reverse=True)


# --- submission ---------------------------------------------------------------------------------------


@dataclass
class _Progress:
    """What a submission has put on S3 so far, to say so when a later step fails."""

    created: list[str] = field(default_factory=list)

    def say(self, error: AwsError, job_name: str) -> AwsError:
        if not self.created:
            return AwsError(f"{error}; nothing was uploaded and no training job was created")
        return AwsError(f"{error}; no training job {job_name} was created, but these exist: {', '.join(self.created)}")


def _previous_checkpoint(run_dir: Path, echo: Callable[[str], None]) -> str | None:
    record = read_record(run_dir)
    uri = record.get("checkpoint_s3_uri")
    if not uri:
        echo(f"job {record.get('job_name')} kept no checkpoints (no compute.checkpoint_s3_uri or compute.spot): starting from scratch")
        return None
    return str(uri)


def _job_exists(ctx: AwsContext, job_name: str) -> bool:
    try:
        ctx.client("sagemaker").describe_training_job(TrainingJobName=job_name)
        return True
    except Exception:
        return False


def submit(
    job: JobPlan,
    spec: ExperimentSpec,
    *,
    run_dir: Path,
    spec_dir: Path = Path("."),
    wait: bool = False,
    resume: bool = False,
    logs: bool = False,
    poll_s: float = 15.0,
    session_factory: Callable[[], AwsContext] | None = None,
    estimator_factory: Callable[..., Any] | None = None,
    echo: Callable[[str], None] = print,
    invocation: Mapping[str, Any] | None = None,
) -> SubmittedJob:
    """Start the plan as a SageMaker training job (raises AwsError: exit 4); with `wait`, follow it and fetch the model.

    `invocation`: how the run was asked for (spec file, --set overrides), kept in job.json.
    """
    identity = run_identity(spec)
    changes = check_run_dir(RunDir(run_dir), identity, resume=resume, record_file=JOB_FILE)
    check_outside_sources(RunDir(run_dir), job.estimator.get("dependencies", []))
    if changes:
        echo(f"continuing the run in {run_dir} as run {job.run_id}: {describe_changes(changes)}")
    ctx = (session_factory or aws.connect)()
    s3 = ctx.client("s3")
    job_name = make_job_name(str(job.estimator["base_job_name"]), dt.datetime.now(dt.UTC))

    # preflight: nothing is uploaded or created until every check passed
    role = resolve_role(ctx, job.estimator.get("role"))
    image_uri = expand_image(str(job.estimator["image_uri"]), ctx.account_id, ctx.region)
    for key, what in (("output_path", "compute.output_path"), ("checkpoint_s3_uri", "compute.checkpoint_s3_uri")):
        if job.estimator.get(key):
            check_bucket(s3, parse_s3_uri(job.estimator[key])[0], what)
    train = (job.fit_inputs or {}).get("train")
    if spec.environment.binary_on_s3 and spec.environment.binary:
        check_s3_object(s3, spec.environment.binary, "environment.binary")
    checkpoint = _previous_checkpoint(run_dir, echo) if resume else None
    bucket = ensure_default_bucket(ctx)
    kwargs = resolve_estimator_kwargs(job.estimator, role=role, image_uri=image_uri, bucket=bucket, job_name=job_name)
    if checkpoint:
        kwargs["checkpoint_s3_uri"] = checkpoint
        echo(f"resuming from the checkpoints in {checkpoint}")
    if estimator_factory is None:
        sdk = aws.import_sagemaker()
        factory: Callable[..., Any] = sdk.rl.RLEstimator
        if kwargs.get("tensorboard_output_config"):
            from sagemaker.debugger.debugger import TensorBoardOutputConfig

            kwargs["tensorboard_output_config"] = TensorBoardOutputConfig(**kwargs["tensorboard_output_config"])
    else:
        factory = estimator_factory
    try:
        estimator = factory(sagemaker_session=ctx.sagemaker_session(bucket), **kwargs)
    except (TypeError, ValueError) as error:
        raise AwsError(f"RLEstimator: {error}") from None

    progress = _Progress()
    binary: BinaryUpload | None = None
    if train is not None and not train.startswith("s3://"):
        try:
            binary = upload_binary_folder(s3, Path(train), bucket, echo=echo)
        except AwsError as error:
            raise AwsError(f"{error}; part of the build may already be on S3 (the next run uploads it again); no training job was created") from None
        train = binary.uri
        if binary.uploaded:
            progress.created.append(f"player build {binary.uri}")
    inputs = {"train": train} if train else None
    try:
        with aws_errors("SageMaker CreateTrainingJob"):
            estimator.fit(inputs, wait=False, logs=False, job_name=job_name)
    except AwsError as error:
        if not _job_exists(ctx, job_name):  # a lost response can still have created the job
            source = getattr(getattr(estimator, "uploaded_code", None), "s3_prefix", None)
            if source:
                progress.created.append(f"source {source}")
            raise progress.say(error, job_name) from None
    except Exception as error:  # the SDK's own validation, e.g. a missing entry point
        raise progress.say(AwsError(f"RLEstimator.fit: {error}"), job_name) from None

    record = {
        "format": RECORD_FORMAT,
        "backend": "sagemaker",
        "job_name": job_name,
        "region": ctx.region,
        "account": ctx.account_id,
        "run_id": job.run_id,
        "spec_hash": hash_identity(identity),
        "name": spec.name,
        "identity": identity,
        **(invocation or {}),
        "submitted_at": dt.datetime.now(dt.UTC).isoformat(),
        "console_url": console_url(ctx.region, job_name),
        "role": role,
        "image_uri": image_uri,
        "output_path": kwargs["output_path"],
        "checkpoint_s3_uri": kwargs.get("checkpoint_s3_uri"),
        "train_channel": train,
        "binary_sha256": binary.digest if binary else None,
        "binary_uploaded": binary.uploaded if binary else False,
        "model_artifact": model_artifact_uri(kwargs["output_path"], job_name),
        "previous_jobs": _previous_jobs(run_dir),
        "plan": job.to_json(),
    }
    write_run_files(RunDir(run_dir), spec.to_data(), hash_identity(identity), spec_dir)
    write_record(run_dir, record)
    url = record["console_url"]
    echo(f"submitted training job {job_name} ({kwargs['instance_count']} x {kwargs['instance_type']}, {ctx.region})")
    echo(f"  console  {url}")
    echo(f"  follow   rlrunner status {job_name}   |   rlrunner logs {job_name} --follow   |   rlrunner stop {job_name}")
    echo(f"  run dir  {run_dir}")
    if not wait:
        return SubmittedJob(job_name, ctx.region, run_dir, url)
    description = follow_job(ctx, job_name, poll_s=poll_s, echo=echo, show_logs=logs, metrics_csv=run_dir / METRICS_FILE)
    return finish(ctx, description, run_dir, echo=echo)


def _previous_jobs(run_dir: Path) -> list[str]:
    old = read_json(run_dir / JOB_FILE)
    if old is None:
        return []
    return [*old.get("previous_jobs", []), old["job_name"]] if old.get("job_name") else list(old.get("previous_jobs", []))


def finish(ctx: AwsContext, description: Mapping[str, Any], run_dir: Path, *, echo: Callable[[str], None] = print) -> SubmittedJob:
    """After a job ended: report it and, when it completed, download its model into `run_dir/model`."""
    name = str(description["TrainingJobName"])
    status = str(description["TrainingJobStatus"])
    reason = description.get("FailureReason")
    if (run_dir / JOB_FILE).is_file():
        record = read_record(run_dir)
        if record.get("job_name") == name:
            write_record(run_dir, {**record, "final_status": status, "failure_reason": reason})
    model_dir = None
    if status == "Completed":
        model_dir = download_model(ctx, description, run_dir, echo=echo)
    else:
        echo(f"job {name} {status}" + (f": {reason}" if reason else ""))
    return SubmittedJob(name, ctx.region, run_dir, console_url(ctx.region, name), status, reason, model_dir)


# --- following, stopping, finding ---------------------------------------------------------------------------


def describe_job(ctx: AwsContext, job_name: str) -> dict[str, Any]:
    """DescribeTrainingJob, with 'not found' as a clear AwsError."""
    try:
        with aws_errors(f"training job {job_name}"):
            return dict(ctx.client("sagemaker").describe_training_job(TrainingJobName=job_name))
    except AwsError as error:
        if "Could not find" in str(error) or "ResourceNotFound" in str(error):
            raise AwsError(f"training job {job_name}: not found in {ctx.region}") from None
        raise


class LogTail:
    """New CloudWatch log lines of a training job, stream by stream (`<job>/algo-1-…`)."""

    def __init__(self, ctx: AwsContext, job_name: str) -> None:
        self.logs = ctx.client("logs")
        self.job_name = job_name
        self.tokens: dict[str, str | None] = {}

    def streams(self) -> list[str]:
        """The job's log streams (none before the instances start)."""
        from botocore.exceptions import ClientError

        try:
            response = self.logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{self.job_name}/")
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                return []
            raise AwsError(f"CloudWatch logs {LOG_GROUP}: {aws.describe_error(error)}") from None
        return sorted(stream["logStreamName"] for stream in response.get("logStreams", []))

    def poll(self) -> Iterator[str]:
        """Yield the lines written since the last poll."""
        for stream in self.streams():
            while True:
                request: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
                if self.tokens.get(stream):
                    request["nextToken"] = self.tokens[stream]
                with aws_errors(f"CloudWatch logs {LOG_GROUP}/{stream}"):
                    response = self.logs.get_log_events(**request)
                for event in response.get("events", []):
                    yield str(event.get("message", ""))
                token = response.get("nextForwardToken")
                if token == self.tokens.get(stream) or not response.get("events"):
                    self.tokens[stream] = token
                    break
                self.tokens[stream] = token


def follow_job(
    ctx: AwsContext,
    job_name: str,
    *,
    poll_s: float = 15.0,
    echo: Callable[[str], None] = print,
    show_logs: bool = False,
    sleep: Callable[[float], None] = time.sleep,
    max_polls: int | None = None,
    metrics_csv: Path | None = None,
) -> dict[str, Any]:
    """Poll a job until it ends, printing status changes and the launcher's metrics (and log lines with show_logs).

    With `metrics_csv`, each metrics line also becomes a row of that file (the local backend's metrics.csv).
    """
    table = MetricsTable(metrics_csv) if metrics_csv is not None else None
    tail = LogTail(ctx, job_name)
    last_status = None
    polls = 0
    try:
        while True:
            description = describe_job(ctx, job_name)
            status = f"{description['TrainingJobStatus']} / {description.get('SecondaryStatus', '-')}"
            if status != last_status:
                echo(f"{dt.datetime.now():%H:%M:%S} {job_name}: {status}")
                last_status = status
            for line in tail.poll():
                metrics = parse_metrics_line(line.strip())
                if metrics and table is not None:
                    table.add(metrics)
                if show_logs:
                    echo(line.rstrip())
                elif metrics:
                    echo(f"{dt.datetime.now():%H:%M:%S}   {format_progress(metrics)}")
            if description["TrainingJobStatus"] in TERMINAL_STATUSES:
                return description
            polls += 1
            if max_polls is not None and polls >= max_polls:
                return description
            sleep(poll_s)
    except KeyboardInterrupt:
        echo(f"stopped following; the job goes on: rlrunner status {job_name} / rlrunner stop {job_name}")
        raise


def stop_job(ctx: AwsContext, job_name: str) -> str:
    """Ask SageMaker to stop a job; the message says what happened (already ended is not an error)."""
    description = describe_job(ctx, job_name)
    status = description["TrainingJobStatus"]
    if status in TERMINAL_STATUSES or status == "Stopping":
        return f"training job {job_name} is already {status}; nothing to stop"
    with aws_errors(f"training job {job_name}: stop"):
        ctx.client("sagemaker").stop_training_job(TrainingJobName=job_name)
    return f"stopping training job {job_name} (SIGTERM, then the instances go after 120 s); was {status}"


def download_model(ctx: AwsContext, description: Mapping[str, Any], run_dir: Path, *, echo: Callable[[str], None] = print) -> Path:
    """Download a completed job's `model.tar.gz` and unpack it into `run_dir/model` (replacing what was there)."""
    name = description["TrainingJobName"]
    status = description["TrainingJobStatus"]
    if status != "Completed":
        raise AwsError(f"training job {name}: no model to download (status {status})")
    uri = description.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    if not uri:
        raise AwsError(f"training job {name}: DescribeTrainingJob names no model artifact")
    bucket, key = parse_s3_uri(uri)
    run_dir.mkdir(parents=True, exist_ok=True)
    archive = run_dir / "model.tar.gz.partial"
    from botocore.exceptions import ClientError

    try:
        ctx.client("s3").download_file(bucket, key, str(archive))
    except ClientError as error:
        archive.unlink(missing_ok=True)
        if error_code(error) in ("404", "NoSuchKey", "NotFound"):
            raise AwsError(f"{uri}: model artifact of job {name} does not exist") from None
        raise AwsError(f"{uri}: {aws.describe_error(error)}") from None
    target = RunDir(run_dir).model
    staging = target.with_name(f"{target.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise AwsError(f"{uri}: not a readable model.tar.gz ({error})") from None
    finally:
        archive.unlink(missing_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staging.replace(target)
    _note_download(run_dir, uri)
    echo(f"model of {name} downloaded to {target}")
    return target


def _note_download(run_dir: Path, uri: str) -> None:
    path = run_dir / JOB_FILE
    if path.is_file():
        record = json.loads(path.read_text())
        record["model_downloaded"] = {"from": uri, "at": dt.datetime.now(dt.UTC).isoformat()}
        write_record(run_dir, record)


def find_jobs_by_run_id(ctx: AwsContext, run_id: str) -> list[dict[str, Any]]:
    """Training jobs tagged with this run id (SageMaker Search on the tag), newest first."""
    request = {
        "Resource": "TrainingJob",
        "SearchExpression": {"Filters": [{"Name": f"Tags.{RUN_ID_TAG}", "Operator": "Equals", "Value": run_id}]},
    }
    jobs: list[dict[str, Any]] = []
    with aws_errors(f"SageMaker Search for tag {RUN_ID_TAG}={run_id}"):
        for page in ctx.client("sagemaker").get_paginator("search").paginate(**request):
            jobs.extend(result["TrainingJob"] for result in page.get("Results", []) if "TrainingJob" in result)
    return sorted(jobs, key=lambda job: str(job.get("CreationTime", "")), reverse=True)


def job_tags(description: Mapping[str, Any], ctx: AwsContext | None = None) -> dict[str, str]:
    """A job's tags (from a Search result, or ListTags when a DescribeTrainingJob result has none)."""
    tags = description.get("Tags")
    if tags is None and ctx is not None:
        with aws_errors(f"training job {description.get('TrainingJobName')}: tags"):
            tags = ctx.client("sagemaker").list_tags(ResourceArn=description["TrainingJobArn"]).get("Tags", [])
    return {tag["Key"]: tag["Value"] for tag in tags or []}


@dataclass(frozen=True)
class JobRef:
    """A job named on the command line, with the run directory that records it (if any)."""

    job_name: str
    run_dir: Path | None


def resolve_refs(reference: str | None, *, runs_root: Path = RUNS_ROOT) -> list[JobRef]:
    """`JOB`, `RUN_DIR` or nothing (every recorded run) as job names with their run directories."""
    if reference is None:
        return [JobRef(str(record["job_name"]), run_dir) for run_dir, record in job_runs(runs_root) if record.get("job_name")]
    path = Path(reference)
    if path.is_dir():
        return [JobRef(str(read_record(path)["job_name"]), path)]
    if path.name == JOB_FILE and path.is_file():
        return [JobRef(str(read_record(path.parent)["job_name"]), path.parent)]
    for run_dir, record in job_runs(runs_root):
        if record.get("job_name") == reference or reference in record.get("previous_jobs", []):
            return [JobRef(reference, run_dir if record.get("job_name") == reference else None)]
    return [JobRef(reference, None)]


def run_dir_for(ctx: AwsContext, ref: JobRef, description: Mapping[str, Any], *, runs_root: Path = RUNS_ROOT) -> Path:
    """Where a job's model goes: its recorded run dir, else `runs/*-<run id>` from its tag, else `runs/<job>`."""
    if ref.run_dir is not None:
        return ref.run_dir
    run_id = job_tags(description, ctx).get(RUN_ID_TAG)
    if run_id:
        matches = sorted(runs_root.glob(f"*-{run_id}"))
        if len(matches) == 1:
            return matches[0]
    return runs_root / ref.job_name


def job_status(ctx: AwsContext, ref: JobRef, *, download: bool, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """A job's status row (`rlrunner status`); with `download`, a completed job's model is fetched into its known run dir."""
    description = describe_job(ctx, ref.job_name)
    row = summarize(description)
    row["tags"] = job_tags(description, ctx)
    run_dir = run_dir_for(ctx, ref, description)
    row["run_dir"] = str(run_dir)
    model_dir = RunDir(run_dir).model
    known = ref.run_dir is not None or run_dir.is_dir()
    if download and known and row["status"] == "Completed" and not model_dir.is_dir():
        try:
            download_model(ctx, description, run_dir, echo=echo)
        except AwsError as error:  # the listing goes on; `rlrunner download` retries
            echo(f"model not downloaded: {error}")
    row["model_dir"] = str(model_dir) if model_dir.is_dir() else None
    return row
