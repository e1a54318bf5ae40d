"""One Ray cluster out of a training job's hosts, formed with Ray's own `ray start` (no S3 signal files).

SageMaker starts the same container on hosts `algo-1..N` and names them in
`/opt/ml/input/config/resourceconfig.json`. The first host (sorted) is the head: it runs
`ray start --head --block` bound to its own address, waits until every host joined (or
`min_hosts` after `join_timeout_s`), trains as the driver, and at the end writes a "done" key into
Ray's internal KV. Every other host resolves the head, runs `ray start --address=<head>:<port>
--block` with its CPU/GPU counts (retrying until the head answers), then watches that key: it
exits 0 when the head is done, and non-zero when the head stays unreachable for `head_timeout_s`
or its own Ray node stops.

Addresses: on SageMaker host names resolve by DNS. The local backend emulates hosts on one machine
and names their addresses in RLRUNNER_HOST_ADDRESSES (`{"algo-1": "127.0.0.2", ...}`). Never
127.0.0.1: Ray replaces it by the machine's routable address (`resolve_ip_for_localhost`), so an
emulated cluster would talk over the network; other loopback addresses are kept as they are.
Ray's GCS and raylet listen on every interface whatever the node address (Ray 2.60 has no option
to change that); every address rlrunner connects to is the hosts' own, and with a token
(RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, which the local backend always sets) Ray rejects any
client without it.

Pure planning (`plan_cluster`, `head_command`, `worker_command`, `ray_environment`,
`wait_for_hosts`, `watch_head`) is apart from the few edge functions and classes that resolve
names, start `ray start`, and talk to the GCS; those take their collaborators as parameters.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlrunner.contract.cluster_env import ClusterError, ClusterSettings, read_cluster_settings

ACK_TIMEOUT_S = 15.0
POLL_S = 1.0
DONE_KEY = b"rlrunner/done"
ACK_PREFIX = b"rlrunner/ack/"
STARTED_MARKER = "Ray runtime started."
CLUSTER_FILE = "cluster.json"


# --------------------------------------------------------------------------------------------
# Plan (pure)


@dataclass(frozen=True)
class ClusterPlan:
    """Who is who in the cluster, from resourceconfig.json's hosts and current_host."""

    hosts: tuple[str, ...]
    """Every host, sorted; the first one is the head."""
    current_host: str
    """This host."""
    min_hosts: int
    """Hosts enough to train once join_timeout_s passed."""

    @property
    def head_host(self) -> str:
        """The host that runs the GCS and the driver."""
        return self.hosts[0]

    @property
    def is_head(self) -> bool:
        """Whether this host is the head."""
        return self.current_host == self.head_host

    @property
    def worker_hosts(self) -> tuple[str, ...]:
        """The hosts that only contribute a Ray node."""
        return self.hosts[1:]


def plan_cluster(hosts: Sequence[str], current_host: str, settings: ClusterSettings) -> ClusterPlan:
    """Head and workers of a multi-host job; rejects a current host that is not among the hosts."""
    ordered = tuple(sorted(set(hosts)))
    if len(ordered) < 2:
        raise ClusterError(f"a cluster needs at least 2 hosts (got {list(hosts)})")
    if current_host not in ordered:
        raise ClusterError(f"current_host {current_host!r} is not among the hosts {list(ordered)}")
    minimum = len(ordered) if settings.min_hosts is None else settings.min_hosts
    if not 1 <= minimum <= len(ordered):
        raise ClusterError(f"compute.cluster.min_hosts: must be between 1 and {len(ordered)} (got {minimum})")
    return ClusterPlan(hosts=ordered, current_host=current_host, min_hosts=minimum)


def check_node_address(host: str, address: str) -> str:
    """An IPv4 address Ray keeps as given (127.0.0.1 and names are rejected: Ray rewrites them)."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise ClusterError(f"host {host}: address {address!r} is not an IPv4 address") from None
    if ip == ipaddress.IPv4Address("127.0.0.1"):
        raise ClusterError(
            f"host {host}: address 127.0.0.1 cannot name a Ray node (Ray replaces it by this machine's "
            "routable address); emulated hosts need other loopback addresses such as 127.0.0.2"
        )
    return address


def node_cpus(num_cpus: int, env_runners: int | str, host_count: int) -> int:
    """CPUs one host advertises: its own, or more so that an explicit env runner count fits the cluster.

    Like the single-host launcher, an explicit `training.env_runners` above the CPUs is honoured by
    oversubscribing (one CPU for the driver's learner, one per env runner, spread evenly).
    """
    if env_runners == "auto":
        return num_cpus
    return max(num_cpus, math.ceil((1 + int(env_runners)) / host_count))


def common_arguments(*, address: str, num_cpus: int, num_gpus: int) -> list[str]:
    """`ray start` options every host passes."""
    return [
        "--block",
        f"--node-ip-address={address}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        "--disable-usage-stats",
        # Port 0: the OS picks one, so several emulated nodes (and other Ray instances) can share a machine.
        "--dashboard-agent-listen-port=0",
    ]


def head_command(settings: ClusterSettings, *, address: str, num_cpus: int, num_gpus: int, python: str = sys.executable) -> list[str]:
    """`ray start --head` on the head host, bound to its own address."""
    command = [python, "-m", "ray.scripts.scripts", "start", "--head", f"--port={settings.port}", "--include-dashboard=false"]
    command += common_arguments(address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    if settings.client_server_port is not None:
        command.append(f"--ray-client-server-port={settings.client_server_port}")
    if settings.temp_dir is not None:
        command.append(f"--temp-dir={settings.temp_dir}")
    return command


def worker_command(settings: ClusterSettings, *, address: str, head_address: str, num_cpus: int, num_gpus: int, python: str = sys.executable) -> list[str]:
    """`ray start --address=<head>:<port>` on a worker host."""
    command = [python, "-m", "ray.scripts.scripts", "start", f"--address={head_address}:{settings.port}"]
    return command + common_arguments(address=address, num_cpus=num_cpus, num_gpus=num_gpus)


def ray_variables(settings: ClusterSettings) -> dict[str, str]:
    """Variables Ray reads at import, for `ray start` and this process alike: offline, multi-node, explicit auth."""
    return {
        "RAY_USAGE_STATS_ENABLED": "0",
        # The single-host launcher turns this off (loopback-only mode); `ray start --address` refuses to run without it.
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1",
        # Explicit: otherwise Ray turns token mode on when it finds ~/.ray/auth_token, and not on every host.
        "RAY_AUTH_MODE": settings.auth,
    }


def ray_environment(base: Mapping[str, str], settings: ClusterSettings) -> dict[str, str]:
    """The environment of `ray start`: `base` without RAY_ADDRESS, plus `ray_variables`."""
    env = {key: value for key, value in base.items() if key != "RAY_ADDRESS"}
    env.update(ray_variables(settings))
    return env


def configure_process(settings: ClusterSettings, environ: Any = os.environ) -> None:
    """Set `ray_variables` in this process (before it imports ray: some are read once, at import)."""
    environ.pop("RAY_ADDRESS", None)
    environ.update(ray_variables(settings))


PROBE_TIMEOUT_S = 5.0
"""How long RLlib pings an env runner it lost before it trains on without it, in a cluster."""


def configure_algorithm(config: Any) -> Any:
    """RLlib settings for a multi-host run (on an `AlgorithmConfig`; returns it).

    When a host dies, Ray restarts its env runners elsewhere, but they wait for free CPUs that may
    never come back; RLlib pings such pending runners before every iteration and waits the whole
    probe timeout (30 s by default) each time. A short probe keeps training at speed meanwhile.
    """
    config.fault_tolerance(env_runner_health_probe_timeout_s=PROBE_TIMEOUT_S)
    return config


# --------------------------------------------------------------------------------------------
# Waiting (pure loops with injected clocks and probes)


@dataclass(frozen=True)
class NodeInfo:
    """One live Ray node, and the host it belongs to."""

    node_id: str
    address: str
    host: str
    cpus: float
    gpus: float

    def to_json(self) -> dict[str, Any]:
        """As cluster.json lists it."""
        return {"host": self.host, "address": self.address, "node_id": self.node_id, "cpus": self.cpus, "gpus": self.gpus}


def live_nodes(nodes: Sequence[Mapping[str, Any]], hosts_by_address: Mapping[str, str]) -> list[NodeInfo]:
    """The alive nodes of `ray.nodes()`, named by host (an address no host has is named by itself)."""
    found = []
    for node in nodes:
        if not node.get("Alive"):
            continue
        address = str(node.get("NodeManagerAddress", ""))
        resources = node.get("Resources") or {}
        found.append(
            NodeInfo(
                node_id=str(node.get("NodeID", "")),
                address=address,
                host=hosts_by_address.get(address, address),
                cpus=float(resources.get("CPU", 0.0)),
                gpus=float(resources.get("GPU", 0.0)),
            )
        )
    return sorted(found, key=lambda n: (n.host, n.node_id))


def wait_for_hosts(
    list_nodes: Callable[[], list[NodeInfo]],
    plan: ClusterPlan,
    *,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    report: Callable[[str], None] = lambda _message: None,
) -> list[NodeInfo]:
    """Wait until every host has a live node; after `timeout_s`, go on with at least `plan.min_hosts`."""
    deadline = clock() + timeout_s
    reported = -1
    while True:
        nodes = list_nodes()
        joined = {node.host for node in nodes} & set(plan.hosts)
        if len(joined) != reported:
            report(f"{len(joined)} of {len(plan.hosts)} hosts joined ({', '.join(sorted(joined)) or 'none'})")
            reported = len(joined)
        if len(joined) == len(plan.hosts):
            return nodes
        if clock() >= deadline:
            missing = ", ".join(h for h in plan.hosts if h not in joined)
            if len(joined) >= plan.min_hosts:
                report(f"going on with {len(joined)} hosts after {timeout_s:g} s; missing: {missing}")
                return nodes
            raise ClusterError(
                f"only {len(joined)} of {len(plan.hosts)} hosts joined the Ray cluster within {timeout_s:g} s "
                f"(missing: {missing}; at least {plan.min_hosts} needed)"
            )
        sleep(POLL_S)


@dataclass(frozen=True)
class HeadOutcome:
    """How a worker host's watch ended."""

    done: bool
    """The head finished (successfully or not) and said so."""
    detail: str
    """The head's status, or why the head counts as lost."""


def watch_head(
    read_done: Callable[[], bytes | None],
    node_running: Callable[[], bool],
    *,
    head_timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    poll_s: float = POLL_S,
) -> HeadOutcome:
    """Poll the head's done key until it appears, the head is unreachable too long, or the local node stops."""
    last_contact = clock()
    while True:
        try:
            value = read_done()
        except Exception as error:  # the GCS is unreachable: count the silence
            silent = clock() - last_contact
            if silent >= head_timeout_s:
                return HeadOutcome(False, f"the head was unreachable for {silent:.0f} s ({type(error).__name__})")
        else:
            last_contact = clock()
            if value is not None:
                return HeadOutcome(True, value.decode(errors="replace"))
        if not node_running():
            return HeadOutcome(False, "this host's Ray node stopped")
        sleep(poll_s)


# --------------------------------------------------------------------------------------------
# Edges: names, ports, `ray start`, the GCS


def resolve_address(
    host: str,
    settings: ClusterSettings,
    *,
    timeout_s: float,
    resolve: Callable[[str], str] = socket.gethostbyname,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """A host's address: the configured one, else DNS, retried (SageMaker's names appear with the hosts)."""
    if host in settings.host_addresses:
        return check_node_address(host, settings.host_addresses[host])
    deadline = clock() + timeout_s
    while True:
        try:
            return check_node_address(host, resolve(host))
        except OSError as error:
            if clock() >= deadline:
                raise ClusterError(f"host {host} does not resolve after {timeout_s:g} s: {error}") from None
        sleep(POLL_S)


def wait_for_port(
    address: str,
    port: int,
    *,
    timeout_s: float,
    connect: Callable[[tuple[str, int]], Any] = lambda target: socket.create_connection(target, timeout=2.0),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait until something accepts TCP connections on address:port."""
    deadline = clock() + timeout_s
    while True:
        try:
            connection = connect((address, port))
        except OSError as error:
            if clock() >= deadline:
                raise ClusterError(f"the head's Ray port {address}:{port} did not answer within {timeout_s:g} s ({error})") from None
            sleep(POLL_S)
        else:
            with contextlib.suppress(Exception):
                connection.close()
            return


class RayNode:
    """One `ray start --block` process in its own session, which its node's processes (GCS, raylet, agents) share.

    Stopping it never uses `ray stop`, which stops every Ray node of the machine (other runs' too).
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str], log_path: Path) -> None:
        self.command = list(command)
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._offset = 0

    def start(self) -> None:
        """Start `ray start` (its output goes to the log file)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115  (closed in stop())
        self._offset = self.log_path.stat().st_size
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )

    def output(self) -> str:
        """What this start wrote to the log so far."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(self._offset)
                return handle.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_started(self, timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        """Wait for Ray's "runtime started" line; raise if `ray start` exits first or takes too long."""
        assert self.process is not None
        deadline = clock() + timeout_s
        while STARTED_MARKER not in self.output():
            code = self.process.poll()
            if code is not None:
                raise ClusterError(f"`ray start` exited with {code}: {_tail(self.output())}")
            if clock() >= deadline:
                raise ClusterError(f"`ray start` did not report a running node within {timeout_s:g} s: {_tail(self.output())}")
            time.sleep(0.2)

    def running(self) -> bool:
        """Whether `ray start --block` still runs (it exits when one of its node's processes dies)."""
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM `ray start` (it drains and stops its node), then stop whatever is left of its session."""
        from rlrunner.processes import session_members, terminate

        process = self.process
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=grace_s)
            terminate(session_members(process.pid) | {process.pid}, grace_s=2.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None


def _tail(text: str, lines: int = 6) -> str:
    kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"


def start_node(
    make_node: Callable[[], RayNode], *, attempts_until: float, start_timeout_s: float, report: Callable[[str], None], clock: Callable[[], float] = time.monotonic
) -> RayNode:
    """Start a Ray node, retrying (a worker may race the head's start) until `attempts_until`."""
    attempt = 0
    while True:
        attempt += 1
        node = make_node()
        node.start()
        try:
            node.wait_started(min(start_timeout_s, max(attempts_until - clock(), 1.0)))
            return node
        except ClusterError as error:
            node.stop(grace_s=5.0)
            if clock() >= attempts_until:
                raise ClusterError(f"the Ray node could not start after {attempt} attempt(s): {error}") from None
            report(f"ray start failed (attempt {attempt}), retrying: {error}")
            time.sleep(POLL_S)


@contextlib.contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Raise ClusterError in the main thread if the block runs longer than `seconds` (SIGALRM)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(_signum: int, _frame: Any) -> None:
        raise ClusterError(f"{what} took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    # ray.init replaces the SIGTERM handler (with sys.exit); the launcher's own handler writes the failure file.
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


def gcs_client(address: str) -> Any:
    """A plain GCS client (no driver, no job) for the KV signals."""
    from ray._raylet import GcsClient  # type: ignore[attr-defined]

    return GcsClient(address=address)


# --------------------------------------------------------------------------------------------
# The two roles


def log(message: str) -> None:
    """A cluster message in the launcher's log."""
    print(f"rlrunner: cluster: {message}", flush=True)


@dataclass
class HeadCluster:
    """The head's view of a formed cluster, while the driver trains."""

    plan: ClusterPlan
    settings: ClusterSettings
    address: str
    node: RayNode
    hosts_by_address: dict[str, str]
    started_s: float
    nodes: list[NodeInfo] = field(default_factory=list)
    formation_s: float | None = None
    env_runners: dict[str, str] = field(default_factory=dict)
    connected: bool = False

    @property
    def gcs_address(self) -> str:
        """`<head address>:<port>`."""
        return f"{self.address}:{self.settings.port}"

    @property
    def num_cpus(self) -> int:
        """CPUs of every live node: what `env_runners: auto` divides."""
        return int(sum(node.cpus for node in self.nodes))

    def connect(self) -> None:
        """Attach this process to the cluster as its driver (idempotent; bounded by start_timeout_s)."""
        if self.connected:
            return
        import logging

        import ray

        with deadline(self.settings.start_timeout_s, f"connecting the driver to {self.gcs_address}"), _keep_signal_handlers():
            ray.init(
                address=self.gcs_address,
                _node_ip_address=self.address,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=True,
            )
        self.connected = True

    def list_nodes(self) -> list[NodeInfo]:
        """The cluster's live nodes, now (worker hosts that do not resolve yet are named by address)."""
        import ray

        for host in self.plan.worker_hosts:
            if host not in self.hosts_by_address.values():
                with contextlib.suppress(ClusterError):
                    self.hosts_by_address[resolve_address(host, self.settings, timeout_s=0)] = host
        return live_nodes(ray.nodes(), self.hosts_by_address)  # type: ignore[no-untyped-call]

    def wait_for_hosts(self) -> list[NodeInfo]:
        """Block until the hosts joined (see `wait_for_hosts`); remember the nodes and the formation time."""
        self.connect()
        self.nodes = wait_for_hosts(self.list_nodes, self.plan, timeout_s=self.settings.join_timeout_s, report=log)
        self.formation_s = time.monotonic() - self.started_s
        summary = ", ".join(f"{n.host}@{n.address} ({n.cpus:g} CPU, {n.gpus:g} GPU)" for n in self.nodes)
        log(f"formed in {self.formation_s:.1f} s: {summary}")
        return self.nodes

    def record_env_runners(self, algo: Any) -> dict[str, str]:
        """Where each env runner actor lives (worker index → host), logged and kept for cluster.json."""
        placement = env_runner_hosts(algo, self.list_nodes())
        self.env_runners = placement
        log("env runners: " + ", ".join(f"{index}@{host}" for index, host in sorted(placement.items(), key=lambda kv: int(kv[0]))))
        return placement

    def to_json(self) -> dict[str, Any]:
        """cluster.json: hosts, nodes, formation time, env runner placement."""
        return {
            "head": self.plan.head_host,
            "hosts": list(self.plan.hosts),
            "address": self.gcs_address,
            "ray_temp_dir": self.settings.temp_dir,
            "formation_s": None if self.formation_s is None else round(self.formation_s, 3),
            "num_cpus": self.num_cpus,
            "nodes": [node.to_json() for node in self.nodes],
            "env_runners": self.env_runners,
        }


def env_runner_hosts(algo: Any, nodes: Sequence[NodeInfo]) -> dict[str, str]:
    """Worker index → host of every healthy remote env runner of an RLlib algorithm."""

    def where(runner: Any) -> tuple[int, str]:
        import ray

        return int(runner.worker_index), ray.get_runtime_context().get_node_id()

    hosts_by_node = {node.node_id: node.host for node in nodes}
    pairs = algo.env_runner_group.foreach_env_runner(where, local_env_runner=False)
    return {str(index): hosts_by_node.get(node_id, node_id) for index, node_id in pairs}


@contextlib.contextmanager
def head_cluster(
    plan: ClusterPlan,
    settings: ClusterSettings,
    *,
    num_cpus: int,
    num_gpus: int,
    log_dir: Path,
    record_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Iterator[HeadCluster]:
    """Start the head node, connect the driver, wait for the hosts; on exit tell the workers and stop the node.

    The workers learn that the head is done from the `rlrunner/done` KV key (value: "ok" or
    "failed: <reason>"); the head waits a few seconds for their acknowledgements, so their exit
    does not race the GCS going away.
    """
    started = time.monotonic()
    env = ray_environment(os.environ if environ is None else environ, settings)
    address = resolve_address(plan.head_host, settings, timeout_s=settings.join_timeout_s)
    log(f"{plan.current_host} is the head; starting Ray at {address}:{settings.port} ({num_cpus} CPU, {num_gpus} GPU)")
    command = head_command(settings, address=address, num_cpus=num_cpus, num_gpus=num_gpus)
    node = start_node(
        lambda: RayNode(command, env, log_dir / "ray-head.log"),
        attempts_until=time.monotonic() + settings.start_timeout_s,
        start_timeout_s=settings.start_timeout_s,
        report=log,
    )
    cluster = HeadCluster(plan, settings, address, node, {address: plan.head_host}, started)
    status = "failed: the head stopped before training ended"
    try:
        cluster.wait_for_hosts()
        yield cluster
        status = "ok"
    except BaseException as error:
        status = f"failed: {type(error).__name__}: {error}"[:500]
        raise
    finally:
        if record_dir is not None:
            with contextlib.suppress(OSError):
                record_dir.mkdir(parents=True, exist_ok=True)
                (record_dir / CLUSTER_FILE).write_text(json.dumps(cluster.to_json(), indent=2) + "\n")
        _finish_head(cluster, status)


def _finish_head(cluster: HeadCluster, status: str) -> None:
    alive = {node.host for node in cluster.nodes}
    if "ray" in sys.modules:
        import ray

        with contextlib.suppress(Exception):
            if ray.is_initialized():
                alive = {node.host for node in cluster.list_nodes()}  # a lost worker host cannot acknowledge
                ray.shutdown()
    if cluster.node.running():
        try:
            client = gcs_client(cluster.gcs_address)
            client.internal_kv_put(DONE_KEY, status.encode(), True, None, timeout=5)
            log(f"told the workers the head is done ({status.split(':')[0]})")
            waiting = set(cluster.plan.worker_hosts) & alive
            deadline_s = time.monotonic() + ACK_TIMEOUT_S
            while waiting and time.monotonic() < deadline_s:
                waiting = {h for h in waiting if client.internal_kv_get(ACK_PREFIX + h.encode(), None, timeout=5) is None}
                if waiting:
                    time.sleep(0.2)
            if waiting:
                log(f"no acknowledgement from {', '.join(sorted(waiting))}; stopping anyway")
        except Exception as error:
            log(f"could not tell the workers ({type(error).__name__}: {error}); they stop when the head is gone")
    cluster.node.stop()


def run_worker_host(
    plan: ClusterPlan, settings: ClusterSettings, *, num_cpus: int, num_gpus: int, log_dir: Path, environ: Mapping[str, str] | None = None
) -> str:
    """Join the head's cluster and stay until it is done; return its status, raise ClusterError if it is lost."""
    started = time.monotonic()
    env = ray_environment(os.environ if environ is None else environ, settings)
    join_by = started + settings.join_timeout_s
    address = resolve_address(plan.current_host, settings, timeout_s=settings.join_timeout_s)
    head_address = resolve_address(plan.head_host, settings, timeout_s=max(join_by - time.monotonic(), 0.0))
    log(f"{plan.current_host} is a worker; waiting for the head {plan.head_host} at {head_address}:{settings.port}")
    wait_for_port(head_address, settings.port, timeout_s=max(join_by - time.monotonic(), 0.0))
    command = worker_command(settings, address=address, head_address=head_address, num_cpus=num_cpus, num_gpus=num_gpus)
    node = start_node(
        lambda: RayNode(command, env, log_dir / f"ray-{plan.current_host}.log"),
        attempts_until=join_by,
        start_timeout_s=settings.start_timeout_s,
        report=log,
    )
    stop_grace_s = 15.0
    try:
        log(f"joined the cluster at {head_address}:{settings.port} as {address} in {time.monotonic() - started:.1f} s ({num_cpus} CPU, {num_gpus} GPU)")
        client = gcs_client(f"{head_address}:{settings.port}")
        outcome = watch_head(
            lambda: client.internal_kv_get(DONE_KEY, None, timeout=5), node.running, head_timeout_s=settings.head_timeout_s
        )
        if not outcome.done:
            stop_grace_s = 1.0  # draining needs the GCS, which is gone
            raise ClusterError(f"{outcome.detail}; leaving the cluster")
        log(f"the head is done ({outcome.detail.split(':')[0]}); leaving the cluster")
        with contextlib.suppress(Exception):
            client.internal_kv_put(ACK_PREFIX + plan.current_host.encode(), b"1", True, None, timeout=5)
        return outcome.detail
    finally:
        node.stop(grace_s=stop_grace_s)


__all__ = [
    "CLUSTER_FILE",
    "ClusterError",
    "ClusterPlan",
    "ClusterSettings",
    "HeadCluster",
    "HeadOutcome",
    "NodeInfo",
    "RayNode",
    "check_node_address",
    "configure_algorithm",
    "configure_process",
    "env_runner_hosts",
    "head_cluster",
    "head_command",
    "live_nodes",
    "node_cpus",
    "plan_cluster",
    "ray_environment",
    "ray_variables",
    "read_cluster_settings",
    "resolve_address",
    "run_worker_host",
    "wait_for_hosts",
    "wait_for_port",
    "watch_head",
    "worker_command",
]
