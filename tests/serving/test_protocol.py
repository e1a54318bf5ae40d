"""Request parsing and response rendering of /invocations, without HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from policy_models import write_model_dir

from rlrunner.policy import OnnxPolicy
from rlrunner.serving import protocol
from rlrunner.serving.protocol import RequestError, handle, parse_invocation, parse_returns

ROW = [0.0] * 20


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"observations": [ROW]}, "observations"),
        ({"inputs": {"observations": [ROW], "prev_action": [0, 0], "is_training": False, "prev_reward": -1, "seq_lens": -1}}, "inputs.observations"),
        ({"inputs": [ROW]}, "inputs"),
        ({"instances": [ROW]}, "instances"),
        ({"instances": [{"observations": ROW, "prev_action": 0}]}, "instances"),
        ([ROW], "body"),
    ],
    ids=["observations", "tf-serving-inputs", "inputs-list", "instances-rows", "instances-objects", "bare-list"],
)
def test_parse_invocation_finds_observations_in_every_form(payload: object, where: str) -> None:
    invocation = parse_invocation(payload)
    assert (invocation.observations, invocation.where, invocation.returns) == ([ROW], where, ("actions",))


@pytest.mark.parametrize(
    ("asked", "expected"),
    [(None, ("actions",)), ("logits", ("actions", "logits")), (["probabilities", "actions", "logits"], ("actions", "probabilities", "logits")),
     (" probabilities , ", ("actions", "probabilities"))],
)
def test_parse_returns_always_includes_actions(asked: object, expected: tuple[str, ...]) -> None:
    assert parse_returns(asked) == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"instances": {"a": 1}}, "instances: expected a list, got dict"),
        ({"instances": [{"obs": ROW}]}, "instances[0]: expected observations (other keys are ignored)"),
        ({"inputs": {"prev_action": 0}}, "inputs: expected an object with observations (other inputs are ignored)"),
        ({"observations": [ROW], "return": 3}, "return: expected names among actions, probabilities, logits, got 3"),
        ({}, "body: expected observations, inputs.observations or instances (got keys: none)"),
    ],
)
def test_parse_invocation_refuses_with_a_located_message(payload: object, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_invocation(payload)
    assert (caught.value.status, caught.value.message) == (400, message)


@pytest.mark.parametrize("content_type", [None, "", "application/json", "application/json; charset=utf-8", "application/vnd.api+json", "Application/JSON"])
def test_check_content_type_accepts_json_or_none(content_type: str | None) -> None:
    protocol.check_content_type(content_type)


def test_handle_box_policy_returns_clipped_actions_and_refuses_probabilities(tmp_path: Path) -> None:
    space = {"type": "box", "shape": [2], "low": [-0.1, -0.1], "high": [0.1, 0.1]}
    policy = OnnxPolicy.from_dir(write_model_dir(tmp_path / "model", action_space=space))
    body = json.dumps({"observations": np.random.default_rng(0).normal(size=(64, 20)).tolist(), "return": ["logits"]}).encode()
    answer = json.loads(handle(policy, body, "application/json"))
    assert np.abs(answer["actions"]).max() <= 0.1 + 1e-7
    assert np.array(answer["logits"]).shape == (64, 4)
    with pytest.raises(RequestError, match=r"^return: probabilities are defined for discrete action spaces only \(ask for logits\)$"):
        handle(policy, json.dumps({"observations": [ROW], "return": ["probabilities"]}).encode(), None)


def test_handle_multi_discrete_probabilities_sum_to_one_per_branch(tmp_path: Path) -> None:
    policy = OnnxPolicy.from_dir(write_model_dir(tmp_path / "model", action_space={"type": "multi_discrete", "nvec": [3, 2]}))
    answer = json.loads(handle(policy, json.dumps({"observations": [ROW, ROW], "return": "probabilities"}).encode(), None))
    probs = np.array(answer["action_probs"])
    np.testing.assert_allclose(probs[:, :3].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(probs[:, 3:].sum(axis=1), 1.0, rtol=1e-6)
    assert np.array(answer["actions"]).shape == (2, 2)


def test_dumps_without_orjson_writes_the_same_json(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"actions": np.array([1, 2], dtype=np.int64), "logits": np.array([[0.5, 0.25]], dtype=np.float32)}
    fast = json.loads(protocol.dumps(data))
    monkeypatch.setattr(protocol, "orjson", None)
    assert json.loads(protocol.dumps(data)) == fast == {"actions": [1, 2], "logits": [[0.5, 0.25]]}
    with pytest.raises(RequestError, match=r"^body: invalid JSON \(.*\); NaN and Infinity are not JSON numbers$"):
        protocol.loads(b"[[NaN]]")
