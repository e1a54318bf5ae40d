"""The `/invocations` payloads, parsed and rendered without any HTTP: pure functions over bytes and data.

Accepted request bodies (JSON):
* `{"observations": [[...], ...]}` - a batch;
* `{"inputs": {"observations": [[...]], "prev_action": ..., ...}}` - TF-Serving columnar, as the SageMaker RL
  examples sent it (RLlib's placeholder inputs are ignored);
* `{"instances": [[...], ...]}` or `{"instances": [{"observations": [...]}, ...]}` - TF-Serving rows;
* a bare JSON array - a batch.
Extra outputs are asked for with `"return": ["actions", "probabilities", "logits"]` (or `?return=...`).
A multi-policy model dir needs the policy named, `"policy": "Walker"` (or `?policy=...`): a policy name, or a
behaviour name as the scene reports it (`Walker?team=0`) or without `?team=N`; a single-policy dir ignores it.
The answer is `{"actions": [...]}`, plus `action_probs` and `logits` when asked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlrunner.contract.model_dir import ACTIONS, DIST_INPUTS
from rlrunner.policy import ObservationError, OnnxPolicy, PolicySet, action_probabilities

try:  # orjson parses and writes the float arrays several times faster than json; optional
    import orjson
except ImportError:  # pragma: no cover - exercised when orjson is absent
    orjson = None  # type: ignore[assignment]

MAX_BODY_BYTES = 6 * 1024 * 1024
"""SageMaker's real-time payload limit (6 MB)."""
RETURNABLE = {"actions": ACTIONS, "probabilities": "action_probs", "logits": "logits"}
"""What `return` may name, and the response key each one fills."""
FORMS = "observations, inputs.observations or instances"


class RequestError(ValueError):
    """A request the server refuses: an HTTP status (4xx) and a message that says where, then what."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Invocation:
    """A parsed request: the raw observations (checked later against the model), where they were, what to return,
    which policy (None: not named)."""

    observations: Any
    where: str
    returns: tuple[str, ...]
    policy: str | None = None


def check_content_type(content_type: str | None) -> None:
    """Accept JSON (`application/json`, `*+json`) or no content type at all; else 415."""
    if content_type is None or not content_type.strip():
        return
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise RequestError(415, f"content-type: expected application/json, got {media!r}")


def loads(body: bytes) -> Any:
    """Parse a JSON body (orjson if present); 400 on invalid JSON or an empty body."""
    if not body.strip():
        raise RequestError(400, "body: empty (expected JSON with observations)")
    try:
        return orjson.loads(body) if orjson is not None else json.loads(body, parse_constant=_no_constants)
    except ValueError as error:  # orjson.JSONDecodeError and json.JSONDecodeError are ValueErrors
        hint = "; NaN and Infinity are not JSON numbers" if b"NaN" in body or b"Infinity" in body else ""
        raise RequestError(400, f"body: invalid JSON ({error}){hint}") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")  # strict JSON, as orjson parses it


def dumps(data: Any) -> bytes:
    """Serialize a response (numpy arrays included)."""
    if orjson is not None:
        return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY)
    return json.dumps(data, default=_plain).encode()


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def parse_invocation(payload: Any, query_return: str | None = None, query_policy: str | None = None) -> Invocation:
    """Find the observations in any accepted form, the outputs asked for and the policy named."""
    observations, where = _observations(payload)
    asked: Any = payload.get("return") if isinstance(payload, dict) else None
    if query_return is not None:
        asked = query_return
    return Invocation(observations, where, parse_returns(asked), parse_policy(payload, query_policy))


def parse_policy(payload: Any, query_policy: str | None = None) -> str | None:
    """The policy a request names: `"policy"` in a JSON object body, or `?policy=` (both: they must agree)."""
    named: Any = payload.get("policy") if isinstance(payload, dict) else None
    if named is not None and (not isinstance(named, str) or not named.strip()):
        raise RequestError(400, f"policy: expected a policy or behaviour name, got {named!r}")
    if query_policy is not None:
        if not query_policy.strip():
            raise RequestError(400, "?policy=: expected a policy or behaviour name, got ''")
        if named is not None and named.strip() != query_policy.strip():
            raise RequestError(400, f"policy: the body names {named!r}, ?policy= names {query_policy!r}; name one")
        named = query_policy
    return named.strip() if named is not None else None


def select_policy(policies: PolicySet, name: str | None) -> OnnxPolicy:
    """The policy a request selects: the only one of a single-policy dir; by name (see `PolicySet.find`) otherwise."""
    if not policies.multi:
        return next(iter(policies.policies.values()))
    if name is None:
        count = len(policies.policies)
        raise RequestError(400, f'policy: this model dir holds {count} policies; name one with "policy" ({_listing(policies)})')
    found = policies.find(name)
    if not found:
        raise RequestError(400, f"policy: unknown {name!r} (policies: {_listing(policies)})")
    if len(found) > 1:
        matches = ", ".join(found)
        raise RequestError(400, f"policy: {name!r} matches {matches}; name the policy, or the behaviour with its ?team=N")
    return policies.policies[found[0]]


def _listing(policies: PolicySet) -> str:
    return "; ".join(
        f"{name} <- {', '.join(behaviors)}" if behaviors else name for name, behaviors in policies.behaviors.items()
    )


def _observations(payload: Any) -> tuple[Any, str]:
    if isinstance(payload, list):
        return payload, "body"
    if not isinstance(payload, dict):
        raise RequestError(400, f"body: expected a JSON object with {FORMS}, got {type(payload).__name__}")
    if "observations" in payload:
        return payload["observations"], "observations"
    if "inputs" in payload:
        inputs = payload["inputs"]
        if isinstance(inputs, dict) and "observations" in inputs:
            return inputs["observations"], "inputs.observations"
        if isinstance(inputs, list):
            return inputs, "inputs"
        raise RequestError(400, "inputs: expected an object with observations (other inputs are ignored)")
    if "instances" in payload:
        return _instances(payload["instances"]), "instances"
    keys = ", ".join(sorted(payload)) or "none"
    raise RequestError(400, f"body: expected {FORMS} (got keys: {keys})")


def _instances(instances: Any) -> Any:
    if not isinstance(instances, list):
        raise RequestError(400, f"instances: expected a list, got {type(instances).__name__}")
    rows = []
    for index, instance in enumerate(instances):
        if isinstance(instance, dict):
            if "observations" not in instance:
                raise RequestError(400, f"instances[{index}]: expected observations (other keys are ignored)")
            instance = instance["observations"]
        rows.append(instance)
    return rows


def parse_returns(asked: Any) -> tuple[str, ...]:
    """The outputs asked for: `actions` always, plus `probabilities`/`logits` (a list or a comma-separated string)."""
    if asked is None:
        return ("actions",)
    names = asked.split(",") if isinstance(asked, str) else asked
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise RequestError(400, f"return: expected names among {', '.join(RETURNABLE)}, got {asked!r}")
    cleaned = [name.strip() for name in names if name.strip()]
    unknown = [name for name in cleaned if name not in RETURNABLE]
    if unknown:
        raise RequestError(400, f"return: unknown {', '.join(map(repr, unknown))} (choose from {', '.join(RETURNABLE)})")
    return tuple(dict.fromkeys(["actions", *cleaned]))


def invoke(policy: OnnxPolicy, invocation: Invocation) -> dict[str, Any]:
    """Run the policy on the invocation's observations; the response data (numpy arrays inside)."""
    try:
        batch = policy.check_observations(invocation.observations, invocation.where)
    except ObservationError as error:
        raise RequestError(400, str(error)) from None
    if "probabilities" in invocation.returns and not policy.action_space.is_discrete:
        raise RequestError(400, "return: probabilities are defined for discrete action spaces only (ask for logits)")
    outputs = policy.run(batch) if len(invocation.returns) > 1 else policy.run(batch, (ACTIONS,))
    response: dict[str, Any] = {"actions": outputs[ACTIONS]}
    if "probabilities" in invocation.returns:
        response["action_probs"] = action_probabilities(policy.action_space, outputs[DIST_INPUTS])
    if "logits" in invocation.returns:
        response["logits"] = outputs[DIST_INPUTS]
    return response


def handle(
    policies: OnnxPolicy | PolicySet,
    body: bytes,
    content_type: str | None,
    query_return: str | None = None,
    query_policy: str | None = None,
) -> bytes:
    """One `/invocations` request, from body bytes to response bytes; RequestError for a bad request."""
    check_content_type(content_type)
    invocation = parse_invocation(loads(body), query_return, query_policy)
    policy = policies if isinstance(policies, OnnxPolicy) else select_policy(policies, invocation.policy)
    return dumps(invoke(policy, invocation))


def error_body(message: str) -> bytes:
    """The JSON body of an error response."""
    return dumps({"error": message})


def describe(policies: OnnxPolicy | PolicySet) -> dict[str, Any]:
    """What `GET /` answers: the model's spaces and the accepted forms (each policy's, with its behaviours, for several)."""
    if isinstance(policies, OnnxPolicy):
        policies = PolicySet.single(policies)
    if not policies.multi:
        return _describe_policy(next(iter(policies.policies.values()))) | {"accepts": FORMS, "return": list(RETURNABLE)}
    described = {
        name: {"behaviors": list(policies.behaviors[name])} | _describe_policy(policy)
        for name, policy in policies.policies.items()
    }
    return {
        "policies": described,
        "policy": 'required: "policy" (or ?policy=) names a policy, or a behaviour with or without ?team=N',
        "accepts": FORMS,
        "return": list(RETURNABLE),
    }


def _describe_policy(policy: OnnxPolicy) -> dict[str, Any]:
    space = policy.action_space
    action: dict[str, Any] = {"type": space.kind}
    if space.kind == "discrete":
        action["n"] = space.n
    elif space.kind == "multi_discrete":
        action["nvec"] = list(space.nvec)
    else:
        action |= {"shape": list(space.shape), "low": _finite(space.low), "high": _finite(space.high)}
    return {
        "observation_shape": list(policy.metadata.observation_shape),
        "action_space": action,
        "algorithm": policy.metadata.algorithm,
        "run_id": policy.metadata.run_id,
    }


def _finite(values: Iterable[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]
