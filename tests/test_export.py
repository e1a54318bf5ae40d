"""`rlrunner run --local` leaves `Basic.onnx` (ML-Agents' format) beside the serving model; `rlrunner export` re-exports.

The real path: the README's main job (shortened), the real launcher, Ray and the bundled Basic player.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from shared import BASIC_PPO, QUICK_TRAINING
from unity_loader import check_against_unity_loader

from rlrunner.cli import main
from rlrunner.contract.checkpoints import MANIFEST, CheckpointStore
from rlrunner.contract.unity_model import UnityBehavior, behaviors_from_meta, unity_model_files

BASIC = UnityBehavior("Basic?team=0", ((20,),), 0, (3,))


@pytest.fixture(scope="module")
def basic_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("export") / "run"
    sets = [arg for override in (*QUICK_TRAINING, "training.stop.timesteps=500") for arg in ("--set", override)]
    result = CliRunner().invoke(main, ["run", str(BASIC_PPO), "--local", "--run-dir", str(run_dir), *sets])
    return run_dir, result.output


def test_local_run_leaves_the_unity_model_beside_the_serving_model(basic_run: tuple[Path, str]) -> None:
    import onnxruntime
    import torch

    from rlrunner.entry.export import load_rl_module

    run_dir, output = basic_run
    model = run_dir / "model"
    assert f"Unity model (Basic): {model / 'Basic.onnx'}" in output.splitlines(), output[-3000:]
    assert (model / "policy.onnx").is_file() and unity_model_files(model) == {"Basic": model / "Basic.onnx"}
    final = CheckpointStore(run_dir / "checkpoints", keep=9).newest()
    assert final is not None and behaviors_from_meta(final.meta) == [BASIC]  # recorded for a later export

    session = onnxruntime.InferenceSession(str(model / "Basic.onnx"), providers=["CPUExecutionProvider"])
    check_against_unity_loader(session, BASIC)
    module = load_rl_module(final.path)
    rng = np.random.default_rng(1)
    obs = np.concatenate([np.eye(20, dtype=np.float32)[rng.integers(0, 20, 500)], rng.normal(size=(500, 20)).astype(np.float32)])
    (actions,) = session.run(["deterministic_discrete_actions"], {"obs_0": obs, "action_masks": np.ones((1000, 3), np.float32)})
    with torch.no_grad():
        logits = module.forward_inference({"obs": torch.from_numpy(obs)})["action_dist_inputs"].numpy()
    np.testing.assert_array_equal(actions[:, 0], logits.argmax(axis=1))


def test_export_command_rewrites_the_unity_model_also_for_an_old_checkpoint(basic_run: tuple[Path, str]) -> None:
    run_dir, _ = basic_run
    model = run_dir / "model"
    unity = model / "Basic.onnx"
    before = unity.read_bytes()
    unity.unlink()
    result = CliRunner().invoke(main, ["export", str(run_dir), "--output", "json"])
    assert result.exit_code == 0, result.output
    exported = json.loads(result.output)
    assert exported["files"] == [str(unity)] and exported["behaviors_from"] == "checkpoint"
    assert unity.read_bytes() == before

    # a checkpoint written before the manifest recorded the behaviours: the player is asked once
    final = CheckpointStore(run_dir / "checkpoints", keep=9).newest()
    assert final is not None
    manifest = json.loads((final.path / MANIFEST).read_text())
    del manifest["meta"]["behaviors"]
    (final.path / MANIFEST).write_text(json.dumps(manifest))
    unity.unlink()
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "mlagents", "--output", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["behaviors_from"] == "player" and unity.read_bytes() == before

    serving = model / "policy.onnx"
    serving.unlink()
    result = CliRunner().invoke(main, ["export", str(run_dir), "--format", "serving"])
    assert result.exit_code == 0, result.output
    assert f"wrote {serving}" in result.output.splitlines() and serving.is_file()


def test_export_without_a_checkpoint_says_where(tmp_path: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "rlrunner.entry.export_run", str(tmp_path)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    assert (finished.returncode, finished.stdout) == (2, "")
    assert finished.stderr == f"rlrunner: error: {tmp_path}: no complete checkpoint in {tmp_path / 'checkpoints'}\n"
    assert CliRunner().invoke(main, ["export", str(tmp_path)]).exit_code == 2
