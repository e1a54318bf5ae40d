"""Exit codes and the one root of user-facing errors.

Every command and the launcher exit with one of these codes. An `RlrunnerError` carries its exit code
(and, when it has one, the location it is about), so the CLI maps errors in one place.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
"""A usage error: bad arguments, a run directory in use, a model dir that holds no policy."""
EXIT_INVALID = 3
"""The spec (or the experiment it encodes) cannot run as written."""
EXIT_INFRA = 4
"""Infrastructure: AWS, Docker, Ray or the player could not be reached or started."""
EXIT_FAILED = 5
"""A run, an export or a sweep point failed."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C or SIGTERM."""


class RlrunnerError(Exception):
    """A failure explained in one message, with the exit code it maps to and, optionally, where it is."""

    exit_code: int = EXIT_FAILED

    def __init__(self, message: str, *, exit_code: int | None = None, location: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return f"{self.location}: {self.message}" if self.location else self.message


class UsageError(RlrunnerError):
    """Bad arguments or a state of the run directory that forbids the command (exit 2)."""

    exit_code = EXIT_USAGE


class InvalidSpecError(RlrunnerError):
    """The spec or the encoded experiment is invalid (exit 3)."""

    exit_code = EXIT_INVALID


class InfrastructureError(RlrunnerError):
    """AWS, Docker, Ray or the player failed (exit 4)."""

    exit_code = EXIT_INFRA


class RunFailedError(RlrunnerError):
    """Training, export or evaluation failed (exit 5)."""

    exit_code = EXIT_FAILED
