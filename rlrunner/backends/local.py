"""The local backend: emulate SageMaker's training container on this machine, in a run directory.

The run directory is an `/opt/ml`-shaped tree (code/, input/config/, model/, output/, checkpoints/)
plus what a run keeps: the resolved spec (`spec.yaml`), `spec_hash`, `git_commit`, `run.json`,
`metrics.csv`, `launcher.log`, `learning_curve.png` and `evaluation.json`. The launcher
(`rlrunner/entry/train_unity.py`) runs as SageMaker's toolkit runs it: a script in the code dir,
the hyperparameters as arguments, the plan's environment variables plus the toolkit's SM_* ones.

With `hosts=N` it emulates an N-instance job: one launcher per host (`algo-1..N`), each with its
own /opt/ml tree and `current_host` (the head's tree is the run dir itself, the others'
`hosts/algo-<i>/` inside it), forming one Ray cluster on loopback addresses 127.0.0.2, 127.0.0.3, …
with a token only this run knows (`rlrunner/entry/cluster.py`).
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from rlrunner.entry.metrics import METRIC_NAMES, parse_metrics_line
from rlrunner.runner import ENTRY_DIR, ENTRY_POINT, JobPlan
from rlrunner.schema import ExperimentSpec

RUNS_ROOT = Path("runs")
CURRENT_HOST = "algo-1"
HOSTS_DIR = "hosts"
"""Inside the run dir: the emulated worker hosts' /opt/ml trees."""
WORKER_EXIT_GRACE_S = 90.0
"""Seconds emulated worker hosts get to leave the cluster after the head's launcher exited."""
STOP_GRACE_S = 30.0
"""Seconds the launcher gets to stop Ray and the players after SIGTERM, before SIGKILL."""

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_INFRA = 4
EXIT_FAILED = 5
EXIT_INTERRUPTED = 130

SPEC_FILE = "spec.yaml"
METRICS_FILE = "metrics.csv"
LOG_FILE = "launcher.log"
CURVE_FILE = "learning_curve.png"
RUN_FILE = "run.json"
EVALUATION_FILE = "evaluation.json"


class LocalRunError(RuntimeError):
    """The run cannot start (run dir in use, spec changed under --resume); carries the exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --------------------------------------------------------------------------------------------
# The run directory


@dataclass(frozen=True)
class RunDir:
    """Paths of a local run directory (it doubles as the container's /opt/ml)."""

    root: Path

    @property
    def code(self) -> Path:
        """The uploaded source: the entry files and the experiment's source dir."""
        return self.root / "code"

    @property
    def input_config(self) -> Path:
        """hyperparameters.json, resourceconfig.json, inputdataconfig.json."""
        return self.root / "input" / "config"

    @property
    def model(self) -> Path:
        """The exported policy (SM_MODEL_DIR)."""
        return self.root / "model"

    @property
    def output(self) -> Path:
        """SM_OUTPUT_DIR: `failure` lands here."""
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        """SM_OUTPUT_DATA_DIR: player logs."""
        return self.output / "data"

    @property
    def checkpoints(self) -> Path:
        """The checkpoint dir (/opt/ml/checkpoints)."""
        return self.root / "checkpoints"

    @property
    def failure(self) -> Path:
        """The launcher's one-paragraph failure reason."""
        return self.output / "failure"

    def file(self, name: str) -> Path:
        """A run file at the top of the run dir."""
        return self.root / name


def default_run_dir(spec: ExperimentSpec, run_id: str, runs_root: Path = RUNS_ROOT) -> Path:
    """`runs/<name>-<run_id>/`."""
    return runs_root / f"{spec.name}-{run_id}"


def git_commit(directory: Path) -> tuple[str, bool] | None:
    """(commit, dirty) of the git checkout holding `directory`, or None outside one."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory, capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit, bool(status.strip())) if commit else None


def prepare_run_dir(
    run: RunDir, spec: ExperimentSpec, plan: JobPlan, *, spec_dir: Path, resume: bool
) -> dict[str, Any]:
    """Lay out the /opt/ml tree and the run files; return the run record (run.json)."""
    has_state = run.root.is_dir() and any(run.root.iterdir())
    if resume:
        if not has_state:
            raise LocalRunError(f"{run.root}: --resume needs an existing run directory (none here)")
        recorded = run.file("spec_hash")
        if recorded.is_file() and recorded.read_text().strip() != spec.spec_hash:
            raise LocalRunError(
                f"{run.root}: --resume: the run was started from another spec (spec_hash {recorded.read_text().strip()[:10]}, "
                f"this spec {spec.spec_hash[:10]}); resume with the same spec or use a new --run-dir"
            )
    elif has_state:
        raise LocalRunError(
            f"{run.root}: the run directory exists; continue it with --resume, or pick another with --run-dir"
        )
    for folder in (run.input_config, run.model, run.output_data, run.checkpoints):
        folder.mkdir(parents=True, exist_ok=True)
    run.failure.unlink(missing_ok=True)
    copy_code(run, plan)
    write_input_config(run, plan)
    import yaml

    run.file(SPEC_FILE).write_text(yaml.safe_dump(spec.to_data(), sort_keys=False))
    run.file("spec_hash").write_text(spec.spec_hash + "\n")
    git = git_commit(spec_dir)
    if git is not None:
        run.file("git_commit").write_text(git[0] + (" (uncommitted changes)" if git[1] else "") + "\n")
    record = {
        "run_id": plan.run_id,
        "spec_hash": spec.spec_hash,
        "name": spec.name,
        "git_commit": git[0] if git else None,
        "git_dirty": git[1] if git else None,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "resumed": resume,
        "plan": plan.to_json(),
    }
    run.file(RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def copy_code(run: RunDir, plan: JobPlan) -> None:
    """The code dir as SageMaker builds it: the entry dir's files, each dependency as a subfolder."""
    shutil.rmtree(run.code, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(plan.estimator.get("source_dir", ENTRY_DIR), run.code, ignore=ignore)
    for dependency in plan.estimator.get("dependencies", []):
        source = Path(dependency)
        shutil.copytree(source, run.code / source.name, ignore=ignore, dirs_exist_ok=True)


def write_input_config(run: RunDir, plan: JobPlan, *, host: str = CURRENT_HOST, hosts: tuple[str, ...] = (CURRENT_HOST,)) -> None:
    """input/config/*.json as the platform writes them (hyperparameter values are JSON-encoded strings)."""
    hyperparameters = {key: json.dumps(value) for key, value in plan.estimator.get("hyperparameters", {}).items()}
    resource = {"current_host": host, "hosts": list(hosts), "network_interface_name": "lo"}
    data_config = {name: {"TrainingInputMode": "File"} for name in plan.fit_inputs or {}}
    for name, content in (
        ("hyperparameters.json", hyperparameters),
        ("resourceconfig.json", resource),
        ("inputdataconfig.json", data_config),
    ):
        (run.input_config / name).write_text(json.dumps(content) + "\n")


def container_environment(
    run: RunDir, plan: JobPlan, *, num_cpus: int, base: Mapping[str, str], host: str = CURRENT_HOST, hosts: tuple[str, ...] = (CURRENT_HOST,)
) -> dict[str, str]:
    """The launcher's environment: `base` (PATH…), the plan's variables, and the toolkit's SM_* variables."""
    root = run.root.resolve()
    channels = {name: str(Path(path).resolve()) for name, path in (plan.fit_inputs or {}).items() if not str(path).startswith("s3://")}
    hyperparameters = dict(plan.estimator.get("hyperparameters", {}))
    package_root = str(Path(__file__).resolve().parents[2])
    env = {key: value for key, value in base.items() if not key.startswith(("SM_", "RLRUNNER_", "RAY_ADDRESS"))}
    env.update(plan.environment)
    env.update(
        {
            "RLRUNNER_OPT_ML": str(root),
            "RLRUNNER_CHECKPOINT_DIR": str(root / "checkpoints"),
            "RLRUNNER_CODE_DIR": str(root / "code"),
            "TRAINING_JOB_NAME": f"{plan.estimator.get('base_job_name', 'rlrunner')}-local",
            "SM_MODEL_DIR": str(root / "model"),
            "SM_INPUT_DIR": str(root / "input"),
            "SM_INPUT_CONFIG_DIR": str(root / "input" / "config"),
            "SM_OUTPUT_DIR": str(root / "output"),
            "SM_OUTPUT_DATA_DIR": str(root / "output" / "data"),
            "SM_OUTPUT_INTERMEDIATE_DIR": str(root / "output" / "intermediate"),
            "SM_MODULE_DIR": str(root / "code"),
            "SM_MODULE_NAME": Path(ENTRY_POINT).stem,
            "SM_USER_ENTRY_POINT": ENTRY_POINT,
            "SM_CHANNELS": json.dumps(sorted(channels)),
            "SM_HPS": json.dumps(hyperparameters),
            "SM_USER_ARGS": json.dumps(entry_arguments(plan)),
            "SM_CURRENT_HOST": host,
            "SM_HOSTS": json.dumps(list(hosts)),
            "SM_NUM_CPUS": str(num_cpus),
            "SM_NUM_GPUS": "0",
            "SM_NETWORK_INTERFACE_NAME": "lo",
            "SM_RESOURCE_CONFIG": json.dumps({"current_host": host, "hosts": list(hosts)}),
            "SM_LOG_LEVEL": "20",
            "PYTHONUNBUFFERED": "1",
            # A source checkout without installation still finds rlrunner (SageMaker's image has it installed).
            "PYTHONPATH": os.pathsep.join(p for p in (package_root, base.get("PYTHONPATH", "")) if p),
        }
    )
    for name, path in channels.items():
        env[f"SM_CHANNEL_{name.upper()}"] = path
    for key, value in hyperparameters.items():
        env[f"SM_HP_{key.upper()}"] = str(value)
    return env


def entry_arguments(plan: JobPlan) -> list[str]:
    """The hyperparameters as the toolkit passes them: `--key value`."""
    args: list[str] = []
    for key, value in plan.estimator.get("hyperparameters", {}).items():
        args += [f"--{key}", str(value)]
    return args


# --------------------------------------------------------------------------------------------
# Metrics: CSV, progress, learning curve


class MetricsTable:
    """One row per iteration, parsed from the launcher's metrics lines; a resumed run replaces rows it repeats."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, float]] = []
        if path.is_file():
            with open(path, newline="") as handle:
                for row in csv.DictReader(handle):
                    self.rows.append({k: float(v) for k, v in row.items() if k in METRIC_NAMES and v not in ("", None)})

    def add(self, values: Mapping[str, float]) -> None:
        """Add an iteration's row (dropping rows from the same or later iterations) and rewrite the CSV."""
        iteration = values.get("iteration")
        if iteration is not None:
            self.rows = [row for row in self.rows if row.get("iteration", -1) < iteration]
        self.rows.append(dict(values))
        self.write()

    def write(self) -> None:
        """Write the CSV (through a temporary file, so a reader never sees half of it)."""
        partial = self.path.with_suffix(".csv.partial")
        with open(partial, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(METRIC_NAMES))
            writer.writeheader()
            for row in self.rows:
                writer.writerow({name: _cell(row.get(name)) for name in METRIC_NAMES})
        partial.replace(self.path)

    @property
    def last(self) -> dict[str, float] | None:
        """The newest row."""
        return self.rows[-1] if self.rows else None


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def plot_learning_curve(rows: Iterable[Mapping[str, float]], path: Path, *, title: str) -> Path | None:
    """Mean episode return (and the min-max band) over environment steps, as a PNG; None without data."""
    points = [r for r in rows if "timesteps" in r and "episode_return_mean" in r]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["timesteps"] for r in points]
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        if all("episode_return_min" in r and "episode_return_max" in r for r in points):
            axes.fill_between(
                steps, [r["episode_return_min"] for r in points], [r["episode_return_max"] for r in points], alpha=0.2, label="min-max"
            )
        axes.plot(steps, [r["episode_return_mean"] for r in points], marker="o", markersize=3, label="mean return")
        axes.set_xlabel("environment steps")
        axes.set_ylabel("episode return")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right")
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
                from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
                from rich.progress import Progress as RichProgress
            except ImportError:
                bar = False
            else:
                console = Console(file=stream)
                self._bar = RichProgress(
                    TextColumn("[bold]{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn(unit),
                    TextColumn("{task.fields[ret]}"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=False,
                )
                self._task = self._bar.add_task("training", total=total, ret="")

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
        self._bar.update(self._task, completed=done or 0, ret=ret)


_SHOWN_MARKERS = ("Error", "ERROR", "Traceback", "Exception")


def worth_showing(line: str) -> bool:
    """On a terminal, beside the progress bar: the launcher's own lines and errors (Ray's chatter goes to the log)."""
    return line.startswith("rlrunner:") or any(marker in line for marker in _SHOWN_MARKERS)


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


@dataclass
class LocalRunResult:
    """What a local run produced."""

    run_dir: Path
    exit_code: int
    launcher_exit: int | None = None
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
            "launcher_exit": self.launcher_exit,
            "hosts": self.hosts,
            "cluster": self.cluster,
            "failure": self.failure,
            "metrics": self.metrics,
            "evaluation": None if self.evaluation is None else {k: v for k, v in self.evaluation.items() if k != "returns"},
            "files": self.files,
        }


def launcher_command(run: RunDir, plan: JobPlan, python: str = sys.executable) -> list[str]:
    """How the toolkit starts the entry point: the script in the code dir, hyperparameters as arguments."""
    return [python, str((run.code / ENTRY_POINT).resolve()), *entry_arguments(plan)]


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
    evaluate: bool = True,
    num_cpus: int | None = None,
    environ: Mapping[str, str] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    hosts: int = 1,
    on_host_start: Callable[[str, subprocess.Popen[str]], None] | None = None,
    cluster_environ: Mapping[str, str] | None = None,
) -> LocalRunResult:
    """Train locally through the container launcher; keep everything in the run dir.

    `hosts` > 1 emulates that many instances (see the module docstring); `on_host_start(host,
    process)` sees every host's launcher start, and `cluster_environ` adds variables to every
    host's environment (RLRUNNER_CLUSTER_* timeouts, say).
    """
    from rlrunner.entry.processes import run_processes, terminate

    stream = sys.stdout if stream is None else stream
    run = RunDir(run_dir if run_dir is not None else default_run_dir(spec, plan.run_id))
    prepare_run_dir(run, spec, plan, spec_dir=spec_dir, resume=resume)
    cpus = num_cpus or os.cpu_count() or 1
    base = os.environ if environ is None else environ
    host_names = tuple(f"algo-{index}" for index in range(1, hosts + 1))
    env = container_environment(run, plan, num_cpus=cpus, base=base, host=host_names[0], hosts=host_names)
    emulation = EmulatedHosts.start(run, plan, host_names, num_cpus=cpus, base=base, extra=cluster_environ or {}) if hosts > 1 else None
    if emulation is not None:
        write_input_config(run, plan, host=host_names[0], hosts=host_names)
        env.update(emulation.environment)
        if on_host_start is not None:
            for host, worker in emulation.processes.items():
                on_host_start(host, worker)
    table = MetricsTable(run.file(METRICS_FILE))
    unit, total = progress_target(spec)
    show_bar = stream.isatty() if bar is None else bar
    started = time.monotonic()
    first_iteration_s: float | None = None
    if show_bar:
        stream.write(f"rlrunner: run {plan.run_id} in {run.root} (full launcher output: {run.file(LOG_FILE)})\n")
    with open(run.file(LOG_FILE), "a") as log, Progress(stream, total=total, unit=unit, bar=show_bar) as progress:
        process = subprocess.Popen(
            launcher_command(run, plan),
            cwd=run.code,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            bufsize=1,
            start_new_session=True,  # Ctrl-C reaches the backend only; it stops the launcher in order
        )
        record_launcher(run, process.pid)
        if on_start is not None:
            on_start(process)
        if on_host_start is not None:
            on_host_start(host_names[0], process)
        interrupted = False
        try:
            assert process.stdout is not None
            for raw in process.stdout:
                line = raw.rstrip("\n")
                log.write(raw)
                log.flush()
                values = parse_metrics_line(line)
                if values is None:
                    if not show_bar or worth_showing(line):
                        progress.line(line)
                    continue
                if first_iteration_s is None:
                    first_iteration_s = time.monotonic() - started
                table.add(values)
                progress.metrics(values, values.get(unit))
                if not show_bar:
                    progress.line(line)
            code = process.wait()
        except KeyboardInterrupt:
            interrupted = True
            progress.line("rlrunner: interrupted; stopping the launcher, Ray and the players")
            code = stop_launcher(process)
        finally:
            if process.poll() is None:
                stop_launcher(process)
            if process.stdout is not None:
                process.stdout.close()
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
    result = LocalRunResult(run_dir=run.root, exit_code=EXIT_INTERRUPTED if interrupted else map_exit(code), launcher_exit=code)
    if emulation is not None:
        result.hosts = {host_names[0]: code, **emulation.exits}
        result.cluster = emulation.description
    result.metrics = table.last
    if run.failure.is_file():
        result.failure = run.failure.read_text().strip() or None
    curve = plot_learning_curve(table.rows, run.file(CURVE_FILE), title=f"{spec.name} ({plan.run_id})")
    if result.exit_code == EXIT_OK and evaluate:
        result.evaluation = evaluate_run(run, spec, stream)
        if result.evaluation is None:
            result.exit_code = EXIT_FAILED
    result.files = {
        name: str(path)
        for name, path in (
            ("spec", run.file(SPEC_FILE)),
            ("metrics", run.file(METRICS_FILE)),
            ("log", run.file(LOG_FILE)),
            ("learning_curve", curve),
            ("model", run.model),
            ("checkpoints", run.checkpoints),
            ("evaluation", run.file(EVALUATION_FILE) if result.evaluation else None),
        )
        if path is not None and Path(path).exists()
    }
    finish_record(run, result, time.monotonic() - started, first_iteration_s)
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
    def start(
        cls, run: RunDir, plan: JobPlan, hosts: tuple[str, ...], *, num_cpus: int, base: Mapping[str, str], extra: Mapping[str, str]
    ) -> EmulatedHosts:
        """Lay out the worker hosts' trees, make the cluster's token, and start their launchers."""
        import secrets
        import tempfile

        from rlrunner.entry.cluster import emulation_environment

        # Ray's Unix sockets live under its temp dir: keep its path short (a socket path has 107 bytes).
        temp_dir = Path(tempfile.mkdtemp(prefix="rlr-", dir="/tmp"))
        token = run.root.resolve() / ".ray_auth_token"
        token.touch(mode=0o600)
        token.write_text(secrets.token_hex(32))
        environment = emulation_environment(
            hosts, port=_free_port(), client_server_port=_free_port(), temp_dir=str(temp_dir), token_path=str(token)
        )
        environment.update(extra)
        emulation = cls(run, environment, temp_dir, token)
        try:
            for host in hosts[1:]:
                tree = RunDir(run.root / HOSTS_DIR / host)
                for folder in (tree.input_config, tree.model, tree.output_data, tree.checkpoints):
                    folder.mkdir(parents=True, exist_ok=True)
                copy_code(tree, plan)
                write_input_config(tree, plan, host=host, hosts=hosts)
                env = container_environment(tree, plan, num_cpus=num_cpus, base=base, host=host, hosts=hosts)
                env.update(environment)
                with open(tree.file(LOG_FILE), "a") as log:
                    emulation.processes[host] = subprocess.Popen(
                        launcher_command(tree, plan), cwd=tree.code, env=env, stdout=log, stderr=subprocess.STDOUT,
                        stdin=subprocess.DEVNULL, text=True, start_new_session=True,
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
                report(f"rlrunner: host {host} exited with {code} (log: {RunDir(self.run.root / HOSTS_DIR / host).file(LOG_FILE)})")

    @property
    def description(self) -> dict[str, Any]:
        """Where the cluster lived: host addresses, the head's GCS address, Ray's temp dir."""
        from rlrunner.entry.cluster import HOST_ADDRESSES_VAR, PORT_VAR

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


def _free_port() -> int:
    import socket

    # Ray's GCS listens on every interface, so the port must be free on all of them.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("", 0))
        return int(probe.getsockname()[1])


def stop_launcher(process: subprocess.Popen[str], grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM the launcher (it stops Ray and the players), then SIGKILL its process group after the grace time."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not abandon the cleanup
    try:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            return process.wait()
    finally:
        signal.signal(signal.SIGINT, previous)


def evaluate_run(run: RunDir, spec: ExperimentSpec, stream: IO[str]) -> dict[str, Any] | None:
    """Greedy evaluation of the exported policy (`training.evaluation_episodes` episodes) into evaluation.json."""
    try:
        from rlrunner.entry.evaluate import evaluate_policy, write_evaluation
    except ImportError as error:
        stream.write(f"rlrunner: evaluation skipped: {error}\n")
        return None
    episodes = spec.training.evaluation_episodes
    stream.write(f"rlrunner: evaluating the exported policy greedily over {episodes} episodes\n")
    stream.flush()
    try:
        result = evaluate_policy(run.model, episodes=episodes, greedy=True, seed=spec.training.seed)
    except Exception as error:  # the player or the model failed: the training result is still there
        stream.write(f"rlrunner: evaluation failed: {type(error).__name__}: {error}\n")
        return None
    write_evaluation(result, run.root)
    stream.write(
        f"rlrunner: evaluation: mean {result['mean']:.4f}, max {result['max']:.4f}, min {result['min']:.4f} "
        f"over {result['episodes']} episodes\n"
    )
    stream.flush()
    return result


def record_launcher(run: RunDir, pid: int) -> None:
    """Note the launcher's pid (its session id too) in run.json while it runs."""
    path = run.file(RUN_FILE)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record["launcher_pid"] = pid
    path.write_text(json.dumps(record, indent=2) + "\n")


def finish_record(run: RunDir, result: LocalRunResult, wall_s: float, first_iteration_s: float | None) -> None:
    """Add the outcome to run.json."""
    path = run.file(RUN_FILE)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = {}
    record.update(
        {
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "wall_s": round(wall_s, 3),
            "first_iteration_s": None if first_iteration_s is None else round(first_iteration_s, 3),
            "exit_code": result.exit_code,
            "launcher_exit": result.launcher_exit,
            "hosts": result.hosts,
            "cluster": result.cluster,
            "failure": result.failure,
            "metrics": result.metrics,
            "evaluation": None if result.evaluation is None else {k: v for k, v in result.evaluation.items() if k != "returns"},
        }
    )
    path.write_text(json.dumps(record, indent=2) + "\n")


__all__ = [
    "LocalRunError",
    "LocalRunResult",
    "MetricsTable",
    "RunDir",
    "container_environment",
    "default_run_dir",
    "launcher_command",
    "plot_learning_curve",
    "prepare_run_dir",
    "run_local",
]
