"""Moving bytes between the event loop and blocking manager calls.

The manager reads and writes plain blocking file-like objects; the server is
asynchronous. These adapters connect the two without holding a whole stream
in memory:

- `RequestBodyReader`: a blocking reader over the request body, for a
  worker thread (uploads are unpacked while they arrive);
- `ChannelSink`: a blocking writer a worker thread fills, drained by the
  event loop through a small bounded channel, so a slow client slows the
  producer down instead of making the server buffer;
- `TarStream` and `ExecEventStream`: ASGI responses that run a blocking
  producer in a worker thread and forward what it writes, stopping it when
  the client disconnects;
- `run_until_disconnect`: a blocking call whose `cancel` event is set when
  the client goes away.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import threading
import typing
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from sandboxer.http.errors import error_detail_for, response_for
from sandboxer.http.schemas import ExecChunkEvent, ExecErrorEvent, ExecExitEvent
from sandboxer.models import ExecResult, OutputSink, to_json

T = TypeVar("T")

CHANNEL_CAPACITY = 16
TAR_CHUNK = 256 * 1024
READ_CHUNK = 256 * 1024

Chunk = tuple[str, bytes]


class RequestBodyReader(io.RawIOBase):
    """The request body as a blocking, read-only stream, for a worker thread.

    Each `read` that needs more data waits for the next body chunk from the
    event loop, so the body is never held in memory as a whole. A client
    that disconnects mid-body makes `read` raise.
    """

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        super().__init__()
        # Extensions may read from threads of their own, not only from the
        # worker thread the call started in, so the loop is named explicitly.
        self._loop = anyio.lowlevel.current_token()
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending and not self._ended:
            self._pending = memoryview(
                anyio.from_thread.run(self._next_chunk, token=self._loop)
            )
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self._pending = self._pending[count:]
        return count

    async def _next_chunk(self) -> bytes:
        async for chunk in self._chunks:
            if chunk:
                return chunk
        self._ended = True
        return b""


def body_reader(chunks: AsyncIterator[bytes]) -> io.BufferedReader:
    """A buffered blocking reader over an ASGI request body."""
    return io.BufferedReader(RequestBodyReader(chunks), buffer_size=READ_CHUNK)


class ChannelSink(io.RawIOBase):
    """A blocking writer whose chunks go to the event loop through a channel.

    `write` blocks while the channel is full. Writes are gathered up to
    `coalesce` bytes before they are sent (0 sends every write at once, for
    live command output); `flush` sends what is gathered. When the reading
    side has gone, writing raises BrokenPipeError, or, when the sink has a
    `cancel` event (exec output), sets it and drops the data so the
    extension can stop the command in its own way.
    """

    def __init__(
        self,
        channel: MemoryObjectSendStream[Chunk],
        tag: str,
        *,
        coalesce: int = 0,
        cancel: threading.Event | None = None,
    ) -> None:
        super().__init__()
        # Extensions write output from threads of their own (one per stream),
        # so the loop is named explicitly rather than found from the thread.
        self._loop = anyio.lowlevel.current_token()
        self._channel = channel
        self._tag = tag
        self._coalesce = coalesce
        self._cancel = cancel
        self._gathered = bytearray()
        self.reader_gone = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any, /) -> int:
        self._gathered += data
        if len(self._gathered) > self._coalesce:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if not self._gathered:
            return
        data = bytes(self._gathered)
        self._gathered.clear()
        if not self.reader_gone:
            try:
                anyio.from_thread.run(
                    self._channel.send, (self._tag, data), token=self._loop
                )
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.reader_gone = True
        if self.reader_gone:
            if self._cancel is None:
                raise BrokenPipeError("the client stopped reading")
            self._cancel.set()

    def close(self) -> None:
        """Drop anything not yet sent; only the producer's thread may send."""
        self._gathered.clear()
        super().close()


@attrs.define
class Outcome(Generic[T]):
    """What a producer thread ended with: a value or an exception."""

    value: T | None = None
    error: Exception | None = None


async def _produce(
    work: Callable[[], T],
    channel: MemoryObjectSendStream[Chunk],
    limiter: anyio.CapacityLimiter,
    outcome: Outcome[T],
) -> None:
    """Run `work` in a worker thread, then close the channel."""
    with channel:
        try:
            outcome.value = await anyio.to_thread.run_sync(work, limiter=limiter)
        except Exception as error:
            outcome.error = error


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def run_until_disconnect(
    receive: Receive,
    work: Callable[[threading.Event], T],
    limiter: anyio.CapacityLimiter,
) -> T:
    """Run blocking `work(cancel)`; `cancel` is set if the client disconnects.

    Call this only once the request body has been read, since it takes over
    the request's `receive` channel to notice the disconnect.
    """
    cancel = threading.Event()
    outcome: Outcome[T] = Outcome()

    async def watch() -> None:
        await _wait_for_disconnect(receive)
        cancel.set()

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        try:
            outcome.value = await anyio.to_thread.run_sync(
                functools.partial(work, cancel), limiter=limiter
            )
        except Exception as error:
            outcome.error = error
        group.cancel_scope.cancel()
    if outcome.error is not None:
        raise outcome.error
    return typing.cast(T, outcome.value)


class TarStream(Response):
    """ASGI response: the tar stream a blocking `write_archive(sink)` produces.

    The status is chosen when the first bytes (or the end) arrive: an error
    before any byte is an ordinary error response; an error after the
    archive has started aborts the connection, so a client never mistakes a
    truncated archive for a complete one.
    """

    media_type = "application/x-tar"

    def __init__(
        self,
        write_archive: Callable[[ChannelSink], object],
        limiter: anyio.CapacityLimiter,
    ) -> None:
        # Like starlette's StreamingResponse, no body is rendered up front.
        self.status_code = 200
        self.background = None
        self.write_archive = write_archive
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[Chunk](CHANNEL_CAPACITY)
        sink = ChannelSink(sender, "data", coalesce=TAR_CHUNK)
        outcome: Outcome[object] = Outcome()

        def work() -> object:
            result = self.write_archive(sink)
            sink.flush()
            return result

        failed: Exception | None = None
        async with anyio.create_task_group() as group:
            group.start_soon(_produce, work, sender, self.limiter, outcome)
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            with receiver:
                failed = await self._forward(receiver, outcome, scope, receive, send)
            group.cancel_scope.cancel()
        if failed is not None:
            raise ArchiveStreamAborted("the archive stream failed part-way") from failed

    async def _forward(
        self,
        receiver: MemoryObjectReceiveStream[Chunk],
        outcome: Outcome[object],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> Exception | None:
        first = await _next_chunk(receiver)
        if first is None and outcome.error is not None:
            await response_for(outcome.error)(scope, receive, send)
            return None
        await send(_start(200, self.media_type))
        if first:
            await send(_body(first))
        async for _, data in receiver:
            await send(_body(data))
        if outcome.error is not None:
            return outcome.error
        await send(_body(b"", more=False))
        return None


class ArchiveStreamAborted(Exception):
    """Raised to abort a response whose archive failed after it had started."""


class ExecEventStream(Response):
    """ASGI response: a command's output as NDJSON events while it runs.

    Events: ``{"stream": "stdout"|"stderr", "data_base64": ...}`` for each
    piece of output, then exactly one last event, ``{"exit_code",
    "timed_out", "duration_seconds"}`` or ``{"error": {...}}``. If the client
    disconnects, the exec's cancel event is set so the extension stops the
    command.
    """

    media_type = "application/x-ndjson"

    def __init__(
        self,
        run_exec: Callable[[OutputSink, OutputSink, threading.Event], ExecResult],
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.run_exec = run_exec
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[Chunk](CHANNEL_CAPACITY)
        cancel = threading.Event()
        stdout = ChannelSink(sender, "stdout", cancel=cancel)
        stderr = ChannelSink(sender, "stderr", cancel=cancel)
        outcome: Outcome[ExecResult] = Outcome()
        work = functools.partial(self.run_exec, stdout, stderr, cancel)

        async def stop_on_disconnect() -> None:
            await _wait_for_disconnect(receive)
            cancel.set()
            group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            group.start_soon(_produce, work, sender, self.limiter, outcome)
            group.start_soon(stop_on_disconnect)
            with receiver:
                await send(_start(200, self.media_type))
                async for stream, data in receiver:
                    await send(_body(_event_line(_chunk_event(stream, data))))
                await send(_body(_event_line(_last_event(outcome)), more=False))
            group.cancel_scope.cancel()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    await _wait_for_disconnect(receive)
    scope.cancel()


async def _next_chunk(receiver: MemoryObjectReceiveStream[Chunk]) -> bytes | None:
    try:
        _, data = await receiver.receive()
    except anyio.EndOfStream:
        return None
    return data


def _chunk_event(stream: str, data: bytes) -> ExecChunkEvent:
    return ExecChunkEvent(
        stream=stream, data_base64=base64.b64encode(data).decode("ascii")
    )


def _last_event(outcome: Outcome[ExecResult]) -> Any:
    if outcome.error is not None:
        return ExecErrorEvent(error=error_detail_for(outcome.error))
    result = outcome.value
    assert result is not None
    return ExecExitEvent(
        exit_code=result.exit_code,
        timed_out=result.timed_out,
        duration_seconds=result.duration_seconds,
    )


def _event_line(event: Any) -> bytes:
    return json.dumps(to_json(event), separators=(",", ":")).encode() + b"\n"


def _start(status: int, media_type: str) -> Message:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", media_type.encode())],
    }


def _body(data: bytes, *, more: bool = True) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}
