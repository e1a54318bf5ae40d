"""The container's `serve` entry: `python -m rlrunner.serving [serve]` serves /opt/ml/model on 0.0.0.0:8080."""

from __future__ import annotations

import os
import sys

from rlrunner.serving.server import container_options, serve


def main(argv: list[str]) -> int:
    """Serve the SageMaker model dir; the only accepted argument is SageMaker's `serve`."""
    if argv not in ([], ["serve"]):
        print(f"rlrunner.serving: expected no argument or 'serve', got {' '.join(argv)}", file=sys.stderr)
        return 2
    serve(container_options(os.environ))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
