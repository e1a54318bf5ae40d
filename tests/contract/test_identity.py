"""The run identity: one id from validate, plan, run; deploy-only, tag-only and where-it-runs changes keep it."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from shared import BASIC_PPO, EXPERIMENTS

from rlrunner.cli import main
from rlrunner.contract.identity import describe_changes, identity_changes, run_id, run_identity, trains_longer
from rlrunner.loader import load_spec
from rlrunner.runner import plan
from rlrunner.sweep import expand, sweep_folder


@pytest.mark.parametrize(
    "override",
    [
        "deploy.instance_type=ml.m5.large",
        "compute.tags.team=rl",
        "compute.instance_type=local",
        "compute.max_run=7200",
        "description=another text",
        "name=renamed",
        "training.checkpoint_frequency=1",
        "environment.base_port=6000",
    ],
)
def test_run_id_ignores_what_does_not_change_the_result(override: str) -> None:
    spec, _ = load_spec(BASIC_PPO)
    changed, _ = load_spec(BASIC_PPO, [override])
    assert run_id(changed) == run_id(spec)


@pytest.mark.parametrize(
    "override",
    ["algorithm.hyperparameters.lr=0.0002", "training.seed=1", "training.stop.timesteps=20000", "compute.instance_count=2",
     "environment.max_episode_steps=50", "algorithm.model.fcnet_hiddens=[32]", "training.init_from=runs/x"],
)
def test_run_id_follows_what_changes_the_result(override: str) -> None:
    spec, _ = load_spec(BASIC_PPO)
    changed, _ = load_spec(BASIC_PPO, [override])
    assert run_id(changed) != run_id(spec)


def test_validate_plan_and_local_plan_print_one_run_id() -> None:
    spec, document = load_spec(BASIC_PPO)
    expected = run_id(spec)
    validated = CliRunner().invoke(main, ["validate", str(BASIC_PPO), "--output", "json"])
    assert json.loads(validated.stdout)[0]["run_id"] == expected
    for extra in ([], ["--local"], ["--set", "deploy.instance_type=ml.m5.large", "--set", "compute.tags.team=rl"]):
        planned = CliRunner().invoke(main, ["plan", str(BASIC_PPO), "--output", "json", *extra])
        data = json.loads(planned.stdout)
        assert data["run_id"] == data["experiment"]["run_id"] == expected
        assert data["experiment"]["spec_hash"].startswith(expected)
        assert {t["Key"]: t["Value"] for t in data["estimator"]["tags"]}["rlrunner:run-id"] == expected
    text = CliRunner().invoke(main, ["plan", str(BASIC_PPO)])
    assert f"run id        {expected}\n" in text.output
    assert plan(spec, spec_dir=document.base_dir, local=True).run_id == expected


def test_sweep_points_keep_their_ids_after_a_deploy_or_tag_change() -> None:
    sweep_spec = EXPERIMENTS / "sweep_lr_seeds.yaml"
    spec, document = load_spec(sweep_spec)
    edited, edited_document = load_spec(sweep_spec, ["deploy.instance_type=ml.m5.large", "compute.tags.owner=me"])
    before = [point.run_id for point in expand(document, spec)]
    assert [point.run_id for point in expand(edited_document, edited)] == before
    assert len(set(before)) == len(before)
    assert sweep_folder(edited, edited_document) == sweep_folder(spec, document)  # the same sweep folder and summary


def test_identity_changes_and_longer_training() -> None:
    spec, _ = load_spec(BASIC_PPO)
    longer, _ = load_spec(BASIC_PPO, ["training.stop.timesteps=20000", "training.stop.iterations=9"])
    changes = identity_changes(run_identity(spec), run_identity(longer))
    assert changes == {"training.stop.iterations": (None, 9), "training.stop.timesteps": (10000, 20000)}
    assert not trains_longer(changes)  # a new criterion can stop earlier
    assert trains_longer({"training.stop.timesteps": (10000, 20000)})
    assert not trains_longer({"training.stop.timesteps": (10000, 5000)})
    assert describe_changes(changes) == "training.stop.iterations - -> 9, training.stop.timesteps 10000 -> 20000"
