"""The hand-rolled wire format against mlagents' generated protobuf classes."""

from __future__ import annotations

import struct

import pytest
from mlagents_envs.communicator_objects.agent_action_pb2 import AgentActionProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_rl_initialization_input_pb2 import UnityRLInitializationInputProto

import rlrunner.unity.launch  # noqa: F401  (imports mlagents_envs with its protobuf warnings filtered)
from rlrunner.envs.basic import player
from rlrunner.unity import wire


def test_message_init_output_decodes_with_protobuf() -> None:
    raw = wire.message(init_output_bytes=wire.init_output("AcademySingleton", "1.5.0", "x"))
    decoded = UnityMessageProto.FromString(raw)
    init = decoded.unity_output.rl_initialization_output
    assert decoded.header.status == 200
    assert (init.name, init.communication_version, init.package_version) == ("AcademySingleton", "1.5.0", "x")
    assert init.capabilities.baseRLCapabilities and init.capabilities.multiAgentGroups


def test_message_agent_infos_and_brain_decode_with_protobuf() -> None:
    game = player.Game(num_areas=2)
    infos = game.reset() + [
        wire.agent_info(wire.len_field(13, wire.observation("Basic", [0.0, 1.0])), -0.01, True, True, 7)
    ]
    brain = wire.len_field(5, wire.brain_parameters(player.BEHAVIOR_NAME, [3]))
    decoded = UnityMessageProto.FromString(wire.message(wire.rl_output(player.BEHAVIOR_NAME, infos), brain))
    agents = decoded.unity_output.rl_output.agentInfos[player.BEHAVIOR_NAME].value
    assert [a.id for a in agents] == [1, 2, 7]
    assert list(agents[0].observations[0].float_data.data) == [1.0 if i == 10 else 0.0 for i in range(20)]
    assert agents[0].observations[0].name == "Basic" and list(agents[0].observations[0].shape) == [20]
    assert (agents[2].done, agents[2].max_step_reached, agents[2].reward) == (True, True, pytest.approx(-0.01))
    brain_proto = decoded.unity_output.rl_initialization_output.brain_parameters[0]
    assert brain_proto.brain_name == player.BEHAVIOR_NAME and brain_proto.is_training
    assert list(brain_proto.action_spec.discrete_branch_sizes) == [3]
    assert brain_proto.action_spec.num_discrete_actions == 1


@pytest.mark.parametrize("command", [STEP, RESET, QUIT])
def test_decode_input_reads_protobuf_step(command: int) -> None:
    message = UnityMessageProto()
    message.header.status = 200
    rl_input = message.unity_input.rl_input
    rl_input.command = command
    rl_input.side_channel = b"\x01\x02"
    for action in (2, 0, 1):
        rl_input.agent_actions[player.BEHAVIOR_NAME].value.append(
            AgentActionProto(discrete_actions=[action], vector_actions_deprecated=[float(action)])
        )
    decoded = wire.decode_input(message.SerializeToString())
    assert (decoded.status, decoded.command, decoded.side_channel) == (200, command, b"\x01\x02")
    assert decoded.actions == {player.BEHAVIOR_NAME: [[2], [0], [1]]}


def test_decode_input_reads_handshake_and_close() -> None:
    message = UnityMessageProto()
    message.header.status = 200
    message.unity_input.rl_initialization_input.CopyFrom(
        UnityRLInitializationInputProto(seed=-3, communication_version="1.5.0", num_areas=4)
    )
    decoded = wire.decode_input(message.SerializeToString())
    assert (decoded.seed, decoded.num_areas, decoded.communication_version) == (-3, 4, "1.5.0")
    closing = UnityMessageProto()
    closing.header.status = 400
    assert wire.decode_input(closing.SerializeToString()).status == 400


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31 - 1])
def test_varint_round_trip(value: int) -> None:
    assert wire.read_varint(wire.varint(value), 0) == (value, len(wire.varint(value)))


def test_decode_input_reads_continuous_actions_packed_and_not() -> None:
    message = UnityMessageProto()
    message.header.status = 200
    rl_input = message.unity_input.rl_input
    for values in ([0.5, -1.0], [0.25, 2.0]):
        rl_input.agent_actions["Ball?team=0"].value.append(
            AgentActionProto(continuous_actions=values, vector_actions_deprecated=values)
        )
    raw = message.SerializeToString()
    decoded = wire.decode_input(raw)
    assert decoded.continuous_actions == {"Ball?team=0": [[0.5, -1.0], [0.25, 2.0]]}
    assert decoded.actions == {"Ball?team=0": [[], []]}
    unpacked = wire.tag(6, 5) + struct.pack("<f", 0.75) + wire.tag(6, 5) + struct.pack("<f", -0.5)
    entry = wire.str_field(1, "B") + wire.len_field(2, wire.len_field(1, unpacked))
    step = wire.len_field(3, wire.len_field(1, wire.len_field(1, entry)))
    assert wire.decode_input(step).continuous_actions == {"B": [[0.75, -0.5]]}


def test_brain_parameters_with_continuous_actions_decode_with_protobuf() -> None:
    brain = wire.len_field(5, wire.brain_parameters("Ball?team=0", [], continuous_size=2))
    decoded = UnityMessageProto.FromString(wire.message(wire.rl_output("Ball?team=0", []), brain))
    spec = decoded.unity_output.rl_initialization_output.brain_parameters[0].action_spec
    assert (spec.num_continuous_actions, spec.num_discrete_actions, list(spec.discrete_branch_sizes)) == (2, 0, [])
