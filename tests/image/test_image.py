"""The image for real: trained, stopped, resumed and served inside it, the way SageMaker runs it.

A training job's container is started as SageMaker starts it: `docker run --network host -v OPT_ML:/opt/ml
IMAGE train`, /opt/ml laid out from the CreateTrainingJob request the real SDK sent to a moto server on
127.0.0.1 (`write_job_config`: the SDK's serialised hyperparameters, the hosts, the channels; the `train`
channel's objects downloaded into input/data/train), the request's environment variables, and no code:
the toolkit fetches the uploaded source from its S3 URI on moto, through host networking.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from http_helpers import assert_port_free, post_json, request, start_server, stop_server, wait_healthy
from policy_models import write_model_dir
from shared import BASIC_PPO, QUICK_TRAINING

from rlrunner import aws
from rlrunner.aws import parse_s3_uri
from rlrunner.backends import sagemaker as backend
from rlrunner.contract.checkpoints import CheckpointStore, read_checkpoint
from rlrunner.contract.metrics import parse_metrics_line
from rlrunner.contract.sagemaker_container import OptMl, write_job_config
from rlrunner.envs.registry import resolve_environment
from rlrunner.loader import load_spec
from rlrunner.runner import plan
from rlrunner.unity.ports import free_port

if TYPE_CHECKING:
    from tests.conftest import AwsTestEnv

QUICK = (*QUICK_TRAINING, "training.stop.timesteps=500")


def container_name() -> str:
    return f"rlrunner-test-{uuid.uuid4().hex[:8]}"


# --- a SageMaker training job, started as the platform starts it ---------------------------------------------


def submitted_request(env: AwsTestEnv, spec: Path, overrides: tuple[str, ...], run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Submit the spec through the SageMaker backend (the real SDK, against moto); the CreateTrainingJob request it sent."""
    sent: list[dict[str, Any]] = []
    connect = aws.connect

    def connect_and_capture(**kwargs: Any) -> aws.AwsContext:
        ctx = connect(**kwargs)
        ctx.boto.events.register("before-send.sagemaker.CreateTrainingJob", lambda request, **_: sent.append(json.loads(request.body)))
        return ctx

    monkeypatch.setattr(aws, "connect", connect_and_capture)
    experiment, document = load_spec(spec, overrides, environ={})
    job = plan(experiment, spec_dir=document.base_dir, environ={"SAGEMAKER_ROLE": env.role})
    backend.submit(job, experiment, run_dir=run_dir, echo=lambda _line: None)
    (request,) = sent
    return request


def lay_out_job(root: Path, request: Mapping[str, Any], env: AwsTestEnv) -> OptMl:
    """/opt/ml as the platform prepares it for algo-1: input/config from the request, the channels' objects; no code."""
    opt_ml = OptMl(root)
    opt_ml.make()
    write_job_config(opt_ml, request)
    s3 = env.client("s3")
    for channel in request.get("InputDataConfig", []):
        bucket, prefix = parse_s3_uri(channel["DataSource"]["S3DataSource"]["S3Uri"])
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                target = opt_ml.channel(channel["ChannelName"]) / item["Key"][len(prefix) :].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(bucket, item["Key"], str(target))  # as S3 gives it: no x bit
    return opt_ml


def job_environment(request: Mapping[str, Any], env: AwsTestEnv) -> dict[str, str]:
    """The container's variables: the request's, the job name, and credentials for S3 (moto) as the role gives them."""
    return {
        **request.get("Environment", {}),
        "TRAINING_JOB_NAME": request["TrainingJobName"],
        "AWS_ENDPOINT_URL": env.endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": env.region,
    }


def docker_run_train(image: str, opt_ml: OptMl, variables: Mapping[str, str], name: str) -> subprocess.Popen[str]:
    """`docker run --network host -v OPT_ML:/opt/ml -e … IMAGE train`, its output on a pipe."""
    command = ["docker", "run", "--rm", "--name", name, "--network", "host", "--shm-size", "2g", "--volume", f"{opt_ml.root}:/opt/ml"]
    command += ["--add-host", "algo-1:127.0.0.1"]  # the toolkit waits until the job's host names resolve
    for key in sorted(variables):
        command += ["--env", key]
    return subprocess.Popen(
        [*command, image, "train"], env={**os.environ, **variables}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def player_build_spec(folder: Path) -> Path:
    """Basic as a player build in a folder beside the spec (the `train` channel)."""
    build = folder / "build"
    build.mkdir(parents=True)
    shutil.copy2(resolve_environment("Basic"), build / "Basic.x86_64")
    spec = folder / "basic_build.yaml"
    spec.write_text(BASIC_PPO.read_text().replace("  name: Basic\n", "  binary: build/Basic.x86_64\n", 1))
    return spec


@pytest.mark.parametrize("player", ["bundled", "build-in-train-channel"])
def test_image_trains_basic_as_a_sagemaker_training_job(
    image: str, aws_env: AwsTestEnv, tmp_path: Path, containers: list[str], monkeypatch: pytest.MonkeyPatch, player: str
) -> None:
    spec = BASIC_PPO if player == "bundled" else player_build_spec(tmp_path)
    request = submitted_request(aws_env, spec, QUICK, tmp_path / "run", monkeypatch)
    assert request["HyperParameters"]["sagemaker_submit_directory"].startswith('"s3://')
    opt_ml = lay_out_job(tmp_path / "opt_ml", request, aws_env)
    if player != "bundled":
        assert [c["ChannelName"] for c in request["InputDataConfig"]] == ["train"]
        assert (opt_ml.channel("train") / "Basic.x86_64").is_file()
    assert not opt_ml.code.exists()  # the toolkit fetches the code
    containers.append(name := container_name())
    process = docker_run_train(image, opt_ml, job_environment(request, aws_env), name)
    out, _ = process.communicate(timeout=900)

    assert process.returncode == 0, out[-5000:]
    assert (opt_ml.code / "train_unity.py").is_file()  # downloaded from the S3 URI of the uploaded source
    assert sum(1 for line in out.splitlines() if parse_metrics_line(line)) == 2
    assert (opt_ml.model / "policy.onnx").is_file()
    evaluation = json.loads((opt_ml.model / "evaluation.json").read_text())
    assert evaluation["episodes"] == 3 and evaluation["greedy"] is True
    assert CheckpointStore(opt_ml.checkpoints, keep=3).newest() is not None
    assert not opt_ml.failure.exists()
    if player != "bundled":
        assert any((opt_ml.output_data / "players").iterdir())  # the build from the channel ran


def wait_for_iterations(process: subprocess.Popen[str], count: int, timeout: float) -> list[str]:
    """Read the container's output until `count` metrics lines passed; the lines read."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        if sum(1 for seen in lines if parse_metrics_line(seen)) >= count:
            return lines
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no {count} iterations within {timeout} s:\n{''.join(lines)[-4000:]}")


def test_docker_stop_keeps_the_checkpoint_and_a_second_container_resumes(
    image: str, aws_env: AwsTestEnv, tmp_path: Path, containers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopped job or a reclaimed spot instance: `docker stop` mid-training, then a new container on the same
    checkpoints folder (what managed spot training gives the next instance)."""
    overrides = (*QUICK_TRAINING, "training.stop.timesteps=1500", "training.checkpoint_frequency=1")
    request = submitted_request(aws_env, BASIC_PPO, overrides, tmp_path / "run", monkeypatch)
    opt_ml = lay_out_job(tmp_path / "opt_ml", request, aws_env)
    variables = job_environment(request, aws_env)
    containers.append(first_name := container_name())
    first = docker_run_train(image, opt_ml, variables, first_name)
    lines = wait_for_iterations(first, 2, timeout=600)
    stopped = subprocess.run(["docker", "stop", "--time", "120", first_name], capture_output=True, text=True, timeout=180, check=False)
    out = "".join(lines) + first.communicate(timeout=60)[0]
    assert stopped.returncode == 0, stopped.stderr
    assert "rlrunner: stopped: SIGTERM received" in out  # the relay reached the launcher
    for folder in opt_ml.checkpoints.glob("checkpoint_*"):
        assert read_checkpoint(folder) is not None, folder  # nothing that looks complete but is not
    kept = CheckpointStore(opt_ml.checkpoints, keep=3).newest()
    assert kept is not None and kept.progress.iteration >= 1

    # a new instance: the same /opt/ml/checkpoints, a fresh container
    for folder in (opt_ml.model, opt_ml.output, opt_ml.code):
        shutil.rmtree(folder)
    opt_ml.make()
    containers.append(second_name := container_name())
    second = docker_run_train(image, opt_ml, variables, second_name)
    resumed, _ = second.communicate(timeout=900)
    assert second.returncode == 0, resumed[-5000:]
    assert f"resuming from /opt/ml/checkpoints/{kept.path.name}" in resumed
    after = [values for values in map(parse_metrics_line, resumed.splitlines()) if values]
    assert after[0]["iteration"] == kept.progress.iteration + 1 and after[-1]["timesteps"] == 1500
    assert (opt_ml.model / "policy.onnx").is_file()

    # the stop itself: not a failure (issue 15)
    assert first.returncode == 0, out[-4000:]
    assert "stopped" in out


# --- serving ---------------------------------------------------------------------------------------------


def test_image_serves_like_rlrunner_serve_here(image: str, tmp_path: Path, containers: list[str]) -> None:
    model = write_model_dir(tmp_path / "model")
    here = start_server(model)
    port = free_port()
    containers.append(name := container_name())
    command = ["docker", "run", "--rm", "--name", name, "--network", "host", "--volume", f"{model}:/opt/ml/model:ro", image, "serve"]
    served = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while served.poll() is None and time.monotonic() < deadline:
            try:
                wait_healthy(port, timeout=5)
                break
            except OSError:  # not listening yet
                time.sleep(0.5)
        assert served.poll() is None and request(port, "GET", "/ping").status == 200
        batch = np.random.default_rng(0).normal(size=(16, 20)).round(4).tolist()
        payloads: list[tuple[str, Any]] = [
            ("/invocations", {"observations": batch}),
            ("/invocations", {"instances": batch[:3]}),
            ("/invocations?return=probabilities,logits", {"observations": batch[:5]}),
            ("/invocations", {"observations": [[1.0, 2.0]]}),  # the wrong shape: the same 4xx
        ]
        assert request(port, "GET", "/ping").status == request(here.port, "GET", "/ping").status == 200
        for path, payload in payloads:
            ours, theirs = post_json(port, payload, path), post_json(here.port, payload, path)
            assert (ours.status, ours.json()) == (theirs.status, theirs.json()), path
    finally:
        stop_server(here.process)
        subprocess.run(["docker", "stop", "--time", "20", name], capture_output=True, check=False)
        served.wait(timeout=60)
        assert served.stderr is not None
        served.stderr.close()
    assert served.returncode in (0, 128 + signal.SIGTERM)
    assert_port_free(port)


# --- rlrunner run --local --image --------------------------------------------------------------------------


def test_run_local_in_the_image(image: str, tmp_path: Path, containers: list[str]) -> None:
    run_dir = tmp_path / "run"
    args = ["run", str(BASIC_PPO), "--local", "--image", image, "--run-dir", str(run_dir), *[a for o in QUICK for a in ("--set", o)]]
    result = subprocess.run(
        [sys.executable, "-m", "rlrunner.cli", *args], capture_output=True, text=True, timeout=900, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    record = json.loads((run_dir / "run.json").read_text())
    containers.append(f"rlrunner-{record['run_id']}")
    assert record["exit_code"] == 0 and record["first_iteration_s"] > 0 and record["metrics"]["timesteps"] == 500
    config = json.loads((run_dir / "input" / "config" / "hyperparameters.json").read_text())
    assert json.loads(config["sagemaker_program"]) == "train_unity.py"
    assert (run_dir / "model" / "policy.onnx").is_file() and (run_dir / "model" / "evaluation.json").is_file()
    log = (run_dir / "launcher.log").read_text()
    assert "Invoking script with the following command" in log and "/opt/venv/bin/python train_unity.py" in log  # the toolkit in the image
    assert subprocess.run(["docker", "container", "inspect", f"rlrunner-{record['run_id']}"], capture_output=True, check=False).returncode != 0


def test_image_run_command_mounts_the_run_dir_and_passes_variables_by_name(tmp_path: Path) -> None:
    from rlrunner.backends.image import docker_run_command
    from rlrunner.contract.run_dir import RunDir

    experiment, document = load_spec(player_build_spec(tmp_path), QUICK, environ={})
    job = plan(experiment.on_this_machine(), spec_dir=document.base_dir)
    command, env = docker_run_command(RunDir(tmp_path / "run"), job, "rlrunner:test", name="n", job_name="j", base={"PATH": "/bin"})
    assert command[:2] == ["docker", "run"] and command[-2:] == ["rlrunner:test", "train"]
    assert f"{tmp_path / 'run'}:/opt/ml" in command and f"{tmp_path / 'build'}:/opt/ml/input/data/train:ro" in command
    assert command[command.index("--network") + 1] == "host" and "algo-1:127.0.0.1" in command
    assert all(not value.startswith("RLRUNNER_EXPERIMENT=") for value in command)  # values travel in the client's environment
    assert env["PATH"] == "/bin" and env["TRAINING_JOB_NAME"] == "j" and set(job.environment) <= set(env)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--hosts", "2"], "--image: runs one host (drop --hosts)"),
        (["--set", "compute.instance_type=ml.c5.xlarge", "--no-local"], "--image: only with a local run"),
    ],
)
def test_image_run_usage_errors_are_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    local = [] if "--no-local" in extra else ["--local"]
    args = ["run", str(BASIC_PPO), *local, "--image", "rlrunner:test", "--run-dir", str(tmp_path / "run"), *[e for e in extra if e != "--no-local"]]
    result = subprocess.run([sys.executable, "-m", "rlrunner.cli", *args], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr
