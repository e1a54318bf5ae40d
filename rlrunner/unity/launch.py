"""Starting a Unity player: the one edge function ``launch_unity`` and the ``UnityEnvironment`` it returns.

``ManagedUnityEnvironment`` subclasses mlagents_envs 0.28's ``UnityEnvironment`` and overrides
private methods (the communicator, the launch, the per-step encoding and decoding, teardown):
the per-step protobuf cost is measured in ``fast_path`` and cross-checked by tests. The import
fails on another mlagents_envs version rather than misbehave.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import mlagents_envs

from rlrunner.schema import CurriculumSpec, SamplerSpec
from rlrunner.unity import wire
from rlrunner.unity.communicator import LoopbackCommunicator
from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.fast_path import RawOutput, StepsPlan, encode_action, fast_steps
from rlrunner.unity.ports import LOOPBACK, PortLease, reserve_port

MLAGENTS_VERSION = "0.28."
"""The mlagents_envs release whose private methods ``ManagedUnityEnvironment`` overrides."""
if not mlagents_envs.__version__.startswith(MLAGENTS_VERSION):
    raise ImportError(
        f"rlrunner.unity.launch overrides private methods of mlagents_envs {MLAGENTS_VERSION}x, "
        f"found {mlagents_envs.__version__} (pip install mlagents-envs==0.28.0)"
    )

with warnings.catch_warnings():
    # mlagents-envs 0.28's generated code uses protobuf 3's deprecated descriptor factories.
    warnings.filterwarnings("ignore", message="Call to deprecated create function", category=DeprecationWarning)
    from mlagents_envs.base_env import ActionTuple, DecisionSteps, TerminalSteps
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
    from mlagents_envs.communicator_objects.unity_rl_initialization_input_pb2 import UnityRLInitializationInputProto
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.exception import (
        UnityCommunicatorStoppedException,
        UnityEnvironmentException,
        UnityTimeOutException,
        UnityWorkerInUseException,
    )
    from mlagents_envs.rpc_communicator import RpcCommunicator
    from mlagents_envs.rpc_utils import steps_from_proto
    from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel
    from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
    from mlagents_envs.side_channel.side_channel import SideChannel

# The version check in UnityEnvironment.__init__ uses distutils' StrictVersion (deprecated since
# Python 3.10). A process-wide filter, because warnings.catch_warnings is not thread-safe and
# environments are created from several threads.
warnings.filterwarnings(
    "ignore",
    message="distutils Version classes are deprecated",
    category=DeprecationWarning,
    module=r"mlagents_envs\.environment",
)


class _NoEditorHint(logging.Filter):
    # ManagedUnityEnvironment starts the player itself, so UnityEnvironment takes the Editor path
    # and would tell the user to press Play in the Unity Editor.
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Listening on port")


logging.getLogger("mlagents_envs.environment").addFilter(_NoEditorHint())

PYTHON_VARIABLE = "RLRUNNER_PYTHON"
"""Set in every player's environment to this interpreter (unless already set): a player that is a
Python program, such as the bundled Basic, runs with rlrunner's dependencies."""


@dataclass(frozen=True)
class LaunchOptions:
    """Everything ``launch_unity`` needs besides the executable (the spec decides every value)."""

    base_port: int
    no_graphics: bool
    player_args: tuple[str, ...]
    time_scale: float
    parameters: Mapping[str, float | SamplerSpec | CurriculumSpec]
    timeout_s: float
    num_areas: int
    seed: int
    log_dir: str | None
    player_environment: Mapping[str, str] = field(default_factory=dict)
    """Variables added to the player's environment (over this process's own)."""
    attempts: int = 20
    """Ports tried when another process takes the reserved one first."""


class ManagedUnityEnvironment(UnityEnvironment):  # type: ignore[misc]
    """``UnityEnvironment`` on a loopback port lease that starts its player and cleans up after itself, even after a crash."""

    _process: subprocess.Popen[bytes] | None  # set by UnityEnvironment.__init__, then by the launch below

    def __init__(
        self, lease: PortLease, *, file_name: str, player_environment: Mapping[str, str], **kwargs: Any
    ) -> None:
        self._lease = lease
        self._player = file_name
        self._player_environment = dict(player_environment)
        self._plans: dict[str, StepsPlan] = {}
        self._action_cache: dict[bytes, bytes] = {}
        self._deferred = False
        self._in_flight = False
        channels = kwargs.get("side_channels") or []
        self._parameters_channel = next((c for c in channels if isinstance(c, EnvironmentParametersChannel)), None)
        try:
            # file_name=None: mlagents would start the player with this process's environment;
            # _send_academy_parameters below starts it, at the same moment, with its own.
            super().__init__(file_name=None, base_port=lease.port, worker_id=0, **kwargs)
        except BaseException:
            self._close(0)
            raise
        _live_environments.add(self)

    def send_parameters(self, values: Mapping[str, float | SamplerSpec]) -> None:
        """Queue environment parameters for the player; they reach it with the next step or reset."""
        if self._parameters_channel is not None:
            for key, value in values.items():
                _send_parameter(self._parameters_channel, key, value)

    @staticmethod
    def _get_communicator(worker_id: int, base_port: int, timeout_wait: int) -> RpcCommunicator:
        communicator = LoopbackCommunicator(worker_id, base_port, timeout_wait)
        communicator.raw_outputs = True  # decoded by _update_state below
        return communicator

    def _send_academy_parameters(self, init_parameters: UnityRLInitializationInputProto) -> UnityOutputProto:
        # UnityEnvironment launches between starting the server and this handshake; so does this.
        if self._process is None:
            self._process = _start_player(self._player, self._executable_args(), self._player_environment)
        return cast(UnityOutputProto, super()._send_academy_parameters(init_parameters))

    def step(self) -> None:
        """``UnityEnvironment.step``: send the actions set, wait for Unity's answer."""
        self.begin_step()
        self.end_step()

    def begin_step(self) -> None:
        """Send the actions set so far and return at once; ``end_step`` waits for Unity's answer.

        Between the two the player computes its step: an adapter over several players sends to
        every one before it waits for any, so their step times overlap (``rlrunner.unity.players``).
        """
        if self._is_first_message or not self._loaded:
            self._deferred = True  # the first message is a reset, and errors come from step() itself
            return
        for name, spec in self._env_specs.items():  # fill the blanks, as UnityEnvironment.step does
            if name not in self._env_actions:
                agents = len(self._env_state[name][0]) if name in self._env_state else 0
                self._env_actions[name] = spec.action_spec.empty_action(agents)
        self._communicator.send(self._generate_step_input(self._env_actions))
        self._in_flight = True

    def end_step(self) -> None:
        """Wait for the answer to ``begin_step`` and update the steps ``get_steps`` returns."""
        if self._deferred:
            self._deferred = False
            super().step()
            return
        if not self._in_flight:
            raise UnityEnvironmentException("end_step() without begin_step()")
        self._in_flight = False
        outputs = self._communicator.receive(self._poll_process)
        if outputs is None:
            raise UnityCommunicatorStoppedException("Communicator has exited.")
        self._update_behavior_specs(outputs)
        self._update_state(outputs.rl_output)
        self._env_actions.clear()

    # The per-step protocol work of UnityEnvironment.step, without the pure-Python protobuf
    # classes (see ``rlrunner.unity.fast_path``); the message contents are the same as mlagents' own.

    def _generate_step_input(self, vector_action: dict[str, ActionTuple]) -> bytes:
        """The encoded ``UnityInputProto`` that mlagents' ``_generate_step_input`` would build."""
        entries = []
        for name, action in vector_action.items():
            count = len(self._env_state[name][0])
            if count == 0:
                continue
            agents = b"".join(self._encode_actions(action, count))
            entries.append(wire.len_field(1, wire.str_field(1, name) + wire.len_field(2, agents)))
        side_channel = bytes(self._side_channel_manager.generate_side_channel_messages())
        if side_channel:
            entries.append(wire.len_field(5, side_channel))
        return wire.len_field(1, b"".join(entries))  # UnityInputProto.rl_input; command STEP = 0

    def _encode_actions(self, action: ActionTuple, count: int) -> Iterator[bytes]:
        continuous, discrete = action.continuous, action.discrete
        if continuous is not None and continuous.size:
            for row in range(count):
                yield wire.len_field(1, encode_action(continuous[row], None if discrete is None else discrete[row]))
            return
        cache = self._action_cache
        for row in range(count):
            values = None if discrete is None else discrete[row]
            key = b"" if values is None else values.tobytes()
            encoded = cache.get(key)
            if encoded is None:
                if len(cache) > 4096:
                    cache.clear()
                encoded = cache[key] = wire.len_field(1, encode_action(None, values))
            yield encoded

    def _update_behavior_specs(self, output: UnityOutputProto | RawOutput) -> None:
        if not isinstance(output, RawOutput):  # a RawOutput carries no initialization output
            super()._update_behavior_specs(output)

    def _update_state(self, output: Any) -> None:
        if not isinstance(output, RawOutput):
            super()._update_state(output)
            return
        for name, spec in self._env_specs.items():
            infos = output.agent_infos.get(name)
            if infos is None:
                self._env_state[name] = (DecisionSteps.empty(spec), TerminalSteps.empty(spec))
                continue
            plan = self._plans.get(name)
            if plan is None or plan.spec is not spec:
                plan = self._plans[name] = StepsPlan(spec)
            steps = fast_steps(infos, plan)
            if steps is None:
                steps = steps_from_proto([AgentInfoProto.FromString(info) for info in infos], spec)
            self._env_state[name] = steps
        self._side_channel_manager.process_side_channel_message(output.side_channel)

    @property
    def port(self) -> int:
        """The loopback port of this player."""
        return self._lease.port

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The player process (None after close)."""
        return cast("subprocess.Popen[bytes] | None", getattr(self, "_process", None))

    def close(self) -> None:
        """Stop the player and free its port (idempotent)."""
        self._close()

    def _close(self, timeout: int | None = None) -> None:
        # Also called by UnityEnvironment itself when its constructor fails. The atexit hook it
        # registers first would print an AttributeError at exit and keep every environment alive.
        atexit.unregister(self._close)
        communicator = getattr(self, "_communicator", None)
        if communicator is not None:
            with contextlib.suppress(Exception):
                communicator.close()
        self._loaded = False
        process = getattr(self, "_process", None)
        if process is not None:
            _stop_process(process, timeout_s=5.0 if timeout is None else float(timeout))
            self._process = None
        self._lease.release()


def _start_player(executable: str, args: Sequence[str], environment: Mapping[str, str]) -> subprocess.Popen[bytes]:
    try:
        # A new session, as mlagents does: Ctrl-C reaches the trainer, which then closes the player.
        return subprocess.Popen([executable, *args], env=dict(environment), start_new_session=True)
    except OSError as error:
        raise UnityEnvironmentException(f"could not start the player: {error}") from error


def _stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


_instance_counter = itertools.count()


def launch_unity(executable: Path, options: LaunchOptions) -> ManagedUnityEnvironment:
    """Start a player on a free loopback port and connect to it; retry when a port is taken."""
    _check_executable(executable)
    environment = {PYTHON_VARIABLE: sys.executable, **os.environ, **options.player_environment}
    tried: list[int] = []
    for _ in range(options.attempts):
        lease = reserve_port(options.base_port, skip=tried)
        tried.append(lease.port)
        try:
            return ManagedUnityEnvironment(
                lease, player_environment=environment, **_environment_kwargs(executable, lease.port, options)
            )
        except UnityWorkerInUseException:
            continue  # taken by a process that does not use our locks; the lease is released
        except UnityTimeOutException as error:
            raise UnityEnvError(_timeout_message(executable, lease.port, options)) from error
        except UnityEnvironmentException as error:
            raise UnityEnvError(f"{executable}: {error}") from error
    raise UnityEnvError(f"{executable}: ports {tried} were all taken; set environment.base_port elsewhere")


def _check_executable(executable: Path) -> None:
    if not executable.is_file():
        raise UnityEnvError(f"{executable}: no such Unity player executable")
    if not os.access(executable, os.X_OK):
        raise UnityEnvError(f"{executable}: not executable (chmod +x it)")


def _environment_kwargs(executable: Path, port: int, options: LaunchOptions) -> dict[str, Any]:
    args = list(options.player_args)
    if options.log_dir is not None and "-logfile" not in (a.lower() for a in args):
        Path(options.log_dir).mkdir(parents=True, exist_ok=True)
        log_file = Path(options.log_dir) / f"Player-{port}-{os.getpid()}-{next(_instance_counter)}.log"
        args += ["-logFile", str(log_file)]
    return {
        "file_name": str(executable),
        "seed": options.seed,
        "no_graphics": options.no_graphics,
        "timeout_wait": max(int(options.timeout_s), 1),
        "additional_args": args,
        "side_channels": _side_channels(options),
        "num_areas": options.num_areas,
    }


_live_environments: weakref.WeakSet[ManagedUnityEnvironment] = weakref.WeakSet()
"""This process's open environments: where `set_lesson_values` sends a curriculum's new values."""
_lesson_values: dict[str, float | SamplerSpec] = {}
"""Curriculum parameters' current lesson values in this process (players started later begin with them)."""


def set_lesson_values(values: Mapping[str, float | SamplerSpec]) -> int:
    """Send new lesson values to every open environment of this process, and to those it starts later; returns
    how many environments were open."""
    _lesson_values.update(values)
    environments = list(_live_environments)
    for environment in environments:
        environment.send_parameters(values)
    return len(environments)


def _send_parameter(channel: EnvironmentParametersChannel, key: str, value: float | SamplerSpec) -> None:
    if isinstance(value, int | float):
        channel.set_float_parameter(key, float(value))
        return
    sampler, p = value.sampler_type, value.sampler_parameters
    if sampler == "uniform":
        channel.set_uniform_sampler_parameters(key, p.min_value or 0.0, p.max_value or 0.0, p.seed)  # the spec checked both are set
    elif sampler == "gaussian":
        channel.set_gaussian_sampler_parameters(key, p.mean or 0.0, p.st_dev or 0.0, p.seed)
    else:
        channel.set_multirangeuniform_sampler_parameters(key, [list(interval) for interval in p.intervals or []], p.seed)


def _side_channels(options: LaunchOptions) -> list[SideChannel]:
    engine = EngineConfigurationChannel()
    engine.set_configuration_parameters(time_scale=options.time_scale)
    parameters = EnvironmentParametersChannel()
    for key, value in options.parameters.items():
        if isinstance(value, CurriculumSpec):  # its current lesson (the first until the launcher advances it)
            _send_parameter(parameters, key, _lesson_values.get(key, value.curriculum[0].value))
        else:
            _send_parameter(parameters, key, value)
    return [engine, parameters]


def _timeout_message(executable: Path, port: int, options: LaunchOptions) -> str:
    return (
        f"{executable}: the player did not connect to {LOOPBACK}:{port} within {options.timeout_s:g} s. "
        "Check that it is a Linux ML-Agents build (communication API 1.x) with an agent whose "
        "Behavior Type is Default, that it starts headless (no_graphics: true on a server), and its "
        f"player log{' in ' + options.log_dir if options.log_dir else ' (set environment.log_dir)'}"
    )


__all__ = ["MLAGENTS_VERSION", "PYTHON_VARIABLE", "LaunchOptions", "ManagedUnityEnvironment", "launch_unity", "set_lesson_values"]
