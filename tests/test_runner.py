"""The plan: golden estimator kwargs and env vars per experiment, round trip through the launcher's decoder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared import ROOT

from rlrunner.contract.experiment_env import decode_experiment_env
from rlrunner.contract.identity import identity_hash, run_id
from rlrunner.contract.sagemaker_container import ENTRY_SOURCE_DIR
from rlrunner.loader import load_spec
from rlrunner.runner import PlanError, plan
from rlrunner.schema import Experiment

GOLDEN = Path(__file__).with_name("golden")
EXPERIMENTS = sorted((ROOT / "experiments").glob("*.yaml"))


def normalized(data: object) -> object:
    """Paths that differ between checkouts, replaced by placeholders."""
    text = json.dumps(data, indent=1, sort_keys=True)
    return json.loads(text.replace(str(ENTRY_SOURCE_DIR), "<rlrunner.entry.sagemaker_code>").replace(str(ROOT), "<repo>"))


@pytest.mark.parametrize("spec_path", EXPERIMENTS, ids=[path.stem for path in EXPERIMENTS])
def test_plan_matches_golden_files(spec_path: Path, regen_golden: bool) -> None:
    spec, document = load_spec(spec_path, environ={})
    job = plan(spec, spec_dir=document.base_dir, environ={"SAGEMAKER_ROLE": "arn:aws:iam::123456789012:role/Test"})
    rendered = normalized({"estimator": job.estimator, "fit_inputs": job.fit_inputs, "experiment": job.experiment})
    golden = GOLDEN / f"{spec_path.stem}.plan.json"
    if regen_golden:
        golden.write_text(json.dumps(rendered, indent=1, sort_keys=True) + "\n")
    assert rendered == json.loads(golden.read_text()), (
        f"regenerate on purpose with pytest --regen-golden: {golden}"
    )


@pytest.mark.parametrize("spec_path", EXPERIMENTS, ids=[path.stem for path in EXPERIMENTS])
def test_plan_environment_decodes_to_the_experiment(spec_path: Path) -> None:
    spec, document = load_spec(spec_path, environ={})
    job = plan(spec, spec_dir=document.base_dir)
    decoded = decode_experiment_env(job.environment)
    assert decoded == job.experiment
    assert Experiment.model_validate(decoded).to_data() == job.experiment
    assert len(job.environment) <= 100
    assert all(len(value) <= 512 for value in job.environment.values())


def test_plan_run_id_is_stable_and_changes_with_the_spec(tmp_path: Path) -> None:
    spec, _ = load_spec(ROOT / "experiments" / "basic_ppo.yaml")
    again, _ = load_spec(ROOT / "experiments" / "basic_ppo.yaml")
    changed, _ = load_spec(ROOT / "experiments" / "basic_ppo.yaml", ["algorithm.hyperparameters.lr=0.0002"])
    assert run_id(spec) == run_id(again)
    assert run_id(spec) != run_id(changed)
    assert len(run_id(spec)) == 10


def test_plan_local_uses_local_instance_and_absolute_binary(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    (build / "Game.x86_64").write_text("#!/bin/sh\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: game\nenvironment: {binary: build/Game.x86_64}\nalgorithm: {name: PPO}\ntraining: {stop: {iterations: 1}}\n"
    )
    spec, document = load_spec(spec_file)
    local = plan(spec, spec_dir=document.base_dir, local=True)
    assert local.estimator["instance_type"] == "local"
    assert local.experiment["environment"]["binary"] == str(build / "Game.x86_64")
    remote_spec, _ = load_spec(spec_file, ["compute.instance_type=ml.c5.xlarge"])
    remote = plan(remote_spec, spec_dir=document.base_dir)
    assert remote.experiment["environment"]["binary"] == "/opt/ml/input/data/train/Game.x86_64"  # the train channel
    assert remote.fit_inputs == {"train": str(build)}


def test_plan_binary_on_s3_becomes_the_train_channel(tmp_path: Path) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: game\nenvironment: {binary: 's3://my-bucket/builds/game/Game.x86_64'}\nalgorithm: {name: SAC}\ntraining: {stop: {iterations: 1}}\ncompute: {instance_type: ml.c5.xlarge}\n"
    )
    spec, document = load_spec(spec_file)
    job = plan(spec, spec_dir=document.base_dir)
    assert job.fit_inputs == {"train": "s3://my-bucket/builds/game/"}


def test_plan_spot_settings_reach_the_estimator(tmp_path: Path) -> None:
    spec, document = load_spec(
        ROOT / "experiments" / "basic_ppo.yaml",
        ["compute.spot={max_wait: 7200}", "compute.checkpoint_s3_uri=s3://bucket/ckpt"],
    )
    estimator = plan(spec, spec_dir=document.base_dir).estimator
    assert (
        estimator["use_spot_instances"],
        estimator["max_run"],
        estimator["max_wait"],
        estimator["checkpoint_s3_uri"],
    ) == (True, 3600, 7200, "s3://bucket/ckpt")
    tags = {tag["Key"]: tag["Value"] for tag in estimator["tags"]}
    assert tags == {"rlrunner:run-id": run_id(spec), "rlrunner:spec-hash": identity_hash(spec)}


def test_plan_fails_when_user_env_leaves_no_room(tmp_path: Path) -> None:
    overrides = [f"compute.environment.V{i}={'x' * 500}" for i in range(97)]
    spec, document = load_spec(ROOT / "experiments" / "basic_ppo.yaml", overrides)
    with pytest.raises(
        PlanError, match=r"^compute.environment: the experiment is [\d,]+ bytes of JSON .* but only 1 are free"
    ):
        plan(spec, spec_dir=document.base_dir)
