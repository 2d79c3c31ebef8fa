"""`create_app`: the starlette application behind `sandboxer serve`.

The app is assembled from the endpoint table in `sandboxer.http.routes`,
with, from the outside in: a boundary that turns unexpected exceptions into
a bare 500, bearer-token authentication (every route but /v1/health), and
starlette's exception handling, which maps `SandboxerError`s through
`sandboxer.http.errors`. Blocking manager calls run in worker threads, in
two separately limited groups (quick store work; work waiting on a
backend); background work (snapshots and restores requested with
`wait: false`) runs on a small thread pool of the app's own.
"""

from __future__ import annotations

import contextlib
import hmac
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor

import anyio
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandboxer.errors import AuthenticationError, ForbiddenError, SandboxerError
from sandboxer.http.endpoints import Endpoint, Services
from sandboxer.http.errors import (
    ErrorBoundary,
    handle_http_exception,
    handle_sandboxer_error,
    response_for,
)
from sandboxer.http.openapi import build_openapi
from sandboxer.http.routes import ENDPOINTS
from sandboxer.manager import SandboxManager

MiB = 1024 * 1024
DEFAULT_OUTPUT_LIMIT = 1 * MiB
DEFAULT_MAX_JSON_BYTES = 1 * MiB
DEFAULT_MAX_STDIN_BYTES = 8 * MiB
DEFAULT_WORKER_THREADS = 16
DEFAULT_BACKEND_THREADS = 64
DEFAULT_BACKGROUND_JOBS = 4


def create_app(
    manager: SandboxManager,
    token: str | None = None,
    *,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
    max_json_bytes: int = DEFAULT_MAX_JSON_BYTES,
    max_stdin_bytes: int = DEFAULT_MAX_STDIN_BYTES,
    worker_threads: int = DEFAULT_WORKER_THREADS,
    backend_threads: int = DEFAULT_BACKEND_THREADS,
    background_jobs: int = DEFAULT_BACKGROUND_JOBS,
    allowed_hosts: Iterable[str] | None = None,
) -> Starlette:
    """The HTTP API over `manager`.

    With a `token`, every route but /v1/health needs `Authorization: Bearer
    <token>`. `output_limit` caps each captured exec stream (the largest a
    request may ask for); `max_json_bytes` caps JSON bodies, except exec's,
    which may also carry up to `max_stdin_bytes` of standard input (as
    base64). `worker_threads` bounds concurrent quick calls (store reads
    and writes, JSON encoding); `backend_threads` bounds those that wait on
    a backend (create, exec, transfers, snapshots, ...), streams included,
    so long commands cannot starve quick requests. `background_jobs` bounds
    snapshots and restores finishing after a `wait: false` answer.
    `allowed_hosts`, when given, are the only `Host` header names answered
    (others get 400): `sandboxer serve` on loopback without a token passes
    the loopback names, so a web page cannot reach it by DNS rebinding.
    """
    services = Services(
        manager=manager,
        limiter=anyio.CapacityLimiter(worker_threads),
        backend_limiter=anyio.CapacityLimiter(backend_threads),
        jobs=ThreadPoolExecutor(background_jobs, thread_name_prefix="sandboxer-job"),
        output_limit=output_limit,
        max_json_bytes=max_json_bytes,
        # base64 makes input a third larger; the rest of the body is small.
        max_exec_body_bytes=max_json_bytes + (max_stdin_bytes * 4 + 2) // 3,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        services.jobs.shutdown(wait=False, cancel_futures=True)

    app = Starlette(
        routes=list(_routes(ENDPOINTS)),
        middleware=[
            Middleware(ErrorBoundary),
            *(
                [Middleware(HostAllowList, names=frozenset(allowed_hosts))]
                if allowed_hosts is not None
                else []
            ),
            Middleware(BearerAuth, token=token, public_paths=_public_paths(ENDPOINTS)),
        ],
        exception_handlers={
            SandboxerError: handle_sandboxer_error,
            HTTPException: handle_http_exception,
        },
        lifespan=lifespan,
    )
    # "/v1/sandboxes/" must be a 404, not a redirect the document does not know.
    app.router.redirect_slashes = False
    app.state.services = services
    app.state.openapi = build_openapi(ENDPOINTS)
    return app


class HostAllowList:
    """ASGI middleware answering only requests whose Host name is allowed."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app = app
        self.names = names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in self.names:
                error = ForbiddenError(
                    f"this server answers only {', '.join(sorted(self.names))} "
                    f"as Host, not {host!r}; start it with --token-file to serve "
                    "other names"
                )
                await response_for(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BearerAuth:
    """ASGI middleware requiring `Authorization: Bearer <token>`.

    Without a token it lets everything through (`sandboxer serve` refuses
    that on addresses other than loopback). The comparison takes the same
    time whatever the given token is.
    """

    def __init__(
        self, app: ASGIApp, token: str | None, public_paths: frozenset[str]
    ) -> None:
        self.app = app
        self.token = token.encode() if token is not None else None
        self.public_paths = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.token is not None
            and scope["path"] not in self.public_paths
        ):
            problem = self._problem(Headers(scope=scope).get("authorization"))
            if problem is not None:
                await response_for(AuthenticationError(problem))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, header: str | None) -> str | None:
        assert self.token is not None
        if not header:
            return "this server needs `Authorization: Bearer TOKEN`"
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self.token
        ):
            return "the bearer token is not valid for this server"
        return None


class PathHandlers:
    """Dispatches the requests for one path to the endpoint of their method."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.by_method = {endpoint.method: endpoint for endpoint in endpoints}
        if "GET" in self.by_method:
            self.by_method["HEAD"] = self.by_method["GET"]

    async def handle(self, request: Request) -> Response:
        return await self.by_method[request.method](request)


def _routes(endpoints: Iterable[Endpoint]) -> Iterable[Route]:
    by_path: dict[str, list[Endpoint]] = {}
    for endpoint in endpoints:
        by_path.setdefault(endpoint.path, []).append(endpoint)
    for path, group in by_path.items():
        methods = [endpoint.method for endpoint in group]
        yield Route(path, PathHandlers(group).handle, methods=methods)


def _public_paths(endpoints: Iterable[Endpoint]) -> frozenset[str]:
    return frozenset(endpoint.path for endpoint in endpoints if endpoint.public)
