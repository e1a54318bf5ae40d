"""Cluster formation: the pure planning and waiting loops (fake clocks), and `RayNode` on a stand-in command."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from shared import BASIC_PPO

from rlrunner.entry import cluster
from rlrunner.entry.cluster import (
    ClusterError,
    ClusterPlan,
    ClusterSettings,
    NodeInfo,
    RayNode,
    check_node_address,
    head_command,
    live_nodes,
    node_cpus,
    plan_cluster,
    ray_environment,
    resolve_address,
    wait_for_hosts,
    wait_for_port,
    watch_head,
    worker_command,
)
from rlrunner.processes import process_table, session_members


class FakeClock:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    """A fake clock and its sleep."""
    return FakeClock()


def node(host: str, cpus: float = 2.0) -> NodeInfo:
    return NodeInfo(node_id=f"id-{host}", address=f"addr-{host}", host=host, cpus=cpus, gpus=0.0)


PLAN = ClusterPlan(hosts=("algo-1", "algo-2", "algo-3"), current_host="algo-1", min_hosts=3)


# --- settings and plan --------------------------------------------------------------------------


def test_plan_cluster_makes_the_first_sorted_host_the_head() -> None:
    plan = plan_cluster(["algo-3", "algo-1", "algo-2"], "algo-2", ClusterSettings())
    assert (plan.hosts, plan.head_host, plan.worker_hosts) == (("algo-1", "algo-2", "algo-3"), "algo-1", ("algo-2", "algo-3"))
    assert (plan.is_head, plan.min_hosts) == (False, 3)
    assert plan_cluster(["algo-2", "algo-1"], "algo-1", ClusterSettings(min_hosts=1)).is_head


@pytest.mark.parametrize(
    ("hosts", "current", "min_hosts", "message"),
    [
        (["algo-1"], "algo-1", None, "a cluster needs at least 2 hosts (got ['algo-1'])"),
        (["algo-1", "algo-2"], "algo-9", None, "current_host 'algo-9' is not among the hosts ['algo-1', 'algo-2']"),
        (["algo-1", "algo-2"], "algo-1", 3, "compute.cluster.min_hosts: must be between 1 and 2 (got 3)"),
    ],
    ids=["one-host", "stranger", "min-hosts-too-high"],
)
def test_plan_cluster_rejects(hosts: list[str], current: str, min_hosts: int | None, message: str) -> None:
    with pytest.raises(ClusterError) as error:
        plan_cluster(hosts, current, ClusterSettings(min_hosts=min_hosts))
    assert str(error.value) == message


def test_check_node_address_keeps_other_loopback_addresses_and_rejects_127_0_0_1() -> None:
    assert check_node_address("algo-1", "127.0.0.2") == "127.0.0.2"
    assert check_node_address("algo-1", "10.0.1.17") == "10.0.1.17"
    with pytest.raises(ClusterError) as error:
        check_node_address("algo-1", "127.0.0.1")
    assert str(error.value) == (
        "host algo-1: address 127.0.0.1 cannot name a Ray node (Ray replaces it by this machine's routable "
        "address); emulated hosts need other loopback addresses such as 127.0.0.2"
    )
    with pytest.raises(ClusterError, match=r"^host algo-2: address 'localhost' is not an IPv4 address$"):
        check_node_address("algo-2", "localhost")


@pytest.mark.parametrize(
    ("num_cpus", "runners", "hosts", "expected"),
    [(8, "auto", 2, 8), (2, 3, 2, 2), (2, 9, 2, 5), (4, 11, 3, 4)],
    ids=["auto-own-cpus", "explicit-fits", "explicit-oversubscribes", "explicit-fits-3-hosts"],
)
def test_node_cpus_oversubscribes_only_for_an_explicit_count_above_the_cluster(num_cpus: int, runners: int | str, hosts: int, expected: int) -> None:
    assert node_cpus(num_cpus, runners, hosts) == expected


def test_head_and_worker_commands() -> None:
    settings = ClusterSettings(port=41000, client_server_port=41001, temp_dir="/tmp/rlr-x")
    assert head_command(settings, address="127.0.0.2", num_cpus=2, num_gpus=0, python="py") == [
        "py", "-m", "ray.scripts.scripts", "start", "--head", "--port=41000", "--include-dashboard=false",
        "--block", "--node-ip-address=127.0.0.2", "--num-cpus=2", "--num-gpus=0", "--disable-usage-stats",
        "--dashboard-agent-listen-port=0", "--ray-client-server-port=41001", "--temp-dir=/tmp/rlr-x",
    ]  # fmt: skip
    assert worker_command(settings, address="127.0.0.3", head_address="127.0.0.2", num_cpus=4, num_gpus=1, python="py") == [
        "py", "-m", "ray.scripts.scripts", "start", "--address=127.0.0.2:41000",
        "--block", "--node-ip-address=127.0.0.3", "--num-cpus=4", "--num-gpus=1", "--disable-usage-stats",
        "--dashboard-agent-listen-port=0",
    ]  # fmt: skip
    assert "--ray-client-server-port" not in " ".join(head_command(ClusterSettings(), address="10.0.0.1", num_cpus=1, num_gpus=0))


def test_ray_environment_drops_ray_address_and_sets_auth_explicitly() -> None:
    env = ray_environment({"PATH": "/bin", "RAY_ADDRESS": "10.9.9.9:6379", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, ClusterSettings(auth="token"))
    assert env == {
        "PATH": "/bin",
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        "RAY_AUTH_MODE": "token",
    }
    assert ray_environment({}, ClusterSettings())["RAY_AUTH_MODE"] == "disabled"


def test_live_nodes_keeps_alive_ones_named_by_host() -> None:
    nodes = [
        {"NodeID": "b", "NodeManagerAddress": "127.0.0.3", "Alive": True, "Resources": {"CPU": 2.0}},
        {"NodeID": "a", "NodeManagerAddress": "127.0.0.2", "Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}},
        {"NodeID": "c", "NodeManagerAddress": "127.0.0.4", "Alive": False, "Resources": {}},
        {"NodeID": "d", "NodeManagerAddress": "127.0.0.9", "Alive": True, "Resources": {}},
    ]
    found = live_nodes(nodes, {"127.0.0.2": "algo-1", "127.0.0.3": "algo-2"})
    assert [(n.host, n.node_id, n.cpus, n.gpus) for n in found] == [
        ("127.0.0.9", "d", 0.0, 0.0),
        ("algo-1", "a", 2.0, 1.0),
        ("algo-2", "b", 2.0, 0.0),
    ]


# --- waiting loops --------------------------------------------------------------------------------


def test_wait_for_hosts_returns_once_every_host_joined(clock: FakeClock) -> None:
    rounds = iter([[node("algo-1")], [node("algo-1"), node("algo-3")], [node("algo-1"), node("algo-2"), node("algo-3")]])
    reports: list[str] = []
    nodes = wait_for_hosts(lambda: next(rounds), PLAN, timeout_s=60, clock=clock, sleep=clock.sleep, report=reports.append)
    assert [n.host for n in nodes] == ["algo-1", "algo-2", "algo-3"]
    assert reports == ["1 of 3 hosts joined (algo-1)", "2 of 3 hosts joined (algo-1, algo-3)", "3 of 3 hosts joined (algo-1, algo-2, algo-3)"]
    assert clock.sleeps == [1.0, 1.0]


def test_wait_for_hosts_goes_on_with_the_minimum_after_the_timeout(clock: FakeClock) -> None:
    plan = ClusterPlan(hosts=PLAN.hosts, current_host="algo-1", min_hosts=2)
    reports: list[str] = []
    nodes = wait_for_hosts(lambda: [node("algo-1"), node("algo-2")], plan, timeout_s=10, clock=clock, sleep=clock.sleep, report=reports.append)
    assert [n.host for n in nodes] == ["algo-1", "algo-2"]
    assert reports[-1] == "going on with 2 hosts after 10 s; missing: algo-3"
    assert clock.now == pytest.approx(110.0)


def test_wait_for_hosts_fails_below_the_minimum(clock: FakeClock) -> None:
    with pytest.raises(ClusterError) as error:
        wait_for_hosts(lambda: [node("algo-1")], PLAN, timeout_s=5, clock=clock, sleep=clock.sleep)
    assert str(error.value) == "only 1 of 3 hosts joined the Ray cluster within 5 s (missing: algo-2, algo-3; at least 3 needed)"


def test_wait_for_hosts_ignores_nodes_of_unknown_addresses(clock: FakeClock) -> None:
    stranger = NodeInfo("x", "10.1.1.1", "10.1.1.1", 2.0, 0.0)
    with pytest.raises(ClusterError, match="only 1 of 3 hosts"):
        wait_for_hosts(lambda: [node("algo-1"), stranger, stranger], PLAN, timeout_s=2, clock=clock, sleep=clock.sleep)


def test_watch_head_returns_the_heads_status(clock: FakeClock) -> None:
    answers = iter([None, None, b"ok"])
    outcome = watch_head(lambda: next(answers), lambda: True, head_timeout_s=60, clock=clock, sleep=clock.sleep)
    assert (outcome.done, outcome.detail) == (True, "ok")
    assert clock.sleeps == [1.0, 1.0]


def test_watch_head_tolerates_short_silences_but_not_head_timeout(clock: FakeClock) -> None:
    calls = {"n": 0}

    def read() -> bytes | None:
        calls["n"] += 1
        if calls["n"] in (2, 3):  # a blip: two failed calls, then the head answers again
            raise ConnectionError("blip")
        if calls["n"] >= 5:
            raise ConnectionError("gone")
        return None

    outcome = watch_head(read, lambda: True, head_timeout_s=10, clock=clock, sleep=clock.sleep)
    assert (outcome.done, outcome.detail) == (False, "the head was unreachable for 10 s (ConnectionError)")
    assert calls["n"] == 14  # call 4 answered last; 10 one-second polls later the head counts as lost


def test_watch_head_stops_when_the_local_node_stops(clock: FakeClock) -> None:
    outcome = watch_head(lambda: None, lambda: False, head_timeout_s=60, clock=clock, sleep=clock.sleep)
    assert (outcome.done, outcome.detail) == (False, "this host's Ray node stopped")


def test_resolve_address_prefers_configured_addresses_then_retries_dns(clock: FakeClock) -> None:
    settings = ClusterSettings(host_addresses={"algo-1": "127.0.0.2"})
    assert resolve_address("algo-1", settings, timeout_s=0, resolve=lambda host: pytest.fail("no DNS")) == "127.0.0.2"
    answers: Iterator[OSError | str] = iter([OSError("not yet"), OSError("not yet"), "10.0.0.7"])

    def resolve(host: str) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert resolve_address("algo-2", settings, timeout_s=30, resolve=resolve, clock=clock, sleep=clock.sleep) == "10.0.0.7"
    assert clock.sleeps == [1.0, 1.0]


def test_resolve_address_gives_up_after_the_timeout(clock: FakeClock) -> None:
    def resolve(host: str) -> str:
        raise OSError("Name or service not known")

    with pytest.raises(ClusterError) as error:
        resolve_address("algo-2", ClusterSettings(), timeout_s=3, resolve=resolve, clock=clock, sleep=clock.sleep)
    assert str(error.value) == "host algo-2 does not resolve after 3 s: Name or service not known"


def test_wait_for_port_retries_until_the_head_listens(clock: FakeClock) -> None:
    attempts: list[tuple[str, int]] = []

    class Connection:
        def close(self) -> None:
            attempts.append(("closed", 0))

    def connect(target: tuple[str, int]) -> Connection:
        attempts.append(target)
        if len(attempts) < 3:
            raise ConnectionRefusedError("refused")
        return Connection()

    wait_for_port("127.0.0.2", 41000, timeout_s=30, connect=connect, clock=clock, sleep=clock.sleep)
    assert attempts == [("127.0.0.2", 41000)] * 3 + [("closed", 0)]
    with pytest.raises(ClusterError, match=r"^the head's Ray port 127.0.0.2:41000 did not answer within 2 s \(refused\)$"):
        wait_for_port("127.0.0.2", 41000, timeout_s=2, connect=lambda _t: (_ for _ in ()).throw(ConnectionRefusedError("refused")), clock=clock, sleep=clock.sleep)


def test_deadline_interrupts_a_long_block() -> None:
    started = time.monotonic()
    with pytest.raises(ClusterError, match=r"^connecting took longer than 0.2 s$"), cluster.deadline(0.2, "connecting"):
        time.sleep(5)
    assert time.monotonic() - started < 2
    with cluster.deadline(5, "fast"):
        pass  # no alarm left behind
    time.sleep(0.1)


# --- RayNode on a stand-in command (no Ray) ------------------------------------------------------


def stand_in(script: str) -> list[str]:
    """A command that behaves like `ray start --block`: prints, forks a child in its session, blocks."""
    return [sys.executable, "-c", script]


STARTS_AND_BLOCKS = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('Ray runtime started.', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture
def ray_nodes() -> Iterator[list[RayNode]]:
    """RayNodes a test started; stopped at the end whatever happened."""
    started: list[RayNode] = []
    yield started
    for ray_node in started:
        ray_node.stop(grace_s=1.0)


def test_ray_node_starts_reports_running_and_stops_its_whole_session(tmp_path: Path, ray_nodes: list[RayNode]) -> None:
    ray_node = RayNode(stand_in(STARTS_AND_BLOCKS), dict(os.environ), tmp_path / "logs" / "ray.log")
    ray_nodes.append(ray_node)
    ray_node.start()
    ray_node.wait_started(30)
    assert ray_node.running()
    assert ray_node.process is not None
    pid = ray_node.process.pid
    deadline = time.monotonic() + 10
    while len(session_members(pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(session_members(pid)) == 2  # `ray start` and the child it forked
    ray_node.stop(grace_s=1.0)
    assert not ray_node.running()
    assert session_members(pid) == set()
    assert pid not in process_table()


def test_ray_node_reports_an_early_exit_with_its_output(tmp_path: Path, ray_nodes: list[RayNode]) -> None:
    ray_node = RayNode(stand_in("import sys; print('ConnectionError: GCS unreachable'); sys.exit(1)"), dict(os.environ), tmp_path / "ray.log")
    ray_nodes.append(ray_node)
    ray_node.start()
    with pytest.raises(ClusterError) as error:
        ray_node.wait_started(30)
    assert str(error.value) == "`ray start` exited with 1: ConnectionError: GCS unreachable"


def test_start_node_retries_until_the_deadline(tmp_path: Path, ray_nodes: list[RayNode]) -> None:
    scripts = iter(["import sys; print('not yet'); sys.exit(1)", STARTS_AND_BLOCKS])
    reports: list[str] = []

    def make() -> RayNode:
        ray_node = RayNode(stand_in(next(scripts)), dict(os.environ), tmp_path / "ray.log")
        ray_nodes.append(ray_node)
        return ray_node

    started = cluster.start_node(make, attempts_until=time.monotonic() + 60, start_timeout_s=30, report=reports.append)
    assert started is ray_nodes[1] and started.running()
    assert reports == ["ray start failed (attempt 1), retrying: `ray start` exited with 1: not yet"]


def test_start_node_gives_up_after_the_deadline(tmp_path: Path, ray_nodes: list[RayNode]) -> None:
    def make() -> RayNode:
        ray_node = RayNode(stand_in("import sys; print('refused'); sys.exit(2)"), dict(os.environ), tmp_path / "ray.log")
        ray_nodes.append(ray_node)
        return ray_node

    with pytest.raises(ClusterError, match=r"^the Ray node could not start after 1 attempt\(s\): `ray start` exited with 2: refused$"):
        cluster.start_node(make, attempts_until=time.monotonic(), start_timeout_s=30, report=lambda _m: None)


# --- the launcher on a multi-host job ---------------------------------------------------------------------


def test_launcher_on_a_host_outside_the_job_fails_with_a_reason(tmp_path: Path, sessions: list[int]) -> None:
    import subprocess

    from rlrunner.loader import load_spec
    from rlrunner.runner import plan

    spec, document = load_spec(BASIC_PPO, ())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "RLRUNNER_"))}
    env.update(plan(spec, spec_dir=document.base_dir, local=True).environment)
    env.update({"RLRUNNER_OPT_ML": str(tmp_path), "SM_HOSTS": '["algo-1", "algo-2"]', "SM_CURRENT_HOST": "algo-9"})
    process = subprocess.Popen(
        [sys.executable, "-m", "rlrunner.entry.train_unity"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    sessions.append(process.pid)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 4, out
    expected = "compute.instance_count: current_host 'algo-9' is not among the hosts ['algo-1', 'algo-2']"
    assert (tmp_path / "output" / "failure").read_text() == expected + "\n"
    assert f"rlrunner: error: {expected}" in out
