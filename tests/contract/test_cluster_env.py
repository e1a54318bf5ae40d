"""Cluster settings: timeouts from the spec, addresses and ports from the variables the local emulation writes."""

from __future__ import annotations

import pytest

from rlrunner.contract.cluster_env import (
    ClusterError,
    ClusterSettings,
    emulated_addresses,
    emulation_environment,
    read_cluster_settings,
)
from rlrunner.schema import ClusterSpec


def test_read_cluster_settings_defaults_suit_sagemaker() -> None:
    settings = read_cluster_settings({}, ClusterSpec())
    assert settings == ClusterSettings()
    assert (settings.port, settings.join_timeout_s, settings.head_timeout_s, settings.min_hosts, settings.auth) == (6379, 600.0, 60.0, None, "disabled")


def test_what_the_emulation_writes_and_the_spec_sets_the_launcher_reads_back() -> None:
    environ = emulation_environment(["algo-2", "algo-1"], port=41000, client_server_port=41001, temp_dir="/tmp/rlr-x", token_path="/run/token")
    settings = read_cluster_settings(environ, ClusterSpec(join_timeout_s=30, min_hosts=1, head_timeout_s=15.5))
    assert settings == ClusterSettings(
        port=41000,
        host_addresses={"algo-1": "127.0.0.2", "algo-2": "127.0.0.3"},
        client_server_port=41001,
        temp_dir="/tmp/rlr-x",
        join_timeout_s=30.0,
        min_hosts=1,
        head_timeout_s=15.5,
        auth="token",
    )


def test_emulated_hosts_get_loopback_addresses_from_127_0_0_2() -> None:
    assert emulated_addresses(["algo-2", "algo-1", "algo-3"]) == {"algo-1": "127.0.0.2", "algo-2": "127.0.0.3", "algo-3": "127.0.0.4"}
    with pytest.raises(ClusterError, match=r"^at most 250 emulated hosts \(got 251\)$"):
        emulated_addresses([f"algo-{i}" for i in range(251)])


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"RLRUNNER_HOST_ADDRESSES": "algo-1=1.2.3.4"}, "RLRUNNER_HOST_ADDRESSES: not JSON"),
        ({"RLRUNNER_HOST_ADDRESSES": '["1.2.3.4"]'}, "RLRUNNER_HOST_ADDRESSES: expected a JSON object of host names to addresses (got '[\"1.2.3.4\"]')"),
        ({"RLRUNNER_RAY_PORT": "six"}, "RLRUNNER_RAY_PORT: expected a port number (got 'six')"),
    ],
    ids=["addresses-not-json", "addresses-not-object", "port-not-number"],
)
def test_read_cluster_settings_rejects_malformed_values(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ClusterError) as error:
        read_cluster_settings(environ, ClusterSpec())
    assert str(error.value).startswith(message)
