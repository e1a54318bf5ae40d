"""The bundled VisualBasic player: its camera rendering, and its images through the real mlagents_envs client."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from mlagents_envs.base_env import ActionTuple
from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto
from mlagents_envs.rpc_utils import _observation_to_np_array

from rlrunner.envs import resolve_environment
from rlrunner.envs.visual_basic.player import BEHAVIOR_NAME, CHANNELS, HEIGHT, WIDTH, camera_observation, render
from rlrunner.unity.launch import LaunchOptions, launch_unity

OPTIONS = LaunchOptions(
    base_port=7350, no_graphics=True, player_args=(), time_scale=20.0, parameters={}, timeout_s=30.0, num_areas=2, seed=0, log_dir=None
)


def test_render_draws_agent_and_goals_one_pixel_each() -> None:
    image = np.array(render(10, 7, 17))
    assert image.shape == (HEIGHT, WIDTH, CHANNELS) == (1, 21, 3)
    assert np.argwhere(image[0, :, 0]).ravel().tolist() == [10]  # red: the agent
    assert np.argwhere(image[0, :, 1]).ravel().tolist() == [7]  # green: the small goal
    assert np.argwhere(image[0, :, 2]).ravel().tolist() == [17]  # blue: the large goal
    assert image.sum() == 3 * 255
    on_goal = np.array(render(17, 7, 17))
    assert on_goal[0, 17].tolist() == [255, 0, 255]  # the agent on the large goal: both drawn


@pytest.mark.parametrize("compressed", [True, False])
def test_camera_observation_decodes_with_mlagents(compressed: bool) -> None:
    proto = ObservationProto.FromString(camera_observation(render(20, 0, 5), compressed))
    assert list(proto.shape) == [1, 21, 3]
    assert proto.compression_type == (1 if compressed else 0)
    array = _observation_to_np_array(proto, (1, 21, 3))
    expected = np.zeros((1, 21, 3), np.float32)
    expected[0, 20, 0] = expected[0, 0, 1] = expected[0, 5, 2] = 1.0
    np.testing.assert_array_equal(array, expected)


@pytest.mark.parametrize("player_args", [(), ("--uncompressed",)], ids=["png", "float"])
def test_visual_basic_through_the_real_client(player_args: tuple[str, ...]) -> None:
    env = launch_unity(resolve_environment("VisualBasic"), dataclasses.replace(OPTIONS, player_args=player_args))
    try:
        env.reset()
        spec = env.behavior_specs[BEHAVIOR_NAME]
        assert [o.shape for o in spec.observation_specs] == [(1, 21, 3)]
        decision, _ = env.get_steps(BEHAVIOR_NAME)
        image = decision.obs[0]
        assert image.shape == (2, 1, 21, 3)
        assert np.argwhere(image[0, 0, :, 0]).ravel().tolist() == [10]  # Basic's start position
        for _ in range(7):  # right, right, ...: the large goal at 17 after 7 moves
            env.set_actions(BEHAVIOR_NAME, ActionTuple(discrete=np.full((2, 1), 2, np.int32)))
            env.step()
            decision, terminal = env.get_steps(BEHAVIOR_NAME)
        assert len(terminal) == 2 and terminal.obs[0][0, 0, 17].tolist() == [1.0, 0.0, 1.0]
        assert terminal.reward == pytest.approx([0.99, 0.99])
        assert np.argwhere(decision.obs[0][0, 0, :, 0]).ravel().tolist() == [10]  # a new episode
    finally:
        env.close()


@pytest.mark.parametrize("player_args", [("--vector",), ("--vector", "--uncompressed")], ids=["png", "float"])
def test_visual_basic_vector_option_adds_basics_one_hot_beside_the_camera(player_args: tuple[str, ...]) -> None:
    env = launch_unity(resolve_environment("VisualBasic"), dataclasses.replace(OPTIONS, player_args=player_args))
    try:
        env.reset()
        spec = env.behavior_specs[BEHAVIOR_NAME]
        assert [o.shape for o in spec.observation_specs] == [(1, 21, 3), (20,)]  # CameraSensor, then VectorSensor
        decision, _ = env.get_steps(BEHAVIOR_NAME)
        image, one_hot = decision.obs
        assert image.shape == (2, 1, 21, 3) and one_hot.shape == (2, 20)
        assert np.argwhere(image[0, 0, :, 0]).ravel().tolist() == [10] and np.argwhere(one_hot[0]).ravel().tolist() == [10]
        env.set_actions(BEHAVIOR_NAME, ActionTuple(discrete=np.array([[1], [2]], np.int32)))  # left, right
        env.step()
        decision, _ = env.get_steps(BEHAVIOR_NAME)
        assert [np.argwhere(row).ravel().tolist() for row in decision.obs[1]] == [[9], [11]]
        assert [np.argwhere(img[0, :, 0]).ravel().tolist() for img in decision.obs[0]] == [[9], [11]]
    finally:
        env.close()
