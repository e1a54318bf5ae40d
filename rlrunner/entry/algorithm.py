"""From a decoded experiment to an RLlib `AlgorithmConfig` on the new API stack (no I/O, no Ray cluster).

The launcher hands in plain values (CPU count, the registered env name, the env config and the
custom RLModule class it loaded); everything here is a pure function of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from rlrunner.schema import Experiment

if TYPE_CHECKING:
    import gymnasium
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

ENV_NAME = "rlrunner-unity"
"""The name the launcher registers the Unity env creator under."""

# Which action spaces each algorithm's new-stack RLModule and loss accept (RLlib fails deep inside a
# remote actor otherwise, with an error that does not name the cause).
ACTION_SPACES: dict[str, tuple[str, ...]] = {
    "PPO": ("Discrete", "MultiDiscrete", "Box"),
    "APPO": ("Discrete", "MultiDiscrete", "Box"),
    "IMPALA": ("Discrete", "MultiDiscrete", "Box"),
    "DQN": ("Discrete",),
    "SAC": ("Discrete", "Box"),
}


class AlgorithmSetupError(ValueError):
    """The experiment cannot be turned into a working RLlib algorithm (a user error, explained)."""


DRIVER_SAMPLING_MAX_CPUS = 2
"""Up to this many CPUs `env_runners: auto` samples in the driver: on 2 cores a remote env runner
beside a synchronous learner only adds a process (and its start-up) to the same cores (docs/benchmarks.md)."""

MAX_AUTO_PLAYERS = 8


def resolve_env_runners(setting: int | str, num_cpus: int, *, cluster: bool = False) -> int:
    """`training.env_runners`: an explicit count, or `auto`: 0 (the driver samples) on up to 2 CPUs, else CPUs - 1.

    A multi-host cluster always gets remote env runners (its other hosts' CPUs are only reachable that way).
    """
    if setting == "auto":
        if num_cpus <= DRIVER_SAMPLING_MAX_CPUS and not cluster:
            return 0
        return max(num_cpus - 1, 1)
    return int(setting)


def resolve_players(setting: int | str, num_cpus: int, num_env_runners: int, num_areas: int) -> int:
    """`training.envs_per_env_runner`: an explicit count, or `auto` = CPUs per sampling process.

    A real Unity player keeps about one core busy in physics while its env runner waits, so each
    sampling process (the driver when it samples, else each env runner) drives as many players as
    there are cores for it; a player with several areas already batches its exchange (1).
    """
    if setting != "auto":
        return int(setting)
    if num_areas > 1:
        return 1
    return max(1, min(num_cpus // max(num_env_runners, 1), MAX_AUTO_PLAYERS))


def required_cpus(num_env_runners: int) -> int:
    """CPUs the algorithm asks Ray for: one for the driver (learner) and one per env runner."""
    return 1 + num_env_runners


def check_spaces(algorithm: str, observation_space: gymnasium.Space[Any], action_space: gymnasium.Space[Any]) -> None:
    """Reject an algorithm/space mismatch (e.g. DQN on continuous actions) before Ray starts."""
    kind = type(action_space).__name__
    allowed = ACTION_SPACES.get(algorithm, ())
    if kind not in allowed:
        hint = " (use PPO, APPO, IMPALA or SAC for continuous actions)" if kind == "Box" else ""
        raise AlgorithmSetupError(
            f"algorithm.name: {algorithm} does not support the environment's {kind} action space "
            f"{action_space}; it supports {', '.join(allowed)}{hint}"
        )
    if type(observation_space).__name__ != "Box":
        raise AlgorithmSetupError(
            f"environment: observation space {observation_space} is not a single Box; RLlib's default model "
            "and rlrunner's ONNX export need one (set environment.allow_multiple_obs: false)"
        )


def env_config(experiment: Experiment, executable: Path, *, log_dir: str | None) -> dict[str, Any]:
    """What `make_unity_env` receives: the typed environment spec, the player executable, the seed and the log dir."""
    from rlrunner.entry.unity_env import unity_env_config

    return unity_env_config(experiment.environment, executable, seed=experiment.training.seed, log_dir=log_dir)


def model_config(experiment: Experiment) -> dict[str, Any]:
    """RLlib DefaultModelConfig keys the user set (rlrunner's own keys removed)."""
    data: dict[str, Any] = dict(experiment.to_data()["algorithm"]["model"])
    data.pop("module", None)
    data.pop("module_config", None)
    return data


def conv_filters(observation_space: Any, model: Mapping[str, Any], where: str = "algorithm.model") -> tuple[list[Any] | None, str | None]:
    """The CNN filters of RLlib's default model for an image observation (rank 3, height x width x channels).

    The user's `conv_filters` are checked against the image (a layer that leaves no pixel is a user
    error); without them RLlib's default for the shape is kept when it has one, else two 3x3 layers
    (kernels cut to the image, the second of stride 2 along axes of 4 pixels or more) fit a small image.
    Returns the filters to set (None: keep the config) and the line that says the choice (None: no image);
    `where` is the spec path of `model` (a behaviour's own `model:` on the multi-agent path).
    """
    shape = tuple(getattr(observation_space, "shape", None) or ())
    if len(shape) != 3:
        return None, None
    size = f"{shape[0]}x{shape[1]}x{shape[2]}"
    user = model.get("conv_filters")
    if user:
        _check_conv_filters(shape, user, where)
        return None, f"CNN encoder: {where}.conv_filters {user} on the {size} images"
    from ray.rllib.models.utils import get_filter_config

    try:
        default = get_filter_config(list(shape))  # type: ignore[no-untyped-call]
        return None, f"CNN encoder: RLlib's default conv_filters {default} for the {size} images"
    except ValueError:  # RLlib has defaults for 10x10, 42x42, 64x64, 84x84 and 96x96 only
        pass
    from rlrunner.entry.models import small_image_filters

    filters = small_image_filters(shape)
    return filters, (
        f"CNN encoder: conv_filters {filters} chosen for the small {size} images "
        "(RLlib has no default for them; algorithm.model.conv_filters sets others)"
    )


def _check_conv_filters(shape: tuple[int, ...], filters: Any, model: str) -> None:
    # RLlib's own arithmetic (CNNEncoderConfig.output_dims): "same" padding keeps ceil(size / stride)
    # pixels, "valid" floor((size - kernel) / stride) + 1; a layer left with no pixel fails to build.
    height, width = int(shape[0]), int(shape[1])
    for index, layer in enumerate(filters):
        where = f"{model}.conv_filters[{index}] {layer}"
        if not isinstance(layer, list | tuple) or len(layer) not in (3, 4):
            raise AlgorithmSetupError(f"{where}: expected [channels, kernel, stride] or [channels, kernel, stride, padding]")
        kernel, stride = ([v, v] if isinstance(v, int) else list(v) for v in layer[1:3])
        padding = layer[3] if len(layer) == 4 else "same"
        if padding == "same":
            height, width = -(-height // stride[0]), -(-width // stride[1])
        else:
            height, width = (height - kernel[0]) // stride[0] + 1, (width - kernel[1]) // stride[1] + 1
        if height < 1 or width < 1:
            raise AlgorithmSetupError(
                f"{where}: does not fit the {shape[0]}x{shape[1]}x{shape[2]} image observation (no pixel left after "
                f"this layer); use smaller kernels or strides, 'same' padding, or leave conv_filters unset to let rlrunner choose"
            )


def image_vector_choice(
    algorithm: str, layout: Any, model: Mapping[str, Any], where: str, *, named: bool
) -> tuple[dict[str, Any], str]:
    """rlrunner's `ImageVectorModule` for a behaviour that observes a camera image and a vector: its model config and the line that says so.

    `layout`: the behaviour's `rlrunner.unity.spaces.ImageVectorLayout`; `model`: the user's model keys
    (`where` is their spec path); `named`: the spec names the module (else it is chosen automatically).
    """
    from rlrunner.entry.models import IMAGE_VECTOR_ALGORITHMS, image_vector_config

    shape = tuple(layout.image_shape)
    size = f"{shape[0]}x{shape[1]}x{shape[2]}"
    if algorithm not in IMAGE_VECTOR_ALGORITHMS:
        raise AlgorithmSetupError(
            f"algorithm.name: the scene observes a {size} camera image and a {layout.vector_size}-value vector together, "
            f"which rlrunner's ImageVectorModule drives for {', '.join(IMAGE_VECTOR_ALGORITHMS)} only, not {algorithm}"
        )
    image = _image_space(shape)
    _, filters_line = conv_filters(image, model, where)  # checks the user's filters against the image
    config = image_vector_config(model, shape, layout.vector_size)
    how = "algorithm.model.module" if named else "chosen for camera and vector observations"
    if model.get("conv_filters"):
        cnn = f"{where}.conv_filters {config['conv_filters']}"
    else:
        cnn = f"conv_filters {config['conv_filters']}" + (" (RLlib's default for the size)" if "RLlib's default" in str(filters_line) else " (fitted to the small image)")
    return config, (
        f"model: rlrunner:ImageVectorModule ({how}): a CNN over the {size} images with {cnn}, "
        f"an MLP {config['fcnet_hiddens']} over the {layout.vector_size}-value vector, concatenated, "
        f"then policy and value heads with hidden layers {config['head_fcnet_hiddens']}"
    )


def _image_space(shape: tuple[int, ...]) -> Any:
    import gymnasium
    import numpy as np

    return gymnasium.spaces.Box(0.0, 1.0, shape, dtype=np.float32)


def policy_model(experiment: Experiment, base_model: Mapping[str, Any], behaviors: list[str]) -> tuple[dict[str, Any], str]:
    """A policy's model config: `base_model` under the first of its behaviours' own `model:`; and that spec path."""
    named = [name.split("?", 1)[0] for name in behaviors if name.split("?", 1)[0] in experiment.behaviors]
    if not named:
        return dict(base_model), "algorithm.model"
    own = dict(experiment.behaviors[named[0]].model)
    return {**base_model, **own}, f"behaviors.{named[0]}.model" if own else "algorithm.model"


def behavior_policies(behaviors: list[str], experiment: Experiment) -> dict[str, str]:
    """Fully qualified behaviour name -> policy id: `behaviors.<name>.policy`, else the name without `?team=N`.

    A behaviour named in the spec but absent from the scene is a user error that names what the scene has.
    """
    from rlrunner.unity.multi_agent import policy_name

    present = {policy_name(name) for name in behaviors}
    missing = sorted(set(experiment.behaviors) - present)
    if missing:
        raise AlgorithmSetupError(
            f"behaviors.{missing[0]}: the scene has no behaviour {missing[0]!r}; it has "
            f"{', '.join(sorted(present))} (behaviour names without ?team=N)"
        )
    result = {}
    for name in behaviors:
        settings = experiment.behaviors.get(policy_name(name))
        result[name] = settings.policy if settings is not None and settings.policy else policy_name(name)
    return result


class PolicyMapping:
    """RLlib's `policy_mapping_fn`: an agent id of `UnityMultiAgentEnv` -> its behaviour's policy (picklable)."""

    def __init__(self, policies: Mapping[str, str]) -> None:
        self.policies = dict(policies)

    def __call__(self, agent_id: Any, episode: Any = None, **kwargs: Any) -> str:
        from rlrunner.unity.multi_agent import behavior_of

        return self.policies[behavior_of(str(agent_id))]


def policy_spaces(
    spaces: Mapping[str, tuple[Any, Any]], policies: Mapping[str, str]
) -> dict[str, tuple[Any, Any]]:
    """Policy id -> (observation space, action space); behaviours that share a policy must agree."""
    result: dict[str, tuple[Any, Any]] = {}
    owner: dict[str, str] = {}
    for name, pair in sorted(spaces.items()):
        policy = policies[name]
        if policy in result and result[policy] != pair:
            raise AlgorithmSetupError(
                f"behaviors: {name} and {owner[policy]} share policy {policy!r} but their spaces differ "
                f"({pair[0]}, {pair[1]} vs {result[policy][0]}, {result[policy][1]})"
            )
        result.setdefault(policy, pair)
        owner.setdefault(policy, name)
    return result


def configure_multi_agent(
    config: AlgorithmConfig,
    experiment: Experiment,
    spaces: Mapping[str, tuple[Any, Any]],
    module_class: type | None = None,
    layouts: Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """One RLModule per policy, the mapping from agents to policies and per-policy overrides; returns policy -> behaviours.

    `layouts`: behaviour -> its camera-and-vector layout; such a policy gets rlrunner's ImageVectorModule
    (unless the spec names a module of its own).
    """
    from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    policies = behavior_policies(sorted(spaces), experiment)
    by_policy = policy_spaces(spaces, policies)
    served: dict[str, list[str]] = {policy: sorted(n for n, p in policies.items() if p == policy) for policy in by_policy}
    base_model = dict(experiment.to_data()["algorithm"]["model"].get("module_config", {})) if module_class else model_config(experiment)
    specs = {}
    overrides = {}
    for policy, (observation_space, action_space) in by_policy.items():
        settings = [experiment.behaviors[n.split("?", 1)[0]] for n in served[policy] if n.split("?", 1)[0] in experiment.behaviors]
        model, where = policy_model(experiment, base_model, served[policy])
        filters = None if module_class else conv_filters(observation_space, model, where)[0]
        if filters is not None:
            model["conv_filters"] = filters
        policy_class = module_class
        layout = (layouts or {}).get(served[policy][0])
        if layout is not None and uses_image_vector_module(experiment, module_class):
            from rlrunner.entry.models import ImageVectorModule

            named = experiment.algorithm.model.module is not None
            model, _ = image_vector_choice(experiment.algorithm.name, layout, model, where, named=named)
            policy_class = ImageVectorModule
        specs[policy] = RLModuleSpec(
            module_class=policy_class,
            observation_space=observation_space,
            action_space=action_space,
            model_config=model or None,
        )
        if settings and settings[0].hyperparameters:
            overrides[policy] = dict(settings[0].hyperparameters)
    config.multi_agent(policies=set(by_policy), policy_mapping_fn=PolicyMapping(policies))
    config.rl_module(
        rl_module_spec=MultiRLModuleSpec(rl_module_specs=specs),
        algorithm_config_overrides_per_module=overrides,
    )
    return served


def configure_evaluation(config: AlgorithmConfig, episodes: int, *, multi_agent: bool) -> None:
    """The greedy policy after every iteration, in the driver with its own player(s) (`stop.evaluation_return_mean`).

    On the multi-agent path an evaluation episode lasts until every behaviour finished an agent episode,
    so `episodes` of them give every behaviour at least that many agent episodes.
    """
    from rlrunner.entry.unity_env import ROUNDS

    env_config = {**config.env_config, ROUNDS: True} if multi_agent else config.env_config
    config.evaluation(
        evaluation_interval=1,
        evaluation_duration=episodes,
        evaluation_duration_unit="episodes",
        evaluation_num_env_runners=0,
        evaluation_config={"explore": False, "env_config": env_config},
    )


def uses_image_vector_module(experiment: Experiment, module_class: type | None) -> bool:
    """Whether a camera-and-vector behaviour gets rlrunner's ImageVectorModule: no module named, or that one."""
    from rlrunner.schema import BUILTIN_MODULES

    return module_class is None or experiment.algorithm.model.module in BUILTIN_MODULES


def build_algorithm_config(
    experiment: Experiment,
    *,
    num_cpus: int,
    env_config: Mapping[str, Any],
    module_class: type | None = None,
    env_name: str = ENV_NAME,
    cluster: bool = False,
    multi_agent: bool = False,
) -> AlgorithmConfig:
    """The RLlib AlgorithmConfig for an experiment (new API stack, torch); `multi_agent`: `UnityMultiAgentEnv` runners."""
    from ray.rllib.algorithms.registry import ALGORITHMS
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    training = experiment.training
    environment = experiment.environment
    if not multi_agent and environment.num_areas > 1 and training.envs_per_env_runner != "auto" and training.envs_per_env_runner > 1:
        raise AlgorithmSetupError(
            f"training.envs_per_env_runner ({training.envs_per_env_runner}) and environment.num_areas "
            f"({environment.num_areas}): use one of them; each env runner drives either several players "
            "or one player with several areas"
        )
    algorithm = experiment.to_data()["algorithm"]
    # The registry's importer loads only this algorithm (Tune's loads them all, and DreamerV3's
    # import makes a gymnasium env that warns).
    _, config = ALGORITHMS[algorithm["name"]]()  # type: ignore[no-untyped-call]
    config.update_from_dict(dict(algorithm["hyperparameters"]))
    config.framework("torch")
    config.environment(env=env_name, env_config=dict(env_config))
    runners = resolve_env_runners(training.env_runners, num_cpus, cluster=cluster)
    players = resolve_players(training.envs_per_env_runner, num_cpus, runners, environment.num_areas)
    if multi_agent:
        from rlrunner.entry.behavior_metrics import BehaviorMetrics

        # Areas are the player's business here: one player, one MultiAgentEnv, whatever its agents.
        envs = 1 if training.envs_per_env_runner == "auto" else training.envs_per_env_runner
        config.env_runners(num_env_runners=runners, num_envs_per_env_runner=envs)
        config.callbacks(BehaviorMetrics)
    elif environment.num_areas > 1:
        # One player with N areas is one gymnasium VectorEnv: RLlib calls the creator once with num_envs.
        import gymnasium

        config.env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=environment.num_areas,
            gym_env_vectorize_mode=gymnasium.VectorizeMode.VECTOR_ENTRY_POINT,
        )
    elif players > 1:
        # K players per env runner: one PlayersVectorEnv (make_unity_env) whose exchanges overlap.
        import gymnasium

        config.environment(env_config={**env_config, "players": players})
        config.env_runners(
            num_env_runners=runners,
            num_envs_per_env_runner=players,
            gym_env_vectorize_mode=gymnasium.VectorizeMode.VECTOR_ENTRY_POINT,
        )
    else:
        config.env_runners(num_env_runners=runners, num_envs_per_env_runner=1)
    config.env_runners(create_env_on_local_worker=runners == 0)
    if training.stop.evaluation_return_mean is not None:
        configure_evaluation(config, training.evaluation_episodes, multi_agent=multi_agent)
    config.fault_tolerance(
        restart_failed_env_runners=training.restart_failed_env_runners,
        # A crashed player is recreated in place, also when the driver samples (no env runner to restart).
        restart_failed_sub_environments=training.restart_failed_env_runners,
        # The default waits 60 s before restarting a crashed env runner; a player restarts in seconds.
        delay_between_env_runner_restarts_s=1.0,
    )
    if training.seed is not None:
        config.debugging(seed=training.seed)
    if module_class is not None:
        module_options = dict(algorithm["model"].get("module_config", {}))
        config.rl_module(rl_module_spec=RLModuleSpec(module_class=module_class, model_config=module_options))
    else:
        model = model_config(experiment)
        if model:
            config.rl_module(model_config=model)
    return cast("AlgorithmConfig", config)


__all__ = [
    "ACTION_SPACES",
    "PolicyMapping",
    "behavior_policies",
    "conv_filters",
    "policy_model",
    "configure_evaluation",
    "configure_multi_agent",
    "image_vector_choice",
    "uses_image_vector_module",
    "policy_spaces",
    "ENV_NAME",
    "AlgorithmSetupError",
    "build_algorithm_config",
    "check_spaces",
    "env_config",
    "model_config",
    "required_cpus",
    "resolve_env_runners",
    "resolve_players",
]
