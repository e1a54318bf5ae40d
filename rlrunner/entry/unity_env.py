"""Gymnasium adapters over the ML-Agents low-level API, and the edge that launches Unity players.

* ``UnityGymEnv``: one agent of one behaviour as a ``gymnasium.Env``.
* ``UnityVectorEnv``: N areas (agents) of one behaviour as a ``gymnasium.vector.VectorEnv``, so that
  one protocol exchange advances N environments.
* ``launch_unity``: the only function that starts a process; it reserves a port, retries and
  returns a ``BaseEnv`` that frees everything on ``close()``.
* ``make_unity_env``: the RLlib env creator (``env_config`` = the spec's ``environment`` section).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import itertools
import os
import queue
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

import grpc
import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlrunner.envs.basic import wire

with warnings.catch_warnings():
    # mlagents-envs 0.28's generated code uses protobuf 3's deprecated descriptor factories.
    warnings.filterwarnings("ignore", message="Call to deprecated create function", category=DeprecationWarning)
    from mlagents_envs.base_env import (
        ActionTuple,
        BaseEnv,
        BehaviorSpec,
        DecisionSteps,
        TerminalSteps,
    )
    from mlagents_envs.communicator import PollCallback
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.exception import (
        UnityEnvironmentException,
        UnityException,
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

Obs: TypeAlias = Any
LOOPBACK = "127.0.0.1"
DEFAULT_BASE_PORT = 5005
PORT_SPAN = 2000
"""How many ports above ``base_port`` are probed before giving up."""
_MAX_SILENT_STEPS = 10_000
PROCESS_POLL_S = 1.0
"""How often a waiting exchange checks that the player process is still alive."""


class UnityEnvError(RuntimeError):
    """The Unity player could not be launched, reached or kept alive."""


# --------------------------------------------------------------------------------------------
# Communicator: loopback only, queue hand-off


EXCHANGE_SERVICE = "communicator_objects.UnityToExternalProto"
"""The one gRPC service of the protocol; only ``Exchange`` is on the wire (reference §2.1)."""


class _QueueServicer:
    """Hands each Unity request, still encoded, to the trainer thread and waits for its reply.

    mlagents' servicer uses a ``multiprocessing.Pipe``, which pickles every message (a full
    serialise + parse with pure-Python protobuf) and polls; two ``SimpleQueue`` objects pass the
    bytes by reference. The handler is registered without (de)serialisers: the trainer thread
    decodes what it needs (see ``_decode_unity_message``), so the gRPC threads do no protobuf work.
    """

    def __init__(self) -> None:
        self.to_trainer: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.to_unity: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def Exchange(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        self.to_trainer.put(request)
        while True:
            try:
                reply = self.to_unity.get(timeout=PROCESS_POLL_S)
            except queue.Empty:
                if not context.is_active():  # the player vanished while the trainer thought
                    context.abort(grpc.StatusCode.CANCELLED, "player disconnected")
                continue
            if reply is None:  # close(): release this handler thread
                context.abort(grpc.StatusCode.UNAVAILABLE, "trainer closed")
                raise RuntimeError("trainer closed")  # abort() raises; this is for the type checker
            return reply

    def handlers(self) -> grpc.GenericRpcHandler:
        """The bytes-in, bytes-out ``Exchange`` handler."""
        exchange = grpc.unary_unary_rpc_method_handler(self.Exchange)
        return grpc.method_handlers_generic_handler(EXCHANGE_SERVICE, {"Exchange": exchange})


class LoopbackCommunicator(RpcCommunicator):  # type: ignore[misc]
    """``RpcCommunicator`` bound to 127.0.0.1 only, without SO_REUSEPORT, with a queue hand-off.

    ``exchange`` takes a ``UnityInputProto`` or its encoding (``bytes``, built by
    ``ManagedUnityEnvironment._generate_step_input``). It returns a ``UnityOutputProto``, or, when
    ``raw_outputs`` is set and the message carries no initialization output, a ``_RawOutput``
    that ``ManagedUnityEnvironment`` decodes without the pure-Python protobuf classes.
    """

    raw_outputs = False

    def create_server(self) -> None:
        """Start the gRPC server; a taken port raises ``UnityWorkerInUseException``."""
        self.check_port(self.port)
        servicer = _QueueServicer()
        # SO_REUSEPORT (grpc's default on Linux, and mlagents' setting) would let two servers share
        # a port silently; without it a taken port fails here and the launcher moves on.
        server = grpc.server(ThreadPoolExecutor(max_workers=2), options=(("grpc.so_reuseport", 0),))
        server.add_generic_rpc_handlers((servicer.handlers(),))
        try:
            bound = server.add_insecure_port(f"{LOOPBACK}:{self.port}")
        except RuntimeError as error:
            raise UnityWorkerInUseException(self.worker_id) from error
        if bound != self.port:
            raise UnityWorkerInUseException(self.worker_id)
        server.start()
        self.server = server
        self.unity_to_external = servicer
        self.is_open = True

    def check_port(self, port: int) -> None:
        """Fail fast when something already listens on the loopback port."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((LOOPBACK, port))
            except OSError as error:
                raise UnityWorkerInUseException(self.worker_id) from error

    def _receive(self, poll_callback: PollCallback | None) -> bytes:
        servicer: _QueueServicer = self.unity_to_external
        waited = 0.0
        while waited < self.timeout_wait:
            try:
                return servicer.to_trainer.get(timeout=PROCESS_POLL_S)
            except queue.Empty:
                waited += PROCESS_POLL_S
            if poll_callback is not None:
                poll_callback()  # raises when the player process has exited
        raise UnityTimeOutException(f"127.0.0.1:{self.port}: the Unity player sent nothing for {self.timeout_wait} s")

    def initialize(self, inputs: UnityInputProto, poll_callback: PollCallback | None = None) -> UnityOutputProto:
        """Run the two-message handshake; return Unity's initialization output."""
        first = UnityMessageProto.FromString(self._receive(poll_callback))
        self.unity_to_external.to_unity.put(_encode_python_message(inputs))
        self._receive(poll_callback)
        return first.unity_output

    def exchange(
        self, inputs: UnityInputProto | bytes, poll_callback: PollCallback | None = None
    ) -> UnityOutputProto | _RawOutput | None:
        """Send one input, wait for Unity's next output (None when Unity closed)."""
        self.unity_to_external.to_unity.put(_encode_python_message(inputs))
        status, output = _decode_unity_message(self._receive(poll_callback))
        if status != 200:
            return None
        if self.raw_outputs:
            raw = _RawOutput.decode(output)
            if raw is not None:
                return raw
        return UnityOutputProto.FromString(output)

    def close(self) -> None:
        """Tell Unity to quit (status 400), release a waiting handler and stop the server."""
        if not self.is_open:
            return
        self.is_open = False
        farewell = UnityMessageProto()
        farewell.header.status = 400
        self.unity_to_external.to_unity.put(farewell.SerializeToString())
        self.unity_to_external.to_unity.put(None)
        self.server.stop(grace=0.5)


# --------------------------------------------------------------------------------------------
# Wire fast path: the per-step messages without the pure-Python protobuf classes
#
# protobuf 3.20 has no C extension for Python 3.11, so parsing one Basic step message with the
# generated classes costs ~60 µs, mlagents' steps_from_proto on it ~40 µs, and building plus
# serialising the reply ~60 µs. The step messages are decoded and encoded here instead (field
# numbers from communicator_objects/*.proto, reference §2.2); anything unusual (initialization
# output, compressed or visual observations, repeated sub-messages) falls back to the generated
# classes and mlagents' own conversion. tests/entry/test_unity_env.py checks both paths agree.

_OK_HEADER = wire.HEADER_OK
_F32 = struct.Struct("<f")


def _encode_python_message(inputs: UnityInputProto | bytes) -> bytes:
    """A ``UnityMessageProto`` with status 200 and ``inputs`` (a proto or its encoding)."""
    if not isinstance(inputs, bytes):
        inputs = inputs.SerializeToString()
    return _OK_HEADER + wire.len_field(3, inputs) if inputs else _OK_HEADER


def _decode_unity_message(buf: bytes) -> tuple[int, bytes]:
    """(header status, encoded ``unity_output``) of a Unity → Python ``UnityMessageProto``."""
    status = 0
    outputs: list[bytes] = []
    for number, _, value in wire.iter_fields(buf):
        if number == 1 and isinstance(value, bytes):
            for sub, _, item in wire.iter_fields(value):
                if sub == 1 and isinstance(item, int):
                    status = wire.as_int32(item)
        elif number == 2 and isinstance(value, bytes):
            outputs.append(value)
    return status, b"".join(outputs)  # repeated occurrences of a message field merge


class _RawOutput:
    """A step's ``UnityRLOutputProto`` split into its agent infos (still encoded) per behaviour."""

    __slots__ = ("agent_infos", "side_channel")

    def __init__(self, agent_infos: dict[str, list[bytes]], side_channel: bytes) -> None:
        self.agent_infos = agent_infos
        self.side_channel = side_channel

    @property
    def rl_output(self) -> _RawOutput:
        """Mirrors ``UnityOutputProto.rl_output`` for ``UnityEnvironment.step``."""
        return self

    @classmethod
    def decode(cls, output: bytes) -> _RawOutput | None:
        """Split an encoded ``UnityOutputProto``; None when it needs the generated classes."""
        rl_output = None
        for number, _, value in wire.iter_fields(output):
            if number == 2 or not isinstance(value, bytes) or (number == 1 and rl_output is not None):
                return None  # initialization output (brain parameters), or fields to merge
            if number == 1:
                rl_output = value
        agent_infos: dict[str, list[bytes]] = {}
        side_channel = b""
        for number, _, value in wire.iter_fields(rl_output or b""):
            if number == 2 and isinstance(value, bytes):
                key, infos = "", []
                for sub, _, item in wire.iter_fields(value):
                    if sub == 1 and isinstance(item, bytes):
                        key = item.decode()
                    elif sub == 2 and isinstance(item, bytes):
                        infos = [info for n, _, info in wire.iter_fields(item) if n == 1 and isinstance(info, bytes)]
                if key in agent_infos:
                    return None
                agent_infos[key] = infos
            elif number == 3 and isinstance(value, bytes):
                side_channel += value if not side_channel else b""
        return cls(agent_infos, side_channel)


class _StepsPlan:
    """What decoding one behaviour's agent infos needs, computed once per ``BehaviorSpec``."""

    def __init__(self, spec: BehaviorSpec) -> None:
        self.spec = spec
        self.shapes = [tuple(o.shape) for o in spec.observation_specs]
        self.sizes = [int(np.prod(shape)) * 4 for shape in self.shapes]
        self.supported = all(len(shape) in (1, 2) for shape in self.shapes)
        self.branches = tuple(spec.action_spec.discrete_branches)
        self.mask_size = int(sum(self.branches))
        self.split = [int(i) for i in np.cumsum(self.branches)[:-1]]


_AgentInfo: TypeAlias = tuple[float, bool, bool, int, list[bool] | None, list[bytes], int, float]


def _decode_agent_info(buf: bytes, count: int) -> _AgentInfo | None:
    """The fields of an ``AgentInfoProto`` with ``count`` uncompressed float observations."""
    reward = group_reward = 0.0
    done = max_step = False
    agent_id = group_id = 0
    mask: list[bool] | None = None
    observations: list[bytes] = []
    for number, wire_type, value in wire.iter_fields(buf):
        if number == 7 and wire_type == 5:
            reward = _F32.unpack(value)[0]  # type: ignore[arg-type]
        elif number == 8 and wire_type == 0:
            done = bool(value)
        elif number == 9 and wire_type == 0:
            max_step = bool(value)
        elif number == 10 and wire_type == 0:
            agent_id = wire.as_int32(value)  # type: ignore[arg-type]
        elif number == 11:
            mask = (mask or []) + [bool(v) for v in wire.read_packed_ints(wire_type, value)]
        elif number == 13 and isinstance(value, bytes):
            data = _observation_floats(value)
            if data is None:
                return None
            observations.append(data)
        elif number == 14 and wire_type == 0:
            group_id = wire.as_int32(value)  # type: ignore[arg-type]
        elif number == 15 and wire_type == 5:
            group_reward = _F32.unpack(value)[0]  # type: ignore[arg-type]
        elif number in (7, 8, 9, 10, 14, 15):
            return None  # an unexpected encoding: let protobuf decide
    if len(observations) != count:
        return None
    return reward, done, max_step, agent_id, mask, observations, group_id, group_reward


def _observation_floats(buf: bytes) -> bytes | None:
    """The little-endian float32 data of an uncompressed ``ObservationProto`` (None otherwise)."""
    data = b""
    for number, _, value in wire.iter_fields(buf):
        if number in (2, 3) and value:
            return None  # compressed (PNG) observation
        if number == 4 and isinstance(value, bytes):
            for sub, sub_type, item in wire.iter_fields(value):
                if sub != 1:
                    continue
                if sub_type not in (2, 5) or not isinstance(item, bytes):  # packed, or one fixed32
                    return None
                data += item
    return data


def _check_finite(values: np.ndarray, source: str) -> None:
    # mlagents' _raise_on_nan_and_inf, without np.mean (same errors, cheaper on small arrays).
    if values.size and not np.isfinite(values).all():
        kind = "NaN" if np.isnan(values).any() else "Infinite"
        raise RuntimeError(f"The {source} provided had {kind} values.")


def _fast_steps(infos: Sequence[bytes], plan: _StepsPlan) -> tuple[DecisionSteps, TerminalSteps] | None:
    """``steps_from_proto`` on encoded agent infos; None when the generated classes are needed."""
    if not plan.supported:
        return None
    decoded = []
    for info in infos:
        fields = _decode_agent_info(info, len(plan.shapes))
        if fields is None:
            return None
        decoded.append(fields)
    decisions = [d for d in decoded if not d[1]]
    terminals = [d for d in decoded if d[1]]
    decision_obs = _stack_observations(decisions, plan)
    terminal_obs = _stack_observations(terminals, plan)
    if decision_obs is None or terminal_obs is None:
        return None
    rewards = [np.array([d[0] for d in part], dtype=np.float32) for part in (decisions, terminals)]
    group_rewards = [np.array([d[7] for d in part], dtype=np.float32) for part in (decisions, terminals)]
    for array in rewards:
        _check_finite(array, "rewards")
    for array in group_rewards:
        _check_finite(array, "group_rewards")
    action_mask = None
    if plan.branches and decisions:
        masked = np.zeros((len(decisions), plan.mask_size), dtype=bool)
        for row, d in enumerate(decisions):
            if d[4] is not None and len(d[4]) == plan.mask_size:
                masked[row] = d[4]
        action_mask = np.split(masked, plan.split, axis=1) if plan.split else [masked]
    return (
        DecisionSteps(
            decision_obs,
            rewards[0],
            np.array([d[3] for d in decisions], dtype=np.int32),
            action_mask,
            [d[6] for d in decisions],
            group_rewards[0],
        ),
        TerminalSteps(
            terminal_obs,
            rewards[1],
            np.array([d[2] for d in terminals], dtype=bool),
            np.array([d[3] for d in terminals], dtype=np.int32),
            [d[6] for d in terminals],
            group_rewards[1],
        ),
    )


def _stack_observations(agents: list[_AgentInfo], plan: _StepsPlan) -> list[np.ndarray] | None:
    result = []
    for index, (shape, size) in enumerate(zip(plan.shapes, plan.sizes, strict=True)):
        data = b"".join(agent[5][index] for agent in agents)
        if len(data) != size * len(agents):
            return None  # a size mismatch: mlagents' own check gives the precise error
        array = np.frombuffer(bytearray(data), dtype="<f4").reshape((len(agents), *shape))
        _check_finite(array, "observations")
        result.append(array)
    return result


def _encode_action(continuous: np.ndarray | None, discrete: np.ndarray | None) -> bytes:
    """One ``AgentActionProto`` as mlagents' ``_generate_step_input`` fills it."""
    parts = []
    floats = b""
    if continuous is not None and continuous.size:
        floats = continuous.astype("<f4").tobytes()
    if discrete is not None and discrete.size:
        floats += discrete.astype("<f4").tobytes()
    if floats:
        parts.append(wire.len_field(1, floats))  # vector_actions_deprecated
    if continuous is not None and continuous.size:
        parts.append(wire.len_field(6, continuous.astype("<f4").tobytes()))
    if discrete is not None and discrete.size:
        parts.append(wire.len_field(7, b"".join(wire.varint(int(v)) for v in discrete)))
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# Ports


@dataclass
class PortLease:
    """A loopback port reserved for one player, held by an exclusive ``flock`` on a lock file."""

    port: int
    _lock_fd: int

    def release(self) -> None:
        """Free the port for other processes (idempotent)."""
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # closing drops the flock; a crashed process drops it too
            self._lock_fd = -1


def _lock_dir() -> Path:
    path = Path(tempfile.gettempdir()) / "rlrunner-ports"
    path.mkdir(mode=0o777, exist_ok=True)
    return path


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def reserve_port(base_port: int, span: int = PORT_SPAN, skip: Sequence[int] = ()) -> PortLease:
    """Reserve the first free loopback port in [base_port, base_port + span), across processes."""
    directory = _lock_dir()
    for port in range(base_port, min(base_port + span, 65536)):
        if port in skip:
            continue
        fd = os.open(directory / f"{port}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        if _port_is_free(port):
            return PortLease(port, fd)
        os.close(fd)
    raise UnityEnvError(f"127.0.0.1:{base_port}-{base_port + span - 1}: no free port for a Unity player")


# --------------------------------------------------------------------------------------------
# The BaseEnv with a lease, a quiet atexit hook and clean teardown


class ManagedUnityEnvironment(UnityEnvironment):  # type: ignore[misc]
    """``UnityEnvironment`` on a loopback port lease that cleans up after itself, even after a crash."""

    def __init__(self, lease: PortLease, **kwargs: Any) -> None:
        self._lease = lease
        self._plans: dict[str, _StepsPlan] = {}
        self._action_cache: dict[bytes, bytes] = {}
        try:
            super().__init__(base_port=lease.port, worker_id=0, **kwargs)
        except BaseException:
            self._close(0)
            raise

    @staticmethod
    def _get_communicator(worker_id: int, base_port: int, timeout_wait: int) -> RpcCommunicator:
        communicator = LoopbackCommunicator(worker_id, base_port, timeout_wait)
        communicator.raw_outputs = True  # decoded by _update_state below
        return communicator

    # The per-step protocol work of UnityEnvironment.step, without the pure-Python protobuf
    # classes (see "Wire fast path"); the message contents are the same as mlagents' own.

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
                yield wire.len_field(1, _encode_action(continuous[row], None if discrete is None else discrete[row]))
            return
        cache = self._action_cache
        for row in range(count):
            values = None if discrete is None else discrete[row]
            key = b"" if values is None else values.tobytes()
            encoded = cache.get(key)
            if encoded is None:
                if len(cache) > 4096:
                    cache.clear()
                encoded = cache[key] = wire.len_field(1, _encode_action(None, values))
            yield encoded

    def _update_behavior_specs(self, output: UnityOutputProto | _RawOutput) -> None:
        if not isinstance(output, _RawOutput):  # a _RawOutput carries no initialization output
            super()._update_behavior_specs(output)

    def _update_state(self, output: Any) -> None:
        if not isinstance(output, _RawOutput):
            super()._update_state(output)
            return
        for name, spec in self._env_specs.items():
            infos = output.agent_infos.get(name)
            if infos is None:
                self._env_state[name] = (DecisionSteps.empty(spec), TerminalSteps.empty(spec))
                continue
            plan = self._plans.get(name)
            if plan is None or plan.spec is not spec:
                plan = self._plans[name] = _StepsPlan(spec)
            steps = _fast_steps(infos, plan)
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


def _stop_process(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# --------------------------------------------------------------------------------------------
# Launching


@dataclass(frozen=True)
class LaunchOptions:
    """Everything ``launch_unity`` needs besides the executable."""

    base_port: int = DEFAULT_BASE_PORT
    no_graphics: bool = True
    player_args: tuple[str, ...] = ()
    time_scale: float = 20.0
    parameters: Mapping[str, float] | None = None
    timeout_s: float = 60.0
    num_areas: int = 1
    seed: int = 0
    log_dir: str | None = None
    attempts: int = 20


_instance_counter = itertools.count()


def launch_unity(executable: Path, options: LaunchOptions) -> ManagedUnityEnvironment:
    """Start a player on a free loopback port and connect to it; retry when a port is taken."""
    _check_executable(executable)
    # The bundled player's wrapper runs this interpreter (the one with rlrunner's dependencies).
    os.environ.setdefault("RLRUNNER_PYTHON", sys.executable)
    tried: list[int] = []
    for _ in range(options.attempts):
        lease = reserve_port(options.base_port, skip=tried)
        tried.append(lease.port)
        try:
            return ManagedUnityEnvironment(lease, **_environment_kwargs(executable, lease.port, options))
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


def _side_channels(options: LaunchOptions) -> list[SideChannel]:
    engine = EngineConfigurationChannel()
    engine.set_configuration_parameters(time_scale=options.time_scale)
    parameters = EnvironmentParametersChannel()
    for key, value in (options.parameters or {}).items():
        parameters.set_float_parameter(key, float(value))
    return [engine, parameters]


def _timeout_message(executable: Path, port: int, options: LaunchOptions) -> str:
    return (
        f"{executable}: the player did not connect to 127.0.0.1:{port} within {options.timeout_s:g} s. "
        "Check that it is a Linux ML-Agents build (communication API 1.x) with an agent whose "
        "Behavior Type is Default, that it starts headless (no_graphics: true on a server), and its "
        f"player log{' in ' + options.log_dir if options.log_dir else ' (set environment.log_dir)'}"
    )


# --------------------------------------------------------------------------------------------
# Spaces and conversions shared by both adapters


class _ActionFlattener:
    """Maps a Discrete index to one action per branch (the Cartesian product, as in UnityToGymWrapper)."""

    def __init__(self, branches: Sequence[int]) -> None:
        self.branches = tuple(branches)
        self.table = np.array(list(itertools.product(*(range(b) for b in branches))), dtype=np.int32)

    def mask(self, branch_masks: Sequence[np.ndarray]) -> np.ndarray:
        """Allowed flat actions given per-branch allowed vectors (rows = agents)."""
        allowed = np.ones((branch_masks[0].shape[0], len(self.table)), dtype=bool)
        for branch, branch_mask in enumerate(branch_masks):
            allowed &= branch_mask[:, self.table[:, branch]]
        return allowed


@dataclass
class _Converter:
    """Observation/action spaces of one behaviour and the conversions to and from mlagents arrays."""

    spec: BehaviorSpec
    uint8_visual: bool
    flatten_branched: bool
    allow_multiple_obs: bool

    def __post_init__(self) -> None:
        action_spec = self.spec.action_spec
        if action_spec.continuous_size > 0 and action_spec.discrete_size > 0:
            raise UnityEnvError("unity_env: hybrid (continuous + discrete) actions are not supported")
        self.visual = [i for i, o in enumerate(self.spec.observation_specs) if len(o.shape) == 3]
        self.vector = [i for i, o in enumerate(self.spec.observation_specs) if len(o.shape) != 3]
        if not self.visual and not self.vector:
            raise UnityEnvError("unity_env: the behaviour has no observations")
        self.vector_size = int(sum(np.prod(self.spec.observation_specs[i].shape) for i in self.vector))
        self.flattener = (
            _ActionFlattener(action_spec.discrete_branches)
            if self.flatten_branched and action_spec.discrete_size > 1
            else None
        )
        self.observation_space = self._observation_space()
        self.action_space = self._action_space()

    def _visual_space(self, index: int) -> spaces.Box:
        shape = self.spec.observation_specs[index].shape
        if self.uint8_visual:
            return spaces.Box(0, 255, shape, dtype=np.uint8)
        return spaces.Box(0.0, 1.0, shape, dtype=np.float32)

    def _vector_space(self) -> spaces.Box:
        return spaces.Box(-np.inf, np.inf, (self.vector_size,), dtype=np.float32)

    def _observation_space(self) -> spaces.Space[Any]:
        if self.allow_multiple_obs:
            parts: list[spaces.Space[Any]] = [self._visual_space(i) for i in self.visual]
            if self.vector:
                parts.append(self._vector_space())
            return spaces.Tuple(parts)
        if self.visual:
            return self._visual_space(self.visual[0])
        return self._vector_space()

    def _action_space(self) -> spaces.Space[Any]:
        action_spec = self.spec.action_spec
        if action_spec.continuous_size > 0:
            return spaces.Box(-1.0, 1.0, (action_spec.continuous_size,), dtype=np.float32)
        branches = action_spec.discrete_branches
        if len(branches) == 1:
            return spaces.Discrete(branches[0])
        if self.flattener is not None:
            return spaces.Discrete(len(self.flattener.table))
        return spaces.MultiDiscrete(list(branches))

    @property
    def is_discrete(self) -> bool:
        """Whether actions are discrete (masks are reported)."""
        return bool(self.spec.action_spec.discrete_size > 0)

    def observations(self, obs: Sequence[np.ndarray], rows: np.ndarray | slice) -> Obs:
        """Gym observations for the given agent rows (batched along the first axis)."""
        if self.allow_multiple_obs:
            parts = [self._visual(obs[i][rows]) for i in self.visual]
            if self.vector:
                parts.append(self._vector(obs, rows))
            return tuple(parts)
        if self.visual:
            return self._visual(obs[self.visual[0]][rows])
        return self._vector(obs, rows)

    def _visual(self, array: np.ndarray) -> np.ndarray:
        if self.uint8_visual:
            return (array * 255.0).astype(np.uint8)
        return array.astype(np.float32, copy=False)

    def _vector(self, obs: Sequence[np.ndarray], rows: np.ndarray | slice) -> np.ndarray:
        if len(self.vector) == 1 and obs[self.vector[0]].ndim == 2:
            return obs[self.vector[0]][rows].astype(np.float32, copy=False)
        parts = [obs[i][rows].reshape(len(obs[i][rows]), -1) for i in self.vector]
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def action_tuple(self, actions: np.ndarray) -> ActionTuple:
        """An ``ActionTuple`` for a batch of gym actions (first axis = agents)."""
        if self.spec.action_spec.continuous_size > 0:
            return ActionTuple(continuous=np.asarray(actions, dtype=np.float32).reshape(len(actions), -1))
        discrete = np.asarray(actions, dtype=np.int32).reshape(len(actions), -1)
        if self.flattener is not None:
            discrete = self.flattener.table[discrete[:, 0]]
        return ActionTuple(discrete=discrete)

    def noop(self, count: int) -> ActionTuple:
        """Zero actions (the conventional no-op) for ``count`` agents."""
        return cast(ActionTuple, self.spec.action_spec.empty_action(count))

    def allowed_actions(self, decision: DecisionSteps, rows: np.ndarray | slice) -> Any:
        """The gymnasium-style mask (1 = allowed) of the given rows, or all-ones without masks."""
        branches = self.spec.action_spec.discrete_branches
        count = len(np.arange(len(decision))[rows])
        if decision.action_mask is None:
            per_branch = [np.ones((count, b), dtype=bool) for b in branches]
        else:
            per_branch = [~np.asarray(m[rows], dtype=bool) for m in decision.action_mask]
        if self.flattener is not None:
            return self.flattener.mask(per_branch).astype(np.int8)
        if len(branches) == 1:
            return per_branch[0].astype(np.int8)
        return tuple(m.astype(np.int8) for m in per_branch)

    def all_allowed(self, count: int) -> Any:
        """An all-ones mask for ``count`` agents (terminal steps carry no mask)."""
        branches = self.spec.action_spec.discrete_branches
        if self.flattener is not None:
            return np.ones((count, len(self.flattener.table)), dtype=np.int8)
        if len(branches) == 1:
            return np.ones((count, branches[0]), dtype=np.int8)
        return tuple(np.ones((count, b), dtype=np.int8) for b in branches)


def _single_behavior(env: BaseEnv) -> tuple[str, bool]:
    reset = not env.behavior_specs
    if reset:
        env.reset()  # specs arrive with the first message that carries agents
    names = list(env.behavior_specs)
    if len(names) != 1:
        raise UnityEnvError(
            f"unity_env: the environment has {len(names)} behaviours ({', '.join(names) or 'none'}); "
            "this adapter drives exactly one (use one behaviour per Unity build)"
        )
    return names[0], reset


@contextlib.contextmanager
def _player_errors(env: BaseEnv, action: str) -> Iterator[None]:
    """Turn mlagents' exceptions during an exchange into one error that names the player."""
    try:
        yield
    except UnityException as error:
        port = getattr(env, "port", None)
        process = getattr(env, "process", None)
        where = f"127.0.0.1:{port}" if port is not None else "unity_env"
        who = f" (player pid {process.pid})" if process is not None else ""
        raise UnityEnvError(f"{where}{who}: {action} failed, the Unity player stopped or hung: {error}") from error


def _rewards(steps: DecisionSteps | TerminalSteps) -> np.ndarray:
    # Group rewards are part of the agent's return (Ray PR #24016 fixed the same omission).
    return cast(np.ndarray, steps.reward + steps.group_reward)


def _first(value: Any) -> Any:
    if isinstance(value, tuple):
        return tuple(part[0] for part in value)
    return value[0]


# --------------------------------------------------------------------------------------------
# Single agent


class UnityGymEnv(gymnasium.Env[Obs, Any]):
    """One agent of one ML-Agents behaviour as a gymnasium environment."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        env: BaseEnv,
        *,
        uint8_visual: bool = False,
        flatten_branched: bool = False,
        allow_multiple_obs: bool = False,
        max_episode_steps: int | None = None,
    ) -> None:
        self._env = env
        self._behavior, was_reset = _single_behavior(env)
        self._conv = _Converter(env.behavior_specs[self._behavior], uint8_visual, flatten_branched, allow_multiple_obs)
        self.observation_space = self._conv.observation_space
        self.action_space = self._conv.action_space
        self._max_episode_steps = max_episode_steps
        self._agent_id = -1
        self._steps = 0
        # The first decision of a new episode, when Unity already sent it (after env.reset() in
        # _single_behavior, or beside a terminal step): reset() then needs no exchange.
        self._fresh: DecisionSteps | None = None
        self._needs_reset = True
        self._closed = False
        if was_reset:
            decision, _ = env.get_steps(self._behavior)
            self._fresh = decision if len(decision) else None

    @property
    def unity_env(self) -> BaseEnv:
        """The underlying ML-Agents environment."""
        return self._env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict[str, Any]]:
        """Start an episode: reuse Unity's pending first decision, or send RESET."""
        super().reset(seed=seed)
        decision = self._fresh
        if decision is None:
            with _player_errors(self._env, "reset()"):
                self._env.reset()
                decision = self._await_decision()
        self._fresh = None
        self._check_one_agent(decision)
        self._agent_id = int(decision.agent_id[0])
        self._steps = 0
        self._needs_reset = False
        return _first(self._conv.observations(decision.obs, slice(0, 1))), self._info(decision)

    def step(self, action: Any) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        """Send one action; return (obs, reward, terminated, truncated, info)."""
        if self._needs_reset:
            raise UnityEnvError("unity_env: step() called before reset() or after the episode ended")
        self._env.set_actions(self._behavior, self._conv.action_tuple(np.asarray([action])))
        with _player_errors(self._env, "step()"):
            self._env.step()
            decision, terminal = self._await_agent()
        if len(terminal) and self._agent_id in terminal.agent_id:
            return self._end_episode(decision, terminal)
        self._steps += 1
        truncated = self._max_episode_steps is not None and self._steps >= self._max_episode_steps
        self._needs_reset = truncated
        obs = _first(self._conv.observations(decision.obs, slice(0, 1)))
        return obs, float(_rewards(decision)[0]), False, truncated, self._info(decision)

    def _await_agent(self) -> tuple[DecisionSteps, TerminalSteps]:
        for _ in range(_MAX_SILENT_STEPS):
            decision, terminal = self._env.get_steps(self._behavior)
            if self._agent_id in terminal.agent_id:
                return decision, terminal
            if self._agent_id in decision.agent_id:
                self._check_one_agent(decision)
                return decision, terminal
            if len(decision):
                raise UnityEnvError(
                    f"unity_env: agent {decision.agent_id.tolist()} of {self._behavior} requested a "
                    f"decision, expected agent {self._agent_id}"
                )
            self._env.step()  # no decision requested this Academy step: let Unity run on
        raise UnityEnvError(f"unity_env: agent {self._agent_id} of {self._behavior} stopped requesting decisions")

    def _end_episode(
        self, decision: DecisionSteps, terminal: TerminalSteps
    ) -> tuple[Obs, float, bool, bool, dict[str, Any]]:
        row = int(np.flatnonzero(terminal.agent_id == self._agent_id)[0])
        interrupted = bool(terminal.interrupted[row])
        self._steps += 1
        limit = self._max_episode_steps is not None and self._steps >= self._max_episode_steps
        self._needs_reset = True
        self._fresh = decision if len(decision) else None
        obs = _first(self._conv.observations(terminal.obs, slice(row, row + 1)))
        info: dict[str, Any] = {"max_step_reached": interrupted}
        if self._conv.is_discrete:
            info["action_mask"] = _first(self._conv.all_allowed(1))
        reward = float(_rewards(terminal)[row])
        return obs, reward, not interrupted, interrupted or limit, info

    def _await_decision(self) -> DecisionSteps:
        for _ in range(_MAX_SILENT_STEPS):
            decision, _ = self._env.get_steps(self._behavior)
            if len(decision):
                return decision
            self._env.step()
        raise UnityEnvError(f"unity_env: behaviour {self._behavior} never requested a decision")

    def _check_one_agent(self, decision: DecisionSteps) -> None:
        if len(decision) > 1:
            raise UnityEnvError(
                f"unity_env: behaviour {self._behavior} has {len(decision)} agents; UnityGymEnv drives "
                "one (use num_areas > 1, i.e. UnityVectorEnv, for several)"
            )

    def _info(self, decision: DecisionSteps) -> dict[str, Any]:
        if not self._conv.is_discrete:
            return {}
        return {"action_mask": _first(self._conv.allowed_actions(decision, slice(0, 1)))}

    def close(self) -> None:
        """Close the Unity environment (idempotent)."""
        if not self._closed:
            self._closed = True
            self._env.close()


# --------------------------------------------------------------------------------------------
# Areas: N agents of one behaviour as a vector env


class UnityVectorEnv(VectorEnv[Obs, Any, Any]):
    """N areas (one agent each) of one behaviour; one exchange steps them all (NEXT_STEP autoreset).

    With next-step autoreset the action given to a finished area on the following step is
    ignored, but Unity has already started that area's next episode and waits for an action;
    it receives a no-op (zeros) and the observation after it becomes the reset observation.
    A ``max_episode_steps`` truncation cannot reset one area alone in Unity, so the next episode
    continues from the area's current state; prefer the player's own max-step parameter.
    """

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        env: BaseEnv,
        num_envs: int,
        *,
        uint8_visual: bool = False,
        flatten_branched: bool = False,
        allow_multiple_obs: bool = False,
        max_episode_steps: int | None = None,
    ) -> None:
        self._env = env
        self._behavior, was_reset = _single_behavior(env)
        self._conv = _Converter(env.behavior_specs[self._behavior], uint8_visual, flatten_branched, allow_multiple_obs)
        self.num_envs = num_envs
        self.single_observation_space = self._conv.observation_space
        self.single_action_space = self._conv.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._max_episode_steps = max_episode_steps
        self._area_of: dict[int, int] = {}
        self._rows = np.arange(num_envs)  # area -> row in the latest DecisionSteps
        self._steps = np.zeros(num_envs, dtype=np.int64)
        self._autoreset = np.zeros(num_envs, dtype=bool)
        self._fresh = was_reset and len(env.get_steps(self._behavior)[0]) == num_envs
        self._closed = False

    @property
    def unity_env(self) -> BaseEnv:
        """The underlying ML-Agents environment."""
        return self._env

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict[str, Any]]:
        """Reset every area (RESET, unless Unity's first decisions are still unused)."""
        super().reset(seed=seed)
        if not self._fresh:
            with _player_errors(self._env, "reset()"):
                self._env.reset()
        self._fresh = False
        decision, _ = self._env.get_steps(self._behavior)
        self._check_count(decision)
        self._area_of = {int(agent): area for area, agent in enumerate(decision.agent_id)}
        self._rows = np.arange(self.num_envs)
        self._steps[:] = 0
        self._autoreset[:] = False
        return self._conv.observations(decision.obs, self._rows), self._infos(decision)

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all areas with one exchange."""
        self._send(actions)
        decision, terminal = self._env.get_steps(self._behavior)
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        ended = self._apply_terminal(terminal, rewards, terminated, truncated)
        self._map_decisions(decision, ended)
        live = ~ended
        rewards[live] = _rewards(decision)[self._rows[live]]
        self._steps += 1
        if self._max_episode_steps is not None:
            truncated |= live & (self._steps >= self._max_episode_steps)
        # Areas that were auto-reset on this step report the reset observation only.
        rewards[self._autoreset] = 0.0
        terminated[self._autoreset] = False
        truncated[self._autoreset] = False
        self._steps[self._autoreset] = 0
        obs = self._conv.observations(decision.obs, self._rows)
        if ended.any():
            obs = self._with_terminal_obs(obs, terminal, ended & ~self._autoreset)
        self._autoreset = (terminated | truncated).copy()
        return obs, rewards, terminated, truncated, self._infos(decision)

    def _send(self, actions: Any) -> None:
        batch = self._conv.action_tuple(np.asarray(actions)) if actions is not None else self._conv.noop(self.num_envs)
        if self._autoreset.any():
            noop = self._conv.noop(self.num_envs)
            for name in ("continuous", "discrete"):
                values = getattr(batch, name)
                if values.size:
                    values[self._autoreset] = getattr(noop, name)[self._autoreset]
        order = np.empty(self.num_envs, dtype=np.int64)
        order[self._rows] = np.arange(self.num_envs)  # row -> area
        self._env.set_actions(self._behavior, _reorder(batch, order))
        with _player_errors(self._env, "step()"):
            self._env.step()

    def _apply_terminal(
        self, terminal: TerminalSteps, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray
    ) -> np.ndarray:
        ended = np.zeros(self.num_envs, dtype=bool)
        self._terminal_rows = np.full(self.num_envs, -1)
        terminal_rewards = _rewards(terminal)
        for row, agent in enumerate(terminal.agent_id):
            area = self._area_of.pop(int(agent), None)
            if area is None:
                continue  # an agent we never saw (e.g. a noop episode that ended at once)
            ended[area] = True
            self._terminal_rows[area] = row
            rewards[area] = terminal_rewards[row]
            interrupted = bool(terminal.interrupted[row])
            terminated[area] = not interrupted
            truncated[area] = interrupted
        return ended

    def _map_decisions(self, decision: DecisionSteps, ended: np.ndarray) -> None:
        self._check_count(decision)
        free = iter(int(area) for area in np.flatnonzero(ended))
        rows = np.empty(self.num_envs, dtype=np.int64)
        for row, agent in enumerate(decision.agent_id):
            area = self._area_of.get(int(agent))
            if area is None:
                area = next(free, None)
                if area is None:
                    raise UnityEnvError(
                        f"unity_env: agent {agent} of {self._behavior} belongs to no area "
                        "(areas must keep one agent each, ending and restarting in the same message)"
                    )
                self._area_of[int(agent)] = area
            rows[area] = row
        self._rows = rows

    def _with_terminal_obs(self, obs: Obs, terminal: TerminalSteps, areas: np.ndarray) -> Obs:
        indices = np.flatnonzero(areas)
        rows = self._terminal_rows[indices]
        final = self._conv.observations(terminal.obs, rows)
        if isinstance(obs, tuple):
            for part, final_part in zip(obs, final, strict=True):
                part[indices] = final_part
            return obs
        obs[indices] = final
        return obs

    def _check_count(self, decision: DecisionSteps) -> None:
        if len(decision) != self.num_envs:
            raise UnityEnvError(
                f"unity_env: {len(decision)} agents of {self._behavior} requested a decision, expected "
                f"{self.num_envs} (one per area); areas need an agent that decides every step"
            )

    def _infos(self, decision: DecisionSteps) -> dict[str, Any]:
        if not self._conv.is_discrete:
            return {}
        mask = self._conv.allowed_actions(decision, self._rows)
        return {"action_mask": mask, "_action_mask": np.ones(self.num_envs, dtype=bool)}

    def close(self, **kwargs: Any) -> None:
        """Close the Unity environment (idempotent)."""
        if not self._closed:
            self._closed = True
            self._env.close()


def _reorder(batch: ActionTuple, order: np.ndarray) -> ActionTuple:
    result = ActionTuple()
    if batch.continuous.size:
        result.add_continuous(batch.continuous[order])
    if batch.discrete.size:
        result.add_discrete(batch.discrete[order])
    return result


# --------------------------------------------------------------------------------------------
# RLlib env creator


def resolve_binary(name: str | None, binary: str | None, environ: Mapping[str, str]) -> Path:
    """The player executable for the spec's ``name``/``binary`` (s3:// → the SageMaker train channel)."""
    if binary is not None:
        if binary.startswith("s3://"):
            channel = environ.get("SM_CHANNEL_TRAIN")
            if not channel:
                raise UnityEnvError(
                    f"environment.binary: {binary} needs the SageMaker train channel (SM_CHANNEL_TRAIN unset)"
                )
            path = Path(channel) / binary.rstrip("/").rsplit("/", 1)[-1]
            if path.is_file():
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return path
        return Path(binary).expanduser().resolve()
    if name is not None:
        from rlrunner.envs.registry import resolve_environment

        return resolve_environment(name)
    raise UnityEnvError("environment: neither name nor binary is set")


def _launch_options(config: Mapping[str, Any], num_areas: int) -> LaunchOptions:
    seed = config.get("seed")
    worker_index = int(getattr(config, "worker_index", 0) or 0)
    return LaunchOptions(
        base_port=int(config.get("base_port") or DEFAULT_BASE_PORT),
        no_graphics=bool(config.get("no_graphics", True)),
        player_args=tuple(config.get("player_args") or ()),
        time_scale=float(config.get("time_scale", 20.0)),
        parameters=dict(config.get("parameters") or {}),
        timeout_s=float(config.get("timeout_s", 60.0)),
        num_areas=num_areas,
        # Unity takes one int seed at start; offset it per env runner so they do not play alike.
        seed=(int(seed) + worker_index) if seed is not None else worker_index,
        log_dir=config.get("log_dir"),
    )


def make_unity_env(env_config: Mapping[str, Any]) -> gymnasium.Env[Obs, Any] | UnityVectorEnv:
    """RLlib env creator: launch the player and wrap it (a VectorEnv when areas > 1 or num_envs given)."""
    vector_entry = "num_envs" in env_config  # RLlib's vector_entry_point passes num_envs
    num_areas = int(env_config["num_envs"] if vector_entry else env_config.get("num_areas") or 1)
    executable = resolve_binary(env_config.get("name"), env_config.get("binary"), os.environ)
    base = launch_unity(executable, _launch_options(env_config, num_areas))
    uint8_visual = bool(env_config.get("uint8_visual", False))
    flatten_branched = bool(env_config.get("flatten_branched", False))
    allow_multiple_obs = bool(env_config.get("allow_multiple_obs", False))
    limit = env_config.get("max_episode_steps")
    max_episode_steps = int(limit) if limit is not None else None
    try:
        if vector_entry or num_areas > 1:
            return UnityVectorEnv(
                base,
                num_areas,
                uint8_visual=uint8_visual,
                flatten_branched=flatten_branched,
                allow_multiple_obs=allow_multiple_obs,
                max_episode_steps=max_episode_steps,
            )
        return UnityGymEnv(
            base,
            uint8_visual=uint8_visual,
            flatten_branched=flatten_branched,
            allow_multiple_obs=allow_multiple_obs,
            max_episode_steps=max_episode_steps,
        )
    except BaseException:
        base.close()
        raise


__all__ = [
    "LaunchOptions",
    "LoopbackCommunicator",
    "ManagedUnityEnvironment",
    "PortLease",
    "UnityEnvError",
    "UnityGymEnv",
    "UnityVectorEnv",
    "launch_unity",
    "make_unity_env",
    "reserve_port",
    "resolve_binary",
]
