"""From spec to plan (pure): RLEstimator keyword arguments, container environment, fit() inputs, experiment.

This module only plans; the backends run a plan (`rlrunner.backends.local.run_local`,
`rlrunner.backends.sagemaker.submit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlrunner.contract import experiment_env
from rlrunner.contract.cluster_env import AUTH_TOKEN_PLACEHOLDER, AUTH_TOKEN_VAR
from rlrunner.contract.errors import InvalidSpecError
from rlrunner.contract.identity import RUN_ID_LENGTH, identity_hash, run_id
from rlrunner.contract.metrics import metric_definitions
from rlrunner.contract.sagemaker_container import (
    CHECKPOINT_LOCAL_PATH,
    DEFAULT_IMAGE,
    ENTRY_POINT,
    ENTRY_SOURCE_DIR,
    RUN_ID_VAR,
    TENSORBOARD_LOCAL_PATH,
    TRAIN_CHANNEL,
    binary_in_container,
)
from rlrunner.schema import RESERVED_TAG_PREFIX, Experiment, ExperimentSpec

MAX_METRIC_DEFINITIONS = 40
MAX_TAGS = 50
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_CHARS = 2500
RUN_ID_TAG = f"{RESERVED_TAG_PREFIX}run-id"
SPEC_HASH_TAG = f"{RESERVED_TAG_PREFIX}spec-hash"


class PlanError(InvalidSpecError):
    """The spec is valid but cannot be rendered within SageMaker's limits."""


@dataclass(frozen=True)
class JobPlan:
    """Everything a backend needs to start one training job."""

    run_id: str
    estimator: dict[str, Any]
    environment: dict[str, str]
    fit_inputs: dict[str, str] | None
    experiment: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The plan as `rlrunner plan --output json` prints it."""
        return asdict(self)


def render_experiment(spec: ExperimentSpec, *, spec_dir: Path = Path(".")) -> dict[str, Any]:
    """The experiment the launcher decodes: the training part of the spec plus the run's identity.

    A player build is named as the launcher will find it: its absolute path for a local run, its file
    in the `train` channel for a SageMaker job (`binary_in_container`).
    """
    environment = spec.environment
    if environment.binary is not None:
        if spec.compute.is_local and not environment.binary_on_s3:
            binary = str((spec_dir / environment.binary).resolve())
        else:
            binary = binary_in_container(environment.binary)
        environment = environment.model_copy(update={"binary": binary})
    training = spec.training
    if training.init_from is not None:
        if not spec.compute.is_local:
            raise PlanError("training.init_from: only for local runs (run with --local, or train on SageMaker from scratch)")
        training = training.model_copy(update={"init_from": str((spec_dir / training.init_from).resolve())})
    digest = identity_hash(spec)
    experiment = Experiment(
        run_id=digest[:RUN_ID_LENGTH],
        spec_hash=digest,
        name=spec.name,
        source_dir=Path(spec.source_dir).name if spec.source_dir else None,
        environment=environment,
        algorithm=spec.algorithm,
        training=training,
        cluster=spec.compute.cluster,
        behaviors=spec.behaviors,
    )
    return experiment.to_data()


def render_environment(spec: ExperimentSpec, experiment: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment variables: the user's, rlrunner's, and the encoded experiment.

    A multi-instance job reserves the slot of its Ray token (`submit` fills it in with a fresh one).
    """
    base = {"PYTHONUNBUFFERED": "1", RUN_ID_VAR: run_id(spec), **spec.compute.environment}
    if spec.compute.instance_count > 1 and not spec.compute.is_local:
        base[AUTH_TOKEN_VAR] = AUTH_TOKEN_PLACEHOLDER
    free = experiment_env.MAX_ENV_VARS - len(base)
    try:
        encoded = experiment_env.encode_experiment_env(experiment, max_vars=free)
    except experiment_env.CodecError as error:
        raise PlanError(f"compute.environment: {error}") from None
    return {**base, **encoded}


def render_fit_inputs(spec: ExperimentSpec, *, spec_dir: Path = Path(".")) -> dict[str, str] | None:
    """fit() channels: `train` holds the player build (an S3 folder, or a local folder to upload)."""
    binary = spec.environment.binary
    if binary is None:
        return None
    if spec.environment.binary_on_s3:
        return {TRAIN_CHANNEL: str(spec.environment.binary_channel_uri)}
    return {TRAIN_CHANNEL: str((spec_dir / binary).resolve().parent)}


def render_estimator_kwargs(
    spec: ExperimentSpec, environment: Mapping[str, str], *, spec_dir: Path = Path("."), environ: Mapping[str, str] = {}
) -> dict[str, Any]:
    """Keyword arguments for `sagemaker.rl.RLEstimator`; the uploaded source is the one-line entry script."""
    compute = spec.compute
    tags = {**compute.tags, RUN_ID_TAG: run_id(spec), SPEC_HASH_TAG: identity_hash(spec)}
    kwargs: dict[str, Any] = {
        "entry_point": ENTRY_POINT,
        "source_dir": str(ENTRY_SOURCE_DIR),
        "dependencies": [str((spec_dir / spec.source_dir).resolve())] if spec.source_dir else [],
        "image_uri": compute.image or DEFAULT_IMAGE,
        "role": compute.role or environ.get("SAGEMAKER_ROLE"),
        "instance_type": compute.instance_type,
        "instance_count": compute.instance_count,
        "output_path": compute.output_path,
        "base_job_name": compute.base_job_name or spec.name,
        "metric_definitions": metric_definitions(),
        "hyperparameters": {"rlrunner_run_id": run_id(spec)},
        "environment": dict(environment),
        "checkpoint_s3_uri": compute.checkpoint_s3_uri,
        "checkpoint_local_path": CHECKPOINT_LOCAL_PATH,
        # the S3 side is <output_path>/<job name>/tensorboard, known at submission
        "tensorboard_output_config": {"container_local_output_path": TENSORBOARD_LOCAL_PATH, "s3_output_path": None},
        "use_spot_instances": compute.spot is not None,
        "max_run": compute.max_run,
        "max_wait": compute.spot.max_wait if compute.spot else None,
        "tags": [{"Key": key, "Value": value} for key, value in tags.items()],
        "volume_size": compute.volume_size,
        "debugger_hook_config": False,
        "disable_profiler": True,
    }
    check_limits(kwargs)
    return kwargs


def check_limits(kwargs: Mapping[str, Any]) -> None:
    """SageMaker's API limits that the SDK only finds out at CreateTrainingJob."""
    if len(kwargs["metric_definitions"]) > MAX_METRIC_DEFINITIONS:
        raise PlanError(
            f"{len(kwargs['metric_definitions'])} metric definitions; SageMaker allows {MAX_METRIC_DEFINITIONS}"
        )
    if len(kwargs["tags"]) > MAX_TAGS:
        raise PlanError(f"compute.tags: {len(kwargs['tags'])} tags with rlrunner's; SageMaker allows {MAX_TAGS}")
    hyperparameters = kwargs["hyperparameters"]
    if len(hyperparameters) > MAX_HYPERPARAMETERS or any(
        len(str(v)) > MAX_HYPERPARAMETER_CHARS for v in hyperparameters.values()
    ):
        raise PlanError(
            f"hyperparameters exceed SageMaker's {MAX_HYPERPARAMETERS} keys of {MAX_HYPERPARAMETER_CHARS} characters"
        )
    environment = kwargs["environment"]
    limit, chars = experiment_env.MAX_ENV_VARS, experiment_env.MAX_VALUE_CHARS
    if len(environment) > limit or any(len(v) > chars for v in environment.values()):
        raise PlanError(f"environment exceeds SageMaker's {limit} variables of {chars} characters")


def plan(
    spec: ExperimentSpec, *, spec_dir: Path = Path("."), local: bool = False, environ: Mapping[str, str] = {}
) -> JobPlan:
    """Render the whole plan for one spec (`local`: as `--local` runs it)."""
    if local:
        spec = spec.on_this_machine()
    experiment = render_experiment(spec, spec_dir=spec_dir)
    environment = render_environment(spec, experiment)
    return JobPlan(
        run_id=run_id(spec),
        estimator=render_estimator_kwargs(spec, environment, spec_dir=spec_dir, environ=environ),
        environment=environment,
        fit_inputs=render_fit_inputs(spec, spec_dir=spec_dir),
        experiment=experiment,
    )
