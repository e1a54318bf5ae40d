"""The Ray experiment in environment variables: compressed, base64url, numbered chunks, checksummed.

SageMaker allows at most 100 environment variables per job, each value at most 512 characters.
`RLRUNNER_EXPERIMENT` holds the header `v<version>:<chunks>:<sha256 of the JSON>`; each chunk
`RLRUNNER_EXPERIMENT_<i>` holds `<i>:<crc32>:<data>`, so a missing, reordered or altered chunk is
named exactly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Mapping
from typing import Any

from rlrunner.contract.errors import InvalidSpecError

FORMAT_VERSION = 1
HEADER_KEY = "RLRUNNER_EXPERIMENT"
MAX_ENV_VARS = 100
MAX_VALUE_CHARS = 512
MAX_JSON_BYTES = 4 * 1024 * 1024
"""The decoded experiment is at most 4 MiB of JSON (a planned one is a few KB): decompression stops there."""
_CHUNK_PREFIX_CHARS = len("999:ffffffff:")


class CodecError(InvalidSpecError):
    """The encoded experiment cannot be written or read back."""


def chunk_key(index: int) -> str:
    """The variable holding chunk `index`."""
    return f"{HEADER_KEY}_{index:03d}"


def encode_experiment_env(
    experiment: Mapping[str, Any], *, max_vars: int = MAX_ENV_VARS - 1, max_value: int = MAX_VALUE_CHARS
) -> dict[str, str]:
    """Encode a JSON-able experiment as environment variables (header plus chunks)."""
    text = json.dumps(experiment, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256(text.encode()).hexdigest()
    payload = base64.urlsafe_b64encode(zlib.compress(text.encode(), 9)).decode().rstrip("=")
    size = max_value - _CHUNK_PREFIX_CHARS
    pieces = [payload[start : start + size] for start in range(0, len(payload), size)] or [""]
    if len(pieces) + 1 > max_vars:
        raise CodecError(
            f"the experiment is {len(text):,} bytes of JSON ({len(payload):,} characters compressed) and needs "
            f"{len(pieces) + 1} environment variables of at most {max_value} characters, but only {max_vars} are free "
            f"(SageMaker allows {MAX_ENV_VARS} per job, including compute.environment)"
        )
    env = {HEADER_KEY: f"v{FORMAT_VERSION}:{len(pieces)}:{digest}"}
    for index, piece in enumerate(pieces):
        env[chunk_key(index)] = f"{index}:{zlib.crc32(piece.encode()):08x}:{piece}"
    return env


def decode_experiment_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Decode what `encode_experiment_env` wrote; every inconsistency is a CodecError naming the variable."""
    header = environ.get(HEADER_KEY)
    if header is None:
        raise CodecError(f"{HEADER_KEY} is not set: this process was not started from an rlrunner plan")
    try:
        version, count_text, digest = header.split(":")
        count = int(count_text)
    except ValueError:
        raise CodecError(f"{HEADER_KEY}: malformed header {header[:80]!r}") from None
    if not 0 <= count < MAX_ENV_VARS:
        raise CodecError(f"{HEADER_KEY}: announces {count} chunks (at most {MAX_ENV_VARS - 1})")
    if version != f"v{FORMAT_VERSION}":
        raise CodecError(
            f"{HEADER_KEY}: format {version} is not supported by this launcher (expects v{FORMAT_VERSION})"
        )
    pieces = []
    for index in range(count):
        key = chunk_key(index)
        if key not in environ:
            raise CodecError(f"{key} is missing ({count} chunks expected)")
        try:
            found_text, crc, piece = environ[key].split(":", 2)
            found = int(found_text)
        except ValueError:
            raise CodecError(f"{key}: malformed chunk") from None
        if found != index:
            raise CodecError(f"{key} holds chunk {found}: chunks were reordered")
        if f"{zlib.crc32(piece.encode()):08x}" != crc:
            raise CodecError(f"{key}: checksum mismatch, the chunk was altered")
        pieces.append(piece)
    extra = chunk_key(count)
    if extra in environ:
        raise CodecError(f"{extra} is set but the header announces {count} chunks")
    payload = "".join(pieces)
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)), MAX_JSON_BYTES + 1)
        if len(raw) > MAX_JSON_BYTES or inflater.unconsumed_tail:
            raise CodecError(f"{HEADER_KEY}: the payload unpacks to more than {MAX_JSON_BYTES:,} bytes (the limit)")
        text = raw.decode()
    except (ValueError, zlib.error) as error:
        raise CodecError(f"{HEADER_KEY}: payload does not decompress ({error})") from None
    if hashlib.sha256(text.encode()).hexdigest() != digest:
        raise CodecError(f"{HEADER_KEY}: checksum mismatch, the experiment was altered")
    try:
        result = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise CodecError(f"{HEADER_KEY}: the payload is not valid JSON ({type(error).__name__})") from None
    if not isinstance(result, dict):
        raise CodecError(f"{HEADER_KEY}: the payload is not a JSON object (got {type(result).__name__})")
    return result
