"""RLlib's real configuration keys, per algorithm, without importing Ray.

`rllib_keys.json` is generated from the installed RLlib (`python -m rlrunner.hyperparameters`);
a test regenerates it and fails when the installed RLlib disagrees with the checked-in table.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

TABLE_PATH = Path(__file__).with_name("rllib_keys.json")

ALGORITHMS = ("PPO", "APPO", "IMPALA", "DQN", "SAC")

# Old-API-stack names and what replaced them on RLlib's new API stack.
RENAMED = {
    "sgd_minibatch_size": "minibatch_size",
    "num_sgd_iter": "num_epochs",
    "train_batch_size": "train_batch_size_per_learner",
    "num_workers": "training.env_runners",
    "num_rollout_workers": "training.env_runners",
    "num_envs_per_worker": "training.envs_per_env_runner",
    "recreate_failed_workers": "training.restart_failed_env_runners",
    "recreate_failed_env_runners": "training.restart_failed_env_runners",
    "ignore_worker_failures": "ignore_env_runner_failures",
    "num_gpus": "num_gpus_per_learner",
    "num_learner_workers": "num_learners",
}

# Keys rlrunner sets from other parts of the spec; users set them there.
MANAGED = {
    "env": "environment",
    "env_config": "environment",
    "seed": "training.seed",
    "num_env_runners": "training.env_runners",
    "num_envs_per_env_runner": "training.envs_per_env_runner",
    "restart_failed_env_runners": "training.restart_failed_env_runners",
    "model": "algorithm.model",
    "model_config": "algorithm.model",
    "rl_module_spec": "algorithm.model.module",
    "framework": "(rlrunner always uses torch)",
    "enable_rl_module_and_learner": "(rlrunner always uses the new API stack)",
    "enable_env_runner_and_connector_v2": "(rlrunner always uses the new API stack)",
    "api_stack": "(rlrunner always uses the new API stack)",
    "observation_space": "(taken from the environment)",
    "action_space": "(taken from the environment)",
    "policies": "(single-agent: one policy)",
    "policy_mapping_fn": "(single-agent: one policy)",
    "policies_to_train": "(single-agent: one policy)",
    "checkpoint_trainable_policies_only": "(checkpoints are managed by rlrunner)",
}

# Value ranges RLlib does not check itself: (lower, lower_inclusive, upper, upper_inclusive).
RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "lr": (0.0, False, None, False),
    "gamma": (0.0, True, 1.0, True),
    "lambda": (0.0, True, 1.0, True),
    "kl_coeff": (0.0, True, None, False),
    "kl_target": (0.0, True, None, False),
    "clip_param": (0.0, False, None, False),
    "vf_clip_param": (0.0, False, None, False),
    "vf_loss_coeff": (0.0, True, None, False),
    "entropy_coeff": (0.0, True, None, False),
    "grad_clip": (0.0, False, None, False),
    "tau": (0.0, True, 1.0, True),
    "num_epochs": (1, True, None, False),
    "minibatch_size": (1, True, None, False),
    "train_batch_size_per_learner": (1, True, None, False),
    "rollout_fragment_length": (1, True, None, False),
    "n_step": (1, True, None, False),
    "num_learners": (0, True, None, False),
    "target_network_update_freq": (0, True, None, False),
}



def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "dict"
    return "any"


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def generate_table() -> dict[str, Any]:
    """Read every supported algorithm's config keys from the installed RLlib (imports Ray)."""
    import dataclasses
    import importlib

    import ray
    from ray._common.deprecation import DEPRECATED_VALUE
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    algorithms: dict[str, dict[str, str]] = {}
    for name in ALGORITHMS:
        module = importlib.import_module(f"ray.rllib.algorithms.{name.lower()}")
        config_class = getattr(module, f"{name}Config")
        defaults = config_class().to_dict()
        for key in [
            key
            for key in defaults
            if key.startswith("_") and isinstance(getattr(config_class, key[1:], None), property)
        ]:
            defaults[key[1:]] = defaults.pop(key)
        keys = {}
        for key, value in sorted(defaults.items()):
            if key.startswith(("_", "callbacks")) or key in MANAGED or key in RENAMED:
                continue
            if isinstance(value, int) and not isinstance(value, bool) and value == DEPRECATED_VALUE:
                continue
            if value is not None and not _is_json(value) and not isinstance(value, tuple):
                continue
            keys[key] = "float" if "gpus" in key else _kind(value)
        algorithms[name] = keys
    model = {
        field.name: _kind(field.default) if field.default is not dataclasses.MISSING else _kind(field.default_factory())  # type: ignore[operator]
        for field in dataclasses.fields(DefaultModelConfig)
    }
    return {"ray_version": ray.__version__, "algorithms": algorithms, "model": model}


@cache
def load_table() -> dict[str, Any]:
    """The checked-in table of RLlib keys."""
    table: dict[str, Any] = json.loads(TABLE_PATH.read_text())
    return table


def main() -> None:
    """Regenerate the checked-in table from the installed RLlib."""
    TABLE_PATH.write_text(json.dumps(generate_table(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {TABLE_PATH}", file=sys.stderr)


if __name__ == "__main__":
    main()
