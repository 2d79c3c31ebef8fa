"""The HTTP routes under /v1: one handler per CLI operation.

Each handler parses nothing itself (its `Call` carries the parsed query and
body), calls one `SandboxManager` method in a worker thread, and answers
with the record it returns. Errors are raised, never answered here:
`sandboxer.http.errors` maps them. `ENDPOINTS` lists every route with what
it accepts and answers; the router and the OpenAPI document are built from
it.
"""

from __future__ import annotations

import base64
import io
import logging
import threading
import typing
from collections.abc import Callable
from typing import IO, Any

from starlette.responses import JSONResponse, Response

from sandboxer import __version__
from sandboxer.errors import ConflictError, InvalidInputError, SandboxerError
from sandboxer.http.endpoints import Call, EndpointTable, Reply
from sandboxer.http.schemas import (
    CreateSandboxBody,
    DestroyQuery,
    ExecBody,
    ExecChunkEvent,
    ExecErrorEvent,
    ExecExitEvent,
    ExecOutput,
    ExtendBody,
    FilesQuery,
    GetSandboxQuery,
    HealthResponse,
    LabelBody,
    ListSandboxesQuery,
    ListSnapshotsQuery,
    NoBody,
    NoQuery,
    OrphansResponse,
    ReapBody,
    ReapResponse,
    ReapSnapshotsResponse,
    RestoreBody,
    SnapshotBody,
)
from sandboxer.http.streams import (
    ChannelSink,
    ExecEventStream,
    TarStream,
    body_reader,
    run_until_disconnect,
)
from sandboxer.manager import MAX_TTL_SECONDS, SandboxManager, validate_exec_request
from sandboxer.models import (
    ExecRequest,
    ExecResult,
    ExtensionReport,
    OutputSink,
    Profile,
    Sandbox,
    SandboxStatus,
    SnapshotRecord,
)

logger = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"
TAR = "application/x-tar"
SANDBOX = "/v1/sandboxes/{id}"
SNAPSHOT = "/v1/snapshots/{id}"

table = EndpointTable()
route = table.route


# -- service ----------------------------------------------------------------------


@route(
    "GET",
    "/v1/health",
    summary="Liveness and the state of every extension",
    query=NoQuery,
    body=NoBody,
    responses={200: Reply("The server answers.", HealthResponse)},
    public=True,
)
async def health(call: Call[NoQuery, NoBody]) -> Response:
    """Answers without a token, and also when an extension failed to load.

    It reads only what the server holds in memory, on the event loop, so it
    answers even when every worker thread is busy.
    """
    reports = call.manager.extensions()
    degraded = any(report.status != "loaded" for report in reports)
    return await call.reply(
        HealthResponse(
            status="degraded" if degraded else "ok",
            version=__version__,
            extensions=reports,
        )
    )


@route(
    "GET",
    "/v1/openapi.json",
    summary="This document",
    query=NoQuery,
    body=NoBody,
    responses={200: Reply("The OpenAPI 3.1 document.", json_schema={"type": "object"})},
)
async def openapi_document(call: Call[NoQuery, NoBody]) -> Response:
    return JSONResponse(call.request.app.state.openapi)


@route(
    "GET",
    "/v1/extensions",
    summary="Installed extensions, including ones that failed to load",
    query=NoQuery,
    body=NoBody,
    responses={200: Reply("Every discovered extension.", list[ExtensionReport])},
)
async def list_extensions(call: Call[NoQuery, NoBody]) -> Response:
    return await call.reply(await call.run(call.manager.extensions))


@route(
    "GET",
    "/v1/profiles",
    summary="Built-in, extension and user profiles",
    query=NoQuery,
    body=NoBody,
    responses={200: Reply("Every profile, by name.", list[Profile])},
    errors=(503,),
)
async def list_profiles(call: Call[NoQuery, NoBody]) -> Response:
    return await call.reply(await call.run(call.manager.list_profiles))


@route(
    "GET",
    "/v1/profiles/{name}",
    summary="One profile",
    query=NoQuery,
    body=NoBody,
    responses={200: Reply("The profile.", Profile)},
    errors=(404, 422, 503),
)
async def get_profile(call: Call[NoQuery, NoBody]) -> Response:
    return await call.reply(
        await call.run(call.manager.get_profile, call.param("name"))
    )


# -- sandboxes --------------------------------------------------------------------


@route(
    "POST",
    "/v1/sandboxes",
    summary="Create a sandbox and wait until it is ready",
    query=NoQuery,
    body=CreateSandboxBody,
    responses={201: Reply("The ready sandbox.", Sandbox)},
    errors=(404, 409, 503),
)
async def create_sandbox(call: Call[NoQuery, CreateSandboxBody]) -> Response:
    body = call.body
    record = await call.run_backend(
        call.manager.create,
        profile=body.profile,
        extension=body.extension,
        settings=body.settings,
        name=body.name,
        labels=body.labels,
        ttl_seconds=body.ttl_seconds,
    )
    return await call.reply(record, 201)


@route(
    "GET",
    "/v1/sandboxes",
    summary="List sandboxes (live ones unless `all` or `status`)",
    query=ListSandboxesQuery,
    body=NoBody,
    responses={200: Reply("Matching sandboxes, oldest first.", list[Sandbox])},
    errors=(503,),
)
async def list_sandboxes(call: Call[ListSandboxesQuery, NoBody]) -> Response:
    query = call.query
    records = await call.run(
        call.manager.list,
        extension=query.extension,
        status=query.status,
        labels=query.labels(),
        include_destroyed=query.all,
    )
    return await call.reply(records)


@route(
    "GET",
    SANDBOX,
    summary="One sandbox, by id or name",
    query=GetSandboxQuery,
    body=NoBody,
    responses={200: Reply("The sandbox.", Sandbox)},
    errors=(404, 503),
)
async def get_sandbox(call: Call[GetSandboxQuery, NoBody]) -> Response:
    manager = call.manager
    if call.query.refresh:
        record = await call.run_backend(manager.refresh, call.param("id"))
    else:
        record = await call.run(manager.get, call.param("id"))
    return await call.reply(record)


@route(
    "DELETE",
    SANDBOX,
    summary="Destroy a sandbox and everything its backend created for it",
    query=DestroyQuery,
    body=NoBody,
    responses={200: Reply("The destroyed sandbox.", Sandbox)},
    errors=(404, 503),
)
async def destroy_sandbox(call: Call[DestroyQuery, NoBody]) -> Response:
    """Idempotent. With `force`, the record is marked destroyed even when
    the backend cannot be reached."""
    record = await call.run_backend(
        call.manager.destroy, call.param("id"), force=call.query.force
    )
    return await call.reply(record)


@route(
    "POST",
    f"{SANDBOX}/extend",
    summary="Push a sandbox's expiry to `ttl_seconds` from now",
    query=NoQuery,
    body=ExtendBody,
    responses={200: Reply("The sandbox with its new expiry.", Sandbox)},
    errors=(404, 409, 503),
)
async def extend_sandbox(call: Call[NoQuery, ExtendBody]) -> Response:
    record = await call.run(
        call.manager.extend, call.param("id"), call.body.ttl_seconds
    )
    return await call.reply(record)


@route(
    "POST",
    f"{SANDBOX}/labels",
    summary="Set and remove labels on a sandbox",
    query=NoQuery,
    body=LabelBody,
    responses={200: Reply("The sandbox with its new labels.", Sandbox)},
    errors=(404, 503),
)
async def label_sandbox(call: Call[NoQuery, LabelBody]) -> Response:
    body = call.body
    record = await call.run(
        call.manager.label, call.param("id"), body.set_labels, body.remove
    )
    return await call.reply(record)


@route(
    "POST",
    f"{SANDBOX}/exec",
    summary="Run a command in a sandbox",
    query=NoQuery,
    body=ExecBody,
    responses={
        200: Reply(
            "The finished command; or, streaming, NDJSON: one event per line, "
            "ExecChunkEvent lines, then one ExecExitEvent or ExecErrorEvent.",
            ExecOutput,
            also={NDJSON: ExecChunkEvent | ExecExitEvent | ExecErrorEvent},
        ),
    },
    errors=(400, 404, 409, 503),
    carries_input=True,
)
async def exec_command(call: Call[NoQuery, ExecBody]) -> Response:
    """The exit code is the command's own. Without streaming, each stream is
    capped separately at `output_limit` bytes (its end is kept, with a
    truncated flag). If the client disconnects, the command is stopped."""
    body = call.body
    reference = call.param("id")
    manager = call.manager
    stdin = _stdin_bytes(body)
    output_limit = _output_limit(body, call.services.output_limit)
    request = ExecRequest(
        argv=tuple(body.argv),
        env=dict(body.env),
        workdir=body.workdir,
        timeout=body.timeout,
        tty=body.tty,
    )
    streaming = body.stream or NDJSON in call.request.headers.get("accept", "")

    def run(
        cancel: threading.Event,
        stdout: OutputSink | None = None,
        stderr: OutputSink | None = None,
    ) -> ExecResult:
        return manager.exec(
            reference,
            request.argv,
            env=request.env,
            workdir=request.workdir,
            timeout=request.timeout,
            stdin=io.BytesIO(stdin) if stdin is not None else None,
            tty=request.tty,
            stdout=stdout,
            stderr=stderr,
            output_limit=output_limit,
            cancel=cancel,
        )

    if streaming:
        await call.run(_check_exec, manager, reference, request)
        return ExecEventStream(
            lambda stdout, stderr, cancel: run(cancel, stdout, stderr),
            call.services.backend_limiter,
        )
    result = await run_until_disconnect(
        call.request.receive, run, call.services.backend_limiter
    )
    return await call.reply(exec_output(result))


def _stdin_bytes(body: ExecBody) -> bytes | None:
    if body.stdin is not None and body.stdin_base64 is not None:
        raise InvalidInputError("give stdin or stdin_base64, not both", field="stdin")
    if body.stdin is not None:
        return body.stdin.encode()
    if body.stdin_base64 is not None:
        try:
            return base64.b64decode(body.stdin_base64, validate=True)
        except ValueError:  # binascii.Error, or characters outside ASCII
            raise InvalidInputError(
                "stdin_base64 is not valid base64", field="stdin_base64"
            ) from None
    return None


def _output_limit(body: ExecBody, server_limit: int) -> int:
    if body.output_limit is None:
        return server_limit
    if body.output_limit < 1:
        raise InvalidInputError("output_limit must be at least 1", field="output_limit")
    return min(body.output_limit, server_limit)


def _check_exec(manager: SandboxManager, reference: str, request: ExecRequest) -> None:
    """Refuse a streaming exec up front, while an error status can still be sent."""
    validate_exec_request(request)
    record = manager.get(reference)
    if record.status is not SandboxStatus.READY:
        raise ConflictError(
            f"sandbox {record.id} is {record.status.value}, not ready",
            sandbox=record.id,
            status=record.status.value,
        )


def exec_output(result: ExecResult) -> ExecOutput:
    stdout, stdout_base64 = _text_or_base64(result.stdout)
    stderr, stderr_base64 = _text_or_base64(result.stderr)
    return ExecOutput(
        exit_code=result.exit_code,
        stdout=stdout,
        stderr=stderr,
        stdout_base64=stdout_base64,
        stderr_base64=stderr_base64,
        stdout_truncated=result.stdout_truncated,
        stderr_truncated=result.stderr_truncated,
        timed_out=result.timed_out,
        duration_seconds=result.duration_seconds,
    )


def _text_or_base64(data: bytes) -> tuple[str | None, str | None]:
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, base64.b64encode(data).decode("ascii")


@route(
    "PUT",
    f"{SANDBOX}/files",
    summary="Unpack a tar stream into the sandbox below `path`",
    query=FilesQuery,
    body=NoBody,
    raw_body=TAR,
    responses={200: Reply("The sandbox the files went to.", Sandbox)},
    errors=(400, 404, 409, 503),
)
async def put_files(call: Call[FilesQuery, NoBody]) -> Response:
    """The body is unpacked while it arrives; it is never held whole. Links
    arrive as links; nothing is written through an existing link."""
    reader = body_reader(call.request.stream())
    record = await call.run_backend(
        call.manager.put_files, call.param("id"), call.query.path, reader
    )
    return await call.reply(record)


@route(
    "GET",
    f"{SANDBOX}/files",
    summary="A tar stream of `path` in the sandbox",
    query=FilesQuery,
    body=NoBody,
    responses={
        200: Reply(
            "The archive, streamed. A failure after the first byte aborts the "
            "connection instead of ending the archive.",
            media_type=TAR,
            json_schema={"type": "string", "format": "binary"},
        )
    },
    errors=(400, 404, 409, 503),
)
async def get_files(call: Call[FilesQuery, NoBody]) -> Response:
    reference, path = call.param("id"), call.query.path
    manager = call.manager

    def write_archive(sink: ChannelSink) -> Sandbox:
        # A ChannelSink is a writable raw stream, all a get_files sink needs.
        return manager.get_files(reference, path, typing.cast(IO[bytes], sink))

    return TarStream(write_archive, call.services.backend_limiter)


# -- snapshots --------------------------------------------------------------------


@route(
    "POST",
    f"{SANDBOX}/snapshot",
    summary="Checkpoint a sandbox's workspace",
    query=NoQuery,
    body=SnapshotBody,
    responses={
        201: Reply("The ready snapshot (`wait`: true).", SnapshotRecord),
        202: Reply(
            "The pending snapshot (`wait`: false); poll GET /v1/snapshots/{id}.",
            SnapshotRecord,
        ),
    },
    errors=(400, 404, 409, 503),
)
async def snapshot_sandbox(call: Call[NoQuery, SnapshotBody]) -> Response:
    body = call.body
    manager = call.manager
    pending, sandbox, options = await call.run_backend(
        manager.begin_snapshot, call.param("id"), labels=body.labels, pause=body.pause
    )
    if not body.wait:
        _finish_later(call, manager.complete_snapshot, pending, sandbox, options)
        return await call.reply(pending, 202)
    record = await call.run_backend(
        manager.complete_snapshot, pending, sandbox, options
    )
    return await call.reply(record, 201)


@route(
    "GET",
    "/v1/snapshots",
    summary="List snapshots (not deleted ones unless `all` or `status`)",
    query=ListSnapshotsQuery,
    body=NoBody,
    responses={200: Reply("Matching snapshots, oldest first.", list[SnapshotRecord])},
    errors=(503,),
)
async def list_snapshots(call: Call[ListSnapshotsQuery, NoBody]) -> Response:
    query = call.query
    records = await call.run(
        call.manager.list_snapshots,
        sandbox=query.sandbox,
        extension=query.extension,
        status=query.status,
        labels=query.labels(),
        include_deleted=query.all,
    )
    return await call.reply(records)


@route(
    "GET",
    SNAPSHOT,
    summary="One snapshot",
    query=NoQuery,
    body=NoBody,
    responses={200: Reply("The snapshot.", SnapshotRecord)},
    errors=(404, 503),
)
async def get_snapshot(call: Call[NoQuery, NoBody]) -> Response:
    return await call.reply(await call.run(call.manager.get_snapshot, call.param("id")))


@route(
    "DELETE",
    SNAPSHOT,
    summary="Delete a snapshot's data; the record stays, marked deleted",
    query=NoQuery,
    body=NoBody,
    responses={200: Reply("The deleted snapshot.", SnapshotRecord)},
    errors=(404, 409, 503),
)
async def delete_snapshot(call: Call[NoQuery, NoBody]) -> Response:
    return await call.reply(
        await call.run_backend(call.manager.delete_snapshot, call.param("id"))
    )


@route(
    "POST",
    f"{SNAPSHOT}/restore",
    summary="Create a NEW sandbox from a snapshot",
    query=NoQuery,
    body=RestoreBody,
    responses={
        201: Reply("The ready sandbox (`wait`: true).", Sandbox),
        202: Reply(
            "The provisioning sandbox (`wait`: false); poll GET /v1/sandboxes/{id}.",
            Sandbox,
        ),
    },
    errors=(400, 404, 409, 503),
)
async def restore_snapshot(call: Call[NoQuery, RestoreBody]) -> Response:
    body = call.body
    manager = call.manager
    sandbox, snapshot = await call.run_backend(
        manager.begin_restore,
        call.param("id"),
        name=body.name,
        profile=body.profile,
        settings=body.settings,
        labels=body.labels,
        ttl_seconds=body.ttl_seconds,
    )
    if not body.wait:
        _finish_later(call, manager.complete_restore, sandbox, snapshot)
        return await call.reply(sandbox, 202)
    return await call.reply(
        await call.run_backend(manager.complete_restore, sandbox, snapshot), 201
    )


def _finish_later(
    call: Call[Any, Any], work: Callable[..., object], *args: Any
) -> None:
    """Run `work(*args)` on the server's background pool; its record tells the end."""

    def run() -> None:
        try:
            work(*args)
        except SandboxerError as error:
            logger.info("background %s failed: %s", work.__name__, error.message)
        except Exception:
            logger.exception("background %s failed", work.__name__)

    call.services.jobs.submit(run)


# -- housekeeping -------------------------------------------------------------------


@route(
    "POST",
    "/v1/reap",
    summary="Destroy expired sandboxes and ones left provisioning by a crash",
    query=NoQuery,
    body=ReapBody,
    responses={200: Reply("What was (or, dry run, would be) destroyed.", ReapResponse)},
    errors=(503,),
)
async def reap(call: Call[NoQuery, ReapBody]) -> Response:
    body = _checked_reap(call.body)
    records = await call.run_backend(
        call.manager.reap, dry_run=body.dry_run, stale_after=body.stale_after
    )
    return await call.reply(ReapResponse(sandboxes=records, dry_run=body.dry_run))


@route(
    "POST",
    "/v1/reap/snapshots",
    summary="Mark snapshots left pending by a crash failed, removing their data",
    query=NoQuery,
    body=ReapBody,
    responses={
        200: Reply("What was (or, dry run, would be) reaped.", ReapSnapshotsResponse)
    },
    errors=(503,),
)
async def reap_snapshots(call: Call[NoQuery, ReapBody]) -> Response:
    body = _checked_reap(call.body)
    records = await call.run_backend(
        call.manager.reap_snapshots, dry_run=body.dry_run, stale_after=body.stale_after
    )
    return await call.reply(
        ReapSnapshotsResponse(snapshots=records, dry_run=body.dry_run)
    )


def _checked_reap(body: ReapBody) -> ReapBody:
    stale_after = body.stale_after
    if stale_after is not None and not 0 <= stale_after <= MAX_TTL_SECONDS:
        raise InvalidInputError(
            f"stale_after must be between 0 and {MAX_TTL_SECONDS} seconds",
            field="stale_after",
        )
    return body


@route(
    "GET",
    "/v1/orphans",
    summary="Backend resources that have no live sandbox record",
    query=NoQuery,
    body=NoBody,
    responses={
        200: Reply("Orphaned resources and per-extension errors.", OrphansResponse)
    },
    errors=(503,),
)
async def list_orphans(call: Call[NoQuery, NoBody]) -> Response:
    resources, errors = await call.run_backend(call.manager.orphans)
    return await call.reply(OrphansResponse(resources=resources, errors=errors))


@route(
    "DELETE",
    "/v1/orphans",
    summary="Remove the backend resources that have no live sandbox record",
    query=NoQuery,
    body=NoBody,
    responses={
        200: Reply(
            "The orphaned resources that were found; `errors` names those that "
            "could not be removed.",
            OrphansResponse,
        )
    },
    errors=(503,),
)
async def remove_orphans(call: Call[NoQuery, NoBody]) -> Response:
    resources, errors = await call.run_backend(call.manager.orphans, remove=True)
    return await call.reply(OrphansResponse(resources=resources, errors=errors))


ENDPOINTS = table.endpoints
