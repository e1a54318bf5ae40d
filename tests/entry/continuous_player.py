"""A test-only Unity player with continuous actions, speaking ML-Agents' protocol with mlagents' own protos.

"Slide": one agent on a line at x = 0; each step moves it by 0.25 * action (action in [-1, 1]);
reaching x >= 1 ends the episode with +1, x <= -1 with +0.1; every step costs 0.01.
Observation: [x]. Launched like a Linux build: `continuous_player.py --mlagents-port N ...`.
The bundled Basic player has discrete actions only; this one exercises Box action spaces end to end.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import warnings

import grpc

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
    from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto
    from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
    from mlagents_envs.communicator_objects.observation_pb2 import ObservationProto
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import UnityToExternalProtoStub

BEHAVIOR = "Slide?team=0"
STEP = 0.25


def _port(argv: list[str]) -> int | None:
    for index, arg in enumerate(argv[:-1]):
        if arg == "--mlagents-port":
            return int(argv[index + 1])
    return None


def _info(x: float, reward: float, done: bool, agent_id: int) -> AgentInfoProto:
    obs = ObservationProto(shape=[1], name="position")
    obs.float_data.data.append(x)
    return AgentInfoProto(reward=reward, done=done, max_step_reached=False, id=agent_id, observations=[obs])


def _watch_parent(parent: int) -> None:
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str]) -> int:
    port = _port(argv)
    if port is None:
        return 0
    _watch_parent(os.getppid())
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    exchange = UnityToExternalProtoStub(channel).Exchange
    hello = UnityMessageProto()
    hello.header.status = 200
    init = hello.unity_output.rl_initialization_output
    init.name, init.communication_version, init.package_version = "Slide", "1.5.0", "2.0.0-test"
    init.capabilities.CopyFrom(UnityRLCapabilitiesProto(baseRLCapabilities=True, hybridActions=True))
    try:
        exchange(hello, wait_for_ready=True, timeout=60)
        reply = exchange(UnityMessageProto(header=hello.header))
        x, agent_id, sent_brain = 0.0, 1, False
        while reply.header.status == 200 and reply.unity_input.rl_input.command != 2:  # 2 = QUIT
            rl_input = reply.unity_input.rl_input
            infos = []
            if rl_input.command == 1:  # RESET
                x, agent_id = 0.0, agent_id + 1
                infos.append(_info(x, 0.0, False, agent_id))
            else:
                actions = rl_input.agent_actions[BEHAVIOR].value if BEHAVIOR in rl_input.agent_actions else []
                action = actions[0].continuous_actions[0] if actions and actions[0].continuous_actions else 0.0
                x = min(max(x + STEP * max(min(action, 1.0), -1.0), -1.0), 1.0)
                done = abs(x) >= 1.0
                reward = -0.01 + (1.0 if x >= 1.0 else 0.1 if done else 0.0)
                infos.append(_info(x, reward, done, agent_id))
                if done:
                    x, agent_id = 0.0, agent_id + 1
                    infos.append(_info(x, 0.0, False, agent_id))
            message = UnityMessageProto()
            message.header.status = 200
            message.unity_output.rl_output.agentInfos[BEHAVIOR].value.extend(infos)
            if not sent_brain:
                brain = BrainParametersProto(brain_name=BEHAVIOR, is_training=True, action_spec=ActionSpecProto(num_continuous_actions=1))
                message.unity_output.rl_initialization_output.brain_parameters.append(brain)
                sent_brain = True
            reply = exchange(message)
    except grpc.RpcError:
        return 0
    finally:
        channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
