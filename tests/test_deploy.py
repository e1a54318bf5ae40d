"""deploy / predict / undeploy with the real SageMaker SDK and boto3 against a moto server on 127.0.0.1."""

from __future__ import annotations

import io
import json
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from http_helpers import post_json, start_server, stop_server, wait_healthy
from policy_models import write_model_dir, write_policies_model_dir

from rlrunner import __version__
from rlrunner import deploy as deploying
from rlrunner.aws import AwsError, connect
from rlrunner.cli import main
from rlrunner.contract.identity import run_id
from rlrunner.loader import load_spec
from rlrunner.policy import PolicyError

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
OBS = np.eye(20)[[10, 3]].tolist()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A local run of experiments/basic_ppo.yaml: the resolved spec and the exported model."""
    spec, _ = load_spec(EXPERIMENTS / "basic_ppo.yaml")
    run = tmp_path / f"runs/{spec.name}-{run_id(spec)}"
    write_model_dir(run / "model")
    (run / "spec.yaml").write_text(yaml.safe_dump(spec.to_data(), sort_keys=False))  # as the local backend keeps it
    return run


@pytest.fixture
def captured(aws_env: Any) -> Iterator[list[dict[str, Any]]]:
    """Every SageMaker-runtime request botocore sends (method, URL, headers, body)."""
    import botocore.session

    requests: list[dict[str, Any]] = []

    def record(request: Any, **_: Any) -> None:
        requests.append({"url": request.url, "headers": dict(request.headers), "body": request.body})

    original = botocore.session.Session.create_client

    def create_client(self: Any, *args: Any, **kwargs: Any) -> Any:
        client = original(self, *args, **kwargs)
        client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", record)
        return client

    botocore.session.Session.create_client = create_client  # type: ignore[method-assign]
    try:
        yield requests
    finally:
        botocore.session.Session.create_client = original  # type: ignore[method-assign]


def test_deploy_local_run_uploads_the_model_and_creates_the_endpoint(aws_env: Any, run_dir: Path) -> None:
    deployment = deploying.deploy(run_dir, poll_s=0, echo=lambda line: None)
    name = run_dir.name
    assert deployment.endpoint_name == name
    sagemaker = aws_env.client("sagemaker")
    endpoint = sagemaker.describe_endpoint(EndpointName=name)
    assert endpoint["EndpointStatus"] == "InService"
    variants = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])["ProductionVariants"]
    assert [(v["InstanceType"], v["InitialInstanceCount"], v["ModelName"]) for v in variants] == [("ml.c5.large", 1, deployment.model_name)]
    container = sagemaker.describe_model(ModelName=deployment.model_name)["PrimaryContainer"]
    bucket = f"sagemaker-{aws_env.region}-{aws_env.account}"
    assert container["Image"] == f"{aws_env.account}.dkr.ecr.{aws_env.region}.amazonaws.com/rlrunner:{__version__}"
    assert container["ModelDataUrl"] == f"s3://{bucket}/rlrunner/models/{name}/model.tar.gz"
    archive = aws_env.client("s3").get_object(Bucket=bucket, Key=f"rlrunner/models/{name}/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        assert sorted(tar.getnames()) == ["experiment.json", "policy.json", "policy.onnx"]
        assert tar.extractfile("policy.onnx").read() == (run_dir / "model/policy.onnx").read_bytes()  # type: ignore[union-attr]
    recorded = json.loads((run_dir / "deployment.json").read_text())
    assert recorded["endpoint_name"] == name and recorded["model_data"] == container["ModelDataUrl"]


def test_deploy_uses_the_deploy_block_and_refuses_an_existing_endpoint(aws_env: Any, run_dir: Path) -> None:
    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    spec["deploy"] = {"instance_type": "ml.m5.xlarge", "instance_count": 2, "endpoint_name": "basic-endpoint"}
    (run_dir / "spec.yaml").write_text(yaml.safe_dump(spec))
    deploying.deploy(run_dir, poll_s=0, echo=lambda line: None)
    sagemaker = aws_env.client("sagemaker")
    config = sagemaker.describe_endpoint(EndpointName="basic-endpoint")["EndpointConfigName"]
    variant = sagemaker.describe_endpoint_config(EndpointConfigName=config)["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.m5.xlarge", 2)
    with pytest.raises(AwsError, match=r"^endpoint basic-endpoint: already exists in us-east-1 \(rlrunner undeploy basic-endpoint, or pass --endpoint-name\)$"):
        deploying.deploy(run_dir, echo=lambda line: None)


def test_deploy_sagemaker_run_uses_the_jobs_artifact_and_image(aws_env: Any, tmp_path: Path) -> None:
    run = tmp_path / "runs/basic-ppo-0123456789"
    run.mkdir(parents=True)
    artifact = f"s3://{aws_env.bucket}/basic-ppo-2026/output/model.tar.gz"
    aws_env.client("s3").put_object(Bucket=aws_env.bucket, Key="basic-ppo-2026/output/model.tar.gz", Body=b"archive")
    image = f"{aws_env.account}.dkr.ecr.{aws_env.region}.amazonaws.com/rlrunner:custom"
    record = {"job_name": "basic-ppo-2026", "run_id": "0123456789", "model_artifact": artifact, "image_uri": image,
              "role": aws_env.role, "plan": {"experiment": {"name": "basic-ppo"}}}
    (run / "job.json").write_text(json.dumps(record))
    deployment = deploying.deploy(run, endpoint_name="from-job", poll_s=0, echo=lambda line: None)
    assert (deployment.model_data, deployment.image_uri, deployment.role) == (artifact, image, aws_env.role)
    listed = aws_env.client("s3").list_objects_v2(Bucket=f"sagemaker-{aws_env.region}-{aws_env.account}").get("Contents", [])
    assert listed == []  # nothing uploaded


def test_deploy_refuses_a_run_dir_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=rf"^{tmp_path}: nothing to deploy \(no model/ and no SageMaker job in job.json\)$"):
        deploying.deploy(tmp_path)


def test_package_model_is_reproducible_with_files_at_the_root(run_dir: Path) -> None:
    first = deploying.package_model(run_dir / "model")
    assert first == deploying.package_model(run_dir / "model")
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        assert all("/" not in name for name in tar.getnames())


def _canned_answer(aws_env: Any, body: bytes) -> None:
    payload = {"account_id": aws_env.account, "region": aws_env.region,
               "results": [{"Body": body.decode(), "ContentType": "application/json", "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}]}
    request = urllib.request.Request(f"{aws_env.endpoint}/moto-api/static/sagemaker/endpoint-results", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


def test_predict_sends_what_the_server_accepts_and_returns_the_answer(aws_env: Any, run_dir: Path, captured: list[dict[str, Any]]) -> None:
    deploying.deploy(run_dir, endpoint_name="basic", poll_s=0, echo=lambda line: None)
    server = start_server(run_dir / "model")  # what the container would answer, from the same model
    try:
        wait_healthy(server.port)
        local = post_json(server.port, {"observations": OBS, "return": ["probabilities"]})
        _canned_answer(aws_env, local.body)  # moto cannot run the container: it returns this body
        answer = deploying.predict(connect(), "basic", {"observations": OBS}, ("probabilities",))
        assert answer == local.json()
        (sent,) = captured
        assert sent["url"] == f"{aws_env.endpoint}/endpoints/basic/invocations"
        assert sent["headers"]["Content-Type"] in (b"application/json", "application/json")  # botocore keeps bytes or str
        assert json.loads(sent["body"]) == {"observations": OBS, "return": ["probabilities"]}
        replayed = post_json(server.port, json.loads(sent["body"]))  # the request as sent, served by the real server
        assert (replayed.status, replayed.json()) == (200, answer)
    finally:
        stop_server(server.process)


def test_undeploy_deletes_endpoint_config_and_model(aws_env: Any, run_dir: Path) -> None:
    deployment = deploying.deploy(run_dir, poll_s=0, echo=lambda line: None)
    deleted = deploying.undeploy(connect(), deployment.endpoint_name, echo=lambda line: None)
    assert deleted == {"endpoint": deployment.endpoint_name, "endpoint_config": deployment.endpoint_config_name, "models": [deployment.model_name]}
    sagemaker = aws_env.client("sagemaker")
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sagemaker.list_models()["Models"] == []


def test_undeploy_unknown_endpoint_says_so(aws_env: Any) -> None:
    with pytest.raises(AwsError, match=r"^endpoint nowhere: not found in us-east-1$"):
        deploying.undeploy(connect(), "nowhere")


def test_cli_deploy_predict_undeploy(aws_env: Any, run_dir: Path) -> None:
    runner = CliRunner()
    deployed = runner.invoke(main, ["deploy", str(run_dir), "--endpoint-name", "cli-basic"])
    assert deployed.exit_code == 0, deployed.output
    assert "endpoint cli-basic InService" in deployed.output
    _canned_answer(aws_env, b'{"actions": [2, 1]}')
    predicted = runner.invoke(main, ["predict", "cli-basic", "--observations", json.dumps(OBS)])
    assert predicted.exit_code == 0, predicted.output
    assert json.loads(predicted.output) == {"actions": [2, 1]}
    removed = runner.invoke(main, ["undeploy", "cli-basic"])
    assert removed.exit_code == 0, removed.output
    assert removed.output.splitlines()[0] == "deleted endpoint cli-basic"
    as_json = runner.invoke(main, ["deploy", str(run_dir), "--endpoint-name", "cli-json", "--output", "json"])
    assert as_json.exit_code == 0, as_json.output
    deployment = json.loads(as_json.stdout)
    assert (deployment["endpoint_name"], deployment["status"]) == ("cli-json", "InService")
    deleted = json.loads(runner.invoke(main, ["undeploy", "cli-json", "--output", "json"]).stdout)
    assert deleted == {"endpoint": "cli-json", "endpoint_config": deployment["endpoint_config_name"], "models": [deployment["model_name"]]}
    again = runner.invoke(main, ["undeploy", "cli-basic"])
    assert (again.exit_code, again.output.strip()) == (4, "endpoint cli-basic: not found in us-east-1")


@pytest.mark.parametrize(
    ("observations", "message"),
    [("[[0, 1", "--observations: not JSON (Expecting ',' delimiter: line 1 column 7 (char 6))"),
     ("[1, 2]", "--observations: expected a batch [[...], ...] (a list of observations)")],
)
def test_cli_predict_checks_observations_before_calling_aws(observations: str, message: str) -> None:
    result = CliRunner().invoke(main, ["predict", "any", "--observations", observations])
    assert (result.exit_code, result.output.strip()) == (2, message)


class ScriptedEndpoints:
    """A stand-in AwsContext whose DescribeEndpoint walks through scripted statuses."""

    region = "us-east-1"

    def __init__(self, *statuses: str) -> None:
        self.statuses = list(statuses)

    def client(self, service: str) -> ScriptedEndpoints:
        return self

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:  # noqa: N803  (boto3's name)
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        return {"EndpointName": EndpointName, "EndpointStatus": status, "EndpointConfigName": "c", "FailureReason": "image not found"}


def test_wait_for_endpoint_follows_the_status_until_in_service() -> None:
    lines: list[str] = []
    ctx = ScriptedEndpoints("Creating", "Creating", "InService")
    description = deploying.wait_for_endpoint(ctx, "e", poll_s=0, echo=lines.append, sleep=lambda s: None)  # type: ignore[arg-type]
    assert description["EndpointStatus"] == "InService"
    assert lines == ["endpoint e: Creating", "endpoint e: InService"]


def test_wait_for_endpoint_reports_a_failure_and_a_timeout() -> None:
    with pytest.raises(AwsError, match=r"^endpoint e: Failed: image not found$"):
        deploying.wait_for_endpoint(ScriptedEndpoints("Creating", "Failed"), "e", poll_s=0, echo=lambda line: None, sleep=lambda s: None)  # type: ignore[arg-type]
    with pytest.raises(AwsError, match=r"^endpoint e: still Creating after 0 s \(it keeps being created; rlrunner undeploy e removes it\)$"):
        deploying.wait_for_endpoint(ScriptedEndpoints("Creating"), "e", timeout_s=0, echo=lambda line: None, sleep=lambda s: None)  # type: ignore[arg-type]


# --- a multi-policy run: one endpoint, the request names the policy ---------------------------------


@pytest.fixture
def duo_run_dir(tmp_path: Path) -> Path:
    """A local run of experiments/duo_ppo.yaml with a multi-policy model (Walker: obs 20, Discrete(3); Reacher: obs 8, Box(2))."""
    spec, _ = load_spec(EXPERIMENTS / "duo_ppo.yaml")
    run = tmp_path / f"runs/{spec.name}-{run_id(spec)}"
    write_policies_model_dir(run / "model")
    (run / "spec.yaml").write_text(yaml.safe_dump(spec.to_data(), sort_keys=False))
    return run


def test_deploy_multi_policy_run_uploads_every_policy_and_predict_names_one(aws_env: Any, duo_run_dir: Path, captured: list[dict[str, Any]]) -> None:
    runner = CliRunner()
    deployed = runner.invoke(main, ["deploy", str(duo_run_dir), "--endpoint-name", "duo"])
    assert deployed.exit_code == 0, deployed.output
    assert "  predict   rlrunner predict duo --policy Walker|Reacher --observations '[[...]]'" in deployed.output.splitlines()
    bucket = f"sagemaker-{aws_env.region}-{aws_env.account}"
    key = f"rlrunner/models/{duo_run_dir.name}/model.tar.gz"
    with tarfile.open(fileobj=io.BytesIO(aws_env.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read())) as tar:
        names = sorted(tar.getnames())
    assert names == sorted(["experiment.json", "policies.json"] + [f"policies/{p}/{f}" for p in ("Walker", "Reacher") for f in
                                                                    ("experiment.json", "policy.json", "policy.onnx")])  # fmt: skip

    server = start_server(duo_run_dir / "model")  # what the container would answer, from the same model
    try:
        wait_healthy(server.port)
        reacher = [[0.5] * 8, [-0.5] * 8]
        local = post_json(server.port, {"observations": reacher, "policy": "Reacher?team=0"})
        assert local.status == 200, local.body
        _canned_answer(aws_env, local.body)  # moto cannot run the container: it returns this body
        predicted = runner.invoke(main, ["predict", "duo", "--policy", "Reacher?team=0", "--observations", json.dumps(reacher)])
        assert predicted.exit_code == 0, predicted.output
        (sent,) = captured
        assert json.loads(sent["body"]) == {"observations": reacher, "policy": "Reacher?team=0"}
        replayed = post_json(server.port, json.loads(sent["body"]))  # the request as sent, served by the real server
        assert (replayed.status, replayed.json()) == (200, json.loads(predicted.output))
        unnamed = post_json(server.port, {"observations": reacher})
        assert unnamed.status == 400 and unnamed.json()["error"].startswith("policy: this model dir holds 2 policies")
    finally:
        stop_server(server.process)


def test_deploy_refuses_a_multi_policy_model_with_a_policy_missing_before_uploading(aws_env: Any, duo_run_dir: Path) -> None:
    (duo_run_dir / "model/policies/Reacher/policy.onnx").unlink()
    with pytest.raises(PolicyError, match=rf"^{duo_run_dir}/model: policy 'Reacher': policies/Reacher/policy.onnx missing$"):
        deploying.deploy(duo_run_dir, echo=lambda line: None)
    assert aws_env.client("sagemaker").list_models()["Models"] == []


def test_cli_predict_refuses_a_blank_policy_before_calling_aws() -> None:
    result = CliRunner().invoke(main, ["predict", "any", "--policy", " ", "--observations", json.dumps(OBS)])
    assert (result.exit_code, result.output.strip()) == (2, "--policy: expected a policy or behaviour name")
