"""ext.compose-ssh passes the extension contract suite, on the SSH test host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sandboxer.testing.contract import ExtensionContract
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e


class TestComposeSshContract(ExtensionContract):
    @pytest.fixture
    def extension(self) -> Iterator[Any]:
        instance = ComposeSshExtension()
        yield instance
        instance.close()

    @pytest.fixture
    def extension_id(self) -> str:
        return "ext.compose-ssh"

    @pytest.fixture
    def settings(self) -> dict[str, Any]:
        return {"host": "testhost"}

    @pytest.fixture
    def sandboxer_environment(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Path:
        """A fresh data dir per test; the e2e config (naming the test host) stays."""
        home = tmp_path / "sandboxer-home"
        monkeypatch.setenv("SANDBOXER_HOME", str(home))
        return home
