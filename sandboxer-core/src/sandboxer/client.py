"""`SandboxerClient`: the `SandboxManager` API, over HTTP to `sandboxer serve`.

Every method has the manager's name and signature, returns the same model
objects and raises the same `SandboxerError` subclasses (rebuilt from the
error body's `code`), so code written against a manager, the CLI's remote
mode (`sandboxer --url URL ...`) among it, works unchanged against a
server::

    with SandboxerClient("http://127.0.0.1:8787", token=token) as api:
        sandbox = api.create(profile="profile.saas-stub")
        result = api.exec(sandbox.id, ["sh", "-c", "exit 3"])
        assert result.exit_code == 3

Differences from a local manager, all consequences of the network:

- `exec` always uses the server's streaming mode: output arrives while the
  command runs, into the given sinks or capped here at `output_limit` per
  stream (its end kept), so the server's own cap does not apply.
- `snapshot` and `restore` take `wait=False` to return the pending record
  at once, to be polled with `get_snapshot` / `get`.
- A server that cannot be reached, or an answer that is not sandboxer's,
  raises `BackendError`.

Limitation: exec's standard input is read whole and sent with the request,
at most `MAX_STDIN_BYTES` (8 MiB); more is refused with InvalidInputError.
Copy larger input in with `put_files` (`sandboxer cp`) and redirect from it.

Limitation: `snapshot` and `restore` report no progress over HTTP; the
callback is accepted and never called.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import json
import socket
import threading
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import IO, Any, TypeVar
from urllib.parse import quote

import cattrs
import httpx

from sandboxer.errors import (
    ERROR_CLASSES,
    BackendError,
    InvalidInputError,
    SandboxerError,
)
from sandboxer.manager import DEFAULT_OUTPUT_LIMIT, CappedBuffer
from sandboxer.models import (
    ExecResult,
    ExtensionReport,
    ManagedResource,
    OutputSink,
    Profile,
    Progress,
    Sandbox,
    SandboxStatus,
    SnapshotRecord,
    SnapshotStatus,
    from_json,
    no_progress,
)

T = TypeVar("T")

MAX_STDIN_BYTES = 8 * 1024 * 1024
CHUNK_SIZE = 256 * 1024
DEFAULT_TIMEOUT = 30.0

# Codes the server may send beyond the core's classes, and what they mean.
EXTRA_ERROR_CODES: dict[str, type[SandboxerError]] = {
    "payload_too_large": InvalidInputError,
}
ERRORS_BY_CODE: dict[str, type[SandboxerError]] = {
    **{error_class.code: error_class for error_class in ERROR_CLASSES},
    **EXTRA_ERROR_CODES,
}


class SandboxerClient:
    """A `SandboxManager` look-alike talking to a sandboxer HTTP server.

    `url` is the server's address, with or without the `/v1` suffix;
    `token` its bearer token, if it has one. `timeout` (seconds) bounds
    connecting and quick calls; calls that wait for a backend (create,
    exec, file transfers, snapshot, restore, destroy, reap) have no read
    timeout, as the server's own deadlines bound them.
    """

    def __init__(
        self, url: str, token: str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        base = url.rstrip("/")
        base = base.removesuffix("/v1")
        self.url = base
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._quick = httpx.Timeout(timeout)
        self._slow = httpx.Timeout(timeout, read=None, write=None)
        self._http = httpx.Client(base_url=base, headers=headers, timeout=self._quick)
        # Callers that never close the client (a CLI run) still free its sockets.
        self._finalizer = weakref.finalize(self, self._http.close)

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> SandboxerClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- service, extensions and profiles --------------------------------------

    def health(self) -> dict[str, Any]:
        """The server's /v1/health answer (needs no token)."""
        return _document(self._call("GET", "/v1/health"))

    def extensions(self) -> list[ExtensionReport]:
        return self._get_json("/v1/extensions", list[ExtensionReport])

    def list_profiles(self) -> list[Profile]:
        return self._get_json("/v1/profiles", list[Profile])

    def get_profile(self, name: str) -> Profile:
        return self._get_json(f"/v1/profiles/{_segment(name)}", Profile)

    # -- sandboxes -----------------------------------------------------------------

    def create(
        self,
        *,
        profile: str | None = None,
        extension: str | None = None,
        settings: dict[str, Any] | None = None,
        name: str | None = None,
        labels: dict[str, str] | None = None,
        ttl_seconds: int | None = None,
    ) -> Sandbox:
        body = _present(
            profile=profile,
            extension=extension,
            settings=settings,
            name=name,
            labels=labels,
            ttl_seconds=ttl_seconds,
        )
        response = self._call("POST", "/v1/sandboxes", json=body, slow=True)
        return _parse(response, Sandbox)

    def list(
        self,
        *,
        extension: str | None = None,
        status: SandboxStatus | str | None = None,
        labels: dict[str, str] | None = None,
        include_destroyed: bool = False,
    ) -> builtins.list[Sandbox]:
        params = _filters(extension=extension, status=status, labels=labels)
        if include_destroyed:
            params["all"] = "true"
        return self._get_json("/v1/sandboxes", list[Sandbox], params=params)

    def get(self, reference: str) -> Sandbox:
        return self._get_json(_sandbox_path(reference), Sandbox)

    def refresh(self, reference: str) -> Sandbox:
        response = self._call(
            "GET", _sandbox_path(reference), params={"refresh": "true"}, slow=True
        )
        return _parse(response, Sandbox)

    def exec(
        self,
        reference: str,
        argv: builtins.list[str] | tuple[str, ...],
        *,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
        timeout: float | None = None,
        stdin: IO[bytes] | None = None,
        tty: bool = False,
        stdout: OutputSink | None = None,
        stderr: OutputSink | None = None,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        cancel: threading.Event | None = None,
    ) -> ExecResult:
        """Run a command; output is streamed into the sinks or captured here.

        Setting `cancel` closes the connection, which makes the server stop
        the command; exec then raises BackendError.
        """
        body = _present(
            argv=list(argv),
            env=env or {},
            workdir=workdir,
            timeout=timeout,
            tty=tty,
            stream=True,
        )
        if stdin is not None:
            body["stdin_base64"] = base64.b64encode(_read_stdin(stdin)).decode("ascii")
        captured_stdout = CappedBuffer(output_limit) if stdout is None else None
        captured_stderr = CappedBuffer(output_limit) if stderr is None else None
        sinks: dict[str, OutputSink] = {
            "stdout": stdout if stdout is not None else _sink(captured_stdout),
            "stderr": stderr if stderr is not None else _sink(captured_stderr),
        }
        path = f"{_sandbox_path(reference)}/exec"
        with self._stream("POST", path, json=body) as response:
            end = _read_exec_events(response, sinks, cancel)
        return ExecResult(
            exit_code=_require_int(end, "exit_code"),
            stdout=captured_stdout.getvalue() if captured_stdout else b"",
            stderr=captured_stderr.getvalue() if captured_stderr else b"",
            stdout_truncated=bool(captured_stdout and captured_stdout.truncated),
            stderr_truncated=bool(captured_stderr and captured_stderr.truncated),
            timed_out=bool(end.get("timed_out", False)),
            duration_seconds=float(end.get("duration_seconds", 0.0)),
        )

    def put_files(
        self,
        reference: str,
        destination: str,
        archive: IO[bytes],
        progress: Progress = no_progress,
    ) -> Sandbox:
        """Send a tar stream, read from `archive` as it goes, into the sandbox."""

        def chunks() -> Iterator[bytes]:
            done = 0
            while chunk := archive.read(CHUNK_SIZE):
                done += len(chunk)
                progress(done, None)
                yield chunk

        response = self._call(
            "PUT",
            f"{_sandbox_path(reference)}/files",
            params={"path": destination},
            content=chunks(),
            headers={"Content-Type": "application/x-tar"},
            slow=True,
        )
        return _parse(response, Sandbox)

    def get_files(
        self,
        reference: str,
        source: str,
        sink: IO[bytes],
        progress: Progress = no_progress,
    ) -> Sandbox:
        """Write the tar stream of `source` to `sink` as it arrives.

        A transfer that breaks off raises BackendError; what reached `sink`
        by then is an incomplete archive.
        """
        path = f"{_sandbox_path(reference)}/files"
        done = 0
        with self._stream("GET", path, params={"path": source}) as response:
            try:
                for chunk in response.iter_bytes(CHUNK_SIZE):
                    sink.write(chunk)
                    done += len(chunk)
                    progress(done, None)
            except httpx.HTTPError as error:
                raise BackendError(
                    f"the archive of {source} from {reference} broke off after "
                    f"{done} bytes: {error}"
                ) from error
        return self.get(reference)

    def destroy(self, reference: str, *, force: bool = False) -> Sandbox:
        params = {"force": "true"} if force else {}
        response = self._call(
            "DELETE", _sandbox_path(reference), params=params, slow=True
        )
        return _parse(response, Sandbox)

    def extend(self, reference: str, ttl_seconds: int) -> Sandbox:
        response = self._call(
            "POST",
            f"{_sandbox_path(reference)}/extend",
            json={"ttl_seconds": ttl_seconds},
        )
        return _parse(response, Sandbox)

    def label(
        self,
        reference: str,
        set_labels: dict[str, str] | None = None,
        remove: builtins.list[str] | None = None,
    ) -> Sandbox:
        body = {"set_labels": set_labels or {}, "remove": list(remove or [])}
        response = self._call("POST", f"{_sandbox_path(reference)}/labels", json=body)
        return _parse(response, Sandbox)

    def reap(
        self, *, dry_run: bool = False, stale_after: float | None = None
    ) -> builtins.list[Sandbox]:
        body = _present(dry_run=dry_run, stale_after=stale_after)
        response = self._call("POST", "/v1/reap", json=body, slow=True)
        return _structure(_document(response).get("sandboxes"), list[Sandbox])

    def reap_snapshots(
        self, *, dry_run: bool = False, stale_after: float | None = None
    ) -> builtins.list[SnapshotRecord]:
        body = _present(dry_run=dry_run, stale_after=stale_after)
        response = self._call("POST", "/v1/reap/snapshots", json=body, slow=True)
        snapshots = _document(response).get("snapshots")
        return _structure(snapshots, list[SnapshotRecord])

    def orphans(
        self, *, remove: bool = False
    ) -> tuple[builtins.list[ManagedResource], dict[str, str]]:
        method = "DELETE" if remove else "GET"
        document = _document(self._call(method, "/v1/orphans", slow=True))
        resources = _structure(document.get("resources"), list[ManagedResource])
        errors = _structure(document.get("errors"), dict[str, str])
        return resources, errors

    # -- snapshots -------------------------------------------------------------------

    def snapshot(
        self,
        reference: str,
        *,
        labels: dict[str, str] | None = None,
        pause: bool | None = None,
        progress: Progress = no_progress,
        wait: bool = True,
    ) -> SnapshotRecord:
        """Checkpoint a sandbox; with `wait=False`, return the pending record."""
        body = _present(labels=labels, pause=pause, wait=wait)
        response = self._call(
            "POST", f"{_sandbox_path(reference)}/snapshot", json=body, slow=True
        )
        return _parse(response, SnapshotRecord)

    def list_snapshots(
        self,
        *,
        sandbox: str | None = None,
        extension: str | None = None,
        status: SnapshotStatus | str | None = None,
        labels: dict[str, str] | None = None,
        include_deleted: bool = False,
    ) -> builtins.list[SnapshotRecord]:
        params = _filters(extension=extension, status=status, labels=labels)
        if sandbox is not None:
            params["sandbox"] = sandbox
        if include_deleted:
            params["all"] = "true"
        return self._get_json("/v1/snapshots", list[SnapshotRecord], params=params)

    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        return self._get_json(_snapshot_path(snapshot_id), SnapshotRecord)

    def delete_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        response = self._call("DELETE", _snapshot_path(snapshot_id), slow=True)
        return _parse(response, SnapshotRecord)

    def restore(
        self,
        snapshot_id: str,
        *,
        name: str | None = None,
        profile: str | None = None,
        settings: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        ttl_seconds: int | None = None,
        progress: Progress = no_progress,
        wait: bool = True,
    ) -> Sandbox:
        """A new sandbox from a snapshot; `wait=False` returns it provisioning."""
        body = _present(
            name=name,
            profile=profile,
            settings=settings,
            labels=labels,
            ttl_seconds=ttl_seconds,
            wait=wait,
        )
        response = self._call(
            "POST", f"{_snapshot_path(snapshot_id)}/restore", json=body, slow=True
        )
        return _parse(response, Sandbox)

    # -- transport -------------------------------------------------------------------

    def _get_json(
        self, path: str, kind: type[T], *, params: dict[str, Any] | None = None
    ) -> T:
        return _parse(self._call("GET", path, params=params), kind)

    def _call(
        self, method: str, path: str, *, slow: bool = False, **options: Any
    ) -> httpx.Response:
        timeout = self._slow if slow else self._quick
        try:
            response = self._http.request(method, path, timeout=timeout, **options)
        except httpx.TransportError as error:
            raise self._unreachable(error) from error
        if response.is_error:
            raise error_from_response(response)
        return response

    def _stream(self, method: str, path: str, **options: Any) -> _StreamedCall:
        return _StreamedCall(self, method, path, options)

    def _unreachable(self, error: Exception) -> BackendError:
        return BackendError(
            f"cannot reach the sandboxer server at {self.url}: {error}; "
            "is `sandboxer serve` running there?"
        )


class _StreamedCall:
    """A streamed request as a context manager that raises on error statuses."""

    def __init__(
        self, client: SandboxerClient, method: str, path: str, options: dict[str, Any]
    ) -> None:
        self._client = client
        self._request = client._http.build_request(
            method, path, timeout=client._slow, **options
        )
        self._response: httpx.Response | None = None

    def __enter__(self) -> httpx.Response:
        try:
            response = self._client._http.send(self._request, stream=True)
        except httpx.TransportError as error:
            raise self._client._unreachable(error) from error
        self._response = response
        if response.is_error:
            try:
                response.read()
            finally:
                response.close()
            raise error_from_response(response)
        return response

    def __exit__(self, *exc_info: object) -> None:
        if self._response is not None:
            self._response.close()


def _read_exec_events(
    response: httpx.Response,
    sinks: dict[str, OutputSink],
    cancel: threading.Event | None,
) -> dict[str, Any]:
    """Feed output events to the sinks; return the last event (the exit)."""
    if cancel is not None:
        _close_when_set(cancel, response)
    try:
        for line in response.iter_lines():
            if not line:
                continue
            event = _event(line)
            if "stream" in event:
                sinks[event["stream"]].write(base64.b64decode(event["data_base64"]))
            elif "error" in event:
                raise _error_from_detail(event["error"], response.status_code)
            else:
                return event
    except (httpx.HTTPError, httpx.StreamError) as error:
        if cancel is not None and cancel.is_set():
            raise BackendError(
                "exec was cancelled; the server stops the command"
            ) from error
        raise BackendError(f"the exec stream broke off: {error}") from error
    if cancel is not None and cancel.is_set():
        raise BackendError("exec was cancelled; the server stops the command")
    raise BackendError(
        "the server ended the exec stream without an exit status; the command's "
        "outcome is unknown"
    )


def _close_when_set(cancel: threading.Event, response: httpx.Response) -> None:
    """Hang up once `cancel` is set; the server then stops the command."""

    def watch() -> None:
        while not response.is_closed:
            if cancel.wait(0.1):
                _hang_up(response)
                return

    threading.Thread(target=watch, name="sandboxer-exec-cancel", daemon=True).start()


def _hang_up(response: httpx.Response) -> None:
    # Closing a socket does not wake a thread blocked reading it; shutting
    # it down does, so the reading loop ends at once.
    stream = response.extensions.get("network_stream")
    raw = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)


def _event(line: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except ValueError as error:
        raise BackendError(
            f"the server sent an unreadable exec event: {error}"
        ) from None
    if not isinstance(event, dict):
        raise BackendError("the server sent an exec event that is not an object")
    return event


def _require_int(event: dict[str, Any], key: str) -> int:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BackendError(f"the server's exec result has no integer {key}")
    return value


def error_from_response(response: httpx.Response) -> SandboxerError:
    """The SandboxerError an error response stands for."""
    try:
        detail = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        text = response.text[:200].strip()
        return BackendError(
            f"the server answered {response.status_code} without a sandboxer error"
            f"{': ' + text if text else ''}"
        )
    return _error_from_detail(detail, response.status_code)


def _error_from_detail(detail: Any, status: int) -> SandboxerError:
    if not isinstance(detail, dict) or not isinstance(detail.get("message"), str):
        return BackendError(f"the server answered {status} with a malformed error")
    error_class = ERRORS_BY_CODE.get(str(detail.get("code")), SandboxerError)
    details = detail.get("details")
    extra = {
        str(key): value
        for key, value in (details.items() if isinstance(details, dict) else [])
        if key != "message"
    }
    return error_class(detail["message"], **extra)


def _parse(response: httpx.Response, kind: type[T]) -> T:
    try:
        document = response.json()
    except ValueError as error:
        raise BackendError(
            f"the server sent a body that is not JSON: {error}"
        ) from None
    return _structure(document, kind)


def _document(response: httpx.Response) -> dict[str, Any]:
    """A response envelope (a JSON object) as a dict."""
    return _parse(response, dict[str, Any])


def _structure(data: Any, kind: type[T]) -> T:
    try:
        return from_json(data, kind)
    except (
        cattrs.BaseValidationError,
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
    ) as error:
        raise BackendError(
            f"the server's answer does not fit {getattr(kind, '__name__', kind)}: "
            f"{error}; are client and server the same version?"
        ) from None


def _read_stdin(stdin: IO[bytes]) -> bytes:
    data = stdin.read(MAX_STDIN_BYTES + 1)
    if len(data) > MAX_STDIN_BYTES:
        raise InvalidInputError(
            f"standard input over HTTP is limited to {MAX_STDIN_BYTES} bytes; "
            "copy larger input into the sandbox with `sandboxer cp` and "
            "redirect from the file"
        )
    return data


def _sink(buffer: CappedBuffer | None) -> OutputSink:
    assert buffer is not None
    return buffer


def _present(**values: Any) -> dict[str, Any]:
    """The given keyword arguments without the ones that are None."""
    return {key: value for key, value in values.items() if value is not None}


def _filters(
    *,
    extension: str | None,
    status: str | None,
    labels: dict[str, str] | None,
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if extension is not None:
        params["extension"] = extension
    if status is not None:
        params["status"] = str(status)
    if labels:
        params["label"] = [f"{key}={value}" for key, value in labels.items()]
    return params


def _segment(value: str) -> str:
    """`value` as one URL path segment."""
    return quote(value, safe="")


def _sandbox_path(reference: str) -> str:
    return f"/v1/sandboxes/{_segment(reference)}"


def _snapshot_path(snapshot_id: str) -> str:
    return f"/v1/snapshots/{_segment(snapshot_id)}"
