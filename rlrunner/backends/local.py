"""The local backend: emulate SageMaker's training container on this machine, in a run directory.

The run directory (`rlrunner.contract.run_dir`) doubles as the container's `/opt/ml` tree
(code/, input/config/, model/, output/, checkpoints/), laid out by `rlrunner.contract.sagemaker_container`
exactly as the platform lays it, and keeps the run's own files: the resolved spec, its hash, the git
commit, `run.json`, `metrics.csv`, `launcher.log`, `learning_curve.png`. The launcher runs as
SageMaker's toolkit runs it (the entry script in the code dir, the hyperparameters as arguments, the
plan's environment variables plus the toolkit's SM_* ones), trains, exports and evaluates into
`model/evaluation.json`.

With `hosts=N` it emulates an N-instance job: one launcher per host (`algo-1..N`), each with its
own /opt/ml tree and `current_host` (the head's tree is the run dir itself, the others'
`hosts/algo-<i>/` inside it), forming one Ray cluster on loopback addresses 127.0.0.2, 127.0.0.3, …
with a token only this run knows (`rlrunner.contract.cluster_env`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlrunner.contract import model_dir as model_files
from rlrunner.contract.cluster_env import HOST_ADDRESSES_VAR, PORT_VAR, emulation_environment
from rlrunner.contract.errors import EXIT_FAILED, EXIT_INFRA, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, UsageError
from rlrunner.contract.identity import describe_changes, hash_identity, run_identity
from rlrunner.contract.metrics import parse_metrics_line
from rlrunner.contract.run_dir import (
    CURVE_FILE,
    LOG_FILE,
    METRICS_FILE,
    RUN_FILE,
    SPEC_FILE,
    MetricsTable,
    RunDir,
    atomic_write_json,
    check_outside_sources,
    check_run_dir,
    default_run_dir,
    read_json,
    update_record,
    write_run_files,
)
from rlrunner.contract.sagemaker_container import (
    DEFAULT_HOST,
    container_environment,
    copy_code,
    launcher_command,
    write_input_config,
)
from rlrunner.contract.unity_model import unity_model_files
from rlrunner.runner import JobPlan
from rlrunner.schema import ExperimentSpec

WORKER_EXIT_GRACE_S = 90.0
"""Seconds emulated worker hosts get to leave the cluster after the head's launcher exited."""
DISK_RESERVE_FILE = ".disk_reserve"
DISK_RESERVE_BYTES = 1024 * 1024
"""Space a run dir holds back while the launcher runs, freed for the final records (run.json, metrics, curve)."""
STOP_GRACE_S = 120.0
"""Seconds the launcher gets after SIGTERM (finish the iteration, checkpoint, stop Ray and the players) before SIGKILL:
what SageMaker gives a stopped job."""


# --------------------------------------------------------------------------------------------
# The run directory as the container's /opt/ml


def prepare_run_dir(
    run: RunDir, spec: ExperimentSpec, plan: JobPlan, *, spec_dir: Path, resume: bool, invocation: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Lay out the /opt/ml tree and the run files; return the run record (run.json).

    `invocation`: how the run was asked for (spec file, --set overrides), kept in run.json.
    """
    identity = run_identity(spec)
    changes = check_run_dir(run, identity, resume=resume, record_file=RUN_FILE)
    previous = (read_json(run.file(RUN_FILE)) or {}) if resume else {}
    check_outside_sources(run, plan.estimator.get("dependencies", []))
    run.make()
    run.failure.unlink(missing_ok=True)
    lay_out_host(run, plan)
    git = write_run_files(run, spec.to_data(), hash_identity(identity), spec_dir)
    changed = {path: list(change) for path, change in changes.items()}
    continued = [*previous.get("continued", []), {"from_run_id": previous.get("run_id"), "changes": changed}] if changes else previous.get("continued", [])
    record = {
        "run_id": plan.run_id,
        "spec_hash": hash_identity(identity),
        "name": spec.name,
        "backend": "local",
        "git_commit": git[0] if git else None,
        "git_dirty": git[1] if git else None,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "resumed": resume,
        "resume_changes": changed,
        "continued": continued,
        "identity": identity,
        **(invocation or {}),
        "plan": plan.to_json(),
    }
    atomic_write_json(run.file(RUN_FILE), record)
    return record


def lay_out_host(tree: RunDir, plan: JobPlan, *, host: str = DEFAULT_HOST, hosts: tuple[str, ...] = (DEFAULT_HOST,)) -> None:
    """One host's /opt/ml as the platform prepares it: the code dir and input/config."""
    tree.make()
    copy_code(tree, Path(plan.estimator["source_dir"]), plan.estimator.get("dependencies", []))
    write_input_config(tree, hyperparameters=plan.estimator.get("hyperparameters", {}), channels=list(plan.fit_inputs or {}), host=host, hosts=hosts)


def launcher_environment(
    tree: RunDir, plan: JobPlan, *, num_cpus: int, base: Mapping[str, str], host: str = DEFAULT_HOST, hosts: tuple[str, ...] = (DEFAULT_HOST,)
) -> dict[str, str]:
    """The container environment of one emulated host; a source checkout without installation still finds rlrunner."""
    channels = {name: Path(path) for name, path in (plan.fit_inputs or {}).items() if not str(path).startswith("s3://")}
    env = container_environment(
        tree, plan_environment=plan.environment, hyperparameters=plan.estimator.get("hyperparameters", {}), channels=channels,
        job_name=f"{plan.estimator.get('base_job_name', 'rlrunner')}-local", num_cpus=num_cpus, base=base, host=host, hosts=hosts,
    )  # fmt: skip
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, base.get("PYTHONPATH", "")) if p)
    return env


# --------------------------------------------------------------------------------------------
# Metrics: CSV, progress, learning curve


def curve_lines(rows: Iterable[Mapping[str, float]], *, evaluation: float | None = None, target: float | None = None) -> dict[str, Any]:
    """What the learning curve draws: return mean (with its min-max band) and env steps per second over steps,
    the greedy evaluation at the last step and the target return (`training.stop.episode_return_mean`)."""
    points = [r for r in rows if "timesteps" in r and "episode_return_mean" in r]
    steps = [r["timesteps"] for r in points]
    banded = all("episode_return_min" in r and "episode_return_max" in r for r in points)
    return {
        "steps": steps,
        "mean": [r["episode_return_mean"] for r in points],
        "band": ([r["episode_return_min"] for r in points], [r["episode_return_max"] for r in points]) if banded else None,
        "steps_per_s": [(r["timesteps"], r["env_steps_per_s"]) for r in points if "env_steps_per_s" in r],
        "evaluation": (steps[-1], evaluation) if steps and evaluation is not None else None,
        "target": target,
    }


def _single_target(target: float | Mapping[str, float] | None) -> float | None:
    """The return the curve marks: the stop criterion when it is one number (not one per behaviour)."""
    return target if isinstance(target, float) else None


def plot_learning_curve(
    rows: Iterable[Mapping[str, float]], path: Path, *, title: str, evaluation: float | None = None, target: float | None = None
) -> Path | None:
    """The learning curve as a PNG (`curve_lines`); None without data."""
    lines = curve_lines(rows, evaluation=evaluation, target=target)
    if not lines["steps"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = lines["steps"]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if lines["band"] is not None:
            axes.fill_between(steps, *lines["band"], alpha=0.2, label="min-max")
        axes.plot(steps, lines["mean"], marker="o", markersize=3, label="mean return")
        if lines["evaluation"] is not None:
            axes.plot(*lines["evaluation"], marker="*", markersize=12, linestyle="none", color="tab:green",
                      label=f"greedy evaluation {lines['evaluation'][1]:.3f}")  # fmt: skip
        if target is not None:
            axes.axhline(target, linestyle="--", color="tab:red", linewidth=1, label=f"target {target:g}")
        if lines["steps_per_s"]:
            speed = axes.twinx()
            speed.plot(*zip(*lines["steps_per_s"], strict=True), color="tab:gray", linewidth=1, alpha=0.6)
            speed.set_ylabel("env steps per second", color="tab:gray")
        axes.set_xlabel("environment steps")
        axes.set_ylabel("episode return")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right", fontsize=8)
        figure.tight_layout()
        figure.savefig(path)
    finally:
        plt.close(figure)
    return path


class Progress:
    """What the user sees while the launcher runs: a rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, stream: IO[str], *, total: float | None, unit: str, bar: bool) -> None:
        self.stream = stream
        self.total = total
        self.unit = unit
        self._bar: Any = None
        self._task: Any = None
        if bar:
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
                from rich.progress import Progress as RichProgress
            except ImportError:
                bar = False
            else:
                console = Console(file=stream)
                self._bar = RichProgress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(bar_width=20),
                    MofNCompleteColumn(),
                    TextColumn(unit),
                    TextColumn("{task.fields[speed]}"),
                    TextColumn("{task.fields[ret]}"),
                    TextColumn("ETA"),
                    TimeRemainingColumn(),
                    console=console,
                    transient=False,
                )
                self._task = self._bar.add_task("training", total=total, ret="", speed="")

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def line(self, text: str) -> None:
        """A launcher output line."""
        if self._bar is not None:
            self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def metrics(self, values: Mapping[str, float], done: float | None) -> None:
        """An iteration finished."""
        if self._bar is None:
            return
        mean = values.get("episode_return_mean")
        ret = f"return {mean:.3f}" if mean is not None else ""
        rate = values.get("env_steps_per_s")
        speed = f"{rate:.0f} steps/s" if rate is not None else ""
        self._bar.update(self._task, completed=done or 0, ret=ret, speed=speed)


_SHOWN_MARKERS = ("Error", "ERROR", "Exception")
_HIDDEN_MARKERS = ("WARNING", "Warning")


class ConsoleFilter:
    """Which launcher lines the console shows, on a terminal or not: rlrunner's own lines, metrics lines, errors and
    whole tracebacks. Ray's and RLlib's warnings (deprecations, the new API stack notice) and internal lines stay in
    launcher.log."""

    def __init__(self) -> None:
        self.in_traceback = False

    def __call__(self, line: str) -> bool:
        if self.in_traceback:  # a traceback's frames are indented; its last line (the exception) is not
            self.in_traceback = line.startswith((" ", "\t", "Traceback")) or not line
            return True
        if line.startswith("Traceback"):
            self.in_traceback = True
            return True
        if line.startswith(("rlrunner:", "rlrunner-metrics ")):
            return True
        return not any(marker in line for marker in _HIDDEN_MARKERS) and any(marker in line for marker in _SHOWN_MARKERS)


def progress_target(spec: ExperimentSpec) -> tuple[str, float | None]:
    """What the progress bar counts: timesteps, else iterations, else seconds."""
    stop = spec.training.stop
    if stop.timesteps is not None:
        return "timesteps", float(stop.timesteps)
    if stop.iterations is not None:
        return "iteration", float(stop.iterations)
    if stop.time_s is not None:
        return "time_s", float(stop.time_s)
    return "timesteps", None


# --------------------------------------------------------------------------------------------
# Running the launcher


class RunDirWriter:
    """launcher.log, and a guard for the other run-dir writes: a full disk is reported once and the run is still followed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: IO[str] | None = open(path, "a")  # noqa: SIM115 (closed in __exit__)
        self.report: Callable[[str], None] = lambda line: print(line, file=sys.stderr)
        self.failed = False

    def __enter__(self) -> RunDirWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.close()
            self.handle = None

    def write(self, text: str) -> None:
        """Append to launcher.log (and flush)."""
        if self.handle is not None:
            self.guard(self._append, text)

    def _append(self, text: str) -> None:
        assert self.handle is not None
        self.handle.write(text)
        self.handle.flush()

    def guard(self, action: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a write into the run dir; an OSError (a full disk) is reported once, and the value is None."""
        try:
            return action(*args, **kwargs)
        except OSError as error:
            if not self.failed:
                self.failed = True
                where = error.filename or self.path.parent
                self.report(f"rlrunner: warning: cannot write to the run directory ({where}): {error.strerror or error}")
            return None


@dataclass
class LocalRunResult:
    """What a local run produced."""

    run_dir: Path
    exit_code: int
    launcher_exit: int | None = None
    status: str = "failed"
    """`completed`, `stopped` (SIGTERM/SIGINT: a checkpoint to resume from) or `failed`."""
    by_user: bool = False
    """Stopped by Ctrl-C (or SIGTERM) to this process, not by a signal to the launcher itself."""
    failure: str | None = None
    metrics: dict[str, float] | None = None
    evaluation: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    hosts: dict[str, int | None] | None = None
    """Emulated multi-host runs: each host's launcher exit status."""
    cluster: dict[str, Any] | None = None
    """Emulated multi-host runs: the hosts' addresses, the GCS address and Ray's temp dir."""

    def to_json(self) -> dict[str, Any]:
        """The result as `rlrunner run --output json` prints it."""
        return {
            "run_dir": str(self.run_dir),
            "exit_code": self.exit_code,
            "status": self.status,
            "launcher_exit": self.launcher_exit,
            "hosts": self.hosts,
            "cluster": self.cluster,
            "failure": self.failure,
            "metrics": self.metrics,
            "evaluation": None if self.evaluation is None else {k: v for k, v in self.evaluation.items() if k != "returns"},
            "files": self.files,
        }


def map_exit(code: int) -> int:
    """The launcher's exit status as rlrunner's exit code."""
    if code == 0:
        return EXIT_OK
    if code in (EXIT_INVALID, EXIT_INFRA, EXIT_FAILED):
        return code
    if code in (-signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM):
        return EXIT_INTERRUPTED
    if code < 0:
        return EXIT_INFRA  # killed by a signal (out of memory, SIGKILL)
    return EXIT_FAILED


def run_local(
    spec: ExperimentSpec,
    plan: JobPlan,
    *,
    spec_dir: Path,
    run_dir: Path | None = None,
    resume: bool = False,
    stream: IO[str] | None = None,
    bar: bool | None = None,
    num_cpus: int | None = None,
    environ: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    hosts: int = 1,
    on_host_start: Callable[[str, subprocess.Popen[str]], None] | None = None,
    image: str | None = None,
    invocation: Mapping[str, Any] | None = None,
) -> LocalRunResult:
    """Train locally through the container launcher; keep everything in the run dir.

    `hosts` > 1 emulates that many instances (see the module docstring); `on_host_start(host,
    process)` sees every host's launcher start. `image` runs the launcher in that image instead of this
    machine's Python (`rlrunner.backends.image`; one host).
    """
    from rlrunner.backends import image as in_image
    from rlrunner.processes import run_processes, terminate

    if image is not None and hosts > 1:
        raise UsageError("--image: runs one host (drop --hosts)")
    docker = in_image.docker_executable() if image is not None else ""

    stream = sys.stdout if stream is None else stream
    run = RunDir(run_dir if run_dir is not None else default_run_dir(spec.name, plan.run_id))
    record = prepare_run_dir(run, spec, plan, spec_dir=spec_dir, resume=resume, invocation=invocation)
    if record["resume_changes"]:
        changes = describe_changes({path: (old, new) for path, (old, new) in record["resume_changes"].items()})
        stream.write(f"rlrunner: continuing run {record['continued'][-1]['from_run_id']} in {run.root} as run {plan.run_id}: {changes}\n")
    reserve = run.file(DISK_RESERVE_FILE)
    with contextlib.suppress(OSError):  # freed at the end, so that a full disk still gets its final records
        reserve.write_bytes(b"\0" * DISK_RESERVE_BYTES)
    cpus = num_cpus or os.cpu_count() or 1
    base = os.environ if environ is None else environ
    host_names = tuple(f"algo-{index}" for index in range(1, hosts + 1))
    env = launcher_environment(run, plan, num_cpus=cpus, base=base, host=host_names[0], hosts=host_names)
    command, cwd = launcher_command(run, plan.estimator.get("hyperparameters", {})), run.code
    if image is not None:
        name, job_name = in_image.container_name(plan.run_id), env["TRAINING_JOB_NAME"]
        in_image.lay_out_image_config(run, plan, job_name=job_name)
        command, env = in_image.docker_run_command(run, plan, image, name=name, job_name=job_name, base=base, docker=docker)
        cwd = run.root
    emulation = EmulatedHosts.start(run, plan, host_names, num_cpus=cpus, base=base) if hosts > 1 else None
    if emulation is not None:
        lay_out_host(run, plan, host=host_names[0], hosts=host_names)
        env.update(emulation.environment)
        if on_host_start is not None:
            for host, worker in emulation.processes.items():
                on_host_start(host, worker)
    table = MetricsTable(run.file(METRICS_FILE))
    unit, total = progress_target(spec)
    show_bar = stream.isatty() if bar is None else bar
    started = time.monotonic()
    first_iteration_s: float | None = None
    shown = ConsoleFilter()
    if show_bar:
        stream.write(f"rlrunner: run {plan.run_id} in {run.root} (full launcher output: {run.file(LOG_FILE)})\n")
    with RunDirWriter(run.file(LOG_FILE)) as log, Progress(stream, total=total, unit=unit, bar=show_bar) as progress:
        log.report = progress.line
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the backend only; it stops the launcher in order
        )
        update_record(run.file(RUN_FILE), launcher_pid=process.pid)
        if on_start is not None:
            on_start(process)
        if on_host_start is not None:
            on_host_start(host_names[0], process)
        interrupted = False

        def follow() -> None:
            nonlocal first_iteration_s
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                log.write(raw)
                values = parse_metrics_line(line)
                if values is None:
                    if shown(line):
                        progress.line(line)
                    continue
                if first_iteration_s is None:
                    first_iteration_s = time.monotonic() - started
                log.guard(table.add, values)
                progress.metrics(values, values.get(unit))
                if not show_bar:
                    progress.line(line)

        # SIGTERM to this process is a Ctrl-C: a stop, never an orphaned launcher (signals only in the main thread)
        main_thread = threading.current_thread() is threading.main_thread()
        previous_term = signal.signal(signal.SIGTERM, signal.default_int_handler) if main_thread else None
        try:
            follow()
            code = process.wait()
        except KeyboardInterrupt:
            interrupted = True
            progress.line(
                f"rlrunner: stopping: the launcher finishes the iteration in flight and writes a checkpoint (at most {STOP_GRACE_S:.0f} s)"
            )
            code = stop_launcher(process, follow=follow)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous_term)
            if process.poll() is None:
                stop_launcher(process)
            if process.stdout is not None:
                process.stdout.close()
            if image is not None:
                in_image.remove_container(name, docker)
            # The launcher's session (Ray), what hangs below it (players have their own sessions), and
            # players logging into this run dir (one orphaned by a crashed Ray worker); nothing else.
            launchers = [process.pid]
            if emulation is not None:
                emulation.finish(progress.line, interrupted=interrupted)
                launchers += [worker.pid for worker in emulation.processes.values()]
            player_logs = f"-logFile\0{(run.output_data / 'players').resolve()}"
            leftovers = run_processes(sessions=launchers, roots=launchers, mention=player_logs)
            for mark in emulation.marks if emulation is not None else ():
                leftovers |= run_processes(mention=mark)
            if leftovers:
                terminate(leftovers)
            if emulation is not None:
                emulation.remove_secrets()
    stopped = code == 0 and run.stopped.is_file()
    result = LocalRunResult(run_dir=run.root, exit_code=EXIT_INTERRUPTED if interrupted or stopped else map_exit(code), launcher_exit=code)
    result.by_user = interrupted
    result.status = "stopped" if stopped else ("completed" if result.exit_code == EXIT_OK else "failed")
    if emulation is not None:
        result.hosts = {host_names[0]: code, **emulation.exits}
        result.cluster = emulation.description
    result.metrics = table.last
    if run.failure.is_file():
        result.failure = run.failure.read_text().strip() or None
    reserve.unlink(missing_ok=True)
    if result.exit_code == EXIT_OK:
        result.evaluation = model_files.read_evaluation(run.model)
    curve = log.guard(
        plot_learning_curve, table.rows, run.file(CURVE_FILE), title=f"{spec.name} ({plan.run_id})", target=_single_target(spec.training.stop.episode_return_mean),
        evaluation=None if result.evaluation is None else result.evaluation.get("mean"),
    )  # fmt: skip
    result.files = {
        name: str(path)
        for name, path in (
            ("spec", run.file(SPEC_FILE)),
            ("metrics", run.file(METRICS_FILE)),
            ("log", run.file(LOG_FILE)),
            ("learning_curve", curve),
            ("model", run.model),
            ("checkpoints", run.checkpoints),
            ("evaluation", run.model / model_files.EVALUATION_FILE),
        )
        if path is not None and Path(path).exists()
    }
    result.files.update({f"unity_model:{name}": str(path) for name, path in unity_model_files(run.model).items()})
    log.guard(
        update_record,
        run.file(RUN_FILE),
        finished=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        wall_s=round(time.monotonic() - started, 3),
        first_iteration_s=None if first_iteration_s is None else round(first_iteration_s, 3),
        **{key: value for key, value in result.to_json().items() if key not in ("run_dir", "files")},
    )
    return result


@dataclass
class EmulatedHosts:
    """The worker hosts of an emulated multi-host run: their launchers, and what the cluster shares."""

    run: RunDir
    environment: dict[str, str]
    """Cluster variables every host gets (addresses, ports, Ray temp dir, token file)."""
    temp_dir: Path
    token: Path
    processes: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    exits: dict[str, int | None] = field(default_factory=dict)

    @classmethod
    def start(cls, run: RunDir, plan: JobPlan, hosts: tuple[str, ...], *, num_cpus: int, base: Mapping[str, str]) -> EmulatedHosts:
        """Lay out the worker hosts' trees, make the cluster's token, and start their launchers."""
        import secrets
        import tempfile

        from rlrunner.unity.ports import free_port

        # Ray's Unix sockets live under its temp dir: keep its path short (a socket path has 107 bytes).
        temp_dir = Path(tempfile.mkdtemp(prefix="rlr-", dir="/tmp"))
        token = run.root.resolve() / ".ray_auth_token"
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
        environment = emulation_environment(
            hosts, port=free_port(), client_server_port=free_port(), temp_dir=str(temp_dir), token_path=str(token)
        )
        emulation = cls(run, environment, temp_dir, token)
        try:
            for host in hosts[1:]:
                tree = run.host(host)
                lay_out_host(tree, plan, host=host, hosts=hosts)
                env = launcher_environment(tree, plan, num_cpus=num_cpus, base=base, host=host, hosts=hosts)
                env.update(environment)
                with open(tree.file(LOG_FILE), "a") as log:
                    emulation.processes[host] = subprocess.Popen(
                        launcher_command(tree, plan.estimator.get("hyperparameters", {})), cwd=tree.code, env=env, stdout=log,
                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True,
                    )  # fmt: skip
        except BaseException:
            emulation.finish(lambda _line: None, interrupted=True)
            emulation.remove_secrets()
            raise
        return emulation

    def finish(self, report: Callable[[str], None], *, interrupted: bool) -> None:
        """After the head's launcher exited: give the workers time to leave the cluster, then stop them."""
        deadline = time.monotonic() + (0.0 if interrupted else WORKER_EXIT_GRACE_S)
        for host, process in self.processes.items():
            try:
                code: int | None = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                code = stop_launcher(process)
            self.exits[host] = code
            if code != 0:
                report(f"rlrunner: host {host} exited with {code} (log: {self.run.host(host).file(LOG_FILE)})")

    @property
    def description(self) -> dict[str, Any]:
        """Where the cluster lived: host addresses, the head's GCS address, Ray's temp dir."""
        import json

        addresses = json.loads(self.environment[HOST_ADDRESSES_VAR])
        head = addresses[min(addresses)]
        return {"addresses": addresses, "address": f"{head}:{self.environment[PORT_VAR]}", "ray_temp_dir": str(self.temp_dir)}

    @property
    def marks(self) -> tuple[str, ...]:
        """What the command line of every Ray process of this cluster contains (to find ones a killed launcher orphaned)."""
        return (self.description["ray_temp_dir"], self.description["address"])

    def remove_secrets(self) -> None:
        """The token and Ray's temp dir (sockets, session logs) are worth nothing after the run."""
        self.token.unlink(missing_ok=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def stop_launcher(process: subprocess.Popen[str], grace_s: float = STOP_GRACE_S, follow: Callable[[], None] | None = None) -> int:
    """SIGTERM the launcher (it checkpoints and stops Ray and the players), then SIGKILL its process group after the grace time.

    `follow`: keeps reading the launcher's output meanwhile (its last iteration and checkpoint lines), until it exits.
    """
    # a second Ctrl-C (or SIGTERM) must not abandon the cleanup
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main_thread else None
    term = signal.signal(signal.SIGTERM, signal.SIG_IGN) if main_thread else None

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)

    timer = threading.Timer(grace_s, kill)
    try:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        timer.start()
        if follow is not None:
            with contextlib.suppress(OSError, ValueError):
                follow()
        return process.wait()
    finally:
        timer.cancel()
        if main_thread:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, term)
