"""Small extensions defined by the tests themselves, to exercise the core.

`RecordingExtension` keeps every call it receives, so a test can check that
the manager routed an operation to exactly the owning extension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from sandboxer.extension import SandboxExtension
from sandboxer.hookspecs import hookimpl
from sandboxer.models import (
    ExecRequest,
    ExecStatus,
    ExecStreams,
    Progress,
    ProvisionResult,
    Sandbox,
    SandboxStatus,
    SnapshotData,
    SnapshotOptions,
    SnapshotRecord,
)


class RecordingExtension(SandboxExtension):
    """A synchronous in-memory backend that records every hook call."""

    version = "1.0"
    capabilities: ClassVar[tuple[str, ...]] = ("exec",)

    def __init__(self, extension_id: str) -> None:
        self.extension_id = extension_id
        self.calls: list[tuple[str, str]] = []
        self.live: set[str] = set()

    @property  # type: ignore[override]
    def id(self) -> str:  # type: ignore[override]
        return self.extension_id

    def sandboxer_provision(self, sandbox: Sandbox) -> ProvisionResult:
        self.calls.append(("provision", sandbox.id))
        self.live.add(sandbox.id)
        return ProvisionResult(
            SandboxStatus.READY, provider_data={"owner": self.extension_id}
        )

    def sandboxer_status(self, sandbox: Sandbox) -> ProvisionResult:
        self.calls.append(("status", sandbox.id))
        ready = sandbox.id in self.live
        return ProvisionResult(SandboxStatus.READY if ready else SandboxStatus.FAILED)

    def sandboxer_exec(
        self, sandbox: Sandbox, request: ExecRequest, streams: ExecStreams
    ) -> ExecStatus:
        self.calls.append(("exec", sandbox.id))
        streams.stdout.write(f"{self.extension_id}:{' '.join(request.argv)}".encode())
        return ExecStatus(exit_code=0)

    def sandboxer_destroy(self, sandbox: Sandbox) -> None:
        self.calls.append(("destroy", sandbox.id))
        self.live.discard(sandbox.id)


class SnapshottingExtension(RecordingExtension):
    """A recording extension that also keeps snapshots in memory.

    `fail_snapshot_after_partial` makes the next snapshot write partial data
    and raise, as a crashing backend would.
    """

    capabilities: ClassVar[tuple[str, ...]] = ("exec", "snapshots")

    def __init__(self, extension_id: str) -> None:
        super().__init__(extension_id)
        self.stored: dict[str, bytes] = {}
        self.fail_snapshot_after_partial = False
        self.restored: dict[str, str] = {}
        self.before_snapshot: Callable[[SnapshotRecord], None] = lambda record: None
        self.before_restore: Callable[[Sandbox], None] = lambda sandbox: None
        self.progress: Progress = lambda done, total: None

    def sandboxer_supports_snapshots(self, sandbox: Sandbox) -> bool:
        return True

    def sandboxer_snapshot(
        self,
        sandbox: Sandbox,
        snapshot: SnapshotRecord,
        options: SnapshotOptions,
        progress: Progress,
    ) -> SnapshotData:
        import hashlib

        self.calls.append(("snapshot", sandbox.id))
        self.progress = progress
        self.before_snapshot(snapshot)
        data = f"workspace of {sandbox.id}".encode()
        if self.fail_snapshot_after_partial:
            self.stored[snapshot.id] = data[:3]
            raise RuntimeError("disk full while writing the archive")
        self.stored[snapshot.id] = data
        return SnapshotData(
            location=f"memory://{snapshot.id}",
            size_bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
        )

    def sandboxer_restore_from_snapshot(
        self, sandbox: Sandbox, snapshot: SnapshotRecord, progress: Progress
    ) -> None:
        self.calls.append(("restore", sandbox.id))
        self.before_restore(sandbox)
        self.restored[sandbox.id] = snapshot.id

    def sandboxer_delete_snapshot(self, snapshot: SnapshotRecord) -> None:
        self.calls.append(("delete_snapshot", snapshot.id))
        self.stored.pop(snapshot.id, None)


class CallLog:
    """An observer plugin: a hookwrapper around exec that sees every call."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    @hookimpl(wrapper=True)
    def sandboxer_exec(
        self, sandbox: Sandbox, request: ExecRequest, streams: Any
    ) -> Any:
        self.seen.append(sandbox.extension)
        return (yield)
