"""The generic launcher: train an RLlib algorithm on a Unity environment from an rlrunner experiment.

Runs as `python -m rlrunner.entry.train_unity` (the local backend) and as RLEstimator's entry point,
a script that SageMaker's toolkit runs from the uploaded code dir with the hyperparameters as
`--key value` arguments (ignored: the experiment comes from the RLRUNNER_EXPERIMENT* variables).

It reads its environment once (`read_container_env`), then: decodes the experiment, checks the
custom RLModule and the player (one probe, with clear errors), starts Ray on 127.0.0.1, trains
until a stop criterion, checkpoints atomically (resuming from the newest complete checkpoint),
prints one metrics line per iteration and exports the policy to the model dir. A failure writes
one paragraph to `<opt_ml>/output/failure` and exits non-zero; every process it started is gone
when it exits, also after SIGTERM or SIGINT.

Paths follow SageMaker's container contract; each can be redirected (the local backend does):
RLRUNNER_OPT_ML (instead of /opt/ml), SM_MODEL_DIR, SM_OUTPUT_DIR, SM_OUTPUT_DATA_DIR,
SM_INPUT_CONFIG_DIR, SM_CHANNEL_<NAME>, RLRUNNER_CHECKPOINT_DIR (default <opt_ml>/checkpoints),
RLRUNNER_CODE_DIR (default <opt_ml>/code: the folder that holds the experiment's source dir).

With several hosts (resourceconfig.json, SM_HOSTS) every host runs this launcher: the first one
trains as the driver of one Ray cluster formed from all hosts, the others lend it their Ray node
and exit when it is done (`rlrunner/entry/cluster.py`; its RLRUNNER_RAY_* and RLRUNNER_CLUSTER_*
variables, and Ray's RAY_AUTH_TOKEN(_PATH), are read here too).
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and not __package__:
    # Run as a script from the code dir: the entry files beside it (metrics.py, codec.py, …) must not
    # shadow top-level modules; rlrunner itself is installed in the image.
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]

import argparse
import contextlib
import json
import signal
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlrunner.entry.checkpoints import CheckpointStore, Progress
from rlrunner.entry.cluster import CLUSTER_VARIABLES, HeadCluster
from rlrunner.entry.codec import HEADER_KEY, CodecError, decode_experiment_env
from rlrunner.entry.metrics import format_metrics_line
from rlrunner.entry.processes import become_subreaper, stop_descendants

DEFAULT_OPT_ML = "/opt/ml"
LOOPBACK = "127.0.0.1"
FAILURE_FILE = "failure"

EXIT_OK = 0
EXIT_INVALID = 3
"""The experiment cannot run as written (custom module, algorithm/space mismatch, encoding)."""
EXIT_INFRA = 4
"""The player or Ray could not be started or reached."""
EXIT_FAILED = 5
"""Training or export failed."""
EXIT_INTERRUPTED = 130


# --------------------------------------------------------------------------------------------
# The environment, read once


@dataclass(frozen=True)
class ContainerEnv:
    """Everything the launcher takes from its environment and /opt/ml, as plain values."""

    opt_ml: Path
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    checkpoint_dir: Path
    code_dir: Path
    channels: dict[str, Path]
    num_cpus: int
    num_gpus: int
    hosts: tuple[str, ...]
    current_host: str
    experiment_vars: dict[str, str] = field(repr=False)
    cluster_vars: dict[str, str] = field(default_factory=dict, repr=False)
    run_id: str | None = None
    log_level: str = "WARNING"

    @property
    def failure_file(self) -> Path:
        """Where SageMaker looks for the reason of a failed job."""
        return self.output_dir / FAILURE_FILE

    @property
    def player_log_dir(self) -> Path:
        """Where the Unity players write their logs."""
        return self.output_data_dir / "players"


def read_container_env(environ: Mapping[str, str], *, cpu_count: int | None = None) -> ContainerEnv:
    """Read SageMaker's contract (SM_* variables, resourceconfig.json) and rlrunner's overrides."""
    opt_ml = Path(environ.get("RLRUNNER_OPT_ML", DEFAULT_OPT_ML))
    output_dir = Path(environ.get("SM_OUTPUT_DIR", opt_ml / "output"))
    config_dir = Path(environ.get("SM_INPUT_CONFIG_DIR", opt_ml / "input" / "config"))
    resource_config = _read_json(config_dir / "resourceconfig.json")
    hosts = _json_list(environ.get("SM_HOSTS")) or list(resource_config.get("hosts", [])) or ["algo-1"]
    current_host = environ.get("SM_CURRENT_HOST") or str(resource_config.get("current_host", hosts[0]))
    channels = {
        key[len("SM_CHANNEL_") :].lower(): Path(value) for key, value in environ.items() if key.startswith("SM_CHANNEL_")
    }
    return ContainerEnv(
        opt_ml=opt_ml,
        model_dir=Path(environ.get("SM_MODEL_DIR", opt_ml / "model")),
        output_dir=output_dir,
        output_data_dir=Path(environ.get("SM_OUTPUT_DATA_DIR", output_dir / "data")),
        checkpoint_dir=Path(environ.get("RLRUNNER_CHECKPOINT_DIR", opt_ml / "checkpoints")),
        code_dir=Path(environ.get("RLRUNNER_CODE_DIR", opt_ml / "code")),
        channels=channels,
        num_cpus=_int(environ.get("SM_NUM_CPUS"), cpu_count or os.cpu_count() or 1),
        num_gpus=_int(environ.get("SM_NUM_GPUS"), 0),
        hosts=tuple(str(h) for h in hosts),
        current_host=current_host,
        experiment_vars={k: v for k, v in environ.items() if k.startswith(HEADER_KEY)},
        cluster_vars={k: v for k, v in environ.items() if k in CLUSTER_VARIABLES},
        run_id=environ.get("RLRUNNER_RUN_ID"),
        log_level=environ.get("RLRUNNER_LOG_LEVEL", "WARNING").upper(),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`--print-config`; anything else (SageMaker's hyperparameters as arguments) is ignored."""
    parser = argparse.ArgumentParser(prog="train_unity", description=__doc__.split("\n")[0])
    parser.add_argument("--print-config", action="store_true", help="Print the decoded experiment as JSON and exit.")
    args, _unknown = parser.parse_known_args(list(argv))
    return args


# --------------------------------------------------------------------------------------------
# Failures


class LaunchError(Exception):
    """A failure explained in one paragraph, with the exit code it maps to."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def write_failure(env: ContainerEnv, message: str) -> None:
    """Write the reason SageMaker shows for a failed job (one paragraph)."""
    with contextlib.suppress(OSError):
        env.output_dir.mkdir(parents=True, exist_ok=True)
        env.failure_file.write_text(" ".join(message.split()) + "\n")


def _root_cause(error: BaseException) -> BaseException:
    seen = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "cause", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


_BOILERPLATE = ("To suppress all validation errors",)


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith(_BOILERPLATE)]
    # Ray wraps remote errors in a traceback; the last line names the actual exception.
    last = lines[-1].strip() if lines else ""
    return f"{type(error).__name__}: {last}" if last else type(error).__name__


# --------------------------------------------------------------------------------------------
# Signals


def _raise_interrupted(signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup that follows must not be interrupted
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signum)


def install_signal_handlers() -> None:
    """Turn SIGTERM/SIGINT into `Interrupted` once (ray.init replaces the SIGTERM handler: call again after it)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _raise_interrupted)


# --------------------------------------------------------------------------------------------
# The run


def decode_experiment(env: ContainerEnv) -> Any:
    """The experiment the plan encoded, validated with the same schema as on the host."""
    from pydantic import ValidationError

    from rlrunner.schema import Experiment

    try:
        data = decode_experiment_env(env.experiment_vars)
    except CodecError as error:
        raise LaunchError(f"the encoded experiment cannot be read: {error}", EXIT_INVALID) from None
    try:
        return Experiment.model_validate(data)
    except ValidationError as error:
        raise LaunchError(
            f"the encoded experiment does not match this launcher's schema (rlrunner versions differ?): {error}",
            EXIT_INVALID,
        ) from None


def source_dir_of(env: ContainerEnv, experiment: Any) -> Path | None:
    """The experiment's source dir inside the code dir (SageMaker uploads it as a dependency)."""
    if experiment.source_dir is None:
        return None
    return (env.code_dir / str(experiment.source_dir)).resolve()


def load_custom_module(env: ContainerEnv, experiment: Any) -> type | None:
    """The user's RLModule class, or None for RLlib's default model."""
    reference = experiment.algorithm.model.module
    if reference is None:
        return None
    from rlrunner.entry.custom_module import CustomModuleError, load_module_class

    source_dir = source_dir_of(env, experiment)
    assert source_dir is not None  # the schema requires source_dir with a module
    try:
        cls = load_module_class(source_dir, reference)
    except CustomModuleError as error:
        raise LaunchError(str(error), EXIT_INVALID) from None
    _check_module_api(cls, experiment.algorithm.name, reference)
    return cls


def _check_module_api(cls: type, algorithm: str, reference: str) -> None:
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI

    if algorithm in ("PPO", "APPO", "IMPALA") and not issubclass(cls, ValueFunctionAPI):
        raise LaunchError(
            f"algorithm.model.module {reference!r}: {algorithm} needs a value function; make {cls.__name__} "
            "also subclass ray.rllib.core.rl_module.apis.ValueFunctionAPI and implement compute_values()",
            EXIT_INVALID,
        )


def probe_environment(env_config: Mapping[str, Any]) -> tuple[Any, Any]:
    """Start the player once in this process: clear errors before Ray starts, and the env's spaces."""
    from rlrunner.entry.unity_env import UnityEnvError, make_unity_env
    from rlrunner.envs.registry import EnvironmentNotFoundError

    config = {key: value for key, value in env_config.items() if key != "num_areas"}
    try:
        probe = make_unity_env({**config, "num_areas": 1})
    except (UnityEnvError, EnvironmentNotFoundError) as error:
        raise LaunchError(f"environment: {error}", EXIT_INFRA) from None
    try:
        return probe.observation_space, probe.action_space
    finally:
        probe.close()


def configure_ray_environment() -> None:
    """Variables Ray reads when it is first imported (here and in its workers): loopback only, offline.

    Ray turns `_node_ip_address="127.0.0.1"` into the machine's routable address and then binds
    its servers to every interface, unless its "local only" mode is on (the variable below, meant
    for macOS and Windows); with it, GCS, raylet and workers listen on 127.0.0.1 only.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_NODE_IP_ADDRESS"] = LOOPBACK
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ.pop("RAY_ADDRESS", None)  # never attach to some other cluster on this machine


def start_ray(env: ContainerEnv, num_cpus: int, source_dir: Path | None) -> None:
    """A single-node Ray on 127.0.0.1 without the dashboard; workers inherit the source dir on PYTHONPATH."""
    add_to_python_path(source_dir)
    import logging

    import ray

    try:
        ray.init(
            address="local",  # a new cluster, even when `ray start` left one on this machine
            num_cpus=num_cpus,
            num_gpus=env.num_gpus,
            include_dashboard=False,
            _node_ip_address=LOOPBACK,
            logging_level=logging.WARNING,
            log_to_driver=True,
        )
    except Exception as error:
        raise LaunchError(f"Ray could not start on {LOOPBACK}: {_one_line(_root_cause(error))}", EXIT_INFRA) from None
    install_signal_handlers()  # ray.init installed its own SIGTERM handler (sys.exit), which skips the failure file


def add_to_python_path(source_dir: Path | None) -> None:
    """Put the experiment's source dir on PYTHONPATH (Ray workers started after this import from it)."""
    if source_dir is not None:
        path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = f"{source_dir}{os.pathsep}{path}" if path else str(source_dir)


@dataclass
class StopCriteria:
    """The experiment's stop criteria as plain values."""

    timesteps: int | None
    iterations: int | None
    episode_return_mean: float | None
    time_s: float | None

    def reached(self, progress: Progress) -> str | None:
        """The criterion that is met, or None."""
        if self.timesteps is not None and progress.timesteps >= self.timesteps:
            return f"timesteps {progress.timesteps} >= {self.timesteps}"
        if self.iterations is not None and progress.iteration >= self.iterations:
            return f"iterations {progress.iteration} >= {self.iterations}"
        mean = progress.episode_return_mean
        if self.episode_return_mean is not None and mean is not None and mean >= self.episode_return_mean:
            return f"episode_return_mean {mean:.4g} >= {self.episode_return_mean}"
        if self.time_s is not None and progress.time_s >= self.time_s:
            return f"time_s {progress.time_s:.0f} >= {self.time_s}"
        return None


def iteration_metrics(result: Mapping[str, Any], progress: Progress) -> dict[str, float | int | None]:
    """The values of one metrics line from an RLlib result."""
    runners = result.get("env_runners", {}) or {}
    return {
        "iteration": progress.iteration,
        "timesteps": progress.timesteps,
        "episode_return_mean": _float(runners.get("episode_return_mean")),
        "episode_return_max": _float(runners.get("episode_return_max")),
        "episode_return_min": _float(runners.get("episode_return_min")),
        "episode_len_mean": _float(runners.get("episode_len_mean")),
        "time_s": round(progress.time_s, 3),
    }


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def log(message: str) -> None:
    """A launcher message (not a metrics line)."""
    print(f"rlrunner: {message}", flush=True)


def train(env: ContainerEnv, experiment: Any, cluster: HeadCluster | None = None) -> Path:
    """Build the algorithm, resume, train to a stop criterion, checkpoint; return the final checkpoint.

    `cluster`: the formed multi-host cluster to train on, instead of a single-node Ray on this host.
    """
    from rlrunner.entry import algorithm as algo_config

    num_cpus = env.num_cpus if cluster is None else cluster.num_cpus
    module_class = load_custom_module(env, experiment)
    env_config = algo_config.env_config(experiment, log_dir=str(env.player_log_dir))
    observation_space, action_space = probe_environment(env_config)
    try:
        algo_config.check_spaces(experiment.algorithm.name, observation_space, action_space)
        config = algo_config.build_algorithm_config(
            experiment, num_cpus=num_cpus, env_config=env_config, module_class=module_class
        )
    except algo_config.AlgorithmSetupError as error:
        raise LaunchError(str(error), EXIT_INVALID) from None
    except Exception as error:
        raise LaunchError(f"algorithm.hyperparameters: RLlib rejected the configuration: {_one_line(error)}", EXIT_INVALID) from None
    config.environment(observation_space=observation_space, action_space=action_space)
    config.debugging(log_level=env.log_level)
    if cluster is not None:
        from rlrunner.entry.cluster import configure_algorithm

        configure_algorithm(config)
    try:
        config.validate()
    except Exception as error:
        raise LaunchError(f"algorithm.hyperparameters: RLlib rejected the configuration: {_one_line(error)}", EXIT_INVALID) from None
    _check_rl_module(config, observation_space, action_space, experiment)

    runners = config.num_env_runners
    if cluster is None:
        start_ray(env, max(env.num_cpus, algo_config.required_cpus(runners)), source_dir_of(env, experiment))
    else:
        cluster.connect()
    from ray.tune.registry import register_env

    from rlrunner.entry.unity_env import make_unity_env

    register_env(algo_config.ENV_NAME, make_unity_env)
    log(f"building {experiment.algorithm.name} with {runners} env runner(s) on {num_cpus} CPU(s)")
    try:
        algo = config.build_algo()
    except Exception as error:
        raise LaunchError(f"RLlib could not build {experiment.algorithm.name}: {_one_line(_root_cause(error))}", EXIT_FAILED) from None
    if cluster is not None:
        try:
            cluster.record_env_runners(algo)
        except Exception as error:  # only a report: training goes on
            log(f"warning: could not locate the env runners: {_one_line(error)}")
    try:
        return _train_loop(env, experiment, algo)
    finally:
        with contextlib.suppress(Exception):
            algo.stop()  # type: ignore[no-untyped-call]


def _check_rl_module(config: Any, observation_space: Any, action_space: Any, experiment: Any) -> None:
    # Building the module here turns an error in the user's setup() into one located line, instead
    # of a remote actor failure.
    try:
        spec = config.get_rl_module_spec(spaces={"default_policy": (observation_space, action_space)})
        spec.build()
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        user = [f for f in frames if "site-packages" not in f.filename and "/rlrunner/" not in f.filename]
        where = f" at {user[-1].filename}:{user[-1].lineno}" if user else ""
        what = experiment.algorithm.model.module or "the default model (algorithm.model)"
        raise LaunchError(f"algorithm.model: {what} could not be built{where}: {_one_line(error)}", EXIT_INVALID) from None


def _train_loop(env: ContainerEnv, experiment: Any, algo: Any) -> Path:
    training = experiment.training
    store = CheckpointStore(env.checkpoint_dir, training.keep_checkpoints)
    for path in store.clean():
        log(f"removed incomplete checkpoint {path.name}")
    progress = Progress(iteration=0, timesteps=0, time_s=0.0)
    meta = {"run_id": experiment.run_id, "spec_hash": experiment.spec_hash}
    newest = store.newest()
    if newest is not None:
        log(f"resuming from {newest.path} (iteration {newest.progress.iteration}, timesteps {newest.progress.timesteps})")
        if newest.meta.get("spec_hash") not in (None, experiment.spec_hash):
            log(f"warning: {newest.path.name} was written by run {newest.meta.get('run_id')}, not {experiment.run_id} (another spec)")
        try:
            algo.restore_from_path(str(newest.path))
        except Exception as error:
            raise LaunchError(f"checkpoint {newest.path} cannot be restored: {_one_line(_root_cause(error))}", EXIT_FAILED) from None
        progress = newest.progress
    stop = StopCriteria(**training.stop.model_dump())
    saved = newest
    started = time.monotonic() - progress.time_s
    reason = stop.reached(progress)
    while reason is None:
        try:
            result = algo.train()
        except Exception as error:
            raise LaunchError(
                f"training failed in iteration {progress.iteration + 1}: {_one_line(_root_cause(error))}", EXIT_FAILED
            ) from None
        progress = Progress(
            iteration=int(algo.iteration),
            timesteps=int(result.get("num_env_steps_sampled_lifetime", 0)),
            time_s=time.monotonic() - started,
            episode_return_mean=_float((result.get("env_runners") or {}).get("episode_return_mean")),
        )
        print(format_metrics_line(iteration_metrics(result, progress)), flush=True)
        reason = stop.reached(progress)
        if reason is not None or progress.iteration % training.checkpoint_frequency == 0:
            before = time.monotonic()
            saved = store.save(progress, lambda folder: algo.save_to_path(str(folder)), meta=meta)
            log(f"checkpoint {saved.path.name} ({time.monotonic() - before:.2f} s)")
    log(f"stopped: {reason}")
    if saved is None:  # stopped before any iteration (a criterion already met): checkpoint the start
        saved = store.save(progress, lambda folder: algo.save_to_path(str(folder)), meta=meta)
    return saved.path


def export(env: ContainerEnv, experiment: Any, checkpoint: Path, config_post: Any) -> None:
    """Export the final policy (ONNX + descriptions) to the model dir."""
    from rlrunner.entry.export import ExportError, export_policy

    try:
        description = export_policy(checkpoint, env.model_dir, experiment=experiment.to_data(), post=config_post)
    except ExportError as error:
        raise LaunchError(str(error), EXIT_FAILED) from None
    log(f"exported {description['algorithm']} policy to {env.model_dir} (from {checkpoint.name})")


def action_postprocessing(experiment: Any) -> Any:
    """RLlib's normalize_actions/clip_actions for this experiment (what the export reproduces)."""
    from rlrunner.entry.export import ActionPostprocessing

    hyperparameters = experiment.to_data()["algorithm"]["hyperparameters"]
    return ActionPostprocessing(
        normalize_actions=bool(hyperparameters.get("normalize_actions", True)),
        clip_actions=bool(hyperparameters.get("clip_actions", False)),
    )


def run(env: ContainerEnv, args: argparse.Namespace) -> int:
    """The launcher's work after the environment was read; returns the exit code."""
    configure_ray_environment()  # before anything imports ray
    experiment = decode_experiment(env)
    if args.print_config:
        print(json.dumps(experiment.to_data(), indent=2, sort_keys=True))
        return EXIT_OK
    if len(env.hosts) > 1:
        return run_cluster_host(env, experiment)
    log(f"run {experiment.run_id}: {experiment.algorithm.name} on {experiment.environment.name or experiment.environment.binary}")
    for folder in (env.model_dir, env.output_data_dir, env.checkpoint_dir):
        folder.mkdir(parents=True, exist_ok=True)
    checkpoint = train(env, experiment)
    _shutdown_ray()
    export(env, experiment, checkpoint, action_postprocessing(experiment))
    return EXIT_OK


def run_cluster_host(env: ContainerEnv, experiment: Any) -> int:
    """One host of a multi-host job: the head trains on a Ray cluster of every host, the others lend it their node."""
    from rlrunner.entry import cluster

    try:
        settings = cluster.read_cluster_settings(env.cluster_vars)
        plan = cluster.plan_cluster(env.hosts, env.current_host, settings)
    except cluster.ClusterError as error:
        raise LaunchError(f"compute.instance_count: {error}", EXIT_INFRA) from None
    cluster.configure_process(settings)  # undoes the single-host loopback-only mode, before ray is imported
    add_to_python_path(source_dir_of(env, experiment))  # every host's Ray workers may import the custom module
    cpus = cluster.node_cpus(env.num_cpus, experiment.training.env_runners, len(plan.hosts))
    for folder in (env.model_dir, env.output_data_dir, env.checkpoint_dir):
        folder.mkdir(parents=True, exist_ok=True)
    try:
        if not plan.is_head:
            status = cluster.run_worker_host(plan, settings, num_cpus=cpus, num_gpus=env.num_gpus, log_dir=env.output_data_dir)
            log(f"{env.current_host} done (the head reported: {status})")
            return EXIT_OK
        log(f"run {experiment.run_id}: {experiment.algorithm.name} on {len(plan.hosts)} hosts ({', '.join(plan.hosts)})")
        with cluster.head_cluster(
            plan, settings, num_cpus=cpus, num_gpus=env.num_gpus, log_dir=env.output_data_dir, record_dir=env.output_data_dir
        ) as head:
            checkpoint = train(env, experiment, cluster=head)
    except cluster.ClusterError as error:
        raise LaunchError(f"Ray cluster ({env.current_host}): {error}", EXIT_INFRA) from None
    export(env, experiment, checkpoint, action_postprocessing(experiment))
    return EXIT_OK


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        with contextlib.suppress(Exception):
            if ray.is_initialized():
                ray.shutdown()


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point: read the environment once, run, report a failure in one paragraph."""
    env = read_container_env(os.environ if environ is None else environ)
    args = parse_args(sys.argv[1:] if argv is None else argv)
    become_subreaper()
    code = EXIT_OK
    try:
        install_signal_handlers()
        code = run(env, args)
    except LaunchError as error:
        write_failure(env, str(error))
        print(f"rlrunner: error: {error}", file=sys.stderr, flush=True)
        code = error.exit_code
    except Interrupted as interrupt:
        write_failure(env, f"interrupted by {interrupt}")
        print(f"rlrunner: interrupted by {interrupt}; stopping Ray and the players", file=sys.stderr, flush=True)
        code = 128 + interrupt.signum
    except Exception as error:
        write_failure(env, f"unexpected error: {_one_line(error)}")
        traceback.print_exc()
        code = EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _shutdown_ray()
        stop_descendants()
    return code


if __name__ == "__main__":
    sys.exit(main())
