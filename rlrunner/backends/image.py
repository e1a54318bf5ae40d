"""`rlrunner run SPEC --local --image TAG`: the local run's launcher inside the image, as SageMaker starts it.

The run directory is the container's `/opt/ml` (laid out by the local backend through
`rlrunner.contract.sagemaker_container`), the player build's folder is the `train` channel, the
hyperparameters carry the SDK's `sagemaker_*` ones (the code is already in `/opt/ml/code`, where the toolkit
would unpack the uploaded source), and the container gets the plan's environment variables and host
networking. `docker run IMAGE train` runs SageMaker's toolkit, which starts the launcher; `docker stop`
reaches the launcher through the image's stop relay.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from rlrunner.contract.errors import UsageError
from rlrunner.contract.run_dir import RunDir
from rlrunner.contract.sagemaker_container import DEFAULT_HOST, OPT_ML, OptMl, sdk_hyperparameters, write_input_config
from rlrunner.runner import JobPlan

SHM_SIZE = "2g"
"""/dev/shm for Ray's object store (Docker's default of 64 MB makes Ray fall back to /tmp, slowly)."""


def docker_executable() -> str:
    """docker on PATH, or a clear usage error."""
    found = shutil.which("docker")
    if found is None:
        raise UsageError("--image: docker is not on PATH (install Docker to run in the image, or drop --image)")
    return found


def container_name(run_id: str) -> str:
    """The container's name (one per run: a second `docker run` of the same run fails instead of doubling it)."""
    return f"rlrunner-{run_id}"


def lay_out_image_config(tree: RunDir, plan: JobPlan, *, job_name: str) -> None:
    """input/config as a SageMaker job of this plan sees it: the SDK's hyperparameters, the plan's channels."""
    hyperparameters = sdk_hyperparameters(plan.estimator.get("hyperparameters", {}), job_name=job_name)
    write_input_config(tree, hyperparameters=hyperparameters, channels=list(plan.fit_inputs or {}))


def docker_run_command(
    tree: RunDir, plan: JobPlan, image: str, *, name: str, job_name: str, base: Mapping[str, str], docker: str = "docker"
) -> tuple[list[str], dict[str, str]]:
    """`docker run … IMAGE train` and the environment of the docker client (the plan's variables pass by name)."""
    opt_ml = OptMl(Path(str(OPT_ML)))
    mounts = ["--volume", f"{tree.root.resolve()}:{OPT_ML}"]
    for channel, source in (plan.fit_inputs or {}).items():
        if str(source).startswith("s3://"):
            raise UsageError(f"--image: channel {channel} is on S3 ({source}); a local run in the image needs a local player build")
        mounts += ["--volume", f"{Path(source).resolve()}:{opt_ml.channel(channel)}:ro"]
    variables = {**plan.environment, "TRAINING_JOB_NAME": job_name}
    # the toolkit waits until every host name resolves (on SageMaker, the job's private network names them)
    hosts = ["--add-host", f"{DEFAULT_HOST}:127.0.0.1"]
    command = [docker, "run", "--rm", "--name", name, "--network", "host", "--shm-size", SHM_SIZE, *hosts, *mounts]
    for key in sorted(variables):
        command += ["--env", key]
    return [*command, image, "train"], {**base, **variables}


def remove_container(name: str, docker: str = "docker") -> None:
    """Remove the run's container if it is still there (its docker client was killed)."""
    subprocess.run([docker, "rm", "--force", name], capture_output=True, check=False)
