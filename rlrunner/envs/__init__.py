"""Environments rlrunner ships (protocol-compatible players such as Basic) and the name registry.

The players speak the Unity side of ML-Agents' protocol with `rlrunner.unity.wire`; nothing in
`rlrunner.unity` imports them.
"""

from rlrunner.envs.registry import BUNDLED_ENVIRONMENTS, EnvironmentNotFoundError, resolve_environment

__all__ = ["BUNDLED_ENVIRONMENTS", "EnvironmentNotFoundError", "resolve_environment"]
