"""A protocol-compatible stand-in for ML-Agents' 3DBall ("Ball"), launched like a Linux player.

`Ball.x86_64` is the executable mlagents_envs starts; `player.py` plays a ball-on-a-platform game
for 12 agents of one behaviour with continuous actions and decisions every 5th Academy step. It
imports only the Basic player's connection loop and `rlrunner.unity.wire`.
"""
