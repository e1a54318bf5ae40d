"""Shared fixtures: a moto server on 127.0.0.1 that answers S3, STS, SageMaker and CloudWatch Logs.

`moto_server` (session) yields the endpoint URL; `aws_env` (per test) points the AWS SDKs at it with fake
credentials, turns the SageMaker SDK's telemetry off through its real config switch, creates a bucket and
resets moto's state around the test. Nothing here talks to anything but the loopback server.

`sessions` collects the session leaders a test starts and fails it if any of their processes outlive it;
`player_gone` (`assert_player_gone`) checks that a Unity player is reaped and its port free.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rlrunner.processes import descendants, run_processes, terminate


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--regen-golden", action="store_true", help="Rewrite tests/golden from the current plans (on purpose only).")


@pytest.fixture
def regen_golden(request: pytest.FixtureRequest) -> bool:
    """Whether `--regen-golden` was given."""
    return bool(request.config.getoption("--regen-golden"))


MOTO_ACCOUNT = "123456789012"
MOTO_REGION = "us-east-1"
TEST_BUCKET = "rlrunner-test"
TEST_ROLE = f"arn:aws:iam::{MOTO_ACCOUNT}:role/rlrunner-test"
AWS_VARIABLES_CLEARED = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_RETRY_MODE", "AWS_MAX_ATTEMPTS", "SAGEMAKER_ROLE",
)
TELEMETRY_OFF = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}


def _install_moto_gaps() -> list[tuple[Any, str]]:
    """moto 5.2 has no StopTrainingJob: add a minimal one (InProgress -> Stopping) to the in-process server."""
    from moto.core.responses import EmptyResult
    from moto.sagemaker.exceptions import ValidationError
    from moto.sagemaker.responses import SageMakerResponse

    def stop_training_job(self: Any) -> Any:
        name = self._get_param("TrainingJobName")
        job = self.sagemaker_backend.training_jobs.get(name)
        if job is None:
            raise ValidationError(message=f"Could not find training job '{name}'.")
        if job.training_job_status != "InProgress":
            raise ValidationError(message=f"The job status is {job.training_job_status}.")
        job.training_job_status = job.secondary_status = "Stopping"
        return EmptyResult()

    added = []
    if not hasattr(SageMakerResponse, "stop_training_job"):
        SageMakerResponse.stop_training_job = stop_training_job  # type: ignore[attr-defined]
        added.append((SageMakerResponse, "stop_training_job"))
    return added


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A threaded moto server on 127.0.0.1 (a free port); yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    added = _install_moto_gaps()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        for owner, name in added:
            delattr(owner, name)


def reset_moto(endpoint: str) -> None:
    """Forget every resource moto holds (`POST /moto-api/reset`)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@dataclass(frozen=True)
class AwsTestEnv:
    """What `aws_env` set up."""

    endpoint: str
    region: str
    account: str
    bucket: str
    role: str
    home: Path

    def client(self, service: str) -> Any:
        """A plain boto3 client on the moto server."""
        import boto3

        return boto3.client(service, region_name=self.region, endpoint_url=self.endpoint)

    def training_job(self, name: str) -> Any:
        """moto's in-process record of a training job (to move it through states in tests)."""
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[self.account][self.region].training_jobs[name]


@pytest.fixture
def aws_env(moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AwsTestEnv]:
    """AWS SDKs pointed at moto with fake credentials and telemetry off; a fresh state with one bucket."""
    home = tmp_path_factory.mktemp("aws-home")
    sdk_config = home / "sagemaker-config.yaml"
    sdk_config.write_text(json.dumps(TELEMETRY_OFF))  # JSON is YAML
    for name in AWS_VARIABLES_CLEARED:
        monkeypatch.delenv(name, raising=False)
    variables = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": MOTO_REGION,
        "AWS_REGION": MOTO_REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials"),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(sdk_config),
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(sdk_config),
        "SAGEMAKER_ROLE": TEST_ROLE,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    reset_moto(moto_server)
    leaks = guard_loopback(monkeypatch)
    env = AwsTestEnv(moto_server, MOTO_REGION, MOTO_ACCOUNT, TEST_BUCKET, TEST_ROLE, home)
    env.client("s3").create_bucket(Bucket=TEST_BUCKET)
    try:
        yield env
    finally:
        reset_moto(moto_server)
    assert not leaks, f"the test tried to reach hosts other than loopback: {sorted(set(leaks))}"


LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


def guard_loopback(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Refuse (and record) name lookups of anything but loopback, so a stray call to real AWS fails the test."""
    import ipaddress
    import socket

    leaks: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            allowed = name in LOOPBACK_NAMES or ipaddress.ip_address(name).is_loopback
        except ValueError:
            allowed = False
        if not allowed:
            leaks.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"tests reach only loopback, not {name}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    return leaks


# --- processes and players -------------------------------------------------------------------


@pytest.fixture
def sessions() -> Iterator[list[int]]:
    """Session leaders a test starts; afterwards nothing of theirs (nor any new child of pytest) may be alive."""
    leaders: list[int] = []
    before = descendants([os.getpid()])
    yield leaders
    deadline = time.monotonic() + 10
    while True:
        left = run_processes(sessions=leaders, roots=leaders) | (descendants([os.getpid()]) - before)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    terminate(left)
    assert not left, f"processes left behind: {sorted(left)}"


def assert_player_gone(pid: int, port: int) -> None:
    """The player process is reaped and nothing listens on its port any more."""
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


@pytest.fixture
def player_gone() -> Callable[[int, int], None]:
    """``assert_player_gone(pid, port)`` for tests that manage their own players."""
    return assert_player_gone


@pytest.fixture
def runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in a scratch folder so ./runs is the test's."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path / "runs"
