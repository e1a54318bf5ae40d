"""Emulated multi-host runs (`rlrunner run --local --hosts 2`): one Ray cluster of two launchers on loopback.

Each test trains the bundled Basic through the real launchers, Ray's own `ray start` and the real
protocol, and checks by pid and by command line that nothing of the cluster is left afterwards.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from shared import BASIC_PPO, QUICK_TRAINING

from rlrunner.backends import local
from rlrunner.cli import main
from rlrunner.contract.errors import EXIT_INFRA
from rlrunner.contract.run_dir import RunDir
from rlrunner.loader import load_spec
from rlrunner.processes import mentioning, process_table, run_processes
from rlrunner.runner import plan

CPUS_PER_HOST = 2  # 2 hosts x 2 CPUs: `env_runners: auto` = 3, so both hosts get env runners


def planned(*overrides: str) -> tuple[Any, Any, Path]:
    spec, document = load_spec(BASIC_PPO, (*QUICK_TRAINING, *overrides))
    return spec, plan(spec, spec_dir=document.base_dir, local=True), document.base_dir


def metrics_rows(run_dir: Path) -> int:
    path = run_dir / "metrics.csv"
    return max(len(path.read_text().splitlines()) - 1, 0) if path.is_file() else 0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def alive(pid: int) -> bool:
    info = process_table().get(pid)
    return info is not None and info.alive


def kill_host(pid: int) -> set[int]:
    """SIGKILL a host's launcher and everything below it, at once (the host disappears)."""
    victims = run_processes(sessions=[pid], roots=[pid]) | {pid}
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return victims


def tcp_connections(pids: set[int]) -> list[tuple[str, str, str]]:
    """(local, remote, state) of every TCP socket the processes hold (IPv4 and IPv4-mapped IPv6), from /proc."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                found.append((_ipv4(fields[1]), _ipv4(fields[2]), fields[3]))
    return found


def _ipv4(hex_address: str) -> str:
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)[-4:]  # IPv4, or the IPv4 part of an IPv4-mapped IPv6 address
    return ".".join(str(b) for b in raw[::-1]) + f":{int(port_hex, 16)}"


def cluster_left(cluster: dict[str, Any]) -> set[int]:
    """Processes whose command line names this run's Ray cluster (its GCS address or Ray temp dir)."""
    return mentioning(cluster["address"]) | mentioning(cluster["ray_temp_dir"])


class Hosts:
    """Records the launchers run_local starts (an `on_host_start` callback) and their session ids."""

    def __init__(self, sessions: list[int]) -> None:
        self.pids: dict[str, int] = {}
        self._sessions = sessions

    def __call__(self, host: str, process: Any) -> None:
        self.pids[host] = process.pid
        self._sessions.append(process.pid)


def run_two_hosts(
    spec: Any, job: Any, spec_dir: Path, run_dir: Path, hosts: Hosts, during: Callable[[], None], *,
    join_s: float = 30,
) -> tuple[Any, str]:
    """`run_local` with 2 emulated hosts while `during` runs in a background thread; (result, output)."""
    thread = threading.Thread(target=during, daemon=True)
    thread.start()
    stream = io.StringIO()
    result = local.run_local(spec, job, spec_dir=spec_dir, run_dir=run_dir, stream=stream, num_cpus=CPUS_PER_HOST, hosts=2, on_host_start=hosts)
    thread.join(timeout=join_s)
    return result, stream.getvalue()


# mlagents-envs 0.28 checks the protocol version with distutils' StrictVersion (see test_local.py).
pytestmark = pytest.mark.filterwarnings("ignore:distutils Version classes are deprecated:DeprecationWarning")


def test_two_hosts_train_basic_on_one_ray_cluster(tmp_path: Path, sessions: list[int]) -> None:
    """Both hosts join one cluster, env runners run on both, the run exports, and nothing is left."""
    spec, job, spec_dir = planned("training.stop.timesteps=1000")
    run_dir = tmp_path / "run"
    hosts = Hosts(sessions)
    seen: dict[str, Any] = {}

    def watch() -> None:  # mid-run: every TCP connection of both hosts' process trees stays on loopback
        wait_until(lambda: metrics_rows(run_dir) >= 1 or len(hosts.pids) == 2 and not alive(hosts.pids["algo-1"]), 300, "first iteration")
        tree = run_processes(sessions=list(hosts.pids.values()), roots=list(hosts.pids.values()))
        seen["connections"] = tcp_connections(tree)

    result, output = run_two_hosts(spec, job, spec_dir, run_dir, hosts, watch)
    assert result.exit_code == 0, output[-4000:]
    assert result.hosts == {"algo-1": 0, "algo-2": 0}

    cluster = json.loads((run_dir / "output" / "data" / "cluster.json").read_text())
    assert [(n["host"], n["address"], n["cpus"]) for n in cluster["nodes"]] == [("algo-1", "127.0.0.2", 2.0), ("algo-2", "127.0.0.3", 2.0)]
    assert cluster["head"] == "algo-1" and cluster["address"].startswith("127.0.0.2:") and cluster["num_cpus"] == 4
    assert sorted(cluster["env_runners"]) == ["1", "2", "3"]  # auto: 4 CPUs - 1
    assert set(cluster["env_runners"].values()) == {"algo-1", "algo-2"}
    assert "rlrunner: building PPO: 3 remote env runner(s), 1 player each (env_runners: auto on 4 CPU(s))" in output, output[-4000:]

    # each host its own /opt/ml tree and current_host; the worker host left when the head was done
    worker = run_dir / "hosts" / "algo-2"
    assert json.loads((worker / "input" / "config" / "resourceconfig.json").read_text())["current_host"] == "algo-2"
    assert json.loads((run_dir / "input" / "config" / "resourceconfig.json").read_text()) == {
        "current_host": "algo-1", "hosts": ["algo-1", "algo-2"], "network_interface_name": "lo",
    }  # fmt: skip
    worker_log = (worker / "launcher.log").read_text()
    assert "rlrunner: cluster: the head is done (ok); leaving the cluster" in worker_log
    assert "rlrunner: algo-2 done (the head reported: ok)" in worker_log

    # the usual run: metrics, checkpoint, model, evaluation
    assert (run_dir / "model" / "policy.onnx").is_file() and result.evaluation is not None
    assert result.metrics is not None and result.metrics["timesteps"] == 1000
    assert json.loads((run_dir / "run.json").read_text())["hosts"] == {"algo-1": 0, "algo-2": 0}

    # loopback only: every connection's both ends are 127.x (Ray's servers listen on every interface)
    connections = seen.get("connections")
    assert connections, "no TCP connections seen mid-run"
    established = [(a, b) for a, b, state in connections if state == "01"]
    assert established and all(a.startswith("127.") and b.startswith("127.") for a, b in established), established

    # nothing left: no process of the cluster, no token, no Ray temp dir
    assert result.cluster is not None and result.cluster["address"] == cluster["address"]
    assert not cluster_left(cluster)
    assert not (run_dir / ".ray_auth_token").exists() and not Path(cluster["ray_temp_dir"]).exists()


def test_losing_the_worker_host_mid_run_does_not_fail_training(tmp_path: Path, sessions: list[int]) -> None:
    """SIGKILL the worker host's whole process tree after the first iteration: RLlib trains on with the head's runners."""
    spec, job, spec_dir = planned("training.stop.timesteps=2000")
    run_dir = tmp_path / "run"
    hosts = Hosts(sessions)
    killed: dict[str, Any] = {}

    def kill_worker_after_first_iteration() -> None:
        wait_until(lambda: metrics_rows(run_dir) >= 1 or len(hosts.pids) == 2 and not alive(hosts.pids["algo-1"]), 300, "first iteration")
        killed["iteration"] = metrics_rows(run_dir)
        killed["victims"] = kill_host(hosts.pids["algo-2"])

    result, output = run_two_hosts(spec, job, spec_dir, run_dir, hosts, kill_worker_after_first_iteration)
    assert killed.get("iteration", 0) >= 1 and len(killed["victims"]) > 3, killed  # launcher, ray start, raylet, workers, players
    assert result.exit_code == 0, output[-4000:]
    assert result.hosts == {"algo-1": 0, "algo-2": -signal.SIGKILL}
    assert f"rlrunner: host algo-2 exited with {-signal.SIGKILL}" in output
    assert result.metrics is not None and result.metrics["timesteps"] >= 2000  # all iterations, on fewer env runners
    assert (run_dir / "model" / "policy.onnx").is_file()
    cluster = json.loads((run_dir / "output" / "data" / "cluster.json").read_text())
    assert "algo-2" in cluster["env_runners"].values()  # it did have env runners to lose
    assert not cluster_left(cluster)


def test_worker_host_exits_non_zero_soon_after_the_head_dies(tmp_path: Path, sessions: list[int]) -> None:
    """SIGKILL the head's whole process tree: the worker host gives up after the head timeout, with a reason."""
    head_timeout_s = 10.0
    spec, job, spec_dir = planned("training.stop.timesteps=1000000", f"compute.cluster.head_timeout_s={head_timeout_s}")
    run_dir = tmp_path / "run"
    hosts = Hosts(sessions)
    timing: dict[str, float] = {}

    def kill_head_then_time_the_worker() -> None:
        wait_until(lambda: metrics_rows(run_dir) >= 1 or len(hosts.pids) == 2 and not alive(hosts.pids["algo-1"]), 300, "first iteration")
        kill_host(hosts.pids["algo-1"])
        timing["killed"] = time.monotonic()
        wait_until(lambda: not alive(hosts.pids["algo-2"]), head_timeout_s + 60, "worker host exit")
        timing["worker_exited"] = time.monotonic()

    result, output = run_two_hosts(
        spec, job, spec_dir, run_dir, hosts, kill_head_then_time_the_worker,
        join_s=90,
    )  # fmt: skip
    assert "worker_exited" in timing, output[-4000:]
    took = timing["worker_exited"] - timing["killed"]
    print(f"worker host exited {took:.1f} s after the head was killed (head timeout {head_timeout_s:g} s)")
    assert head_timeout_s <= took < head_timeout_s + 30, took  # + one 5 s GCS call and stopping the node
    assert result.exit_code == EXIT_INFRA and result.hosts == {"algo-1": -signal.SIGKILL, "algo-2": 4}
    worker = run_dir / "hosts" / "algo-2"
    failure = (worker / "output" / "failure").read_text()
    assert failure.startswith("Ray cluster (algo-2): the head was unreachable for "), failure
    assert failure.endswith("; leaving the cluster\n"), failure
    assert result.cluster is not None and not cluster_left(result.cluster)  # the head's orphaned Ray node included
    assert not Path(result.cluster["ray_temp_dir"]).exists()


def test_cli_hosts_needs_a_local_run() -> None:
    result = CliRunner().invoke(main, ["run", str(BASIC_PPO), "--hosts", "2"])
    assert result.exit_code == 2
    assert result.output == "--hosts: only with a local run (on SageMaker, compute.instance_count sets the hosts)\n"


def test_container_environment_names_the_emulated_host(tmp_path: Path) -> None:
    _, job, _ = planned()
    env = local.launcher_environment(RunDir(tmp_path), job, num_cpus=2, base={}, host="algo-2", hosts=("algo-1", "algo-2"))
    assert (env["SM_CURRENT_HOST"], json.loads(env["SM_HOSTS"])) == ("algo-2", ["algo-1", "algo-2"])
    assert json.loads(env["SM_RESOURCE_CONFIG"]) == {"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}
