"""Build-time smoke test of the image (and of tests/backends/test_container.py, which runs it without Docker).

Plans a sample experiment, hands its encoded environment variables to
`python -m rlrunner.entry.train_unity --print-config` exactly as SageMaker would, and checks that the launcher
decodes the same experiment; then checks that the heavy dependencies import and that the `train` (SageMaker
toolkit) and `rlrunner` commands exist.

    python container/smoke_test.py [SPEC] [--quick]     # SPEC defaults to container/smoke-experiment.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_SPEC = HERE / "smoke-experiment.yaml"
HEAVY_MODULES = ("ray.rllib", "torch", "mlagents_envs.environment", "onnxruntime", "gymnasium", "sagemaker_training")
COMMANDS = ("rlrunner", "train")


def check_print_config(spec_path: Path) -> None:
    """The launcher decodes the planned experiment from the planned environment variables."""
    from rlrunner.loader import load_spec
    from rlrunner.runner import plan

    spec, document = load_spec(spec_path)
    job = plan(spec, spec_dir=document.base_dir, environ={})
    env = {key: value for key, value in os.environ.items() if not key.startswith("RLRUNNER_")}
    env.update(job.environment)
    result = subprocess.run(
        [sys.executable, "-m", "rlrunner.entry.train_unity", "--print-config"],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"smoke test: --print-config exited {result.returncode}: {result.stderr.strip()[-2000:]}")
    printed = json.loads(result.stdout)
    if printed != job.experiment:
        raise SystemExit(f"smoke test: --print-config printed another experiment:\n{result.stdout[:2000]}")
    print(f"smoke test: --print-config decoded run {job.run_id} ({len(job.environment)} variables)")


def check_imports() -> None:
    """The training dependencies import (each in a fresh interpreter, as the job would)."""
    for module in HEAVY_MODULES:
        result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"smoke test: import {module} failed: {result.stderr.strip()[-1000:]}")
    print(f"smoke test: imported {', '.join(HEAVY_MODULES)}")


def check_commands() -> None:
    """The console scripts the container's entrypoint runs are on PATH next to this Python."""
    bindir = Path(sys.executable).parent
    for name in COMMANDS:
        if not (bindir / name).exists() and shutil.which(name) is None:
            raise SystemExit(f"smoke test: command {name!r} is not installed")
    print(f"smoke test: commands {', '.join(COMMANDS)} present")


def main(argv: list[str] | None = None) -> int:
    """Run the checks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", nargs="?", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--quick", action="store_true", help="only the --print-config round trip")
    args = parser.parse_args(argv)
    check_print_config(args.spec)
    if not args.quick:
        check_imports()
        check_commands()
    return 0


if __name__ == "__main__":
    sys.exit(main())
