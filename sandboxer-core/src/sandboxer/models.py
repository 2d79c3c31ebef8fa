"""Value classes shared by the core, extensions and both front ends.

Records are frozen attrs classes; `evolve` makes changed copies. All
structuring to and from JSON-ready dicts goes through the one `converter`
below (timestamps as ISO 8601 UTC strings, enums as their values), so the
stores, the CLI's `--json` output and the HTTP API agree on every field.
"""

from __future__ import annotations

import enum
import re
import threading
from datetime import UTC, datetime
from typing import IO, Any, Protocol, TypeVar

import attrs
import cattrs
from attrs import field, frozen

from sandboxer.errors import InvalidInputError

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LABEL_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,62}$")
LABEL_VALUE_MAX = 255


class SandboxStatus(enum.StrEnum):
    PROVISIONING = "provisioning"
    READY = "ready"
    STOPPED = "stopped"
    FAILED = "failed"
    DESTROYING = "destroying"
    DESTROYED = "destroyed"


class SnapshotStatus(enum.StrEnum):
    PENDING = "pending"
    READY = "ready"
    FAILED = "failed"
    DELETED = "deleted"


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


def validate_name(name: str) -> str:
    """Return `name` if it is a valid sandbox name, else raise InvalidInputError.

    Names are ASCII so that every backend can derive identifiers from them;
    they are matched exactly (case-sensitively) by `get`, `destroy` and friends.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidInputError(
            f"invalid sandbox name {name!r}: use 1-63 ASCII letters, digits, "
            "'.', '_' or '-', starting with a letter or digit",
            field="name",
        )
    return name


def validate_labels(labels: dict[str, str]) -> dict[str, str]:
    """Return `labels` if every key and value is acceptable, else raise."""
    for key, value in labels.items():
        if not isinstance(key, str) or not LABEL_KEY_PATTERN.fullmatch(key):
            raise InvalidInputError(
                f"invalid label key {key!r}: use 1-63 ASCII letters, digits, "
                "'.', '_', '/' or '-', starting with a letter or digit",
                field="labels",
            )
        if not isinstance(value, str) or len(value) > LABEL_VALUE_MAX:
            raise InvalidInputError(
                f"invalid value for label {key!r}: a string of at most "
                f"{LABEL_VALUE_MAX} characters is required",
                field="labels",
            )
        if any(ord(char) < 32 for char in value):
            raise InvalidInputError(
                f"invalid value for label {key!r}: control characters are not allowed",
                field="labels",
            )
    return labels


@frozen
class Sandbox:
    """One provisioned environment, as the store keeps it."""

    id: str
    extension: str
    status: SandboxStatus
    created_at: datetime
    updated_at: datetime
    name: str | None = None
    profile: str | None = None
    expires_at: datetime | None = None
    ttl_seconds: int | None = None
    labels: dict[str, str] = field(factory=dict)
    config: dict[str, Any] = field(factory=dict)
    provider_data: dict[str, Any] = field(factory=dict)
    restored_from: str | None = None
    error: str | None = None

    @property
    def is_live(self) -> bool:
        """True until the sandbox has been destroyed."""
        return self.status is not SandboxStatus.DESTROYED


@frozen
class SnapshotRecord:
    """A checkpoint of one sandbox's workspace."""

    id: str
    sandbox_id: str
    extension: str
    status: SnapshotStatus
    created_at: datetime
    updated_at: datetime
    profile: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    location: str | None = None
    labels: dict[str, str] = field(factory=dict)
    config: dict[str, Any] = field(factory=dict)
    error: str | None = None


@frozen
class SnapshotPolicy:
    """How a profile's sandboxes are checkpointed."""

    enabled: bool = True
    pause: bool = False


@frozen
class Profile:
    """A named, versioned recipe for a sandbox."""

    name: str
    extension: str
    version: str = "1"
    description: str = ""
    settings: dict[str, Any] = field(factory=dict)
    ttl_seconds: int | None = None
    labels: dict[str, str] = field(factory=dict)
    snapshots: SnapshotPolicy = field(factory=SnapshotPolicy)
    source: str = "builtin"


@frozen
class ExtensionInfo:
    """What an extension says about itself through `sandboxer_describe`."""

    id: str
    version: str
    capabilities: tuple[str, ...] = ()
    api_version: int = 1
    description: str = ""


@frozen
class ExtensionReport:
    """One discovered extension, loaded or not, as `extensions list` shows it."""

    id: str
    distribution: str | None
    version: str | None
    status: str
    capabilities: tuple[str, ...] = ()
    hooks: tuple[str, ...] = ()
    api_version: int | None = None
    error: str | None = None


@frozen
class ProvisionResult:
    """What an extension returns from `sandboxer_provision` or `sandboxer_status`.

    `status` is READY when the sandbox can be used now, PROVISIONING when the
    manager should poll `sandboxer_status`, FAILED with `error` otherwise.
    `provider_data` replaces the record's backend-private data when not None.
    """

    status: SandboxStatus
    provider_data: dict[str, Any] | None = None
    error: str | None = None


@frozen
class ExecRequest:
    """A command to run inside a sandbox."""

    argv: tuple[str, ...]
    env: dict[str, str] = field(factory=dict)
    workdir: str | None = None
    timeout: float | None = None
    tty: bool = False


class OutputSink(Protocol):
    """Where an extension writes a command's output, chunk by chunk."""

    def write(self, data: bytes, /) -> object: ...


@attrs.define
class ExecStreams:
    """The byte streams of one exec.

    `stdin` is read until end of file (None means empty input). Extensions
    write output to `stdout`/`stderr` as it arrives, never merging the two.
    `cancel` is set when the caller has gone away; the extension then stops
    the command as it would on a timeout.
    """

    stdout: OutputSink
    stderr: OutputSink
    stdin: IO[bytes] | None = None
    cancel: threading.Event = field(factory=threading.Event)


@frozen
class ExecStatus:
    """How a command ended, as an extension reports it."""

    exit_code: int
    timed_out: bool = False


@frozen
class ExecResult:
    """A finished command with its captured (possibly capped) output."""

    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    timed_out: bool = False
    duration_seconds: float = 0.0


@frozen
class SnapshotOptions:
    """Options the manager passes to an extension's `sandboxer_snapshot`."""

    pause: bool = False


@frozen
class SnapshotData:
    """What an extension returns once a snapshot's archive is complete."""

    location: str
    size_bytes: int
    sha256: str


@frozen
class ManagedResource:
    """A backend object an extension created and labelled for a sandbox."""

    kind: str
    id: str
    sandbox_id: str | None
    host: str | None = None
    description: str = ""
    extension: str | None = None


class Progress(Protocol):
    """Receives byte counts while an archive moves; the CLI draws a bar."""

    def __call__(self, done: int, total: int | None, /) -> None: ...


def no_progress(done: int, total: int | None) -> None:
    """A `Progress` that ignores every update."""


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter()
    converter.register_unstructure_hook(datetime, lambda value: value.isoformat())
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(bytes, lambda value: value.decode("latin-1"))
    return converter


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value)
    else:
        raise ValueError(f"expected an ISO 8601 timestamp, got {value!r}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


converter = _make_converter()


def to_json(record: Any) -> Any:
    """Unstructure a model (or list of models) into JSON-ready data."""
    return converter.unstructure(record)


def from_json(data: Any, record_type: type[T]) -> T:
    """Structure JSON data into `record_type`, raising cattrs errors as is."""
    return converter.structure(data, record_type)
