"""Hand-rolled protobuf wire format for the few ML-Agents messages rlrunner builds or reads itself.

Both sides of the protocol use it: the trainer's fast path (``rlrunner.unity.fast_path``) and the
bundled Basic player (``rlrunner.envs.basic.player``). They avoid the generated ``mlagents_envs``
classes on purpose: with protobuf 3.20 on Python 3.11 only the pure-Python implementation exists,
and building/parsing messages through it costs more per step than the whole game. Field numbers
follow ``communicator_objects/*.proto`` (reference §2.2); tests decode every message built here
with the real generated classes. Standard library only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

_VARINT = 0
_FIXED64 = 1
_LEN = 2
_FIXED32 = 5

STATUS_OK = 200
COMMAND_STEP = 0
COMMAND_RESET = 1
COMMAND_QUIT = 2

_FLOAT = struct.Struct("<f")


def varint(value: int) -> bytes:
    """Encode a non-negative (or int32, two's complement) integer as a protobuf varint."""
    if value < 0:
        value += 1 << 64
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """Encode a field key."""
    return varint((number << 3) | wire_type)


def len_field(number: int, payload: bytes) -> bytes:
    """Encode a length-delimited field (message, string, bytes or packed repeated)."""
    return tag(number, _LEN) + varint(len(payload)) + payload


def int_field(number: int, value: int) -> bytes:
    """Encode a varint field, omitting the proto3 default 0."""
    return tag(number, _VARINT) + varint(value) if value else b""


def float_field(number: int, value: float) -> bytes:
    """Encode a float field, omitting the proto3 default 0.0."""
    return tag(number, _FIXED32) + _FLOAT.pack(value) if value else b""


def str_field(number: int, value: str) -> bytes:
    """Encode a string field, omitting the empty default."""
    return len_field(number, value.encode()) if value else b""


def packed_ints(number: int, values: list[int]) -> bytes:
    """Encode a packed repeated int32 field."""
    return len_field(number, b"".join(varint(v) for v in values)) if values else b""


def packed_floats(number: int, values: list[float]) -> bytes:
    """Encode a packed repeated float field."""
    return len_field(number, struct.pack(f"<{len(values)}f", *values)) if values else b""


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a varint at ``pos``; return (value, next position)."""
    result = 0
    shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def iter_fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """Yield (field number, wire type, value) for every field of one message."""
    pos = 0
    end = len(buf)
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = read_varint(buf, pos)
            yield number, wire_type, value
        elif wire_type == _LEN:
            size, pos = read_varint(buf, pos)
            yield number, wire_type, buf[pos : pos + size]
            pos += size
        elif wire_type == _FIXED32:
            yield number, wire_type, buf[pos : pos + 4]
            pos += 4
        elif wire_type == _FIXED64:
            yield number, wire_type, buf[pos : pos + 8]
            pos += 8
        else:
            raise ValueError(f"protobuf: unsupported wire type {wire_type} for field {number}")


def as_int32(value: int) -> int:
    """Reinterpret a decoded varint as a signed int32."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value & 0x80000000 else value


def read_packed_ints(wire_type: int, value: int | bytes) -> list[int]:
    """Decode a repeated int32 field that may be packed or not."""
    if isinstance(value, int):
        return [as_int32(value)]
    out: list[int] = []
    pos = 0
    while pos < len(value):
        item, pos = read_varint(value, pos)
        out.append(as_int32(item))
    return out


@dataclass
class Input:
    """What the player needs from one Python → Unity message."""

    status: int = STATUS_OK
    command: int = COMMAND_STEP
    side_channel: bytes = b""
    actions: dict[str, list[list[int]]] = field(default_factory=dict)
    continuous_actions: dict[str, list[list[float]]] = field(default_factory=dict)
    """Per behaviour, every agent's continuous actions (present only for behaviours that have them)."""
    has_rl_input: bool = False
    seed: int = 0
    num_areas: int = 0
    communication_version: str = ""


def decode_input(buf: bytes) -> Input:
    """Decode a ``UnityMessageProto`` sent by Python (header + unity_input)."""
    result = Input()
    for number, _, value in iter_fields(buf):
        if number == 1 and isinstance(value, bytes):
            result.status = _decode_status(value)
        elif number == 3 and isinstance(value, bytes):
            _decode_unity_input(value, result)
    return result


def _decode_status(buf: bytes) -> int:
    status = 0
    for number, _, value in iter_fields(buf):
        if number == 1 and isinstance(value, int):
            status = as_int32(value)
    return status


def _decode_unity_input(buf: bytes, result: Input) -> None:
    for number, _, value in iter_fields(buf):
        if not isinstance(value, bytes):
            continue
        if number == 1:
            result.has_rl_input = True
            _decode_rl_input(value, result)
        elif number == 2:
            _decode_init_input(value, result)


def _decode_init_input(buf: bytes, result: Input) -> None:
    for number, _, value in iter_fields(buf):
        if number == 1 and isinstance(value, int):
            result.seed = as_int32(value)
        elif number == 2 and isinstance(value, bytes):
            result.communication_version = value.decode()
        elif number == 5 and isinstance(value, int):
            result.num_areas = as_int32(value)


def _decode_rl_input(buf: bytes, result: Input) -> None:
    for number, _, value in iter_fields(buf):
        if number == 1 and isinstance(value, bytes):
            _decode_action_entry(value, result.actions, result.continuous_actions)
        elif number == 4 and isinstance(value, int):
            result.command = value
        elif number == 5 and isinstance(value, bytes):
            result.side_channel = value


def _decode_action_entry(
    buf: bytes, actions: dict[str, list[list[int]]], continuous_actions: dict[str, list[list[float]]]
) -> None:
    key = ""
    agents: list[tuple[list[int], list[float]]] = []
    for number, _, value in iter_fields(buf):
        if number == 1 and isinstance(value, bytes):
            key = value.decode()
        elif number == 2 and isinstance(value, bytes):
            agents = [
                _decode_agent_action(item)
                for item_number, _, item in iter_fields(value)
                if item_number == 1 and isinstance(item, bytes)
            ]
    actions[key] = [discrete for discrete, _ in agents]
    if any(continuous for _, continuous in agents):
        continuous_actions[key] = [continuous for _, continuous in agents]


def _decode_agent_action(buf: bytes) -> tuple[list[int], list[float]]:
    discrete: list[int] = []
    continuous: list[float] = []
    for number, wire_type, value in iter_fields(buf):
        if number == 7:
            discrete.extend(read_packed_ints(wire_type, value))
        elif number == 6 and isinstance(value, bytes):
            # packed (LEN) or one FIXED32 per value: either way whole little-endian floats
            continuous.extend(struct.unpack(f"<{len(value) // 4}f", value))
    return discrete, continuous


def observation(name: str, values: list[float]) -> bytes:
    """Encode one vector ``ObservationProto`` (uncompressed, default type)."""
    float_data = packed_floats(1, values) or b""
    return b"".join(
        (
            packed_ints(1, [len(values)]),
            len_field(4, float_data),
            packed_ints(6, [1]),  # DimensionProperty.NONE, as C# sends for vector sensors
            str_field(8, name),
        )
    )


def agent_info(observation_field: bytes, reward: float, done: bool, max_step_reached: bool, agent_id: int) -> bytes:
    """Encode one ``AgentInfoProto``; ``observation_field`` is a pre-encoded field 13."""
    return b"".join(
        (
            float_field(7, reward),
            int_field(8, int(done)),
            int_field(9, int(max_step_reached)),
            int_field(10, agent_id),
            observation_field,
        )
    )


def rl_output(behavior_name: str, infos: list[bytes], side_channel: bytes = b"") -> bytes:
    """Encode a ``UnityRLOutputProto`` with one behaviour's agent infos."""
    listing = b"".join(len_field(1, info) for info in infos)
    entry = str_field(1, behavior_name) + len_field(2, listing)
    return len_field(2, entry) + (len_field(3, side_channel) if side_channel else b"")


def brain_parameters(behavior_name: str, branch_sizes: list[int], continuous_size: int = 0) -> bytes:
    """Encode a ``BrainParametersProto``: ``continuous_size`` continuous actions and one discrete branch per size."""
    action_spec = int_field(1, continuous_size) + int_field(2, len(branch_sizes)) + packed_ints(3, branch_sizes)
    return b"".join((str_field(7, behavior_name), int_field(8, 1), len_field(9, action_spec)))


def capabilities() -> bytes:
    """Encode a ``UnityRLCapabilitiesProto`` with every capability on."""
    return b"".join(int_field(number, 1) for number in range(1, 8))


def init_output(name: str, communication_version: str, package_version: str) -> bytes:
    """Encode a ``UnityRLInitializationOutputProto`` for the first handshake message."""
    return b"".join(
        (
            str_field(1, name),
            str_field(2, communication_version),
            str_field(7, package_version),
            len_field(8, capabilities()),
        )
    )


HEADER_OK = len_field(1, int_field(1, STATUS_OK))


def message(rl_output_bytes: bytes = b"", init_output_bytes: bytes = b"") -> bytes:
    """Encode a ``UnityMessageProto`` (header 200 + unity_output) sent by the player."""
    output = b""
    if rl_output_bytes:
        output += len_field(1, rl_output_bytes)
    if init_output_bytes:
        output += len_field(2, init_output_bytes)
    return HEADER_OK + (len_field(2, output) if output else b"")
