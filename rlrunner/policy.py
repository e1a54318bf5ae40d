"""The exported policy (`policy.onnx` + `policy.json`), the one code path behind evaluate, serving and
the launcher's final evaluation.

Imports numpy and onnxruntime only, so that the inference server starts without ray or torch.
A model dir holds `policy.onnx` (input `obs` float32 `[batch, *obs_shape]`; outputs `actions`, the
greedy actions, and `action_dist_inputs`: logits, or mean and log-std for a box), `policy.json`
(format, spaces, names) and `experiment.json` (the decoded experiment). A multi-policy model dir holds
one such set per policy under `policies/<policy>/` and `policies.json`; `PolicySet` loads either kind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from rlrunner.contract.errors import UsageError
from rlrunner.contract.model_dir import (
    ACTIONS,
    DIST_INPUTS,
    EXPERIMENT_FILE,
    FORMAT,
    INPUT_NAME,
    METADATA_FILE,
    ONNX_FILE,
    POLICIES_FILE,
)
from rlrunner.contract.unity_model import policy_name

ActionKind = Literal["discrete", "multi_discrete", "box"]


class PolicyError(UsageError, ValueError):
    """A model dir that does not hold a usable policy (missing file, bad metadata, mismatched model)."""


class ObservationError(UsageError, ValueError):
    """Observations that the policy cannot take (shape, type, non-finite values)."""


@dataclass(frozen=True)
class ActionSpace:
    """The policy's action space as `policy.json` describes it."""

    kind: ActionKind
    n: int = 0
    nvec: tuple[int, ...] = ()
    shape: tuple[int, ...] = ()
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    @classmethod
    def from_data(cls, data: Any, where: str) -> ActionSpace:
        """Parse `policy.json`'s `action_space`; `where` prefixes the error messages."""
        if not isinstance(data, dict):
            raise PolicyError(f"{where}: expected an object, got {data!r}")
        kind = data.get("type")
        try:
            if kind == "discrete":
                return cls("discrete", n=_positive(data["n"], f"{where}.n"))
            if kind == "multi_discrete":
                nvec = tuple(_positive(v, f"{where}.nvec") for v in data["nvec"])
                if not nvec:
                    raise PolicyError(f"{where}.nvec: empty")
                return cls("multi_discrete", nvec=nvec)
            if kind == "box":
                shape = tuple(_positive(v, f"{where}.shape") for v in data["shape"])
                size = math.prod(shape)
                low, high = _bounds(data.get("low"), size, f"{where}.low"), _bounds(data.get("high"), size, f"{where}.high")
                return cls("box", shape=shape, low=low, high=high)
        except KeyError as error:
            raise PolicyError(f"{where}: missing key {error.args[0]!r} for type {kind!r}") from None
        raise PolicyError(f"{where}.type: expected discrete, multi_discrete or box, got {kind!r}")

    @property
    def is_discrete(self) -> bool:
        """Whether actions are integers (discrete or multi-discrete)."""
        return self.kind != "box"

    @property
    def dist_width(self) -> int:
        """Width of `action_dist_inputs`: logits of every branch, or mean and log-std."""
        if self.kind == "discrete":
            return self.n
        if self.kind == "multi_discrete":
            return sum(self.nvec)
        return 2 * math.prod(self.shape)

    @property
    def branches(self) -> tuple[int, ...]:
        """Sizes of the discrete branches (one for discrete)."""
        return (self.n,) if self.kind == "discrete" else self.nvec


def _positive(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(f"{where}: expected a positive integer, got {value!r}")
    return value


def _bounds(values: Any, size: int, where: str) -> tuple[float, ...]:
    if values is None:
        return (-math.inf,) * size
    if isinstance(values, int | float) and not isinstance(values, bool):
        return (float(values),) * size
    if not isinstance(values, list) or len(values) != size:
        raise PolicyError(f"{where}: expected {size} numbers, got {values!r}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class PolicyMetadata:
    """`policy.json`: the spaces and identity of an exported policy."""

    observation_shape: tuple[int, ...]
    action_space: ActionSpace
    algorithm: str = ""
    run_id: str = ""

    @classmethod
    def from_data(cls, data: Any, where: str) -> PolicyMetadata:
        """Parse `policy.json` data; `where` (the file) prefixes the error messages."""
        if not isinstance(data, dict):
            raise PolicyError(f"{where}: expected a JSON object")
        if data.get("format") != FORMAT:
            raise PolicyError(f"{where}: format: expected {FORMAT}, got {data.get('format')!r}")
        observation = data.get("observation_space")
        if not isinstance(observation, dict) or not isinstance(observation.get("shape"), list):
            raise PolicyError(f"{where}: observation_space: expected an object with a shape list")
        shape = tuple(_positive(v, f"{where}: observation_space.shape") for v in observation["shape"])
        if observation.get("type", "box") != "box":
            raise PolicyError(f"{where}: observation_space.type: only box observations can be served, got {observation['type']!r}")
        for key, name in (("inputs", INPUT_NAME), ("outputs", ACTIONS), ("outputs", DIST_INPUTS)):
            if name not in data.get(key, [name]):
                raise PolicyError(f"{where}: {key}: {name!r} missing (got {data[key]!r})")
        action_space = ActionSpace.from_data(data.get("action_space"), f"{where}: action_space")
        return cls(shape, action_space, str(data.get("algorithm", "")), str(data.get("run_id", "")))


class OnnxPolicy:
    """An exported policy run by onnxruntime: checked inputs, greedy and sampled actions."""

    def __init__(self, session: Any, metadata: PolicyMetadata, source: str = "policy") -> None:
        self._session = session
        self.metadata = metadata
        self.source = source
        self._check_session()

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, threads: int | None = None) -> OnnxPolicy:
        """Load `policy.onnx` and `policy.json` from a model dir (`threads`: onnxruntime intra-op threads)."""
        model_dir = check_model_dir(model_dir)
        index = read_policy_index(model_dir)
        if index is not None:
            names = ", ".join(index)
            raise PolicyError(f"{model_dir}: holds several policies ({names}); load them with PolicySet.from_dir")
        metadata_path, onnx_path = model_dir / METADATA_FILE, model_dir / ONNX_FILE
        try:
            data = json.loads(metadata_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise PolicyError(f"{metadata_path}: not readable JSON: {error}") from None
        metadata = PolicyMetadata.from_data(data, str(metadata_path))
        return cls(_load_session(onnx_path, threads), metadata, str(onnx_path))

    @property
    def action_space(self) -> ActionSpace:
        """The action space from `policy.json`."""
        return self.metadata.action_space

    def check_observations(self, obs: Any, where: str = "observations") -> np.ndarray:
        """`obs` as a C-contiguous float32 batch `[batch, *obs_shape]`, or ObservationError."""
        return check_observations(obs, self.metadata.observation_shape, where)

    def run(self, batch: np.ndarray, names: tuple[str, ...] = (ACTIONS, DIST_INPUTS)) -> dict[str, np.ndarray]:
        """The named model outputs for a batch that `check_observations` already returned (no second check)."""
        return dict(zip(names, self._session.run(list(names), {INPUT_NAME: batch}), strict=True))

    def outputs(self, obs: Any) -> dict[str, np.ndarray]:
        """Both model outputs, `actions` and `action_dist_inputs`, for a batch."""
        return self.run(self.check_observations(obs))

    def act(self, obs: Any) -> np.ndarray:
        """Greedy actions for a batch: the model's own `actions` output."""
        return self.run(self.check_observations(obs), (ACTIONS,))[ACTIONS]

    def sample(self, obs: Any, rng: np.random.Generator) -> np.ndarray:
        """Stochastic actions for a batch, drawn from the `action_dist_inputs` distribution."""
        return sample_actions(self.action_space, self.outputs(obs)[DIST_INPUTS], rng)

    def probabilities(self, obs: Any) -> np.ndarray:
        """Action probabilities `[batch, sum(branches)]` (softmax per branch); discrete spaces only."""
        return action_probabilities(self.action_space, self.outputs(obs)[DIST_INPUTS])

    def _check_session(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = {o.name for o in self._session.get_outputs()}
        if set(inputs) != {INPUT_NAME}:
            raise PolicyError(f"{self.source}: expected one input {INPUT_NAME!r}, got {sorted(inputs)}")
        missing = {ACTIONS, DIST_INPUTS} - outputs
        if missing:
            raise PolicyError(f"{self.source}: outputs {sorted(missing)} missing (got {sorted(outputs)})")
        declared = tuple(inputs[INPUT_NAME].shape[1:])
        expected = self.metadata.observation_shape
        if len(declared) != len(expected) or any(isinstance(d, int) and d != e for d, e in zip(declared, expected, strict=True)):
            raise PolicyError(f"{self.source}: input {INPUT_NAME} has shape [batch, {_dims(declared)}], policy.json says [batch, {_dims(expected)}]")


def check_model_dir(model_dir: str | Path) -> Path:
    """`model_dir` as a Path, or PolicyError naming the policy files it lacks (each policy's, in a multi-policy dir)."""
    model_dir = Path(model_dir)
    index = read_policy_index(model_dir)
    if index is not None:
        for entry in index.values():
            files = (ONNX_FILE, METADATA_FILE)
            missing = [f"{entry.folder}/{name}" for name in files if not (entry.path / name).is_file()]
            if missing:
                raise PolicyError(f"{model_dir}: policy {entry.name!r}: {', '.join(missing)} missing")
        return model_dir
    missing = [name for name in (ONNX_FILE, METADATA_FILE) if not (model_dir / name).is_file()]
    if missing:
        raise PolicyError(f"{model_dir}: not a model dir ({', '.join(missing)} missing)")
    return model_dir


@dataclass(frozen=True)
class PolicyEntry:
    """One policy of a multi-policy model dir, as `policies.json` lists it."""

    name: str
    folder: str
    """Its folder, relative to the model dir (`policies/<policy>`)."""
    path: Path
    behaviors: tuple[str, ...]
    """The behaviours it serves, named as the scene reports them (`Walker?team=0`)."""


def read_policy_index(model_dir: str | Path) -> dict[str, PolicyEntry] | None:
    """A multi-policy model dir's `policies.json`, checked (policy -> folder, behaviours); None for a single-policy dir."""
    model_dir = Path(model_dir)
    path = model_dir / POLICIES_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PolicyError(f"{path}: not readable JSON: {error}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: expected a JSON object")
    if data.get("format") != FORMAT:
        raise PolicyError(f"{path}: format: expected {FORMAT}, got {data.get('format')!r}")
    policies = data.get("policies")
    if not isinstance(policies, dict) or not policies:
        raise PolicyError(f"{path}: policies: expected an object with at least one policy, got {policies!r}")
    return {name: _policy_entry(model_dir, name, entry, f"{path}: policies.{name}") for name, entry in policies.items()}


def _policy_entry(model_dir: Path, name: str, entry: Any, where: str) -> PolicyEntry:
    if not name:
        raise PolicyError(f"{where}: a policy needs a name")
    if not isinstance(entry, dict):
        raise PolicyError(f"{where}: expected an object with dir and behaviors, got {entry!r}")
    folder = entry.get("dir")
    relative = PurePosixPath(folder) if isinstance(folder, str) else None
    if relative is None or not folder or relative.is_absolute() or ".." in relative.parts:
        raise PolicyError(f"{where}.dir: expected a folder inside the model dir, got {folder!r}")
    behaviors = entry.get("behaviors", [])
    if not isinstance(behaviors, list) or not all(isinstance(b, str) and b for b in behaviors):
        raise PolicyError(f"{where}.behaviors: expected a list of behaviour names, got {behaviors!r}")
    return PolicyEntry(name, relative.as_posix(), model_dir / relative, tuple(behaviors))


class PolicySet:
    """The policies of a model dir: the one of a single-policy dir, or every policy `policies.json` lists.

    `find` maps what a client knows (a policy name, or a behaviour name with or without `?team=N`) to policies.
    """

    def __init__(
        self, policies: Mapping[str, OnnxPolicy], behaviors: Mapping[str, tuple[str, ...]], *, multi: bool, source: str
    ) -> None:
        if not policies:
            raise PolicyError(f"{source}: no policy")
        self.policies = dict(policies)
        self.behaviors = {name: tuple(behaviors.get(name, ())) for name in self.policies}
        self.multi = multi
        self.source = source

    @classmethod
    def single(cls, policy: OnnxPolicy, name: str = "policy") -> PolicySet:
        """The set of a single-policy model dir (`name` only labels it: requests need not name it)."""
        return cls({name: policy}, {}, multi=False, source=policy.source)

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, threads: int | None = None) -> PolicySet:
        """Load every policy of a model dir; a policy that cannot be loaded is a PolicyError naming it."""
        model_dir = check_model_dir(model_dir)
        index = read_policy_index(model_dir)
        if index is None:
            return cls.single(OnnxPolicy.from_dir(model_dir, threads=threads))
        policies = {}
        for name, entry in index.items():
            try:
                policies[name] = OnnxPolicy.from_dir(entry.path, threads=threads)
            except PolicyError as error:
                raise PolicyError(f"policy {name!r}: {error}") from None
        behaviors = {name: entry.behaviors for name, entry in index.items()}
        return cls(policies, behaviors, multi=True, source=str(model_dir))

    def policy_of(self) -> dict[str, str]:
        """Behaviour name (as the scene reports it) -> the policy serving it."""
        return {behavior: name for name, behaviors in self.behaviors.items() for behavior in behaviors}

    def find(self, name: str) -> list[str]:
        """The policies `name` selects: the policy of that name; else the policy serving that behaviour; else the
        policies named like, or serving a behaviour named like, `name` without `?team=N`. Sorted; empty if none."""
        if name in self.policies:
            return [name]
        served_by = self.policy_of()
        if name in served_by:
            return [served_by[name]]
        base = policy_name(name)
        return sorted(
            policy
            for policy, behaviors in self.behaviors.items()
            if policy == base or any(policy_name(b) == base for b in behaviors)
        )

    def summary(self) -> str:
        """Every policy, with its behaviours and spaces, on one line: what a server serves."""
        return "; ".join(
            f"{name}{' (' + ', '.join(self.behaviors[name]) + ')' if self.behaviors[name] else ''}: "
            f"observations [{_dims(policy.metadata.observation_shape)}] -> {describe_action_space(policy.action_space)}"
            for name, policy in self.policies.items()
        )


def describe_action_space(space: ActionSpace) -> str:
    """An action space in a few words: `discrete 3`, `multi_discrete [3, 2]`, `box [2]`."""
    if space.kind == "discrete":
        return f"discrete {space.n}"
    if space.kind == "multi_discrete":
        return f"multi_discrete [{_dims(space.nvec)}]"
    return f"box [{_dims(space.shape)}]"


def _load_session(path: Path, threads: int | None) -> Any:
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - a dependency of the train extra
        raise ImportError("rlrunner: running a policy needs onnxruntime (pip install 'onnxruntime>=1.20,<=1.22.1')") from error
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... exceptions
        raise PolicyError(f"{path}: onnxruntime cannot load it: {error}") from None


def _dims(shape: tuple[Any, ...]) -> str:
    return ", ".join(str(d) for d in shape)


def check_observations(obs: Any, shape: tuple[int, ...], where: str = "observations") -> np.ndarray:
    """`obs` as a C-contiguous float32 batch `[batch, *shape]`; ObservationError says what is wrong."""
    try:
        array = np.asarray(obs)
    except ValueError:  # ragged nesting
        raise ObservationError(f"{where}: not a rectangular array (rows of different lengths)") from None
    if array.ndim >= 1 and array.shape[0] == 0:
        raise ObservationError(f"{where}: empty batch")
    if array.dtype.kind not in "iuf":
        raise ObservationError(f"{where}: expected numbers, got {_kind_name(array)}")
    if array.ndim != len(shape) + 1 or tuple(array.shape[1:]) != shape:
        hint = " (wrap a single observation in a list)" if tuple(array.shape) == shape else ""
        raise ObservationError(f"{where}: expected shape [batch, {_dims(shape)}], got [{_dims(array.shape)}]{hint}")
    with np.errstate(over="ignore"):  # values beyond float32's range become inf and are reported below
        batch = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(batch)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ObservationError(f"{where}[{_dims(index)}]: not finite as float32 (got {float(array[index])})")
    return batch


def _kind_name(array: np.ndarray) -> str:
    return {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or missing values", "c": "complex numbers"}.get(
        array.dtype.kind, f"dtype {array.dtype}"
    )


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed stably."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)  # type: ignore[no-any-return]


def _branch_logits(space: ActionSpace, dist_inputs: np.ndarray) -> list[np.ndarray]:
    bounds = np.cumsum(space.branches)[:-1]
    return np.split(dist_inputs, bounds, axis=-1)


def action_probabilities(space: ActionSpace, dist_inputs: np.ndarray) -> np.ndarray:
    """Probabilities `[batch, sum(branches)]` from logits, softmax per branch; discrete spaces only."""
    if not space.is_discrete:
        raise ObservationError("return: probabilities are defined for discrete action spaces only (ask for logits)")
    return np.concatenate([softmax(part) for part in _branch_logits(space, dist_inputs)], axis=-1)


def sample_actions(space: ActionSpace, dist_inputs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw actions from `action_dist_inputs`: categorical per branch, or a clipped diagonal Gaussian."""
    if space.kind == "box":
        size = math.prod(space.shape)
        mean, log_std = dist_inputs[:, :size], dist_inputs[:, size:]
        draw = mean + np.exp(log_std) * rng.standard_normal(mean.shape)
        clipped: np.ndarray = np.clip(draw, np.asarray(space.low), np.asarray(space.high)).astype(np.float32)
        return clipped.reshape((-1, *space.shape))
    columns = [_categorical(softmax(part.astype(np.float64)), rng) for part in _branch_logits(space, dist_inputs)]
    return columns[0] if space.kind == "discrete" else np.stack(columns, axis=-1)


def _categorical(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    draws = rng.random((probs.shape[0], 1))
    cumulative = probs.cumsum(axis=-1)
    # Rounding can leave the last cumulative value just below 1; clamp to the last action.
    actions: np.ndarray = np.minimum((draws > cumulative).sum(axis=-1), probs.shape[-1] - 1).astype(np.int64)
    return actions


def read_experiment(model_dir: str | Path) -> dict[str, Any]:
    """The decoded experiment (`experiment.json`) that a model dir was trained from."""
    path = Path(model_dir) / EXPERIMENT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PolicyError(f"{Path(model_dir)}: {EXPERIMENT_FILE} missing (it says which environment to play)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PolicyError(f"{path}: not readable JSON: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("environment"), dict):
        raise PolicyError(f"{path}: environment: expected an object")
    return data
