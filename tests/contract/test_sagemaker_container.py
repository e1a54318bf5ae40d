"""SageMaker's container contract: what the local emulation writes is what the launcher reads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from shared import BASIC_PPO

from rlrunner.contract.experiment_env import decode_experiment_env
from rlrunner.contract.sagemaker_container import (
    ENTRY_POINT,
    ENTRY_SOURCE_DIR,
    OptMl,
    binary_in_container,
    container_environment,
    copy_code,
    launcher_command,
    read_container_env,
    resolve_player_path,
    write_input_config,
)
from rlrunner.loader import load_spec
from rlrunner.runner import plan


def test_read_container_env_defaults_to_opt_ml() -> None:
    env = read_container_env({}, cpu_count=4)
    assert env.opt_ml == OptMl(Path("/opt/ml"))
    assert (env.model_dir, env.output_dir, env.output_data_dir) == (Path("/opt/ml/model"), Path("/opt/ml/output"), Path("/opt/ml/output/data"))
    assert (env.checkpoint_dir, env.code_dir, env.failure_file) == (Path("/opt/ml/checkpoints"), Path("/opt/ml/code"), Path("/opt/ml/output/failure"))
    assert (env.num_cpus, env.num_gpus, env.hosts, env.current_host, env.channels) == (4, 0, ("algo-1",), "algo-1", {})


def test_read_container_env_reads_sagemaker_variables_and_resourceconfig(tmp_path: Path) -> None:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    environ = {
        "RLRUNNER_OPT_ML": str(tmp_path),
        "SM_MODEL_DIR": "/elsewhere/model",
        "SM_CHANNEL_TRAIN": "/data/train",
        "SM_NUM_CPUS": "8",
        "SM_NUM_GPUS": "1",
    }
    env = read_container_env(environ)
    assert env.opt_ml.root == tmp_path and env.model_dir == Path("/elsewhere/model")
    assert env.checkpoint_dir == tmp_path / "checkpoints"
    assert env.channels == {"train": Path("/data/train")}
    assert (env.num_cpus, env.num_gpus) == (8, 1)
    assert env.hosts == ("algo-1", "algo-2") and env.current_host == "algo-2"


def test_what_the_emulation_writes_the_launcher_reads_back(tmp_path: Path) -> None:
    spec, document = load_spec(BASIC_PPO)
    job = plan(spec, spec_dir=document.base_dir, local=True)
    tree = OptMl(tmp_path / "opt_ml")
    build = tmp_path / "build"
    build.mkdir()
    hyperparameters = job.estimator["hyperparameters"]
    hosts = ("algo-1", "algo-2")
    tree.make()
    copy_code(tree, Path(job.estimator["source_dir"]))
    write_input_config(tree, hyperparameters=hyperparameters, channels=["train"], host="algo-2", hosts=hosts)
    environ = container_environment(
        tree, plan_environment=job.environment, hyperparameters=hyperparameters, channels={"train": build}, job_name="basic-local",
        num_cpus=3, base={"PATH": "/usr/bin", "SM_STALE": "x", "RLRUNNER_STALE": "x"}, host="algo-2", hosts=hosts,
    )  # fmt: skip

    env = read_container_env(environ)

    assert (env.opt_ml, env.model_dir, env.output_data_dir) == (OptMl(tree.root.resolve()), tree.model.resolve(), tree.output_data.resolve())
    assert (env.channels, env.num_cpus, env.hosts, env.current_host) == ({"train": build.resolve()}, 3, hosts, "algo-2")
    assert decode_experiment_env(env.variables) == job.experiment
    assert "SM_STALE" not in environ and "RLRUNNER_STALE" not in environ and environ["PATH"] == "/usr/bin"
    assert json.loads((tree.input_config / "hyperparameters.json").read_text()) == {"rlrunner_run_id": json.dumps(job.run_id)}
    assert json.loads((tree.input_config / "inputdataconfig.json").read_text()) == {"train": {"TrainingInputMode": "File"}}
    assert sorted(p.name for p in tree.code.iterdir()) == [ENTRY_POINT]  # the one-line entry script, nothing else
    assert launcher_command(tree, hyperparameters, python="python")[1:] == [str((tree.code / ENTRY_POINT).resolve()), "--rlrunner_run_id", job.run_id]


def test_the_uploaded_source_dir_is_the_one_line_entry_script() -> None:
    script = (ENTRY_SOURCE_DIR / ENTRY_POINT).read_text()
    assert "from rlrunner.entry.train_unity import main" in script
    assert sorted(p.name for p in ENTRY_SOURCE_DIR.iterdir() if p.name != "__pycache__") == [ENTRY_POINT]


@pytest.mark.parametrize(
    ("binary", "in_container"),
    [("build/Game.x86_64", "/opt/ml/input/data/train/Game.x86_64"), ("s3://bucket/builds/v2/Game.x86_64", "/opt/ml/input/data/train/Game.x86_64")],
    ids=["local-build", "s3-build"],
)
def test_a_player_build_is_planned_in_the_train_channel_and_resolved_there(binary: str, in_container: str, tmp_path: Path) -> None:
    assert binary_in_container(binary) == in_container
    assert resolve_player_path(in_container, {"train": tmp_path / "train"}) == tmp_path / "train" / "Game.x86_64"
    assert resolve_player_path(in_container, {}) == Path(in_container)  # on SageMaker the channel is that folder
    assert resolve_player_path("/abs/Game.x86_64", {"train": tmp_path}) == Path("/abs/Game.x86_64")


def test_a_create_training_job_request_lays_out_input_config_as_the_platform_does(tmp_path: Path) -> None:
    from rlrunner.contract.sagemaker_container import OptMl, sdk_hyperparameters, write_job_config

    sent = {"sagemaker_program": '"train_unity.py"', "rlrunner_run_id": '"abc"'}  # the SDK's JSON-encoded strings
    request = {
        "HyperParameters": sent,
        "ResourceConfig": {"InstanceCount": 2, "InstanceType": "ml.c5.xlarge"},
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "InputDataConfig": [{"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/k"}}}],
    }
    tree = OptMl(tmp_path)
    write_job_config(tree, request, host="algo-2")
    config = {name: json.loads((tree.input_config / f"{name}.json").read_text()) for name in ("hyperparameters", "resourceconfig", "inputdataconfig")}
    assert config["hyperparameters"] == sent  # as sent, not encoded again
    assert config["resourceconfig"] == {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"], "network_interface_name": "lo"}
    assert config["inputdataconfig"] == {"train": {"TrainingInputMode": "File"}}
    added = sdk_hyperparameters({"rlrunner_run_id": "abc"}, job_name="j")
    assert added["sagemaker_program"] == ENTRY_POINT and added["sagemaker_submit_directory"] == "/opt/ml/code" and added["rlrunner_run_id"] == "abc"
