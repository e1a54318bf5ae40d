"""The run identity: one hash of what determines a training result, defined here and nowhere else.

The identity holds the environment, the algorithm and its model, the training settings (stop criteria,
seed, env runners, the weights a run starts from) and the compute that changes results (the instance
count). It leaves out what does not change the result: the name, description, deploy block, tags,
instance type, roles, paths, ports, timeouts, checkpoint bookkeeping and the sweep block. `validate`,
`plan`, `run` (both backends), the run directory's name, `run.json`, the job's tags, the checkpoints and
the resume checks all use `run_id` (the first 10 hex digits of `identity_hash`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from rlrunner.schema import ExperimentSpec

RUN_ID_LENGTH = 10
NOT_IDENTITY = {
    "environment": ("base_port", "timeout_s"),
    "training": ("checkpoint_frequency", "keep_checkpoints"),
}
"""Fields of these blocks that do not change a training result (connection and bookkeeping settings)."""
LONGER_TRAINING = (
    "training.stop.timesteps",
    "training.stop.iterations",
    "training.stop.time_s",
    "training.stop.episode_return_mean",
    "training.stop.evaluation_return_mean",
)
"""Stop criteria that `--resume` may raise: the run trains longer from its newest checkpoint."""


def run_identity(spec: ExperimentSpec) -> dict[str, Any]:
    """What determines the training result, as JSON-able data."""
    data = spec.to_data()
    identity: dict[str, Any] = {
        "source_dir": data.get("source_dir"),
        "algorithm": data["algorithm"],
        "compute": {"instance_count": spec.compute.instance_count},
    }
    if data.get("behaviors"):  # per-behaviour policies and overrides (absent: the run ids of other specs stay)
        identity["behaviors"] = data["behaviors"]
    for block, left_out in NOT_IDENTITY.items():
        identity[block] = {key: value for key, value in data[block].items() if key not in left_out}
    return identity


def identity_hash(spec: ExperimentSpec) -> str:
    """SHA-256 of the canonical run identity."""
    return hash_identity(run_identity(spec))


def hash_identity(identity: Mapping[str, Any]) -> str:
    """SHA-256 of an identity (as `run_identity` returns it, or as a run record keeps it)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def run_id(spec: ExperimentSpec) -> str:
    """The run id: the first 10 hex digits of the identity hash."""
    return identity_hash(spec)[:RUN_ID_LENGTH]


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted path: value}."""
    if isinstance(data, Mapping) and data:
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: data}


def identity_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Dotted paths whose values differ between two identities: {path: (old, new)} (None: not set)."""
    before, after = flatten(old), flatten(new)
    return {path: (before.get(path), after.get(path)) for path in sorted(before.keys() | after.keys()) if before.get(path) != after.get(path)}


def trains_longer(changes: Mapping[str, tuple[Any, Any]]) -> bool:
    """Whether the only changes raise stop criteria (what `--resume` accepts)."""
    return all(
        path in LONGER_TRAINING and isinstance(old, int | float) and isinstance(new, int | float) and new > old
        for path, (old, new) in changes.items()
    )


def describe_changes(changes: Mapping[str, tuple[Any, Any]]) -> str:
    """`training.stop.timesteps 1000 -> 2000, algorithm.hyperparameters.lr 0.001 -> 0.002` (`-` for not set)."""
    def show(value: Any) -> str:
        return "-" if value is None else json.dumps(value)

    return ", ".join(f"{path} {show(old)} -> {show(new)}" for path, (old, new) in changes.items())
