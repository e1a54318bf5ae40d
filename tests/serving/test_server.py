"""`rlrunner serve` as a real subprocess on 127.0.0.1: payload forms, a batch of 256, bad requests, health."""

from __future__ import annotations

import contextlib
import json
import signal
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from http_helpers import ServerProcess, assert_port_free, post_json, request, start_server, stop_server, wait_healthy

from rlrunner.policy import OnnxPolicy

OBS = np.eye(20, dtype=np.float32)[[10]].tolist()  # Basic's start position, one-hot
BIG = b'{"observations": [' + b"0.0, " * 10_000_000 + b"0]}"  # 50 MB


def observations(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, 20)).astype(np.float32)


def test_serve_observations_batch_of_256_matches_the_policy(server: ServerProcess, basic_model_dir: Path) -> None:
    batch = observations(256)
    response = post_json(server.port, {"observations": batch.tolist()})
    assert response.status == 200, response.body
    assert response.headers["content-type"] == "application/json"
    assert response.json()["actions"] == OnnxPolicy.from_dir(basic_model_dir).act(batch).tolist()


def test_serve_tf_serving_payload_with_rllib_placeholders(server: ServerProcess, basic_model_dir: Path) -> None:
    payload = {"inputs": {"observations": OBS, "prev_action": [0, 0], "is_training": False, "prev_reward": -1, "seq_lens": -1, "timestep": 1}}
    response = post_json(server.port, payload)
    assert response.status == 200, response.body
    assert response.json() == {"actions": OnnxPolicy.from_dir(basic_model_dir).act(OBS).tolist()}


def test_serve_instances_rows_and_objects_agree(server: ServerProcess) -> None:
    batch = observations(4).tolist()
    plain = post_json(server.port, {"instances": batch}).json()
    objects = post_json(server.port, {"instances": [{"observations": row, "prev_action": 0} for row in batch]}).json()
    assert plain == objects == post_json(server.port, {"observations": batch}).json()


def test_serve_returns_probabilities_and_logits_when_asked(server: ServerProcess, basic_model_dir: Path) -> None:
    batch = observations(3)
    by_body = post_json(server.port, {"observations": batch.tolist(), "return": ["probabilities", "logits"]}).json()
    by_query = post_json(server.port, {"observations": batch.tolist()}, "/invocations?return=probabilities,logits").json()
    assert by_body.keys() == {"actions", "action_probs", "logits"}
    assert by_body == by_query
    logits = OnnxPolicy.from_dir(basic_model_dir).outputs(batch)["action_dist_inputs"]
    np.testing.assert_allclose(by_body["logits"], logits, rtol=1e-6)
    np.testing.assert_allclose(np.sum(by_body["action_probs"], axis=1), 1.0, rtol=1e-5)
    assert by_body["actions"] == np.argmax(by_body["action_probs"], axis=1).tolist()


BAD_REQUESTS = {
    "wrong-width": (b'{"observations": [[0, 1, 2]]}', "application/json", 400, "observations: expected shape [batch, 20], got [1, 3]"),
    "single-observation": (json.dumps({"observations": OBS[0]}).encode(), "application/json", 400,
                           "observations: expected shape [batch, 20], got [20] (wrap a single observation in a list)"),
    "non-numeric": (json.dumps({"observations": [["a"] * 20]}).encode(), "application/json", 400, "observations: expected numbers, got strings"),
    "null-values": (json.dumps({"observations": [[None] * 20]}).encode(), "application/json", 400,
                    "observations: expected numbers, got mixed or missing values"),
    "ragged": (json.dumps({"observations": [[0] * 20, [0] * 19]}).encode(), "application/json", 400,
               "observations: not a rectangular array (rows of different lengths)"),
    "nan": (b'{"observations": [[NaN' + b", 0" * 19 + b"]]}", "application/json", 400, "NaN and Infinity are not JSON numbers"),
    "infinity": (b'{"observations": [[1e999' + b", 0" * 19 + b"]]}", "application/json", 400, "body: invalid JSON (number is infinity"),
    "beyond-float32": (b'{"observations": [[1e39' + b", 0" * 19 + b"]]}", "application/json", 400,
                       "observations[0, 0]: not finite as float32 (got 1e+39)"),
    "empty-batch": (b'{"observations": []}', "application/json", 400, "observations: empty batch"),
    "empty-body": (b"", "application/json", 400, "body: empty (expected JSON with observations)"),
    "invalid-json": (b'{"observations": [[', "application/json", 400, "body: invalid JSON"),
    "no-observations": (b'{"obs": [[0]]}', "application/json", 400, "body: expected observations, inputs.observations or instances (got keys: obs)"),
    "not-an-object": (b"42", "application/json", 400, "body: expected a JSON object with observations, inputs.observations or instances, got int"),
    "unknown-return": (json.dumps({"observations": OBS, "return": ["value"]}).encode(), "application/json", 400,
                       "return: unknown 'value' (choose from actions, probabilities, logits)"),
    "wrong-content-type": (json.dumps({"observations": OBS}).encode(), "text/csv", 415, "content-type: expected application/json, got 'text/csv'"),
    "form-content-type": (b"observations=1", "application/x-www-form-urlencoded", 415,
                          "content-type: expected application/json, got 'application/x-www-form-urlencoded'"),
    "50-MB-body": (BIG, "application/json", 413, f"body: {len(BIG)} bytes is over the limit of 6291456 bytes"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_serve_bad_request_gets_4xx_json_and_serving_goes_on(server: ServerProcess, name: str) -> None:
    body, content_type, status, message = BAD_REQUESTS[name]
    response = request(server.port, "POST", "/invocations", body, {"Content-Type": content_type})
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    assert message in response.json()["error"]
    assert post_json(server.port, {"observations": OBS}).status == 200
    assert server.alive()


def test_serve_chunked_body_over_the_limit_is_refused(server: ServerProcess) -> None:
    chunks = (b" " * 1_000_000 for _ in range(50))  # no Content-Length: sent chunked, the limit applies while reading
    response = request(server.port, "POST", "/invocations", chunks, {"Content-Type": "application/json"})  # type: ignore[arg-type]
    assert (response.status, response.json()) == (413, {"error": "body: over the limit of 6291456 bytes"})
    assert post_json(server.port, {"observations": OBS}).status == 200


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/invocations", 405), ("POST", "/ping", 405), ("GET", "/nowhere", 404)])
def test_serve_wrong_route_or_method_gets_json(server: ServerProcess, method: str, path: str, status: int) -> None:
    response = request(server.port, method, path, b"{}" if method == "POST" else None)
    assert response.status == status
    assert response.json()["error"].startswith(f"{method} {path}: ")
    if status == 405:
        allowed = {method.strip() for method in response.headers["allow"].split(",")}  # Starlette's order varies
        assert allowed == ({"POST"} if path == "/invocations" else {"GET", "HEAD"})


def test_serve_describes_the_model(server: ServerProcess) -> None:
    info = request(server.port, "GET", "/").json()
    assert info["observation_shape"] == [20]
    assert info["action_space"] == {"type": "discrete", "n": 3}


def test_serve_broken_model_never_reports_healthy(basic_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "policy.json").write_text((basic_model_dir / "policy.json").read_text())
    (broken / "policy.onnx").write_bytes(b"not an onnx model")
    running = start_server(broken)
    try:
        import time

        deadline = time.monotonic() + 60  # the socket is bound before the model loads: "still loading" first
        ping = request(running.port, "GET", "/ping")
        while ping.json()["error"] == "model: still loading" and time.monotonic() < deadline:
            assert ping.status == 503
            time.sleep(0.2)
            ping = request(running.port, "GET", "/ping")
        for _ in range(20):
            ping = request(running.port, "GET", "/ping")
            assert ping.status == 503
        assert ping.json()["error"].startswith("model: cannot load: ")
        assert post_json(running.port, {"observations": OBS}).status == 503
        assert running.alive()
    finally:
        stop_server(running.process)
    assert_port_free(running.port)


def test_serve_rejects_a_folder_that_is_no_model_dir(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rlrunner.cli import main

    result = CliRunner().invoke(main, ["serve", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"{tmp_path}: not a model dir (policy.onnx, policy.json missing)"


def test_serve_stops_on_sigterm_and_frees_its_port(basic_model_dir: Path) -> None:
    running = start_server(basic_model_dir)
    wait_healthy(running.port)
    stop_server(running.process)
    assert running.process.returncode in (0, -signal.SIGTERM)  # uvicorn re-raises the signal after a clean shutdown
    assert "Application shutdown complete." in running.log()
    assert_port_free(running.port)


def test_server_modules_import_no_heavy_dependency() -> None:
    import subprocess
    import sys

    code = (
        "import sys, rlrunner.cli, rlrunner.serving.app, rlrunner.serving.server, rlrunner.entry.evaluate; "
        "print(sorted(m for m in ('torch', 'ray', 'mlagents_envs', 'sagemaker', 'gymnasium', 'onnxruntime') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"  # onnxruntime too: it loads with the model, in the background


# --- hostile clients and a busy port --------------------------------------------------------------


def serve_command(model_dir: Path, port: int) -> list[str]:
    import sys

    return [sys.executable, "-m", "rlrunner.cli", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]


def test_serve_on_a_port_in_use_is_one_line_and_exit_4(basic_model_dir: Path) -> None:
    import socket
    import subprocess

    with socket.socket() as taken:  # a plain listener
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(serve_command(basic_model_dir, port), capture_output=True, text=True, timeout=60)
    assert result.returncode == 4, result.stderr
    assert result.stderr == f"--port {port}: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    running = start_server(basic_model_dir)  # another rlrunner serve on the port
    try:
        wait_healthy(running.port)
        second = subprocess.run(serve_command(basic_model_dir, running.port), capture_output=True, text=True, timeout=60)
        assert second.returncode == 4 and "Traceback" not in second.stderr and len(second.stderr.splitlines()) == 1
        assert request(running.port, "GET", "/ping").status == 200  # the first one is unharmed
    finally:
        stop_server(running.process)


def connect(port: int, head: bytes, body: bytes = b"") -> Any:
    import socket

    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        client.sendall(head + body)
    except OSError:  # refused or reset by the server: close our end too
        client.close()
        raise
    return client


def closed_within(client: Any, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed the connection within `seconds`, what it sent before)."""
    import time

    received = b""
    deadline = time.monotonic() + seconds
    client.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            chunk = client.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


HALF_HEAD = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: appli"
BODY_HEAD = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 6000000\r\n\r\n"


@pytest.mark.parametrize("head", [b"", HALF_HEAD, b"GET /ping HTTP/1.1\r\n"], ids=["silent", "half-head", "no-blank-line"])
def test_serve_closes_a_connection_whose_head_does_not_arrive(basic_model_dir: Path, head: bytes) -> None:
    running = start_server(basic_model_dir, "--header-timeout", "1")
    try:
        wait_healthy(running.port)
        with connect(running.port, head) as client:
            closed, _ = closed_within(client, 8)
        assert closed
        assert request(running.port, "GET", "/ping").status == 200
    finally:
        stop_server(running.process)


def test_serve_refuses_a_body_that_does_not_arrive_in_time(basic_model_dir: Path) -> None:
    running = start_server(basic_model_dir, "--body-timeout", "1")
    try:
        wait_healthy(running.port)
        with connect(running.port, BODY_HEAD, b'{"observations": [') as client:
            closed, received = closed_within(client, 10)
        assert closed and received.startswith(b"HTTP/1.1 408 ")
        assert received.endswith(b'{"error":"body: not received within 1 s"}')
    finally:
        stop_server(running.process)


def test_serve_30_half_sent_bodies_hold_bounded_memory_and_connections(basic_model_dir: Path) -> None:
    running = start_server(basic_model_dir, "--max-connections", "4", "--body-timeout", "3")
    clients = []
    try:
        wait_healthy(running.port)
        before = rss_kib(running.process.pid)
        for _ in range(30):
            with contextlib.suppress(OSError):  # refused once the cap is reached: that is the point
                clients.append(connect(running.port, BODY_HEAD, b"[" + b"0.0, " * 700_000))  # 3.5 MB of 6
        grown_mib = (rss_kib(running.process.pid) - before) / 1024
        assert grown_mib < 40, f"the server grew by {grown_mib:.0f} MiB"
        assert request(running.port, "GET", "/ping").status in (200, 503)  # answered at once, never hung
        for client in clients:
            client.close()
        import time

        deadline = time.monotonic() + 15
        while request(running.port, "GET", "/ping").status != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert request(running.port, "GET", "/ping").status == 200  # capacity is back once they are gone
    finally:
        for client in clients:
            client.close()
        stop_server(running.process)


def test_serve_output_json_prints_the_address_on_stdout(basic_model_dir: Path) -> None:
    import subprocess
    import sys

    command = [sys.executable, "-m", "rlrunner.cli", "serve", str(basic_model_dir), "--port", "0", "--access-log", "--output", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        address = json.loads(process.stdout.readline())
        assert address["url"] == f"http://127.0.0.1:{address['port']}" and address["model_dir"] == str(basic_model_dir)
        assert "policies" not in address  # a single-policy model dir: requests name none
        wait_healthy(address["port"])
        assert post_json(address["port"], {"observations": OBS}).status == 200
    finally:
        stop_server(process)
    assert process.stdout.read() == ""  # the access log went to stderr
    process.stdout.close()


# --- a multi-policy model dir: the request names the policy -----------------------------------------


def rows(count: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, width)).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "policy", "width"),
    [("Walker", "Walker", 20), ("Walker?team=1", "Walker", 20), ("Walker?team=0", "Walker", 20), ("Reacher", "Reacher", 8),
     ("Reacher?team=0", "Reacher", 8)],
)  # fmt: skip
def test_serve_policies_answers_with_the_policy_the_request_names(
    policies_server: ServerProcess, policies_model_dir: Path, name: str, policy: str, width: int
) -> None:
    batch = rows(64, width)
    expected = OnnxPolicy.from_dir(policies_model_dir / "policies" / policy).act(batch)
    by_body = post_json(policies_server.port, {"observations": batch.tolist(), "policy": name})
    by_query = post_json(policies_server.port, batch.tolist(), f"/invocations?policy={urllib.parse.quote(name)}")
    instances = post_json(policies_server.port, {"instances": [{"observations": row} for row in batch.tolist()], "policy": name})
    for response in (by_body, by_query, instances):
        assert response.status == 200, response.body
        np.testing.assert_array_equal(np.asarray(response.json()["actions"], dtype=expected.dtype), expected)


POLICY_LIST = "Walker <- Walker?team=0, Walker?team=1; Reacher <- Reacher?team=0"
POLICY_REQUESTS = {
    "no-policy": ({"observations": OBS}, "/invocations", f'policy: this model dir holds 2 policies; name one with "policy" ({POLICY_LIST})'),
    "unknown-policy": ({"observations": OBS, "policy": "Goalie?team=0"}, "/invocations", f"policy: unknown 'Goalie?team=0' (policies: {POLICY_LIST})"),
    "other-policy-shape": ({"observations": OBS, "policy": "Reacher"}, "/invocations", "observations: expected shape [batch, 8], got [1, 20]"),
    "body-and-query-differ": ({"observations": OBS, "policy": "Walker"}, "/invocations?policy=Reacher",
                              "policy: the body names 'Walker', ?policy= names 'Reacher'; name one"),
}  # fmt: skip


@pytest.mark.parametrize("name", POLICY_REQUESTS)
def test_serve_policies_refuses_a_request_without_a_known_policy(policies_server: ServerProcess, name: str) -> None:
    payload, path, message = POLICY_REQUESTS[name]
    response = post_json(policies_server.port, payload, path)
    assert (response.status, response.json()) == (400, {"error": message})
    assert post_json(policies_server.port, {"observations": OBS, "policy": "Walker"}).status == 200
    assert policies_server.alive()


def test_serve_policies_describes_every_policy(policies_server: ServerProcess) -> None:
    info = request(policies_server.port, "GET", "/").json()
    assert {name: (p["behaviors"], p["observation_shape"], p["action_space"]["type"]) for name, p in info["policies"].items()} == {
        "Walker": (["Walker?team=0", "Walker?team=1"], [20], "discrete"),
        "Reacher": (["Reacher?team=0"], [8], "box"),
    }
    assert "model loaded from " in policies_server.log()
    loaded = next(line for line in policies_server.log().splitlines() if "model loaded from " in line)
    assert loaded.endswith(
        ": Walker (Walker?team=0, Walker?team=1): observations [20] -> discrete 3; Reacher (Reacher?team=0): observations [8] -> box [2]"
    )


def test_serve_policies_is_never_healthy_when_one_policy_cannot_load(policies_model_dir: Path, tmp_path: Path) -> None:
    import shutil
    import time

    broken = Path(shutil.copytree(policies_model_dir, tmp_path / "model"))
    (broken / "policies/Reacher/policy.onnx").write_bytes(b"not an onnx model")
    running = start_server(broken)
    try:
        deadline = time.monotonic() + 60
        ping = request(running.port, "GET", "/ping")
        while ping.json()["error"] == "model: still loading" and time.monotonic() < deadline:
            time.sleep(0.2)
            ping = request(running.port, "GET", "/ping")
        assert ping.status == 503
        assert ping.json()["error"].startswith(f"model: cannot load: policy 'Reacher': {broken}/policies/Reacher/policy.onnx: onnxruntime cannot load it")
        assert post_json(running.port, {"observations": OBS, "policy": "Walker"}).status == 503  # all or nothing
    finally:
        stop_server(running.process)
    assert_port_free(running.port)


def test_serve_rejects_a_multi_policy_dir_with_a_policy_missing(policies_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from click.testing import CliRunner

    from rlrunner.cli import main

    broken = Path(shutil.copytree(policies_model_dir, tmp_path / "model"))
    (broken / "policies/Walker/policy.json").unlink()
    result = CliRunner().invoke(main, ["serve", str(broken)])
    assert (result.exit_code, result.output.strip()) == (2, f"{broken}: policy 'Walker': policies/Walker/policy.json missing")


def test_serve_output_json_names_the_policies_of_a_run_dir(policies_model_dir: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    shutil.copytree(policies_model_dir, run_dir / "model")  # RUN_DIR: serve finds its model/
    command = [sys.executable, "-m", "rlrunner.cli", "serve", str(run_dir), "--port", "0", "--output", "json"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        address = json.loads(process.stdout.readline())
        assert address["model_dir"] == str(run_dir / "model")
        assert address["policies"] == {"Walker": ["Walker?team=0", "Walker?team=1"], "Reacher": ["Reacher?team=0"]}
        wait_healthy(address["port"])
        assert post_json(address["port"], {"observations": [[0.0] * 8], "policy": "Reacher?team=0"}).status == 200
    finally:
        stop_server(process)
        assert process.stdout is not None
        process.stdout.close()
