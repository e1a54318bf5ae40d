"""The env-var codec: exact round trip, SageMaker's limits, and every kind of damage detected."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlrunner.contract.experiment_env import (
    HEADER_KEY,
    MAX_VALUE_CHARS,
    CodecError,
    chunk_key,
    decode_experiment_env,
    encode_experiment_env,
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=200),
    lambda children: st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=20), children, max_size=8),
    max_leaves=400,
)
experiments = st.dictionaries(st.text(max_size=30), json_values, max_size=20).filter(
    lambda e: len(json.dumps(e)) <= 40_000
)


# Incompressible payloads, so that experiments near 40 KB span many chunks.
def noise(size: int) -> str:
    """Incompressible hex text of `size` characters."""
    return b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(size // 64 + 1)).hex()[:size]


big_experiments = st.binary(min_size=1000, max_size=25_000).map(lambda b: {"blob": b.hex()[:39_000]})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(experiments)
def test_codec_round_trips_any_json_experiment(experiment: dict[str, Any]) -> None:
    env = encode_experiment_env(experiment)
    assert decode_experiment_env(env) == experiment
    assert all(len(value) <= MAX_VALUE_CHARS for value in env.values())


@settings(max_examples=30, deadline=None)
@given(big_experiments)
def test_codec_round_trips_large_experiments_within_limits(experiment: dict[str, Any]) -> None:
    env = encode_experiment_env(experiment)
    assert decode_experiment_env(env) == experiment
    assert len(env) <= 100
    assert all(len(value) <= MAX_VALUE_CHARS for value in env.values())


@settings(max_examples=60, deadline=None)
@given(big_experiments, st.data())
def test_codec_detects_any_altered_chunk(experiment: dict[str, Any], data: st.DataObject) -> None:
    env = encode_experiment_env(experiment)
    key = data.draw(st.sampled_from(sorted(env)))
    value = env[key]
    position = data.draw(st.integers(0, len(value) - 1))
    replacement = data.draw(st.sampled_from("AZaz09-_:x").filter(lambda c: c != value[position]))
    env[key] = value[:position] + replacement + value[position + 1 :]
    with pytest.raises(CodecError):
        decode_experiment_env(env)


def test_codec_missing_chunk_is_named() -> None:
    env = encode_experiment_env({"blob": noise(3000)})
    del env[chunk_key(1)]
    with pytest.raises(CodecError, match=r"^RLRUNNER_EXPERIMENT_001 is missing \(\d+ chunks expected\)$"):
        decode_experiment_env(env)


def test_codec_reordered_chunks_are_named() -> None:
    env = encode_experiment_env({"blob": noise(3000)})
    env[chunk_key(0)], env[chunk_key(1)] = env[chunk_key(1)], env[chunk_key(0)]
    with pytest.raises(CodecError, match=r"^RLRUNNER_EXPERIMENT_000 holds chunk 1: chunks were reordered$"):
        decode_experiment_env(env)


def test_codec_extra_chunk_is_named() -> None:
    env = encode_experiment_env({"a": 1})
    env[chunk_key(1)] = env[chunk_key(0)]
    with pytest.raises(CodecError, match=r"^RLRUNNER_EXPERIMENT_001 is set but the header announces 1 chunks$"):
        decode_experiment_env(env)


def test_codec_without_header_says_how_it_was_started() -> None:
    with pytest.raises(
        CodecError, match=r"^RLRUNNER_EXPERIMENT is not set: this process was not started from an rlrunner plan$"
    ):
        decode_experiment_env({})


def test_codec_rejects_unknown_format_version() -> None:
    env = encode_experiment_env({"a": 1})
    env[HEADER_KEY] = "v9" + env[HEADER_KEY][2:]
    with pytest.raises(
        CodecError, match=r"^RLRUNNER_EXPERIMENT: format v9 is not supported by this launcher \(expects v1\)$"
    ):
        decode_experiment_env(env)


def test_codec_too_large_names_the_sizes() -> None:
    experiment = {"blob": noise(51_200)}
    with pytest.raises(CodecError) as caught:
        encode_experiment_env(experiment, max_vars=10)
    assert str(caught.value) == (
        "the experiment is 51,211 bytes of JSON (39,626 characters compressed) and needs 81 environment variables "
        "of at most 512 characters, but only 10 are free (SageMaker allows 100 per job, including compute.environment)"
    )


# --- checksummed but hostile payloads: bounded and typed -------------------------------------------


def forge(raw: bytes, *, level: int = 9) -> dict[str, str]:
    """Variables that pass every chunk and header checksum but carry `raw` (any bytes) as the experiment."""
    import base64
    import zlib

    payload = base64.urlsafe_b64encode(zlib.compress(raw, level)).decode().rstrip("=")
    size = MAX_VALUE_CHARS - len("999:ffffffff:")
    pieces = [payload[start : start + size] for start in range(0, len(payload), size)]
    env = {HEADER_KEY: f"v1:{len(pieces)}:{hashlib.sha256(raw).hexdigest()}"}
    for index, piece in enumerate(pieces):
        env[chunk_key(index)] = f"{index}:{zlib.crc32(piece.encode()):08x}:{piece}"
    return env


HOSTILE_PAYLOADS = {
    "not-json": (b"{not json", "RLRUNNER_EXPERIMENT: the payload is not valid JSON (JSONDecodeError)"),
    "json-list": (b"[1, 2]", "RLRUNNER_EXPERIMENT: the payload is not a JSON object (got list)"),
    "json-string": (b'"x"', "RLRUNNER_EXPERIMENT: the payload is not a JSON object (got str)"),
    "deep-json": (b"[" * 200_000 + b"]" * 200_000, "RLRUNNER_EXPERIMENT: the payload is not valid JSON (RecursionError)"),
    "not-utf8": (b"\xff\xfe{}", "RLRUNNER_EXPERIMENT: payload does not decompress ('utf-8' codec can't decode byte 0xff in position 0: invalid start byte)"),
    "decompression-bomb": (b"{" + b" " * 30_000_000 + b"}", "RLRUNNER_EXPERIMENT: the payload unpacks to more than 4,194,304 bytes (the limit)"),
}


@pytest.mark.parametrize("case", list(HOSTILE_PAYLOADS))
def test_codec_checksummed_hostile_payload_is_one_codec_error(case: str) -> None:
    raw, expected = HOSTILE_PAYLOADS[case]
    env = forge(raw)
    assert len(env) <= 100 and all(len(value) <= MAX_VALUE_CHARS for value in env.values())
    with pytest.raises(CodecError) as error:
        decode_experiment_env(env)
    assert str(error.value) == expected


def test_codec_header_announcing_too_many_chunks_is_refused() -> None:
    with pytest.raises(CodecError) as error:
        decode_experiment_env({HEADER_KEY: "v1:1000000000:" + "0" * 64})
    assert str(error.value) == "RLRUNNER_EXPERIMENT: announces 1000000000 chunks (at most 99)"
