"""Benchmark `/invocations` of `rlrunner serve` against bare onnxruntime on the same model and batch.

    python benchmarks/serving.py [MODEL_DIR|RUN_DIR] [--requests 2000] [--seconds 10] [--write docs/benchmarks.md]

Without a model dir it writes a synthetic Basic policy with RLlib's default PPO network (20 -> 256 -> 256 -> 3,
tanh). For each batch size (1 and 256) it measures, in this order and on the same machine:
* bare onnxruntime `session.run` (1 intra-op thread, as the server runs it);
* the server's request handler in this process (JSON parse, checks, onnxruntime, JSON dump), no HTTP;
* an empty ASGI app on the same uvicorn stack: the floor that HTTP itself costs (server and client);
* `POST /invocations` of `rlrunner serve` from a load generator on loopback (one keep-alive connection).
Each phase stops at its call count or its time limit, after 20 warm-up calls.
The server runs as a subprocess (`python -m rlrunner.cli serve ... --port 0`) and is stopped by pid.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlrunner.contract.model_dir import locate_model_dir
from rlrunner.policy import OnnxPolicy
from rlrunner.serving import protocol

READY = re.compile(r"Uvicorn running on http://127\.0\.0\.1:(\d+)")
SECTION = "## Serving"


@dataclass(frozen=True)
class Timing:
    """Latencies (seconds) of one phase and its wall time."""

    latencies: list[float]
    wall_s: float

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))


def synthetic_model_dir(folder: Path) -> Path:
    """A Basic policy with RLlib's default PPO network, built with onnx.helper (no torch)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    sizes = [20, 256, 256, 3]
    nodes, initializers, last = [], [], "obs"
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        weight = (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        initializers += [numpy_helper.from_array(weight, f"w{index}"), numpy_helper.from_array(np.zeros(fan_out, np.float32), f"b{index}")]
        nodes += [helper.make_node("MatMul", [last, f"w{index}"], [f"m{index}"]), helper.make_node("Add", [f"m{index}", f"b{index}"], [f"a{index}"])]
        last = f"a{index}"
        if index < len(sizes) - 2:
            nodes.append(helper.make_node("Tanh", [last], [f"t{index}"]))
            last = f"t{index}"
    nodes += [helper.make_node("Identity", [last], ["action_dist_inputs"]), helper.make_node("ArgMax", [last], ["actions"], axis=-1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "basic_policy",
        [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", 20])],
        [helper.make_tensor_value_info("actions", TensorProto.INT64, ["batch"]),
         helper.make_tensor_value_info("action_dist_inputs", TensorProto.FLOAT, ["batch", 3])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "policy.onnx"))
    metadata = {"format": 1, "observation_space": {"type": "box", "shape": [20], "dtype": "float32"},
                "action_space": {"type": "discrete", "n": 3}, "inputs": ["obs"], "outputs": ["actions", "action_dist_inputs"],
                "algorithm": "PPO", "run_id": "synthetic"}
    (folder / "policy.json").write_text(json.dumps(metadata))
    return folder


def time_calls(call: Callable[[], object], count: int, seconds: float) -> Timing:
    """Call `call` up to `count` times or for `seconds`, whichever ends first (after 20 warm-up calls)."""
    for _ in range(20):
        call()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + seconds
    while len(latencies) < count:
        before = time.perf_counter()
        call()
        after = time.perf_counter()
        latencies.append(after - before)
        if after > deadline:
            break
    return Timing(latencies, time.perf_counter() - started)


def start_server(command: list[str]) -> tuple[subprocess.Popen[str], int]:
    """A uvicorn server as a subprocess (it logs its port); its pid and port once /ping is healthy."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    port = None
    for line in process.stderr:
        match = READY.search(line)
        if match:
            port = int(match.group(1))
            break
    if port is None:
        stop_server(process)
        raise SystemExit("serving benchmark: the server did not start")
    threading.Thread(target=lambda: [None for _ in process.stderr], daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/ping")
        status = connection.getresponse().status
        connection.close()
        if status == 200:
            return process, port
        time.sleep(0.05)
    stop_server(process)
    raise SystemExit("serving benchmark: /ping never became healthy")


async def floor_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An empty ASGI app: reads the body, answers a constant; the HTTP stack's own cost."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"actions":[0]}'})


def serve_floor() -> None:
    """Run `floor_app` on uvicorn with the server's settings (this script's `--floor-server` mode)."""
    import uvicorn

    uvicorn.run(floor_app, host="127.0.0.1", port=0, log_level="info", access_log=False, lifespan="on", server_header=False)


def stop_server(process: subprocess.Popen[str]) -> None:
    """SIGTERM by pid, SIGKILL if it lingers."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


def http_load(port: int, body: bytes, *, count: int, seconds: float) -> Timing:
    """One keep-alive connection posting `body` to /invocations, one request at a time (the server is one process)."""
    headers = {"Content-Type": "application/json"}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def one() -> None:
        connection.request("POST", "/invocations", body, headers)
        response = connection.getresponse()
        data = response.read()
        if response.status != 200:
            raise SystemExit(f"serving benchmark: HTTP {response.status}: {data[:200]!r}")

    try:
        return time_calls(one, count, seconds)
    finally:
        connection.close()


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f}"


def run(model_dir: Path, *, requests: int, seconds: float) -> list[str]:
    """Measure every phase for batch 1 and 256; return the markdown table rows."""
    policy = OnnxPolicy.from_dir(model_dir, threads=1)
    session = policy._session  # bare onnxruntime: exactly the session the server runs
    rows = []
    server, port = start_server([sys.executable, "-m", "rlrunner.cli", "serve", str(model_dir), "--port", "0"])
    floor, floor_port = start_server([sys.executable, __file__, "--floor-server"])
    try:
        for batch in (1, 256):
            obs = np.random.default_rng(batch).normal(size=(batch, *policy.metadata.observation_shape)).astype(np.float32)
            body = json.dumps({"observations": obs.tolist()}).encode()
            bare = time_calls(lambda obs=obs: session.run(["actions"], {"obs": obs}), requests * 5, seconds)
            phases = [
                ("bare onnxruntime `session.run`", bare),
                ("request handler in-process: JSON, checks, onnxruntime", time_calls(lambda body=body: protocol.handle(policy, body, "application/json"), requests, seconds)),
                ("HTTP floor: empty ASGI app, same uvicorn, same body", http_load(floor_port, body, count=requests, seconds=seconds)),
                ("**HTTP `POST /invocations`** (`rlrunner serve`)", http_load(port, body, count=requests, seconds=seconds)),
            ]
            for name, timing in phases:
                ratio = timing.percentile(50) / bare.percentile(50)
                rows.append(f"| {batch} | {name} | {len(timing.latencies):,} | {timing.rate:,.0f} | {ms(timing.percentile(50))} | {ms(timing.percentile(99))} | {ratio:,.1f}× |")
            rows.append(f"| {batch} | (request body: {len(body):,} bytes) | | | | | |")
    finally:
        stop_server(server)
        stop_server(floor)
    return rows


def server_stack() -> str:
    """What uvicorn picks in this environment ("auto"): httptools and uvloop when installed, else h11 and asyncio."""
    parser = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    json_library = "orjson" if importlib.util.find_spec("orjson") else "json"
    return f"uvicorn ({parser}, {loop}) + Starlette, {json_library}"


def render(rows: list[str], model: str, command: str) -> str:
    """The table of one benchmark run, with what produced it."""
    header = "| batch | what | calls | calls/s | p50 ms | p99 ms | p50 vs bare |\n|---:|---|---:|---:|---:|---:|---:|"
    machine = f"{os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, Python {platform.python_version()}"
    return (
        f"`{command}` ({machine}; model: {model}; server: {server_stack()}, onnxruntime with 1 intra-op thread)\n\n"
        f"{header}\n" + "\n".join(rows) + "\n"
    )


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the `## Serving` section of a markdown file, leaving the other sections alone."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(f"\n{SECTION}\n")
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + 1)
        text = text[: start + 1] + section + (text[end:] if end != -1 else "")
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="a model dir or a run dir (default: a synthetic Basic policy)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per HTTP phase (bare onnxruntime runs 5x as many)")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per phase")
    parser.add_argument("--write", type=Path, help="replace the ## Serving section of this markdown file")
    parser.add_argument("--floor-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor_server:
        serve_floor()
        return
    with tempfile.TemporaryDirectory() as scratch:
        if args.model is None:
            model_dir = synthetic_model_dir(Path(scratch) / "model")
            model = "synthetic Basic policy, 20→256→256→3 tanh (RLlib's default PPO network)"
        else:
            model_dir = locate_model_dir(Path(args.model))
            model = f"`{args.model}`"
        rows = run(model_dir, requests=args.requests, seconds=args.seconds)
    command = "python benchmarks/serving.py" + "".join(f" {a}" for a in sys.argv[1:] if not a.startswith("--write") and a != str(args.write))
    table = render(rows, model, command)
    print(table)
    if args.write:
        write_section(args.write, f"{SECTION}\n\n{table}")


if __name__ == "__main__":
    main()
