"""pytest plugin shipped with sandboxer-core: fixtures for extension authors."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sandboxer_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point sandboxer's data dir and config into `tmp_path`; return the data dir."""
    home = tmp_path / "sandboxer-home"
    monkeypatch.setenv("SANDBOXER_HOME", str(home))
    monkeypatch.setenv("SANDBOXER_CONFIG", str(tmp_path / "sandboxer-config.toml"))
    return home
