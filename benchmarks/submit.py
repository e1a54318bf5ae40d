"""Time from `rlrunner run SPEC` to CreateTrainingJob returned, against a moto server on 127.0.0.1.

Three cases, each a fresh `rlrunner run` process (what a user waits for, SDK import included):
  - no binary: the bundled Basic environment (nothing to upload but the source dir);
  - 100 MB binary, first submission: hash + upload of a generated player build folder;
  - 100 MB binary, again: the same content is already on S3 (hash + one listing, no upload).
Baselines in the same run: `rlrunner --version` (process start + click) and one bare boto3
CreateTrainingJob call. Also the in-process cost of hashing the folder.

    python benchmarks/submit.py [--repeat 3] [--size-mb 100]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/rlrunner-bench"


def make_build(folder: Path, size_mb: int) -> Path:
    """A player build of `size_mb` MB of incompressible bytes: one executable and a data folder of 10 MB files."""
    data = folder / "Game_Data"
    data.mkdir(parents=True)
    player = folder / "Game.x86_64"
    player.write_bytes(os.urandom(10 * 2**20))
    player.chmod(0o755)
    for index in range(max(0, size_mb - 10) // 10):
        (data / f"level{index}.assets").write_bytes(os.urandom(10 * 2**20))
    return player


def write_spec(folder: Path, binary: Path | None) -> Path:
    """basic_ppo.yaml, optionally with a local binary instead of the bundled Basic."""
    text = (ROOT / "experiments" / "basic_ppo.yaml").read_text()
    if binary is not None:
        text = text.replace("  name: Basic\n", f"  binary: {binary}\n", 1)
    path = folder / ("binary.yaml" if binary else "basic.yaml")
    path.write_text(text)
    return path


def reset(endpoint: str) -> None:
    """Forget every moto resource (so the next submission uploads again)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(request, timeout=10).read()


def timed_run(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `rlrunner ...` process; it must succeed."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "rlrunner.cli", *args], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"rlrunner {' '.join(args)} failed ({result.returncode}): {result.stderr or result.stdout}")
    return elapsed


def bare_create_training_job(endpoint: str) -> float:
    """Seconds of one boto3 CreateTrainingJob call (client already made)."""
    import boto3

    client = boto3.client("sagemaker", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench", aws_secret_access_key="bench")
    request = {
        "TrainingJobName": f"bare-{time.time_ns()}",
        "AlgorithmSpecification": {"TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/rlrunner:0.1.0", "TrainingInputMode": "File"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://bench/out"},
        "ResourceConfig": {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
    client.list_training_jobs()
    start = time.perf_counter()
    client.create_training_job(**request)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    args = parser.parse_args(argv)

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with tempfile.TemporaryDirectory(prefix="rlrunner-bench-") as scratch:
            folder = Path(scratch)
            sdk_config = folder / "sagemaker.yaml"
            sdk_config.write_text(json.dumps({"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}))
            env = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "SAGEMAKER_"))}
            env.update(
                AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1",
                AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(folder / "none"), AWS_SHARED_CREDENTIALS_FILE=str(folder / "none"),
                SAGEMAKER_SUPPRESS_V2_WARNING="1", SAGEMAKER_USER_CONFIG_OVERRIDE=str(sdk_config),
                SAGEMAKER_ADMIN_CONFIG_OVERRIDE=str(sdk_config), SAGEMAKER_ROLE=ROLE,
            )
            player = make_build(folder / "build", args.size_mb)
            total = sum(path.stat().st_size for path in (folder / "build").rglob("*") if path.is_file())
            basic, binary = write_spec(folder, None), write_spec(folder, player)

            from rlrunner.backends.sagemaker import folder_digest

            start = time.perf_counter()
            folder_digest(folder / "build")
            hashing = time.perf_counter() - start

            results: dict[str, list[float]] = {"version": [], "bare": [], "basic": [], "upload": [], "cached": []}
            for index in range(args.repeat):
                results["version"].append(timed_run(["--version"], env))
                results["bare"].append(bare_create_training_job(endpoint))
                reset(endpoint)
                results["basic"].append(timed_run(["run", str(basic), "--run-dir", str(folder / f"basic-{index}")], env))
                results["upload"].append(timed_run(["run", str(binary), "--run-dir", str(folder / f"up-{index}")], env))
                results["cached"].append(timed_run(["run", str(binary), "--run-dir", str(folder / f"again-{index}")], env))
    finally:
        server.stop()

    median = {key: statistics.median(values) for key, values in results.items()}
    print(f"player build: {total / 1e6:.0f} MB in {1 + max(0, args.size_mb - 10) // 10} files; median of {args.repeat}")
    print(f"{'case':<52} {'seconds':>8}")
    rows = [
        ("baseline: rlrunner --version (process start)", median["version"]),
        ("baseline: one boto3 CreateTrainingJob call", median["bare"]),
        ("rlrunner run, no binary (Basic)", median["basic"]),
        (f"rlrunner run, {args.size_mb} MB binary, first (hash + upload)", median["upload"]),
        (f"rlrunner run, {args.size_mb} MB binary, again (hash, no upload)", median["cached"]),
        (f"in process: content hash of {args.size_mb} MB", hashing),
    ]
    for name, seconds in rows:
        print(f"{name:<52} {seconds:>8.3f}")
    print(f"upload adds {median['upload'] - median['basic']:.2f} s; a cached binary adds {median['cached'] - median['basic']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
