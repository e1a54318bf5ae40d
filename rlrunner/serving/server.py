"""Run the inference app with uvicorn: `rlrunner serve`, locally and as the image's `serve` (container/entrypoint.sh)."""

from __future__ import annotations

import asyncio
import copy
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlrunner.contract.errors import InfrastructureError
from rlrunner.serving.protocol import MAX_BODY_BYTES

CONTAINER_PORT = 8080
GRACEFUL_SHUTDOWN_S = 20
"""SageMaker sends SIGTERM and, 30 s later, SIGKILL: finish the requests in flight before that."""
HEADER_TIMEOUT_S = 10.0
"""A connection that has not sent a whole request head within this many seconds is closed."""
BODY_TIMEOUT_S = 30.0
"""A request body not received whole within this many seconds is refused (408) and its connection closed."""
MAX_CONNECTIONS = 32
"""Requests and connections served at once; more get 503 (bounds memory: each may hold a body up to the limit)."""
KEEP_ALIVE_S = 5
"""An idle kept-alive connection is closed after this many seconds."""


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
    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S
    max_connections: int = MAX_CONNECTIONS


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is one clear error (exit 4)."""
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as error:
        raise InfrastructureError(f"--host {host}: cannot listen there: {error.strerror or error}", location=None) from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a port in TIME_WAIT is free; one in use is not
        sock.bind(address)
        sock.listen(2048)
    except OSError as error:
        sock.close()
        raise InfrastructureError(f"--port {port}: cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def serve(options: ServeOptions, on_listen: Callable[[str, int], None] | None = None) -> None:
    """Serve until SIGINT/SIGTERM (blocking). `on_listen(host, port)` is called once the socket listens; with it,
    the access log goes to stderr too, so stdout carries only what `on_listen` prints."""
    sock = listen(options.host, options.port)  # before the model loads: a failed bind must not race onnxruntime's threads
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from rlrunner.serving.app import create_app

    _log_like_uvicorn(options.log_level)
    app = create_app(
        options.model_dir, max_body_bytes=options.max_body_bytes, threads=options.threads, body_timeout_s=options.body_timeout_s
    )
    log_config = copy.deepcopy(LOGGING_CONFIG)
    if on_listen is not None:
        log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config = uvicorn.Config(
        app,
        log_config=log_config,
        host=options.host,
        port=options.port,
        log_level=options.log_level,
        access_log=options.access_log,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        timeout_keep_alive=KEEP_ALIVE_S,
        limit_concurrency=options.max_connections,
        http=_head_timeout_protocol(options.header_timeout_s),
    )
    host, port = sock.getsockname()[:2]
    # uvicorn says this only for sockets it bound itself; the port is already listening (connections wait in the backlog)
    logging.getLogger("uvicorn.error").info("Uvicorn running on http://%s:%d (Press CTRL+C to quit)", host, port)
    if on_listen is not None:
        on_listen(host, port)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


def _head_timeout_protocol(timeout_s: float) -> Any:
    """uvicorn's h11 protocol, closing a connection whose request head is not complete within `timeout_s`."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadTimeoutProtocol(H11Protocol):
        head_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self.head_timer = self.loop.call_later(timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def _head_timeout(self) -> None:
            self.head_timer = None
            if self.conn.their_state in (h11.IDLE, h11.DONE) and not self.transport.is_closing():
                self.transport.close()  # a request head still incomplete (slowloris), or nothing at all

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state not in (h11.IDLE, h11.DONE):
                self._disarm()  # the head is in; the body has its own timeout

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadTimeoutProtocol


def _log_like_uvicorn(level: str) -> None:
    logger = logging.getLogger("rlrunner")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level.upper())
