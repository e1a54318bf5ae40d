"""The Unity side of ML-Agents, over ``mlagents_envs``: one job per module.

``wire`` (the hand-rolled protobuf encoding, shared with the bundled Basic player), ``fast_path``
(the per-step messages without the pure-Python protobuf classes), ``communicator`` (the loopback
gRPC server), ``ports`` (the one port helper), ``launch`` (starting a player and the
``UnityEnvironment`` subclass over it), ``spaces`` (gymnasium spaces and conversions) and
``gym_env`` (``UnityGymEnv``/``UnityVectorEnv``, which receive their ``BaseEnv``); the shared
``UnityEnvError`` lives in ``errors``; ``multi_agent`` (``UnityMultiAgentEnv``, an RLlib
``MultiAgentEnv`` for any scene: several behaviours, many agents, decisions at any time) sits beside
``gym_env`` and is the only module here that imports Ray. This
package imports nothing of rlrunner but itself (no ``contract``, no ``entry``, no ``envs.basic``):
the RLlib env creator that turns an ``EnvironmentSpec`` into launch options is
``rlrunner.entry.unity_env``.
"""
