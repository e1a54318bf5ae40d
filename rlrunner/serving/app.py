"""The inference server's ASGI app (Starlette): SageMaker's `GET /ping` and `POST /invocations`.

The model loads in a background thread, so the port answers at once; `/ping` says 503 until every
policy of the model dir is loaded (or forever, with the reason and the policy, if one cannot be). Every
refused request gets a 4xx JSON `{"error": ...}`; the app never lets a bad request reach a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from rlrunner.policy import OnnxPolicy, PolicySet
from rlrunner.serving import protocol

log = logging.getLogger("rlrunner.serving")

JSON = "application/json"
Loader = Callable[[], OnnxPolicy | PolicySet]


class ModelState:
    """The policies behind the server: loading, loaded (all of them), or failed with a reason."""

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self.policies: PolicySet | None = None
        self.error: str | None = None
        self.loaded = threading.Event()

    def load(self) -> None:
        """Load the policies (in a background thread); record the failure instead of raising."""
        try:
            loaded = self._loader()
            self.policies = PolicySet.single(loaded) if isinstance(loaded, OnnxPolicy) else loaded
            log.info("model loaded from %s: %s", self.policies.source, self.policies.summary())
        except Exception as error:  # any failure leaves /ping at 503 with the reason
            self.error = f"model: cannot load: {error}"
            log.error("%s", self.error)
        finally:
            self.loaded.set()

    def unavailable(self) -> str:
        """Why no policy is there yet."""
        return self.error or "model: still loading"


def json_response(data: bytes, status: int = 200) -> Response:
    """A JSON response from already-serialized bytes."""
    return Response(data, status_code=status, media_type=JSON)


def error_response(status: int, message: str) -> Response:
    """A JSON error response."""
    return json_response(protocol.error_body(message), status)


async def read_body(request: Request, limit: int, timeout_s: float = 30.0) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes, and with 408 after `timeout_s`."""
    try:
        async with asyncio.timeout(timeout_s):
            return await _read_body(request, limit)
    except TimeoutError:
        raise protocol.RequestError(408, f"body: not received within {timeout_s:g} s") from None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise protocol.RequestError(400, f"content-length: not a number ({declared!r})")
        if int(declared) > limit:
            raise protocol.RequestError(413, f"body: {int(declared)} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise protocol.RequestError(413, f"body: over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(
    model_dir: str | Path | None = None,
    *,
    loader: Loader | None = None,
    max_body_bytes: int = protocol.MAX_BODY_BYTES,
    threads: int | None = 1,
    body_timeout_s: float = 30.0,
) -> Starlette:
    """The ASGI app serving `model_dir` (or what `loader` returns), loading it in the background."""
    if loader is None:
        if model_dir is None:
            raise ValueError("create_app: give model_dir or loader")
        path = Path(model_dir)
        loader = lambda: PolicySet.from_dir(path, threads=threads)  # noqa: E731
    state = ModelState(loader)

    async def ping(request: Request) -> Response:
        if state.policies is None:
            return error_response(503, state.unavailable())
        return Response(status_code=200)

    async def invocations(request: Request) -> Response:
        policies = state.policies
        if policies is None:
            return error_response(503, state.unavailable())
        try:
            content_type = request.headers.get("content-type")
            protocol.check_content_type(content_type)  # before reading a body that is not JSON
            body = await read_body(request, max_body_bytes, body_timeout_s)
            query = request.query_params
            answer = protocol.handle(policies, body, content_type, query.get("return"), query.get("policy"))
            return json_response(answer)
        except protocol.RequestError as error:
            return error_response(error.status, error.message)
        except ClientDisconnect:  # nobody is left to answer
            log.info("POST /invocations: client went away while sending the body")
            return error_response(400, "body: client disconnected")

    async def describe(request: Request) -> Response:
        if state.policies is None:
            return error_response(503, state.unavailable())
        return json_response(protocol.dumps(protocol.describe(state.policies)))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        response = error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")
        response.headers.update(exc.headers or {})  # Allow, for a 405
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return error_response(500, f"{request.method} {request.url.path}: internal error ({type(exc).__name__})")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        threading.Thread(target=state.load, name="rlrunner-model-loader", daemon=True).start()
        yield

    app = Starlette(
        routes=[
            Route("/ping", ping, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
            Route("/", describe, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.model = state
    return app
