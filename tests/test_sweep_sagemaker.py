"""The sweep of experiments/sweep_lr_seeds.yaml against a moto server: four jobs, bounded concurrency, throttling retried."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aws_helpers import put_model, quiet, throttle
from shared import ROOT

from rlrunner import aws
from rlrunner.loader import load_spec
from rlrunner.sweep import expand, run_points, sagemaker_backend

if TYPE_CHECKING:
    from tests.conftest import AwsTestEnv

SWEEP = ROOT / "experiments" / "sweep_lr_seeds.yaml"
POLLS_UNTIL_DONE = 3


def test_sweep_on_sagemaker_creates_four_jobs_two_at_a_time_and_retries_throttling(
    aws_env: AwsTestEnv,
    runs: Path,  # noqa: F811  (the fixture imported above)
) -> None:
    spec, document = load_spec(SWEEP, environ={})
    points = expand(document, spec)
    lock = threading.Lock()
    in_progress: set[str] = set()
    peak: list[int] = [0]
    polls: dict[str, int] = {}
    throttled: list[int] = []

    def job_starts(params: dict[str, Any], **_: Any) -> None:
        name = params["TrainingJobName"]
        with lock:
            in_progress.add(name)
            peak[0] = max(peak[0], len(in_progress))
            polls[name] = 0

    def job_created(params: dict[str, Any], **_: Any) -> None:
        job = aws_env.training_job(params["TrainingJobName"])
        job.training_job_status, job.secondary_status = "InProgress", "Training"

    def job_polled(params: dict[str, Any], **_: Any) -> None:
        name = params["TrainingJobName"]
        with lock:
            if name not in in_progress:
                return
            polls[name] += 1
            if polls[name] < POLLS_UNTIL_DONE:
                return
            in_progress.discard(name)
        job = aws_env.training_job(name)
        put_model(aws_env, job.model_artifacts["S3ModelArtifacts"], evaluation={"mean": 0.93})
        job.training_job_status = job.secondary_status = "Completed"

    def session() -> aws.AwsContext:
        ctx = aws.connect()
        events = ctx.boto.events
        events.register("before-send.sagemaker.CreateTrainingJob", throttle_each_first(throttled))
        events.register("provide-client-params.sagemaker.CreateTrainingJob", job_starts)
        events.register(
            "after-call.sagemaker.CreateTrainingJob",
            lambda params=None, **kw: job_created(kw["context"]["rlrunner_params"]),
        )
        events.register(
            "before-parameter-build.sagemaker.CreateTrainingJob",
            lambda params, context, **kw: context.update(rlrunner_params=params),
        )
        events.register("provide-client-params.sagemaker.DescribeTrainingJob", job_polled)
        return ctx

    launch, finished = sagemaker_backend(
        SWEEP.parent, echo=quiet, runs_root=runs, poll_s=0, session_factory=session
    )
    results = run_points(points, launch=launch, finished=finished, max_parallel=2, report=lambda p, r: None)

    jobs = aws_env.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]
    assert len(jobs) == 4
    assert [r.status for r in results] == ["finished"] * 4
    assert [r.mean_return for r in results] == [0.93] * 4
    assert peak[0] == 2
    assert len(throttled) == 8  # every job's first CreateTrainingJob was throttled, then retried
    again = run_points(points, launch=launch, finished=finished, max_parallel=2, report=lambda p, r: None)
    assert [r.status for r in again] == ["skipped"] * 4
    assert len(aws_env.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == 4


def throttle_each_first(attempts: list[int]) -> Any:
    """Throttle the first CreateTrainingJob of every session (each point connects once)."""
    counter: list[int] = []
    inner = throttle(1, counter)

    def hook(request: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return inner(request, **kwargs)

    return hook
