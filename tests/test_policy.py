"""OnnxPolicy: greedy actions equal the exported torch module's, sampling follows the distribution, inputs are checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from policy_models import reference_actions, write_model_dir, write_policies_model_dir  # noqa: E402

from rlrunner.policy import (  # noqa: E402
    ActionSpace,
    ObservationError,
    OnnxPolicy,
    PolicyError,
    PolicySet,
    check_model_dir,
    read_policy_index,
    softmax,
)

SPACES: dict[str, dict[str, Any]] = {
    "discrete": {"type": "discrete", "n": 3},
    "multi_discrete": {"type": "multi_discrete", "nvec": [3, 2, 4]},
    "box": {"type": "box", "shape": [2], "low": [-0.2, -1.0], "high": [0.2, 1.0]},
}


@pytest.fixture(scope="module", params=list(SPACES))
def model_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp(request.param) / "model", action_space=SPACES[request.param], seed=7)


def observations(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 20)).astype(np.float32)


def test_policy_act_matches_the_torch_module_on_1000_observations(model_dir: Path) -> None:
    policy = OnnxPolicy.from_dir(model_dir)
    batch = observations(1000)
    actions = policy.act(batch)
    expected = reference_actions(model_dir, batch, seed=7)
    if policy.action_space.is_discrete:
        assert actions.dtype == np.int64
        np.testing.assert_array_equal(actions, expected)
    else:
        np.testing.assert_allclose(actions, expected, atol=1e-6)
        low, high = np.array([-0.2, -1.0], np.float32), np.array([0.2, 1.0], np.float32)
        assert (actions >= low).all() and (actions <= high).all()


def test_policy_outputs_have_the_contract_shapes(model_dir: Path) -> None:
    policy = OnnxPolicy.from_dir(model_dir)
    outputs = policy.outputs(observations(5))
    assert outputs["action_dist_inputs"].shape == (5, policy.action_space.dist_width)
    assert outputs["actions"].shape[0] == 5


def test_policy_sample_is_reproducible_and_inside_the_space(model_dir: Path) -> None:
    policy = OnnxPolicy.from_dir(model_dir)
    batch = observations(200)
    first = policy.sample(batch, np.random.default_rng(3))
    np.testing.assert_array_equal(first, policy.sample(batch, np.random.default_rng(3)))
    space = policy.action_space
    if space.is_discrete:
        assert (first >= 0).all() and (first < np.array(space.branches)).all()
    else:
        assert (first >= np.float32(space.low)).all() and (first <= np.float32(space.high)).all()


def test_policy_sample_follows_the_softmax_of_the_logits(tmp_path: Path) -> None:
    policy = OnnxPolicy.from_dir(write_model_dir(tmp_path / "model", seed=1))
    obs = np.repeat(observations(1, seed=5), 20_000, axis=0)
    counts = np.bincount(policy.sample(obs, np.random.default_rng(0)), minlength=3) / len(obs)
    probs = softmax(policy.outputs(obs[:1])["action_dist_inputs"][0].astype(np.float64))
    np.testing.assert_allclose(counts, probs, atol=0.015)
    np.testing.assert_allclose(policy.probabilities(obs[:1])[0], probs, rtol=1e-5)


@pytest.mark.parametrize(
    ("obs", "message"),
    [
        ([[0.0] * 19], "observations: expected shape [batch, 20], got [1, 19]"),
        ([0.0] * 20, "observations: expected shape [batch, 20], got [20] (wrap a single observation in a list)"),
        ([["x"] * 20], "observations: expected numbers, got strings"),
        ([[True] * 20], "observations: expected numbers, got booleans"),
        ([[0.0] * 20, [0.0] * 3], "observations: not a rectangular array (rows of different lengths)"),
        ([], "observations: empty batch"),
        ([[0.0] * 5 + [float("inf")] + [0.0] * 14], "observations[0, 5]: not finite as float32 (got inf)"),
        ([[0.0] * 20, [float("nan")] * 20], "observations[1, 0]: not finite as float32 (got nan)"),
        ([[3e38 * 10] + [0.0] * 19], "observations[0, 0]: not finite as float32 (got 3e+39)"),
    ],
    ids=["width", "unbatched", "strings", "booleans", "ragged", "empty", "inf", "nan", "float32-overflow"],
)
def test_policy_refuses_bad_observations_with_a_located_message(tmp_path: Path, obs: Any, message: str) -> None:
    policy = OnnxPolicy.from_dir(write_model_dir(tmp_path / "model"))
    with pytest.raises(ObservationError) as caught:
        policy.act(obs)
    assert str(caught.value) == message


def test_policy_takes_integer_observations_as_float32(tmp_path: Path) -> None:
    policy = OnnxPolicy.from_dir(write_model_dir(tmp_path / "model"))
    one_hot = np.eye(20, dtype=np.int64)[[3, 10]]
    np.testing.assert_array_equal(policy.act(one_hot), policy.act(one_hot.astype(np.float32)))


def _edit_metadata(model_dir: Path, **changes: Any) -> None:
    data = json.loads((model_dir / "policy.json").read_text())
    data.update(changes)
    (model_dir / "policy.json").write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 2}, "{dir}/policy.json: format: expected 1, got 2"),
        ({"observation_space": {"type": "box", "shape": [10]}}, "{dir}/policy.onnx: input obs has shape [batch, 20], policy.json says [batch, 10]"),
        ({"action_space": {"type": "discrete"}}, "{dir}/policy.json: action_space: missing key 'n' for type 'discrete'"),
        ({"action_space": {"type": "tuple"}}, "{dir}/policy.json: action_space.type: expected discrete, multi_discrete or box, got 'tuple'"),
        ({"action_space": {"type": "box", "shape": [2], "low": [0]}}, "{dir}/policy.json: action_space.low: expected 2 numbers, got [0]"),
        ({"outputs": ["actions"]}, "{dir}/policy.json: outputs: 'action_dist_inputs' missing (got ['actions'])"),
    ],
    ids=["format", "obs-shape", "missing-n", "unknown-type", "box-bounds", "outputs"],
)
def test_policy_from_dir_refuses_a_mismatched_model_dir(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    model_dir = write_model_dir(tmp_path / "model")
    _edit_metadata(model_dir, **change)
    with pytest.raises(PolicyError) as caught:
        OnnxPolicy.from_dir(model_dir)
    assert str(caught.value) == message.format(dir=model_dir)


def test_policy_from_dir_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=rf"^{tmp_path}: not a model dir \(policy.onnx, policy.json missing\)$"):
        OnnxPolicy.from_dir(tmp_path)


def test_policy_from_dir_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    model_dir = write_model_dir(tmp_path / "model")
    (model_dir / "policy.onnx").write_bytes(b"\x00garbage")
    with pytest.raises(PolicyError, match=rf"^{model_dir}/policy.onnx: onnxruntime cannot load it: "):
        OnnxPolicy.from_dir(model_dir)


def test_action_space_widths() -> None:
    assert ActionSpace.from_data({"type": "multi_discrete", "nvec": [3, 2]}, "x").dist_width == 5
    box = ActionSpace.from_data({"type": "box", "shape": [3], "low": -1, "high": 1}, "x")
    assert (box.dist_width, box.low, box.high) == (6, (-1.0,) * 3, (1.0,) * 3)


# --- a multi-policy model dir: policies.json and one model dir per policy ----------------------------


@pytest.fixture(scope="module")
def policies_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_policies_model_dir(tmp_path_factory.mktemp("policies") / "model")


def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def test_policy_set_loads_every_policy_with_its_behaviours(policies_dir: Path) -> None:
    policies = PolicySet.from_dir(policies_dir)
    assert policies.multi and list(policies.policies) == ["Walker", "Reacher"]
    assert policies.policy_of() == {"Walker?team=0": "Walker", "Walker?team=1": "Walker", "Reacher?team=0": "Reacher"}
    assert policies.summary() == (
        "Walker (Walker?team=0, Walker?team=1): observations [20] -> discrete 3; Reacher (Reacher?team=0): observations [8] -> box [2]"
    )
    batch = observations(10)
    np.testing.assert_array_equal(policies.policies["Walker"].act(batch), reference_actions(policies_dir / "policies/Walker", batch, seed=1))
    assert [policies.find(name) for name in ("Walker", "Walker?team=1", "Walker?team=3", "Reacher?team=0", "Striker")] == [
        ["Walker"], ["Walker"], ["Walker"], ["Reacher"], []
    ]  # fmt: skip


def test_policy_set_of_a_single_policy_model_dir(model_dir: Path) -> None:
    policies = PolicySet.from_dir(model_dir)
    assert not policies.multi and len(policies.policies) == 1 and read_policy_index(model_dir) is None


def test_onnx_policy_from_dir_refuses_a_multi_policy_model_dir(policies_dir: Path) -> None:
    with pytest.raises(PolicyError, match=rf"^{policies_dir}: holds several policies \(Walker, Reacher\); load them with PolicySet.from_dir$"):
        OnnxPolicy.from_dir(policies_dir)


@pytest.mark.parametrize(
    ("index", "message"),
    [
        ({"format": 2, "policies": {}}, "{model}/policies.json: format: expected 1, got 2"),
        ({"format": 1, "policies": {}}, "{model}/policies.json: policies: expected an object with at least one policy, got {}"),
        ({"format": 1, "policies": {"Walker": {"dir": "../elsewhere", "behaviors": []}}},
         "{model}/policies.json: policies.Walker.dir: expected a folder inside the model dir, got '../elsewhere'"),
        ({"format": 1, "policies": {"Walker": {"dir": "/opt/ml/model", "behaviors": []}}},
         "{model}/policies.json: policies.Walker.dir: expected a folder inside the model dir, got '/opt/ml/model'"),
        ({"format": 1, "policies": {"Walker": {"dir": "policies/Walker", "behaviors": "Walker?team=0"}}},
         "{model}/policies.json: policies.Walker.behaviors: expected a list of behaviour names, got 'Walker?team=0'"),
        ({"format": 1, "policies": {"Walker": {"dir": "policies/Reacher", "behaviors": []}, "Ghost": {"dir": "policies/Ghost"}}},
         "{model}: policy 'Ghost': policies/Ghost/policy.onnx, policies/Ghost/policy.json missing"),
    ],
    ids=["format", "no-policy", "dir-outside", "dir-absolute", "behaviors-not-a-list", "policy-files-missing"],
)
def test_check_model_dir_refuses_a_bad_policies_json(policies_dir: Path, tmp_path: Path, index: dict[str, Any], message: str) -> None:
    model = copy_of(policies_dir, tmp_path)
    (model / "policies.json").write_text(json.dumps(index))
    with pytest.raises(PolicyError) as caught:
        check_model_dir(model)
    assert str(caught.value) == message.replace("{model}", str(model))


def test_policy_set_names_the_policy_that_cannot_be_loaded(policies_dir: Path, tmp_path: Path) -> None:
    model = copy_of(policies_dir, tmp_path)
    (model / "policies/Reacher/policy.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(PolicyError, match=rf"^policy 'Reacher': {model}/policies/Reacher/policy.onnx: onnxruntime cannot load it: "):
        PolicySet.from_dir(model)
