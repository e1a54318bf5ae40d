"""SageMaker's training-container contract, written by the local emulation and read by the launcher.

A training job's container sees `/opt/ml`: `input/config/{hyperparameters,resourceconfig,
inputdataconfig}.json`, one folder per channel under `input/data/<channel>/`, `code/` (the uploaded
source dir, the working directory of the entry point), `model/` (uploaded as model.tar.gz), `output/`
(`failure` holds the reason of a failed job; `output/data` is uploaded as output.tar.gz) and
`checkpoints/` (synced with `checkpoint_s3_uri`). The toolkit starts the entry point as a script with
the hyperparameters as `--key value` arguments and sets `SM_*` variables. This module is that contract
once: `OptMl` (the layout), `ContainerEnv`/`read_container_env` (what the launcher reads), and
`write_input_config`/`container_environment`/`copy_code`/`launcher_command` (what the local emulation
writes). `RLRUNNER_OPT_ML` moves the whole tree (the emulation's run directory).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from rlrunner import __version__

OPT_ML = PurePosixPath("/opt/ml")
OPT_ML_VAR = "RLRUNNER_OPT_ML"
TRAIN_CHANNEL = "train"
"""The channel that carries the player build."""
CHECKPOINT_LOCAL_PATH = str(OPT_ML / "checkpoints")
ENTRY_POINT = "train_unity.py"
"""The entry script SageMaker runs: one line that calls `rlrunner.entry.train_unity.main` (rlrunner is installed in the image)."""
ENTRY_SOURCE_DIR = Path(__file__).resolve().parent.parent / "entry" / "sagemaker_code"
"""The folder uploaded as the job's `source_dir`: the entry script only."""
DEFAULT_IMAGE = f"rlrunner:{__version__}"
"""The image's local tag; a bare `name:tag` names the repository in the account's ECR."""
FAILURE_FILE = "failure"
STOPPED_FILE = "stopped.json"
"""In output/data: written when the launcher stopped on SIGTERM/SIGINT (a stop, not a failure)."""
TENSORBOARD_DIR = "tensorboard"
"""Under the output dir: `/opt/ml/output/tensorboard`, SageMaker's default local path of TensorBoardOutputConfig."""
TENSORBOARD_LOCAL_PATH = str(OPT_ML / "output" / TENSORBOARD_DIR)
DEFAULT_HOST = "algo-1"
RUN_ID_VAR = "RLRUNNER_RUN_ID"
LOG_LEVEL_VAR = "RLRUNNER_LOG_LEVEL"


@dataclass(frozen=True)
class OptMl:
    """The `/opt/ml` tree (or the emulation's copy of it under a run directory)."""

    root: Path

    @property
    def code(self) -> Path:
        """The uploaded source dir: the entry script and the experiment's source dir as a subfolder."""
        return self.root / "code"

    @property
    def input_config(self) -> Path:
        """hyperparameters.json, resourceconfig.json, inputdataconfig.json."""
        return self.root / "input" / "config"

    def channel(self, name: str) -> Path:
        """Where a channel's data lies (SM_CHANNEL_<NAME>)."""
        return self.root / "input" / "data" / name

    @property
    def model(self) -> Path:
        """SM_MODEL_DIR: the exported policy, uploaded as model.tar.gz."""
        return self.root / "model"

    @property
    def output(self) -> Path:
        """SM_OUTPUT_DIR: `failure` lands here."""
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        """SM_OUTPUT_DATA_DIR: player logs, cluster records; uploaded as output.tar.gz."""
        return self.output / "data"

    @property
    def tensorboard(self) -> Path:
        """TensorBoard event files, synced to S3 while a job runs (the estimator's TensorBoardOutputConfig)."""
        return self.output / TENSORBOARD_DIR

    @property
    def checkpoints(self) -> Path:
        """The checkpoint dir, synced with checkpoint_s3_uri."""
        return self.root / "checkpoints"

    @property
    def failure(self) -> Path:
        """The launcher's one-paragraph failure reason."""
        return self.output / FAILURE_FILE

    @property
    def stopped(self) -> Path:
        """The launcher's record of a stop (SIGTERM/SIGINT): signal, progress, the checkpoint to resume from."""
        return self.output_data / STOPPED_FILE

    def make(self) -> None:
        """Create the folders the platform creates before the entry point starts."""
        for folder in (self.input_config, self.model, self.output_data, self.checkpoints):
            folder.mkdir(parents=True, exist_ok=True)


# --------------------------------------------------------------------------------------------
# The player build: one rule for the plan and the launcher


def binary_in_container(binary: str) -> str:
    """Where a player build named in the spec lies inside a SageMaker job: its file in the `train` channel.

    The plan sends this path to the launcher for a local build (uploaded as the channel) and for an
    `s3://` one (its folder is the channel); `resolve_player_path` maps it to the actual channel folder.
    """
    return str(OPT_ML / "input" / "data" / TRAIN_CHANNEL / PurePosixPath(binary).name)


def resolve_player_path(binary: str, channels: Mapping[str, Path]) -> Path:
    """The player executable on this machine: a channel path maps to that channel's folder (SM_CHANNEL_*)."""
    path = PurePosixPath(binary)
    data = OPT_ML / "input" / "data"
    if path.is_relative_to(data) and len(path.relative_to(data).parts) >= 2:
        channel, *rest = path.relative_to(data).parts
        if channel in channels:
            return Path(channels[channel], *rest)
    return Path(binary)


# --------------------------------------------------------------------------------------------
# What the launcher reads


@dataclass(frozen=True)
class ContainerEnv:
    """Everything the launcher takes from its environment and /opt/ml, as plain values."""

    opt_ml: OptMl
    model_dir: Path
    output_dir: Path
    output_data_dir: Path
    channels: dict[str, Path]
    num_cpus: int
    num_gpus: int
    hosts: tuple[str, ...]
    current_host: str
    variables: dict[str, str] = field(repr=False)
    """Every variable, for the parts that read their own (the experiment codec, the cluster)."""
    log_level: str = "WARNING"

    @property
    def checkpoint_dir(self) -> Path:
        """Where checkpoints go (SageMaker syncs it with checkpoint_s3_uri)."""
        return self.opt_ml.checkpoints

    @property
    def code_dir(self) -> Path:
        """The uploaded source dir (the experiment's source dir is a subfolder)."""
        return self.opt_ml.code

    @property
    def failure_file(self) -> Path:
        """Where SageMaker looks for the reason of a failed job."""
        return self.output_dir / FAILURE_FILE

    @property
    def stopped_file(self) -> Path:
        """Where the launcher records a stop (in output/data, which SageMaker uploads)."""
        return self.output_data_dir / STOPPED_FILE

    @property
    def player_log_dir(self) -> Path:
        """Where the Unity players write their logs."""
        return self.output_data_dir / "players"


def read_container_env(environ: Mapping[str, str], *, cpu_count: int | None = None) -> ContainerEnv:
    """Read SageMaker's contract (SM_* variables, resourceconfig.json) once."""
    opt_ml = OptMl(Path(environ.get(OPT_ML_VAR, str(OPT_ML))))
    output_dir = Path(environ.get("SM_OUTPUT_DIR", opt_ml.output))
    config_dir = Path(environ.get("SM_INPUT_CONFIG_DIR", opt_ml.input_config))
    resource_config = _read_json(config_dir / "resourceconfig.json")
    hosts = _json_list(environ.get("SM_HOSTS")) or [str(h) for h in resource_config.get("hosts", [])] or [DEFAULT_HOST]
    current_host = environ.get("SM_CURRENT_HOST") or str(resource_config.get("current_host", hosts[0]))
    channels = {key[len("SM_CHANNEL_") :].lower(): Path(value) for key, value in environ.items() if key.startswith("SM_CHANNEL_")}
    return ContainerEnv(
        opt_ml=opt_ml,
        model_dir=Path(environ.get("SM_MODEL_DIR", opt_ml.model)),
        output_dir=output_dir,
        output_data_dir=Path(environ.get("SM_OUTPUT_DATA_DIR", output_dir / "data")),
        channels=channels,
        num_cpus=_int(environ.get("SM_NUM_CPUS"), cpu_count or os.cpu_count() or 1),
        num_gpus=_int(environ.get("SM_NUM_GPUS"), 0),
        hosts=tuple(hosts),
        current_host=current_host,
        variables=dict(environ),
        log_level=environ.get(LOG_LEVEL_VAR, "WARNING").upper(),
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _json_list(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [str(v) for v in value] if isinstance(value, list) else []


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text else default
    except ValueError:
        return default


# --------------------------------------------------------------------------------------------
# What the platform writes (the local emulation)


def serialized_hyperparameters(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """hyperparameters.json as the SDK sends it: every value JSON-encoded into a string."""
    return {key: json.dumps(value) for key, value in hyperparameters.items()}


def write_input_config(
    opt_ml: OptMl, *, hyperparameters: Mapping[str, Any], channels: Sequence[str], host: str = DEFAULT_HOST,
    hosts: Sequence[str] = (DEFAULT_HOST,),
) -> None:  # fmt: skip
    """input/config/*.json as the platform writes them."""
    resource = {"current_host": host, "hosts": list(hosts), "network_interface_name": "lo"}
    data_config = {name: {"TrainingInputMode": "File"} for name in channels}
    opt_ml.input_config.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("hyperparameters.json", serialized_hyperparameters(hyperparameters)),
        ("resourceconfig.json", resource),
        ("inputdataconfig.json", data_config),
    ):
        (opt_ml.input_config / name).write_text(json.dumps(content) + "\n")


def sdk_hyperparameters(hyperparameters: Mapping[str, Any], *, job_name: str, submit_directory: str = str(OPT_ML / "code")) -> dict[str, Any]:
    """The hyperparameters as the SDK sends a script-mode job: the experiment's plus the toolkit's `sagemaker_*`
    ones (the entry point, where its code lies: the uploaded source's S3 URI, or a folder already in place)."""
    return {
        **hyperparameters,
        "sagemaker_program": ENTRY_POINT,
        "sagemaker_submit_directory": submit_directory,
        "sagemaker_container_log_level": 20,
        "sagemaker_job_name": job_name,
    }


def write_job_config(opt_ml: OptMl, request: Mapping[str, Any], *, host: str = DEFAULT_HOST) -> None:
    """input/config/*.json from a CreateTrainingJob request, as the platform writes them for one of its hosts:
    the hyperparameters exactly as sent (the SDK serialised them), the hosts and the channels."""
    count = int(request.get("ResourceConfig", {}).get("InstanceCount", 1))
    hosts = [f"algo-{index}" for index in range(1, count + 1)]
    resource = {"current_host": host, "hosts": hosts, "network_interface_name": "lo"}
    data_config = {
        channel["ChannelName"]: {"TrainingInputMode": channel.get("InputMode", request.get("AlgorithmSpecification", {}).get("TrainingInputMode", "File"))}
        for channel in request.get("InputDataConfig", [])
    }
    opt_ml.input_config.mkdir(parents=True, exist_ok=True)
    for name, content in (
        ("hyperparameters.json", dict(request.get("HyperParameters", {}))),
        ("resourceconfig.json", resource),
        ("inputdataconfig.json", data_config),
    ):
        (opt_ml.input_config / name).write_text(json.dumps(content) + "\n")


def copy_code(opt_ml: OptMl, source_dir: Path, dependencies: Sequence[str | Path] = ()) -> None:
    """The code dir as SageMaker builds it: the source dir's files, each dependency as a subfolder."""
    shutil.rmtree(opt_ml.code, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(source_dir, opt_ml.code, ignore=ignore)
    for dependency in dependencies:
        source = Path(dependency)
        shutil.copytree(source, opt_ml.code / source.name, ignore=ignore, dirs_exist_ok=True)


def entry_arguments(hyperparameters: Mapping[str, Any]) -> list[str]:
    """The hyperparameters as the toolkit passes them to the entry point: `--key value`."""
    args: list[str] = []
    for key, value in hyperparameters.items():
        args += [f"--{key}", str(value)]
    return args


def launcher_command(opt_ml: OptMl, hyperparameters: Mapping[str, Any], python: str = sys.executable) -> list[str]:
    """How the toolkit starts the entry point: the script in the code dir, hyperparameters as arguments."""
    return [python, str((opt_ml.code / ENTRY_POINT).resolve()), *entry_arguments(hyperparameters)]


def container_environment(
    opt_ml: OptMl,
    *,
    plan_environment: Mapping[str, str],
    hyperparameters: Mapping[str, Any],
    channels: Mapping[str, Path],
    job_name: str,
    num_cpus: int,
    base: Mapping[str, str],
    host: str = DEFAULT_HOST,
    hosts: Sequence[str] = (DEFAULT_HOST,),
) -> dict[str, str]:
    """The launcher's environment: `base` (PATH…), the plan's variables, and the toolkit's SM_* variables."""
    root = opt_ml.root.resolve()
    tree = OptMl(root)
    env = {key: value for key, value in base.items() if not key.startswith(("SM_", "RLRUNNER_", "RAY_ADDRESS"))}
    env.update(plan_environment)
    env.update(
        {
            OPT_ML_VAR: str(root),
            "TRAINING_JOB_NAME": job_name,
            "SM_MODEL_DIR": str(tree.model),
            "SM_INPUT_DIR": str(root / "input"),
            "SM_INPUT_CONFIG_DIR": str(tree.input_config),
            "SM_OUTPUT_DIR": str(tree.output),
            "SM_OUTPUT_DATA_DIR": str(tree.output_data),
            "SM_OUTPUT_INTERMEDIATE_DIR": str(tree.output / "intermediate"),
            "SM_MODULE_DIR": str(tree.code),
            "SM_MODULE_NAME": Path(ENTRY_POINT).stem,
            "SM_USER_ENTRY_POINT": ENTRY_POINT,
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(dict(hyperparameters)),
            "SM_USER_ARGS": json.dumps(entry_arguments(hyperparameters)),
            "SM_CURRENT_HOST": host,
            "SM_HOSTS": json.dumps(list(hosts)),
            "SM_NUM_CPUS": str(num_cpus),
            "SM_NUM_GPUS": "0",
            "SM_NETWORK_INTERFACE_NAME": "lo",
            "SM_RESOURCE_CONFIG": json.dumps({"current_host": host, "hosts": list(hosts)}),
            "SM_LOG_LEVEL": "20",
            "PYTHONUNBUFFERED": "1",
        }
    )
    for name, path in channels.items():
        env[f"SM_CHANNEL_{name.upper()}"] = str(Path(path).resolve())
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.upper()}"] = str(value)
    return env
