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

SIGTERM or SIGINT is a stop, not a failure: SageMaker sends SIGTERM to stop a job or reclaim a spot
instance and kills the container 120 s later. The iteration in flight finishes (it is abandoned
after ITERATION_GRACE_S), a complete checkpoint is written, `output/data/stopped.json` records the
stop, and the launcher exits 0 without a failure file; the next run resumes from that checkpoint.

With several hosts (resourceconfig.json, SM_HOSTS) every host runs this launcher: the first one
trains as the driver of one Ray cluster formed from all hosts, the others lend it their Ray node
and exit when it is done (`rlrunner/entry/cluster.py`, with the settings of
`rlrunner.contract.cluster_env`).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlrunner.contract import model_dir as model_files
from rlrunner.contract.checkpoints import POLICIES_META, CheckpointStore, Progress, checkpoint_name, read_checkpoint
from rlrunner.contract.errors import (
    EXIT_FAILED,
    EXIT_INFRA,
    EXIT_OK,
    InfrastructureError,
    InvalidSpecError,
    RlrunnerError,
    RunFailedError,
)
from rlrunner.contract.experiment_env import CodecError, decode_experiment_env
from rlrunner.contract.metrics import BEHAVIORS_KEY, POOLED_KEY, TENSORBOARD_TAGS, behavior_metric, format_metrics_line
from rlrunner.contract.sagemaker_container import TENSORBOARD_DIR, ContainerEnv, read_container_env, resolve_player_path
from rlrunner.contract.unity_model import behaviors_meta, policy_name
from rlrunner.entry.curriculum import Curriculum, send_lessons
from rlrunner.processes import become_subreaper, stop_descendants
from rlrunner.schema import EnvironmentSpec, Experiment, StopSpec

if TYPE_CHECKING:
    from rlrunner.entry.cluster import HeadCluster
    from rlrunner.entry.unity_env import Scene

LOOPBACK = "127.0.0.1"
ITERATION_GRACE_S = 60
"""Seconds the iteration in flight may run after a stop signal; leaves half of SageMaker's 120 s for the checkpoint."""


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`--print-config`; anything else (SageMaker's hyperparameters as arguments) is ignored."""
    parser = argparse.ArgumentParser(prog="train_unity", description=__doc__.split("\n")[0])
    parser.add_argument("--print-config", action="store_true", help="Print the decoded experiment as JSON and exit.")
    args, _unknown = parser.parse_known_args(list(argv))
    return args


# --------------------------------------------------------------------------------------------
# Failures


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived outside the training loop (or the iteration in flight was abandoned)."""

    def __init__(self, signum: int) -> None:
        # args stay (signum,): libraries that copy an exception as type(e)(*e.args) must get it back
        super().__init__(signum)
        self.signum = int(signum)

    def __str__(self) -> str:
        return signal.Signals(self.signum).name


class Stopped(Exception):
    """The training loop stopped on a signal after a complete checkpoint."""

    def __init__(self, signum: int, checkpoint: Path | None, progress: Progress, *, abandoned: bool = False) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.checkpoint = checkpoint
        self.progress = progress
        self.abandoned = abandoned


def write_failure(env: ContainerEnv, message: str) -> None:
    """Write the reason SageMaker shows for a failed job (one paragraph)."""
    try:
        env.output_dir.mkdir(parents=True, exist_ok=True)
        env.failure_file.write_text(" ".join(message.split()) + "\n")
    except OSError:  # a full disk: no failure file beats an empty one (the message is on stderr)
        with contextlib.suppress(OSError):
            env.failure_file.unlink(missing_ok=True)


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


class _StopRequest:
    """Set by the signal handler while the training loop runs; the loop stops after the iteration in flight."""

    in_loop = False
    signum: int | None = None


_stop = _StopRequest()


def _on_signal(signum: int, _frame: Any) -> None:
    if _stop.in_loop:
        if _stop.signum is None:  # a repeated signal changes nothing: the stop is under way
            _stop.signum = signum
            signal.signal(signal.SIGALRM, _abandon_iteration)
            signal.alarm(ITERATION_GRACE_S)
        return
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the cleanup that follows must not be interrupted
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signum)


def _abandon_iteration(_signum: int, _frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(_stop.signum or signal.SIGTERM)


def install_signal_handlers() -> None:
    """SIGTERM/SIGINT stop the run (ray.init replaces the SIGTERM handler: call again after it)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)


def write_stopped(env: ContainerEnv, signum: int, progress: Progress | None, checkpoint: Path | None, *, abandoned: bool) -> None:
    """Record a stop in output/data/stopped.json (SageMaker uploads output/data with the job's output)."""
    record = {
        "status": "stopped",
        "signal": signal.Signals(signum).name,
        "iteration": progress.iteration if progress else None,
        "timesteps": progress.timesteps if progress else None,
        "checkpoint": checkpoint.name if checkpoint else None,
        "abandoned_iteration": abandoned,
        "iteration_grace_s": ITERATION_GRACE_S,
    }
    with contextlib.suppress(OSError):
        env.output_data_dir.mkdir(parents=True, exist_ok=True)
        env.stopped_file.write_text(json.dumps(record, indent=2) + "\n")


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
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top level)"
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise InvalidSpecError(
            f"the encoded experiment does not match this launcher's schema (rlrunner versions differ?): {where}: {first['msg']}{more}"
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
    from rlrunner.schema import BUILTIN_MODULES

    if reference in BUILTIN_MODULES:  # one rlrunner ships (rlrunner/entry/models.py)
        import importlib

        module_name, class_name = BUILTIN_MODULES[reference].split(":")
        models = importlib.import_module(module_name)
        if experiment.algorithm.name not in models.IMAGE_VECTOR_ALGORITHMS:
            raise InvalidSpecError(
                f"algorithm.model.module {reference!r}: drives {', '.join(models.IMAGE_VECTOR_ALGORITHMS)}, "
                f"not {experiment.algorithm.name}"
            )
        builtin: type = getattr(models, class_name)
        return builtin
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


def probe_environment(env_config: Mapping[str, Any]) -> Scene:
    """Start the player once in this process (one area): clear errors before Ray starts, and the scene's behaviours."""
    from rlrunner.entry.unity_env import probe_scene
    from rlrunner.unity.errors import UnityEnvError

    try:
        return probe_scene(env_config)
    except UnityEnvError as error:
        raise InfrastructureError(f"environment: {error}") from None


def describe_path(scene: Scene, policies: Mapping[str, list[str]] | None) -> str:
    """The launcher's line about which env path drives the scene, and why."""
    if policies is None:
        (name,) = scene.spaces
        return f"single-behaviour fast path: {name}, one agent per area (gymnasium env, areas as a vector env)"
    served = "; ".join(f"{policy} <- {', '.join(names)}" for policy, names in sorted(policies.items()))
    agents = ", ".join(f"{name}: {count}" for name, count in sorted(scene.agents.items()))
    return f"multi-agent path: {len(scene.spaces)} behaviour(s) (agents deciding first: {agents}); policies {served}"


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


RAY_START_ATTEMPTS = 2


def start_ray(env: ContainerEnv, num_cpus: int, *, prestart_workers: bool = True) -> None:
    """A single-node Ray on 127.0.0.1 without the dashboard (put the source dir on PYTHONPATH first: workers inherit it).

    `prestart_workers=False` when nothing will run in a Ray worker (the driver samples): Ray would start one
    idle worker per CPU for the first driver, and on 2 cores their imports slow the algorithm's build.
    """
    import logging

    import ray

    if not prestart_workers:
        os.environ["RAY_prestart_worker_first_driver"] = "0"  # noqa: SIM112 (Ray config names are case-sensitive; the raylet reads it)

    for attempt in range(RAY_START_ATTEMPTS):
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
            break
        except Exception as error:
            reason = _one_line(_root_cause(error))
            if attempt + 1 == RAY_START_ATTEMPTS:
                raise InfrastructureError(f"Ray could not start on {LOOPBACK}: {reason}") from None
            # Ray gives its raylet a fixed 30 s to register; a machine busy with other work can miss that.
            log(f"Ray did not start ({reason}); starting it once more")
            with contextlib.suppress(Exception):
                ray.shutdown()
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


@dataclass(frozen=True)
class Returns:
    """Mean episode returns after an iteration: all agents pooled, and per behaviour (names as the scene reports them)."""

    mean: float | None = None
    behaviors: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, runners: Any, single: str | None = None) -> Returns:
        """From RLlib's `env_runners` (or `evaluation/env_runners`) results; `single`: the behaviour of a fast-path run."""
        if not isinstance(runners, Mapping):
            return cls()
        pooled = runners.get(POOLED_KEY)
        mean = _float((pooled if isinstance(pooled, Mapping) else runners).get("episode_return_mean"))
        by_name = runners.get(BEHAVIORS_KEY)
        if isinstance(by_name, Mapping):
            found = {name: _float(stats.get("episode_return_mean")) for name, stats in by_name.items() if isinstance(stats, Mapping)}
            return cls(mean, {name: value for name, value in found.items() if value is not None})
        return cls(mean, {single: mean} if single is not None and mean is not None else {})

    def of_behavior(self, name: str) -> dict[str, float]:
        """The means of the behaviour `name` names: itself, or without `?team=N` every team of it."""
        return {full: mean for full, mean in self.behaviors.items() if name in (full, policy_name(full))}


def _target_met(criterion: str, target: float | Mapping[str, float] | None, returns: Returns) -> str | None:
    """Why a return criterion is met (every behaviour it names at its value; a name without `?team=N`: all its teams), or None."""
    if target is None:
        return None
    if not isinstance(target, Mapping):
        met = returns.mean is not None and returns.mean >= target
        return f"{criterion} {returns.mean:.4g} >= {target}" if met else None
    reached = []
    for name, value in target.items():
        means = returns.of_behavior(name)
        if not means or any(mean < value for mean in means.values()):
            return None
        reached += [f"{full} {mean:.4g}" for full, mean in sorted(means.items())]
    return f"{criterion} {', '.join(reached)} >= {dict(target)}"


def stop_reason(stop: StopSpec, progress: Progress, trained: Returns | None = None, evaluated: Returns | None = None) -> str | None:
    """The stop criterion that is met, or None (`trained`/`evaluated`: the last iteration's returns)."""
    if stop.timesteps is not None and progress.timesteps >= stop.timesteps:
        return f"timesteps {progress.timesteps} >= {stop.timesteps}"
    if stop.iterations is not None and progress.iteration >= stop.iterations:
        return f"iterations {progress.iteration} >= {stop.iterations}"
    reason = _target_met("episode_return_mean", stop.episode_return_mean, trained or Returns(progress.episode_return_mean))
    reason = reason or _target_met("evaluation_return_mean", stop.evaluation_return_mean, evaluated or Returns())
    if reason:
        return reason
    if stop.time_s is not None and progress.time_s >= stop.time_s:
        return f"time_s {progress.time_s:.0f} >= {stop.time_s}"
    return None


def check_stop_behaviors(stop: StopSpec, behaviors: Iterable[str]) -> None:
    """A behaviour named by a stop criterion must be in the scene (names with or without `?team=N`)."""
    present = set(behaviors)
    known = present | {policy_name(name) for name in present}
    for name, criteria in stop.behavior_targets().items():
        if name not in known:
            raise InvalidSpecError(
                f"training.stop.{criteria[0]}.{name}: the scene has no behaviour {name!r}; it has {', '.join(sorted(present))}"
            )


LEARNER_STATISTICS = {
    "policy_loss": "policy_loss",
    "vf_loss": "vf_loss",
    "qf_loss": "qf_loss",
    "total_loss": "total_loss",
    "entropy": "entropy",
    "kl": "mean_kl_loss",
    "vf_explained_var": "vf_explained_var",
    "lr": "default_optimizer_learning_rate",
}
"""Metric name: the key of RLlib's per-module learner results (averaged over the modules that report it)."""


def iteration_metrics(result: Mapping[str, Any], progress: Progress) -> dict[str, float | int | None]:
    """The values of one metrics line from an RLlib result: episodes, learner statistics, throughput, timers.

    A multi-agent run reports Unity agent episodes (all behaviours pooled) as the episode metrics,
    each behaviour's mean return beside them, and the agent steps sampled.
    """
    runners = result.get("env_runners", {}) or {}
    pooled = runners.get(POOLED_KEY)
    episodes: Mapping[str, Any] = pooled if isinstance(pooled, Mapping) else runners
    modules = [stats for name, stats in (result.get("learners") or {}).items() if name != "__all_modules__" and isinstance(stats, Mapping)]
    timers = result.get("timers") or {}
    seconds = _float(result.get("time_this_iter_s"))
    env_steps = _float(runners.get("num_env_steps_sampled"))
    agent_steps = runners.get("num_agent_steps_sampled")
    agent_steps = _float(sum(agent_steps.values()) if isinstance(agent_steps, Mapping) else agent_steps)
    values: dict[str, float | int | None] = {
        "iteration": progress.iteration,
        "timesteps": progress.timesteps,
        "episode_return_mean": _float(episodes.get("episode_return_mean")),
        "episode_return_max": _float(episodes.get("episode_return_max")),
        "episode_return_min": _float(episodes.get("episode_return_min")),
        "episode_len_mean": _float(episodes.get("episode_len_mean")),
        "episodes": _float(episodes.get("num_episodes")),
    }
    for name, key in LEARNER_STATISTICS.items():
        found = [value for value in (_float(stats.get(key)) for stats in modules) if value is not None]
        values[name] = sum(found) / len(found) if found else None
    values["env_steps_per_s"] = env_steps / seconds if env_steps is not None and seconds else None
    values["agent_steps_per_s"] = agent_steps / seconds if agent_steps is not None and seconds else None
    values["sample_time_s"] = _float(timers.get("env_runner_sampling_timer"))
    values["learn_time_s"] = _float(timers.get("learner_update_timer"))
    values["iteration_time_s"] = seconds
    values["time_s"] = round(progress.time_s, 3)
    values["evaluation_return_mean"] = Returns.of((result.get("evaluation") or {}).get("env_runners")).mean
    behaviors = runners.get(BEHAVIORS_KEY)
    if isinstance(behaviors, Mapping):
        lifetime = runners.get("num_agent_steps_sampled_lifetime")  # by agent id
        if isinstance(lifetime, Mapping):
            values["agent_timesteps"] = int(sum(_float(v) or 0 for v in lifetime.values()))
        for name, mean in sorted(Returns.of(runners).behaviors.items()):
            values[behavior_metric(name)] = mean
    return values


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def tensorboard_writer(env: ContainerEnv, resumed_at: int) -> Any:
    """tensorboardX's writer into `<opt_ml>/output/tensorboard` (SageMaker syncs that folder to S3 while the job runs).

    A resumed run drops the events past its checkpoint (`purge_step`), so that curves do not fold back.
    """
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(env.output_dir / TENSORBOARD_DIR), purge_step=resumed_at + 1 if resumed_at else None)


def write_tensorboard(writer: Any, values: Mapping[str, float | int | None]) -> None:
    """One iteration's statistics as TensorBoard scalars over environment steps."""
    step = int(values.get("timesteps") or 0)
    for name, tag in TENSORBOARD_TAGS.items():
        value = values.get(name)
        if value is not None:
            writer.add_scalar(tag, value, global_step=step)
    writer.flush()


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
    # RLlib's import and configuration (for the single-behaviour fast path) run on a background thread
    # beside the player probe (its errors come before Ray starts) and Ray's start. Ray starts on this
    # thread: its processes get PR_SET_PDEATHSIG, which fires when the *thread* that started them ends.
    if cluster is None:  # (a cluster host put it there before its Ray node started)
        add_to_python_path(source_dir_of(env, experiment))
    started = time.monotonic()
    configured = _Background(lambda: _timed(_configure, env, experiment, env_config, num_cpus, module_class, cluster), "configure")
    try:
        scene = probe_environment(env_config)
        probe_s = time.monotonic() - started
        try:
            for observation_space, action_space in scene.spaces.values():
                algo_config.check_spaces(experiment.algorithm.name, observation_space, action_space)
        except algo_config.AlgorithmSetupError as error:
            raise InvalidSpecError(str(error)) from None
        check_stop_behaviors(experiment.training.stop, scene.spaces)
        if cluster is None:
            runners = algo_config.resolve_env_runners(experiment.training.env_runners, num_cpus)
            start_ray(env, max(env.num_cpus, algo_config.required_cpus(runners)), prestart_workers=runners > 0)
        ray_s = time.monotonic() - started - probe_s
    finally:
        config, configure_s = configured.result()
    policies: dict[str, list[str]] | None = None
    if not scene.fast_path or experiment.behaviors:  # (RLlib is imported by now: configuring again is quick)
        from rlrunner.entry.unity_env import MULTI_AGENT

        env_config = {**env_config, MULTI_AGENT: True}
        config = _configure(env, experiment, env_config, num_cpus, module_class, cluster, multi_agent=True)
        try:
            policies = algo_config.configure_multi_agent(config, experiment, scene.spaces, module_class, scene.layouts)
        except algo_config.AlgorithmSetupError as error:
            raise InvalidSpecError(str(error)) from None
    log(describe_path(scene, policies))
    _complete_config(config, scene, policies, experiment, module_class)
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
        single = next(iter(scene.spaces)) if policies is None else None
        return _train_loop(env, experiment, algo, behaviors_meta(scene.behaviors), policies, single)
    finally:
        with contextlib.suppress(Exception):
            algo.stop()


def _timed(function: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    started = time.monotonic()
    return function(*args), time.monotonic() - started


def _configure(
    env: ContainerEnv, experiment: Experiment, env_config: dict[str, Any], num_cpus: int, module_class: type | None,
    cluster: HeadCluster | None, *, multi_agent: bool = False,
) -> Any:
    """The AlgorithmConfig (RLlib imported here), without the env's spaces; every error located."""
    from rlrunner.entry import algorithm as algo_config

    try:
        config = algo_config.build_algorithm_config(
            experiment, num_cpus=num_cpus, env_config=env_config, module_class=module_class, cluster=cluster is not None,
            multi_agent=multi_agent,
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


def _complete_config(
    config: Any, scene: Scene, policies: Mapping[str, list[str]] | None, experiment: Experiment, module_class: type | None = None
) -> None:
    """Add the probed spaces, validate, and build the RLModule(s) once here (located errors, not a remote failure)."""
    if policies is None:
        observation_space, action_space = next(iter(scene.spaces.values()))
        config.environment(observation_space=observation_space, action_space=action_space)
    _choose_models(config, scene, policies, experiment, module_class)
    try:
        config.validate()
    except Exception as error:
        raise InvalidSpecError(f"algorithm.hyperparameters: RLlib rejected the configuration: {_one_line(error)}") from None
    _check_rl_module(config, scene, policies, experiment)


def _choose_models(
    config: Any, scene: Scene, policies: Mapping[str, list[str]] | None, experiment: Experiment, module_class: type | None
) -> None:
    """Each policy's model, the choice printed: rlrunner's ImageVectorModule for camera-and-vector observations;
    for image observations with RLlib's default model, CNN filters that fit them."""
    from rlrunner.entry import algorithm as algo_config

    reference = experiment.algorithm.model.module
    image_vector = algo_config.uses_image_vector_module(experiment, module_class)
    model = dict(experiment.algorithm.model.module_config) if reference else algo_config.model_config(experiment)
    served = {"default_policy": list(scene.spaces)[:1]} if policies is None else dict(policies)
    for policy, behaviors in served.items():
        policy_model, where = (model, "algorithm.model") if policies is None else algo_config.policy_model(experiment, model, behaviors)
        if reference:
            where = "algorithm.model.module_config" if where == "algorithm.model" else where
        layout = scene.layouts.get(behaviors[0])
        if layout is None and image_vector and reference:
            raise InvalidSpecError(
                f"algorithm.model.module {reference!r}: behaviour {behaviors[0]} does not observe one camera image and a "
                f"vector together (its observation space is {scene.spaces[behaviors[0]][0]})"
            )
        if layout is not None and image_vector:
            try:
                module_config, choice = algo_config.image_vector_choice(
                    experiment.algorithm.name, layout, policy_model, where, named=reference is not None
                )
            except algo_config.AlgorithmSetupError as error:
                raise InvalidSpecError(str(error)) from None
            log(choice if policies is None else f"{policy}: {choice}")
            if policies is None:  # (configure_multi_agent set it per policy)
                from ray.rllib.core.rl_module.rl_module import RLModuleSpec

                from rlrunner.entry.models import ImageVectorModule

                config.rl_module(rl_module_spec=RLModuleSpec(module_class=ImageVectorModule, model_config=module_config))
            continue
        if reference:
            continue
        try:
            filters, line = algo_config.conv_filters(scene.spaces[behaviors[0]][0], policy_model, where)
        except algo_config.AlgorithmSetupError as error:
            raise InvalidSpecError(str(error)) from None
        if line:
            log(line if policies is None else f"{policy}: {line}")
        if filters is not None and policies is None:  # (configure_multi_agent set them per policy)
            config.rl_module(model_config={**model, "conv_filters": filters})


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


def _check_rl_module(config: Any, scene: Scene, policies: Mapping[str, list[str]] | None, experiment: Experiment) -> None:
    # Building the module here turns an error in the user's setup() into one located line, instead
    # of a remote actor failure.
    try:
        if policies is None:
            spec = config.get_rl_module_spec(spaces={"default_policy": next(iter(scene.spaces.values()))})
        else:
            spec = config.get_multi_rl_module_spec(spaces={p: scene.spaces[names[0]] for p, names in policies.items()})
        spec.build()
    except Exception as error:
        frames = traceback.extract_tb(error.__traceback__)
        user = [f for f in frames if "site-packages" not in f.filename and "/rlrunner/" not in f.filename]
        where = f" at {user[-1].filename}:{user[-1].lineno}" if user else ""
        what = experiment.algorithm.model.module or "the default model (algorithm.model)"
        raise InvalidSpecError(f"algorithm.model: {what} could not be built{where}: {_one_line(error)}") from None


def _train_loop(
    env: ContainerEnv,
    experiment: Experiment,
    algo: Any,
    scene: Mapping[str, Any] | None = None,
    policies: Mapping[str, list[str]] | None = None,
    single: str | None = None,
) -> Path:
    """Train to a stop criterion (`single`: the one behaviour of a fast-path run, for per-behaviour criteria)."""
    training = experiment.training
    store = CheckpointStore(env.checkpoint_dir, training.keep_checkpoints)
    for path in store.clean():
        log(f"removed incomplete checkpoint {path.name}")
    progress = Progress(iteration=0, timesteps=0, time_s=0.0)
    # The scene's behaviours (and which policy serves which), so that `rlrunner export` can write the
    # Unity models later without the player.
    meta: dict[str, Any] = {"run_id": experiment.run_id, "spec_hash": experiment.spec_hash, **(scene or {})}
    if policies is not None:
        meta[POLICIES_META] = {policy: list(names) for policy, names in policies.items()}
    newest = store.newest()
    if newest is not None:
        log(f"resuming from {newest.path} (iteration {newest.progress.iteration}, timesteps {newest.progress.timesteps})")
        if newest.meta.get("spec_hash") not in (None, experiment.spec_hash):
            log(f"{newest.path.name} was written by run {newest.meta.get('run_id')}; continuing it as run {experiment.run_id}")
        try:
            algo.restore_from_path(str(newest.path))
        except Exception as error:
            raise RunFailedError(f"checkpoint {newest.path} cannot be restored: {_one_line(_root_cause(error))}") from None
        progress = newest.progress
    elif training.init_from is not None:
        start_from_weights(algo, Path(training.init_from))
    saved = newest
    curriculum = Curriculum.of(experiment.environment)
    if curriculum is not None and newest is not None:
        restored = curriculum.restore(newest.meta.get(CURRICULUM_META) or {})
        if restored:
            reached = send_lessons(algo, curriculum.values(restored))
            log(f"curriculum: {'; '.join(restored.values())} (sent to {reached} environment(s))")
    started = time.monotonic() - progress.time_s
    reason = stop_reason(training.stop, progress)
    _stop.in_loop, _stop.signum = True, None
    writer = tensorboard_writer(env, progress.timesteps)
    try:
        saved = _iterate(experiment, algo, store, progress, saved, started, reason, writer, meta, curriculum, single)
    except Interrupted as interrupt:  # the iteration in flight did not finish within the grace time
        last = store.newest()
        raise Stopped(interrupt.signum, last.path if last else None, last.progress if last else progress, abandoned=True) from None
    finally:
        _stop.in_loop = False
        signal.alarm(0)
        writer.close()
    if _stop.signum is not None:
        raise Stopped(_stop.signum, saved.path if saved else None, saved.progress if saved else progress)
    return Path(saved.path)


def _iterate(
    experiment: Experiment, algo: Any, store: CheckpointStore, progress: Progress, saved: Any, started: float, reason: str | None,
    writer: Any, meta: dict[str, Any], curriculum: Curriculum | None = None, single: str | None = None,
) -> Any:
    training = experiment.training
    while reason is None:
        try:
            result = algo.train()
        except Exception as error:
            if _stop.signum is not None:  # a library turned the abandoning signal into its own error
                raise Interrupted(_stop.signum) from None
            raise RunFailedError(f"training failed in iteration {progress.iteration + 1}: {_one_line(_root_cause(error))}") from None
        if _stop.signum is not None:
            signal.alarm(0)  # the iteration finished in time; the checkpoint below may take what it needs
        trained = Returns.of(result.get("env_runners"), single)
        progress = Progress(
            iteration=int(algo.iteration),
            timesteps=int(result.get("num_env_steps_sampled_lifetime", 0)),
            time_s=time.monotonic() - started,
            episode_return_mean=trained.mean,
        )
        values = iteration_metrics(result, progress)
        print(format_metrics_line(values), flush=True)
        write_tensorboard(writer, values)
        if curriculum is not None:
            advance_curriculum(curriculum, algo, values, trained)
            meta[CURRICULUM_META] = curriculum.state()
        reason = stop_reason(training.stop, progress, trained, Returns.of((result.get("evaluation") or {}).get("env_runners"), single))
        if reason is None and _stop.signum is not None:
            reason = f"{signal.Signals(_stop.signum).name} received (a stop: checkpointing to resume later)"
        if reason is not None or progress.iteration % training.checkpoint_frequency == 0:
            before = time.monotonic()
            saved = save_checkpoint(store, progress, algo, meta, saved)
            log(f"checkpoint {saved.path.name} ({time.monotonic() - before:.2f} s)")
    log(f"stopped: {reason}")
    if saved is None:  # stopped before any iteration (a criterion already met): checkpoint the start
        saved = save_checkpoint(store, progress, algo, meta, saved)
    return saved


CURRICULUM_META = "curriculum_lessons"
"""Where a checkpoint's meta records the lesson of every curriculum parameter (a resume continues there)."""


def advance_curriculum(curriculum: Curriculum, algo: Any, values: Mapping[str, Any], trained: Returns) -> None:
    """After an iteration: move the curricula whose lesson is done, and send their new values to every player.

    A lesson's `behavior` is matched as stop criteria match it (without `?team=N`: the mean of its teams).
    """
    criteria = [lesson.completion_criteria for spec in curriculum.parameters.values() for lesson in spec.curriculum]
    behaviors = {c.behavior for c in criteria if c is not None and c.behavior}
    found = {name: list(trained.of_behavior(name).values()) for name in behaviors}
    means = {name: sum(teams) / len(teams) for name, teams in found.items() if teams}
    changed = curriculum.advance(values.get("episode_return_mean"), int(values.get("episodes") or 0), means)
    if changed:
        reached = send_lessons(algo, curriculum.values(changed))
        log(f"curriculum: {'; '.join(changed.values())} (sent to {reached} environment(s))")


def save_checkpoint(store: CheckpointStore, progress: Progress, algo: Any, meta: Mapping[str, Any], previous: Any) -> Any:
    """Write a checkpoint atomically; a full disk is one clear error (exit 4) that leaves `previous` intact."""
    name = checkpoint_name(progress.iteration)
    kept = f"the previous complete checkpoint {previous.path.name} is intact" if previous else "no earlier checkpoint exists"
    problem = store.space_problem(previous)
    if problem is None:
        try:
            return store.save(progress, lambda folder: algo.save_to_path(str(folder)), meta=meta)
        except OSError as error:
            problem = error.strerror or str(error)
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise InfrastructureError(f"cannot write checkpoint {name} in {store.root}: {problem}; {kept}") from None
    raise InfrastructureError(
        f"no space left on device for checkpoint {name} in {store.root} ({problem}); {kept}; free space, then resume the run"
    )


RL_MODULE_COMPONENT = "learner_group/learner/rl_module"
"""Where a checkpoint of an RLlib algorithm keeps the policy networks (its RLModule)."""


def init_checkpoint(path: Path) -> Path:
    """The checkpoint `training.init_from` names: a checkpoint folder, or a run dir's newest complete checkpoint."""
    from rlrunner.contract.checkpoints import read_checkpoint
    from rlrunner.contract.sagemaker_container import OptMl

    if (path / RL_MODULE_COMPONENT).is_dir():
        return path
    newest = CheckpointStore(OptMl(path).checkpoints, keep=1).newest()
    if newest is None and read_checkpoint(path) is None:
        raise InvalidSpecError(f"training.init_from: {path} is neither a checkpoint nor a run directory with a complete checkpoint")
    return newest.path if newest is not None else path


def start_from_weights(algo: Any, path: Path) -> None:
    """Load another run's policy weights into the new algorithm (its optimizer and step counts start afresh)."""
    checkpoint = init_checkpoint(path)
    try:
        algo.restore_from_path(str(checkpoint / RL_MODULE_COMPONENT), component=RL_MODULE_COMPONENT)
    except Exception as error:
        raise InvalidSpecError(
            f"training.init_from: the weights of {checkpoint} do not fit this model: {_one_line(_root_cause(error))}"
        ) from None
    log(f"starting from the policy weights of {checkpoint}")


def export(env: ContainerEnv, experiment: Experiment, checkpoint: Path, config_post: Any) -> None:
    """Export the final policy (ONNX + descriptions) to the model dir."""
    from rlrunner.entry.export import export_policies, export_policy

    saved = read_checkpoint(checkpoint)
    policies = saved.meta.get(POLICIES_META) if saved is not None else None
    if policies:
        export_policies(checkpoint, env.model_dir, experiment=experiment.to_data(), post=config_post, policies=policies)
        log(f"exported {len(policies)} policies ({', '.join(sorted(policies))}) to {env.model_dir} (from {checkpoint.name})")
        export_unity(env, experiment, checkpoint, config_post)
        return
    description = export_policy(checkpoint, env.model_dir, experiment=experiment.to_data(), post=config_post)
    log(f"exported {description['algorithm']} policy to {env.model_dir} (from {checkpoint.name})")
    export_unity(env, experiment, checkpoint, config_post)


def export_unity(env: ContainerEnv, experiment: Experiment, checkpoint: Path, config_post: Any) -> None:
    """Export ML-Agents' `<Behavior>.onnx` beside the serving model; a failure is a warning (`rlrunner export` retries)."""
    from rlrunner.entry import algorithm as algo_config
    from rlrunner.entry.export_mlagents import export_from_checkpoint, recorded_behaviors

    try:
        behaviors = recorded_behaviors(checkpoint)
        if behaviors is None:  # a checkpoint from before the manifest recorded them
            executable = resolve_executable(experiment.environment, env.channels)
            behaviors = probe_environment(algo_config.env_config(experiment, executable, log_dir=str(env.player_log_dir))).behaviors
        models = export_from_checkpoint(checkpoint, behaviors, env.model_dir, environment=experiment.environment, post=config_post)
    except RlrunnerError as error:
        log(f"warning: no Unity model exported: {error}")
        return
    log(f"exported the Unity model(s) {', '.join(m['file'] for m in models.values())} to {env.model_dir}")


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
    for name, figures in ({"": result} if "mean" in result else result["behaviors"]).items():  # one behaviour: no name
        log(
            f"evaluation{' of ' + name if name else ''}: mean {figures['mean']:.4f}, max {figures['max']:.4f}, "
            f"min {figures['min']:.4f} over {figures['episodes']} episodes"
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
    env.stopped_file.unlink(missing_ok=True)  # an earlier stop of this run, now resumed
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


def report_unexpected(env: ContainerEnv, error: BaseException) -> None:
    """Report an error nobody anticipated: one paragraph in the failure file, the traceback on stderr."""
    write_failure(env, f"unexpected error: {_one_line(error)}")
    traceback.print_exc()


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
    except Stopped as stop:
        write_stopped(env, stop.signum, stop.progress, stop.checkpoint, abandoned=stop.abandoned)
        at = f"checkpoint {stop.checkpoint.name}" if stop.checkpoint else "no checkpoint yet"
        how = f"abandoned the iteration in flight after {ITERATION_GRACE_S} s" if stop.abandoned else "finished the iteration in flight"
        log(f"stopped by {stop}: {how}; resume from {at} (iteration {stop.progress.iteration}, timesteps {stop.progress.timesteps})")
        code = EXIT_OK
    except Interrupted as interrupt:
        newest = CheckpointStore(env.checkpoint_dir, 1).newest() if env.checkpoint_dir.is_dir() else None
        write_stopped(env, interrupt.signum, newest.progress if newest else None, newest.path if newest else None, abandoned=False)
        log(f"stopped by {interrupt} outside training; stopping Ray and the players")
        code = EXIT_OK
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            report_unexpected(env, error)
            code = EXIT_FAILED
        else:
            message = f"no space left on device: {error.filename or ''} {error.strerror}".replace("  ", " ")
            write_failure(env, message)
            print(f"rlrunner: error: {message}", file=sys.stderr, flush=True)
            code = EXIT_INFRA
    except Exception as error:
        report_unexpected(env, error)
        code = EXIT_FAILED
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _shutdown_ray()
        stop_descendants()
    return code


if __name__ == "__main__":
    sys.exit(main())
