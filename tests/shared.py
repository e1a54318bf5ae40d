"""What test modules share: the project root, the bundled experiments, the quick-training overrides and a local run.

(`tests/` is on sys.path for every test: pytest puts the root conftest's folder there.)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rlrunner.backends import local
from rlrunner.loader import load_spec
from rlrunner.runner import plan

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
BASIC_PPO = EXPERIMENTS / "basic_ppo.yaml"
CUSTOM_MODEL = EXPERIMENTS / "custom_model.yaml"
QUICK_TRAINING = (
    "algorithm.hyperparameters.train_batch_size_per_learner=250",
    "algorithm.hyperparameters.minibatch_size=125",
    "algorithm.hyperparameters.num_epochs=2",
    "algorithm.model.fcnet_hiddens=[32]",
    "training.evaluation_episodes=3",
    "training.envs_per_env_runner=1",
    "training.stop.evaluation_return_mean=null",
)
"""`--set` overrides that make a Basic run take seconds: small batches, a small net, a short evaluation and
none after each iteration (the tests choose their stop); one player per env runner, so that every iteration samples exactly 250 steps (with K players RLlib's next-step
autoreset lets an iteration sample up to K - 1 steps more)."""


def run_local_spec(spec: Path, tmp_path: Path, sessions: list[int], *overrides: str) -> tuple[Any, Path, str]:
    """`rlrunner run SPEC --local --set ...` into `tmp_path/run`, its launcher's session in `sessions`; (result, run dir, output)."""
    experiment_spec, document = load_spec(spec, overrides)
    job = plan(experiment_spec, spec_dir=document.base_dir, local=True)
    run_dir = tmp_path / "run"
    stream = io.StringIO()
    result = local.run_local(
        experiment_spec,
        job,
        spec_dir=document.base_dir,
        run_dir=run_dir,
        stream=stream,
        on_start=lambda p: sessions.append(p.pid),
    )
    return result, run_dir, stream.getvalue()
