"""Discovering extensions and calling their hooks: the one typed facade.

`PluginHost` owns the pluggy `PluginManager`. It loads every entry point in
the `sandboxer` group, validates each plugin on its own (a plugin that fails
to import, names a hook that does not exist, takes arguments a hook does not
offer, or lacks a required hook is reported and skipped; every other plugin
keeps working), and offers one typed method per hook. No other module calls
`pm.hook` directly.

Per-sandbox hooks go to exactly one extension through pluggy's
`subset_hook_caller`, which leaves out every other extension but keeps
observer plugins' wrappers in the call.

Environment switches, for operators and test suites:

- `SANDBOXER_PLUGINS`: comma-separated allow-list of entry-point names to load
  (an empty value loads none).
- `SANDBOXER_BLOCK_PLUGINS`: comma-separated entry-point names never loaded.
- `SANDBOXER_TRACE_HOOKS=1`: log every hook call and result at DEBUG.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from importlib import metadata
from typing import IO, Any, TypeVar

import attrs
import pluggy

from sandboxer import hookspecs
from sandboxer.errors import (
    BackendError,
    ConflictError,
    ExtensionUnavailableError,
    SandboxerError,
    UnsupportedError,
)
from sandboxer.models import (
    ExecRequest,
    ExecStatus,
    ExecStreams,
    ExtensionInfo,
    ExtensionReport,
    ManagedResource,
    Profile,
    Progress,
    ProvisionResult,
    Sandbox,
    SnapshotData,
    SnapshotOptions,
    SnapshotRecord,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

ENTRY_POINT_GROUP = "sandboxer"

# Hooks that act on one sandbox and are therefore sent to its extension only.
OPTIONAL_HOOK_CAPABILITIES = {
    "sandboxer_put_files": "files",
    "sandboxer_get_files": "files",
    "sandboxer_snapshot": "snapshots",
    "sandboxer_restore_from_snapshot": "snapshots",
}


def _split_env(name: str) -> set[str] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    return {item.strip() for item in value.split(",") if item.strip()}


class PluginHost:
    """Loads extensions and dispatches hook calls to the right one."""

    def __init__(self) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        self._extensions: dict[str, object] = {}
        self._reports: dict[str, ExtensionReport] = {}
        self._infos: dict[str, ExtensionInfo] = {}
        self._hooks: dict[str, frozenset[str]] = {}
        if os.environ.get("SANDBOXER_TRACE_HOOKS") == "1":
            self._pm.trace.root.setwriter(
                lambda message: logger.debug(message.rstrip())
            )
            self._pm.enable_tracing()

    @classmethod
    def from_entry_points(cls) -> PluginHost:
        """A host with every allowed installed extension loaded."""
        host = cls()
        host.load_entry_points()
        return host

    # -- loading -----------------------------------------------------------

    def load_entry_points(self) -> None:
        """Load the `sandboxer` entry points, honouring the allow/block lists."""
        allowed = _split_env("SANDBOXER_PLUGINS")
        blocked = _split_env("SANDBOXER_BLOCK_PLUGINS") or set()
        seen: dict[str, str] = {}
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
            name = entry_point.name
            if (allowed is not None and name not in allowed) or name in blocked:
                continue
            distribution = entry_point.dist.name if entry_point.dist else None
            if name in seen:
                self._report_failure(
                    name,
                    distribution,
                    f"extension id {name!r} is provided by both "
                    f"{seen[name]!r} and {distribution!r}; uninstall one of them",
                )
                self._drop(name)
                continue
            seen[name] = distribution or "?"
            try:
                plugin = entry_point.load()
            except Exception as error:
                self._report_failure(
                    name,
                    distribution,
                    f"import failed: {type(error).__name__}: {error}",
                )
                continue
            self.register(plugin, name, distribution=distribution)

    def register(
        self, plugin: object, extension_id: str, *, distribution: str | None = None
    ) -> bool:
        """Register and validate one extension; False (and a report) if invalid."""
        if extension_id in self._extensions:
            raise ConflictError(f"extension {extension_id!r} is already registered")
        try:
            self._pm.register(plugin, name=extension_id)
        except (pluggy.PluginValidationError, ValueError) as error:
            self._report_failure(extension_id, distribution, f"invalid plugin: {error}")
            return False
        problem = self._validate(plugin, extension_id)
        if problem:
            self._pm.unregister(plugin)
            self._report_failure(extension_id, distribution, problem)
            return False
        self._extensions[extension_id] = plugin
        self._hooks[extension_id] = frozenset(self._implemented_hooks(plugin))
        info = self._infos[extension_id]
        self._reports[extension_id] = ExtensionReport(
            id=extension_id,
            distribution=distribution,
            version=info.version,
            status="loaded",
            capabilities=info.capabilities,
            hooks=tuple(sorted(self._hooks[extension_id])),
            api_version=info.api_version,
        )
        logger.debug("loaded extension %s (%s)", extension_id, distribution)
        return True

    def register_observer(self, plugin: object, name: str) -> None:
        """Register a non-backend plugin (audit, metrics) that wraps hooks."""
        self._pm.register(plugin, name=name)
        self._pm.check_pending()

    def _validate(self, plugin: object, extension_id: str) -> str | None:
        hooks = self._implemented_hooks(plugin)
        unknown = sorted(name for name in hooks if not hasattr(hookspecs, name))
        if unknown:
            return (
                f"implements unknown hook(s) {', '.join(unknown)}: check the spelling"
            )
        missing = [name for name in hookspecs.REQUIRED_HOOKS if name not in hooks]
        if missing:
            return f"lacks required hook(s) {', '.join(missing)}"
        try:
            info = self._call_one(extension_id, "sandboxer_describe")
        except Exception as error:
            return f"sandboxer_describe failed: {type(error).__name__}: {error}"
        if not isinstance(info, ExtensionInfo):
            return "sandboxer_describe did not return an ExtensionInfo"
        if info.id != extension_id:
            return (
                f"describes itself as {info.id!r} but is registered as "
                f"{extension_id!r}; the entry-point name must equal the id"
            )
        if info.api_version > hookspecs.API_VERSION:
            return (
                f"needs hook API version {info.api_version}, this sandboxer-core "
                f"offers {hookspecs.API_VERSION}; upgrade sandboxer-core"
            )
        self._infos[extension_id] = info
        return None

    def _implemented_hooks(self, plugin: object) -> set[str]:
        names = set()
        for attribute in dir(plugin):
            if not attribute.startswith("sandboxer_"):
                continue
            value = getattr(plugin, attribute, None)
            if self._pm.parse_hookimpl_opts(plugin, attribute) is not None or hasattr(
                value, f"{hookspecs.PROJECT_NAME}_impl"
            ):
                names.add(attribute)
        return names

    def _report_failure(self, name: str, distribution: str | None, error: str) -> None:
        logger.warning("extension %s not loaded: %s", name, error)
        self._reports[name] = ExtensionReport(
            id=name,
            distribution=distribution,
            version=_distribution_version(distribution),
            status="failed",
            error=error,
        )

    def _drop(self, name: str) -> None:
        plugin = self._extensions.pop(name, None)
        self._hooks.pop(name, None)
        if plugin is not None:
            self._pm.unregister(plugin)

    # -- questions ---------------------------------------------------------

    def reports(self) -> list[ExtensionReport]:
        """Every discovered extension, loaded or failed, sorted by id."""
        return [self._reports[name] for name in sorted(self._reports)]

    def extension_ids(self) -> list[str]:
        return sorted(self._extensions)

    def info(self, extension_id: str) -> ExtensionInfo:
        self._require(extension_id)
        return self._infos[extension_id]

    def implements(self, extension_id: str, hook_name: str) -> bool:
        self._require(extension_id)
        return hook_name in self._hooks[extension_id]

    def _require(self, extension_id: str) -> object:
        plugin = self._extensions.get(extension_id)
        if plugin is not None:
            return plugin
        report = self._reports.get(extension_id)
        if report is not None and report.error:
            raise ExtensionUnavailableError(
                f"extension {extension_id!r} failed to load: {report.error}",
                extension=extension_id,
            )
        raise ExtensionUnavailableError(
            f"extension {extension_id!r} is not installed; `sandboxer extensions "
            "list` shows the installed ones",
            extension=extension_id,
        )

    # -- dispatch ----------------------------------------------------------

    def _call_one(self, extension_id: str, hook_name: str, **kwargs: Any) -> Any:
        plugin = self._extensions.get(extension_id) or self._pm.get_plugin(extension_id)
        others = [
            other for name, other in self._extensions.items() if name != extension_id
        ]
        if plugin is None:
            raise ExtensionUnavailableError(f"extension {extension_id!r} is not loaded")
        caller = self._pm.subset_hook_caller(hook_name, remove_plugins=others)
        return caller(**kwargs)

    def _dispatch(self, extension_id: str, hook_name: str, **kwargs: Any) -> Any:
        """Call `hook_name` on one extension, translating foreign exceptions."""
        self._require(extension_id)
        if not self.implements(extension_id, hook_name):
            capability = OPTIONAL_HOOK_CAPABILITIES.get(hook_name, hook_name)
            raise UnsupportedError(
                f"{capability} not supported by {extension_id}",
                extension=extension_id,
                hook=hook_name,
            )
        try:
            return self._call_one(extension_id, hook_name, **kwargs)
        except SandboxerError:
            raise
        except Exception as error:
            logger.debug("%s.%s raised", extension_id, hook_name, exc_info=True)
            raise BackendError(
                f"{extension_id} failed in {hook_name}: "
                f"{type(error).__name__}: {error}",
                extension=extension_id,
            ) from error

    def validate_settings(
        self, extension_id: str, settings: dict[str, Any]
    ) -> dict[str, Any]:
        if not self.implements(extension_id, "sandboxer_validate_settings"):
            self._require(extension_id)
            return dict(settings)
        result = self._dispatch(
            extension_id, "sandboxer_validate_settings", settings=dict(settings)
        )
        return dict(result) if result is not None else dict(settings)

    def provision(self, sandbox: Sandbox) -> ProvisionResult:
        result = self._dispatch(
            sandbox.extension, "sandboxer_provision", sandbox=sandbox
        )
        return _expect(
            result, ProvisionResult, sandbox.extension, "sandboxer_provision"
        )

    def status(self, sandbox: Sandbox) -> ProvisionResult:
        result = self._dispatch(sandbox.extension, "sandboxer_status", sandbox=sandbox)
        return _expect(result, ProvisionResult, sandbox.extension, "sandboxer_status")

    def exec(
        self, sandbox: Sandbox, request: ExecRequest, streams: ExecStreams
    ) -> ExecStatus:
        result = self._dispatch(
            sandbox.extension,
            "sandboxer_exec",
            sandbox=sandbox,
            request=request,
            streams=streams,
        )
        return _expect(result, ExecStatus, sandbox.extension, "sandboxer_exec")

    def put_files(
        self, sandbox: Sandbox, destination: str, archive: IO[bytes], progress: Progress
    ) -> None:
        self._dispatch(
            sandbox.extension,
            "sandboxer_put_files",
            sandbox=sandbox,
            destination=destination,
            archive=archive,
            progress=progress,
        )

    def get_files(
        self, sandbox: Sandbox, source: str, sink: IO[bytes], progress: Progress
    ) -> None:
        self._dispatch(
            sandbox.extension,
            "sandboxer_get_files",
            sandbox=sandbox,
            source=source,
            sink=sink,
            progress=progress,
        )

    def destroy(self, sandbox: Sandbox) -> None:
        self._dispatch(sandbox.extension, "sandboxer_destroy", sandbox=sandbox)

    def supports_snapshots(self, sandbox: Sandbox) -> bool:
        if not self.implements(sandbox.extension, "sandboxer_supports_snapshots"):
            return False
        result = self._dispatch(
            sandbox.extension, "sandboxer_supports_snapshots", sandbox=sandbox
        )
        return bool(result)

    def snapshot(
        self,
        sandbox: Sandbox,
        snapshot: SnapshotRecord,
        options: SnapshotOptions,
        progress: Progress,
    ) -> SnapshotData:
        result = self._dispatch(
            sandbox.extension,
            "sandboxer_snapshot",
            sandbox=sandbox,
            snapshot=snapshot,
            options=options,
            progress=progress,
        )
        return _expect(result, SnapshotData, sandbox.extension, "sandboxer_snapshot")

    def restore_from_snapshot(
        self, sandbox: Sandbox, snapshot: SnapshotRecord, progress: Progress
    ) -> None:
        self._dispatch(
            sandbox.extension,
            "sandboxer_restore_from_snapshot",
            sandbox=sandbox,
            snapshot=snapshot,
            progress=progress,
        )

    def delete_snapshot(self, snapshot: SnapshotRecord) -> None:
        if not self.implements(snapshot.extension, "sandboxer_delete_snapshot"):
            return
        self._dispatch(
            snapshot.extension, "sandboxer_delete_snapshot", snapshot=snapshot
        )

    def list_resources(
        self, sandbox_ids: list[str] | None = None
    ) -> tuple[list[ManagedResource], dict[str, str]]:
        """Resources of every extension, and per-extension errors."""
        resources: list[ManagedResource] = []
        errors: dict[str, str] = {}
        for extension_id in self.extension_ids():
            if not self.implements(extension_id, "sandboxer_list_resources"):
                continue
            try:
                found = self._call_one(
                    extension_id, "sandboxer_list_resources", sandbox_ids=sandbox_ids
                )
            except Exception as error:
                errors[extension_id] = f"{type(error).__name__}: {error}"
                continue
            for batch in found:
                resources.extend(
                    attrs.evolve(resource, extension=extension_id)
                    for resource in batch or []
                )
        return resources, errors

    def profiles(self) -> list[Profile]:
        """Profiles shipped by every loaded plugin (failing ones are logged)."""
        profiles: list[Profile] = []
        for extension_id in self.extension_ids():
            if not self.implements(extension_id, "sandboxer_profiles"):
                continue
            try:
                batches: Iterable[list[Profile] | None] = self._call_one(
                    extension_id, "sandboxer_profiles"
                )
            except Exception:
                logger.warning(
                    "profiles of %s could not be read", extension_id, exc_info=True
                )
                continue
            for batch in batches:
                profiles.extend(batch or [])
        return profiles


def _expect(result: Any, expected: type[T], extension_id: str, hook: str) -> T:
    if not isinstance(result, expected):
        raise BackendError(
            f"{extension_id} returned {type(result).__name__} from {hook}, "
            f"expected {expected.__name__}",
            extension=extension_id,
        )
    return result


def _distribution_version(distribution: str | None) -> str | None:
    if not distribution:
        return None
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
