"""Install rlrunner into the current Python the way the container image does (one recipe, two layers).

    python container/install.py deps   # third-party dependencies only: pyproject.toml + container/requirements.txt
    python container/install.py code   # rlrunner's wheel into dist/, installed (no dependency changes), then `pip check`

The Dockerfile runs `deps` after copying only pyproject.toml and this folder (a cached layer that code edits
do not invalidate) and `code` after copying the package; the final stage installs the wheel from dist/. tests/backends/test_container.py runs the same two
steps in a fresh virtual environment. `--dry-run` resolves without installing (prints pip's report path).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_EXTRAS = ("train", "serve")
REQUIREMENTS = ROOT / "container" / "requirements.txt"
DIST = ROOT / "dist"


def dependency_list(pyproject: Path = ROOT / "pyproject.toml", extras: tuple[str, ...] = CONTAINER_EXTRAS) -> list[str]:
    """rlrunner's requirements for the container: the base list plus the container extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    optional = project.get("optional-dependencies", {})
    missing = [extra for extra in extras if extra not in optional]
    if missing:
        raise SystemExit(f"{pyproject}: [project.optional-dependencies] has no {', '.join(missing)}")
    requirements = list(project.get("dependencies", []))
    for extra in extras:
        requirements.extend(optional[extra])
    return requirements


def deps_command(python: str = sys.executable, *, dry_run_report: Path | None = None) -> list[str]:
    """The pip command of the dependency layer."""
    command = [python, "-m", "pip", "install", "--no-input", *dependency_list(), "-r", str(REQUIREMENTS)]
    if dry_run_report is not None:
        command += ["--dry-run", "--ignore-installed", "--report", str(dry_run_report)]
    return command


def wheel_path(pyproject: Path = ROOT / "pyproject.toml") -> Path:
    """The wheel `code` builds (the final image installs it)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return DIST / f"{project['name']}-{project['version']}-py3-none-any.whl"


def code_commands(python: str = sys.executable) -> list[list[str]]:
    """The pip commands of the code layer: build the wheel, install it, check the environment."""
    pip = [python, "-m", "pip"]
    return [
        [*pip, "wheel", "--no-input", "--no-deps", "--wheel-dir", str(DIST), str(ROOT)],
        [*pip, "install", "--no-input", "--no-deps", "--force-reinstall", str(wheel_path())],
        [*pip, "check"],
    ]


def main(argv: list[str] | None = None) -> int:
    """Run one step of the recipe."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=["deps", "code", "list"])
    parser.add_argument("--dry-run", type=Path, metavar="REPORT", help="deps: resolve only, write pip's JSON report")
    args = parser.parse_args(argv)
    if args.step == "list":
        print("\n".join([*dependency_list(), f"-r {REQUIREMENTS.relative_to(ROOT)}"]))
        return 0
    commands = [deps_command(dry_run_report=args.dry_run)] if args.step == "deps" else code_commands()
    for command in commands:
        print("+", " ".join(command), flush=True)
        result = subprocess.run(command, check=False)
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
