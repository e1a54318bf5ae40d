"""Re-export a run from its newest complete checkpoint: `python -m rlrunner.entry.export_run RUN_DIR [--format F]`.

`--format mlagents` (default) writes ML-Agents' `<Behavior>.onnx` and `unity_models.json` into the run's
model dir; `--format serving` rewrites `policy.onnx`, `policy.json` and `experiment.json`. The experiment
comes from the model dir's `experiment.json`; the behaviours from the checkpoint's manifest, or, for a
checkpoint written before rlrunner recorded them, from the player itself (started once, one area).
`rlrunner export` runs this module; it prints one JSON object on stdout, or one line on stderr and
exits with rlrunner's code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rlrunner.contract.checkpoints import CheckpointStore
from rlrunner.contract.errors import EXIT_INFRA, EXIT_OK, RlrunnerError, UsageError
from rlrunner.contract.run_dir import RunDir
from rlrunner.schema import Experiment
from rlrunner.unity.errors import UnityEnvError

FORMATS = ("mlagents", "serving")


def export_run(run_dir: Path, export_format: str) -> dict[str, Any]:
    """Export the run's newest complete checkpoint in `export_format`; return what was written."""
    from pydantic import ValidationError

    from rlrunner.entry.train_unity import action_postprocessing
    from rlrunner.policy import read_experiment

    run = RunDir(run_dir)
    checkpoint = CheckpointStore(run.checkpoints, keep=1).newest()
    if checkpoint is None:
        raise UsageError(f"{run_dir}: no complete checkpoint in {run.checkpoints}")
    data = read_experiment(run.model)  # a PolicyError (usage) names the missing file
    try:
        experiment = Experiment.model_validate(data)
    except ValidationError as error:
        raise UsageError(f"{run.model / 'experiment.json'}: not an experiment of this rlrunner: {error}") from None
    post = action_postprocessing(experiment)
    if export_format == "serving":
        from rlrunner.contract.model_dir import EXPERIMENT_FILE, METADATA_FILE, ONNX_FILE
        from rlrunner.entry.export import export_policy

        export_policy(checkpoint.path, run.model, experiment=data, post=post)
        files = [str(run.model / name) for name in (ONNX_FILE, METADATA_FILE, EXPERIMENT_FILE)]
        return {"format": export_format, "checkpoint": str(checkpoint.path), "files": files}
    from rlrunner.entry.export_mlagents import export_from_checkpoint, recorded_behaviors

    behaviors = recorded_behaviors(checkpoint.path)
    probed = behaviors is None
    if behaviors is None:
        behaviors = probe_behaviors(experiment)
    models = export_from_checkpoint(checkpoint.path, behaviors, run.model, environment=experiment.environment, post=post)
    return {
        "format": export_format,
        "checkpoint": str(checkpoint.path),
        "behaviors_from": "player" if probed else "checkpoint",
        "files": [str(run.model / model["file"]) for model in models.values()],
    }


def probe_behaviors(experiment: Experiment) -> Any:
    """The scene's behaviours, from the player the experiment names (a checkpoint that does not record them)."""
    from rlrunner.entry import algorithm as algo_config
    from rlrunner.entry.evaluate import recorded_executable
    from rlrunner.entry.train_unity import probe_environment

    executable = recorded_executable(experiment.environment)
    return probe_environment(algo_config.env_config(experiment, executable, log_dir=None)).behaviors


def main(argv: Sequence[str] | None = None) -> int:
    """Export; print the result as JSON on stdout, or one line on stderr and an exit code."""
    parser = argparse.ArgumentParser(prog="export_run", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--format", choices=FORMATS, default="mlagents")
    args = parser.parse_args(argv)
    try:
        result = export_run(args.run_dir, args.format)
    except RlrunnerError as error:
        print(f"rlrunner: error: {error}", file=sys.stderr, flush=True)
        return error.exit_code
    except UnityEnvError as error:  # the player, started to read the behaviours
        print(f"rlrunner: error: environment: {error}", file=sys.stderr, flush=True)
        return EXIT_INFRA
    print(json.dumps(result), flush=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
