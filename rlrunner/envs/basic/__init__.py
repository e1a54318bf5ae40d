"""A protocol-compatible stand-in for ML-Agents' "Basic" Unity build, launched like a Linux player.

`Basic.x86_64` is the executable mlagents_envs starts; `player.py` plays the Unity side of the gRPC
protocol with Basic's rules, speaking `rlrunner.unity.wire`. It imports nothing else of rlrunner.
"""
