"""Sweep figures: expanding, validating and planning 1,000 points in a cold process; submitting 100 jobs to moto.

Run: python benchmarks/sweep.py [--jobs 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from _timing import cold

REPO = Path(__file__).resolve().parents[1]

SPEC = """\
name: bench-sweep
environment: {name: Basic}
algorithm: {name: PPO, hyperparameters: {lr: 1.0e-4, gamma: 0.99}}
training: {stop: {timesteps: 10000}}
compute: {instance_type: ml.c5.xlarge, max_run: 3600}
sweep:
  parameters:
    algorithm.hyperparameters.lr: [%s]
    algorithm.hyperparameters.gamma: [%s]
  seeds: [%s]
  max_parallel: %d
"""


def sweep_spec(folder: Path, lrs: int, gammas: int, seeds: int, parallel: int = 1) -> Path:
    path = folder / f"sweep-{lrs * gammas * seeds}.yaml"
    path.write_text(
        SPEC
        % (
            ", ".join(f"{1e-5 * (i + 1):.6g}" for i in range(lrs)),
            ", ".join(f"{0.9 + 0.009 * i:.4g}" for i in range(gammas)),
            ", ".join(str(i) for i in range(seeds)),
            parallel,
        )
    )
    return path


def submit_jobs(count: int, parallel: int, folder: Path) -> float:
    """Wall time of submitting `count` points (no waiting) to a moto server with `parallel` at once."""
    import logging

    from moto.server import ThreadedMotoServer

    from rlrunner import aws
    from rlrunner.backends import sagemaker as backend
    from rlrunner.loader import load_spec
    from rlrunner.runner import plan
    from rlrunner.sweep import PointResult, SweepPoint, expand, run_points

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        config = folder / "sagemaker-config.yaml"
        config.write_text('{"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": true}}}}')
        os.environ.update(
            AWS_ENDPOINT_URL=f"http://{host}:{port}",
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            SAGEMAKER_SUPPRESS_V2_WARNING="1",
            SAGEMAKER_USER_CONFIG_OVERRIDE=str(config),
            SAGEMAKER_ADMIN_CONFIG_OVERRIDE=str(config),
            SAGEMAKER_ROLE="arn:aws:iam::123456789012:role/bench",
        )
        spec, document = load_spec(sweep_spec(folder, count, 1, 1))
        points = expand(document, spec)
        ctx = aws.connect()

        def launch(point: SweepPoint) -> PointResult:
            job = plan(point.spec, spec_dir=folder, environ=os.environ)
            backend.submit(job, point.spec, run_dir=folder / f"runs-{parallel}" / point.run_id, session_factory=lambda: ctx, echo=lambda _: None)
            return PointResult(point.run_id, "finished")

        start = time.perf_counter()
        results = run_points(points, launch=launch, finished=lambda p: None, max_parallel=parallel, report=lambda p, r: None)
        elapsed = time.perf_counter() - start
        failed = [r.message for r in results if r.status != "finished"]
        assert not failed, failed[:3]
        return elapsed
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        thousand = sweep_spec(folder, 10, 10, 10)
        bare = cold([sys.executable, "-c", "pass"], args.repeat)
        one = cold([sys.executable, "-m", "rlrunner.cli", "sweep", str(sweep_spec(folder, 1, 1, 1)), "--dry-run"], args.repeat)
        many = cold([sys.executable, "-m", "rlrunner.cli", "sweep", str(thousand), "--dry-run"], args.repeat)
        print(f"bare python start                          {bare:7.3f} s")
        print(f"sweep --dry-run, 1 point                   {one:7.3f} s")
        print(f"sweep --dry-run, 1,000 points (cold)       {many:7.3f} s  (target < 5 s; {(many - one) / 999 * 1000:.2f} ms per extra point)")
        print(f"submitting {args.jobs} jobs to moto on 127.0.0.1 (CreateTrainingJob through the SDK, no waiting):")
        for parallel in (1, 4, 16):
            elapsed = submit_jobs(args.jobs, parallel, folder)
            print(f"  max_parallel {parallel:>2}: {elapsed:7.2f} s  ({args.jobs / elapsed:5.1f} jobs/s)")


if __name__ == "__main__":
    main()
