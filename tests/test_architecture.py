"""The layout's import rules (pyproject.toml's import-linter contracts) hold, and every package says what it may import."""

from __future__ import annotations

import importlib
import pkgutil
import shutil
import subprocess

import pytest
from shared import ROOT

import rlrunner


def test_import_rules_hold() -> None:
    linter = shutil.which("lint-imports")
    assert linter is not None, "import-linter is a dev dependency (pip install -e '.[dev]')"
    result = subprocess.run([linter, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


PACKAGES = sorted(name for _, name, is_package in pkgutil.walk_packages(rlrunner.__path__, "rlrunner.") if is_package)


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_says_what_lives_there(package: str) -> None:
    doc = importlib.import_module(package).__doc__ or ""
    assert len(doc.split()) >= 25, f"{package}: its docstring should say what lives there and what it may import"
