"""The per-step messages without the pure-Python protobuf classes.

protobuf 3.20 has no C extension for Python 3.11, so parsing one Basic step message with the
generated classes costs ~60 µs, mlagents' steps_from_proto on it ~40 µs, and building plus
serialising the reply ~60 µs. The step messages are decoded and encoded here instead (field
numbers from communicator_objects/*.proto, reference §2.2); anything unusual (initialization
output, compressed or visual observations, repeated sub-messages) returns None, and the caller
falls back to the generated classes and mlagents' own conversion. tests/unity/test_fast_path.py
checks that both paths agree.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np

from rlrunner.unity import wire

with warnings.catch_warnings():
    # mlagents-envs 0.28's generated code uses protobuf 3's deprecated descriptor factories.
    warnings.filterwarnings("ignore", message="Call to deprecated create function", category=DeprecationWarning)
    from mlagents_envs.base_env import BehaviorSpec, DecisionSteps, TerminalSteps
    from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto

_OK_HEADER = wire.HEADER_OK
_F32 = struct.Struct("<f")


def encode_python_message(inputs: UnityInputProto | bytes) -> bytes:
    """A ``UnityMessageProto`` with status 200 and ``inputs`` (a proto or its encoding)."""
    if not isinstance(inputs, bytes):
        inputs = inputs.SerializeToString()
    return _OK_HEADER + wire.len_field(3, inputs) if inputs else _OK_HEADER


def decode_unity_message(buf: bytes) -> tuple[int, bytes]:
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


class RawOutput:
    """A step's ``UnityRLOutputProto`` split into its agent infos (still encoded) per behaviour."""

    __slots__ = ("agent_infos", "side_channel")

    def __init__(self, agent_infos: dict[str, list[bytes]], side_channel: bytes) -> None:
        self.agent_infos = agent_infos
        self.side_channel = side_channel

    @property
    def rl_output(self) -> RawOutput:
        """Mirrors ``UnityOutputProto.rl_output`` for ``UnityEnvironment.step``."""
        return self

    @classmethod
    def decode(cls, output: bytes) -> RawOutput | None:
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


class StepsPlan:
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


def fast_steps(infos: Sequence[bytes], plan: StepsPlan) -> tuple[DecisionSteps, TerminalSteps] | None:
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


def _stack_observations(agents: list[_AgentInfo], plan: StepsPlan) -> list[np.ndarray] | None:
    result = []
    for index, (shape, size) in enumerate(zip(plan.shapes, plan.sizes, strict=True)):
        data = b"".join(agent[5][index] for agent in agents)
        if len(data) != size * len(agents):
            return None  # a size mismatch: mlagents' own check gives the precise error
        array = np.frombuffer(bytearray(data), dtype="<f4").reshape((len(agents), *shape))
        _check_finite(array, "observations")
        result.append(array)
    return result


def encode_action(continuous: np.ndarray | None, discrete: np.ndarray | None) -> bytes:
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


__all__ = [
    "RawOutput",
    "StepsPlan",
    "decode_unity_message",
    "encode_action",
    "encode_python_message",
    "fast_steps",
]
