"""Fixtures shared by the core's tests.

Every test runs with its own data directory and config file, and with only
the saas-stub extension loaded from entry points, so whatever else happens to
be installed cannot leak in. End-to-end tests (tests/e2e) widen this.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sandboxer.manager import SandboxManager
from sandboxer.plugins import PluginHost
from sandboxer.stores import JsonSandboxStore, JsonSnapshotStore
from sandboxer_saas_stub.extension import SaasStubExtension


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "sandboxer-home"
    monkeypatch.setenv("SANDBOXER_HOME", str(home))
    monkeypatch.setenv("SANDBOXER_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("SANDBOXER_PLUGINS", "ext.saas-stub")
    for variable in ("SANDBOXER_URL", "SANDBOXER_TOKEN", "SANDBOXER_SAAS_STUB_FAIL_ON"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture
def data_dir(isolated_environment: Path) -> Path:
    return isolated_environment


@pytest.fixture
def plugin_host() -> PluginHost:
    """A plugin host with only the saas-stub registered (no entry points)."""
    host = PluginHost()
    host.register(
        SaasStubExtension(), "ext.saas-stub", distribution="sandboxer-ext-saas-stub"
    )
    return host


@pytest.fixture
def manager(plugin_host: PluginHost, data_dir: Path) -> SandboxManager:
    return SandboxManager(
        plugin_host,
        JsonSandboxStore(data_dir),
        JsonSnapshotStore(data_dir),
        ready_timeout=5.0,
        poll_interval=0.01,
    )


@pytest.fixture
def runner() -> Iterator[CliRunner]:
    yield CliRunner()
