"""The image: its size, a cold build, a rebuild after a code-only change, and container start to first iteration.

* size: `docker image inspect` of the built image;
* cold build (`--cold`): `rlrunner image build --no-cache` equivalent, every layer rebuilt (minutes);
* code-only rebuild: a copy of the project whose rlrunner/__init__.py gained a comment, built with the
  same base: the dependency layers must come from the cache (the script checks that the deps step says
  CACHED) and only the wheel, the smoke test and the final small layer run;
* start to first iteration: `rlrunner run experiments/basic_ppo.yaml --local` here and with `--image`,
  quick settings, the same run; `first_iteration_s` and `wall_s` from each run.json (command start to the
  first metrics line; to the end of export and evaluation), and their ratio.

    python benchmarks/image.py [--tag rlrunner:0.1.0] [--base rlrunner-base:bookworm] [--cold] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SPEC = ROOT / "experiments" / "basic_ppo.yaml"
QUICK = (
    "algorithm.hyperparameters.train_batch_size_per_learner=250", "algorithm.hyperparameters.minibatch_size=125",
    "algorithm.hyperparameters.num_epochs=2", "algorithm.model.fcnet_hiddens=[32]", "training.evaluation_episodes=3",
    "training.stop.timesteps=500",
)  # fmt: skip


def build(tag: str, base: str, *, cwd: Path, no_cache: bool = False) -> tuple[float, str]:
    """Wall seconds of `rlrunner image build` run in `cwd` (the checkout or a copy of it), and its output."""
    command = [sys.executable, "-m", "rlrunner.cli", "image", "build", "--tag", tag, "--python-image", base, *(["--no-cache"] if no_cache else [])]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if result.returncode != 0:
        raise SystemExit(f"build failed:\n{result.stderr[-3000:]}")
    return time.perf_counter() - start, result.stdout + result.stderr


def project_copy(folder: Path, marker: str) -> Path:
    """What the build context holds, copied; rlrunner/__init__.py gains a comment (a code-only change)."""
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, folder / name)
    for name in ("rlrunner", "container"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    init = folder / "rlrunner" / "__init__.py"
    init.write_text(init.read_text() + f"# {marker}\n")
    return folder


def step_cached(log: str, text: str) -> bool:
    """Whether BuildKit's plain progress says CACHED for the step whose header line holds `text` (`#12 [build 6/6] RUN …`)."""
    steps = {line.split(" ", 1)[0] for line in log.splitlines() if line.startswith("#") and text in line and " [" in line}
    return bool(steps) and all(f"{step} CACHED" in log.splitlines() for step in steps)


def image_size(tag: str) -> int:
    return int(subprocess.run(["docker", "image", "inspect", tag, "--format", "{{.Size}}"], capture_output=True, text=True, check=True).stdout)


def first_iteration(run_dir: Path, image: str | None) -> dict[str, float]:
    command = [sys.executable, "-m", "rlrunner.cli", "run", str(SPEC), "--local", "--run-dir", str(run_dir), *[a for o in QUICK for a in ("--set", o)]]
    if image:
        command += ["--image", image]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    record = json.loads((run_dir / "run.json").read_text())
    return {"first_iteration_s": record["first_iteration_s"], "wall_s": record["wall_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="rlrunner:0.1.0")
    parser.add_argument("--base", default="rlrunner-base:bookworm")
    parser.add_argument("--cold", action="store_true", help="also build every layer anew (minutes)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side for start to first iteration")
    args = parser.parse_args()

    warm, _ = build(args.tag, args.base, cwd=ROOT)
    print(f"image {args.tag}: {image_size(args.tag) / 1e9:.2f} GB; an up-to-date rebuild took {warm:.1f} s")
    if args.cold:
        seconds, _ = build(f"{args.tag}-cold", args.base, cwd=ROOT, no_cache=True)
        print(f"cold build (--no-cache): {seconds:.1f} s")
    with tempfile.TemporaryDirectory() as folder:
        copy = project_copy(Path(folder), f"benchmark {time.time_ns()}")
        seconds, log = build(f"{args.tag}-code-change", args.base, cwd=copy)
    deps_cached = step_cached(log, "install.py deps")
    print(f"rebuild after a code-only change: {seconds:.1f} s (dependency layer cached: {deps_cached})")
    subprocess.run(["docker", "image", "rm", f"{args.tag}-code-change", f"{args.tag}-cold"], capture_output=True, check=False)

    figures: dict[str, list[dict[str, float]]] = {"local": [], "image": []}
    with tempfile.TemporaryDirectory() as folder:
        for index in range(args.repeat):
            for side, image in (("local", None), ("image", args.tag)):
                figures[side].append(first_iteration(Path(folder) / f"{side}-{index}", image))
    for key in ("first_iteration_s", "wall_s"):
        local = statistics.median(f[key] for f in figures["local"])
        inside = statistics.median(f[key] for f in figures["image"])
        print(f"{key}: --local {local:.1f} s, --image {inside:.1f} s, ratio {inside / local:.2f}x (median of {args.repeat})")


if __name__ == "__main__":
    main()
