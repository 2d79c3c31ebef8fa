"""The JSON record stores: atomic, locked, and loud about damaged files."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from sandboxer.errors import StoreError
from sandboxer.manager import SandboxManager
from sandboxer.models import SandboxStatus
from sandboxer.stores import JsonSandboxStore, JsonSnapshotStore

WORKERS = 8
CREATES_PER_WORKER = 25


def _busy_worker(data_dir: str, worker: int) -> None:
    os.environ["SANDBOXER_HOME"] = data_dir
    os.environ["SANDBOXER_PLUGINS"] = "ext.saas-stub"
    manager = SandboxManager.from_environment()
    manager.poll_interval = 0.001
    for number in range(CREATES_PER_WORKER):
        record = manager.create(
            extension="ext.saas-stub",
            settings={"provision_delay": 0},
            labels={"worker": str(worker), "long": "x" * (number * 7 % 50)},
        )
        manager.label(record.id, {"touched": str(number)})
        if number % 5 == 4:
            manager.destroy(record.id)


def test_concurrent_processes_lose_no_record(data_dir: Path) -> None:
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_busy_worker, args=(str(data_dir), worker))
        for worker in range(WORKERS)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=240)
    assert [process.exitcode for process in processes] == [0] * WORKERS

    document = json.loads((data_dir / "sandboxes.json").read_text())
    records = list(JsonSandboxStore(data_dir).list())
    assert len(document["records"]) == WORKERS * CREATES_PER_WORKER
    assert all("touched" in record.labels for record in records)
    destroyed = [r for r in records if r.status is SandboxStatus.DESTROYED]
    assert len(destroyed) == WORKERS * CREATES_PER_WORKER // 5
    assert [p.name for p in data_dir.iterdir() if p.name.endswith(".tmp")] == []


DAMAGED_FILES = {
    "truncated": lambda whole: whole[: len(whole) // 2],
    "null": lambda whole: b"null",
    "empty": lambda whole: b"",
    "newer schema": lambda whole: whole.replace(
        b'"schema_version": 1', b'"schema_version": 99'
    ),
    "not a store": lambda whole: b'{"hello": "world"}',
}


@pytest.mark.parametrize("damage", DAMAGED_FILES, ids=list(DAMAGED_FILES))
def test_damaged_store_is_reported_by_name_and_never_overwritten(
    manager: SandboxManager, data_dir: Path, damage: str
) -> None:
    record = manager.create(extension="ext.saas-stub", ttl_seconds=1)
    path = data_dir / "sandboxes.json"
    damaged = DAMAGED_FILES[damage](path.read_bytes())
    path.write_bytes(damaged)

    for operation in (
        manager.list,
        lambda: manager.create(extension="ext.saas-stub"),
        lambda: manager.destroy(record.id),
        lambda: manager.reap(stale_after=0),
    ):
        with pytest.raises(StoreError) as caught:
            operation()
        assert str(path) in caught.value.message
        assert path.read_bytes() == damaged

    assert (data_dir / "saas-stub" / "sandboxes" / record.id).is_dir()


def test_newer_schema_error_says_to_upgrade(
    manager: SandboxManager, data_dir: Path
) -> None:
    manager.create(extension="ext.saas-stub")
    path = data_dir / "sandboxes.json"
    path.write_text(
        path.read_text().replace('"schema_version": 1', '"schema_version": 2')
    )

    with pytest.raises(StoreError, match="schema version 2.*upgrade sandboxer"):
        manager.list()


def test_missing_store_file_is_an_empty_store(
    manager: SandboxManager, data_dir: Path
) -> None:
    assert manager.list() == []
    assert not (data_dir / "sandboxes.json").exists()


def test_temp_file_left_by_a_killed_writer_is_cleaned_by_the_next_write(
    manager: SandboxManager, data_dir: Path
) -> None:
    manager.create(extension="ext.saas-stub")
    leftover = data_dir / ".sandboxes.json.abc123.tmp"
    leftover.write_text('{"half": ')

    manager.create(extension="ext.saas-stub")

    assert not leftover.exists()
    assert len(manager.list()) == 2


def test_snapshot_store_has_the_same_guarantees(data_dir: Path) -> None:
    store = JsonSnapshotStore(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "snapshots.json").write_text("null")

    with pytest.raises(StoreError, match="snapshots.json"):
        store.list()


def test_reap_refuses_a_negative_or_huge_staleness(manager: SandboxManager) -> None:
    from sandboxer.errors import InvalidInputError

    for stale_after in (-1, 10**12):
        with pytest.raises(InvalidInputError, match="stale_after"):
            manager.reap(stale_after=stale_after)
        with pytest.raises(InvalidInputError, match="stale_after"):
            manager.reap_snapshots(stale_after=stale_after)


def test_a_store_sees_what_another_writer_wrote_since_its_last_read(
    manager: SandboxManager, data_dir: Path
) -> None:
    reader = JsonSandboxStore(data_dir)
    first = manager.create(extension="ext.saas-stub")
    assert [record.id for record in reader.list()] == [first.id]

    manager.label(first.id, {"seen": "yes"})
    second = manager.create(extension="ext.saas-stub")

    records = {record.id: record for record in reader.list()}
    assert set(records) == {first.id, second.id}
    assert records[first.id].labels == {"seen": "yes"}
