"""From spec to plan (pure): RLEstimator keyword arguments, container environment, fit() inputs, experiment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlrunner import __version__
from rlrunner.entry import codec
from rlrunner.entry.metrics import metric_definitions
from rlrunner.schema import RESERVED_TAG_PREFIX, Experiment, ExperimentSpec

ENTRY_DIR = Path(__file__).parent / "entry"
ENTRY_POINT = "train_unity.py"
DEFAULT_IMAGE = f"rlrunner:{__version__}"
MAX_METRIC_DEFINITIONS = 40
MAX_TAGS = 50
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_CHARS = 2500


class PlanError(ValueError):
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


def render_experiment(spec: ExperimentSpec, *, spec_dir: Path = Path("."), local: bool = False) -> dict[str, Any]:
    """The experiment the launcher decodes: the training part of the spec plus the run's identity."""
    environment = spec.environment
    if environment.binary is not None and not environment.binary_on_s3:
        binary = (spec_dir / environment.binary).resolve() if local else Path(environment.binary).name
        environment = environment.model_copy(update={"binary": str(binary)})
    experiment = Experiment(
        run_id=spec.run_id,
        spec_hash=spec.spec_hash,
        name=spec.name,
        source_dir=Path(spec.source_dir).name if spec.source_dir else None,
        environment=environment,
        algorithm=spec.algorithm,
        training=spec.training,
    )
    return experiment.to_data()


def render_environment(spec: ExperimentSpec, experiment: Mapping[str, Any]) -> dict[str, str]:
    """The container's environment variables: the user's, rlrunner's, and the encoded experiment."""
    base = {"PYTHONUNBUFFERED": "1", "RLRUNNER_RUN_ID": spec.run_id, **spec.compute.environment}
    free = codec.MAX_ENV_VARS - len(base)
    try:
        encoded = codec.encode_experiment_env(experiment, max_vars=free)
    except codec.CodecError as error:
        raise PlanError(f"compute.environment: {error}") from None
    return {**base, **encoded}


def render_fit_inputs(spec: ExperimentSpec, *, spec_dir: Path = Path(".")) -> dict[str, str] | None:
    """fit() channels: `train` holds the player build (an S3 folder, or a local folder to upload)."""
    binary = spec.environment.binary
    if binary is None:
        return None
    if spec.environment.binary_on_s3:
        return {"train": str(spec.environment.binary_channel_uri)}
    return {"train": str((spec_dir / binary).resolve().parent)}


def render_estimator_kwargs(
    spec: ExperimentSpec, environment: Mapping[str, str], *, spec_dir: Path = Path("."), environ: Mapping[str, str] = {}
) -> dict[str, Any]:
    """Keyword arguments for `sagemaker.rl.RLEstimator`."""
    compute = spec.compute
    tags = {
        **compute.tags,
        f"{RESERVED_TAG_PREFIX}run-id": spec.run_id,
        f"{RESERVED_TAG_PREFIX}spec-hash": spec.spec_hash,
    }
    kwargs: dict[str, Any] = {
        "entry_point": ENTRY_POINT,
        "source_dir": str(ENTRY_DIR),
        "dependencies": [str((spec_dir / spec.source_dir).resolve())] if spec.source_dir else [],
        "image_uri": compute.image or DEFAULT_IMAGE,
        "role": compute.role or environ.get("SAGEMAKER_ROLE"),
        "instance_type": compute.instance_type,
        "instance_count": compute.instance_count,
        "output_path": compute.output_path,
        "base_job_name": compute.base_job_name or spec.name,
        "metric_definitions": metric_definitions(),
        "hyperparameters": {"rlrunner_run_id": spec.run_id},
        "environment": dict(environment),
        "checkpoint_s3_uri": compute.checkpoint_s3_uri,
        "checkpoint_local_path": "/opt/ml/checkpoints",
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
    if len(environment) > codec.MAX_ENV_VARS or any(len(v) > codec.MAX_VALUE_CHARS for v in environment.values()):
        raise PlanError(
            f"environment exceeds SageMaker's {codec.MAX_ENV_VARS} variables of {codec.MAX_VALUE_CHARS} characters"
        )


def plan(
    spec: ExperimentSpec, *, spec_dir: Path = Path("."), local: bool = False, environ: Mapping[str, str] = {}
) -> JobPlan:
    """Render the whole plan for one spec."""
    if local:
        spec = spec.model_copy(update={"compute": spec.compute.model_copy(update={"instance_type": "local"})})
    local = local or spec.compute.is_local
    experiment = render_experiment(spec, spec_dir=spec_dir, local=local)
    environment = render_environment(spec, experiment)
    return JobPlan(
        run_id=spec.run_id,
        estimator=render_estimator_kwargs(spec, environment, spec_dir=spec_dir, environ=environ),
        environment=environment,
        fit_inputs=render_fit_inputs(spec, spec_dir=spec_dir),
        experiment=experiment,
    )
