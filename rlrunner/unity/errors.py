"""The one error of the Unity adapter."""

from __future__ import annotations


class UnityEnvError(RuntimeError):
    """The Unity player could not be launched, reached or kept alive, or it broke the adapter's rules."""


__all__ = ["UnityEnvError"]
