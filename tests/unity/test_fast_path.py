"""The wire fast path against mlagents' own protobuf classes and steps_from_proto."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from mlagents_envs.base_env import ActionSpec, BehaviorSpec

from rlrunner.unity.fast_path import RawOutput, StepsPlan, decode_unity_message, fast_steps

F = Any  # the ``fakes`` fixture's type, kept loose for tests


def _agent_info(agent_id: int, done: bool, obs: list[list[float]], **fields: Any) -> Any:
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto

    observations = []
    for values in obs:
        proto = ObservationProto(shape=[len(values)], name="vec")
        proto.float_data.data.extend(values)
        observations.append(proto)
    return AgentInfoProto(id=agent_id, done=done, observations=observations, **fields)


def _assert_steps_equal(fast: Any, slow: Any) -> None:
    for mine, theirs in zip(fast, slow, strict=True):
        assert type(mine) is type(theirs)
        for name in ("reward", "agent_id", "group_reward") + (
            ("interrupted",) if hasattr(theirs, "interrupted") else ()
        ):
            np.testing.assert_array_equal(getattr(mine, name), getattr(theirs, name))
            assert getattr(mine, name).dtype == getattr(theirs, name).dtype, name
        assert list(mine.group_id) == list(theirs.group_id)
        for a, b in zip(mine.obs, theirs.obs, strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype and a.shape == b.shape and a.flags.writeable
        mask_a, mask_b = getattr(mine, "action_mask", None), getattr(theirs, "action_mask", None)
        assert (mask_a is None) == (mask_b is None)
        for a, b in zip(mask_a or [], mask_b or [], strict=True):
            np.testing.assert_array_equal(a, b)


def test_fast_steps_match_steps_from_proto(fakes: F) -> None:
    from mlagents_envs.rpc_utils import steps_from_proto

    behavior = BehaviorSpec([fakes.vector_spec(3), fakes.vector_spec(2)], ActionSpec.create_discrete((2, 3)))
    infos = [
        _agent_info(
            5, False, [[1.0, -2.5, 3.0], [0.0, 1.0]], reward=-0.01, action_mask=[True, False, False, True, False]
        ),
        _agent_info(6, True, [[4.0, 5.0, 6.0], [7.0, 8.0]], reward=1.5, max_step_reached=True, group_id=2),
        _agent_info(7, False, [[0.5, 0.25, 0.0], [1.0, 0.0]], group_reward=0.5, action_mask=[True]),  # wrong size
        _agent_info(8, True, [[0.0, 0.0, 1.0], [9.0, 9.0]], reward=0.1),
    ]
    encoded = [info.SerializeToString() for info in infos]
    _assert_steps_equal(fast_steps(encoded, StepsPlan(behavior)), steps_from_proto(infos, behavior))
    # No agents, and continuous actions (no masks).
    continuous = BehaviorSpec([fakes.vector_spec(3), fakes.vector_spec(2)], ActionSpec.create_continuous(2))
    _assert_steps_equal(fast_steps([], StepsPlan(continuous)), steps_from_proto([], continuous))
    _assert_steps_equal(fast_steps(encoded, StepsPlan(continuous)), steps_from_proto(infos, continuous))


def test_fast_steps_falls_back_or_raises_like_mlagents(fakes: F) -> None:
    from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto

    plan = StepsPlan(BehaviorSpec([fakes.vector_spec(3)], ActionSpec.create_discrete((3,))))
    wrong_size = _agent_info(1, False, [[1.0, 2.0]]).SerializeToString()
    assert fast_steps([wrong_size], plan) is None  # mlagents' own check reports it
    compressed = _agent_info(1, False, [])
    compressed.observations.append(ObservationProto(shape=[3], compression_type=1, compressed_data=b"png"))
    assert fast_steps([compressed.SerializeToString()], plan) is None
    visual = StepsPlan(BehaviorSpec([fakes.visual_spec((2, 2, 1))], ActionSpec.create_discrete((3,))))
    assert fast_steps([_agent_info(1, False, [[0.0] * 4]).SerializeToString()], visual) is None
    with pytest.raises(RuntimeError, match="observations provided had NaN"):
        fast_steps([_agent_info(1, False, [[1.0, float("nan"), 0.0]]).SerializeToString()], plan)
    with pytest.raises(RuntimeError, match="rewards provided had Infinite"):
        fast_steps([_agent_info(1, True, [[1.0, 0.0, 0.0]], reward=float("inf")).SerializeToString()], plan)


def test_raw_output_splits_behaviours_and_defers_initialization_output() -> None:
    from mlagents_envs.communicator_objects.brain_parameters_pb2 import BrainParametersProto
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto


    message = UnityMessageProto()
    message.header.status = 200
    rl_output = message.unity_output.rl_output
    rl_output.agentInfos["A?team=0"].value.extend([_agent_info(1, False, [[1.0]]), _agent_info(2, True, [[2.0]])])
    rl_output.agentInfos["B?team=0"].value.extend([])
    rl_output.side_channel = b"side"
    status, output = decode_unity_message(message.SerializeToString())
    raw = RawOutput.decode(output)
    assert status == 200 and raw is not None and raw.side_channel == b"side"
    assert raw.agent_infos["A?team=0"] == [info.SerializeToString() for info in rl_output.agentInfos["A?team=0"].value]
    assert raw.agent_infos.get("B?team=0", []) == []
    message.unity_output.rl_initialization_output.brain_parameters.append(BrainParametersProto(brain_name="A?team=0"))
    assert RawOutput.decode(decode_unity_message(message.SerializeToString())[1]) is None
    farewell = UnityMessageProto()
    farewell.header.status = 400
    assert decode_unity_message(farewell.SerializeToString())[0] == 400
