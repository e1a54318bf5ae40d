"""Wall time of `rlrunner validate` in a cold process: one spec and 200 specs, beside a bare Python start.

Run: python benchmarks/validate.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from _timing import cold

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    seed = (REPO / "experiments" / "basic_ppo.yaml").read_text()
    with tempfile.TemporaryDirectory() as folder:
        many = Path(folder)
        for index in range(200):
            text = seed.replace("name: basic-ppo", f"name: basic-ppo-{index}").replace("lr: 1.0e-4", f"lr: {1e-4 * (1 + index / 100):.6g}")
            (many / f"spec{index:03d}.yaml").write_text(text)
        bare = cold([sys.executable, "-c", "pass"], args.repeat)
        one = cold([sys.executable, "-m", "rlrunner.cli", "validate", str(REPO / "experiments" / "basic_ppo.yaml")], args.repeat)
        two_hundred = cold([sys.executable, "-m", "rlrunner.cli", "validate", str(many)], args.repeat)
    print(f"bare python start      {bare:6.3f} s")
    print(f"validate 1 spec        {one:6.3f} s  ({one / bare:4.1f}x bare start; target < 0.5 s)")
    print(f"validate 200 specs     {two_hundred:6.3f} s  ({two_hundred / bare:4.1f}x bare start; target < 3 s)")
    print(f"per extra spec         {(two_hundred - one) / 199 * 1000:6.2f} ms")


if __name__ == "__main__":
    main()
