"""The ASGI app in this process behind a real uvicorn on loopback: health follows the model's loading."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from http_helpers import assert_port_free, post_json, request

from rlrunner.policy import OnnxPolicy
from rlrunner.serving.app import create_app

OBS = [[0.0] * 10 + [1.0] + [0.0] * 9]


@contextmanager
def running(loader: Callable[[], OnnxPolicy]) -> Iterator[int]:
    """uvicorn serving create_app(loader=...) in a thread on a free port; stopped and the port freed on exit."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(loader=loader), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.01)
            assert thread.is_alive(), "uvicorn stopped during start-up"
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
    assert not thread.is_alive()
    assert_port_free(port)


def test_app_ping_is_503_until_the_model_is_loaded(basic_model_dir: Path) -> None:
    release = threading.Event()

    def slow_loader() -> OnnxPolicy:
        assert release.wait(10)
        return OnnxPolicy.from_dir(basic_model_dir)

    with running(slow_loader) as port:
        for _ in range(5):
            ping = request(port, "GET", "/ping")
            assert (ping.status, ping.json()) == (503, {"error": "model: still loading"})
        assert post_json(port, {"observations": OBS}).status == 503
        release.set()
        for _ in range(200):
            ping = request(port, "GET", "/ping")
            if ping.status == 200:
                break
            threading.Event().wait(0.01)
        assert (ping.status, ping.body) == (200, b"")
        assert post_json(port, {"observations": OBS}).status == 200


def test_app_failed_load_keeps_ping_at_503_with_the_reason() -> None:
    def failing_loader() -> OnnxPolicy:
        raise ValueError("/opt/ml/model: not a model dir (policy.json missing)")

    with running(failing_loader) as port:
        for _ in range(200):
            ping = request(port, "GET", "/ping")
            if ping.json()["error"] != "model: still loading":
                break
            threading.Event().wait(0.01)
        assert ping.status == 503
        assert ping.json() == {"error": "model: cannot load: /opt/ml/model: not a model dir (policy.json missing)"}


def test_create_app_needs_a_model_dir_or_a_loader() -> None:
    with pytest.raises(ValueError, match="^create_app: give model_dir or loader$"):
        create_app()
