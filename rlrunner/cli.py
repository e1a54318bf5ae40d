"""The `rlrunner` command line: one thin function per command.

Exit codes: 0 success, 2 usage error, 3 invalid spec, 4 infrastructure failure (AWS, Ray, player),
5 a run or a sweep point failed. `validate`, `plan` and `schema` never import ray, torch or sagemaker.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_INFRA = 4
EXIT_FAILED = 5

SPEC_SUFFIXES = (".yaml", ".yml")


class CommandError(click.ClickException):
    """A failure reported as one clear message and an exit code, without a traceback."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code

    def show(self, file: Any = None) -> None:
        click.echo(self.format_message(), err=True)


def fail(message: str, exit_code: int) -> NoReturn:
    """Stop the command with a message and an exit code."""
    raise CommandError(message, exit_code)


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


def load_or_exit(spec: str, overrides: Sequence[str] = ()) -> tuple[Any, Any]:
    """Load and validate a spec, or exit 3 with every problem located."""
    from rlrunner.loader import SpecError, load_spec

    try:
        return load_spec(spec, overrides)
    except SpecError as error:
        fail(str(error), EXIT_INVALID)


@click.group()
@click.version_option(package_name="rlrunner")
def main() -> None:
    """Train Unity ML-Agents environments with Ray RLlib from a YAML spec, locally or on SageMaker."""


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--output", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def validate(paths: Sequence[str], output: str) -> None:
    """Validate spec files (or every *.yaml in folders); exit 3 if any is invalid."""
    from rlrunner.loader import SpecError, load_spec

    results = []
    for path in spec_files(paths):
        try:
            spec, _ = load_spec(path)
            results.append({"path": str(path), "valid": True, "run_id": spec.run_id, "problems": []})
        except SpecError as error:
            results.append({"path": str(path), "valid": False, "problems": [str(p) for p in error.problems]})
    if not results:
        fail(f"no spec files (*.yaml) found in {', '.join(paths)}", EXIT_USAGE)
    if output == "json":
        emit_json(results)
    else:
        for result in results:
            if result["valid"]:
                click.echo(f"ok   {result['path']} (run id {result['run_id']})")
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
    from rlrunner.runner import PlanError
    from rlrunner.runner import plan as make_plan

    experiment_spec, document = load_or_exit(spec, overrides)
    try:
        job = make_plan(experiment_spec, spec_dir=document.base_dir, local=local, environ=os.environ)
    except PlanError as error:
        fail(f"{spec}: {error}", EXIT_INVALID)
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
def schema() -> None:
    """Print the JSON Schema of the spec (for editors: yaml-language-server)."""
    from rlrunner.schema import ExperimentSpec

    emit_json(ExperimentSpec.model_json_schema(by_alias=True))


if __name__ == "__main__":
    main()
