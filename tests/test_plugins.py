"""Extension discovery, validation, isolation of broken ones, and routing."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from extensions_for_tests import CallLog, RecordingExtension
from sandboxer import plugins
from sandboxer.errors import ExtensionUnavailableError, UnsupportedError
from sandboxer.manager import SandboxManager
from sandboxer.plugins import PluginHost
from sandboxer.stores import JsonSandboxStore, JsonSnapshotStore


def fake_entry_point(name: str, load: Any, distribution: str = "dist") -> Any:
    return SimpleNamespace(
        name=name, load=load, dist=SimpleNamespace(name=distribution)
    )


@pytest.fixture
def two_extensions(
    data_dir: Path,
) -> tuple[SandboxManager, RecordingExtension, RecordingExtension]:
    host = PluginHost()
    alpha, beta = RecordingExtension("ext.alpha"), RecordingExtension("ext.beta")
    host.register(alpha, "ext.alpha")
    host.register(beta, "ext.beta")
    manager = SandboxManager(
        host, JsonSandboxStore(data_dir), JsonSnapshotStore(data_dir)
    )
    return manager, alpha, beta


def test_each_operation_reaches_only_the_owning_extension(two_extensions: Any) -> None:
    manager, alpha, beta = two_extensions
    on_alpha = manager.create(extension="ext.alpha")
    on_beta = manager.create(extension="ext.beta")

    result = manager.exec(on_beta.id, ["hello"])
    manager.destroy(on_alpha.id)

    assert result.stdout == b"ext.beta:hello"
    assert {sandbox for _, sandbox in alpha.calls} == {on_alpha.id}
    assert {sandbox for _, sandbox in beta.calls} == {on_beta.id}
    assert ("destroy", on_alpha.id) in alpha.calls
    assert manager.get(on_beta.id).provider_data == {"owner": "ext.beta"}


def test_observer_wrappers_see_calls_for_every_extension(two_extensions: Any) -> None:
    manager, _, _ = two_extensions
    log = CallLog()
    manager.plugins.register_observer(log, "audit")

    manager.exec(manager.create(extension="ext.alpha").id, ["a"])
    manager.exec(manager.create(extension="ext.beta").id, ["b"])

    assert log.seen == ["ext.alpha", "ext.beta"]


def test_record_of_uninstalled_extension_gives_clear_error_and_is_untouched(
    two_extensions: Any, data_dir: Path
) -> None:
    manager, alpha, _ = two_extensions
    record = manager.create(extension="ext.alpha")
    without_alpha = PluginHost()
    without_alpha.register(RecordingExtension("ext.beta"), "ext.beta")
    other = SandboxManager(
        without_alpha, JsonSandboxStore(data_dir), JsonSnapshotStore(data_dir)
    )
    before = (data_dir / "sandboxes.json").read_bytes()

    with pytest.raises(ExtensionUnavailableError, match="'ext.alpha' is not installed"):
        other.exec(record.id, ["x"])

    assert (data_dir / "sandboxes.json").read_bytes() == before
    assert alpha.calls.count(("exec", record.id)) == 0


def test_destroy_of_orphaned_record_keeps_it_failed_not_destroyed(
    two_extensions: Any, data_dir: Path
) -> None:
    manager, _, _ = two_extensions
    record = manager.create(extension="ext.alpha")
    other = SandboxManager(
        PluginHost(), JsonSandboxStore(data_dir), JsonSnapshotStore(data_dir)
    )

    with pytest.raises(ExtensionUnavailableError):
        other.destroy(record.id)

    assert other.get(record.id).status.value == "failed"
    assert other.destroy(record.id, force=True).status.value == "destroyed"


def test_missing_optional_hook_is_reported_as_unsupported(two_extensions: Any) -> None:
    manager, _, _ = two_extensions
    record = manager.create(extension="ext.alpha")

    with pytest.raises(UnsupportedError, match="files not supported by ext.alpha"):
        manager.put_files(record.id, "/workspace", None)  # type: ignore[arg-type]
    with pytest.raises(UnsupportedError, match="snapshots not supported"):
        manager.snapshot(record.id)
    assert manager.list_snapshots() == []


BROKEN_MODULES = {
    "broken_import": "raise ImportError('libfoo.so.1: cannot open shared object file')",
    "misspelt_hook": """
        from sandboxer.hookspecs import hookimpl
        @hookimpl
        def sandboxer_describe():
            from sandboxer.models import ExtensionInfo
            return ExtensionInfo(id="ext.misspelt", version="1")
        @hookimpl
        def sandboxer_provison(sandbox):
            pass
    """,
    "wrong_arguments": """
        from sandboxer.hookspecs import hookimpl
        @hookimpl
        def sandboxer_exec(sandbox, command_line):
            pass
    """,
    "missing_required": """
        from sandboxer.hookspecs import hookimpl
        from sandboxer.models import ExtensionInfo
        @hookimpl
        def sandboxer_describe():
            return ExtensionInfo(id="ext.incomplete", version="1")
    """,
}


@pytest.fixture
def broken_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    package = tmp_path / "broken_plugins"
    package.mkdir()
    for module, source in BROKEN_MODULES.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(package))
    for module in BROKEN_MODULES:
        sys.modules.pop(module, None)
    from sandboxer_saas_stub.extension import extension as stub

    entry_points = [
        fake_entry_point("ext.saas-stub", lambda: stub, "sandboxer-ext-saas-stub"),
        fake_entry_point("ext.broken", lambda: __import__("broken_import")),
        fake_entry_point("ext.misspelt", lambda: __import__("misspelt_hook")),
        fake_entry_point("ext.wrong-args", lambda: __import__("wrong_arguments")),
        fake_entry_point("ext.incomplete", lambda: __import__("missing_required")),
    ]
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: entry_points)
    monkeypatch.delenv("SANDBOXER_PLUGINS")
    return entry_points


def test_broken_extensions_are_reported_and_the_rest_keeps_working(
    broken_entry_points: list[Any], data_dir: Path
) -> None:
    host = PluginHost.from_entry_points()
    reports = {report.id: report for report in host.reports()}

    assert reports["ext.saas-stub"].status == "loaded"
    assert "ImportError: libfoo.so.1" in (reports["ext.broken"].error or "")
    assert "sandboxer_provison" in (reports["ext.misspelt"].error or "")
    assert "command_line" in (reports["ext.wrong-args"].error or "")
    assert "sandboxer_provision" in (reports["ext.incomplete"].error or "")
    assert host.extension_ids() == ["ext.saas-stub"]

    manager = SandboxManager(
        host, JsonSandboxStore(data_dir), JsonSnapshotStore(data_dir)
    )
    record = manager.create(extension="ext.saas-stub")
    assert (
        manager.exec(record.id, ["echo", "still", "working"]).stdout
        == b"still working\n"
    )
    with pytest.raises(ExtensionUnavailableError, match="ext.broken' failed to load"):
        manager.create(extension="ext.broken")


def test_two_distributions_with_the_same_extension_id_are_both_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = RecordingExtension("ext.twin")
    entry_points = [
        fake_entry_point("ext.twin", lambda: first, "sandboxer-ext-twin"),
        fake_entry_point("ext.twin", lambda: first, "sandboxer-ext-twin-fork"),
    ]
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: entry_points)
    monkeypatch.delenv("SANDBOXER_PLUGINS")

    host = PluginHost.from_entry_points()

    (report,) = host.reports()
    assert report.status == "failed"
    assert "sandboxer-ext-twin" in (report.error or "")
    assert "sandboxer-ext-twin-fork" in (report.error or "")
    assert host.extension_ids() == []


def test_allow_and_block_lists_choose_what_loads(
    broken_entry_points: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOXER_PLUGINS", "ext.saas-stub,ext.broken")
    monkeypatch.setenv("SANDBOXER_BLOCK_PLUGINS", "ext.broken")

    host = PluginHost.from_entry_points()

    assert [report.id for report in host.reports()] == ["ext.saas-stub"]


def test_extension_whose_describe_disagrees_with_its_entry_point_is_refused() -> None:
    host = PluginHost()

    assert host.register(RecordingExtension("ext.real-name"), "ext.other-name") is False
    (report,) = host.reports()
    assert "registered as 'ext.other-name'" in (report.error or "")


class MisconfiguredExtension(RecordingExtension):
    """Destroy fails the way a host removed from the config file makes it."""

    def sandboxer_destroy(self, sandbox: Any) -> None:
        from sandboxer.errors import ConfigError

        raise ConfigError(f"sandbox {sandbox.id} lives on host 'gone', not configured")


def test_any_destroy_failure_leaves_the_record_failed_not_destroying(
    data_dir: Path,
) -> None:
    host = PluginHost()
    host.register(MisconfiguredExtension("ext.gone"), "ext.gone")
    manager = SandboxManager(
        host, JsonSandboxStore(data_dir), JsonSnapshotStore(data_dir)
    )
    record = manager.create(extension="ext.gone")

    with pytest.raises(Exception, match="not configured"):
        manager.destroy(record.id)

    assert manager.get(record.id).status.value == "failed"
    assert manager.destroy(record.id, force=True).status.value == "destroyed"
