"""The `rlrunner` command line: one thin function per command.

Exit codes (`rlrunner.contract.errors`): 0 success, 2 usage error, 3 invalid spec, 4 infrastructure
failure (AWS, Docker, Ray, player), 5 a run or a sweep point failed. Every user-facing failure is an
`RlrunnerError`, mapped to its message and exit code in one place (`Commands.invoke`).
`validate`, `plan` and `schema` never import ray, torch or sagemaker.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from rlrunner.contract.errors import EXIT_FAILED, EXIT_INVALID, EXIT_USAGE, RlrunnerError

if TYPE_CHECKING:
    from rlrunner.loader import Document
    from rlrunner.runner import JobPlan
    from rlrunner.schema import ExperimentSpec

SPEC_SUFFIXES = (".yaml", ".yml")
STDERR = 2
"""The stderr file descriptor: where a child's output goes when stdout carries JSON."""


class Commands(click.Group):
    """The command group: an `RlrunnerError` from any command becomes its message (stderr) and its exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RlrunnerError as error:
            click.echo(str(error), err=True)
            ctx.exit(error.exit_code)


def fail(message: str, exit_code: int) -> NoReturn:
    """Stop the command with a message and an exit code."""
    raise RlrunnerError(message, exit_code=exit_code)


def emit_json(data: Any) -> None:
    """Print JSON for pipelines."""
    click.echo(json.dumps(data, indent=2, sort_keys=False))


def spec_files(paths: Sequence[str]) -> Iterator[Path]:
    """The spec files named, folders expanded to their *.yaml files (sorted)."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in SPEC_SUFFIXES and p.is_file())
        else:
            yield path


def load_or_exit(spec: str, overrides: Sequence[str] = ()) -> tuple[ExperimentSpec, Document]:
    """Load and validate a spec (a SpecError, exit 3, locates every problem)."""
    from rlrunner.loader import load_spec

    return load_spec(spec, overrides)


def plan_or_exit(spec: str, experiment_spec: ExperimentSpec, document: Document, *, local: bool) -> JobPlan:
    """The spec's plan; a spec too large for SageMaker's limits is an invalid spec, blamed on its file."""
    from rlrunner.runner import PlanError, plan

    try:
        return plan(experiment_spec, spec_dir=document.base_dir, local=local, environ=os.environ)
    except PlanError as error:
        fail(f"{spec}: {error}", EXIT_INVALID)


@click.group(cls=Commands)
@click.version_option(package_name="rlrunner")
def main() -> None:
    """Train Unity ML-Agents environments with Ray RLlib from a YAML spec, locally or on SageMaker."""


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def validate(paths: Sequence[str], output: str) -> None:
    """Validate spec files (or every *.yaml in folders), every sweep point included; exit 3 if any is invalid."""
    from rlrunner.contract.identity import run_id
    from rlrunner.loader import SpecError, load_spec
    from rlrunner.sweep import expand

    results: list[dict[str, Any]] = []
    for path in spec_files(paths):
        try:
            spec, document = load_spec(path)
            points = expand(document, spec)  # a sweep is valid only if every point is
            results.append({"path": str(path), "valid": True, "run_id": run_id(spec), "points": len(points), "problems": []})
        except SpecError as error:
            results.append({"path": str(path), "valid": False, "problems": [str(p) for p in error.problems]})
    if not results:
        fail(f"no spec files (*.yaml) found in {', '.join(paths)}", EXIT_USAGE)
    if output == "json":
        emit_json(results)
    else:
        for result in results:
            if result["valid"]:
                detail = f", {result['points']} sweep points" if result["points"] > 1 else ""
                click.echo(f"ok   {result['path']} (run id {result['run_id']}{detail})")
            for problem in result["problems"]:
                click.echo(problem, err=True)
    if not all(result["valid"] for result in results):
        sys.exit(EXIT_INVALID)


@main.command()
@click.argument("spec")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help="Override a spec value (repeatable).")
@click.option("--local", is_flag=True, help="Plan a run on this machine.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def plan(spec: str, overrides: Sequence[str], local: bool, output: str) -> None:
    """Show what a run would submit: estimator arguments, environment, fit inputs, experiment."""
    experiment_spec, document = load_or_exit(spec, overrides)
    job = plan_or_exit(spec, experiment_spec, document, local=local)
    if output == "json":
        emit_json(job.to_json())
        return
    estimator = job.estimator
    click.echo(f"run id        {job.run_id}")
    click.echo(f"algorithm     {experiment_spec.algorithm.name} on {experiment_spec.environment.name or experiment_spec.environment.binary}")
    click.echo(f"instance      {estimator['instance_count']} x {estimator['instance_type']}")
    click.echo(f"image         {estimator['image_uri']}")
    click.echo(f"job name      {estimator['base_job_name']}-<timestamp>")
    click.echo(f"environment   {len(job.environment)} variables, longest {max(len(v) for v in job.environment.values())} characters")
    click.echo(f"fit inputs    {job.fit_inputs or '-'}")
    click.echo(f"stop          {json.dumps({k: v for k, v in job.experiment['training']['stop'].items() if v is not None})}")


@main.command()
@click.option("--output", type=click.Choice(["json"]), default="json", help="Output format (JSON only).")
def schema(output: str) -> None:
    """Print the JSON Schema of the spec (for editors: yaml-language-server)."""
    from rlrunner.schema import ExperimentSpec

    emit_json(ExperimentSpec.model_json_schema(by_alias=True))


@main.command()
@click.argument("spec")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help="Override a spec value (repeatable).")
@click.option("--local", is_flag=True, help="Run on this machine (as compute.instance_type: local does).")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Run directory (default: runs/<name>-<run_id>).")
@click.option("--resume", is_flag=True, help="Continue the run from its newest complete checkpoint; raised stop criteria train longer.")
@click.option("--init-from", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None, metavar="RUN_DIR|CHECKPOINT",
              help="Start a new run from another run's policy weights (sets training.init_from).")
@click.option("--force", is_flag=True, help="Replace an existing run directory (asks first on a terminal).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format (json: launcher output goes to stderr).")
@click.option("--wait", is_flag=True, help="SageMaker: follow the job (status, metrics) until it ends, then download its model into the run dir.")
@click.option("--hosts", type=click.IntRange(1, 16), default=None, help="Local runs: emulate this many instances, one Ray cluster on loopback addresses (default: compute.instance_count).")
@click.option("--image", default=None, metavar="TAG", help="Local runs: run the launcher in this image (`rlrunner image build`), as SageMaker does.")
def run(
    spec: str, overrides: Sequence[str], local: bool, run_dir: Path | None, resume: bool, init_from: Path | None, force: bool,
    output: str, wait: bool, hosts: int | None, image: str | None,
) -> None:
    """Train: locally in a run directory (--local), or as a SageMaker training job."""
    if resume and (force or init_from):
        fail("--resume: not with --force or --init-from (they start a new run)", EXIT_USAGE)
    if init_from is not None:
        overrides = [*overrides, f"training.init_from={json.dumps(str(init_from.resolve()))}"]
    experiment_spec, document = load_or_exit(spec, overrides)
    local = local or experiment_spec.compute.is_local
    if local:
        experiment_spec = experiment_spec.on_this_machine()
        if hosts is not None and hosts != experiment_spec.compute.instance_count:  # the run id counts the hosts
            experiment_spec = experiment_spec.model_copy(update={"compute": experiment_spec.compute.model_copy(update={"instance_count": hosts})})
    elif hosts is not None:
        fail("--hosts: only with a local run (on SageMaker, compute.instance_count sets the hosts)", EXIT_USAGE)
    job = plan_or_exit(spec, experiment_spec, document, local=local)
    run_dir = chosen_run_dir(experiment_spec, job, run_dir, resume=resume, force=force)
    invocation = {"spec_file": str(Path(spec).resolve()), "overrides": list(overrides), "local": local}
    if not local:
        if image:
            fail("--image: only with a local run (on SageMaker, compute.image names the image)", EXIT_USAGE)
        submit_to_sagemaker(
            job, experiment_spec, run_dir=run_dir, resume=resume, output=output, wait=wait, spec_dir=document.base_dir, invocation=invocation
        )
        return
    from rlrunner.backends.local import run_local

    stream = sys.stderr if output == "json" else sys.stdout
    hosts = experiment_spec.compute.instance_count
    result = run_local(
        experiment_spec, job, spec_dir=document.base_dir, run_dir=run_dir, resume=resume, stream=stream,
        hosts=hosts, image=image, invocation=invocation,
    )  # fmt: skip
    if output == "json":
        emit_json({"run_id": job.run_id, **result.to_json()})
    elif result.exit_code == 0:
        click.echo(f"run {job.run_id}: run directory {result.run_dir}")
        for name, path in result.files.items():
            if name.startswith("unity_model:"):
                click.echo(f"Unity model ({name.split(':', 1)[1]}): {path}")
    if result.status == "stopped":
        again = ["rlrunner", "run", spec, "--local", "--run-dir", str(result.run_dir), *[a for o in overrides for a in ("--set", o)]]
        again += [*(["--hosts", str(hosts)] if hosts > 1 else []), "--resume"]
        who = "by the user" if result.by_user else "(the launcher got SIGTERM or SIGINT)"
        click.echo(f"rlrunner: stopped {who}; resume with: {shlex.join(again)}", err=True)
        sys.exit(result.exit_code)
    if result.exit_code != 0:
        if output != "json":
            # The launcher already printed its one-paragraph reason; say where it is kept.
            where = result.run_dir / ("output/failure" if result.failure else "launcher.log")
            click.echo(f"rlrunner: run failed (exit {result.exit_code}, launcher status {result.launcher_exit}); see {where}", err=True)
        sys.exit(result.exit_code)


def chosen_run_dir(spec: ExperimentSpec, job: JobPlan, run_dir: Path | None, *, resume: bool, force: bool) -> Path:
    """--run-dir, else `runs/<name>-<run id>`; with --resume, else the run this spec trains longer;
    with --force, the folder is emptied first (after a confirmation on a terminal)."""
    from rlrunner.contract.identity import run_identity
    from rlrunner.contract.run_dir import RUNS_ROOT, RunDir, default_run_dir, remove_run_dir, resumable_run

    chosen = run_dir or default_run_dir(spec.name, job.run_id)
    if resume and run_dir is None and not chosen.is_dir():
        chosen = resumable_run(RUNS_ROOT, spec.name, run_identity(spec)) or chosen
    if force and RunDir(chosen).in_use:
        if sys.stdin.isatty():
            click.confirm(f"replace the run directory {chosen} (everything in it is deleted)?", abort=True)
        remove_run_dir(RunDir(chosen))
    return chosen


def submit_to_sagemaker(
    job: JobPlan, spec: ExperimentSpec, *, run_dir: Path, resume: bool, output: str, wait: bool = False, spec_dir: Path = Path("."),
    invocation: dict[str, Any] | None = None,
) -> None:
    """Hand a non-local run to the SageMaker backend (imported only here: it needs the SDK)."""
    from rlrunner.backends import sagemaker

    submitted = sagemaker.submit(
        job, spec, run_dir=run_dir, spec_dir=spec_dir, resume=resume, wait=wait,
        echo=lambda line: click.echo(line, err=output == "json"), invocation=invocation,
    )
    if output == "json":
        emit_json({"run_id": job.run_id, "job_name": submitted.job_name, "run_dir": str(submitted.run_dir), "console_url": submitted.console_url,
                   "status": submitted.status, "model_dir": str(submitted.model_dir) if submitted.model_dir else None})
    elif not wait:
        click.echo(f"training job {submitted.job_name} started (run {job.run_id}): {submitted.console_url}")
    if wait and submitted.status != "Completed":
        reason = f": {submitted.failure_reason}" if submitted.failure_reason else ""
        fail(f"training job {submitted.job_name} {submitted.status}{reason}", EXIT_FAILED)


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="RUN_DIR|MODEL_DIR")
@click.option("--episodes", type=click.IntRange(min=1), default=None, help="Episodes to play (default: training.evaluation_episodes).")
@click.option("--greedy/--stochastic", default=True, help="Greedy actions (default) or actions sampled from the policy.")
@click.option("--seed", type=int, default=None, help="Seed of the player and of sampled actions.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
@click.option("--env", "env_name", default=None, metavar="NAME", help="Play this bundled or ML-Agents registry environment.")
@click.option("--binary", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Play this player build.")
def evaluate(path: Path, episodes: int | None, greedy: bool, seed: int | None, output: str, env_name: str | None, binary: Path | None) -> None:
    """Play the exported policy in the experiment's environment; write evaluation.json into the run dir (or model dir)."""
    from rlrunner.contract.model_dir import EVALUATION_FILE, locate_model_dir
    from rlrunner.contract.run_dir import atomic_write_json
    from rlrunner.policy import check_model_dir

    model_dir = check_model_dir(locate_model_dir(path))
    # The evaluation plays through the container side's env creator, in a process of its own (as a run does).
    command = [sys.executable, "-m", "rlrunner.entry.evaluate", str(model_dir), "--greedy" if greedy else "--stochastic"]
    command += [*(["--episodes", str(episodes)] if episodes else []), *(["--seed", str(seed)] if seed is not None else [])]
    command += [*(["--env", env_name] if env_name else []), *(["--binary", str(binary.resolve())] if binary else [])]
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if finished.returncode != 0:
        sys.exit(finished.returncode)  # the evaluation printed its one-line reason
    result = json.loads(finished.stdout)
    # Beside a run's model dir, so that the launcher's end-of-run evaluation in it (model/evaluation.json) stays as it was.
    written = atomic_write_json((model_dir.parent if model_dir.name == "model" else model_dir) / EVALUATION_FILE, result)
    if output == "json":
        emit_json(result)
        return
    print_evaluation(result, written)


@main.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="RUN_DIR")
@click.option("--format", "export_format", type=click.Choice(["mlagents", "serving"]), default="mlagents", show_default=True,
              help="mlagents: <Behavior>.onnx for Unity's Behavior Parameters; serving: policy.onnx for serve/deploy.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def export(run_dir: Path, export_format: str, output: str) -> None:
    """Re-export a run's model dir from its newest complete checkpoint (also a run made before the format existed)."""
    # Exporting needs torch and RLlib: the container side does it, in a process of its own.
    command = [sys.executable, "-m", "rlrunner.entry.export_run", str(run_dir), "--format", export_format]
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if finished.returncode != 0:
        sys.exit(finished.returncode)  # the export printed its one-line reason
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    if output == "json":
        emit_json(result)
        return
    for path in result["files"]:
        click.echo(f"wrote {path}")


def print_evaluation(result: dict[str, Any], written: Path) -> None:
    """The evaluation as a table: rich on a terminal, plain text otherwise (one per behaviour of a multi-policy run)."""
    if "mean" not in result:
        for name, figures in result.get("behaviors", {}).items():
            click.echo(f"behaviour {name}")
            print_evaluation({**figures, "greedy": result["greedy"]}, written)
        return
    rows = [
        ("episodes", str(result["episodes"])),
        ("mean", f"{result['mean']:.4f}"),
        ("max", f"{result['max']:.4f}"),
        ("min", f"{result['min']:.4f}"),
        ("mean length", f"{result['mean_length']:.1f}"),
    ]
    mode = "greedy" if result["greedy"] else "stochastic"
    if sys.stdout.isatty():
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            pass
        else:
            table = Table(title=f"evaluation ({mode})")
            table.add_column("metric")
            table.add_column("value", justify="right")
            for name, value in rows:
                table.add_row(name, value)
            Console().print(table)
            click.echo(f"written to {written}")
            return
    click.echo(f"evaluation ({mode})")
    for name, value in rows:
        click.echo(f"{name:<12} {value:>10}")
    click.echo(f"written to {written}")


@main.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="MODEL_DIR|RUN_DIR")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 for every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free port).")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=6.0, show_default=True, help="Largest request body accepted.")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--access-log/--no-access-log", default=False, help="Log every request.")
@click.option("--header-timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="Seconds to send a request head.")
@click.option("--body-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="Seconds to send a request body.")
@click.option("--max-connections", type=click.IntRange(1, 10000), default=32, show_default=True, help="Requests served at once (more: 503).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format (json: one line with the address once listening; logs on stderr).")
def serve(
    path: Path, host: str, port: int, max_body_mb: float, threads: int, access_log: bool, header_timeout: float, body_timeout: float,
    max_connections: int, output: str,
) -> None:  # fmt: skip
    """Serve an exported policy over HTTP: GET /ping, POST /invocations (SageMaker's inference contract).

    A model dir with several policies serves them all; each request names one ("policy": NAME).
    """
    from rlrunner.contract.model_dir import locate_model_dir
    from rlrunner.policy import check_model_dir, read_policy_index
    from rlrunner.serving.server import ServeOptions
    from rlrunner.serving.server import serve as run_server

    model_dir = check_model_dir(locate_model_dir(path))
    index = read_policy_index(model_dir)
    options = ServeOptions(
        model_dir, host=host, port=port, max_body_bytes=int(max_body_mb * 1024 * 1024), threads=threads, access_log=access_log,
        header_timeout_s=header_timeout, body_timeout_s=body_timeout, max_connections=max_connections,
    )  # fmt: skip
    def announce(bound_host: str, bound_port: int) -> None:
        address: dict[str, Any] = {"url": f"http://{bound_host}:{bound_port}", "host": bound_host, "port": bound_port, "model_dir": str(model_dir)}
        if index is not None:  # requests name one of these policies
            address["policies"] = {name: list(entry.behaviors) for name, entry in index.items()}
        click.echo(json.dumps(address))

    run_server(options, on_listen=announce if output == "json" else None)


# --- runs: list and compare run directories -----------------------------------------------------------------


@main.command("runs")
@click.option("--runs-root", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True, help="Where the runs are.")
@click.option("--name", default=None, help="Only runs whose experiment name contains this (or matches this glob).")
@click.option("--status", type=click.Choice(["running", "completed", "stopped", "failed", "submitted", "unknown"]), default=None, help="Only runs in this state.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def runs_command(runs_root: Path, name: str | None, status: str | None, output: str) -> None:
    """List the local and SageMaker runs under runs/: id, name, status, backend, steps, greedy evaluation, wall time, start."""
    from rlrunner.runs import list_runs

    rows = list_runs(runs_root, name=name, status=status)
    if output == "json":
        emit_json(rows)
        return
    click.echo(f"{'run id':<10}  {'name':<24}  {'status':<11}  {'backend':<9}  {'steps':>8}  {'eval':>7}  {'wall':>7}  started")
    for row in rows:
        steps = "-" if row["steps"] is None else str(row["steps"])
        evaluation = "-" if row["evaluation"] is None else f"{row['evaluation']:.3f}"
        wall = "-" if row["wall_s"] is None else f"{row['wall_s']:.0f} s"
        click.echo(
            f"{row['run_id']:<10}  {str(row['name']):<24}  {row['status']:<11}  {row['backend']:<9}  {steps:>8}  {evaluation:>7}  {wall:>7}  {row['started'] or '-'}"
        )
    click.echo(f"{len(rows)} runs under {runs_root}")


@main.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="RUN_DIR...")
@click.option("--picture", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Where the learning curves go (default: runs/comparisons/<run ids>.png).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def compare(run_dirs: Sequence[Path], picture: Path | None, output: str) -> None:
    """Compare runs: final metrics, the spec fields that differ, and one picture of their learning curves (seeds grouped)."""
    from rlrunner.runs import Run, comparison, curve_series, plot_comparison

    runs = [Run.read(path) for path in run_dirs]
    result = comparison(runs)
    series = curve_series(runs)
    path = picture or Path("runs") / "comparisons" / f"{'-'.join(run.run_id for run in runs)[:120]}.png"
    result["picture"] = str(plot_comparison(series, path))
    result["series"] = [{key: line[key] for key in ("label", "run_ids")} for line in series]
    if output == "json":
        emit_json(result)
        return
    fields = result["differing_fields"]
    click.echo(f"{'run id':<10}  {'status':<11}  {'steps':>8}  {'return':>7}  {'eval':>7}  " + "  ".join(fields))
    for row in result["runs"]:
        steps = "-" if row["steps"] is None else str(row["steps"])
        ret = "-" if row["episode_return_mean"] is None else f"{row['episode_return_mean']:.3f}"
        evaluation = "-" if row["evaluation"] is None else f"{row['evaluation']:.3f}"
        values = "  ".join(json.dumps(row["values"][field]) for field in fields)
        click.echo(f"{row['run_id']:<10}  {row['status']:<11}  {steps:>8}  {ret:>7}  {evaluation:>7}  {values}")
    if not fields:
        click.echo("the runs' specs do not differ in anything that changes a result")
    click.echo(f"learning curves: {result['picture']}")


# --- SageMaker jobs: status, logs, stop, download, image ------------------------------------------------


def job_refs(reference: str | None) -> list[Any]:
    """JOB, RUN_DIR (or nothing: every run recorded under ./runs) as job references."""
    from rlrunner.backends.sagemaker import resolve_refs

    refs = resolve_refs(reference)
    if not refs:
        fail("no SageMaker runs recorded under ./runs; name a job or a run dir", EXIT_USAGE)
    return refs


@main.command()
@click.argument("reference", required=False, metavar="[JOB|RUN_DIR|SPEC]")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help="Override a spec value (with SPEC).")
@click.option("--download/--no-download", default=True, help="Fetch the model of a completed job into its run dir if missing.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def status(reference: str | None, overrides: Sequence[str], download: bool, output: str) -> None:
    """Show a local run dir's state, or SageMaker training jobs: one job, a run dir's job, a spec's jobs (by run id tag) or every recorded run."""
    if reference and (Path(reference) / "run.json").is_file():
        from rlrunner.runs import Run

        row = Run.read(Path(reference)).row()
        if output == "json":
            emit_json(row)
        else:
            click.echo("\n".join(f"{key:<20} {'-' if value is None else value}" for key, value in row.items()))
        return
    from rlrunner.aws import connect
    from rlrunner.backends import sagemaker as backend
    from rlrunner.contract.identity import run_id

    if reference and Path(reference).is_file() and Path(reference).suffix in SPEC_SUFFIXES:
        spec, _ = load_or_exit(reference, overrides)
        ctx = connect()
        found = backend.find_jobs_by_run_id(ctx, run_id(spec))
        refs = [backend.JobRef(str(job["TrainingJobName"]), None) for job in found]
        if not refs:
            fail(f"{reference}: no training job is tagged with its run id {run_id(spec)}", EXIT_FAILED)
    else:
        refs = job_refs(reference)
        ctx = connect()
    rows = [backend.job_status(ctx, ref, download=download, echo=lambda line: click.echo(line, err=True)) for ref in refs]
    if output == "json":
        emit_json(rows)
        return
    for row in rows:
        click.echo(f"{row['job_name']}  {row['status']} / {row['secondary_status']}  ({row['instance']}, created {row['created']})")
        if row["failure_reason"]:
            click.echo(f"  failure  {row['failure_reason']}")
        for name, value in sorted(row["final_metrics"].items()):
            click.echo(f"  {name:<20} {value:.6g}")
        click.echo(f"  run id   {row['tags'].get('rlrunner:run-id', '-')}   run dir {row['run_dir']}   model {row['model_dir'] or '-'}")


@main.command()
@click.argument("reference", metavar="JOB|RUN_DIR")
@click.option("--follow", is_flag=True, help="Keep printing new lines until the job ends.")
@click.option("--poll-seconds", type=click.FloatRange(min=0.0), default=10.0, show_default=True, help="Seconds between polls with --follow.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def logs(reference: str, follow: bool, poll_seconds: float, output: str) -> None:
    """Print a training job's CloudWatch logs (/aws/sagemaker/TrainingJobs)."""
    import time

    from rlrunner.aws import connect
    from rlrunner.backends import sagemaker as backend

    (ref,) = job_refs(reference)[:1]
    ctx = connect()
    tail = backend.LogTail(ctx, ref.job_name)
    while True:
        status = backend.describe_job(ctx, ref.job_name)["TrainingJobStatus"]
        printed = 0
        for line in tail.poll():
            click.echo(json.dumps({"job_name": ref.job_name, "line": line.rstrip("\n")}) if output == "json" else line.rstrip("\n"))
            printed += 1
        if not follow or status in backend.TERMINAL_STATUSES:
            if not follow and printed == 0 and not tail.streams():
                click.echo(f"no log streams yet for {ref.job_name} (status {status})", err=True)
            return
        time.sleep(poll_seconds)


@main.command()
@click.argument("reference", metavar="JOB|RUN_DIR")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def stop(reference: str, output: str) -> None:
    """Stop a running SageMaker training job."""
    from rlrunner.aws import connect
    from rlrunner.backends.sagemaker import stop_job

    (ref,) = job_refs(reference)[:1]
    message = stop_job(connect(), ref.job_name)
    if output == "json":
        emit_json({"job_name": ref.job_name, "message": message})
    else:
        click.echo(message)


@main.command()
@click.argument("reference", metavar="JOB|RUN_DIR")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Where to put model/ (default: the job's run dir).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def download(reference: str, run_dir: Path | None, output: str) -> None:
    """Download a completed job's model.tar.gz into RUN_DIR/model (what evaluate, serve and deploy read)."""
    from rlrunner.aws import connect
    from rlrunner.backends import sagemaker as backend

    (ref,) = job_refs(reference)[:1]
    ctx = connect()
    description = backend.describe_job(ctx, ref.job_name)
    status = description["TrainingJobStatus"]
    if status in ("Failed", "Stopped"):
        fail(f"training job {ref.job_name}: {status}, no model to download ({description.get('FailureReason', '')})".rstrip(" ()"), EXIT_FAILED)
    target = run_dir or backend.run_dir_for(ctx, ref, description)
    model_dir = backend.download_model(ctx, description, target, echo=lambda line: click.echo(line, err=output == "json"))
    if output == "json":
        emit_json({"job_name": ref.job_name, "run_dir": str(target), "model_dir": str(model_dir)})


@main.group()
def image() -> None:
    """Build and push the rlrunner container image (needs docker; push needs ECR access)."""


@image.command("build")
@click.option("--tag", default=None, help="Image tag (default: rlrunner:<version>).")
@click.option("--python-image", default=None, help="Base image with Python 3.11 (default: python:3.11-slim-bookworm).")
@click.option("--no-cache", is_flag=True, help="Rebuild every layer.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format (json: docker's output goes to stderr).")
def image_build(tag: str | None, python_image: str | None, no_cache: bool, output: str) -> None:
    """docker build -f container/Dockerfile --network host . with BuildKit; this machine's pip configuration as build secrets."""
    from rlrunner.container import build_image

    as_json = output == "json"
    built = build_image(
        tag, python_image=python_image, no_cache=no_cache, echo=lambda line: click.echo(line, err=as_json), docker_stdout=STDERR if as_json else None
    )
    if as_json:
        emit_json({"tag": built})


@image.command("push")
@click.option("--tag", default=None, help="Local image tag (default: rlrunner:<version>).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format (json: docker's output goes to stderr).")
def image_push(tag: str | None, output: str) -> None:
    """Push the image to this account's ECR (repository created if missing); prints the URI for compute.image."""
    from rlrunner.container import push_image

    as_json = output == "json"
    uri = push_image(tag, echo=lambda line: click.echo(line, err=as_json), docker_stdout=STDERR if as_json else None)
    if as_json:
        emit_json({"image": uri})
    else:
        click.echo(uri)


# --- SageMaker endpoints: deploy, predict, undeploy ---------------------------------------------------


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--endpoint-name", default=None, help="Endpoint name (default: deploy.endpoint_name, else <name>-<run id>).")
@click.option("--wait/--no-wait", default=True, help="Wait until the endpoint is InService.")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def deploy(run_dir: Path, endpoint_name: str | None, wait: bool, output: str) -> None:
    """Deploy a run's policy to a SageMaker endpoint (model, endpoint config, endpoint) using the spec's deploy block."""
    from dataclasses import asdict

    from rlrunner.contract.run_dir import DEPLOYMENT_FILE, RunDir
    from rlrunner.deploy import deploy as deploy_run
    from rlrunner.policy import read_policy_index

    deployment = deploy_run(run_dir, endpoint_name=endpoint_name, wait=wait, echo=lambda line: click.echo(line, err=output == "json"))
    if output == "json":
        emit_json(asdict(deployment))
        return
    click.echo(f"endpoint {deployment.endpoint_name} {deployment.status} (recorded in {run_dir / DEPLOYMENT_FILE})")
    index = read_policy_index(RunDir(run_dir).model) if RunDir(run_dir).model.is_dir() else None
    choose = f" --policy {'|'.join(index)}" if index else ""  # a multi-policy model: every request names its policy
    click.echo(f"  predict   rlrunner predict {deployment.endpoint_name}{choose} --observations '[[...]]'")
    click.echo(f"  remove    rlrunner undeploy {deployment.endpoint_name}")


@main.command()
@click.argument("endpoint")
@click.option("--observations", required=True, help="A JSON batch [[...], ...], @FILE holding one, or - for stdin.")
@click.option("--return", "returns", default="", metavar="probabilities,logits", help="Also return these outputs.")
@click.option("--policy", default=None, help="The policy (or behaviour) to ask, when the endpoint serves several.")
@click.option("--output", type=click.Choice(["json"]), default="json", help="Output format (JSON only: the endpoint's answer).")
def predict(endpoint: str, observations: str, returns: str, policy: str | None, output: str) -> None:
    """Send observations to an endpoint (InvokeEndpoint) and print its JSON answer."""
    from rlrunner.aws import connect
    from rlrunner.deploy import parse_observations
    from rlrunner.deploy import predict as invoke
    from rlrunner.policy import PolicyError
    from rlrunner.serving.protocol import RequestError, parse_returns

    try:
        payload = parse_observations(observations)
        asked = parse_returns(returns)[1:] if returns else ()
    except (PolicyError, RequestError) as error:
        fail(str(error).replace("return:", "--return:", 1), EXIT_USAGE)
    if policy is not None:
        if not policy.strip():
            fail("--policy: expected a policy or behaviour name", EXIT_USAGE)
        payload = {**payload, "policy": policy.strip()}
    emit_json(invoke(connect(), endpoint, payload, asked))


@main.command()
@click.argument("endpoint")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def undeploy(endpoint: str, output: str) -> None:
    """Delete an endpoint, its endpoint config and its models."""
    from rlrunner.aws import connect
    from rlrunner.deploy import undeploy as delete_endpoint

    deleted = delete_endpoint(connect(), endpoint, echo=lambda line: click.echo(line, err=output == "json"))
    if output == "json":
        emit_json(deleted)


@main.command()
@click.argument("spec")
@click.option("--set", "overrides", multiple=True, metavar="PATH=VALUE", help="Override a spec value in every point (repeatable).")
@click.option("--dry-run", is_flag=True, help="Validate every point and print the table; start nothing.")
@click.option("--local", is_flag=True, help="Run the points on this machine.")
@click.option("--max-parallel", type=click.IntRange(min=1), default=None, help="Runs at once (default: sweep.max_parallel).")
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def sweep(spec: str, overrides: Sequence[str], dry_run: bool, local: bool, max_parallel: int | None, output: str) -> None:
    """Run every point of a spec's sweep block; finished points are skipped, failed ones re-run."""
    from rlrunner import sweep as sweeps

    experiment_spec, document = load_or_exit(spec, overrides)
    if experiment_spec.sweep is None:
        fail(f"{spec}: no sweep block; use `rlrunner run` for a single experiment", EXIT_USAGE)
    points = sweeps.expand(document, experiment_spec)
    local = local or experiment_spec.compute.is_local
    if local:
        points = [sweeps.SweepPoint(p.index, p.values, p.spec.on_this_machine()) for p in points]
    from rlrunner.runner import PlanError, plan

    for point in points:  # a point that cannot be planned (too large for the env vars) also stops the sweep early
        try:
            plan(point.spec, spec_dir=document.base_dir, local=local, environ=os.environ)
        except PlanError as error:
            fail(f"{spec}: sweep point {point.index} [{point.label()}]: {error}", EXIT_INVALID)
    rows = sweeps.dry_run_rows(points)
    if dry_run:
        print_sweep_table(rows, output)
        return
    parallel = max_parallel or experiment_spec.sweep.max_parallel
    folder = sweeps.sweep_folder(experiment_spec, document)
    if local:
        launch, finished = sweeps.local_backend(document.base_dir, folder / "logs")
    else:
        launch, finished = sweeps.sagemaker_backend(document.base_dir, echo=lambda text: click.echo(text, err=True))
    if output == "text":
        click.echo(f"sweep {folder.name}: {len(points)} points, at most {parallel} at once")

    def report(point: Any, result: Any) -> None:
        detail = f" mean return {result.mean_return:.3f}" if result.mean_return is not None else ""
        reason = f": {result.message}" if result.message else ""
        click.echo(f"point {point.index} [{point.label()}] {point.run_id} {result.status}{detail}{reason}", err=output == "json" or result.status == "failed")

    done = sweeps.run_sweep(points, folder=folder, launch=launch, finished=finished, max_parallel=parallel, report=report)
    if output == "json":
        emit_json({"sweep_dir": str(folder), **done.summary})
    else:
        print_sweep_summary(done.summary, folder)
    if done.summary["counts"]["failed"]:
        sys.exit(EXIT_FAILED)


def print_sweep_table(rows: list[dict[str, Any]], output: str) -> None:
    """The dry-run table: point, run id, values, instance, estimated cost."""
    if output == "json":
        emit_json(rows)
        return
    total = sum(row["estimated_cost_usd"] or 0.0 for row in rows)
    unpriced = sorted({row["instance_type"] for row in rows if row["estimated_cost_usd"] is None and row["instance_type"] != "local"})
    click.echo(f"{'point':>5}  {'run id':<10}  {'instance':<18}  {'cost (USD, max)':>15}  values")
    for row in rows:
        cost = f"{row['estimated_cost_usd']:.2f}" if row["estimated_cost_usd"] is not None else ("-" if row["instance_type"] == "local" else "unknown price")
        values = ", ".join(f"{k}={v}" for k, v in row["values"].items())
        click.echo(f"{row['index']:>5}  {row['run_id']:<10}  {row['instance_count']} x {row['instance_type']:<14}  {cost:>15}  {values}")
    if unpriced:
        click.echo(f"{len(rows)} points valid; estimated cost unknown: no price known for {', '.join(unpriced)} (priced points: at most {total:.2f} USD)")
    else:
        click.echo(f"{len(rows)} points valid; estimated cost at most {total:.2f} USD (list prices x max_run)")


def print_sweep_summary(summary: dict[str, Any], folder: Path) -> None:
    """The end-of-sweep tables: per point, then per configuration across seeds."""
    click.echo(f"{'point':>5}  {'run id':<10}  {'status':<8}  {'return':>7}  values")
    for row in summary["points"]:
        value = "-" if row["mean_return"] is None else f"{row['mean_return']:.3f}"
        click.echo(f"{row['index']:>5}  {row['run_id']:<10}  {row['status']:<8}  {value:>7}  {', '.join(f'{k}={v}' for k, v in row['values'].items())}")
    click.echo("configurations (mean ± spread across seeds):")
    for config in summary["configurations"]:
        label = ", ".join(f"{k}={v}" for k, v in config["values"].items()) or "(base)"
        if config["mean_return"] is None:
            click.echo(f"  {label}: no finished run")
        else:
            click.echo(f"  {label}: {config['mean_return']:.3f} ± {config['std_return']:.3f} over {config['runs']} runs")
    counts = summary["counts"]
    click.echo(f"{counts['finished']} finished, {counts['skipped']} skipped (done before), {counts['failed']} failed; {folder}/sweep.json")

if __name__ == "__main__":
    main()
