"""Endpoint declarations: one record per route, read by the router and OpenAPI.

A handler is declared with `EndpointTable.route`, naming its method, path,
query class, body class, responses and the error statuses it can answer.
The table is then the single source for both the starlette routes
(`sandboxer.http.app`) and the OpenAPI document (`sandboxer.http.openapi`).
The handler itself receives a `Call`: the parsed query and body, the path
parameters, `run()` / `run_backend()` for blocking manager work (in worker
threads, so the event loop never blocks) and `reply()` for JSON answers.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

import anyio
import anyio.to_thread
import attrs
from attrs import frozen
from starlette.requests import Request
from starlette.responses import Response

from sandboxer.errors import InvalidInputError
from sandboxer.http.errors import PayloadTooLargeError
from sandboxer.http.parsing import parse_json, parse_query, structure_request
from sandboxer.http.schemas import NoBody
from sandboxer.manager import SandboxManager
from sandboxer.models import to_json

T = TypeVar("T")
Q = TypeVar("Q")
B = TypeVar("B")

JSON = "application/json"


@attrs.define
class Services:
    """What every handler may use; one instance per app, on `app.state`."""

    manager: SandboxManager
    limiter: anyio.CapacityLimiter
    backend_limiter: anyio.CapacityLimiter
    jobs: ThreadPoolExecutor
    output_limit: int
    max_json_bytes: int
    max_exec_body_bytes: int


@frozen
class Reply:
    """One documented response of an endpoint.

    The body is described by `model` (a type the OpenAPI generator turns
    into a schema) or, for non-JSON bodies, by an explicit `json_schema`.
    `also` maps further media types the same status may answer with (chosen
    by the request) to their models.
    """

    description: str
    model: Any = None
    media_type: str = JSON
    json_schema: Mapping[str, Any] | None = None
    also: Mapping[str, Any] = attrs.field(factory=dict)


class Call(Generic[Q, B]):
    """One request as a handler sees it."""

    def __init__(self, request: Request, services: Services, query: Q, body: B) -> None:
        self.request = request
        self.services = services
        self.query = query
        self.body = body

    @property
    def manager(self) -> SandboxManager:
        return self.services.manager

    def param(self, name: str) -> str:
        value: str = self.request.path_params[name]
        return value

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking `function` in a worker thread and return its result.

        For work on the record stores, which takes milliseconds.
        """
        return await anyio.to_thread.run_sync(
            functools.partial(function, *args, **kwargs), limiter=self.services.limiter
        )

    async def run_backend(
        self, function: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Like `run`, for work that waits on a backend for as long as it takes.

        It has threads of its own, so that many long commands or transfers
        never keep quick requests (list, get, health) waiting.
        """
        return await anyio.to_thread.run_sync(
            functools.partial(function, *args, **kwargs),
            limiter=self.services.backend_limiter,
        )

    async def reply(self, value: Any, status: int = 200) -> Response:
        """A JSON response of a model, a list of models or a response envelope.

        The encoding runs in a worker thread too: a list of a thousand
        records takes milliseconds to encode, which the event loop must not
        spend.
        """
        body = await anyio.to_thread.run_sync(
            encode_json, value, limiter=self.services.limiter
        )
        return Response(body, status_code=status, media_type=JSON)


Handler = Callable[[Call[Any, Any]], Awaitable[Response]]


@frozen
class Endpoint:
    """A route: how it is called, what it answers, and the handler."""

    method: str
    path: str
    handler: Handler
    summary: str
    query: type[Any]
    body: type[Any]
    responses: Mapping[int, Reply]
    errors: tuple[int, ...]
    public: bool
    raw_body: str | None
    carries_input: bool

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    async def __call__(self, request: Request) -> Response:
        services: Services = request.app.state.services
        query = parse_query(request.query_params, self.query)
        body: Any = NoBody()
        if self.body is not NoBody:
            limit = services.max_json_bytes
            if self.carries_input:
                limit = services.max_exec_body_bytes
            raw = await read_limited(request, limit)
            if raw and not _is_json(request.headers.get("content-type", "")):
                # Browsers send cross-site "simple" requests only as text or
                # forms; insisting on JSON makes them ask first, and we never
                # answer their CORS preflight.
                raise InvalidInputError(
                    "send the request body as Content-Type: application/json"
                )
            data = parse_json(raw)
            body = structure_request(data, self.body, "request body")
        return await self.handler(Call(request, services, query, body))


def _is_json(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


class EndpointTable:
    """Collects endpoints as their handlers are defined.

    `route` options: `public` endpoints need no token; `raw_body` names the
    media type of a body the handler streams itself (the JSON `body` class
    is then `NoBody`); `carries_input` endpoints accept the larger body
    limit because the body holds a command's standard input.
    """

    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        query: type[Q],
        body: type[B],
        responses: Mapping[int, Reply],
        errors: tuple[int, ...] = (),
        public: bool = False,
        raw_body: str | None = None,
        carries_input: bool = False,
    ) -> Callable[
        [Callable[[Call[Q, B]], Awaitable[Response]]],
        Callable[[Call[Q, B]], Awaitable[Response]],
    ]:
        def register(
            handler: Callable[[Call[Q, B]], Awaitable[Response]],
        ) -> Callable[[Call[Q, B]], Awaitable[Response]]:
            self.endpoints.append(
                Endpoint(
                    method=method,
                    path=path,
                    handler=handler,
                    summary=summary,
                    query=query,
                    body=body,
                    responses=responses,
                    errors=errors,
                    public=public,
                    raw_body=raw_body,
                    carries_input=carries_input,
                )
            )
            return handler

        return register


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole request body, refusing more than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def encode_json(value: Any) -> bytes:
    """Models as compact UTF-8 JSON, as starlette's JSONResponse writes it."""
    return json.dumps(
        to_json(value), ensure_ascii=False, allow_nan=False, separators=(",", ":")
    ).encode()


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"request body is larger than {limit} bytes")
