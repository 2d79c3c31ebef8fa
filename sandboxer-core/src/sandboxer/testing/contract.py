"""The extension contract suite: checks every extension must pass.

Use it from your extension's own tests::

    import pytest
    from sandboxer.testing.contract import ExtensionContract

    class TestMyExtension(ExtensionContract):
        @pytest.fixture
        def extension(self):
            return MyExtension()

        @pytest.fixture
        def extension_id(self):
            return "ext.mine"

        @pytest.fixture
        def settings(self):
            return {"region": "test"}

Every check goes through a real `SandboxManager` with your extension
registered, stores in a temporary directory, so what passes here works from
the CLI and the HTTP API too. The commands used are `sh -c ...` and `echo`,
which every Linux sandbox can run. Snapshot checks run only when the
extension declares the "snapshots" capability.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxer.errors import NotFoundError, SandboxerError
from sandboxer.hookspecs import API_VERSION
from sandboxer.manager import SandboxManager
from sandboxer.models import ExtensionInfo, SandboxStatus, SnapshotStatus
from sandboxer.plugins import PluginHost
from sandboxer.stores import JsonSandboxStore, JsonSnapshotStore


class ExtensionContract:
    """Subclass in a test module; provide `extension`, `extension_id`, `settings`."""

    @pytest.fixture
    def extension(self) -> Any:
        raise NotImplementedError("provide an `extension` fixture")

    @pytest.fixture
    def extension_id(self) -> str:
        raise NotImplementedError("provide an `extension_id` fixture")

    @pytest.fixture
    def settings(self) -> dict[str, Any]:
        return {}

    @pytest.fixture
    def contract_manager(
        self,
        extension: Any,
        extension_id: str,
        sandboxer_environment: Path,
    ) -> SandboxManager:
        host = PluginHost()
        assert host.register(extension, extension_id), host.reports()[-1].error
        return SandboxManager(
            host,
            JsonSandboxStore(sandboxer_environment),
            JsonSnapshotStore(sandboxer_environment),
            ready_timeout=120,
            poll_interval=0.05,
        )

    @pytest.fixture
    def contract_sandbox(
        self,
        contract_manager: SandboxManager,
        extension_id: str,
        settings: dict[str, Any],
    ) -> Iterator[str]:
        record = contract_manager.create(extension=extension_id, settings=settings)
        yield record.id
        contract_manager.destroy(record.id, force=True)

    def test_describes_itself_under_its_entry_point_name(
        self, contract_manager: SandboxManager, extension_id: str
    ) -> None:
        info = contract_manager.plugins.info(extension_id)
        assert isinstance(info, ExtensionInfo)
        assert info.id == extension_id
        assert info.version
        assert info.api_version <= API_VERSION

    def test_create_gives_a_ready_sandbox(
        self, contract_manager: SandboxManager, contract_sandbox: str
    ) -> None:
        record = contract_manager.get(contract_sandbox)
        assert record.status is SandboxStatus.READY
        assert contract_manager.refresh(contract_sandbox).status is SandboxStatus.READY

    def test_exec_returns_output_and_exact_exit_code(
        self, contract_manager: SandboxManager, contract_sandbox: str
    ) -> None:
        echoed = contract_manager.exec(contract_sandbox, ["echo", "contract"])
        assert echoed.exit_code == 0
        assert echoed.stdout == b"contract\n"
        failed = contract_manager.exec(contract_sandbox, ["sh", "-c", "exit 3"])
        assert failed.exit_code == 3

    def test_destroy_is_idempotent(
        self,
        contract_manager: SandboxManager,
        extension_id: str,
        settings: dict[str, Any],
    ) -> None:
        record = contract_manager.create(extension=extension_id, settings=settings)
        contract_manager.destroy(record.id)
        contract_manager.plugins.destroy(contract_manager.get(record.id))
        assert contract_manager.get(record.id).status is SandboxStatus.DESTROYED

    def test_unknown_setting_is_refused_or_ignored_without_provisioning(
        self, contract_manager: SandboxManager, extension_id: str
    ) -> None:
        try:
            contract_manager.create(
                extension=extension_id, settings={"no_such_setting_x": 1}
            )
        except SandboxerError as error:
            assert "no_such_setting_x" in error.message
            assert contract_manager.list(include_destroyed=True) == []
        else:
            pytest.skip("this extension accepts unknown settings")

    def test_get_files_of_missing_path_is_not_found(
        self, contract_manager: SandboxManager, contract_sandbox: str, extension_id: str
    ) -> None:
        if not contract_manager.plugins.implements(extension_id, "sandboxer_get_files"):
            pytest.skip("extension has no file transfer")
        import io

        with pytest.raises(NotFoundError):
            contract_manager.get_files(
                contract_sandbox, "/no/such/path/anywhere", io.BytesIO()
            )

    def test_snapshot_and_restore_give_a_new_ready_sandbox(
        self,
        contract_manager: SandboxManager,
        contract_sandbox: str,
        extension_id: str,
    ) -> None:
        if "snapshots" not in contract_manager.plugins.info(extension_id).capabilities:
            pytest.skip("extension does not declare snapshots")
        snapshot = contract_manager.snapshot(contract_sandbox)
        assert snapshot.status is SnapshotStatus.READY
        assert snapshot.sha256 and snapshot.size_bytes is not None
        restored = contract_manager.restore(snapshot.id)
        try:
            assert restored.status is SandboxStatus.READY
            assert restored.restored_from == snapshot.id
            assert contract_manager.get(contract_sandbox).status is SandboxStatus.READY
        finally:
            contract_manager.destroy(restored.id, force=True)
            contract_manager.delete_snapshot(snapshot.id)
