"""The model directory (`/opt/ml/model`, a run's `model/`): one set of names for its writer and its readers.

The launcher's export writes `policy.onnx` (input `obs` float32 `[batch, *obs_shape]`; outputs
`actions`, the greedy actions, and `action_dist_inputs`), `policy.json` (format, spaces, names) and
`experiment.json` (the decoded experiment); its end-of-run evaluation writes `evaluation.json`.
A multi-policy run (several behaviours) writes that set once per policy under `policies/<policy>/`
and `policies.json`, which maps every policy to the behaviours it serves (names as the scene reports them).
SageMaker uploads the folder as model.tar.gz; `rlrunner evaluate`, `serve` and `deploy` read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlrunner.contract.run_dir import atomic_write_json, read_json
from rlrunner.schema import TrainingSpec

FORMAT = 1
"""Version of policy.json."""
ONNX_FILE = "policy.onnx"
METADATA_FILE = "policy.json"
EXPERIMENT_FILE = "experiment.json"
EVALUATION_FILE = "evaluation.json"
POLICIES_FILE = "policies.json"
"""A multi-policy model dir: {"format": 1, "policies": {policy: {"dir": "policies/<policy>", "behaviors": [...]}}}."""
POLICIES_DIR = "policies"
INPUT_NAME = "obs"
ACTIONS = "actions"
DIST_INPUTS = "action_dist_inputs"
OUTPUT_NAMES = (ACTIONS, DIST_INPUTS)
DEFAULT_EVALUATION_EPISODES: int = TrainingSpec.model_fields["evaluation_episodes"].default
"""Episodes of the end-of-run evaluation when the experiment does not say (training.evaluation_episodes)."""


def write_evaluation(result: Mapping[str, Any], model_dir: Path) -> Path:
    """Write `evaluation.json` into the model dir atomically; return its path."""
    return atomic_write_json(model_dir / EVALUATION_FILE, dict(result))


def read_evaluation(model_dir: Path) -> dict[str, Any] | None:
    """The end-of-run evaluation a model dir holds, or None."""
    return read_json(model_dir / EVALUATION_FILE)


def locate_model_dir(path: Path) -> Path:
    """The model dir of a run dir (`<run>/model/`), or the path itself."""
    model = path / "model"
    return model if (model / ONNX_FILE).is_file() or (model / POLICIES_FILE).is_file() else path
