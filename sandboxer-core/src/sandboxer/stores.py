"""Record stores: where sandbox and snapshot records live.

`SandboxStore` and `SnapshotStore` are the interfaces the manager uses; the
JSON-file implementations below keep each kind of record in one document,
`sandboxes.json` / `snapshots.json` in `sandboxer.config.data_dir()`:

    {"schema_version": 1, "kind": "sandboxes", "records": {"sb-...": {...}}}

Guarantees, relied on by concurrent CLI processes and the server:

- every change is a read-modify-write under an exclusive `flock` on a
  sidecar lock file, so no update is lost;
- the new document is written to a temp file in the same directory, fsynced
  and renamed over the old one (then the directory is fsynced), so a reader
  sees the old or the new document, never a torn one;
- a missing file is an empty store, but a file that is empty, truncated,
  not a store document, or written by a newer schema is a `StoreError` that
  names the file and is never overwritten;
- temp files left by a writer that was killed are removed by the next writer.

A SQL implementation of the same interfaces can replace these for
multi-server deployments.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import cattrs

from sandboxer.errors import NotFoundError, StoreError
from sandboxer.models import Sandbox, SnapshotRecord, from_json, to_json

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
R = TypeVar("R", Sandbox, SnapshotRecord)


class SandboxStore(Protocol):
    def list(self) -> builtins.list[Sandbox]: ...
    def get(self, sandbox_id: str) -> Sandbox: ...
    def add(
        self,
        record: Sandbox,
        check: Callable[[builtins.list[Sandbox]], None] | None = None,
    ) -> None: ...
    def update(
        self, sandbox_id: str, change: Callable[[Sandbox], Sandbox]
    ) -> Sandbox: ...
    def delete(self, sandbox_id: str) -> None: ...


class SnapshotStore(Protocol):
    def list(self) -> builtins.list[SnapshotRecord]: ...
    def get(self, snapshot_id: str) -> SnapshotRecord: ...
    def add(
        self,
        record: SnapshotRecord,
        check: Callable[[builtins.list[SnapshotRecord]], None] | None = None,
    ) -> None: ...
    def update(
        self, snapshot_id: str, change: Callable[[SnapshotRecord], SnapshotRecord]
    ) -> SnapshotRecord: ...
    def delete(self, snapshot_id: str) -> None: ...


class JsonRecordStore(Generic[R]):
    """Records of one type in one JSON document with atomic, locked updates."""

    def __init__(self, path: Path, kind: str, record_type: type[R], noun: str) -> None:
        self.path = path
        self.kind = kind
        self.record_type: type[R] = record_type
        self.noun = noun
        self._lock_path = path.with_name(path.name + ".lock")
        self._cached_identity: tuple[int, int, int, int] | None = None
        self._cached_records: dict[str, R] = {}

    # -- reading -----------------------------------------------------------

    def list(self) -> builtins.list[R]:
        return list(self._read().values())

    def get(self, record_id: str) -> R:
        records = self._read()
        try:
            return records[record_id]
        except KeyError:
            raise NotFoundError(
                f"{self.noun} {record_id!r} not found", id=record_id
            ) from None

    # -- writing -----------------------------------------------------------

    def add(
        self, record: R, check: Callable[[builtins.list[R]], None] | None = None
    ) -> None:
        """Insert a new record; `check` may raise to veto it under the lock."""
        with self._transaction() as records:
            if check is not None:
                check(list(records.values()))
            records[record.id] = record

    def update(self, record_id: str, change: Callable[[R], R]) -> R:
        """Replace a record with `change(record)` atomically and return it."""
        with self._transaction() as records:
            if record_id not in records:
                raise NotFoundError(
                    f"{self.noun} {record_id!r} not found", id=record_id
                )
            updated = change(records[record_id])
            records[record_id] = updated
            return updated

    def delete(self, record_id: str) -> None:
        with self._transaction() as records:
            records.pop(record_id, None)

    # -- the file ----------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[dict[str, R]]:
        self._ensure_directory()
        with open(self._lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            try:
                self._remove_stale_temp_files()
                records = self._read()
                yield records
                self._write(records)
            finally:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)

    def _ensure_directory(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(
                f"cannot create store directory {self.path.parent}: {error}"
            ) from error

    def _read(self) -> dict[str, R]:
        """The records, parsed anew only when the file has changed.

        Writers always rename a new file into place, so a file with the same
        inode, size and modification time holds the same document; a server
        answering `list` many times a second then parses the store once.
        """
        try:
            with open(self.path, "rb") as file:
                status = os.fstat(file.fileno())
                identity = (
                    status.st_dev,
                    status.st_ino,
                    status.st_size,
                    status.st_mtime_ns,
                )
                if identity == self._cached_identity:
                    return dict(self._cached_records)
                raw = file.read()
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise StoreError(f"cannot read store file {self.path}: {error}") from error
        records = self._decode(raw)
        self._cached_identity, self._cached_records = identity, records
        return dict(records)

    def _decode(self, raw: bytes) -> dict[str, R]:
        document = self._parse(raw)
        records: dict[str, R] = {}
        for record_id, data in document["records"].items():
            try:
                records[record_id] = from_json(data, self.record_type)
            except (
                cattrs.BaseValidationError,
                ValueError,
                TypeError,
                KeyError,
            ) as error:
                raise self._corrupt(
                    f"record {record_id!r} is malformed ({error})"
                ) from error
        return records

    def _parse(self, raw: bytes) -> dict[str, Any]:
        if not raw.strip():
            raise self._corrupt("it is empty (zero bytes or only whitespace)")
        try:
            document = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise self._corrupt(
                f"it is not valid JSON, perhaps truncated ({error})"
            ) from error
        if not isinstance(document, dict) or not isinstance(
            document.get("records"), dict
        ):
            raise self._corrupt("it does not hold a sandboxer store document")
        version = document.get("schema_version")
        if not isinstance(version, int):
            raise self._corrupt("it has no integer schema_version")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store file {self.path} has schema version {version}, newer than "
                f"this sandboxer understands ({SCHEMA_VERSION}); upgrade sandboxer. "
                "The file was left untouched.",
                path=str(self.path),
            )
        if document.get("kind", self.kind) != self.kind:
            raise self._corrupt(f"it holds {document.get('kind')!r}, not {self.kind!r}")
        return document

    def _corrupt(self, reason: str) -> StoreError:
        return StoreError(
            f"store file {self.path} is unreadable: {reason}. The file was left "
            "untouched; restore it from a backup or move it aside to start empty.",
            path=str(self.path),
        )

    def _write(self, records: dict[str, R]) -> None:
        document = {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "records": {
                record_id: to_json(record) for record_id, record in records.items()
            },
        }
        payload = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
        descriptor, temp_name = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            with os.fdopen(descriptor, "wb") as temp_file:
                temp_file.write(payload)
                temp_file.flush()
                os.fsync(temp_file.fileno())
            os.replace(temp_name, self.path)
        except BaseException as error:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            if isinstance(error, OSError):
                raise StoreError(
                    f"cannot write store file {self.path}: {error}"
                ) from error
            raise
        _fsync_directory(self.path.parent)

    def _remove_stale_temp_files(self) -> None:
        # Only the holder of the lock writes temp files, so any left now
        # belong to a writer that died between creating and renaming one.
        for stale in self.path.parent.glob(f".{self.path.name}.*.tmp"):
            logger.info("removing temp file left by an interrupted write: %s", stale)
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()


def _fsync_directory(directory: Path) -> None:
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM):
            return
        raise
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class JsonSandboxStore(JsonRecordStore[Sandbox]):
    """Sandbox records in `<data dir>/sandboxes.json`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory / "sandboxes.json", "sandboxes", Sandbox, "sandbox")


class JsonSnapshotStore(JsonRecordStore[SnapshotRecord]):
    """Snapshot records in `<data dir>/snapshots.json`."""

    def __init__(self, directory: Path) -> None:
        super().__init__(
            directory / "snapshots.json", "snapshots", SnapshotRecord, "snapshot"
        )
