"""The shapes of HTTP request and response bodies.

Each JSON request body and each set of query parameters is a small frozen
attrs class here; `sandboxer.http.parsing` builds them from requests, the
handlers receive them, and the OpenAPI document is generated from the very
same classes (`sandboxer.http.openapi`), so what is documented is what is
parsed. Responses reuse the records of `sandboxer.models` plus the few
envelopes defined below. Field metadata (`schema(...)`) carries each
field's description and JSON Schema constraints.
"""

from __future__ import annotations

from typing import Any

from attrs import field, frozen

from sandboxer.errors import InvalidInputError
from sandboxer.manager import MAX_TTL_SECONDS
from sandboxer.models import (
    LABEL_KEY_PATTERN,
    LABEL_VALUE_MAX,
    NAME_PATTERN,
    ExtensionReport,
    ManagedResource,
    Sandbox,
    SandboxStatus,
    SnapshotRecord,
    SnapshotStatus,
)

# JSON Schema fragments reused by several fields. The patterns are the ones
# the core validates with, so the document and the server agree.
REFERENCE = {"minLength": 1, "pattern": NAME_PATTERN.pattern}
NAME = {"pattern": NAME_PATTERN.pattern}
LABELS = {
    "propertyNames": {"pattern": LABEL_KEY_PATTERN.pattern},
    "additionalProperties": {
        "type": "string",
        "maxLength": LABEL_VALUE_MAX,
        "pattern": "^[^\\x00-\\x1f]*$",
    },
}
TTL = {"minimum": 1, "maximum": MAX_TTL_SECONDS}
LABEL_FILTER = {"items": {"pattern": "^[^=]+=.*$"}}


def schema(description: str, **json_schema: Any) -> dict[str, Any]:
    """Field metadata read by the OpenAPI generator."""
    return {"description": description, "json_schema": json_schema}


# -- request bodies -----------------------------------------------------------


@frozen
class NoBody:
    """Marks an endpoint that takes no JSON request body."""


@frozen
class NoQuery:
    """Marks an endpoint that takes no query parameters."""


@frozen
class CreateSandboxBody:
    """`POST /v1/sandboxes`: the arguments of `SandboxManager.create`."""

    profile: str | None = field(
        default=None,
        metadata=schema("Profile to create from; default profile if omitted."),
    )
    extension: str | None = field(
        default=None,
        metadata=schema("Extension to use with its defaults, without a profile."),
    )
    settings: dict[str, Any] | None = field(
        default=None, metadata=schema("Overrides of the profile's settings.")
    )
    name: str | None = field(
        default=None, metadata=schema("A unique name for the sandbox.", **NAME)
    )
    labels: dict[str, str] = field(factory=dict, metadata=schema("Labels.", **LABELS))
    ttl_seconds: int | None = field(
        default=None, metadata=schema("Seconds until `reap` destroys it.", **TTL)
    )


@frozen
class ExtendBody:
    """`POST /v1/sandboxes/{id}/extend`."""

    ttl_seconds: int = field(metadata=schema("New TTL in seconds from now.", **TTL))


@frozen
class LabelBody:
    """`POST /v1/sandboxes/{id}/labels`: labels to set and label keys to remove."""

    set_labels: dict[str, str] = field(
        factory=dict, metadata=schema("Labels to add or change.", **LABELS)
    )
    remove: list[str] = field(factory=list, metadata=schema("Label keys to remove."))


@frozen
class ExecBody:
    """`POST /v1/sandboxes/{id}/exec`: a command and how to run it.

    Standard input is `stdin` (text) or `stdin_base64` (bytes), not both.
    With `stream` (or `Accept: application/x-ndjson`) the output is sent as
    NDJSON events while the command runs instead of one JSON document.
    """

    argv: list[str] = field(
        metadata=schema("The command and its arguments.", minItems=1)
    )
    env: dict[str, str] = field(factory=dict, metadata=schema("Environment variables."))
    workdir: str | None = field(
        default=None, metadata=schema("Absolute working directory in the sandbox.")
    )
    timeout: float | None = field(
        default=None,
        metadata=schema(
            "Seconds before the command is stopped (exit 124, timed_out).",
            exclusiveMinimum=0,
            maximum=7 * 24 * 3600,
        ),
    )
    stdin: str | None = field(default=None, metadata=schema("Standard input as text."))
    stdin_base64: str | None = field(
        default=None,
        metadata=schema(
            "Standard input as base64-encoded bytes.", contentEncoding="base64"
        ),
    )
    tty: bool = field(
        default=False,
        metadata=schema("Allocate a terminal (merges stderr into stdout)."),
    )
    output_limit: int | None = field(
        default=None,
        metadata=schema(
            "Bytes kept of each stream (the end of it); the server's limit at most.",
            minimum=1,
        ),
    )
    stream: bool = field(
        default=False, metadata=schema("Stream NDJSON events instead of one document.")
    )


@frozen
class SnapshotBody:
    """`POST /v1/sandboxes/{id}/snapshot`."""

    labels: dict[str, str] = field(
        factory=dict, metadata=schema("Labels of the snapshot.", **LABELS)
    )
    pause: bool | None = field(
        default=None,
        metadata=schema("Freeze the sandbox while archiving; default: the profile's."),
    )
    wait: bool = field(
        default=True,
        metadata=schema(
            "Answer once ready (201); false answers 202 with the pending record."
        ),
    )


@frozen
class RestoreBody:
    """`POST /v1/snapshots/{id}/restore`: the new sandbox's arguments."""

    name: str | None = field(
        default=None, metadata=schema("Name of the new sandbox.", **NAME)
    )
    profile: str | None = field(
        default=None,
        metadata=schema("Profile of the new sandbox; default: the snapshot's."),
    )
    settings: dict[str, Any] | None = field(
        default=None, metadata=schema("Overrides of the settings.")
    )
    labels: dict[str, str] = field(factory=dict, metadata=schema("Labels.", **LABELS))
    ttl_seconds: int | None = field(
        default=None, metadata=schema("TTL in seconds.", **TTL)
    )
    wait: bool = field(
        default=True,
        metadata=schema(
            "Answer once ready (201); false answers 202 with the provisioning sandbox."
        ),
    )


@frozen
class ReapBody:
    """`POST /v1/reap` and `POST /v1/reap/snapshots`."""

    dry_run: bool = field(default=False, metadata=schema("Only list what would go."))
    stale_after: float | None = field(
        default=None,
        metadata=schema(
            "Seconds after which a provisioning sandbox counts as stuck.",
            minimum=0,
            maximum=MAX_TTL_SECONDS,
        ),
    )


# -- query parameters ---------------------------------------------------------


@frozen
class ListSandboxesQuery:
    extension: str | None = field(default=None, metadata=schema("Only this extension."))
    status: SandboxStatus | None = field(
        default=None, metadata=schema("Only this status.")
    )
    label: list[str] = field(
        factory=list,
        metadata=schema("KEY=VALUE; repeat to require several.", **LABEL_FILTER),
    )
    all: bool = field(default=False, metadata=schema("Include destroyed sandboxes."))

    def labels(self) -> dict[str, str]:
        return parse_label_filters(self.label)


@frozen
class ListSnapshotsQuery:
    sandbox: str | None = field(default=None, metadata=schema("Only this sandbox's."))
    extension: str | None = field(default=None, metadata=schema("Only this extension."))
    status: SnapshotStatus | None = field(
        default=None, metadata=schema("Only this status.")
    )
    label: list[str] = field(
        factory=list,
        metadata=schema("KEY=VALUE; repeat to require several.", **LABEL_FILTER),
    )
    all: bool = field(default=False, metadata=schema("Include deleted snapshots."))

    def labels(self) -> dict[str, str]:
        return parse_label_filters(self.label)


@frozen
class GetSandboxQuery:
    refresh: bool = field(
        default=False, metadata=schema("Ask the backend for the current status first.")
    )


@frozen
class DestroyQuery:
    force: bool = field(
        default=False,
        metadata=schema("Forget the record even if the backend cannot be reached."),
    )


@frozen
class FilesQuery:
    path: str = field(
        metadata=schema("Absolute path in the sandbox.", minLength=1, pattern="^/")
    )


def parse_label_filters(values: list[str]) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in values:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise InvalidInputError(
                f"label filter {item!r} must look like KEY=VALUE", field="label"
            )
        labels[key] = value
    return labels


# -- response envelopes ---------------------------------------------------------


@frozen
class ErrorDetail:
    code: str = field(metadata=schema("Stable machine code, e.g. not_found."))
    message: str = field(metadata=schema("One line for a human: what and how to fix."))
    details: dict[str, Any] = field(
        factory=dict, metadata=schema("Structured fields, e.g. the sandbox id.")
    )


@frozen
class ErrorResponse:
    """The body of every error response."""

    error: ErrorDetail


@frozen
class HealthResponse:
    status: str = field(
        metadata=schema("ok, or degraded when an extension failed to load.")
    )
    version: str = field(metadata=schema("sandboxer-core version."))
    extensions: list[ExtensionReport] = field(
        metadata=schema("Every discovered extension, loaded or failed.")
    )


@frozen
class ExecOutput:
    """A finished command. Output that is not UTF-8 comes as base64 instead."""

    exit_code: int = field(metadata=schema("The command's own exit status."))
    stdout: str | None = field(metadata=schema("stdout as text; null if not UTF-8."))
    stderr: str | None = field(metadata=schema("stderr as text; null if not UTF-8."))
    stdout_base64: str | None = field(
        metadata=schema("stdout as base64 when it is not UTF-8, else null.")
    )
    stderr_base64: str | None = field(
        metadata=schema("stderr as base64 when it is not UTF-8, else null.")
    )
    stdout_truncated: bool = field(metadata=schema("Only the end of stdout was kept."))
    stderr_truncated: bool = field(metadata=schema("Only the end of stderr was kept."))
    timed_out: bool
    duration_seconds: float


@frozen
class ExecChunkEvent:
    """A streamed piece of output (NDJSON mode)."""

    stream: str = field(metadata=schema("stdout or stderr.", enum=["stdout", "stderr"]))
    data_base64: str


@frozen
class ExecExitEvent:
    """The last NDJSON event of a command that ran to its end."""

    exit_code: int
    timed_out: bool
    duration_seconds: float


@frozen
class ExecErrorEvent:
    """The last NDJSON event when the exec failed after streaming began."""

    error: ErrorDetail


@frozen
class ReapResponse:
    sandboxes: list[Sandbox] = field(
        metadata=schema("Destroyed (or, dry run, due) sandboxes.")
    )
    dry_run: bool


@frozen
class ReapSnapshotsResponse:
    snapshots: list[SnapshotRecord] = field(
        metadata=schema("Snapshots marked failed (or, dry run, due).")
    )
    dry_run: bool


@frozen
class OrphansResponse:
    resources: list[ManagedResource] = field(
        metadata=schema("Backend resources whose sandbox has no live record.")
    )
    errors: dict[str, str] = field(
        metadata=schema("Extensions that could not list their resources, and why.")
    )
