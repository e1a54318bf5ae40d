"""Environments rlrunner ships (the Basic stand-in) and the name registry."""

from rlrunner.envs.registry import BUNDLED_ENVIRONMENTS, EnvironmentNotFoundError, resolve_environment

__all__ = ["BUNDLED_ENVIRONMENTS", "EnvironmentNotFoundError", "resolve_environment"]
