"""A protocol-compatible stand-in for a Unity scene that observes through a camera ("VisualBasic").

`VisualBasic.x86_64` is the executable mlagents_envs starts; `player.py` plays Basic's rules and sends
a small camera image (PNG-compressed, as Unity does by default) instead of the one-hot vector (with
`--vector`, beside it: a behaviour with visual and vector observations). It imports only the Basic
player's game and connection loop and `rlrunner.unity.wire`.
"""
