"""A camera scene end to end: `rlrunner run --local` on experiments/visual_basic_ppo.yaml through the real
VisualBasic player (PNG-compressed 1x21 RGB images), mlagents_envs and Ray, with RLlib's CNN encoder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from shared import EXPERIMENTS, QUICK_TRAINING, run_local_spec

from rlrunner.contract.checkpoints import CheckpointStore
from rlrunner.contract.errors import EXIT_INVALID
from rlrunner.processes import run_processes

VISUAL = EXPERIMENTS / "visual_basic_ppo.yaml"


def _op_types(path: Path) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")
def test_run_local_trains_the_camera_scene_with_a_cnn(tmp_path: Path, sessions: list[int]) -> None:
    result, run_dir, output = run_local_spec(VISUAL, tmp_path, sessions, *QUICK_TRAINING, "training.stop.timesteps=500", "training.evaluation_episodes=2")
    assert result.exit_code == 0, output[-4000:]
    log = (run_dir / "launcher.log").read_text()
    assert "CNN encoder: conv_filters [[16, [1, 3], 1], [32, [1, 3], [1, 2]]] chosen for the small 1x21x3 images" in log

    # the trained RLModule's encoder is convolutional
    import onnxruntime
    import torch

    from rlrunner.entry.export import load_rl_module

    final = CheckpointStore(run_dir / "checkpoints", keep=3).newest()
    assert final is not None and final.progress.timesteps == 500
    module = load_rl_module(final.path)
    convs = [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs == [16, 32, 16, 32]  # the actor's and the critic's encoders (PPO's vf_share_layers: false)

    # the serving ONNX takes the (1, 21, 3) image and acts greedily as the RLModule on 1,000 images
    model = run_dir / "model"
    assert "Conv" in _op_types(model / "policy.onnx")
    rng = np.random.default_rng(0)
    images = (rng.random((1000, 1, 21, 3)) < 0.1).astype(np.float32)
    session = onnxruntime.InferenceSession(str(model / "policy.onnx"), providers=["CPUExecutionProvider"])
    (actions,) = session.run(["actions"], {"obs": images})
    with torch.no_grad():
        logits = module.forward_inference({"obs": torch.from_numpy(images)})["action_dist_inputs"]
    np.testing.assert_array_equal(actions, logits.numpy().argmax(axis=-1))

    # ML-Agents' model for Unity: the camera input channels first, as Unity feeds it
    unity = onnxruntime.InferenceSession(str(model / "VisualBasic.onnx"), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape[1:]) for i in unity.get_inputs()][0] == ("obs_0", [3, 1, 21])
    assert "Conv" in _op_types(model / "VisualBasic.onnx")

    # the serving contract takes the image as nested lists, and says which shape it expects otherwise
    from rlrunner.policy import OnnxPolicy
    from rlrunner.serving import protocol

    policy = OnnxPolicy.from_dir(model)
    answer = json.loads(protocol.handle(policy, json.dumps({"observations": images[:4].tolist()}).encode(), "application/json"))
    assert answer["actions"] == actions[:4].tolist()
    with pytest.raises(protocol.RequestError, match=r"expected shape \[batch, 1, 21, 3\], got \[1, 20\]"):
        protocol.handle(policy, json.dumps({"observations": [[0.0] * 20]}).encode(), "application/json")

    # the launcher's greedy evaluation ran through the player
    evaluation = json.loads((model / "evaluation.json").read_text())
    assert evaluation["episodes"] == 2 and len(evaluation["returns"]) == 2
    record = json.loads((run_dir / "run.json").read_text())
    assert record["exit_code"] == 0 and not run_processes(sessions=[record["launcher_pid"]])


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ("algorithm.model.conv_filters=[[16, [3, 3], 1, valid]]", "algorithm.model"),
        ("behaviors={VisualBasic: {model: {conv_filters: [[16, [3, 3], 1, valid]]}}}", "behaviors.VisualBasic.model"),
    ],
    ids=["single", "per-behaviour"],
)
def test_run_local_conv_filters_that_do_not_fit_the_image_exit_3(tmp_path: Path, sessions: list[int], override: str, where: str) -> None:
    result, run_dir, output = run_local_spec(VISUAL, tmp_path, sessions, *QUICK_TRAINING, override)
    assert result.exit_code == EXIT_INVALID, output[-4000:]
    failure = (run_dir / "output" / "failure").read_text().strip()
    assert failure.startswith(f"{where}.conv_filters[0] [16, [3, 3], 1, 'valid']: does not fit the 1x21x3 image observation")
    assert "Traceback" not in (run_dir / "launcher.log").read_text()


@pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")
def test_run_local_camera_scene_on_the_multi_agent_path_gets_the_cnn_per_policy(tmp_path: Path, sessions: list[int]) -> None:
    import torch

    from rlrunner.entry.export import load_rl_module

    overrides = (*QUICK_TRAINING, "training.stop.timesteps=250", "training.evaluation_episodes=1", "behaviors={VisualBasic: {}}")
    result, run_dir, output = run_local_spec(VISUAL, tmp_path, sessions, *overrides)
    assert result.exit_code == 0, output[-4000:]
    log = (run_dir / "launcher.log").read_text()
    assert "multi-agent path: 1 behaviour(s)" in log
    assert "VisualBasic: CNN encoder: conv_filters [[16, [1, 3], 1], [32, [1, 3], [1, 2]]] chosen" in log
    final = CheckpointStore(run_dir / "checkpoints", keep=3).newest()
    assert final is not None
    module = load_rl_module(final.path, "VisualBasic")
    assert [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)] == [16, 32, 16, 32]
    assert (run_dir / "model" / "VisualBasic.onnx").is_file()
    evaluation = json.loads((run_dir / "model" / "evaluation.json").read_text())
    assert evaluation["behaviors"]["VisualBasic?team=0"]["episodes"] == 1
