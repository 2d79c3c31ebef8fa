"""The hooks an extension implements: the whole extension contract.

An extension is a pluggy plugin registered under its extension id (the name
of its entry point in the `sandboxer` group, e.g. `ext.compose-ssh`). It may
be a module of `@hookimpl` functions or a `sandboxer.extension.SandboxExtension`
subclass; both become the same kind of plugin.

The manager calls every per-sandbox hook on exactly the extension that owns
the sandbox (the record's `extension` field), so an implementation never has
to ask whether a call is meant for it. Observer plugins (audit, metrics,
policy) wrap any hook with `@hookimpl(wrapper=True)` and see every call.

Required: `sandboxer_describe`, `sandboxer_provision`, `sandboxer_status`,
`sandboxer_exec`, `sandboxer_destroy`. Everything else is optional; a missing
optional hook is reported to users as "not supported by <extension>".

Blocking is fine: the manager calls hooks from worker threads, never from the
HTTP server's event loop. Raise `sandboxer.errors` exceptions (BackendError
for a backend that failed, InvalidInputError for bad settings, ...); any other
exception is reported as a backend failure of the extension.

This is hook API version 1 (`API_VERSION`); every hook appeared in it.
"""

from __future__ import annotations

from typing import IO, Any

import pluggy

from sandboxer.models import (
    ExecRequest,
    ExecStatus,
    ExecStreams,
    ExtensionInfo,
    ManagedResource,
    Profile,
    Progress,
    ProvisionResult,
    Sandbox,
    SnapshotData,
    SnapshotOptions,
    SnapshotRecord,
)

PROJECT_NAME = "sandboxer"
API_VERSION = 1

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

REQUIRED_HOOKS = (
    "sandboxer_describe",
    "sandboxer_provision",
    "sandboxer_status",
    "sandboxer_exec",
    "sandboxer_destroy",
)


@hookspec(firstresult=True)
def sandboxer_describe() -> ExtensionInfo:  # type: ignore[empty-body]
    """Say who this extension is.

    Called once when the extension is loaded and whenever `extensions list`
    runs. Return an `ExtensionInfo` whose `id` equals the entry-point name,
    with the extension's `version`, its `capabilities` (any of "exec",
    "files", "snapshots", "resources", "profiles") and the `api_version` of
    this hook contract it was written for (`sandboxer.hookspecs.API_VERSION`).
    """


@hookspec(firstresult=True)
def sandboxer_validate_settings(settings: dict[str, Any]) -> dict[str, Any]:  # type: ignore[empty-body]
    """Check and normalise the settings a new sandbox will be created with.

    Called by the manager before any record is written, with the profile's
    settings merged with the user's overrides. Return the settings to store
    (defaults filled in), or raise `InvalidInputError` naming the offending
    key, e.g. "settings.image: must be a non-empty string". Optional: without
    it the settings are stored as given.
    """


@hookspec(firstresult=True)
def sandboxer_provision(sandbox: Sandbox) -> ProvisionResult:  # type: ignore[empty-body]
    """Create the backend resources of a new sandbox.

    Called after the manager has stored `sandbox` with status
    `provisioning`; `sandbox.config` holds the validated settings. Label
    every resource with the sandbox id *before* creating it, so that a crash
    part-way leaves only resources that `sandboxer_destroy` and
    `sandboxer_list_resources` can find. Return a `ProvisionResult`: READY
    when usable now, or PROVISIONING for an asynchronous backend (the manager
    then polls `sandboxer_status` until READY or its deadline). Raise on
    failure; the manager marks the record `failed` and calls
    `sandboxer_destroy` to clean up.
    """


@hookspec(firstresult=True)
def sandboxer_status(sandbox: Sandbox) -> ProvisionResult:  # type: ignore[empty-body]
    """Report the backend's view of a sandbox.

    Called while waiting for an asynchronous provision and by `get --refresh`.
    Return a `ProvisionResult` with the current status (and provider data to
    store, if it changed). Return FAILED with an error when the backend has
    lost the sandbox.
    """


@hookspec(firstresult=True)
def sandboxer_exec(  # type: ignore[empty-body]
    sandbox: Sandbox, request: ExecRequest, streams: ExecStreams
) -> ExecStatus:
    """Run `request.argv` inside a ready sandbox and report how it ended.

    Pass argv through without a shell on the backend side (or quote every
    element). Read `streams.stdin` to its end (None means empty input) and
    write output to `streams.stdout` and `streams.stderr` as it arrives,
    draining both concurrently and never merging them. Allocate a terminal
    only when `request.tty` is true. When `request.timeout` seconds pass, or
    `streams.cancel` is set, kill the command and its children and return
    `ExecStatus(exit_code=124, timed_out=True)`. Return the command's own exit
    status exactly (126, 127, 128+signal included); raise `BackendError` when
    the backend cannot tell how the command ended, never report 0 then.
    """


@hookspec(firstresult=True)
def sandboxer_put_files(
    sandbox: Sandbox, destination: str, archive: IO[bytes], progress: Progress
) -> None:
    """Unpack a tar stream into the sandbox under the directory `destination`.

    `archive` is an uncompressed tar stream built by the core with links kept
    as links. Extract it below `destination` only: never follow a link that
    exists in the sandbox at a member's path (replace it instead), never write
    outside `destination`. Create `destination` if missing. Optional.
    """


@hookspec(firstresult=True)
def sandboxer_get_files(
    sandbox: Sandbox, source: str, sink: IO[bytes], progress: Progress
) -> None:
    """Write a tar stream of the path `source` (a file or a tree) to `sink`.

    Members are named relative to the parent of `source`, so the stream of
    `/workspace/dir` starts with `dir/`. Keep links as links. Raise
    `NotFoundError` when `source` does not exist. Optional.
    """


@hookspec(firstresult=True)
def sandboxer_destroy(sandbox: Sandbox) -> None:
    """Remove every backend resource that belongs to the sandbox.

    Idempotent: destroying a sandbox that is already gone succeeds. Remove
    everything labelled with the sandbox id, including resources added after
    provisioning. Raise `BackendError` when the backend cannot be reached; the
    manager then keeps the record as `failed` for a later retry.
    """


@hookspec
def sandboxer_list_resources(sandbox_ids: list[str] | None) -> list[ManagedResource]:  # type: ignore[empty-body]
    """List the backend resources this extension manages.

    Called by `doctor` and `reap --orphans` on every extension. Restrict the
    answer to `sandbox_ids` when given. Resources whose sandbox id has no
    record are orphans the user may clean up. Optional.
    """


@hookspec
def sandboxer_profiles() -> list[Profile]:  # type: ignore[empty-body]
    """Return the profiles this extension ships.

    Called on every loaded plugin when profiles are listed or resolved. Each
    profile's `extension` should be this extension's id. Optional.
    """


@hookspec(firstresult=True)
def sandboxer_supports_snapshots(sandbox: Sandbox) -> bool:  # type: ignore[empty-body]
    """Say whether `sandbox` can be checkpointed now.

    The manager asks before it writes a snapshot record or touches the
    backend; False (or no implementation) makes `snapshot` fail with
    "not supported". Optional.
    """


@hookspec(firstresult=True)
def sandboxer_snapshot(  # type: ignore[empty-body]
    sandbox: Sandbox,
    snapshot: SnapshotRecord,
    options: SnapshotOptions,
    progress: Progress,
) -> SnapshotData:
    """Checkpoint the sandbox's workspace and return where it was kept.

    Called with the `pending` snapshot record already stored. Produce the
    complete archive, then return its `location` (a string this extension
    understands later), `size_bytes` and `sha256`. Call `progress` as bytes
    move: the manager takes it as a sign of life, so a long snapshot is not
    mistaken by `reap` for one whose process died. With `options.pause`,
    freeze the sandbox for the duration and always unfreeze it, also on
    failure. On failure remove partial data and raise; the manager marks the
    record `failed`. Optional.
    """


@hookspec(firstresult=True)
def sandboxer_restore_from_snapshot(
    sandbox: Sandbox, snapshot: SnapshotRecord, progress: Progress
) -> None:
    """Load a snapshot's data into `sandbox`, a freshly provisioned one.

    Verify the archive against `snapshot.sha256` before extracting anything,
    and refuse (with `UnsafeArchiveError` naming the member) any member
    that would land outside the workspace: absolute names, `..`, symlink or
    hardlink targets outside, device nodes. Optional.
    """


@hookspec(firstresult=True)
def sandboxer_delete_snapshot(snapshot: SnapshotRecord) -> None:
    """Remove the stored data of a snapshot. Idempotent. Optional.

    Called by `snapshots delete`, by the manager to clean up after a failed
    snapshot (the record is then `failed`), and by `reap` for a snapshot left
    `pending` by a process that died; remove partial data in those cases too.
    """
