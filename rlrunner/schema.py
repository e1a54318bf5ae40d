"""The experiment spec: pure data, validators and derived properties (no I/O, no heavy imports)."""

from __future__ import annotations

import difflib
import keyword
import math
import re
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Strict,
    Tag,
    create_model,
    model_validator,
)

from rlrunner.hyperparameters import ALGORITHMS, RANGES, load_table
from rlrunner.instance_types import hosting_types, training_types

NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$"
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z\-]*:iam::\d{12}:role/[\w+=,.@\-/]+$"
INSTANCE_TYPE_PATTERN = r"^(local|ml\.[a-z0-9-]+\.[a-z0-9]+)$"
ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
TAG_PATTERN = r"^[\w\s.:/=+\-@]*$"
MODULE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_]*$"
BUILTIN_MODULES: dict[str, str] = {"rlrunner:ImageVectorModule": "rlrunner.entry.models:ImageVectorModule"}
"""RLModules rlrunner ships, as a spec names them in `algorithm.model.module` (no source_dir) -> where they live."""
MAX_BASE_JOB_NAME = 39
MAX_SWEEP_POINTS = 1000
"""A sweep runs at most this many points (combinations or draws, times seeds)."""
RESERVED_ENV_PREFIX = "RLRUNNER_"
RESERVED_TAG_PREFIX = "rlrunner:"


class Frozen(BaseModel):
    """Base of every spec model: immutable, unknown keys rejected, docs from attribute docstrings."""

    # strict: YAML's own types are unambiguous, so `true` is no integer and `'10000'` no number;
    # numbers are finite (`.inf`, `.nan`, `1e309` are rejected).
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, strict=True, allow_inf_nan=False)


class SamplerParameters(Frozen):
    """A sampler's parameters, as in `mlagents-learn`'s `environment_parameters`."""

    min_value: float | None = None
    """uniform: the lower bound."""
    max_value: float | None = None
    """uniform: the upper bound."""
    mean: float | None = None
    """gaussian: the mean."""
    st_dev: Annotated[float, Field(ge=0)] | None = None
    """gaussian: the standard deviation."""
    intervals: Annotated[list[tuple[float, float]], Field(min_length=1)] | None = None
    """multirangeuniform: [[min, max], ...] intervals, one drawn (by its width) then a value in it."""
    seed: Annotated[int, Field(ge=-1, le=2**31 - 1)] = -1
    """The player's random seed for this sampler (-1: the environment's own)."""


class SamplerSpec(Frozen):
    """An environment parameter the player draws anew for every episode (ML-Agents' samplers)."""

    sampler_type: Literal["uniform", "gaussian", "multirangeuniform"]
    """The distribution."""
    sampler_parameters: SamplerParameters
    """Its parameters: min_value/max_value, mean/st_dev or intervals."""

    @model_validator(mode="after")
    def _parameters_match_type(self) -> SamplerSpec:
        p = self.sampler_parameters
        needed = {"uniform": ("min_value", "max_value"), "gaussian": ("mean", "st_dev"), "multirangeuniform": ("intervals",)}
        missing = [name for name in needed[self.sampler_type] if getattr(p, name) is None]
        if missing:
            raise ValueError(f"sampler_parameters: {self.sampler_type} needs {', '.join(missing)}")
        if self.sampler_type == "uniform" and p.min_value is not None and p.max_value is not None and p.min_value > p.max_value:
            raise ValueError(f"sampler_parameters: min_value {p.min_value} is above max_value {p.max_value}")
        if any(low > high for low, high in p.intervals or []):
            raise ValueError("sampler_parameters.intervals: every interval is [min, max] with min <= max")
        return self


def _value_kind(value: Any) -> str:
    return "sampler" if isinstance(value, dict | SamplerSpec) else "constant"


LessonValue = Annotated[Annotated[float, Tag("constant")] | Annotated[SamplerSpec, Tag("sampler")], Discriminator(_value_kind)]
"""A lesson's value: a constant or a sampler."""


class CompletionCriteria(Frozen):
    """When a lesson is done, as in `mlagents-learn`: the episode return mean reaches a threshold."""

    measure: Literal["reward"] = "reward"
    """What is measured: the episode return mean after a training iteration."""
    behavior: str | None = None
    """The behaviour whose return counts (its per-behaviour mean when the run reports one; else the pooled mean)."""
    threshold: float
    """The lesson is done once the return mean is at least this."""
    min_lesson_length: Annotated[int, Field(ge=0)] = 0
    """Episodes to play in the lesson before it can be done."""


class Lesson(Frozen):
    """One lesson of a curriculum: its name, its value and when it is done (none for the last)."""

    name: Annotated[str, Field(min_length=1)]
    """Shown when the lesson starts."""
    value: LessonValue
    """The parameter's value during the lesson: a constant or a sampler."""
    completion_criteria: CompletionCriteria | None = None
    """When to move to the next lesson (the last lesson has none)."""


class CurriculumSpec(Frozen):
    """An environment parameter that changes by lessons, advanced by the launcher on the episode return mean."""

    curriculum: Annotated[list[Lesson], Field(min_length=1)]
    """The lessons, in order."""

    @model_validator(mode="after")
    def _every_lesson_but_the_last_ends(self) -> CurriculumSpec:
        for index, lesson in enumerate(self.curriculum[:-1]):
            if lesson.completion_criteria is None:
                raise ValueError(f"curriculum[{index}] ({lesson.name}): needs completion_criteria (every lesson but the last)")
        names = [lesson.name for lesson in self.curriculum]
        if len(set(names)) != len(names):
            raise ValueError("curriculum: lesson names must differ")
        return self


def _parameter_kind(value: Any) -> str:
    if isinstance(value, CurriculumSpec) or (isinstance(value, dict) and "curriculum" in value):
        return "curriculum"
    return _value_kind(value)


ParameterValue = Annotated[
    Annotated[float, Tag("constant")] | Annotated[SamplerSpec, Tag("sampler")] | Annotated[CurriculumSpec, Tag("curriculum")],
    Discriminator(_parameter_kind),
]
"""An environment parameter: a constant, a sampler (a mapping) or a curriculum; their errors are reported alone."""


class EnvironmentSpec(Frozen):
    """The Unity environment: a registry name or a Linux player binary."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_\-]+$")] | None = None
    """ML-Agents registry name such as `Basic`: rlrunner's bundled registry first, then ML-Agents' default one."""
    binary: Annotated[str, Field(min_length=1)] | None = None
    """Linux player build: a local path or an `s3://` URI (on SageMaker it arrives in the `train` channel)."""
    no_graphics: bool = True
    """Run the player without rendering (`-nographics -batchmode`)."""
    player_args: list[str] = []
    """Extra command-line arguments passed to the player."""
    time_scale: Annotated[float, Field(gt=0, le=100)] = 20.0
    """Unity time scale sent over the engine-configuration side channel."""
    parameters: dict[str, ParameterValue] = {}
    """Environment parameters sent over ML-Agents' environment-parameters side channel: a constant, a sampler drawn per
    episode, or a curriculum of lessons."""
    max_episode_steps: Annotated[int, Field(ge=1)] | None = None
    """Truncate an episode after this many agent steps (None: the environment decides)."""
    timeout_s: Annotated[float, Field(gt=0, le=3600)] = 60.0
    """Seconds to wait for the player to connect."""
    num_areas: Annotated[int, Field(ge=1, le=256)] = 1
    """Independent training areas in one player; each is one sub-environment."""
    uint8_visual: bool = False
    """Visual observations as uint8 0-255 instead of float 0-1."""
    flatten_branched: bool = False
    """Flatten multi-discrete actions into one discrete action."""
    allow_multiple_obs: bool = False
    """Return all observations as a tuple instead of one: the first visual one, the vector ones, or one camera and the vectors flat."""
    base_port: Annotated[int, Field(ge=1024, le=65000)] = 5005
    """Lowest port tried for the ML-Agents gRPC server."""

    @model_validator(mode="after")
    def _name_xor_binary(self) -> EnvironmentSpec:
        if (self.name is None) == (self.binary is None):
            raise ValueError("give exactly one of environment.name and environment.binary")
        s3 = self.binary is not None and self.binary.startswith("s3:")
        if s3 and (not re.match(S3_URI_PATTERN, str(self.binary)) or str(self.binary).endswith("/")):
            raise ValueError(f"environment.binary: not an S3 object URI: {self.binary!r}")
        return self

    @property
    def binary_on_s3(self) -> bool:
        """Whether the player build is read from S3 (through the `train` channel)."""
        return self.binary is not None and self.binary.startswith("s3://")

    @property
    def binary_channel_uri(self) -> str | None:
        """The S3 folder that holds the build, used as the `train` channel."""
        if not self.binary_on_s3 or self.binary is None:
            return None
        return self.binary.rsplit("/", 1)[0] + "/"


# --- algorithms: one hyperparameter model per algorithm, generated from RLlib's real keys -----------


def _field_name(key: str) -> str:
    return key + "_" if keyword.iskeyword(key) or not key.isidentifier() else key


def _range_field(key: str) -> dict[str, float]:
    if key not in RANGES:
        return {}
    low, low_inclusive, high, high_inclusive = RANGES[key]
    bounds: dict[str, float] = {}
    if low is not None:
        bounds["ge" if low_inclusive else "gt"] = low
    if high is not None:
        bounds["le" if high_inclusive else "lt"] = high
    return bounds


def _annotation(key: str, kind: str) -> Any:
    number = Field(**_range_field(key))  # type: ignore[call-overload]
    if kind == "bool":
        return bool
    if kind == "int":
        return Annotated[int, number]
    if kind == "float":
        if key in ("lr", "entropy_coeff"):
            # a schedule [[timestep, value], ...]: YAML gives lists, so the pair (not its items) is lax
            return Annotated[float, number] | list[Annotated[tuple[Annotated[int, Strict()], Annotated[float, Strict()]], Strict(False)]]
        return Annotated[float, number]
    if kind == "auto":
        return Annotated[int, Field(ge=1)] | Literal["auto"] | float
    if kind == "str":
        return str
    if kind == "list":
        return list[JsonValue]
    if kind == "dict":
        return dict[str, JsonValue]
    return JsonValue


class RllibKeys(BaseModel):
    """Base of the generated models of RLlib config keys (field names may differ from the keys: `lambda_`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False, strict=True, allow_inf_nan=False)

    def to_rllib(self) -> dict[str, Any]:
        """The keys the user set, under RLlib's names (what `AlgorithmConfig.update_from_dict` takes)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _keys_model(name: str, keys: dict[str, str], doc: str, base: type[RllibKeys] = RllibKeys) -> type[RllibKeys]:
    fields: dict[str, Any] = {
        _field_name(key): (_annotation(key, kind) | None, Field(None, alias=key, description=f"RLlib `{key}`"))
        for key, kind in keys.items()
    }
    return create_model(name, __base__=base, __doc__=doc, **fields)


class ModelSpecBase(RllibKeys):
    """Fields of `algorithm.model` that rlrunner adds to RLlib's DefaultModelConfig."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=False, use_attribute_docstrings=True, strict=True, allow_inf_nan=False
    )

    module: Annotated[str, Field(pattern=MODULE_PATTERN)] | None = None
    """Custom RLModule as `file:Class` (a Python file in the experiment's source dir), or `rlrunner:ImageVectorModule`
    (shipped). None: RLlib's default model, or ImageVectorModule for a camera image beside vector observations."""
    module_config: dict[str, JsonValue] = {}
    """Keyword arguments given to the custom RLModule as its `model_config`."""


    def default_model_config(self) -> dict[str, Any]:
        """The RLlib DefaultModelConfig keys the user set (rlrunner's own fields left out)."""
        return {key: value for key, value in self.to_rllib().items() if key not in ("module", "module_config")}


@cache
def model_spec_class() -> type[ModelSpecBase]:
    """`algorithm.model`: RLlib's DefaultModelConfig keys plus an optional custom RLModule."""
    return _keys_model("ModelSpec", load_table()["model"], "The policy network.", ModelSpecBase)  # type: ignore[return-value]


class AlgorithmSpecBase(Frozen):
    """What every generated algorithm variant has: its name, its hyperparameters and its model."""

    name: str
    """RLlib algorithm name."""
    hyperparameters: RllibKeys
    """RLlib config keys."""
    model: ModelSpecBase
    """The policy network."""


def _algorithm_class(name: str) -> type[AlgorithmSpecBase]:
    hyperparameters = _keys_model(
        f"{name}Hyperparameters", load_table()["algorithms"][name], f"{name} hyperparameters (RLlib config keys)."
    )
    model = model_spec_class()
    return create_model(
        f"{name}Algorithm",
        __base__=AlgorithmSpecBase,
        __doc__=f"RLlib {name}.",
        name=(Literal[name], Field(description="RLlib algorithm name.")),
        hyperparameters=(hyperparameters, Field(default_factory=hyperparameters, description="RLlib config keys.")),
        model=(model, Field(default_factory=model, description="The policy network.")),
    )


ALGORITHM_CLASSES = {name: _algorithm_class(name) for name in ALGORITHMS}
if TYPE_CHECKING:  # the variants are generated: type checkers see their common base
    AlgorithmSpec = AlgorithmSpecBase
else:
    AlgorithmSpec = Annotated[Union[tuple(ALGORITHM_CLASSES.values())], Field(discriminator="name")]  # noqa: UP007


def dump_algorithm(algorithm: AlgorithmSpecBase) -> dict[str, Any]:
    """The algorithm block as the user set it, under RLlib's key names (unset RLlib keys left out)."""
    return {"name": algorithm.name, "hyperparameters": algorithm.hyperparameters.to_rllib(), "model": algorithm.model.to_rllib()}


def _dump(model: ExperimentSpec | Experiment, exclude: set[str] | None = None) -> dict[str, Any]:
    data = model.model_dump(mode="json", by_alias=True, exclude=exclude)
    data["algorithm"] = dump_algorithm(model.algorithm)
    if not data.get("behaviors"):
        data.pop("behaviors", None)  # specs without the section keep their run ids
    stop = (data.get("training") or {}).get("stop") or {}
    if stop.get("evaluation_return_mean", 0) is None:
        del stop["evaluation_return_mean"]  # (the same for a criterion added later)
    return data


# --- training, compute, deploy, sweep -------------------------------------------------------------


BehaviorName = Annotated[str, Field(min_length=1, max_length=256, pattern=r"^[^#\s][^#]*$")]
"""A behaviour as the scene reports it (`Walker?team=0`), or without `?team=N` (all its teams)."""
ReturnTarget = Annotated[float | dict[BehaviorName, float], Field(union_mode="left_to_right")]
"""A mean return to reach: one number, or one per behaviour."""


class StopSpec(Frozen):
    """When training stops: the first criterion reached."""

    timesteps: Annotated[int, Field(ge=1)] | None = None
    """Environment steps sampled (lifetime)."""
    iterations: Annotated[int, Field(ge=1)] | None = None
    """Training iterations."""
    episode_return_mean: ReturnTarget | None = None
    """Mean return of the last training episodes (all agents), or `{behaviour: return}`: each named behaviour's
    (name without `?team=N` covers all its teams; every one listed must reach its value)."""
    evaluation_return_mean: ReturnTarget | None = None
    """Mean return of the greedy policy over `training.evaluation_episodes` episodes, evaluated after every
    iteration (only when this is set); a number, or `{behaviour: return}` as for `episode_return_mean`."""
    time_s: Annotated[float, Field(gt=0)] | None = None
    """Wall-clock seconds of training."""

    @model_validator(mode="after")
    def _at_least_one(self) -> StopSpec:
        if all(value is None for value in self.model_dump().values()):
            raise ValueError(
                "give at least one stop criterion (timesteps, iterations, episode_return_mean, evaluation_return_mean, time_s)"
            )
        return self

    def behavior_targets(self) -> dict[str, list[str]]:
        """Behaviour name -> the criteria that name it (checked against the scene when it is known)."""
        named: dict[str, list[str]] = {}
        for criterion in ("episode_return_mean", "evaluation_return_mean"):
            target = getattr(self, criterion)
            for name in target if isinstance(target, dict) else ():
                named.setdefault(name, []).append(criterion)
        return named


class TrainingSpec(Frozen):
    """How the training loop runs."""

    stop: StopSpec
    """Stop criteria."""
    checkpoint_frequency: Annotated[int, Field(ge=1)] = 1
    """Write a checkpoint every this many iterations (and always at the end)."""
    keep_checkpoints: Annotated[int, Field(ge=1, le=100)] = 3
    """How many of the newest checkpoints to keep."""
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = 0
    """Random seed for RLlib and the environment (None: not seeded)."""
    env_runners: Annotated[int, Field(ge=0, le=1024)] | Literal["auto"] = "auto"
    """Number of remote RLlib env runners (0: the driver samples); `auto` = the fastest layout measured on Basic: 0 on up to 2 CPUs, else CPUs - 1."""
    envs_per_env_runner: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = "auto"
    """Player processes per env runner, their exchanges in flight together; `auto` = CPUs per sampling process (1 with num_areas > 1)."""
    restart_failed_env_runners: bool = True
    """Recreate an env runner whose environment crashed, and go on training."""
    evaluation_episodes: Annotated[int, Field(ge=1, le=10000)] = 20
    """Greedy episodes played by the exported policy at the end of a run."""
    init_from: str | None = None
    """Start from the policy weights of another run: its run directory or a checkpoint folder (like `mlagents-learn --initialize-from`); local runs only."""


class SpotSpec(Frozen):
    """Managed spot training."""

    max_wait: Annotated[int, Field(ge=1, le=28 * 86400)]
    """Seconds to wait for spot capacity plus training; at least compute.max_run."""


class ClusterSpec(Frozen):
    """How the instances of a multi-instance job form one Ray cluster."""

    join_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 600.0
    """Seconds the first host waits for the others to join (and the others for it)."""
    min_hosts: Annotated[int, Field(ge=1, le=100)] | None = None
    """Hosts (the first included) enough to start training once join_timeout_s passed (None: every host)."""
    head_timeout_s: Annotated[float, Field(gt=0, le=86400)] = 60.0
    """Seconds a host waits for an unreachable first host before it gives up with exit 4."""


def _instance_type_check(kind: str, known: Any) -> Any:
    def check(value: str) -> str:
        if value == "local" and kind == "training":
            return value
        types = known()
        if value not in types:
            close = difflib.get_close_matches(value, sorted(types), n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{value!r} is not a SageMaker {kind} instance type (rlrunner/instance_types.json){hint}")
        return value

    return AfterValidator(check)


def _not_reserved_tag(key: str) -> str:
    if key.lower().startswith(("aws:", RESERVED_TAG_PREFIX)):
        raise ValueError(f"uses a reserved prefix (aws:, {RESERVED_TAG_PREFIX})")
    return key


def _not_reserved_variable(key: str) -> str:
    if key.startswith((RESERVED_ENV_PREFIX, "SM_")):
        raise ValueError(f"uses a reserved prefix ({RESERVED_ENV_PREFIX}, SM_)")
    return key


class ComputeSpec(Frozen):
    """Where training runs."""

    instance_type: Annotated[str, Field(pattern=INSTANCE_TYPE_PATTERN), _instance_type_check("training", training_types)] = "local"
    """SageMaker instance type such as `ml.c5.2xlarge`, or `local` for this machine."""
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    """Number of instances (more than one forms a Ray cluster)."""
    image: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    """Training image URI (None: the `rlrunner` image in the account's ECR)."""
    role: Annotated[str, Field(pattern=ROLE_ARN_PATTERN)] | None = None
    """IAM role ARN (None: `$SAGEMAKER_ROLE`, else the SDK's execution role)."""
    output_path: Annotated[str, Field(pattern=S3_URI_PATTERN)] | None = None
    """S3 prefix for model artifacts (None: the session's default bucket)."""
    base_job_name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=MAX_BASE_JOB_NAME)] | None = None
    """Training job name prefix (None: the experiment name)."""
    max_run: Annotated[int, Field(ge=1, le=28 * 86400)] = 86400
    """Maximum training seconds."""
    spot: SpotSpec | None = None
    """Use managed spot instances (needs max_wait >= max_run)."""
    checkpoint_s3_uri: Annotated[str, Field(pattern=S3_URI_PATTERN)] | None = None
    """S3 URI that /opt/ml/checkpoints is synced to (a spot restart resumes from it)."""
    volume_size: Annotated[int, Field(ge=1, le=16384)] = 30
    """EBS volume size in GB."""
    tags: dict[
        Annotated[str, Field(min_length=1, max_length=128, pattern=TAG_PATTERN), AfterValidator(_not_reserved_tag)],
        Annotated[str, Field(max_length=256, pattern=TAG_PATTERN)],
    ] = {}
    """Tags on the training job (rlrunner adds its run id and spec hash)."""
    environment: dict[
        Annotated[str, Field(pattern=ENV_KEY_PATTERN), AfterValidator(_not_reserved_variable)], Annotated[str, Field(max_length=512)]
    ] = {}
    """Extra environment variables for the training container."""
    cluster: ClusterSpec = ClusterSpec()
    """Multi-instance jobs: how the hosts form one Ray cluster."""

    @model_validator(mode="after")
    def _spot_and_names(self) -> ComputeSpec:
        if self.spot is not None and self.spot.max_wait < self.max_run:
            raise ValueError(
                f"compute.spot.max_wait: must be >= compute.max_run ({self.spot.max_wait} < {self.max_run})"
            )
        if len(self.tags) > 48:
            raise ValueError(f"compute.tags: at most 48 tags (got {len(self.tags)}; rlrunner adds 2 of SageMaker's 50)")
        if not self.is_local and self.cluster.min_hosts is not None and self.cluster.min_hosts > self.instance_count:
            raise ValueError(
                f"compute.cluster.min_hosts: must be <= compute.instance_count ({self.cluster.min_hosts} > {self.instance_count})"
            )
        return self

    def on_this_machine(self) -> ComputeSpec:
        """The same compute run locally (`--local`)."""
        return self.model_copy(update={"instance_type": "local"})

    @property
    def is_local(self) -> bool:
        """Whether the job runs on this machine."""
        return self.instance_type == "local"


class DeploySpec(Frozen):
    """The SageMaker endpoint that serves the trained policy."""

    instance_type: Annotated[str, Field(pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$"), _instance_type_check("hosting", hosting_types)] = "ml.c5.large"
    """Endpoint instance type."""
    instance_count: Annotated[int, Field(ge=1, le=100)] = 1
    """Endpoint instance count."""
    endpoint_name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)] | None = None
    """Endpoint name (None: derived from the experiment name and run id)."""


class Distribution(Frozen):
    """A random-search distribution: exactly one of the keys."""

    uniform: Annotated[list[float], Field(min_length=2, max_length=2)] | None = None
    """Uniform between the two bounds."""
    loguniform: Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=2, max_length=2)] | None = None
    """Log-uniform between the two (positive) bounds."""
    choice: Annotated[list[JsonValue], Field(min_length=1)] | None = None
    """One of the values."""
    randint: Annotated[list[int], Field(min_length=2, max_length=2)] | None = None
    """An integer between the two bounds, both included."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [key for key, value in self.model_dump().items() if value is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, loguniform, choice, randint")
        bounds = self.uniform or self.loguniform or self.randint
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"{given[0]}: lower bound {bounds[0]} is above upper bound {bounds[1]}")
        return self


class SweepSpec(Frozen):
    """Many runs from one spec: a grid or random search over dotted paths, with seeds as an axis."""

    method: Literal["grid", "random"] = "grid"
    """`grid`: every combination of the listed values; `random`: `samples` draws."""
    parameters: dict[
        Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*(\.[A-Za-z0-9_]+)+$")],
        Annotated[list[JsonValue], Field(min_length=1)] | Distribution,
    ] = {}
    """Dotted spec paths and their values (a list) or distribution."""
    samples: Annotated[int, Field(ge=1, le=100000)] | None = None
    """Number of random draws (random only)."""
    seed: int = 0
    """Seed of the random draws."""
    seeds: list[Annotated[int, Field(ge=0)]] = []
    """Training seeds: every point runs once per seed."""
    max_parallel: Annotated[int, Field(ge=1, le=1000)] = 1
    """How many runs at once."""

    @model_validator(mode="after")
    def _method_matches(self) -> SweepSpec:
        distributions = [path for path, value in self.parameters.items() if isinstance(value, Distribution)]
        if self.method == "grid" and distributions:
            raise ValueError(
                f"sweep.parameters.{distributions[0]}: a distribution needs sweep.method random (grid takes lists only)"
            )
        if self.method == "random" and self.samples is None:
            raise ValueError("sweep.samples: required with sweep.method random")
        if self.method == "grid" and self.samples is not None:
            raise ValueError("sweep.samples: only with sweep.method random")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("sweep.seeds: values repeat")
        if self.seeds and "training.seed" in self.parameters:
            raise ValueError("sweep.seeds: training.seed is also a swept parameter; give the seeds in one place")
        if self.size > MAX_SWEEP_POINTS:
            combos = "draws" if self.method == "random" else "combinations"
            raise ValueError(
                f"sweep.parameters: {self.size:,} runs ({self.size // max(len(self.seeds), 1):,} {combos} x {max(len(self.seeds), 1)} seed(s)), "
                f"more than {MAX_SWEEP_POINTS:,} (the limit)"
            )
        return self

    @property
    def size(self) -> int:
        """Number of runs: combinations (grid) or draws (random), times the seeds."""
        combos = (self.samples or 0) if self.method == "random" else math.prod(len(v) for v in self.parameters.values() if isinstance(v, list))
        return combos * max(len(self.seeds), 1)


POLICY_PATTERN = r"^[A-Za-z0-9_\-.]+$"


class BehaviorSettings(Frozen):
    """One behaviour of the scene, by its name without `?team=N`: the policy that drives it and its overrides."""

    policy: Annotated[str, Field(pattern=POLICY_PATTERN)] | None = None
    """The policy (one RLModule) that drives it; behaviours naming the same policy share it (None: the behaviour's name)."""
    model: dict[str, JsonValue] = {}
    """RLlib DefaultModelConfig keys for this policy, over `algorithm.model`."""
    hyperparameters: dict[str, JsonValue] = {}
    """RLlib config keys for this policy's learner, over `algorithm.hyperparameters` (e.g. `lr`, `entropy_coeff`)."""


def _check_behaviors(behaviors: dict[str, BehaviorSettings], algorithm: str) -> None:
    table = load_table()
    policies: dict[str, tuple[str, BehaviorSettings]] = {}
    for name, settings in behaviors.items():
        for key in settings.model:
            if key not in table["model"] or key in ("module", "module_config"):
                raise ValueError(f"behaviors.{name}.model.{key}: not an RLlib DefaultModelConfig key")
        for key in settings.hyperparameters:
            if key not in table["algorithms"][algorithm]:
                raise ValueError(f"behaviors.{name}.hyperparameters.{key}: not an RLlib {algorithm} config key")
        policy = settings.policy or name
        other = policies.setdefault(policy, (name, settings))
        if other[0] != name and (other[1].model, other[1].hyperparameters) != (settings.model, settings.hyperparameters):
            raise ValueError(
                f"behaviors.{name}: shares policy {policy!r} with behaviors.{other[0]}, so give the model and "
                "hyperparameters in one of them only (or the same in both)"
            )


BehaviorsField = dict[Annotated[str, Field(pattern=r"^[^?#]+$")], BehaviorSettings]


class ExperimentSpec(Frozen):
    """One experiment: environment, algorithm, training, compute, deployment and an optional sweep."""

    name: Annotated[str, Field(pattern=NAME_PATTERN, max_length=MAX_BASE_JOB_NAME)]
    """Experiment name: letters, digits and hyphens, at most 39 characters (it prefixes SageMaker job names)."""
    description: str = ""
    """Free text."""
    source_dir: Annotated[str, Field(min_length=1)] | None = None
    """Folder (relative to the spec file) with custom code such as RLModules; uploaded with the job."""
    environment: EnvironmentSpec
    """The Unity environment."""
    algorithm: AlgorithmSpec
    """The RLlib algorithm, its hyperparameters and model."""
    training: TrainingSpec
    """Stop criteria, checkpoints, seed, env runners."""
    compute: ComputeSpec = ComputeSpec()
    """Where training runs."""
    deploy: DeploySpec = DeploySpec()
    """The inference endpoint."""
    sweep: SweepSpec | None = None
    """Run many variants of this experiment."""
    behaviors: BehaviorsField = {}
    """Per behaviour of the scene (name without `?team=N`): its policy and model/hyperparameter overrides; by default every behaviour gets its own policy."""

    @model_validator(mode="after")
    def _custom_module_needs_source_dir(self) -> ExperimentSpec:
        if self.algorithm.model.module not in (None, *BUILTIN_MODULES) and self.source_dir is None:
            raise ValueError("algorithm.model.module: needs source_dir, the folder that holds the module's file")
        _check_behaviors(self.behaviors, self.algorithm.name)
        return self

    def on_this_machine(self) -> ExperimentSpec:
        """The same experiment with `compute.instance_type: local` (what `--local` runs)."""
        return self.model_copy(update={"compute": self.compute.on_this_machine()})

    def to_data(self) -> dict[str, Any]:
        """The resolved spec as JSON-able data (what a run directory keeps; its identity: `rlrunner.contract.identity`)."""
        return _dump(self)


class Experiment(Frozen):
    """What the launcher needs: the training part of a spec plus the run's identity."""

    format: Literal[1] = 1
    """Version of this structure."""
    run_id: str
    """The run id of the spec it was planned from."""
    spec_hash: str
    """SHA-256 of the run identity (`rlrunner.contract.identity`); the run id is its first 10 hex digits."""
    name: str
    """Experiment name."""
    source_dir: str | None = None
    """Basename of the source dir inside the job's code dir."""
    environment: EnvironmentSpec
    """The Unity environment."""
    algorithm: AlgorithmSpec
    """The RLlib algorithm."""
    training: TrainingSpec
    """How the training loop runs."""
    cluster: ClusterSpec = ClusterSpec()
    """Multi-instance jobs: how the hosts form one Ray cluster."""
    behaviors: BehaviorsField = {}
    """Per behaviour: its policy and overrides."""

    def to_data(self) -> dict[str, Any]:
        """The experiment as JSON-able data (what the env vars carry)."""
        return _dump(self)
