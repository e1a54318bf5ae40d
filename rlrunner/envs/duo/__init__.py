"""A protocol-compatible two-behaviour scene ("Duo"), launched like a Linux player: see `player.py`."""
