"""`rlrunner image build|push`: thin wrappers over docker and ECR for users who have them."""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from rlrunner.aws import AwsError, aws_errors, connect, error_code, expand_image
from rlrunner.contract.sagemaker_container import DEFAULT_IMAGE

DOCKERFILE = Path("container") / "Dockerfile"
DEFAULT_TAG = DEFAULT_IMAGE


class ImageError(AwsError):
    """docker is missing or failed (reported like an AWS failure: exit 4)."""


def project_root(start: Path | None = None) -> Path:
    """The folder holding container/Dockerfile: the current folder or one above it, else the source checkout."""
    for folder in [start or Path.cwd(), *(start or Path.cwd()).parents, Path(__file__).resolve().parent.parent]:
        if (folder / DOCKERFILE).is_file():
            return folder
    raise ImageError(f"{DOCKERFILE}: not found here or above (run from an rlrunner checkout)")


def docker(args: Sequence[str], *, echo: Callable[[str], None], input_text: str | None = None, cwd: Path | None = None) -> None:
    """Run `docker ARGS`, with a clear error when docker or its daemon is missing."""
    executable = shutil.which("docker")
    if executable is None:
        raise ImageError("docker: not found on PATH (install Docker to build or push the image)")
    echo("+ docker " + " ".join(arg if "password" not in arg else "***" for arg in args))
    result = subprocess.run([executable, *args], input=input_text, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        raise ImageError(f"docker {args[0]}: exited {result.returncode} (is the Docker daemon running? `docker info` tells)")


def build_image(tag: str | None = None, *, echo: Callable[[str], None] = print) -> str:
    """`docker build -f container/Dockerfile -t TAG .` from the project root; returns the tag."""
    tag = tag or DEFAULT_TAG
    root = project_root()
    docker(["build", "-f", str(DOCKERFILE), "-t", tag, "."], echo=echo, cwd=root)
    return tag


def push_image(tag: str | None = None, *, echo: Callable[[str], None] = print) -> str:
    """Tag and push a local image to `<account>.dkr.ecr.<region>.amazonaws.com/<name>:<tag>`; returns that URI."""
    tag = tag or DEFAULT_TAG
    ctx = connect()
    uri = expand_image(tag, ctx.account_id, ctx.region)
    repository = tag.split(":", 1)[0]
    ecr = ctx.client("ecr")
    try:
        ecr.describe_repositories(repositoryNames=[repository])
    except Exception as error:
        if error_code(error) != "RepositoryNotFoundException":
            raise AwsError(f"ECR repository {repository}: {error}") from None
        with aws_errors(f"ECR repository {repository}: create"):
            ecr.create_repository(repositoryName=repository)
        echo(f"created ECR repository {repository}")
    with aws_errors("ECR GetAuthorizationToken"):
        auth = ecr.get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(auth["authorizationToken"]).decode().split(":", 1)
    registry = uri.split("/", 1)[0]
    docker(["login", "--username", user, "--password-stdin", registry], echo=echo, input_text=password)
    docker(["tag", tag, uri], echo=echo)
    docker(["push", uri], echo=echo)
    return uri
