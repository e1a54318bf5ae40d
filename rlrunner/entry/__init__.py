"""Container side: what runs inside the training job (and in the local emulation of it)."""
