"""A small HTTP client and a real `rlrunner serve` subprocess for serving tests and the benchmark."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

READY = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")


@dataclass
class Response:
    """Status, headers and decoded JSON (or None) of one HTTP response."""

    status: int
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10) -> Response:
    """One HTTP request to 127.0.0.1:port over a fresh connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Response(response.status, response.read(), {k.lower(): v for k, v in response.getheaders()})
    finally:
        connection.close()


def post_json(port: int, payload: Any, path: str = "/invocations") -> Response:
    """POST a JSON payload to /invocations."""
    return request(port, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})


@dataclass
class ServerProcess:
    """`rlrunner serve` running as a child process; its stderr is collected in a thread."""

    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return "".join(self.lines)


def _drain(process: subprocess.Popen[str], lines: list[str], ready: threading.Event, port: list[int]) -> None:
    assert process.stderr is not None
    for line in process.stderr:
        lines.append(line)
        match = READY.search(line)
        if match:
            port.append(int(match.group(1)))
            ready.set()
    ready.set()


def start_server(model_dir: Path, *extra: str) -> ServerProcess:
    """Start `rlrunner serve MODEL_DIR --port 0` and wait until it listens."""
    command = [sys.executable, "-m", "rlrunner.cli", "serve", str(model_dir), "--host", "127.0.0.1", "--port", "0", *extra]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    ready, port = threading.Event(), []  # type: ignore[var-annotated]
    threading.Thread(target=_drain, args=(process, lines, ready, port), daemon=True).start()
    if not ready.wait(30) or not port:
        stop_server(process)
        raise AssertionError(f"rlrunner serve did not start:\n{''.join(lines)}")
    return ServerProcess(process, port[0], lines)


def stop_server(process: subprocess.Popen[str]) -> None:
    """SIGTERM the server (by pid), then SIGKILL if it lingers; reap it."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)
    if process.stderr is not None:
        process.stderr.close()


def assert_port_free(port: int) -> None:
    """Nothing listens on 127.0.0.1:port any more."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))


def wait_healthy(port: int, timeout: float = 30) -> list[int]:
    """Poll /ping until 200; return every status seen."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(request(port, "GET", "/ping").status)
        if seen[-1] == 200:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"/ping never healthy: {seen[-5:]}")
