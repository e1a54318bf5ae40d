"""Resource layouts of `rlrunner run --local` on this machine: what `env_runners: auto` chooses from.

Runs the spec for a few iterations once per layout, the layouts interleaved round by round, and
prints per layout the medians of: command start to the first iteration's metrics line (startup),
seconds per iteration after the first, and the whole command (training, export and evaluation
included). The launcher's own "startup:" line (Ray, probe + RLlib configuration, algorithm build)
is printed for the last round.

    python benchmarks/layout.py [--repeat 5] [--iterations 4]
    python benchmarks/layout.py --layout "training.env_runners=0" --layout "training.env_runners=1"
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rlrunner.contract.metrics import parse_metrics_line

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPEC = ROOT / "experiments" / "basic_ppo.yaml"
DEFAULT_LAYOUTS = [
    "training.env_runners=0 training.envs_per_env_runner=2",  # what auto chooses on 2 CPUs
    "training.env_runners=0 training.envs_per_env_runner=1",
    "training.env_runners=1 training.envs_per_env_runner=1",  # the layout before (auto = CPUs - 1)
]


def run_once(spec: Path, layout: str, iterations: int, run_dir: Path) -> dict[str, float | str]:
    """One `rlrunner run --local` with the layout's overrides; times from the command's start."""
    command = [sys.executable, "-c", "from rlrunner.cli import main; main()", "run", str(spec), "--local", "--run-dir", str(run_dir)]
    command += ["--set", f"training.stop.iterations={iterations}", "--set", "training.stop.timesteps=1000000"]
    for override in layout.split():
        command += ["--set", override]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    marks: list[float] = []
    startup_line = ""
    for line in process.stdout:
        if parse_metrics_line(line):
            marks.append(time.monotonic() - started)
        elif line.startswith("rlrunner: startup:"):
            startup_line = line.strip()
    total = time.monotonic() - started
    if process.wait() != 0 or not marks:
        log = run_dir / "launcher.log"
        tail = log.read_text()[-1500:] if log.is_file() else ""
        raise RuntimeError(f"{layout}: rlrunner run failed ({process.returncode}):\n{tail}")
    per_iteration = (marks[-1] - marks[0]) / max(len(marks) - 1, 1)
    return {"startup_s": marks[0], "iteration_s": per_iteration, "total_s": total, "startup_line": startup_line}


def main() -> None:
    """Interleave the layouts; print medians."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
    parser.add_argument("--layout", action="append", default=None, help="Space-separated --set overrides (repeatable).")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=4)
    args = parser.parse_args()
    layouts = args.layout or DEFAULT_LAYOUTS
    results: dict[str, list[dict[str, float | str]]] = {layout: [] for layout in layouts}
    with tempfile.TemporaryDirectory(prefix="rlrunner-layout-") as workdir:
        for round_ in range(args.repeat):
            for index, layout in enumerate(layouts):
                try:
                    result = run_once(args.spec, layout, args.iterations, Path(workdir) / f"r{round_}-{index}")
                except RuntimeError as error:  # reported and left out of the medians
                    print(f"round {round_ + 1} {error}", flush=True)
                    continue
                results[layout].append(result)
                print(f"round {round_ + 1} {layout}: startup {result['startup_s']:.1f} s, "
                      f"{result['iteration_s']:.2f} s/iteration, total {result['total_s']:.1f} s", flush=True)
    print(f"\nmedians of {args.repeat} interleaved rounds ({args.iterations} iterations, then export and evaluation):")
    for layout, rows in results.items():
        if not rows:
            continue

        def median(key: str, rows: list[dict[str, float | str]] = rows) -> float:
            return statistics.median(float(row[key]) for row in rows)

        print(f"{layout:58s} startup {median('startup_s'):5.1f} s  {median('iteration_s'):5.2f} s/iteration  total {median('total_s'):5.1f} s")
        print(f"    last round: {rows[-1]['startup_line']}")


if __name__ == "__main__":
    main()
