"""The loader: located errors for bad input (exit 3, whole messages), overrides, env interpolation."""

from __future__ import annotations

import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rlrunner.cli import main
from rlrunner.loader import SpecError, load_spec

BASE = """\
name: basic-ppo
environment:
  name: Basic
algorithm:
  name: PPO
  hyperparameters:
    lr: 1.0e-4
training:
  stop:
    timesteps: 1000
compute:
  instance_type: ml.c5.2xlarge
"""


def replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


# (id, spec text, --set overrides, environment, expected stderr with {f} for the file)
BAD_INPUT = [
    (
        "empty-file",
        "",
        [],
        {},
        "{f}:1:1: the file is empty; expected a mapping with name, environment, algorithm and training",
    ),
    (
        "comment-only",
        "# nothing\n",
        [],
        {},
        "{f}:1:1: the file is empty; expected a mapping with name, environment, algorithm and training",
    ),
    (
        "top-level-list",
        "- name: x\n",
        [],
        {},
        "{f}:1:1: expected a mapping with name, environment, algorithm and training (got list)",
    ),
    (
        "top-level-scalar",
        "hello\n",
        [],
        {},
        "{f}:1:1: expected a mapping with name, environment, algorithm and training (got str)",
    ),
    (
        "yaml-syntax-unclosed",
        replace("lr: 1.0e-4", "lr: [1.0e-4"),
        [],
        {},
        "{f}:8:9: YAML syntax error: expected ',' or ']', but got ':'",
    ),
    (
        "yaml-syntax-tab",
        replace("  name: Basic", "\tname: Basic"),
        [],
        {},
        "{f}:3:1: YAML syntax error: found character '\\t' that cannot start any token",
    ),
    (
        "duplicate-key",
        replace("  name: Basic\n", "  name: Basic\n  name: Other\n"),
        [],
        {},
        "{f}:4:3: environment.name: duplicate key",
    ),
    ("duplicate-top-key", BASE + "name: again\n", [], {}, "{f}:13:1: name: duplicate key"),
    (
        "unknown-top-key",
        BASE + "computee: {}\n",
        [],
        {},
        "{f}:13:11: computee: unknown key 'computee'; did you mean 'compute'?",
    ),
    (
        "unknown-env-key",
        replace("  name: Basic", "  name: Basic\n  nographics: true"),
        [],
        {},
        "{f}:4:15: environment.nographics: unknown key 'nographics'; did you mean 'no_graphics'?",
    ),
    (
        "unknown-hyperparameter",
        replace("lr: 1.0e-4", "lrr: 1.0e-4"),
        [],
        {},
        "{f}:7:10: algorithm.hyperparameters.lrr: unknown key 'lrr'; did you mean 'lr'?",
    ),
    (
        "unknown-stop-key",
        replace("timesteps: 1000", "timestep: 1000"),
        [],
        {},
        "{f}:10:15: training.stop.timestep: unknown key 'timestep'; did you mean 'timesteps'?",
    ),
    (
        "unknown-model-key",
        replace("    lr: 1.0e-4", "    lr: 1.0e-4\n  model:\n    fcnet_hidden: [8]"),
        [],
        {},
        "{f}:9:19: algorithm.model.fcnet_hidden: unknown key 'fcnet_hidden'; did you mean 'fcnet_hiddens'?",
    ),
    (
        "unknown-compute-key",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  instance_typ: x"),
        [],
        {},
        "{f}:13:17: compute.instance_typ: unknown key 'instance_typ'; did you mean 'instance_type'?",
    ),
    (
        "unknown-deploy-key",
        BASE + "deploy:\n  endpoint: x\n",
        [],
        {},
        "{f}:14:13: deploy.endpoint: unknown key 'endpoint'; did you mean 'endpoint_name'?",
    ),
    (
        "unknown-sweep-key",
        BASE + "sweep:\n  parameter: {}\n",
        [],
        {},
        "{f}:14:14: sweep.parameter: unknown key 'parameter'; did you mean 'parameters'?",
    ),
    (
        "unknown-spot-key",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  spot: {max_wait: 90000, wait: 1}"),
        [],
        {},
        "{f}:13:33: compute.spot.wait: unknown key 'wait'; did you mean 'max_wait'?",
    ),
    (
        "old-sgd-minibatch",
        replace("lr: 1.0e-4", "sgd_minibatch_size: 64"),
        [],
        {},
        "{f}:7:25: algorithm.hyperparameters.sgd_minibatch_size: 'sgd_minibatch_size' is an old-API-stack RLlib name; on the new API stack use 'minibatch_size'",
    ),
    (
        "old-num-sgd-iter",
        replace("lr: 1.0e-4", "num_sgd_iter: 10"),
        [],
        {},
        "{f}:7:19: algorithm.hyperparameters.num_sgd_iter: 'num_sgd_iter' is an old-API-stack RLlib name; on the new API stack use 'num_epochs'",
    ),
    (
        "old-num-workers",
        replace("lr: 1.0e-4", "num_workers: 2"),
        [],
        {},
        "{f}:7:18: algorithm.hyperparameters.num_workers: 'num_workers' is an old-API-stack RLlib name; on the new API stack set training.env_runners",
    ),
    (
        "old-train-batch-size",
        replace("lr: 1.0e-4", "train_batch_size: 500"),
        [],
        {},
        "{f}:7:23: algorithm.hyperparameters.train_batch_size: 'train_batch_size' is an old-API-stack RLlib name; on the new API stack use 'train_batch_size_per_learner'",
    ),
    (
        "managed-seed",
        replace("lr: 1.0e-4", "seed: 3"),
        [],
        {},
        "{f}:7:11: algorithm.hyperparameters.seed: 'seed' is set by rlrunner from training.seed",
    ),
    (
        "unknown-algorithm",
        replace("name: PPO", "name: PPOO"),
        [],
        {},
        "{f}:5:9: algorithm.name: unknown algorithm 'PPOO': expected one of APPO, DQN, IMPALA, PPO, SAC; did you mean 'PPO'?",
    ),
    (
        "missing-algorithm-name",
        replace("  name: PPO\n", ""),
        [],
        {},
        "{f}:5:3: algorithm: needs a name: one of APPO, DQN, IMPALA, PPO, SAC",
    ),
    (
        "dqn-key-on-ppo",
        replace("lr: 1.0e-4", "double_q: true"),
        [],
        {},
        "{f}:7:15: algorithm.hyperparameters.double_q: unknown key 'double_q'",
    ),
    (
        "wrong-type-lr",
        replace("lr: 1.0e-4", "lr: fast"),
        [],
        {},
        "{f}:7:9: algorithm.hyperparameters.lr: must be a number or a list (got 'fast')",
    ),
    (
        "negative-lr",
        replace("lr: 1.0e-4", "lr: -1"),
        [],
        {},
        "{f}:7:9: algorithm.hyperparameters.lr: must be > 0.0 (got -1)",
    ),
    (
        "gamma-above-one",
        replace("lr: 1.0e-4", "gamma: 1.5"),
        [],
        {},
        "{f}:7:12: algorithm.hyperparameters.gamma: must be <= 1.0 (got 1.5)",
    ),
    (
        "wrong-type-epochs",
        replace("lr: 1.0e-4", "num_epochs: 2.5"),
        [],
        {},
        "{f}:7:17: algorithm.hyperparameters.num_epochs: must be a valid integer (got 2.5)",
    ),
    (
        "list-where-mapping",
        replace("  name: Basic\n", "  - Basic\n"),
        [],
        {},
        "{f}:3:3: environment: expected a mapping (got a list)",
    ),
    (
        "mapping-where-list",
        replace("  name: Basic", "  name: Basic\n  player_args: {a: 1}"),
        [],
        {},
        "{f}:4:16: environment.player_args: must be a valid list (got a mapping)",
    ),
    (
        "name-and-binary",
        replace("  name: Basic", "  name: Basic\n  binary: s3://bucket/game/Game.x86_64"),
        [],
        {},
        "{f}:3:3: environment: give exactly one of environment.name and environment.binary",
    ),
    (
        "neither-name-nor-binary",
        replace("  name: Basic", "  no_graphics: true"),
        [],
        {},
        "{f}:3:3: environment: give exactly one of environment.name and environment.binary",
    ),
    (
        "bad-s3-uri",
        replace("  name: Basic", "  binary: s3://Bad_Bucket/Game.x86_64"),
        [],
        {},
        "{f}:3:11: environment.binary: not an S3 object URI: 's3://Bad_Bucket/Game.x86_64'",
    ),
    (
        "s3-folder-not-file",
        replace("  name: Basic", "  binary: s3://bucket/game/"),
        [],
        {},
        "{f}:3:11: environment.binary: not an S3 object URI: 's3://bucket/game/'",
    ),
    (
        "missing-local-binary",
        replace("  name: Basic", "  binary: builds/Missing.x86_64"),
        [],
        {},
        "{f}:3:11: environment.binary: file {d}/builds/Missing.x86_64 does not exist",
    ),
    (
        "bad-output-path",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  output_path: http://bucket/x"),
        [],
        {},
        "{f}:13:16: compute.output_path: must be an S3 URI such as s3://my-bucket/prefix (got 'http://bucket/x')",
    ),
    (
        "bad-role-arn",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  role: SageMakerRole"),
        [],
        {},
        "{f}:13:9: compute.role: must be an IAM role ARN such as arn:aws:iam::123456789012:role/SageMakerRole (got 'SageMakerRole')",
    ),
    (
        "bad-instance-type",
        replace("ml.c5.2xlarge", "c5.2xlarge"),
        [],
        {},
        "{f}:12:18: compute.instance_type: must be a SageMaker instance type such as ml.c5.2xlarge, or local (got 'c5.2xlarge')",
    ),
    (
        "job-name-underscore",
        replace("name: basic-ppo", "name: basic_ppo"),
        [],
        {},
        "{f}:1:7: name: must be letters, digits and single hyphens, e.g. 'basic-ppo' (no '_' or '.') (got 'basic_ppo')",
    ),
    (
        "job-name-too-long",
        replace("name: basic-ppo", "name: " + "a" * 40),
        [],
        {},
        "{f}:1:7: name: at most 39 characters (got 40)",
    ),
    (
        "base-job-name-too-long",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  base_job_name: " + "b" * 40),
        [],
        {},
        "{f}:13:18: compute.base_job_name: at most 39 characters (got 40)",
    ),
    (
        "spot-without-max-wait",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  spot: {}"),
        [],
        {},
        "{f}:13:9: compute.spot.max_wait: required",
    ),
    (
        "max-wait-below-max-run",
        replace(
            "instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  max_run: 7200\n  spot: {max_wait: 3600}"
        ),
        [],
        {},
        "{f}:14:20: compute.spot.max_wait: must be >= compute.max_run (3600 < 7200)",
    ),
    (
        "reserved-env-var",
        replace(
            "instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  environment: {RLRUNNER_EXPERIMENT: x}"
        ),
        [],
        {},
        "{f}:13:38: compute.environment.RLRUNNER_EXPERIMENT: uses a reserved prefix (RLRUNNER_, SM_)",
    ),
    (
        "no-stop-criterion",
        replace("    timesteps: 1000", "    timesteps: null"),
        [],
        {},
        "{f}:10:5: training.stop: give at least one stop criterion (timesteps, iterations, episode_return_mean, evaluation_return_mean, time_s)",
    ),
    (
        "missing-training",
        replace("training:\n  stop:\n    timesteps: 1000\n", ""),
        [],
        {},
        "{f}:1:1: training: required",
    ),
    (
        "bad-env-runners",
        replace("    timesteps: 1000", "    timesteps: 1000\n  env_runners: many"),
        [],
        {},
        "{f}:11:16: training.env_runners: must be an integer or 'auto' (got 'many')",
    ),
    (
        "grid-with-distribution",
        BASE + "sweep:\n  parameters:\n    algorithm.hyperparameters.lr: {loguniform: [1.0e-5, 1.0e-3]}\n",
        [],
        {},
        "{f}:15:5: sweep.parameters.algorithm.hyperparameters.lr: a distribution needs sweep.method random (grid takes lists only)",
    ),
    (
        "custom-module-without-source-dir",
        replace("    lr: 1.0e-4", "    lr: 1.0e-4\n  model:\n    module: my_model:Net"),
        [],
        {},
        "{f}:9:13: algorithm.model.module: needs source_dir, the folder that holds the module's file",
    ),
    (
        "bad-set-syntax",
        BASE,
        ["lr"],
        {},
        "--set lr:1:1: expected --set dotted.path=value, e.g. --set algorithm.hyperparameters.lr=0.0003",
    ),
    (
        "bad-set-yaml",
        BASE,
        ["algorithm.hyperparameters.lr=[1"],
        {},
        "--set algorithm.hyperparameters.lr=[1:1:30: algorithm.hyperparameters.lr: value is not valid YAML: expected ',' or ']', but got '<stream end>'",
    ),
    (
        "bad-set-value",
        BASE,
        ["algorithm.hyperparameters.lr=-3"],
        {},
        "--set algorithm.hyperparameters.lr=-3:1:30: algorithm.hyperparameters.lr: must be > 0.0 (got -3)",
    ),
    (
        "bad-set-unknown-key",
        BASE,
        ["training.stop.timestep=5"],
        {},
        "--set training.stop.timestep=5:1:24: training.stop.timestep: unknown key 'timestep'; did you mean 'timesteps'?",
    ),
    ("bad-set-into-scalar", BASE, ["name.first=x"], {}, "--set name.first=x:1:12: name: is a str, not a mapping"),
    (
        "missing-env-var",
        replace("lr: 1.0e-4", "lr: ${env:RLRUNNER_TEST_LR}"),
        [],
        {},
        "{f}:7:9: algorithm.hyperparameters.lr: environment variable RLRUNNER_TEST_LR is not set (write ${{env:RLRUNNER_TEST_LR,default}} to give a default)",
    ),
    (
        "env-var-bad-value",
        replace("lr: 1.0e-4", "lr: ${env:RLRUNNER_TEST_LR}"),
        [],
        {"RLRUNNER_TEST_LR": "-2"},
        "{f}:7:9: algorithm.hyperparameters.lr: must be > 0.0 (got -2)",
    ),
    (
        "several-errors",
        replace("name: basic-ppo", "name: basic_ppo").replace("lr: 1.0e-4", "lr: -1"),
        [],
        {},
        "{f}:1:7: name: must be letters, digits and single hyphens, e.g. 'basic-ppo' (no '_' or '.') (got 'basic_ppo')\n{f}:7:9: algorithm.hyperparameters.lr: must be > 0.0 (got -1)",
    ),
]


@pytest.mark.parametrize(
    ("text", "overrides", "environ", "expected"), [case[1:] for case in BAD_INPUT], ids=[case[0] for case in BAD_INPUT]
)
def test_cli_bad_input_exits_3_with_located_message(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    text: str,
    overrides: list[str],
    environ: dict[str, str],
    expected: str,
) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    if not environ:
        monkeypatch.delenv("RLRUNNER_TEST_LR", raising=False)
    args = ["plan", str(spec), *[arg for override in overrides for arg in ("--set", override)]]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip() == expected.format(f=spec, d=tmp_path)


def test_cli_experiment_too_large_for_the_environment_variables_is_an_invalid_spec(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.2xlarge\n  environment: {" + ", ".join(f"V{i}: '{'x' * 500}'" for i in range(97)) + "}")
    )
    result = CliRunner().invoke(main, ["plan", str(spec)])
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert re.fullmatch(
        rf"{re.escape(str(spec))}: compute\.environment: the experiment is [\d,]+ bytes of JSON \([\d,]+ characters compressed\) "
        r"and needs \d+ environment variables of at most 512 characters, but only 1 are free \(SageMaker allows 100 per job, "
        r"including compute\.environment\)\n",
        result.stderr,
    ), result.stderr


def test_validate_reports_every_invalid_file_and_exits_3(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(BASE)
    (tmp_path / "bad.yaml").write_text(replace("lr: 1.0e-4", "lr: -1"))
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 3
    assert result.stderr.strip() == f"{tmp_path / 'bad.yaml'}:7:9: algorithm.hyperparameters.lr: must be > 0.0 (got -1)"
    assert f"ok   {tmp_path / 'good.yaml'}" in result.stdout


def test_validate_missing_path_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 2
    assert result.stderr == f"no spec files (*.yaml) found in {tmp_path}\n"


def test_overrides_are_typed_yaml_never_evaluated(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE)
    loaded, _ = load_spec(
        spec,
        [
            "algorithm.hyperparameters.lr=3e-4",
            "environment.player_args=[-a, '__import__(\"os\")']",
            "training.stop.iterations=7",
        ],
    )
    assert loaded.algorithm.hyperparameters.lr == pytest.approx(3e-4)
    assert loaded.environment.player_args == ["-a", '__import__("os")']
    assert loaded.training.stop.iterations == 7


def test_env_interpolation_with_default_and_typing(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        replace("lr: 1.0e-4", "lr: ${env:MY_LR,0.001}").replace("name: basic-ppo", "name: run-${env:SUFFIX}")
    )
    loaded, _ = load_spec(spec, environ={"SUFFIX": "7"})
    assert loaded.algorithm.hyperparameters.lr == pytest.approx(0.001)
    assert loaded.name == "run-7"


def test_spec_error_lists_every_problem(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(replace("name: basic-ppo", "name: x_y").replace("timesteps: 1000", "timesteps: -1"))
    with pytest.raises(SpecError) as caught:
        load_spec(spec)
    assert [problem.path for problem in caught.value.problems] == ["name", "training.stop.timesteps"]


# --- hostile input: bounded work, tags, control bytes, strict numbers, located blame ---------------------

LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)
)
MERGE_BOMB = "a: &a {x0: 1, x1: 2}\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} {{<<: [{', '.join(['*' + chr(97 + i)] * 9)}]}}\n" for i in range(9)
)
GRID_6x10 = BASE + "sweep:\n  parameters:\n" + "".join(
    f"    algorithm.hyperparameters.gamma{i}: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" for i in range(6)
)

# (id, spec text, --set overrides, expected stderr with {f} for the file); `sweep --dry-run` reads them
HOSTILE = [
    ("aliases-billion-laughs", LAUGHS, [], "{f}:1:4: the document expands to more than 20,000 values (the limit; YAML aliases?)"),
    ("aliases-merge-keys", MERGE_BOMB, [], "{f}:4:4: a mapping of more than 1,000 keys after merging (the limit)"),
    ("depth-flow-100000", "a: " + "[" * 100_000 + "]" * 100_000 + "\n", [], "{f}:1:36: nested more than 32 levels deep (the limit)"),
    ("depth-block", "".join("  " * i + f"k{i}:\n" for i in range(40)) + "  " * 40 + "v\n", [], "{f}:33:65: nested more than 32 levels deep (the limit)"),
    ("file-size", BASE + "# " + "x" * 2_000_000 + "\n", [], "{f}:1:1: the file is larger than 262,144 bytes (the limit)"),
    (
        "list-length-block",
        replace("  name: Basic", "  name: Basic\n  player_args:\n" + "    - a\n" * 2000),
        [],
        "{f}:5:5: a list of more than 1,000 items (the limit)",
    ),
    ("list-length-flow", "a: [" + ",".join(["0"] * 50_000) + "]\n", [], "{f}:1:4: a list of more than 1,000 items (the limit)"),
    ("mapping-size", "a: {" + ", ".join(f"k{i}: 0" for i in range(2000)) + "}\n", [], "{f}:1:4: a mapping of more than 1,000 keys (the limit)"),
    (
        "sweep-grid-6x10",
        GRID_6x10,
        [],
        "{f}:15:5: sweep.parameters: 1,000,000 runs (1,000,000 combinations x 1 seed(s)), more than 1,000 (the limit)",
    ),
    (
        "sweep-seeds-200000",
        BASE + "sweep:\n  seeds: [" + ", ".join(str(i) for i in range(20_000)) + "]\n",
        [],
        "{f}:14:10: a list of more than 1,000 items (the limit)",
    ),
    (
        "sweep-seeds-times-grid",
        BASE + "sweep:\n  parameters:\n    algorithm.hyperparameters.lr: [0.1, 0.2, 0.3]\n  seeds: [" + ", ".join(str(i) for i in range(400)) + "]\n",
        [],
        "{f}:15:5: sweep.parameters: 1,200 runs (3 combinations x 400 seed(s)), more than 1,000 (the limit)",
    ),
    (
        "sweep-random-samples",
        BASE + "sweep:\n  method: random\n  samples: 5000\n  parameters:\n    algorithm.hyperparameters.lr: {uniform: [0.1, 0.2]}\n",
        [],
        "{f}:17:5: sweep.parameters: 5,000 runs (5,000 draws x 1 seed(s)), more than 1,000 (the limit)",
    ),
    (
        "tag-python-name",
        replace("name: basic-ppo", "name: !!python/name:os.system"),
        [],
        "{f}:1:7: YAML tags are not allowed (got !!python/name:os.system); quote a value to make it a string",
    ),
    (
        "tag-python-object-apply",
        replace("  name: Basic", "  name: !!python/object/apply:os.system ['true']"),
        [],
        "{f}:3:9: YAML tags are not allowed (got !!python/object/apply:os.system); quote a value to make it a string",
    ),
    ("tag-custom", replace("name: basic-ppo", "name: !custom x"), [], "{f}:1:7: YAML tags are not allowed (got !custom); quote a value to make it a string"),
    ("tag-on-mapping", replace("environment:", "environment: !!map"), [], "{f}:2:14: YAML tags are not allowed (got !!map); quote a value to make it a string"),
    ("tag-on-list", replace("lr: 1.0e-4", "lr: !!seq [1]"), [], "{f}:7:9: YAML tags are not allowed (got !!seq); quote a value to make it a string"),
    ("tag-str-on-number", replace("timesteps: 1000", "timesteps: !!str 1000"), [], "{f}:10:16: YAML tags are not allowed (got !!str); quote a value to make it a string"),
    ("control-nul", replace("basic-ppo", "basic\x00ppo"), [], "{f}:1:12: control character 0x00 is not allowed in a spec"),
    ("control-bell", replace("  name: Basic", "  name: Ba\x07sic"), [], "{f}:3:11: control character 0x07 is not allowed in a spec"),
    ("control-escape-in-comment", replace("training:", "training:  # \x1b[31m"), [], "{f}:8:14: control character 0x1b is not allowed in a spec"),
    ("number-inf", replace("lr: 1.0e-4", "lr: .inf"), [], "{f}:7:9: algorithm.hyperparameters.lr: must be a finite number or a list (got inf)"),
    ("number-nan", replace("lr: 1.0e-4", "lr: .nan"), [], "{f}:7:9: algorithm.hyperparameters.lr: must be a finite number or a list (got nan)"),
    ("number-1e309", replace("lr: 1.0e-4", "lr: 1e309"), [], "{f}:7:9: algorithm.hyperparameters.lr: must be a finite number or a list (got inf)"),
    (
        "number-stop-inf",
        replace("timesteps: 1000", "timesteps: 1000\n    episode_return_mean: .inf"),
        [],
        "{f}:11:26: training.stop.episode_return_mean: must be a finite number or a mapping (got inf)",
    ),
    (
        "number-env-parameter-nan",
        replace("  name: Basic", "  name: Basic\n  parameters: {gravity: .nan}"),
        [],
        "{f}:4:25: environment.parameters.gravity: must be a finite number (got nan)",
    ),
    ("number-time-scale-inf", replace("  name: Basic", "  name: Basic\n  time_scale: -.inf"), [], "{f}:4:15: environment.time_scale: must be a finite number (got -inf)"),
    ("strict-timesteps-true", replace("timesteps: 1000", "timesteps: true"), [], "{f}:10:16: training.stop.timesteps: must be a valid integer (got True)"),
    ("strict-timesteps-string", replace("timesteps: 1000", "timesteps: '10000'"), [], "{f}:10:16: training.stop.timesteps: must be a valid integer (got '10000')"),
    ("strict-timesteps-float", replace("timesteps: 1000", "timesteps: 1000.0"), [], "{f}:10:16: training.stop.timesteps: must be a valid integer (got 1000.0)"),
    ("strict-lr-string", replace("lr: 1.0e-4", "lr: '0.001'"), [], "{f}:7:9: algorithm.hyperparameters.lr: must be a number or a list (got '0.001')"),
    ("strict-bool-string", replace("  name: Basic", "  name: Basic\n  no_graphics: 'false'"), [], "{f}:4:16: environment.no_graphics: must be a valid boolean (got 'false')"),
    ("set-unknown-nested", BASE, ["a.b.c=1"], "--set a.b.c=1:1:7: a: unknown key 'a'"),
    (
        "set-unknown-under-known",
        BASE,
        ["environment.foo.bar=1"],
        "--set environment.foo.bar=1:1:21: environment.foo: unknown key 'foo'",
    ),
    ("set-tag", BASE, ["name=!!python/name:os.system"], "--set name=!!python/name:os.system:1:6: name: value is not valid YAML: YAML tags are not allowed (got !!python/name:os.system); quote a value to make it a string"),
    ("set-deep", BASE, ["environment.player_args=" + "[" * 5000 + "]" * 5000], "--set environment.player_args=" + "[" * 5000 + "]" * 5000 + ":1:25: environment.player_args: value is not valid YAML: nested more than 32 levels deep (the limit)"),
    ("set-inf", BASE, ["algorithm.hyperparameters.lr=.inf"], "--set algorithm.hyperparameters.lr=.inf:1:30: algorithm.hyperparameters.lr: must be a finite number or a list (got inf)"),
    ("set-key-too-deep", BASE, [".".join(["a"] * 40) + "=1"], "--set " + ("a." * 40)[:74] + "…:1:1: the override is deeper than 32 levels (the limit)"),
    ("set-value-too-long", BASE, ["name=" + "x" * 300_000], "--set name=" + "x" * 69 + "…:1:1: the override is longer than 262,144 characters (the limit)"),
    (
        "tag-key-reserved",
        replace("  instance_type: ml.c5.2xlarge", "  instance_type: ml.c5.2xlarge\n  tags:\n    team: a\n    'aws:x': b"),
        [],
        "{f}:15:14: compute.tags.aws:x: uses a reserved prefix (aws:, rlrunner:)",
    ),
    (
        "instance-type-unknown",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.banana.huge"),
        [],
        "{f}:12:18: compute.instance_type: 'ml.banana.huge' is not a SageMaker training instance type (rlrunner/instance_types.json)",
    ),
    (
        "instance-type-hosting-only-for-training",
        replace("instance_type: ml.c5.2xlarge", "instance_type: ml.c5.large"),
        [],
        "{f}:12:18: compute.instance_type: 'ml.c5.large' is not a SageMaker training instance type (rlrunner/instance_types.json); did you mean 'ml.c5.xlarge'?",
    ),
    (
        "instance-type-deploy-typo",
        BASE + "deploy:\n  instance_type: ml.c5.2xlarg\n",
        [],
        "{f}:14:18: deploy.instance_type: 'ml.c5.2xlarg' is not a SageMaker hosting instance type (rlrunner/instance_types.json); did you mean 'ml.c5.2xlarge'?",
    ),
    (
        "instance-type-set",
        BASE,
        ["compute.instance_type=ml.p9.mega"],
        "--set compute.instance_type=ml.p9.mega:1:23: compute.instance_type: 'ml.p9.mega' is not a SageMaker training instance type (rlrunner/instance_types.json)",
    ),
    (
        "environment-name-typo",
        replace("  name: Basic", "  name: Basicc"),
        [],
        "{f}:3:9: environment.name: 'Basicc' is neither bundled nor in ML-Agents' registry (did you mean 'Basic'?); for your own build give environment.binary",
    ),
    (
        "environment-name-registry-typo",
        replace("  name: Basic", "  name: 3DBal"),
        [],
        "{f}:3:9: environment.name: '3DBal' is neither bundled nor in ML-Agents' registry (did you mean '3DBall'?); for your own build give environment.binary",
    ),
    (
        "sweep-value-at-item",
        BASE + "sweep:\n  parameters:\n    algorithm.hyperparameters.lr: [0.1, -1]\n",
        [],
        "{f}:15:41: algorithm.hyperparameters.lr: must be > 0.0 (got -1) [sweep point 1: algorithm.hyperparameters.lr=-1]",
    ),
    (
        "sweep-repeated-value",
        BASE + "sweep:\n  parameters:\n    training.seed: [1, 2, 2]\n",
        [],
        "{f}:15:24: sweep: points 1 and 2 are the same run (training.seed=2); a value repeats",
    ),
    (
        "sweep-seed-in-both-places",
        BASE + "sweep:\n  parameters:\n    training.seed: [1, 2]\n  seeds: [3]\n",
        [],
        "{f}:16:10: sweep.seeds: training.seed is also a swept parameter; give the seeds in one place",
    ),
]


@pytest.mark.parametrize(("text", "overrides", "expected"), [case[1:] for case in HOSTILE], ids=[case[0] for case in HOSTILE])
def test_hostile_input_is_one_located_line_in_bounded_time(tmp_path: Path, text: str, overrides: list[str], expected: str) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    args = ["sweep", str(spec), "--dry-run", *[arg for override in overrides for arg in ("--set", override)]]
    started = time.perf_counter()
    result = CliRunner().invoke(main, args)
    elapsed = time.perf_counter() - started
    assert result.exit_code == 3, result.output
    assert result.stderr.strip() == expected.format(f=spec)
    # A guard against a hang or an exponential expansion, not a speed figure (this 2-core machine took up to
    # 1.5 s on the slowest case from a cold start; a billion-laughs expansion would not finish at all).
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert sorted(tmp_path.iterdir()) == [spec]


def test_yaml_1_2_floats_without_a_dot_are_numbers(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(replace("lr: 1.0e-4", "lr: 3e-4"))
    loaded, _ = load_spec(spec, ["training.stop.time_s=1E+3"])
    assert loaded.algorithm.hyperparameters.lr == pytest.approx(3e-4)
    assert loaded.training.stop.time_s == pytest.approx(1000.0)


def test_sweeping_the_training_seed_as_a_parameter_works(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(BASE + "sweep:\n  parameters:\n    training.seed: [1, 2]\n")
    result = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "training.seed=1" in result.stdout and "training.seed=2" in result.stdout


@pytest.mark.parametrize("name", ["aliases-billion-laughs", "depth-flow-100000", "list-length-flow", "sweep-grid-6x10", "file-size"])
def test_hostile_input_under_a_1_gib_address_space_limit(tmp_path: Path, name: str) -> None:
    text, expected = next((case[1], case[3]) for case in HOSTILE if case[0] == name)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    for command in ("validate", "plan"):
        result = subprocess.run(
            [sys.executable, "-m", "rlrunner.cli", command, str(spec)],
            capture_output=True, text=True, timeout=60, preexec_fn=limit_memory, env=env,
        )  # fmt: skip
        assert result.returncode == 3, result.stderr
        assert result.stderr.strip() == expected.format(f=spec)
    assert sorted(tmp_path.iterdir()) == [spec]


def test_a_registry_name_validates_offline_and_an_unpriced_type_says_unknown_price(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        replace("  name: Basic", "  name: 3DBall").replace("instance_type: ml.c5.2xlarge", "instance_type: ml.r5.large")
        + "sweep:\n  parameters:\n    compute.instance_type: [ml.c5.xlarge, ml.r5.large]\n"
    )
    result = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].split()[-2:] == ["4.90", "compute.instance_type=ml.c5.xlarge"]
    assert "unknown price  compute.instance_type=ml.r5.large" in lines[2]
    assert lines[3] == "2 points valid; estimated cost unknown: no price known for ml.r5.large (priced points: at most 4.90 USD)"


def test_the_instance_type_table_names_its_date_and_source() -> None:
    from rlrunner.instance_types import load_instance_types

    table = load_instance_types()
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", table["date"]) and table["source"].startswith("botocore ")
    assert "ml.c5.2xlarge" in table["training"] and "ml.c5.large" not in table["training"] and "ml.c5.large" in table["hosting"]


# --- paths are contained ------------------------------------------------------------------------------

GAME = "name: game\nenvironment:\n  binary: {binary}\nalgorithm:\n  name: PPO\ntraining:\n  stop:\n    iterations: 1\n"


def path_cases(root: Path) -> dict[str, tuple[str, str]]:
    """id -> (spec text in root/project/experiments, expected stderr with {d} for that folder)."""
    (root / "project" / "experiments" / "build").mkdir(parents=True)
    for build in (root / "Game.x86_64", root / "project" / "experiments" / "build" / "Game.x86_64"):
        build.write_text("#!/bin/sh\n")
    inside = "build/Game.x86_64"
    return {
        "binary-is-a-folder": (GAME.format(binary="/tmp"), "{d}/spec.yaml:3:11: environment.binary: /tmp is a folder, not the player executable"),
        "binary-is-the-spec-folder": (GAME.format(binary="."), "{d}/spec.yaml:3:11: environment.binary: {d} is a folder, not the player executable"),
        "binary-empty": (GAME.format(binary="''"), "{d}/spec.yaml:3:11: environment.binary: String should have at least 1 character (got '')"),
        "binary-in-the-root-folder": (
            GAME.format(binary="/Game.x86_64"),
            "{d}/spec.yaml:3:11: environment.binary: file /Game.x86_64 does not exist",
        ),
        "binary-above-the-project": (
            GAME.format(binary="../../Game.x86_64"),
            f"{{d}}/spec.yaml:3:11: environment.binary: the build's folder {root} is a folder above the spec's own ({{d}}): keep it in a folder of its own",
        ),
        "source-dir-parent": (
            GAME.format(binary=inside) + "source_dir: ..\n",
            f"{{d}}/spec.yaml:9:13: source_dir: folder {root / 'project'} is a folder above the spec's own ({{d}}): keep it in a folder of its own",
        ),
        "source-dir-root": (
            GAME.format(binary=inside) + "source_dir: /\n",
            "{d}/spec.yaml:9:13: source_dir: folder / is the root folder: far too much to upload",
        ),
        "source-dir-home": (
            GAME.format(binary=inside) + f"source_dir: {Path.home()}\n",
            f"{{d}}/spec.yaml:9:13: source_dir: folder {Path.home().resolve()} is the home folder: far too much to upload",
        ),
        "source-dir-empty": (GAME.format(binary=inside) + "source_dir: ''\n", "{d}/spec.yaml:9:13: source_dir: String should have at least 1 character (got '')"),
    }


@pytest.mark.parametrize("case", [
    "binary-is-a-folder", "binary-is-the-spec-folder", "binary-empty", "binary-in-the-root-folder", "binary-above-the-project",
    "source-dir-parent", "source-dir-root", "source-dir-home", "source-dir-empty",
])  # fmt: skip
def test_paths_outside_the_project_are_refused_before_anything_is_copied(tmp_path: Path, case: str) -> None:
    text, expected = path_cases(tmp_path)[case]
    folder = tmp_path / "project" / "experiments"
    (folder / "spec.yaml").write_text(text)
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, ["plan", str(folder / "spec.yaml")])
    assert result.exit_code == 3, result.output
    assert result.stderr.strip() == expected.format(d=folder)
    assert sorted(tmp_path.rglob("*")) == before


def test_folders_over_the_size_limit_name_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rlrunner.loader as loader

    monkeypatch.setattr(loader, "MAX_SOURCE_DIR_BYTES", 1000)
    monkeypatch.setattr(loader, "MAX_BUILD_FOLDER_BYTES", 5000)
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "Game.x86_64").write_bytes(b"\0" * 6000)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "data.bin").write_bytes(b"\0" * 2000)
    spec = tmp_path / "spec.yaml"
    spec.write_text(GAME.format(binary="build/Game.x86_64") + "source_dir: models\n")
    with pytest.raises(SpecError) as error:
        load_spec(spec)
    assert [str(p) for p in error.value.problems] == [
        f"{spec}:9:13: source_dir: folder {tmp_path / 'models'} holds more than 1,000 bytes (the limit); nothing was copied or uploaded",
        f"{spec}:3:11: environment.binary: the build's folder {tmp_path / 'build'} holds more than 5,000 bytes (the limit); nothing was copied or uploaded",
    ]


def test_run_dir_inside_source_dir_is_refused_before_anything_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "Game.x86_64").write_text("#!/bin/sh\n")
    spec = tmp_path / "spec.yaml"
    spec.write_text(GAME.format(binary="Game.x86_64") + "source_dir: .\n")
    monkeypatch.chdir(tmp_path)  # the default run dir, runs/<name>-<id>, lies inside source_dir
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(main, ["run", str(spec), "--local"])
    assert result.exit_code == 3, result.output
    assert re.fullmatch(
        rf"source_dir: folder {re.escape(str(tmp_path))} contains the run directory runs/game-[0-9a-f]{{10}} \(the job would copy it into itself\); "
        r"give source_dir a folder of its own, or pick another --run-dir\n",
        result.stderr,
    ), result.stderr
    assert sorted(tmp_path.rglob("*")) == before
