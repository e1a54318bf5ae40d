"""`rlrunner image build|push`: thin wrappers over docker and ECR for users who have them.

`build_image` builds container/Dockerfile with BuildKit and host networking (`--network host`: every
connection of the build stays on this machine's interfaces). This machine's pip configuration (`pip config
list`: indexes, find-links, constraints, CA bundle) reaches the pip steps as build secrets, never a layer:
local folders and files it names are served read-only on 127.0.0.1 for the build's duration.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from rlrunner.aws import AwsError, aws_errors, connect, error_code, expand_image
from rlrunner.contract.sagemaker_container import DEFAULT_IMAGE

DOCKERFILE = Path("container") / "Dockerfile"
DEFAULT_TAG = DEFAULT_IMAGE
PIP_CERT_TARGET = "/etc/pip-cert.pem"
"""Where the Dockerfile mounts the `pip-cert` secret (the CA bundle pip's `cert` names)."""
PIP_LOCATION_KEYS = ("index-url", "extra-index-url", "find-links", "constraint")
"""pip settings that name places to read packages from (a local one is served on loopback during the build)."""
PIP_PLAIN_KEYS = ("trusted-host", "default-timeout", "timeout", "retries", "prefer-binary", "only-binary", "no-binary", "pre")


class ImageError(AwsError):
    """docker is missing or failed (reported like an AWS failure: exit 4)."""


def project_root(start: Path | None = None) -> Path:
    """The folder holding container/Dockerfile: the current folder or one above it, else the source checkout."""
    for folder in [start or Path.cwd(), *(start or Path.cwd()).parents, Path(__file__).resolve().parent.parent]:
        if (folder / DOCKERFILE).is_file():
            return folder
    raise ImageError(f"{DOCKERFILE}: not found here or above (run from an rlrunner checkout)")


def docker(
    args: Sequence[str], *, echo: Callable[[str], None], input_text: str | None = None, cwd: Path | None = None,
    executable: str | None = None, env: Mapping[str, str] | None = None, stdout: int | None = None,
) -> None:  # fmt: skip
    """Run `docker ARGS`, with a clear error when docker or its daemon is missing; `stdout`: a file descriptor for
    docker's output (None: ours)."""
    executable = executable or shutil.which("docker")
    if executable is None:
        raise ImageError("docker: not found on PATH (install Docker to build or push the image)")
    echo("+ docker " + " ".join(arg if "password" not in arg else "***" for arg in args))
    result = subprocess.run([executable, *args], input=input_text, text=True, cwd=cwd, env=env, stdout=stdout, check=False)
    if result.returncode != 0:
        raise ImageError(f"docker {args[0]}: exited {result.returncode} (is the Docker daemon running? `docker info` tells)")


def buildkit_docker(path: str | None = None) -> str:
    """The first docker client on PATH that builds with BuildKit: one with the buildx plugin, or a pre-23 one
    (BuildKit built in, as Debian's docker.io); a newer client without buildx falls back to the legacy builder,
    which has no build secrets."""
    found = False
    for folder in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        candidate = Path(folder or ".") / "docker"
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        found = True
        if _succeeds([str(candidate), "buildx", "version"]):
            return str(candidate)
        version = _output([str(candidate), "version", "--format", "{{.Client.Version}}"])
        if version and version.split(".")[0].isdigit() and int(version.split(".")[0]) < 23:
            return str(candidate)
    if not found:
        raise ImageError("docker: not found on PATH (install Docker to build or push the image)")
    raise ImageError("docker build: no docker client on PATH builds with BuildKit (install the buildx plugin)")


def _succeeds(command: Sequence[str]) -> bool:
    return subprocess.run(command, capture_output=True, check=False).returncode == 0


def _output(command: Sequence[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


def build_image(
    tag: str | None = None, *, python_image: str | None = None, pip_config: Mapping[str, str] | None = None,
    no_cache: bool = False, echo: Callable[[str], None] = print, docker_stdout: int | None = None,
) -> str:  # fmt: skip
    """`docker build -f container/Dockerfile -t TAG --network host .` from the project root with BuildKit, this
    machine's pip configuration as build secrets and `python_image` as the PYTHON_IMAGE base; returns the tag."""
    tag = tag or DEFAULT_TAG
    root = project_root()
    executable = buildkit_docker()
    settings = read_pip_config() if pip_config is None else dict(pip_config)
    args = ["build", "-f", str(DOCKERFILE), "-t", tag, "--network", "host", "--progress", "plain"]
    if python_image:
        args += ["--build-arg", f"PYTHON_IMAGE={python_image}"]
    if no_cache:
        args.append("--no-cache")
    with tempfile.TemporaryDirectory(prefix="rlrunner-pip-") as folder, serve_pip_locations(settings) as served:
        conf = Path(folder) / "pip.conf"
        conf.write_text(pip_conf_text(served))
        args += ["--secret", f"id=pip.conf,src={conf}"]
        if settings.get("cert"):
            args += ["--secret", f"id=pip-cert,src={settings['cert']}"]
        env = {**os.environ, "DOCKER_BUILDKIT": "1"}
        docker([*args, "."], echo=echo, cwd=root, executable=executable, env=env, stdout=docker_stdout)
    return tag


# --------------------------------------------------------------------------------------------
# This machine's pip configuration, for the build only


def read_pip_config(python: str = sys.executable) -> dict[str, str]:
    """`pip config list` as one setting per name: the files' `global`/`install` values, PIP_* variables over them."""
    result = subprocess.run([python, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False)
    return parse_pip_config(result.stdout if result.returncode == 0 else "")


def parse_pip_config(text: str) -> dict[str, str]:
    """Lines like `global.index-url='…'` and `:env:.cert='…'` as {name: value}; variables win."""
    files: dict[str, str] = {}
    variables: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        scope, _, name = key.rpartition(".")
        if not sep or scope not in ("global", "install", ":env:"):
            continue
        (variables if scope == ":env:" else files)[name] = value.strip().strip("'\"")
    return {**files, **variables}


@contextlib.contextmanager
def serve_pip_locations(settings: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The settings with every local folder or file they name (plain path or file:// URL) replaced by an
    http://127.0.0.1 URL a read-only server answers while the context lasts; the CA bundle becomes its mount path.

    The URL's path is the file system path; the server answers only below what the settings name (an index's
    parent folder too: a simple index links its files as `../../files/…`)."""
    roots: list[Path] = []
    served: dict[str, str] = {}
    for name in PIP_LOCATION_KEYS:
        if settings.get(name):
            served[name] = " ".join(_served_location(item, roots, index=name.endswith("index-url")) for item in settings[name].split())
    for name in PIP_PLAIN_KEYS:
        if settings.get(name):
            served[name] = settings[name]
    if settings.get("cert"):
        served["cert"] = PIP_CERT_TARGET
    if not roots:
        yield served
        return
    handler = functools.partial(_LocationsHandler, roots=roots)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="pip-locations", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {name: value.replace("@LOCAL@", base) for name, value in served.items()}
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _served_location(item: str, roots: list[Path], *, index: bool) -> str:
    parsed = urllib.parse.urlparse(item)
    if parsed.scheme not in ("", "file"):
        return item
    path = Path(urllib.parse.unquote(parsed.path) if parsed.scheme else item).resolve()
    roots.append(path.parent if index else path)
    return "@LOCAL@" + urllib.parse.quote(str(path)) + ("/" if path.is_dir() else "")


class _LocationsHandler(http.server.SimpleHTTPRequestHandler):
    """GET/HEAD of a file system path below one of the roots (directory listings included); nothing else."""

    def __init__(self, *args: object, roots: Sequence[Path], **kwargs: object) -> None:
        self.roots = roots
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def translate_path(self, path: str) -> str:
        wanted = Path(urllib.parse.unquote(urllib.parse.urlparse(path).path))
        if ".." in wanted.parts or not any(wanted == root or wanted.is_relative_to(root) for root in self.roots):
            return "/nonexistent"
        return str(wanted)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


def pip_conf_text(settings: Mapping[str, str]) -> str:
    """A pip.conf holding the settings in its [global] section."""
    return "[global]\n" + "".join(f"{name} = {value}\n" for name, value in sorted(settings.items()))


def push_image(tag: str | None = None, *, echo: Callable[[str], None] = print, docker_stdout: int | None = None) -> str:
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
    docker(["login", "--username", user, "--password-stdin", registry], echo=echo, input_text=password, stdout=docker_stdout)
    docker(["tag", tag, uri], echo=echo, stdout=docker_stdout)
    docker(["push", uri], echo=echo, stdout=docker_stdout)
    return uri
