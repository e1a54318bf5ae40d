"""Request parsing and response rendering of /invocations, without HTTP."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from policy_models import write_model_dir

from rlrunner.policy import OnnxPolicy, PolicySet
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


# --- several policies: the request names one ------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "query", "expected"),
    [
        ({"observations": [ROW]}, None, None),
        ({"observations": [ROW], "policy": "Walker"}, None, "Walker"),
        ({"instances": [ROW], "policy": " Walker?team=1 "}, None, "Walker?team=1"),
        ([ROW], "Reacher", "Reacher"),
        ({"observations": [ROW], "policy": "Walker"}, "Walker", "Walker"),
    ],
    ids=["none", "body", "body-trimmed", "query-with-bare-list", "body-and-query-agree"],
)
def test_parse_invocation_reads_the_policy_from_the_body_or_the_query(payload: object, query: str | None, expected: str | None) -> None:
    assert parse_invocation(payload, query_policy=query).policy == expected


@pytest.mark.parametrize(
    ("payload", "query", "message"),
    [
        ({"observations": [ROW], "policy": 3}, None, "policy: expected a policy or behaviour name, got 3"),
        ({"observations": [ROW], "policy": " "}, None, "policy: expected a policy or behaviour name, got ' '"),
        ({"observations": [ROW]}, "", "?policy=: expected a policy or behaviour name, got ''"),
        ({"observations": [ROW], "policy": "Walker"}, "Reacher", "policy: the body names 'Walker', ?policy= names 'Reacher'; name one"),
    ],
    ids=["not-a-string", "blank", "blank-query", "body-and-query-differ"],
)
def test_parse_invocation_refuses_a_bad_policy_name(payload: object, query: str | None, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_invocation(payload, query_policy=query)
    assert (caught.value.status, caught.value.message) == (400, message)


@pytest.fixture(scope="module")
def policies(policies_model_dir: Path) -> PolicySet:
    return PolicySet.from_dir(policies_model_dir)


def answer(policies: PolicySet, payload: object, query: str | None = None) -> dict[str, object]:
    return json.loads(handle(policies, json.dumps(payload).encode(), "application/json", query_policy=query))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("name", "policy"),
    [("Walker", "Walker"), ("Walker?team=1", "Walker"), ("Walker?team=7", "Walker"), ("Reacher", "Reacher"), ("Reacher?team=0", "Reacher")],
    ids=["policy", "behaviour", "other-team", "box-policy", "box-behaviour"],
)
def test_handle_runs_the_policy_the_request_names(policies: PolicySet, policies_model_dir: Path, name: str, policy: str) -> None:
    width = 20 if policy == "Walker" else 8
    batch = np.random.default_rng(0).normal(size=(5, width)).astype(np.float32)
    expected = OnnxPolicy.from_dir(policies_model_dir / "policies" / policy).act(batch)
    for answered in (answer(policies, {"observations": batch.tolist(), "policy": name}), answer(policies, batch.tolist(), query=name)):
        assert answered.keys() == {"actions"}
        np.testing.assert_array_equal(np.asarray(answered["actions"], dtype=expected.dtype), expected)  # float32 round-trips exactly


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (None, 'policy: this model dir holds 2 policies; name one with "policy" (Walker <- Walker?team=0, Walker?team=1; Reacher <- Reacher?team=0)'),
        ("Striker", "policy: unknown 'Striker' (policies: Walker <- Walker?team=0, Walker?team=1; Reacher <- Reacher?team=0)"),
    ],
    ids=["missing", "unknown"],
)
def test_handle_refuses_a_request_that_names_no_known_policy(policies: PolicySet, policy: str | None, message: str) -> None:
    payload = {"observations": [ROW]} | ({"policy": policy} if policy else {})
    with pytest.raises(RequestError) as caught:
        answer(policies, payload)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_handle_checks_observations_against_the_named_policy(policies: PolicySet) -> None:
    with pytest.raises(RequestError, match=r"^observations: expected shape \[batch, 8\], got \[1, 20\]$"):
        answer(policies, {"observations": [ROW], "policy": "Reacher"})
    with pytest.raises(RequestError, match=r"^return: probabilities are defined for discrete action spaces only"):
        answer(policies, {"observations": [[0.0] * 8], "policy": "Reacher", "return": "probabilities"})
    probabilities = answer(policies, {"observations": [ROW], "policy": "Walker", "return": "probabilities"})["action_probs"]
    assert np.array(probabilities).shape == (1, 3)


def test_select_policy_refuses_a_name_that_matches_several(policies: PolicySet) -> None:
    walker = policies.policies["Walker"]
    teams = PolicySet({"blue": walker, "red": walker}, {"blue": ("Soccer?team=0",), "red": ("Soccer?team=1",)}, multi=True, source="x")
    assert [protocol.select_policy(teams, name) is walker for name in ("blue", "Soccer?team=1")] == [True, True]
    assert teams.find("Soccer?team=1") == ["red"]
    for name in ("Soccer", "Soccer?team=2"):
        with pytest.raises(RequestError) as caught:
            protocol.select_policy(teams, name)
        assert caught.value.message == f"policy: {name!r} matches blue, red; name the policy, or the behaviour with its ?team=N"


def test_single_policy_model_dir_ignores_a_policy_name(basic_model_dir: Path) -> None:
    policy = OnnxPolicy.from_dir(basic_model_dir)
    named = json.loads(handle(policy, json.dumps({"observations": [ROW], "policy": "Anything"}).encode(), None))
    assert named == json.loads(handle(policy, json.dumps({"observations": [ROW]}).encode(), None)) == {"actions": policy.act([ROW]).tolist()}


def test_describe_lists_every_policy_with_its_spaces_and_behaviours(policies: PolicySet) -> None:
    described = protocol.describe(policies)
    assert described["policies"] == {
        "Walker": {"behaviors": ["Walker?team=0", "Walker?team=1"], "observation_shape": [20], "action_space": {"type": "discrete", "n": 3},
                   "algorithm": "PPO", "run_id": "test000000"},
        "Reacher": {"behaviors": ["Reacher?team=0"], "observation_shape": [8],
                    "action_space": {"type": "box", "shape": [2], "low": [-1.0, -1.0], "high": [1.0, 1.0]}, "algorithm": "PPO", "run_id": "test000000"},
    }  # fmt: skip
    assert described["accepts"] == protocol.FORMS and described["policy"].startswith("required: ")
    assert "policies" not in protocol.describe(OnnxPolicy.from_dir(policies.source + "/policies/Walker"))
