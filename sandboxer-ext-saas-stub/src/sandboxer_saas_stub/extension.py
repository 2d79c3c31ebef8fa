"""ext.saas-stub: a reference extension shaped like a hosted sandbox API.

It needs no Docker. Each sandbox is a directory under
`<sandboxer data dir>/saas-stub/sandboxes/<id>/` holding `state.json` and a
`files/` tree that stands for the sandbox's file system. Like a hosted API
it provisions asynchronously (`provisioning` until `provision_delay` has
passed), keeps metadata-only snapshots, and can be told to be slow or to
fail, so the core's tests can drive every path of the manager.

Settings (profile settings or `create --set KEY=VALUE`):

- `provision_delay` (seconds, default 0.05): time until a sandbox is ready.
- `latency` (seconds, default 0): added to every call.
- `fail_on` (list of operation names): raise a backend failure in those
  operations: provision, status, exec, put_files, get_files, destroy,
  snapshot, snapshot_partial (writes part of a snapshot, then fails without
  cleaning up, like a crashing backend), restore, delete_snapshot.
- `never_ready` (bool): stay `provisioning` forever.
- `snapshots` (bool, default true): whether snapshots are supported.

`SANDBOXER_SAAS_STUB_FAIL_ON` (comma-separated operations) injects the same
faults into every sandbox, also ones created before it was set.

Commands: exec runs a few built-ins in-process: `echo`, `cat` (stdin or
files), `true`, `false`, `exit N`, `sleep N`, `ls`, `pwd`, `env` and
`sh -c 'exit N'`. Anything else is refused as not supported.

Limitation: snapshots are metadata-only: they record the sandbox's file
list (names, sizes, sha256) but not the contents; a restored stub sandbox
starts with an empty file tree and `restored_from` set.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import shlex
import shutil
import time
from pathlib import Path
from typing import IO, Any

from sandboxer import archives
from sandboxer.config import data_dir
from sandboxer.errors import (
    BackendError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from sandboxer.extension import SandboxExtension
from sandboxer.models import (
    ExecRequest,
    ExecStatus,
    ExecStreams,
    ManagedResource,
    Profile,
    Progress,
    ProvisionResult,
    Sandbox,
    SandboxStatus,
    SnapshotData,
    SnapshotOptions,
    SnapshotRecord,
)
from sandboxer_saas_stub import __version__

logger = logging.getLogger(__name__)

EXTENSION_ID = "ext.saas-stub"
OPERATIONS = (
    "provision",
    "status",
    "exec",
    "put_files",
    "get_files",
    "destroy",
    "snapshot",
    "snapshot_partial",
    "restore",
    "delete_snapshot",
)
DEFAULTS: dict[str, Any] = {
    "provision_delay": 0.05,
    "latency": 0.0,
    "fail_on": [],
    "never_ready": False,
    "snapshots": True,
}
BUILTINS = (
    "echo",
    "cat",
    "true",
    "false",
    "exit",
    "sleep",
    "ls",
    "pwd",
    "env",
    "sh -c",
)


def stub_dir() -> Path:
    return data_dir() / "saas-stub"


class SaasStubExtension(SandboxExtension):
    id = EXTENSION_ID
    version = __version__
    capabilities = ("exec", "files", "snapshots", "resources")
    description = "Simulated hosted sandbox API; no Docker needed"

    # -- state ---------------------------------------------------------------

    def _sandbox_dir(self, sandbox_id: str) -> Path:
        return stub_dir() / "sandboxes" / sandbox_id

    def _read_state(self, sandbox_id: str) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(
                (self._sandbox_dir(sandbox_id) / "state.json").read_text()
            )
        except FileNotFoundError:
            return None
        return state

    def _write_state(self, sandbox_id: str, state: dict[str, Any]) -> None:
        directory = self._sandbox_dir(sandbox_id)
        directory.mkdir(parents=True, exist_ok=True)
        temp = directory / "state.json.tmp"
        temp.write_text(json.dumps(state))
        os.replace(temp, directory / "state.json")

    def _live_state(self, sandbox: Sandbox) -> dict[str, Any]:
        state = self._read_state(sandbox.id)
        if state is None:
            raise BackendError(
                f"{EXTENSION_ID} has no sandbox {sandbox.id}; it is gone"
            )
        return state

    def _enter(self, operation: str, config: dict[str, Any]) -> None:
        """Apply the configured latency and injected faults for `operation`."""
        latency = float(config.get("latency", 0.0))
        if latency > 0:
            time.sleep(latency)
        if operation in _faults(config):
            raise BackendError(f"{EXTENSION_ID}: injected fault in {operation}")

    def _files_path(self, sandbox: Sandbox, path: str) -> Path:
        root = (self._sandbox_dir(sandbox.id) / "files").resolve()
        target = (root / path.lstrip("/")).resolve()
        if target != root and root not in target.parents:
            raise InvalidInputError(f"path {path!r} leaves the sandbox")
        return target

    # -- lifecycle -------------------------------------------------------------

    def sandboxer_validate_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(settings) - set(DEFAULTS))
        if unknown:
            raise InvalidInputError(
                f"settings.{unknown[0]}: unknown setting for {EXTENSION_ID}; "
                f"known: {', '.join(sorted(DEFAULTS))}"
            )
        result = {**DEFAULTS, **settings}
        for key in ("provision_delay", "latency"):
            value = result[key]
            if isinstance(value, str):
                value = _parse_float(key, value)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or value < 0
            ):
                raise InvalidInputError(f"settings.{key}: must be a number >= 0")
            result[key] = float(value)
        fail_on = result["fail_on"]
        if isinstance(fail_on, str):
            fail_on = [item for item in fail_on.split(",") if item]
        if not isinstance(fail_on, list) or any(
            item not in OPERATIONS for item in fail_on
        ):
            raise InvalidInputError(
                f"settings.fail_on: must list operations among {', '.join(OPERATIONS)}"
            )
        result["fail_on"] = fail_on
        for key in ("never_ready", "snapshots"):
            result[key] = _parse_bool(key, result[key])
        return result

    def sandboxer_provision(self, sandbox: Sandbox) -> ProvisionResult:
        self._enter("provision", sandbox.config)
        ready_at = time.time() + float(sandbox.config.get("provision_delay", 0.05))
        state = {
            "id": sandbox.id,
            "ready_at": None if sandbox.config.get("never_ready") else ready_at,
            "restored_from": sandbox.restored_from,
            "labels": dict(sandbox.labels),
        }
        self._write_state(sandbox.id, state)
        (self._sandbox_dir(sandbox.id) / "files" / "workspace").mkdir(
            parents=True, exist_ok=True
        )
        return ProvisionResult(
            status=SandboxStatus.PROVISIONING,
            provider_data={"stub_dir": str(self._sandbox_dir(sandbox.id))},
        )

    def sandboxer_status(self, sandbox: Sandbox) -> ProvisionResult:
        self._enter("status", sandbox.config)
        state = self._read_state(sandbox.id)
        if state is None:
            return ProvisionResult(
                status=SandboxStatus.FAILED, error=f"{EXTENSION_ID} lost {sandbox.id}"
            )
        ready_at = state.get("ready_at")
        if ready_at is None or time.time() < ready_at:
            return ProvisionResult(status=SandboxStatus.PROVISIONING)
        return ProvisionResult(status=SandboxStatus.READY)

    def sandboxer_destroy(self, sandbox: Sandbox) -> None:
        self._enter("destroy", sandbox.config)
        shutil.rmtree(self._sandbox_dir(sandbox.id), ignore_errors=True)

    def sandboxer_list_resources(
        self, sandbox_ids: list[str] | None
    ) -> list[ManagedResource]:
        directory = stub_dir() / "sandboxes"
        if not directory.is_dir():
            return []
        return [
            ManagedResource(kind="stub-sandbox", id=entry.name, sandbox_id=entry.name)
            for entry in sorted(directory.iterdir())
            if sandbox_ids is None or entry.name in sandbox_ids
        ]

    def sandboxer_profiles(self) -> list[Profile]:
        return []

    # -- exec ------------------------------------------------------------------

    def sandboxer_exec(
        self, sandbox: Sandbox, request: ExecRequest, streams: ExecStreams
    ) -> ExecStatus:
        self._enter("exec", sandbox.config)
        self._live_state(sandbox)
        argv = list(request.argv)
        if argv[:2] == ["sh", "-c"] and len(argv) >= 3:
            script = argv[2]
            argv = shlex.split(script)
            if not argv or any(character in script for character in "><|;&$`"):
                raise UnsupportedError(
                    f"shell syntax in {script!r} is not supported by "
                    f"{EXTENSION_ID}; it runs one simple command per `sh -c`"
                )
        program, arguments = argv[0], argv[1:]
        stdin = streams.stdin
        if program == "echo":
            streams.stdout.write((" ".join(arguments) + "\n").encode())
        elif program == "cat":
            if arguments:
                for name in arguments:
                    path = self._files_path(sandbox, self._absolute(request, name))
                    if not path.is_file():
                        streams.stderr.write(f"cat: {name}: No such file\n".encode())
                        return ExecStatus(exit_code=1)
                    streams.stdout.write(path.read_bytes())
            elif stdin is not None:
                for chunk in iter(lambda: stdin.read(65536), b""):
                    streams.stdout.write(chunk)
        elif program in ("true", "false"):
            return ExecStatus(exit_code=0 if program == "true" else 1)
        elif program == "exit":
            return ExecStatus(exit_code=int(arguments[0]) if arguments else 0)
        elif program == "sleep":
            return self._sleep(
                float(arguments[0]) if arguments else 0, request, streams
            )
        elif program == "ls":
            path = self._files_path(
                sandbox, self._absolute(request, ".", *arguments[:1])
            )
            names = (
                sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []
            )
            for name in names:
                streams.stdout.write(f"{name}\n".encode())
        elif program == "pwd":
            streams.stdout.write(f"{request.workdir or '/workspace'}\n".encode())
        elif program == "env":
            for key, value in sorted(request.env.items()):
                streams.stdout.write(f"{key}={value}\n".encode())
        else:
            raise UnsupportedError(
                f"command {program!r} not supported by {EXTENSION_ID}; it runs only "
                f"{', '.join(BUILTINS)}"
            )
        return ExecStatus(exit_code=0)

    @staticmethod
    def _absolute(request: ExecRequest, *parts: str) -> str:
        path = parts[-1]
        if path.startswith("/"):
            return path
        return posixpath.join(request.workdir or "/workspace", path)

    @staticmethod
    def _sleep(
        seconds: float, request: ExecRequest, streams: ExecStreams
    ) -> ExecStatus:
        limit = request.timeout if request.timeout is not None else seconds
        if streams.cancel.wait(min(seconds, limit)) or limit < seconds:
            return ExecStatus(exit_code=124, timed_out=True)
        return ExecStatus(exit_code=0)

    # -- files -----------------------------------------------------------------

    def sandboxer_put_files(
        self, sandbox: Sandbox, destination: str, archive: IO[bytes], progress: Progress
    ) -> None:
        self._enter("put_files", sandbox.config)
        self._live_state(sandbox)
        target = self._files_path(sandbox, destination)
        target.mkdir(parents=True, exist_ok=True)
        archives.extract_stream(archive, target, progress=progress)

    def sandboxer_get_files(
        self, sandbox: Sandbox, source: str, sink: IO[bytes], progress: Progress
    ) -> None:
        self._enter("get_files", sandbox.config)
        self._live_state(sandbox)
        path = self._files_path(sandbox, source)
        if not os.path.lexists(path):
            raise NotFoundError(f"{source} does not exist in sandbox {sandbox.id}")
        archives.write_tree([path], sink, progress=progress)

    # -- snapshots -------------------------------------------------------------

    def sandboxer_supports_snapshots(self, sandbox: Sandbox) -> bool:
        return bool(sandbox.config.get("snapshots", True))

    def _snapshot_path(self, snapshot_id: str) -> Path:
        return stub_dir() / "snapshots" / f"{snapshot_id}.json"

    def sandboxer_snapshot(
        self,
        sandbox: Sandbox,
        snapshot: SnapshotRecord,
        options: SnapshotOptions,
        progress: Progress,
    ) -> SnapshotData:
        self._live_state(sandbox)
        path = self._snapshot_path(snapshot.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        manifest = json.dumps(
            {
                "snapshot": snapshot.id,
                "sandbox": sandbox.id,
                "paused": options.pause,
                "files": self._file_list(sandbox),
            },
            sort_keys=True,
        ).encode()
        if "snapshot_partial" in _faults(sandbox.config):
            path.write_bytes(manifest[: len(manifest) // 2])
            self._enter("snapshot_partial", sandbox.config)
        try:
            self._enter("snapshot", sandbox.config)
            path.write_bytes(manifest)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        progress(len(manifest), len(manifest))
        return SnapshotData(
            location=f"saas-stub://snapshots/{snapshot.id}",
            size_bytes=len(manifest),
            sha256=hashlib.sha256(manifest).hexdigest(),
        )

    def _file_list(self, sandbox: Sandbox) -> list[dict[str, Any]]:
        root = self._sandbox_dir(sandbox.id) / "files"
        listing = []
        for path in sorted(root.rglob("*")):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                listing.append(
                    {
                        "path": "/" + str(path.relative_to(root)),
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                )
        return listing

    def sandboxer_restore_from_snapshot(
        self, sandbox: Sandbox, snapshot: SnapshotRecord, progress: Progress
    ) -> None:
        self._enter("restore", sandbox.config)
        try:
            manifest = self._snapshot_path(snapshot.id).read_bytes()
        except FileNotFoundError:
            raise BackendError(
                f"{EXTENSION_ID} has no data for snapshot {snapshot.id}"
            ) from None
        if hashlib.sha256(manifest).hexdigest() != snapshot.sha256:
            raise BackendError(f"snapshot {snapshot.id} does not match its sha256")
        state = self._live_state(sandbox)
        state["restored_from"] = snapshot.id
        self._write_state(sandbox.id, state)
        progress(len(manifest), len(manifest))

    def sandboxer_delete_snapshot(self, snapshot: SnapshotRecord) -> None:
        self._enter("delete_snapshot", snapshot.config)
        with contextlib.suppress(FileNotFoundError):
            self._snapshot_path(snapshot.id).unlink()


def _faults(config: dict[str, Any]) -> set[str]:
    """Operations that fail: the sandbox's `fail_on` plus the environment's."""
    from_environment = os.environ.get("SANDBOXER_SAAS_STUB_FAIL_ON", "").split(",")
    return set(config.get("fail_on", [])) | {
        item.strip() for item in from_environment if item.strip()
    }


def _parse_float(key: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise InvalidInputError(f"settings.{key}: must be a number >= 0") from None


def _parse_bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "true",
        "1",
        "yes",
        "false",
        "0",
        "no",
    ):
        return value.lower() in ("true", "1", "yes")
    raise InvalidInputError(f"settings.{key}: must be true or false")


extension = SaasStubExtension()
