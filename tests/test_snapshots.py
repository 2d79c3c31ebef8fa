"""The manager's snapshot and restore flow, on the saas-stub and a test extension."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest

from extensions_for_tests import RecordingExtension, SnapshottingExtension
from sandboxer.errors import BackendError, ConflictError, UnsupportedError
from sandboxer.manager import SandboxManager
from sandboxer.models import Sandbox, SandboxStatus, SnapshotRecord, SnapshotStatus
from sandboxer.plugins import PluginHost
from sandboxer.stores import JsonSandboxStore, JsonSnapshotStore


@pytest.fixture
def memory_manager(data_dir: Path) -> tuple[SandboxManager, SnapshottingExtension]:
    host = PluginHost()
    extension = SnapshottingExtension("ext.memory")
    host.register(extension, "ext.memory")
    host.register(RecordingExtension("ext.plain"), "ext.plain")
    return SandboxManager(
        host, JsonSandboxStore(data_dir), JsonSnapshotStore(data_dir)
    ), extension


def test_snapshot_goes_from_pending_to_ready_with_size_and_checksum(
    memory_manager: tuple[SandboxManager, SnapshottingExtension],
) -> None:
    manager, extension = memory_manager
    sandbox = manager.create(extension="ext.memory")
    seen_while_running: list[str] = []
    extension.before_snapshot = lambda snapshot: seen_while_running.append(
        manager.get_snapshot(snapshot.id).status.value
    )
    record = manager.snapshot(sandbox.id, labels={"k": "v"})

    assert seen_while_running == ["pending"]
    assert record.status is SnapshotStatus.READY
    assert record.size_bytes == len(f"workspace of {sandbox.id}")
    assert record.sha256 and len(record.sha256) == 64
    assert record.location == f"memory://{record.id}"
    assert manager.list_snapshots(labels={"k": "v"}) == [record]


def test_failed_snapshot_is_marked_failed_and_partial_data_removed(
    memory_manager: tuple[SandboxManager, SnapshottingExtension],
) -> None:
    manager, extension = memory_manager
    sandbox = manager.create(extension="ext.memory")
    extension.fail_snapshot_after_partial = True

    with pytest.raises(BackendError, match="disk full"):
        manager.snapshot(sandbox.id)

    (record,) = manager.list_snapshots()
    assert record.status is SnapshotStatus.FAILED
    assert "disk full" in (record.error or "")
    assert extension.stored == {}
    assert manager.get(sandbox.id).status is SandboxStatus.READY


def test_unsupported_extension_is_refused_before_any_record(
    memory_manager: tuple[SandboxManager, SnapshottingExtension], data_dir: Path
) -> None:
    manager, _ = memory_manager
    sandbox = manager.create(extension="ext.plain")

    with pytest.raises(UnsupportedError, match="snapshots not supported by ext.plain"):
        manager.snapshot(sandbox.id)

    assert manager.list_snapshots(include_deleted=True) == []
    assert not (data_dir / "snapshots.json").exists()


def test_restore_creates_a_new_sandbox_and_leaves_the_source_alone(
    memory_manager: tuple[SandboxManager, SnapshottingExtension],
) -> None:
    manager, extension = memory_manager
    source = manager.create(extension="ext.memory", name="source", labels={"a": "1"})
    snapshot = manager.snapshot(source.id)
    calls_before = list(extension.calls)

    restored = manager.restore(snapshot.id, name="copy")

    assert restored.id != source.id
    assert restored.restored_from == snapshot.id
    assert restored.status is SandboxStatus.READY
    assert extension.restored == {restored.id: snapshot.id}
    assert manager.get(source.id) == source
    new_calls = extension.calls[len(calls_before) :]
    assert all(sandbox_id == restored.id for _, sandbox_id in new_calls)


def test_restore_works_after_the_source_is_destroyed(
    memory_manager: tuple[SandboxManager, SnapshottingExtension],
) -> None:
    manager, _ = memory_manager
    source = manager.create(extension="ext.memory")
    snapshot = manager.snapshot(source.id)
    manager.destroy(source.id)

    assert manager.restore(snapshot.id).status is SandboxStatus.READY


def test_restore_reports_ready_only_after_the_data_is_loaded(
    memory_manager: tuple[SandboxManager, SnapshottingExtension],
) -> None:
    manager, extension = memory_manager
    snapshot = manager.snapshot(manager.create(extension="ext.memory").id)
    statuses: list[str] = []

    def failing_restore(sandbox: Sandbox) -> None:
        statuses.append(manager.get(sandbox.id).status.value)
        raise RuntimeError("archive unreadable")

    extension.before_restore = failing_restore
    with pytest.raises(BackendError, match="archive unreadable"):
        manager.restore(snapshot.id, name="broken-copy")

    assert statuses == ["provisioning"]
    failed = manager.get("broken-copy")
    assert failed.status is SandboxStatus.FAILED
    assert ("destroy", failed.id) in extension.calls


def test_stub_snapshot_restore_and_delete(
    manager: SandboxManager, data_dir: Path
) -> None:
    source = manager.create(extension="ext.saas-stub")
    snapshot = manager.snapshot(source.id)
    stored = data_dir / "saas-stub" / "snapshots" / f"{snapshot.id}.json"
    assert json.loads(stored.read_text())["sandbox"] == source.id

    restored = manager.restore(snapshot.id)
    assert restored.restored_from == snapshot.id
    assert restored.extension == "ext.saas-stub"

    assert manager.delete_snapshot(snapshot.id).status is SnapshotStatus.DELETED
    assert not stored.exists()
    with pytest.raises(ConflictError):
        manager.restore(snapshot.id)


def test_stub_snapshot_fault_leaves_failed_record_and_no_data(
    manager: SandboxManager, data_dir: Path
) -> None:
    source = manager.create(
        extension="ext.saas-stub", settings={"fail_on": ["snapshot_partial"]}
    )

    with pytest.raises(BackendError, match="injected fault in snapshot_partial"):
        manager.snapshot(source.id)

    (record,) = manager.list_snapshots(status="failed")
    assert list((data_dir / "saas-stub" / "snapshots").iterdir()) == []
    assert record.error and "snapshot_partial" in record.error


def test_stub_restore_fault_leaves_failed_sandbox(manager: SandboxManager) -> None:
    source = manager.create(
        extension="ext.saas-stub", settings={"fail_on": ["restore"]}
    )
    snapshot = manager.snapshot(source.id)

    with pytest.raises(BackendError):
        manager.restore(snapshot.id, name="restored")

    assert manager.get("restored").status is SandboxStatus.FAILED
    assert manager.get(source.id).status is SandboxStatus.READY


def test_restore_with_overrides_and_another_extension_is_refused(
    manager: SandboxManager,
) -> None:
    snapshot = manager.snapshot(manager.create(extension="ext.saas-stub").id)

    restored = manager.restore(snapshot.id, settings={"latency": 0.01}, ttl_seconds=60)
    assert restored.config["latency"] == 0.01
    assert restored.ttl_seconds == 60

    with pytest.raises(Exception, match="ext.compose-ssh"):
        manager.restore(snapshot.id, profile="profile.compose-checkpoint")
    assert len(manager.list()) == 2


def test_killed_snapshot_leaves_a_pending_record_never_a_ready_one(
    manager: SandboxManager, data_dir: Path
) -> None:
    source = manager.create(extension="ext.saas-stub")
    manager.sandboxes.update(
        source.id,
        lambda record: attrs.evolve(record, config={**record.config, "latency": 30.0}),
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from sandboxer.cli import main; main()",
            "snapshot",
            source.id,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not manager.list_snapshots(status="pending"):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()

    (record,) = manager.list_snapshots(include_deleted=True)
    assert record.status is SnapshotStatus.PENDING
    assert list((data_dir / "saas-stub" / "snapshots").glob("*")) == []

    manager.snapshots.update(
        record.id, lambda snapshot: attrs.evolve(snapshot, config={"latency": 0.0})
    )
    (reaped,) = manager.reap_snapshots(stale_after=0)
    assert reaped.status is SnapshotStatus.FAILED
    assert "interrupted" in (reaped.error or "")


def test_progress_keeps_a_long_snapshot_from_looking_abandoned(
    memory_manager: tuple[SandboxManager, SnapshottingExtension],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandboxer import manager as manager_module

    manager, extension = memory_manager
    monkeypatch.setattr(manager_module, "HEARTBEAT_SECONDS", 0.0)
    sandbox = manager.create(extension="ext.memory")
    stamps: list[object] = []

    def report_progress(snapshot: SnapshotRecord) -> None:
        before = manager.get_snapshot(snapshot.id).updated_at
        extension.progress(10, 100)
        stamps.append(manager.get_snapshot(snapshot.id).updated_at > before)

    extension.before_snapshot = report_progress
    manager.snapshot(sandbox.id)

    assert stamps == [True]
