"""Run the inference app with uvicorn: `rlrunner serve`, locally and as the image's `serve` (container/entrypoint.sh)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from rlrunner.serving.protocol import MAX_BODY_BYTES

CONTAINER_PORT = 8080
GRACEFUL_SHUTDOWN_S = 20
"""SageMaker sends SIGTERM and, 30 s later, SIGKILL: finish the requests in flight before that."""


@dataclass(frozen=True)
class ServeOptions:
    """Where and how the server listens."""

    model_dir: Path
    host: str = "127.0.0.1"
    port: int = CONTAINER_PORT
    max_body_bytes: int = MAX_BODY_BYTES
    threads: int = 1
    log_level: str = "info"
    access_log: bool = False


def serve(options: ServeOptions) -> None:
    """Serve until SIGINT/SIGTERM (blocking)."""
    import uvicorn

    from rlrunner.serving.app import create_app

    _log_like_uvicorn(options.log_level)
    app = create_app(options.model_dir, max_body_bytes=options.max_body_bytes, threads=options.threads)
    config = uvicorn.Config(
        app,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        access_log=options.access_log,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    uvicorn.Server(config).run()


def _log_like_uvicorn(level: str) -> None:
    logger = logging.getLogger("rlrunner")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
