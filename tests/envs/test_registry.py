"""Registry names: bundled first, then ML-Agents' registry machinery, never the network on import."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from rlrunner.envs import BUNDLED_ENVIRONMENTS, EnvironmentNotFoundError, resolve_environment


def test_resolve_environment_basic_is_bundled_executable() -> None:
    path = resolve_environment("Basic")
    assert path == BUNDLED_ENVIRONMENTS["Basic"] and path.name == "Basic.x86_64" and path.is_file()


def test_import_registry_loads_no_heavy_module() -> None:
    code = (
        "import sys, rlrunner.envs, rlrunner.envs.registry; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'mlagents_envs', 'ray', 'torch', 'grpc', 'numpy'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _local_registry(tmp_path: Path) -> object:
    from mlagents_envs.registry import UnityEnvRegistry

    build = tmp_path / "Fake"
    build.mkdir()
    (build / "Fake.x86_64").write_text("#!/bin/sh\n")
    archive = tmp_path / "Fake.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(build / "Fake.x86_64", "Fake/Fake.x86_64")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(
        "environments:\n  - Fake:\n      expected_reward: 1.0\n      description: a test build\n"
        f"      linux_url: file://{archive}\n      darwin_url: null\n      win_url: null\n"
    )
    registry = UnityEnvRegistry()
    registry.register_from_yaml(str(manifest))
    return registry


def test_resolve_environment_falls_back_to_mlagents_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlagents_envs.registry

    import rlrunner.unity.launch  # noqa: F401  (imports mlagents_envs with its protobuf warnings filtered)

    monkeypatch.setattr(mlagents_envs.registry, "default_registry", _local_registry(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    path = resolve_environment("Fake")
    assert path.name == "Fake.x86_64" and path.is_file() and str(path).startswith(str(tmp_path / "tmp"))
    with pytest.raises(EnvironmentNotFoundError) as excinfo:
        resolve_environment("Nope")
    assert str(excinfo.value) == (
        "environment.name: 'Nope' is neither bundled (Basic, Ball, Duo, VisualBasic) nor in ML-Agents' default registry"
    )
