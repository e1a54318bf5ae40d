"""The generic launcher: train an RLlib algorithm on a Unity environment from an rlrunner experiment.

Runs as `python -m rlrunner.entry.train_unity`, and on SageMaker through the one-line entry script
`rlrunner/entry/sagemaker_code/train_unity.py` that the toolkit runs from the uploaded code dir with
the hyperparameters as `--key value` arguments (ignored: the experiment comes from the
RLRUNNER_EXPERIMENT* variables). The local backend runs that same script.

It reads its environment once (`read_container_env`, SageMaker's container contract in
`rlrunner.contract.sagemaker_container`), then: decodes the experiment into the typed `Experiment`,
checks the custom RLModule and the player (one probe, with clear errors), starts Ray on 127.0.0.1,
trains until a stop criterion, checkpoints atomically (resuming from the newest complete
checkpoint), prints one metrics line per iteration, exports the policy to the model dir and
evaluates it greedily into `model/evaluation.json`. A failure writes one paragraph to
`<opt_ml>/output/failure` and exits non-zero; every process it started is gone when it exits, also
after SIGTERM or SIGINT.

With several hosts (resourceconfig.json, SM_HOSTS) every host runs this launcher: the first one
trains as the driver of one Ray cluster formed from all hosts, the others lend it their Ray node
and exit when it is done (`rlrunner/entry/cluster.py`, with the settings of
`rlrunner.contract.cluster_env`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlrunner.contract import model_dir as model_files
from rlrunner.contract.checkpoints import CheckpointStore, Progress
from rlrunner.contract.errors import (
    EXIT_FAILED,
    EXIT_OK,
    InfrastructureError,
    InvalidSpecError,
    RlrunnerError,
    RunFailedError,
)
from rlrunner.contract.experiment_env import CodecError, decode_experiment_env
from rlrunner.contract.metrics import format_metrics_line
from rlrunner.contract.sagemaker_container import ContainerEnv, read_container_env, resolve_player_path
from rlrunner.processes import become_subreaper, stop_descendants
from rlrunner.schema import EnvironmentSpec, Experiment, StopSpec

if TYPE_CHECKING:
    from rlrunner.entry.cluster import HeadCluster

LOOPBACK = "127.0.0.1"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`--print-config`; anything else (SageMaker's hyperparameters as arguments) is ignored."""
    parser = argparse.ArgumentParser(prog="train_unity", description=__doc__.split("\n")[0])
    parser.add_argument("--print-config", action="store_true", help="Print the decoded experiment as JSON and exit.")
    args, _unknown = parser.parse_known_args(list(argv))
    return args


# --------------------------------------------------------------------------------------------
# Failures


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


def decode_experiment(env: ContainerEnv) -> Experiment:
    """The experiment the plan encoded, validated with the same schema as on the host."""
    from pydantic import ValidationError

    try:
        data = decode_experiment_env(env.variables)
    except CodecError as error:
        raise InvalidSpecError(f"the encoded experiment cannot be read: {error}") from None
    try:
        return Experiment.model_validate(data)
    except ValidationError as error:
        raise InvalidSpecError(
            f"the encoded experiment does not match this launcher's schema (rlrunner versions differ?): {error}"
        ) from None


def source_dir_of(env: ContainerEnv, experiment: Experiment) -> Path | None:
    """The experiment's source dir inside the code dir (SageMaker uploads it as a dependency)."""
    if experiment.source_dir is None:
        return None
    return (env.code_dir / str(experiment.source_dir)).resolve()


def load_custom_module(env: ContainerEnv, experiment: Experiment) -> type | None:
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
        raise InvalidSpecError(str(error)) from None
    _check_module_api(cls, experiment.algorithm.name, reference)
    return cls


def _check_module_api(cls: type, algorithm: str, reference: str) -> None:
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI

    if algorithm in ("PPO", "APPO", "IMPALA") and not issubclass(cls, ValueFunctionAPI):
        raise InvalidSpecError(
            f"algorithm.model.module {reference!r}: {algorithm} needs a value function; make {cls.__name__} "
            "also subclass ray.rllib.core.rl_module.apis.ValueFunctionAPI and implement compute_values()"
        )


def resolve_executable(environment: EnvironmentSpec, channels: Mapping[str, Path]) -> Path:
    """The player executable: a registry name, an absolute path, or a file of the `train` channel."""
    if environment.name is not None:
        from rlrunner.envs.registry import EnvironmentNotFoundError, resolve_environment

        try:
            return resolve_environment(environment.name)
        except EnvironmentNotFoundError as error:
            raise InfrastructureError(f"environment: {error}") from None
    path = resolve_player_path(str(environment.binary), channels)
    if not path.is_absolute():
        path = path.resolve()
    if path.is_file() and not os.access(path, os.X_OK) and is_channel_file(path, channels):
        # SageMaker copies channel files from S3 without their x bit
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def is_channel_file(path: Path, channels: Mapping[str, Path]) -> bool:
    return any(path.is_relative_to(Path(folder)) for folder in channels.values())


def probe_environment(env_config: Mapping[str, Any]) -> tuple[Any, Any]:
    """Start the player once in this process (one area): clear errors before Ray starts, and the env's spaces."""
    from rlrunner.entry.unity_env import make_unity_env
    from rlrunner.unity.errors import UnityEnvError

    environment: EnvironmentSpec = env_config["environment"]
    try:
        probe = make_unity_env({**env_config, "environment": environment.model_copy(update={"num_areas": 1})})
    except UnityEnvError as error:
        raise InfrastructureError(f"environment: {error}") from None
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
    # Ray starts its processes while the player probe's gRPC server runs (fork + exec, never gRPC in
    # the child): gRPC's fork handlers would only log that they were skipped.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")


def start_ray(env: ContainerEnv, num_cpus: int) -> None:
    """A single-node Ray on 127.0.0.1 without the dashboard (put the source dir on PYTHONPATH first: workers inherit it)."""
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
        raise InfrastructureError(f"Ray could not start on {LOOPBACK}: {_one_line(_root_cause(error))}") from None
    install_signal_handlers()  # ray.init installed its own SIGTERM handler (sys.exit), which skips the failure file


def limit_torch_threads(environ: Mapping[str, str]) -> int:
    """Give the driver's learner one torch thread (`OMP_NUM_THREADS` when set), as Ray gives its 1-CPU workers.

    Ray counts one CPU for the driver; torch would start a thread per core, and on a busy machine its
    OpenMP threads spin for each other: 100 Adam steps of a Basic-sized MLP took 1 s with one thread
    and 34 s with two on a loaded 2-core machine (docs/benchmarks.md).
    """
    import torch

    threads = int(environ.get("OMP_NUM_THREADS", "1") or 1)
    torch.set_num_threads(max(threads, 1))
    return torch.get_num_threads()


class _Background:
    """A function on a background thread; `result` waits and re-raises its error in the caller."""

    def __init__(self, target: Callable[[], Any], name: str) -> None:
        self._target = target
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._target()
        except BaseException as error:  # handed to the caller by result()
            self._error = error

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def add_to_python_path(source_dir: Path | None) -> None:
    """Put the experiment's source dir on PYTHONPATH (Ray workers started after this import from it)."""
    if source_dir is not None:
        path = os.environ.get("PYTHONPATH", "")
        os.environ["PYTHONPATH"] = f"{source_dir}{os.pathsep}{path}" if path else str(source_dir)


def stop_reason(stop: StopSpec, progress: Progress) -> str | None:
    """The stop criterion that is met, or None."""
    if stop.timesteps is not None and progress.timesteps >= stop.timesteps:
        return f"timesteps {progress.timesteps} >= {stop.timesteps}"
    if stop.iterations is not None and progress.iteration >= stop.iterations:
        return f"iterations {progress.iteration} >= {stop.iterations}"
    mean = progress.episode_return_mean
    if stop.episode_return_mean is not None and mean is not None and mean >= stop.episode_return_mean:
        return f"episode_return_mean {mean:.4g} >= {stop.episode_return_mean}"
    if stop.time_s is not None and progress.time_s >= stop.time_s:
        return f"time_s {progress.time_s:.0f} >= {stop.time_s}"
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


def train(env: ContainerEnv, experiment: Experiment, cluster: HeadCluster | None = None) -> Path:
    """Build the algorithm, resume, train to a stop criterion, checkpoint; return the final checkpoint.

    `cluster`: the formed multi-host cluster to train on, instead of a single-node Ray on this host.
    """
    from rlrunner.entry import algorithm as algo_config

    num_cpus = env.num_cpus if cluster is None else cluster.num_cpus
    module_class = load_custom_module(env, experiment)
    executable = resolve_executable(experiment.environment, env.channels)
    env_config = algo_config.env_config(experiment, executable, log_dir=str(env.player_log_dir))
    # RLlib's import and configuration run on a background thread beside the player probe (its
    # errors come before Ray starts) and Ray's start. Ray starts on this thread: its processes get
    # PR_SET_PDEATHSIG, which fires when the *thread* that started them ends.
    if cluster is None:  # (a cluster host put it there before its Ray node started)
        add_to_python_path(source_dir_of(env, experiment))
    started = time.monotonic()
    configured = _Background(lambda: _timed(_configure, env, experiment, env_config, num_cpus, module_class, cluster), "configure")
    try:
        observation_space, action_space = probe_environment(env_config)
        probe_s = time.monotonic() - started
        try:
            algo_config.check_spaces(experiment.algorithm.name, observation_space, action_space)
        except algo_config.AlgorithmSetupError as error:
            raise InvalidSpecError(str(error)) from None
        if cluster is None:
            runners = algo_config.resolve_env_runners(experiment.training.env_runners, num_cpus)
            start_ray(env, max(env.num_cpus, algo_config.required_cpus(runners)))
        ray_s = time.monotonic() - started - probe_s
    finally:
        config, configure_s = configured.result()
    _complete_config(config, observation_space, action_space, experiment)
    if cluster is not None:
        cluster.connect()
    limit_torch_threads(os.environ)
    runners = config.num_env_runners
    from ray.tune.registry import register_env

    from rlrunner.entry.unity_env import make_unity_env

    register_env(algo_config.ENV_NAME, make_unity_env)
    log(f"building {experiment.algorithm.name}: {describe_layout(experiment, runners, config.num_envs_per_env_runner, num_cpus)}")
    before = time.monotonic()
    try:
        algo = config.build_algo()
    except Exception as error:
        raise RunFailedError(f"RLlib could not build {experiment.algorithm.name}: {_one_line(_root_cause(error))}") from None
    log(
        f"startup: player probe {probe_s:.1f} s then Ray {ray_s:.1f} s, beside RLlib's import and configuration "
        f"{configure_s:.1f} s; algorithm built in {time.monotonic() - before:.1f} s"
    )
    if cluster is not None:
        try:
            cluster.record_env_runners(algo)
        except Exception as error:  # only a report: training goes on
            log(f"warning: could not locate the env runners: {_one_line(error)}")
    try:
        return _train_loop(env, experiment, algo)
    finally:
        with contextlib.suppress(Exception):
            algo.stop()


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    return function(*args), time.monotonic() - started


def _configure(
    env: ContainerEnv, experiment: Experiment, env_config: dict[str, Any], num_cpus: int, module_class: type | None,
    cluster: HeadCluster | None,
) -> Any:
    """The AlgorithmConfig (RLlib imported here), without the env's spaces; every error located."""
    from rlrunner.entry import algorithm as algo_config

    try:
        config = algo_config.build_algorithm_config(
            experiment, num_cpus=num_cpus, env_config=env_config, module_class=module_class, cluster=cluster is not None
        )
    except algo_config.AlgorithmSetupError as error:
        raise InvalidSpecError(str(error)) from None
    except Exception as error:
        raise InvalidSpecError(f"algorithm.hyperparameters: RLlib rejected the configuration: {_one_line(error)}") from None
    config.debugging(log_level=env.log_level)
    if cluster is not None:
        from rlrunner.entry.cluster import configure_algorithm

        configure_algorithm(config)
    return config


def _complete_config(config: Any, observation_space: Any, action_space: Any, experiment: Experiment) -> None:
    """Add the probed spaces, validate, and build the RLModule once here (located errors, not a remote failure)."""
    config.environment(observation_space=observation_space, action_space=action_space)
    try:
        config.validate()
    except Exception as error:
        raise InvalidSpecError(f"algorithm.hyperparameters: RLlib rejected the configuration: {_one_line(error)}") from None
    _check_rl_module(config, observation_space, action_space, experiment)


def describe_layout(experiment: Experiment, runners: int, envs_per_runner: int, num_cpus: int) -> str:
    """The resource layout chosen, in one line (`env_runners`/`envs_per_env_runner: auto` decide it from the CPUs)."""
    training = experiment.training
    where = "sampling in the driver" if runners == 0 else f"{runners} remote env runner(s)"
    areas = experiment.environment.num_areas
    if areas > 1:
        what = f"{areas} areas in one player"
    else:
        what = f"{envs_per_runner} players each, exchanges overlapped" if envs_per_runner > 1 else "1 player each"
    chosen = [name for name, value in (("env_runners", training.env_runners), ("envs_per_env_runner", training.envs_per_env_runner)) if value == "auto"]
    why = f" ({' and '.join(chosen)}: auto on {num_cpus} CPU(s))" if chosen else f" on {num_cpus} CPU(s)"
    return f"{where}, {what}{why}"


def _check_rl_module(config: Any, observation_space: Any, action_space: Any, experiment: Experiment) -> None:
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
        raise InvalidSpecError(f"algorithm.model: {what} could not be built{where}: {_one_line(error)}") from None


def _train_loop(env: ContainerEnv, experiment: Experiment, algo: Any) -> Path:
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
            raise RunFailedError(f"checkpoint {newest.path} cannot be restored: {_one_line(_root_cause(error))}") from None
        progress = newest.progress
    saved = newest
    started = time.monotonic() - progress.time_s
    reason = stop_reason(training.stop, progress)
    while reason is None:
        try:
            result = algo.train()
        except Exception as error:
            raise RunFailedError(f"training failed in iteration {progress.iteration + 1}: {_one_line(_root_cause(error))}") from None
        progress = Progress(
            iteration=int(algo.iteration),
            timesteps=int(result.get("num_env_steps_sampled_lifetime", 0)),
            time_s=time.monotonic() - started,
            episode_return_mean=_float((result.get("env_runners") or {}).get("episode_return_mean")),
        )
        print(format_metrics_line(iteration_metrics(result, progress)), flush=True)
        reason = stop_reason(training.stop, progress)
        if reason is not None or progress.iteration % training.checkpoint_frequency == 0:
            before = time.monotonic()
            saved = store.save(progress, lambda folder: algo.save_to_path(str(folder)), meta=meta)
            log(f"checkpoint {saved.path.name} ({time.monotonic() - before:.2f} s)")
    log(f"stopped: {reason}")
    if saved is None:  # stopped before any iteration (a criterion already met): checkpoint the start
        saved = store.save(progress, lambda folder: algo.save_to_path(str(folder)), meta=meta)
    return saved.path


def export(env: ContainerEnv, experiment: Experiment, checkpoint: Path, config_post: Any) -> None:
    """Export the final policy (ONNX + descriptions) to the model dir."""
    from rlrunner.entry.export import export_policy

    description = export_policy(checkpoint, env.model_dir, experiment=experiment.to_data(), post=config_post)
    log(f"exported {description['algorithm']} policy to {env.model_dir} (from {checkpoint.name})")


def action_postprocessing(experiment: Experiment) -> Any:
    """RLlib's normalize_actions/clip_actions for this experiment (what the export reproduces)."""
    from rlrunner.entry.export import ActionPostprocessing

    hyperparameters = experiment.algorithm.hyperparameters.to_rllib()
    return ActionPostprocessing(
        normalize_actions=bool(hyperparameters.get("normalize_actions", True)),
        clip_actions=bool(hyperparameters.get("clip_actions", False)),
    )


def evaluate(env: ContainerEnv, experiment: Experiment) -> None:
    """Play the exported policy greedily (`training.evaluation_episodes`) into `model/evaluation.json`."""
    from rlrunner.entry.evaluate import evaluate_policy

    episodes = experiment.training.evaluation_episodes
    log(f"evaluating the exported policy greedily over {episodes} episodes")
    try:
        result = evaluate_policy(
            env.model_dir, episodes=episodes, greedy=True, seed=experiment.training.seed,
            executable=resolve_executable(experiment.environment, env.channels),
        )  # fmt: skip
    except Exception as error:
        raise RunFailedError(f"evaluation of the exported policy failed: {_one_line(_root_cause(error))}") from None
    model_files.write_evaluation(result, env.model_dir)
    log(f"evaluation: mean {result['mean']:.4f}, max {result['max']:.4f}, min {result['min']:.4f} over {result['episodes']} episodes")


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
    evaluate(env, experiment)
    return EXIT_OK


def run_cluster_host(env: ContainerEnv, experiment: Experiment) -> int:
    """One host of a multi-host job: the head trains on a Ray cluster of every host, the others lend it their node."""
    from rlrunner.entry import cluster

    try:
        settings = cluster.read_cluster_settings(env.variables, experiment.cluster)
        plan = cluster.plan_cluster(env.hosts, env.current_host, settings)
    except cluster.ClusterError as error:
        raise InfrastructureError(f"compute.instance_count: {error}") from None
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
        raise InfrastructureError(f"Ray cluster ({env.current_host}): {error}") from None
    export(env, experiment, checkpoint, action_postprocessing(experiment))
    evaluate(env, experiment)
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
    except RlrunnerError as error:
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
