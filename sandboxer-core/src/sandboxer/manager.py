"""`SandboxManager`: the public Python API and the one place that orchestrates.

The CLI, the HTTP API and Python programs all go through this class. It
resolves profiles, validates input, writes records, dispatches each call to
the extension that owns the sandbox, enforces TTLs and keeps the stores and
the backends consistent:

- a sandbox record is stored as `provisioning` *before* the backend is asked
  to create anything, so a crash leaves a record that `reap` can clean;
- a failure part-way marks the record `failed` with the error and asks the
  extension to remove whatever it had created;
- a snapshot record is `pending` until the extension reports the archive
  complete with its size and sha256, and only then `ready`;
- restore provisions a *new* sandbox with `restored_from`, loads the
  snapshot into it, and only then marks it `ready`.
"""

from __future__ import annotations

import builtins
import logging
import re
import secrets
import tarfile
import time
from collections.abc import Callable
from datetime import timedelta
from typing import IO, Any, TypeVar

import attrs

from sandboxer.config import data_dir, load_config
from sandboxer.errors import (
    BackendError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    SandboxerError,
    UnsupportedError,
)
from sandboxer.models import (
    ExecRequest,
    ExecResult,
    ExecStreams,
    ExtensionReport,
    ManagedResource,
    OutputSink,
    Profile,
    Progress,
    ProvisionResult,
    Sandbox,
    SandboxStatus,
    SnapshotOptions,
    SnapshotRecord,
    SnapshotStatus,
    no_progress,
    utcnow,
    validate_labels,
    validate_name,
)
from sandboxer.plugins import PluginHost
from sandboxer.profiles import ProfileCatalog
from sandboxer.stores import (
    JsonSandboxStore,
    JsonSnapshotStore,
    SandboxStore,
    SnapshotStore,
)

logger = logging.getLogger(__name__)

DEFAULT_PROFILE = "profile.saas-stub"
DEFAULT_OUTPUT_LIMIT = 16 * 1024 * 1024
ENV_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SHA256_PATTERN = re.compile(r"^[0-9a-f]{64}$")
MAX_TTL_SECONDS = 365 * 24 * 3600
HEARTBEAT_SECONDS = 30.0


def new_sandbox_id() -> str:
    return f"sb-{secrets.token_hex(6)}"


def new_snapshot_id() -> str:
    return f"snap-{secrets.token_hex(6)}"


class CappedBuffer:
    """An output sink that keeps at most `limit` bytes: the end of the stream.

    The end is what matters when output is too long (the error is usually
    the last thing printed), so the oldest bytes are dropped and
    `truncated` says that happened.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.truncated = False
        self._data = bytearray()

    def write(self, data: bytes) -> int:
        self._data += data
        if len(self._data) > 2 * self.limit:
            self._trim()
        return len(data)

    def _trim(self) -> None:
        if len(self._data) > self.limit:
            del self._data[: len(self._data) - self.limit]
            self.truncated = True

    def getvalue(self) -> bytes:
        self._trim()
        return bytes(self._data)


class TarHeadChecked:
    """A byte stream whose first 512-byte block must be a valid tar header.

    Reading it gives the original bytes; the check happens on creation.
    """

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        head = b""
        while len(head) < tarfile.BLOCKSIZE:
            chunk = source.read(tarfile.BLOCKSIZE - len(head))
            if not chunk:
                break
            head += chunk
        try:
            tarfile.TarInfo.frombuf(head, "utf-8", "surrogateescape")
        except tarfile.HeaderError as error:
            if head.count(0) != len(head) or not head:
                raise InvalidInputError(
                    f"the uploaded data is not a tar archive ({error})"
                ) from None
        self._head = head

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size is None or size < 0:
                data, self._head = self._head + self._source.read(), b""
                return data
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._source.read(size)


def validate_ttl(ttl_seconds: int | None) -> int | None:
    if ttl_seconds is None:
        return None
    if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int):
        raise InvalidInputError("ttl must be a whole number of seconds", field="ttl")
    if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidInputError(
            f"ttl must be between 1 and {MAX_TTL_SECONDS} seconds, got {ttl_seconds}",
            field="ttl",
        )
    return ttl_seconds


def validate_exec_request(request: ExecRequest) -> None:
    if not request.argv:
        raise InvalidInputError("exec needs a command: give at least one argument")
    for argument in request.argv:
        if not isinstance(argument, str) or "\x00" in argument:
            raise InvalidInputError(
                "command arguments must be strings without NUL bytes"
            )
        _require_utf8(argument, "command arguments")
    for key, value in request.env.items():
        if not ENV_KEY_PATTERN.match(key):
            raise InvalidInputError(
                f"invalid environment variable name {key!r}: use letters, digits "
                "and '_', not starting with a digit",
                field="env",
            )
        if not isinstance(value, str) or "\x00" in value:
            raise InvalidInputError(
                f"environment variable {key!r} must be a string without NUL"
            )
        _require_utf8(value, f"environment variable {key!r}")
    if request.workdir is not None:
        validate_sandbox_path(request.workdir, "workdir")
    if request.timeout is not None and not 0 < request.timeout <= 7 * 24 * 3600:
        raise InvalidInputError("timeout must be a positive number of seconds")


def _require_utf8(value: str, what: str) -> None:
    """Refuse text that cannot be sent on as UTF-8 (undecodable shell bytes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInputError(
            f"{what} must be valid UTF-8 text; {value!r} is not"
        ) from None


def validate_sandbox_path(path: str, what: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise InvalidInputError(
            f"{what} must be an absolute path inside the sandbox, got {path!r}"
        )
    return path


class SandboxManager:
    """Create, use, checkpoint and destroy sandboxes across extensions."""

    def __init__(
        self,
        plugins: PluginHost,
        sandboxes: SandboxStore,
        snapshots: SnapshotStore,
        *,
        profiles: ProfileCatalog | None = None,
        default_profile: str = DEFAULT_PROFILE,
        ready_timeout: float = 300.0,
        poll_interval: float = 0.1,
    ) -> None:
        self.plugins = plugins
        self.sandboxes = sandboxes
        self.snapshots = snapshots
        self.profile_catalog = profiles or ProfileCatalog(plugins.profiles)
        self.default_profile = default_profile
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval

    @classmethod
    def from_environment(cls) -> SandboxManager:
        """A manager over the installed extensions and the user's data dir."""
        directory = data_dir()
        config = load_config()
        return cls(
            PluginHost.from_entry_points(),
            JsonSandboxStore(directory),
            JsonSnapshotStore(directory),
            default_profile=str(config.get("default_profile", DEFAULT_PROFILE)),
        )

    # -- extensions and profiles ---------------------------------------------

    def extensions(self) -> builtins.list[ExtensionReport]:
        return self.plugins.reports()

    def list_profiles(self) -> builtins.list[Profile]:
        return self.profile_catalog.all()

    def get_profile(self, name: str) -> Profile:
        return self.profile_catalog.get(name)

    # -- sandboxes -------------------------------------------------------------

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
        """Provision a sandbox and return its record once it is ready.

        With neither `profile` nor `extension`, the default profile is used.
        With only `extension`, the sandbox gets that extension's defaults.
        Raises (after marking the record failed and cleaning up) when the
        backend fails or the sandbox is not ready within the deadline.
        """
        record = self._new_sandbox_record(
            profile=profile,
            extension=extension,
            settings=settings,
            name=name,
            labels=labels,
            ttl_seconds=ttl_seconds,
        )
        return self._provision(record)

    def _resolve_profile(
        self, profile: str | None, extension: str | None
    ) -> tuple[Profile | None, str]:
        if profile is None and extension is not None:
            known = {report.id for report in self.plugins.reports()}
            if extension not in known:
                raise NotFoundError(
                    f"extension {extension!r} is not installed; `sandboxer "
                    "extensions list` shows the installed ones",
                    extension=extension,
                )
            return None, extension
        chosen = self.profile_catalog.get(profile or self.default_profile)
        if extension is not None and extension != chosen.extension:
            raise InvalidInputError(
                f"profile {chosen.name!r} belongs to {chosen.extension}, "
                f"not {extension}"
            )
        return chosen, chosen.extension

    def _new_sandbox_record(
        self,
        *,
        profile: str | None,
        extension: str | None,
        settings: dict[str, Any] | None,
        name: str | None,
        labels: dict[str, str] | None,
        ttl_seconds: int | None,
        restored_from: str | None = None,
        base_settings: dict[str, Any] | None = None,
    ) -> Sandbox:
        """Validate a new sandbox's inputs and store it as provisioning."""
        if name is not None:
            validate_name(name)
        validate_labels(labels or {})
        validate_ttl(ttl_seconds)
        if settings is not None and not isinstance(settings, dict):
            raise InvalidInputError("settings must be a mapping of names to values")
        chosen, extension_id = self._resolve_profile(profile, extension)
        merged_settings = {
            **(base_settings if base_settings is not None else {}),
            **(chosen.settings if chosen else {}),
            **(settings or {}),
        }
        config = self.plugins.validate_settings(extension_id, merged_settings)
        ttl = (
            ttl_seconds
            if ttl_seconds is not None
            else (chosen.ttl_seconds if chosen else None)
        )
        now = utcnow()
        record = Sandbox(
            id=new_sandbox_id(),
            extension=extension_id,
            status=SandboxStatus.PROVISIONING,
            created_at=now,
            updated_at=now,
            name=name,
            profile=chosen.name if chosen else None,
            expires_at=now + timedelta(seconds=ttl) if ttl else None,
            ttl_seconds=ttl,
            labels={**(chosen.labels if chosen else {}), **(labels or {})},
            config=config,
            restored_from=restored_from,
        )
        self.sandboxes.add(record, check=_name_is_free(name))
        logger.info("sandbox %s provisioning on %s", record.id, extension_id)
        return record

    def _provision(
        self, record: Sandbox, before_ready: Callable[[Sandbox], None] | None = None
    ) -> Sandbox:
        try:
            result = self.plugins.provision(record)
            record = self._store_provision_result(record, result)
            record = self._wait_until_ready(record)
            if before_ready is not None:
                before_ready(record)
        except BaseException as error:
            self._fail_and_clean_up(record, error)
            raise
        ready = self._set_status(record.id, SandboxStatus.READY, error=None)
        logger.info("sandbox %s ready", ready.id)
        return ready

    def _store_provision_result(
        self, record: Sandbox, result: ProvisionResult
    ) -> Sandbox:
        if result.status is SandboxStatus.FAILED:
            raise BackendError(
                f"{record.extension} could not provision {record.id}: "
                f"{result.error or 'no reason given'}"
            )
        if result.provider_data is None:
            return record
        provider_data = result.provider_data
        return self.sandboxes.update(
            record.id,
            lambda current: attrs.evolve(
                current, provider_data=provider_data, updated_at=utcnow()
            ),
        )

    def _wait_until_ready(self, record: Sandbox) -> Sandbox:
        deadline = time.monotonic() + self.ready_timeout
        result = self.plugins.status(record)
        while result.status is SandboxStatus.PROVISIONING:
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"sandbox {record.id} was not ready within "
                    f"{self.ready_timeout:g} s; "
                    "it has been cleaned up"
                )
            time.sleep(self.poll_interval)
            result = self.plugins.status(record)
        record = self._store_provision_result(record, result)
        if result.status is not SandboxStatus.READY:
            raise BackendError(
                f"sandbox {record.id} ended {result.status.value} while provisioning"
            )
        return record

    def _fail_and_clean_up(self, record: Sandbox, error: BaseException) -> None:
        message = _describe_error(error)
        logger.warning("sandbox %s failed: %s", record.id, message)
        try:
            current = self.sandboxes.get(record.id)
            self.plugins.destroy(current)
        except Exception as cleanup_error:  # the original error is the one to report
            logger.warning(
                "cleanup of failed sandbox %s failed: %s",
                record.id,
                _describe_error(cleanup_error),
            )
            logger.debug("cleanup failure", exc_info=True)
        try:
            self._set_status(record.id, SandboxStatus.FAILED, error=message)
        except SandboxerError:
            logger.warning("could not mark sandbox %s failed", record.id, exc_info=True)

    def _set_status(
        self, sandbox_id: str, status: SandboxStatus, *, error: str | None
    ) -> Sandbox:
        return self.sandboxes.update(
            sandbox_id,
            lambda current: attrs.evolve(
                current, status=status, error=error, updated_at=utcnow()
            ),
        )

    def list(
        self,
        *,
        extension: str | None = None,
        status: SandboxStatus | str | None = None,
        labels: dict[str, str] | None = None,
        include_destroyed: bool = False,
    ) -> builtins.list[Sandbox]:
        """Sandbox records matching every given filter, oldest first."""
        wanted = _parse_status(SandboxStatus, status, "sandbox")
        found = [
            record
            for record in self.sandboxes.list()
            if (wanted is not None or include_destroyed or record.is_live)
            and _matches(record, wanted, extension, labels)
        ]
        return sorted(found, key=lambda record: (record.created_at, record.id))

    def get(self, reference: str) -> Sandbox:
        """The sandbox with this id, or the live sandbox with this exact name."""
        records = self.sandboxes.list()
        for record in records:
            if record.id == reference:
                return record
        named = [record for record in records if record.name == reference]
        live = [record for record in named if record.is_live]
        if live or named:
            # The newest live one; else the newest ever, so that destroying a
            # sandbox by name a second time finds it and succeeds.
            return max(live or named, key=lambda record: record.created_at)
        raise NotFoundError(
            f"sandbox {reference!r} not found; "
            "`sandboxer list` shows existing sandboxes",
            sandbox=reference,
        )

    def refresh(self, reference: str) -> Sandbox:
        """Ask the owning extension for the current status and store it."""
        record = self.get(reference)
        if not record.is_live:
            return record
        result = self.plugins.status(record)
        return self.sandboxes.update(
            record.id,
            lambda current: attrs.evolve(
                current,
                status=result.status,
                error=result.error,
                provider_data=(
                    result.provider_data
                    if result.provider_data is not None
                    else current.provider_data
                ),
                updated_at=utcnow(),
            ),
        )

    def _require_ready(self, reference: str) -> Sandbox:
        record = self.get(reference)
        if record.status is not SandboxStatus.READY:
            raise ConflictError(
                f"sandbox {record.id} is {record.status.value}, not ready",
                sandbox=record.id,
                status=record.status.value,
            )
        return record

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
        cancel: Any = None,
    ) -> ExecResult:
        """Run a command in a ready sandbox.

        Output goes to `stdout`/`stderr` sinks when given (streamed, not
        kept); otherwise each stream is captured, keeping its last
        `output_limit` bytes with a per-stream truncated flag.
        """
        request = ExecRequest(
            argv=tuple(argv),
            env=dict(env or {}),
            workdir=workdir,
            timeout=timeout,
            tty=tty,
        )
        validate_exec_request(request)
        record = self._require_ready(reference)
        stdout_buffer = CappedBuffer(output_limit) if stdout is None else None
        stderr_buffer = CappedBuffer(output_limit) if stderr is None else None
        streams = ExecStreams(
            stdout=stdout if stdout is not None else stdout_buffer,  # type: ignore[arg-type]
            stderr=stderr if stderr is not None else stderr_buffer,  # type: ignore[arg-type]
            stdin=stdin,
        )
        if cancel is not None:
            streams.cancel = cancel
        started = time.monotonic()
        status = self.plugins.exec(record, request, streams)
        logger.debug("exec in %s exited %s", record.id, status.exit_code)
        return ExecResult(
            exit_code=status.exit_code,
            stdout=stdout_buffer.getvalue() if stdout_buffer else b"",
            stderr=stderr_buffer.getvalue() if stderr_buffer else b"",
            stdout_truncated=stdout_buffer.truncated if stdout_buffer else False,
            stderr_truncated=stderr_buffer.truncated if stderr_buffer else False,
            timed_out=status.timed_out,
            duration_seconds=time.monotonic() - started,
        )

    def put_files(
        self,
        reference: str,
        destination: str,
        archive: IO[bytes],
        progress: Progress = no_progress,
    ) -> Sandbox:
        """Unpack a tar stream into the sandbox below `destination`.

        The stream's first header is checked here, so input that is not a
        tar archive is refused as bad input whatever the backend would say.
        """
        validate_sandbox_path(destination, "destination")
        record = self._require_ready(reference)
        if self.plugins.implements(record.extension, "sandboxer_put_files"):
            archive = TarHeadChecked(archive)  # type: ignore[assignment]
        self.plugins.put_files(record, destination, archive, progress)
        return record

    def get_files(
        self,
        reference: str,
        source: str,
        sink: IO[bytes],
        progress: Progress = no_progress,
    ) -> Sandbox:
        """Write a tar stream of `source` in the sandbox to `sink`."""
        validate_sandbox_path(source, "source")
        record = self._require_ready(reference)
        self.plugins.get_files(record, source, sink, progress)
        return record

    def destroy(self, reference: str, *, force: bool = False) -> Sandbox:
        """Remove the sandbox's backend resources and mark it destroyed.

        Idempotent. When the backend fails, the record is kept as `failed`
        and the error raised; with `force` the record is marked destroyed
        anyway (resources may remain; `reap --orphans` lists them).
        """
        record = self.get(reference)
        if not record.is_live:
            return record
        record = self._set_status(
            record.id, SandboxStatus.DESTROYING, error=record.error
        )
        try:
            self.plugins.destroy(record)
        except SandboxerError as error:
            if not force:
                self._set_status(record.id, SandboxStatus.FAILED, error=error.message)
                raise
            logger.warning(
                "forgetting sandbox %s despite: %s", record.id, error.message
            )
            return self._set_status(
                record.id, SandboxStatus.DESTROYED, error=f"forced: {error.message}"
            )
        destroyed = self._set_status(record.id, SandboxStatus.DESTROYED, error=None)
        logger.info("sandbox %s destroyed", record.id)
        return destroyed

    def extend(self, reference: str, ttl_seconds: int) -> Sandbox:
        """Set the sandbox to expire `ttl_seconds` from now."""
        if validate_ttl(ttl_seconds) is None:
            raise InvalidInputError("extend needs a ttl", field="ttl")
        record = self.get(reference)
        if not record.is_live:
            raise ConflictError(
                f"sandbox {record.id} is destroyed and cannot be extended"
            )
        now = utcnow()
        return self.sandboxes.update(
            record.id,
            lambda current: attrs.evolve(
                current,
                ttl_seconds=ttl_seconds,
                expires_at=now + timedelta(seconds=ttl_seconds),
                updated_at=now,
            ),
        )

    def label(
        self,
        reference: str,
        set_labels: dict[str, str] | None = None,
        remove: builtins.list[str] | None = None,
    ) -> Sandbox:
        """Add, change or remove labels on a sandbox record."""
        validate_labels(set_labels or {})
        record = self.get(reference)

        def change(current: Sandbox) -> Sandbox:
            labels = {**current.labels, **(set_labels or {})}
            for key in remove or []:
                labels.pop(key, None)
            return attrs.evolve(current, labels=labels, updated_at=utcnow())

        return self.sandboxes.update(record.id, change)

    def _staleness(self, stale_after: float | None) -> timedelta:
        """How long a record may sit provisioning or pending before it is stuck."""
        if stale_after is None:
            return timedelta(seconds=self.ready_timeout)
        if isinstance(stale_after, bool) or not 0 <= stale_after <= MAX_TTL_SECONDS:
            raise InvalidInputError(
                f"stale_after must be between 0 and {MAX_TTL_SECONDS} seconds",
                field="stale_after",
            )
        return timedelta(seconds=stale_after)

    def reap(
        self, *, dry_run: bool = False, stale_after: float | None = None
    ) -> builtins.list[Sandbox]:
        """Destroy expired sandboxes and ones stuck provisioning; return them.

        A sandbox counts as stuck when it has been `provisioning` or
        `destroying` for longer than `stale_after` seconds (default: the
        manager's ready timeout), which is what a killed CLI leaves behind.
        An unreadable store raises; it never counts as "no sandboxes".
        """
        now = utcnow()
        stale = self._staleness(stale_after)
        candidates = []
        for record in self.sandboxes.list():
            if not record.is_live:
                continue
            expired = record.expires_at is not None and record.expires_at <= now
            stuck = (
                record.status
                in (
                    SandboxStatus.PROVISIONING,
                    SandboxStatus.DESTROYING,
                )
                and now - record.updated_at > stale
            )
            if expired or stuck:
                candidates.append(record)
        if dry_run:
            return candidates
        reaped = []
        for record in candidates:
            try:
                reaped.append(self.destroy(record.id))
                logger.info("reaped sandbox %s", record.id)
            except SandboxerError as error:
                logger.warning("could not reap %s: %s", record.id, error.message)
        return reaped

    def reap_snapshots(
        self, *, dry_run: bool = False, stale_after: float | None = None
    ) -> builtins.list[SnapshotRecord]:
        """Mark snapshots stuck `pending` (their writer died) failed; return them.

        Their partial data is removed through the extension first.
        """
        now = utcnow()
        stale = self._staleness(stale_after)
        stuck = [
            record
            for record in self.snapshots.list()
            if record.status is SnapshotStatus.PENDING
            and now - record.updated_at > stale
        ]
        if dry_run:
            return stuck
        reaped = []
        for record in stuck:
            try:
                self.plugins.delete_snapshot(record)
            except SandboxerError as error:
                logger.warning(
                    "could not clean snapshot %s: %s", record.id, error.message
                )
                continue
            reaped.append(
                self._update_snapshot(
                    record.id,
                    status=SnapshotStatus.FAILED,
                    error="interrupted before the archive was complete",
                )
            )
            logger.info("reaped interrupted snapshot %s", record.id)
        return reaped

    def orphans(
        self, *, remove: bool = False
    ) -> tuple[builtins.list[ManagedResource], dict[str, str]]:
        """Backend resources of sandboxes destroyed here, and errors.

        With `remove`, each orphaned sandbox's resources are destroyed through
        its extension (by sandbox id, as `destroy` would); failures are
        added to the errors.
        """
        records = {record.id: record for record in self.sandboxes.list()}
        resources, errors = self.plugins.list_resources()
        # Only sandboxes this data directory knows and has destroyed count:
        # an id with no record here may belong to another SANDBOXER_HOME on
        # the same host (another CI runner, a server), and is left alone.
        orphaned = [
            resource
            for resource in resources
            if resource.sandbox_id in records
            and not records[resource.sandbox_id].is_live
        ]
        if remove:
            owners = sorted({str(resource.sandbox_id) for resource in orphaned})
            for sandbox in (records[sandbox_id] for sandbox_id in owners):
                try:
                    self.plugins.destroy(sandbox)
                    logger.info("removed orphaned resources of %s", sandbox.id)
                except SandboxerError as error:
                    errors[sandbox.id] = error.message
        return orphaned, errors

    # -- snapshots -------------------------------------------------------------

    def snapshot(
        self,
        reference: str,
        *,
        labels: dict[str, str] | None = None,
        pause: bool | None = None,
        progress: Progress = no_progress,
    ) -> SnapshotRecord:
        """Checkpoint a sandbox's workspace; returns the ready record."""
        record, sandbox, options = self.begin_snapshot(
            reference, labels=labels, pause=pause
        )
        return self.complete_snapshot(record, sandbox, options, progress)

    def begin_snapshot(
        self,
        reference: str,
        *,
        labels: dict[str, str] | None = None,
        pause: bool | None = None,
    ) -> tuple[SnapshotRecord, Sandbox, SnapshotOptions]:
        """Check the sandbox can be checkpointed and store a pending record."""
        validate_labels(labels or {})
        sandbox = self._require_ready(reference)
        policy = self._snapshot_policy(sandbox)
        if not self.plugins.supports_snapshots(sandbox):
            raise UnsupportedError(
                f"snapshots not supported by {sandbox.extension} "
                f"for sandbox {sandbox.id}",
                sandbox=sandbox.id,
                extension=sandbox.extension,
            )
        if policy is not None and not policy.enabled:
            raise UnsupportedError(
                f"snapshots are disabled by profile {sandbox.profile} "
                f"of sandbox {sandbox.id}"
            )
        options = SnapshotOptions(
            pause=pause if pause is not None else bool(policy and policy.pause)
        )
        now = utcnow()
        record = SnapshotRecord(
            id=new_snapshot_id(),
            sandbox_id=sandbox.id,
            extension=sandbox.extension,
            status=SnapshotStatus.PENDING,
            created_at=now,
            updated_at=now,
            profile=sandbox.profile,
            labels=dict(labels or {}),
            config=dict(sandbox.config),
        )
        self.snapshots.add(record)
        logger.info("snapshot %s of %s pending", record.id, sandbox.id)
        return record, sandbox, options

    def complete_snapshot(
        self,
        record: SnapshotRecord,
        sandbox: Sandbox,
        options: SnapshotOptions,
        progress: Progress = no_progress,
    ) -> SnapshotRecord:
        """Have the extension write the archive; mark the record ready or failed."""
        alive = self._heartbeat(progress, lambda: self._update_snapshot(record.id))
        try:
            data = self.plugins.snapshot(sandbox, record, options, alive)
            if data.size_bytes < 0 or not SHA256_PATTERN.match(data.sha256):
                raise BackendError(
                    f"{sandbox.extension} reported an invalid size or sha256 for "
                    f"snapshot {record.id}"
                )
        except BaseException as error:
            message = _describe_error(error)
            try:
                self.plugins.delete_snapshot(
                    attrs.evolve(record, status=SnapshotStatus.FAILED)
                )
            except Exception:
                logger.warning(
                    "cleanup of snapshot %s failed", record.id, exc_info=True
                )
            self._update_snapshot(
                record.id, status=SnapshotStatus.FAILED, error=message
            )
            logger.warning("snapshot %s failed: %s", record.id, message)
            raise
        ready = self._update_snapshot(
            record.id,
            status=SnapshotStatus.READY,
            size_bytes=data.size_bytes,
            sha256=data.sha256,
            location=data.location,
            error=None,
        )
        logger.info("snapshot %s ready (%d bytes)", ready.id, data.size_bytes)
        return ready

    @staticmethod
    def _heartbeat(progress: Progress, touch: Callable[[], object]) -> Progress:
        """Pass progress on, and refresh a record's `updated_at` now and then.

        `reap` counts a record that has sat `provisioning` or `pending` for
        too long as left behind by a dead process; bytes still moving prove
        the operation alive, so a long snapshot or restore is not reaped.
        """
        last = time.monotonic()

        def report(done: int, total: int | None) -> None:
            nonlocal last
            progress(done, total)
            if time.monotonic() - last >= HEARTBEAT_SECONDS:
                last = time.monotonic()
                try:
                    touch()
                except SandboxerError as error:
                    logger.warning("could not record progress: %s", error.message)

        return report

    def _snapshot_policy(self, sandbox: Sandbox) -> Any:
        if sandbox.profile is None:
            return None
        try:
            return self.profile_catalog.get(sandbox.profile).snapshots
        except NotFoundError:
            return None

    def _update_snapshot(self, snapshot_id: str, **changes: Any) -> SnapshotRecord:
        return self.snapshots.update(
            snapshot_id,
            lambda current: attrs.evolve(current, updated_at=utcnow(), **changes),
        )

    def list_snapshots(
        self,
        *,
        sandbox: str | None = None,
        extension: str | None = None,
        status: SnapshotStatus | str | None = None,
        labels: dict[str, str] | None = None,
        include_deleted: bool = False,
    ) -> builtins.list[SnapshotRecord]:
        """Snapshot records matching every given filter, oldest first."""
        wanted = _parse_status(SnapshotStatus, status, "snapshot")
        sandbox_id = self._sandbox_id(sandbox) if sandbox is not None else None
        found = [
            record
            for record in self.snapshots.list()
            if (
                wanted is not None
                or include_deleted
                or record.status is not SnapshotStatus.DELETED
            )
            and (sandbox_id is None or record.sandbox_id == sandbox_id)
            and _matches(record, wanted, extension, labels)
        ]
        return sorted(found, key=lambda record: (record.created_at, record.id))

    def _sandbox_id(self, reference: str) -> str:
        """The id a sandbox reference (id or name) means, else the reference."""
        try:
            return self.get(reference).id
        except NotFoundError:
            return reference

    def get_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        try:
            return self.snapshots.get(snapshot_id)
        except NotFoundError:
            raise NotFoundError(
                f"snapshot {snapshot_id!r} not found; `sandboxer snapshots list` "
                "shows existing snapshots",
                snapshot=snapshot_id,
            ) from None

    def delete_snapshot(self, snapshot_id: str) -> SnapshotRecord:
        """Remove a snapshot's data and mark its record deleted. Idempotent."""
        record = self.get_snapshot(snapshot_id)
        if record.status is SnapshotStatus.DELETED:
            return record
        if record.status is SnapshotStatus.PENDING:
            raise ConflictError(
                f"snapshot {record.id} is still pending; wait for it to finish"
            )
        self.plugins.delete_snapshot(record)
        deleted = self._update_snapshot(record.id, status=SnapshotStatus.DELETED)
        logger.info("snapshot %s deleted", record.id)
        return deleted

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
    ) -> Sandbox:
        """Provision a new sandbox from a snapshot; returns it once ready."""
        sandbox, snapshot = self.begin_restore(
            snapshot_id,
            name=name,
            profile=profile,
            settings=settings,
            labels=labels,
            ttl_seconds=ttl_seconds,
        )
        return self.complete_restore(sandbox, snapshot, progress)

    def begin_restore(
        self,
        snapshot_id: str,
        *,
        name: str | None = None,
        profile: str | None = None,
        settings: dict[str, Any] | None = None,
        labels: dict[str, str] | None = None,
        ttl_seconds: int | None = None,
    ) -> tuple[Sandbox, SnapshotRecord]:
        """Validate a restore and store the new sandbox as provisioning."""
        snapshot = self.get_snapshot(snapshot_id)
        if snapshot.status is not SnapshotStatus.READY:
            raise ConflictError(
                f"snapshot {snapshot.id} is {snapshot.status.value}, only a ready "
                "snapshot can be restored"
            )
        self.plugins.info(snapshot.extension)
        if not self.plugins.implements(
            snapshot.extension, "sandboxer_restore_from_snapshot"
        ):
            raise UnsupportedError(f"restore not supported by {snapshot.extension}")
        chosen_profile = profile or snapshot.profile
        record = self._new_sandbox_record(
            profile=chosen_profile,
            extension=snapshot.extension,
            settings=settings,
            name=name,
            labels=labels,
            ttl_seconds=ttl_seconds,
            restored_from=snapshot.id,
            base_settings=snapshot.config if profile is None else None,
        )
        return record, snapshot

    def complete_restore(
        self,
        sandbox: Sandbox,
        snapshot: SnapshotRecord,
        progress: Progress = no_progress,
    ) -> Sandbox:
        """Provision the new sandbox and load the snapshot before it is ready."""

        def touch() -> None:
            self.sandboxes.update(
                sandbox.id, lambda current: attrs.evolve(current, updated_at=utcnow())
            )

        def load(provisioned: Sandbox) -> None:
            alive = self._heartbeat(progress, touch)
            self.plugins.restore_from_snapshot(provisioned, snapshot, alive)

        restored = self._provision(sandbox, before_ready=load)
        logger.info("sandbox %s restored from %s", restored.id, snapshot.id)
        return restored


def _name_is_free(name: str | None) -> Callable[[builtins.list[Sandbox]], None] | None:
    if name is None:
        return None

    def check(records: builtins.list[Sandbox]) -> None:
        for record in records:
            if (
                record.name == name
                and record.is_live
                and record.status is not SandboxStatus.FAILED
            ):
                raise ConflictError(
                    f"a sandbox named {name!r} already exists ({record.id}); "
                    "choose another name or destroy it first",
                    sandbox=record.id,
                )

    return check


def _describe_error(error: BaseException) -> str:
    if isinstance(error, SandboxerError):
        return error.message
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}"


StatusT = TypeVar("StatusT", SandboxStatus, SnapshotStatus)


def _parse_status(
    kind: type[StatusT], value: StatusT | str | None, noun: str
) -> StatusT | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        choices = ", ".join(status.value for status in kind)
        raise InvalidInputError(
            f"unknown {noun} status {value!r}; use one of {choices}", field="status"
        ) from None


def _matches(
    record: Sandbox | SnapshotRecord,
    status: SandboxStatus | SnapshotStatus | None,
    extension: str | None,
    labels: dict[str, str] | None,
) -> bool:
    """Whether a record passes the status, extension and label filters."""
    return (
        (status is None or record.status is status)
        and (extension is None or record.extension == extension)
        and all(
            record.labels.get(key) == value for key, value in (labels or {}).items()
        )
    )
