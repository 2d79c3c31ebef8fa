"""Where sandboxer keeps its data and reads its configuration.

Data (record stores, extension state) lives under `$SANDBOXER_HOME`, or
`$XDG_DATA_HOME/sandboxer` (default `~/.local/share/sandboxer`). The user's
configuration is one TOML file, `$SANDBOXER_CONFIG`, or
`$XDG_CONFIG_HOME/sandboxer/config.toml` (default `~/.config/...`). Its
top-level tables belong to whoever reads them: `[profiles.NAME]` to the core,
`[hosts.NAME]` to ext.compose-ssh, and so on. A missing file is an empty
configuration; an unreadable one is a `ConfigError` naming the file.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from sandboxer.errors import ConfigError


def data_dir() -> Path:
    """The directory holding sandboxer's stores (not created here)."""
    explicit = os.environ.get("SANDBOXER_HOME")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base).expanduser() / "sandboxer"


def config_path() -> Path:
    """The path of the user's configuration file (which may not exist)."""
    explicit = os.environ.get("SANDBOXER_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base).expanduser() / "sandboxer" / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """Parse the configuration file; a missing file gives an empty dict."""
    path = path or config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from error
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
