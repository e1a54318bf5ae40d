"""A protocol-compatible stand-in for a Unity scene with two behaviours ("Duo"), launched like a Linux player.

`Duo.x86_64` is the executable mlagents_envs starts; `player.py` plays Basic's rules for two
behaviours whose agents decide at different periods and respawn under new ids. It imports only the
Basic player's connection loop and `rlrunner.unity.wire`.
"""
