"""Deploy a run's exported policy to a SageMaker real-time endpoint; predict through it; take it down.

`deploy`: the model artifact (a SageMaker run's `model.tar.gz`, or the local `model/` packaged and uploaded
to the session's default bucket), the rlrunner image (the training image: it serves with `serve`), then the
SDK's `Model.deploy` creates the model, the endpoint config and the endpoint. `predict` calls
InvokeEndpoint; `undeploy` deletes the endpoint, its config and its models. Every AWS failure is an
`AwsError` (exit 4) that says where, then what.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import re
import sys
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from rlrunner import aws
from rlrunner.aws import (
    AwsContext,
    AwsError,
    aws_errors,
    check_s3_object,
    ensure_default_bucket,
    error_code,
    expand_image,
    resolve_role,
)
from rlrunner.contract import identity
from rlrunner.contract.model_dir import EXPERIMENT_FILE
from rlrunner.contract.run_dir import DEPLOYMENT_FILE, JOB_FILE, SPEC_FILE, RunDir, atomic_write_json
from rlrunner.contract.sagemaker_container import DEFAULT_IMAGE
from rlrunner.policy import PolicyError, check_model_dir
from rlrunner.schema import NAME_PATTERN, RESERVED_TAG_PREFIX, ComputeSpec, DeploySpec, ExperimentSpec

MODEL_PREFIX = "rlrunner/models"
MAX_NAME = 63
WAIT_POLL_S = 15.0
WAIT_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class DeploySource:
    """What a run dir says about deploying it: identity, artifact, image, role and the deploy block."""

    run_dir: Path
    name: str
    run_id: str
    deploy: DeploySpec
    compute: ComputeSpec
    model_dir: Path | None
    model_artifact: str | None
    image_uri: str | None
    role: str | None


@dataclass(frozen=True)
class Deployment:
    """The SageMaker resources of one deployment (what `deployment.json` records)."""

    endpoint_name: str
    endpoint_config_name: str
    model_name: str
    model_data: str
    image_uri: str
    role: str
    region: str
    instance_type: str
    instance_count: int
    status: str
    created_at: str


# --- reading the run dir (pure apart from reading files) ------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PolicyError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected a JSON object")
    return data


def read_resolved_spec(run_dir: Path) -> ExperimentSpec | None:
    """The resolved spec a run dir keeps (spec.yaml), or None when it keeps none."""
    from pydantic import ValidationError

    path = run_dir / SPEC_FILE
    if not path.is_file():
        return None
    try:
        return ExperimentSpec.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as error:
        raise PolicyError(f"{path}: not a valid resolved spec ({str(error).splitlines()[0]})") from None


def read_source(run_dir: Path) -> DeploySource:
    """What to deploy from a run dir: its spec (deploy and compute blocks), job record and model."""
    spec = read_resolved_spec(run_dir)
    record = _read_json(run_dir / JOB_FILE) if (run_dir / JOB_FILE).is_file() else {}
    model_dir = RunDir(run_dir).model if RunDir(run_dir).model.is_dir() else None
    artifact = record.get("model_artifact")
    if model_dir is None and not artifact:
        raise PolicyError(f"{run_dir}: nothing to deploy (no model/ and no SageMaker job in {JOB_FILE})")
    if model_dir is not None and not artifact:
        check_model_dir(model_dir)
    experiment = _read_json(model_dir / EXPERIMENT_FILE) if model_dir and (model_dir / EXPERIMENT_FILE).is_file() else {}
    planned = record.get("plan", {}).get("experiment", {})
    name = spec.name if spec else str(experiment.get("name") or planned.get("name") or "")
    run_id = identity.run_id(spec) if spec else str(experiment.get("run_id") or record.get("run_id") or "")
    if not name or not run_id:
        raise PolicyError(f"{run_dir}: cannot tell the experiment's name and run id (no resolved spec, {EXPERIMENT_FILE} or {JOB_FILE})")
    return DeploySource(
        run_dir=run_dir,
        name=name,
        run_id=run_id,
        deploy=spec.deploy if spec else DeploySpec(),
        compute=spec.compute if spec else ComputeSpec(),
        model_dir=model_dir,
        model_artifact=str(artifact) if artifact else None,
        image_uri=record.get("image_uri"),
        role=record.get("role"),
    )


def endpoint_name_for(source: DeploySource, override: str | None = None) -> str:
    """`--endpoint-name`, else deploy.endpoint_name, else `<experiment name>-<run id>`."""
    name = override or source.deploy.endpoint_name or f"{source.name}-{source.run_id}"[:MAX_NAME].rstrip("-")
    if len(name) > MAX_NAME or not re.match(NAME_PATTERN, name):
        raise PolicyError(f"endpoint name: {name!r} must be 1-63 letters, digits or hyphens, starting and ending with a letter or digit")
    return name


def resource_name(base: str, now: dt.datetime) -> str:
    """`<base>-<YYYYmmdd-HHMMSS>` within SageMaker's 63 characters (model and endpoint-config names)."""
    stamp = now.strftime("%Y%m%d-%H%M%S")
    return f"{base[: MAX_NAME - len(stamp) - 1].rstrip('-')}-{stamp}"


def package_model(model_dir: Path) -> bytes:
    """`model.tar.gz` of a model dir, files at the archive root (SageMaker unpacks it into /opt/ml/model); reproducible."""
    check_model_dir(model_dir)
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as zipped, tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in model_dir.rglob("*") if p.is_file() and not p.name.startswith(".")):
            info = tarfile.TarInfo(path.relative_to(model_dir).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as handle:
                tar.addfile(info, handle)
    return buffer.getvalue()


# --- AWS edges ----------------------------------------------------------------------------------------


def upload_model(ctx: AwsContext, source: DeploySource, bucket: str, *, echo: Callable[[str], None] = print) -> str:
    """Package the run's model dir and upload it to `s3://<bucket>/rlrunner/models/<name>-<run id>/model.tar.gz`."""
    assert source.model_dir is not None
    archive = package_model(source.model_dir)
    key = f"{MODEL_PREFIX}/{source.name}-{source.run_id}/model.tar.gz"
    with aws_errors(f"s3://{bucket}/{key}: upload"):
        ctx.client("s3").put_object(Bucket=bucket, Key=key, Body=archive, ContentType="application/gzip")
    uri = f"s3://{bucket}/{key}"
    echo(f"uploaded {source.model_dir} ({len(archive):,} bytes) to {uri}")
    return uri


def _endpoint_exists(ctx: AwsContext, name: str) -> bool:
    try:
        with aws_errors(f"endpoint {name}"):
            ctx.client("sagemaker").describe_endpoint(EndpointName=name)
    except AwsError as error:
        if _not_found(error):
            return False
        raise
    return True


def _not_found(error: BaseException) -> bool:
    cause = error.__cause__ or error
    return error_code(cause) in ("ValidationException", "ResourceNotFound") and "not find" in str(cause).lower()


def deploy(
    run_dir: Path,
    *,
    endpoint_name: str | None = None,
    wait: bool = True,
    poll_s: float = WAIT_POLL_S,
    timeout_s: float = WAIT_TIMEOUT_S,
    session_factory: Callable[[], AwsContext] | None = None,
    model_factory: Callable[..., Any] | None = None,
    echo: Callable[[str], None] = print,
) -> Deployment:
    """Create the SageMaker model, endpoint config and endpoint for a run; record them in `deployment.json`."""
    source = read_source(run_dir)
    endpoint = endpoint_name_for(source, endpoint_name)
    ctx = (session_factory or aws.connect)()
    # preflight: nothing is uploaded or created until these pass
    if _endpoint_exists(ctx, endpoint):
        raise AwsError(f"endpoint {endpoint}: already exists in {ctx.region} (rlrunner undeploy {endpoint}, or pass --endpoint-name)")
    role = resolve_role(ctx, source.compute.role or source.role or _environ_role())
    image_uri = source.image_uri or expand_image(source.compute.image or DEFAULT_IMAGE, ctx.account_id, ctx.region)
    bucket = ensure_default_bucket(ctx)
    if source.model_artifact:
        check_s3_object(ctx.client("s3"), source.model_artifact, f"{run_dir / JOB_FILE}: model_artifact")
        model_data = source.model_artifact
    else:
        model_data = upload_model(ctx, source, bucket, echo=echo)

    now = dt.datetime.now(dt.UTC)
    model_name = resource_name(endpoint, now)
    session = ctx.sagemaker_session(bucket)
    factory = model_factory or aws.import_sagemaker().model.Model
    model = factory(
        image_uri=image_uri,
        model_data=model_data,
        role=role,
        name=model_name,
        env={"RLRUNNER_RUN_ID": source.run_id},
        sagemaker_session=session,
    )
    tags = [{"Key": f"{RESERVED_TAG_PREFIX}run-id", "Value": source.run_id}]
    deploy_spec = source.deploy
    try:
        with aws_errors(f"endpoint {endpoint}: create"):
            model.deploy(
                initial_instance_count=deploy_spec.instance_count,
                instance_type=deploy_spec.instance_type,
                endpoint_name=endpoint,
                tags=tags,
                wait=False,
            )
    except AwsError as error:
        raise AwsError(f"{error} (model {model_name} may have been created: aws sagemaker delete-model --model-name {model_name})") from None
    except (TypeError, ValueError) as error:  # the SDK's own validation
        raise AwsError(f"endpoint {endpoint}: Model.deploy: {error}") from None
    echo(f"creating endpoint {endpoint} ({deploy_spec.instance_count} x {deploy_spec.instance_type}, model {model_name}, {ctx.region})")
    description = describe_endpoint(ctx, endpoint)
    deployment = Deployment(
        endpoint_name=endpoint,
        endpoint_config_name=str(description["EndpointConfigName"]),
        model_name=model_name,
        model_data=model_data,
        image_uri=image_uri,
        role=role,
        region=ctx.region,
        instance_type=deploy_spec.instance_type,
        instance_count=deploy_spec.instance_count,
        status=str(description["EndpointStatus"]),
        created_at=now.isoformat(),
    )
    write_deployment(run_dir, deployment)  # recorded before waiting: a timeout still leaves the names
    if wait:
        description = wait_for_endpoint(ctx, endpoint, poll_s=poll_s, timeout_s=timeout_s, echo=echo)
        deployment = replace(deployment, status=str(description["EndpointStatus"]))
        write_deployment(run_dir, deployment)
    return deployment


def _environ_role() -> str | None:
    return os.environ.get("SAGEMAKER_ROLE") or None


def write_deployment(run_dir: Path, deployment: Deployment) -> Path:
    """Record the deployment in `<run dir>/deployment.json` (atomically)."""
    path = atomic_write_json(run_dir / DEPLOYMENT_FILE, asdict(deployment))
    return path


def describe_endpoint(ctx: AwsContext, endpoint: str) -> dict[str, Any]:
    """DescribeEndpoint, 'not found' as a clear AwsError."""
    try:
        with aws_errors(f"endpoint {endpoint}"):
            return dict(ctx.client("sagemaker").describe_endpoint(EndpointName=endpoint))
    except AwsError as error:
        if _not_found(error):
            raise AwsError(f"endpoint {endpoint}: not found in {ctx.region}") from None
        raise


def wait_for_endpoint(
    ctx: AwsContext, endpoint: str, *, poll_s: float = WAIT_POLL_S, timeout_s: float = WAIT_TIMEOUT_S, echo: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll until the endpoint is InService (AwsError if it fails or the time runs out)."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        description = describe_endpoint(ctx, endpoint)
        status = str(description["EndpointStatus"])
        if status != last:
            echo(f"endpoint {endpoint}: {status}")
            last = status
        if status == "InService":
            return description
        if status in ("Failed", "OutOfService", "Deleting"):
            reason = description.get("FailureReason")
            raise AwsError(f"endpoint {endpoint}: {status}" + (f": {reason}" if reason else ""))
        if time.monotonic() > deadline:
            raise AwsError(f"endpoint {endpoint}: still {status} after {timeout_s:.0f} s (it keeps being created; rlrunner undeploy {endpoint} removes it)")
        sleep(poll_s)


def parse_observations(text: str) -> Any:
    """`--observations`: a JSON batch `[[...], ...]`, `@FILE` holding one, or `-` for stdin."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as error:
            raise PolicyError(f"--observations: {error}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise PolicyError(f"--observations: not JSON ({error})") from None
    if isinstance(data, dict):
        return data  # a whole payload in any accepted form
    if not isinstance(data, list) or not data or not all(isinstance(row, list) for row in data):
        raise PolicyError("--observations: expected a batch [[...], ...] (a list of observations)")
    return {"observations": data}


def predict(ctx: AwsContext, endpoint: str, payload: Mapping[str, Any], returns: tuple[str, ...] = ()) -> dict[str, Any]:
    """InvokeEndpoint with a JSON payload; the endpoint's JSON answer."""
    body = dict(payload)
    if returns:
        body["return"] = list(returns)
    client = ctx.client("sagemaker-runtime")
    try:
        with aws_errors(f"endpoint {endpoint}: InvokeEndpoint"):
            response = client.invoke_endpoint(
                EndpointName=endpoint, ContentType="application/json", Accept="application/json", Body=json.dumps(body).encode()
            )
    except AwsError as error:
        if _not_found(error):
            raise AwsError(f"endpoint {endpoint}: not found in {ctx.region}") from None
        raise
    raw = response["Body"].read()
    try:
        answer = json.loads(raw)
    except json.JSONDecodeError:
        raise AwsError(f"endpoint {endpoint}: the answer is not JSON ({raw[:200]!r})") from None
    if not isinstance(answer, dict):
        raise AwsError(f"endpoint {endpoint}: expected a JSON object, got {raw[:200]!r}")
    return answer


def undeploy(ctx: AwsContext, endpoint: str, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Delete the endpoint, its endpoint config and its models; return what was deleted."""
    description = describe_endpoint(ctx, endpoint)
    config_name = str(description["EndpointConfigName"])
    sagemaker = ctx.client("sagemaker")
    with aws_errors(f"endpoint config {config_name}"):
        variants = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"]
    models = sorted({str(variant["ModelName"]) for variant in variants})
    with aws_errors(f"endpoint {endpoint}: delete"):
        sagemaker.delete_endpoint(EndpointName=endpoint)
    echo(f"deleted endpoint {endpoint}")
    with aws_errors(f"endpoint config {config_name}: delete"):
        sagemaker.delete_endpoint_config(EndpointConfigName=config_name)
    echo(f"deleted endpoint config {config_name}")
    for model in models:
        with aws_errors(f"model {model}: delete"):
            sagemaker.delete_model(ModelName=model)
        echo(f"deleted model {model}")
    return {"endpoint": endpoint, "endpoint_config": config_name, "models": models}
