"""AWS test helpers shared by the SageMaker backend and sweep tests: fake job outputs and throttling."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlrunner.aws import parse_s3_uri
from rlrunner.contract.model_dir import ONNX_FILE, write_evaluation

if TYPE_CHECKING:
    from conftest import AwsTestEnv


def put_model(
    env: AwsTestEnv, artifact_uri: str, *, evaluation: Mapping[str, Any] | None = None, extra: Mapping[str, bytes] = {}
) -> None:
    """A model.tar.gz where the job's output would be: a stand-in ONNX file and, as the launcher writes it
    (`rlrunner.contract.model_dir.write_evaluation`, proved by tests/entry/test_train_unity.py's SageMaker-shaped
    launcher test), its end-of-run evaluation."""
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder)
        (model / ONNX_FILE).write_bytes(b"onnx")
        if evaluation is not None:
            write_evaluation(evaluation, model)
        for name, data in extra.items():
            (model / name).parent.mkdir(parents=True, exist_ok=True)
            (model / name).write_bytes(data)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in sorted(model.iterdir()):
                tar.add(path, arcname=path.name)
    bucket, key = parse_s3_uri(artifact_uri)
    env.client("s3").put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())


def quiet(_: str) -> None:
    pass


def throttle(times: int, counter: list[int]) -> Callable[..., Any]:
    """A before-send hook answering ThrottlingException `times` times, then letting the request through."""
    from botocore.awsrequest import AWSResponse

    class Body:
        def stream(self) -> Iterator[bytes]:
            yield json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()

    def hook(request: Any, **_: Any) -> Any:
        counter.append(1)
        if len(counter) > times:
            return None
        headers = {"x-amzn-RequestId": "throttled", "Content-Type": "application/x-amz-json-1.1"}
        return AWSResponse(request.url, 400, headers, Body())

    return hook


