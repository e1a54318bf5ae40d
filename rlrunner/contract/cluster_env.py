"""How the hosts of a multi-instance job find each other: the variables and settings both sides share.

On SageMaker the hosts are `algo-1..N` (resourceconfig.json) and resolve by DNS; the timeouts come from
the spec (`compute.cluster`, encoded with the experiment). The local backend emulates hosts on one
machine and tells their launchers, through the variables below, the loopback address of each host,
the head's ports, Ray's temp dir and the token file; `emulation_environment` writes them and
`read_cluster_settings` reads them back in the launcher.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from rlrunner.contract.errors import InfrastructureError
from rlrunner.schema import ClusterSpec

DEFAULT_PORT = 6379
DEFAULT_START_TIMEOUT_S = 120.0
"""Seconds one `ray start` may take to report that its node runs."""

HOST_ADDRESSES_VAR = "RLRUNNER_HOST_ADDRESSES"
PORT_VAR = "RLRUNNER_RAY_PORT"
CLIENT_PORT_VAR = "RLRUNNER_RAY_CLIENT_PORT"
TEMP_DIR_VAR = "RLRUNNER_RAY_TEMP_DIR"
AUTH_TOKEN_VAR = "RAY_AUTH_TOKEN"
AUTH_TOKEN_VARS = (AUTH_TOKEN_VAR, "RAY_AUTH_TOKEN_PATH")
AUTH_TOKEN_PLACEHOLDER = "<generated for each job at submission>"
"""What the pure plan reserves in the environment of a multi-instance job; `submit` puts a fresh token there."""
MAX_EMULATED_HOSTS = 250


class ClusterError(InfrastructureError):
    """The cluster could not be formed, or lost its head; the message says which host and why."""


@dataclass(frozen=True)
class ClusterSettings:
    """How hosts find each other and how long they wait, as plain values."""

    port: int = DEFAULT_PORT
    """The head's GCS port."""
    host_addresses: dict[str, str] = field(default_factory=dict)
    """Fixed host → address map (the local emulation); hosts not in it resolve by DNS."""
    client_server_port: int | None = None
    """The head's Ray client server port (None: Ray's default, 10001)."""
    temp_dir: str | None = None
    """Ray's temp dir on the head (None: /tmp/ray); kept short, Unix socket paths live under it."""
    join_timeout_s: float = ClusterSpec().join_timeout_s
    """Seconds the head waits for all hosts, and a worker for the head."""
    min_hosts: int | None = None
    """Hosts (the head included) enough to train after join_timeout_s (None: all)."""
    head_timeout_s: float = ClusterSpec().head_timeout_s
    """Seconds a worker host waits for an unreachable head before it exits non-zero."""
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    """Seconds one `ray start` may take to report that its node runs."""
    auth: Literal["token", "disabled"] = "disabled"
    """Ray's token authentication: on when RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH is set."""


def read_cluster_settings(environ: Mapping[str, str], spec: ClusterSpec) -> ClusterSettings:
    """The cluster settings: timeouts from the spec, addresses and ports from rlrunner's variables."""
    addresses = _json_object(environ.get(HOST_ADDRESSES_VAR), HOST_ADDRESSES_VAR)
    return ClusterSettings(
        port=_port(environ, PORT_VAR) or DEFAULT_PORT,
        host_addresses={str(k): str(v) for k, v in addresses.items()},
        client_server_port=_port(environ, CLIENT_PORT_VAR),
        temp_dir=environ.get(TEMP_DIR_VAR) or None,
        join_timeout_s=spec.join_timeout_s,
        min_hosts=spec.min_hosts,
        head_timeout_s=spec.head_timeout_s,
        auth="token" if any(environ.get(name) for name in AUTH_TOKEN_VARS) else "disabled",
    )


def _json_object(text: str | None, name: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ClusterError(f"{name}: not JSON ({error})") from None
    if not isinstance(value, dict):
        raise ClusterError(f"{name}: expected a JSON object of host names to addresses (got {text[:80]!r})")
    return value


def _port(environ: Mapping[str, str], name: str) -> int | None:
    text = environ.get(name)
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise ClusterError(f"{name}: expected a port number (got {text!r})") from None


def emulated_addresses(hosts: Sequence[str]) -> dict[str, str]:
    """Loopback addresses for hosts emulated on one machine: 127.0.0.2, 127.0.0.3, ... (never 127.0.0.1)."""
    if len(hosts) > MAX_EMULATED_HOSTS:
        raise ClusterError(f"at most {MAX_EMULATED_HOSTS} emulated hosts (got {len(hosts)})")
    return {host: f"127.0.0.{index + 2}" for index, host in enumerate(sorted(hosts))}


def emulation_environment(hosts: Sequence[str], *, port: int, client_server_port: int, temp_dir: str, token_path: str) -> dict[str, str]:
    """What every emulated host's launcher gets on top of its container environment (the local backend's part)."""
    return {
        HOST_ADDRESSES_VAR: json.dumps(emulated_addresses(hosts), sort_keys=True),
        PORT_VAR: str(port),
        CLIENT_PORT_VAR: str(client_server_port),
        TEMP_DIR_VAR: temp_dir,
        "RAY_AUTH_TOKEN_PATH": token_path,
    }
