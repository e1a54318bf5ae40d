"""The command line: read-only commands stay light, the schema file is current, examples validate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from shared import ROOT

from rlrunner.cli import main


def test_cli_read_only_commands_do_not_import_heavy_packages() -> None:
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from rlrunner.cli import main\n"
        "for args in (['validate', 'experiments'], ['plan', 'experiments/basic_ppo.yaml', '--output', 'json'], ['schema']):\n"
        "    result = CliRunner().invoke(main, args)\n"
        "    assert result.exit_code == 0, result.output\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'torch', 'sagemaker', 'mlagents_envs', 'boto3', 'numpy'})\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_cli_validate_accepts_every_experiment() -> None:
    result = CliRunner().invoke(main, ["validate", str(ROOT / "experiments")])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok   ") == len(list((ROOT / "experiments").glob("*.yaml")))


def test_cli_plan_json_has_the_contract_keys() -> None:
    result = CliRunner().invoke(main, ["plan", str(ROOT / "experiments" / "basic_ppo.yaml"), "--output", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["run_id", "estimator", "environment", "fit_inputs", "experiment"]
    assert data["experiment"]["run_id"] == data["run_id"]


def test_cli_schema_matches_the_checked_in_editor_schema() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0
    checked_in = ROOT / "docs" / "spec.schema.json"
    assert json.loads(result.stdout) == json.loads(checked_in.read_text()), (
        "regenerate: rlrunner schema > docs/spec.schema.json"
    )


def test_cli_usage_error_exits_2() -> None:
    result = CliRunner().invoke(main, ["plan"])
    assert result.exit_code == 2


def test_readme_spec_example_is_valid(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    example = readme.split("### The spec\n\n```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "readme.yaml").write_text(example)
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "readme.yaml")])
    assert result.exit_code == 0, result.output
    assert "4 sweep points" in result.output


def test_ci_example_turns_validation_errors_into_annotations_and_keeps_inputs_out_of_scripts(tmp_path: Path) -> None:
    import yaml

    workflow = yaml.safe_load((ROOT / "docs" / "ci" / "github-actions.yml").read_text())
    script = next(step["run"] for step in workflow["jobs"]["validate"]["steps"] if "validation.json" in step.get("run", ""))
    annotate = script.split("<<'PY'\n", 1)[1].split("\nPY\n", 1)[0]
    (tmp_path / "bad.yaml").write_text("name: bad\nenvironment: {name: Basic}\nalgorithm: {name: PPO, hyperparameters: {lr: -1}}\ntraining: {stop: {timesteps: 10}}\n")
    validated = CliRunner().invoke(main, ["validate", str(tmp_path / "bad.yaml"), "--output", "json"])
    (tmp_path / "validation.json").write_text(validated.stdout)
    printed = subprocess.run([sys.executable, "-c", annotate], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert printed.startswith(f"::error file={tmp_path / 'bad.yaml'},line=3,col=")
    assert "algorithm.hyperparameters.lr" in printed
    steps = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    assert not any("${{" in run for run in steps)  # form inputs arrive through env:, never pasted into a script


def test_cli_every_command_has_output_json() -> None:
    import click

    def leaves(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
        found: list[tuple[str, click.Command]] = []
        for name, command in group.commands.items():
            found += leaves(command, f"{prefix}{name} ") if isinstance(command, click.Group) else [(f"{prefix}{name}", command)]
        return found

    commands = leaves(main)
    lacking = [name for name, command in commands if not any(p.name == "output" and "json" in getattr(p.type, "choices", ()) for p in command.params)]
    assert len(commands) >= 19 and lacking == []
    schema = CliRunner().invoke(main, ["schema", "--output", "json"])
    assert schema.exit_code == 0 and json.loads(schema.stdout)["title"] == "ExperimentSpec"
