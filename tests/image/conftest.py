"""The image, built here: container/Dockerfile on a base made from Debian's packages, once per test session.

`image` builds it with `rlrunner image build` (cached layers: seconds when nothing changed) on
`rlrunner-base:bookworm` (container/base-image.sh makes it when missing). The tests skip, saying why, only
when no Docker daemon answers. `containers` names the containers a test starts and removes what is left.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest
from shared import ROOT

from rlrunner.container import build_image
from rlrunner.contract.sagemaker_container import DEFAULT_IMAGE

BASE_IMAGE = "rlrunner-base:bookworm"
IMAGE = DEFAULT_IMAGE


def docker_unavailable() -> str | None:
    """Why no image test can run here, or None."""
    if shutil.which("docker") is None:
        return "docker is not installed (.ci/run installs Debian's docker.io)"
    info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"no Docker daemon answers (`docker info`: {info.stderr.strip().splitlines()[-1] if info.stderr.strip() else info.returncode}); .ci/run starts dockerd"
    return None


def image_exists(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0


@pytest.fixture(scope="session")
def image() -> str:
    """The rlrunner image, built from this checkout."""
    reason = docker_unavailable()
    if reason is not None:
        pytest.skip(reason)
    if not image_exists(BASE_IMAGE):
        subprocess.run([str(ROOT / "container" / "base-image.sh"), BASE_IMAGE], check=True, timeout=1200)
    build_image(IMAGE, python_image=BASE_IMAGE, echo=lambda _line: None)
    return IMAGE


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names for the containers a test starts (append them); whatever of them is left is removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)
