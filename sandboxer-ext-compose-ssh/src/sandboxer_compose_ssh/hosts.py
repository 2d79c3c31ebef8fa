"""The Docker hosts a sandbox can live on: the `[hosts.NAME]` config tables.

A host is reached over SSH, or is this machine::

    default_host = "build-box"

    [hosts.build-box]
    url = "ssh://deploy@build-box.example.org:2222"   # user and port optional
    identity_file = "~/.ssh/id_ed25519"   # default: ssh agent and ~/.ssh keys
    known_hosts = "~/.ssh/known_hosts"    # the default; keys are never added
    docker_command = "docker"             # name or full path on that host
    connect_timeout = 10                  # seconds
    max_sessions = 10                     # the server's MaxSessions
    tool_image = "sandboxer/base:latest"  # helper image for snapshots

The host `local` (Docker on this machine, run directly, no SSH) always
exists; a `[hosts.local]` table may set its `docker_command` and
`tool_image` only. The settings key `host` picks a host; without it
`default_host` is used, or `local` when there is no `default_host`.
"""

from __future__ import annotations

import getpass
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sandboxer.config import config_path
from sandboxer.errors import ConfigError, InvalidInputError

LOCAL_HOST = "local"
HOST_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
# The image of the throwaway containers that write and unpack snapshot
# archives; it needs sh, find, cat, ls and GNU tar. Never pulled.
DEFAULT_TOOL_IMAGE = "sandboxer/base:latest"
TOOL_IMAGE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")

_SSH_KEYS = frozenset(
    {
        "url",
        "identity_file",
        "known_hosts",
        "docker_command",
        "connect_timeout",
        "max_sessions",
        "tool_image",
    }
)
_LOCAL_KEYS = frozenset({"docker_command", "tool_image"})


@dataclass(frozen=True)
class HostConfig:
    """One configured Docker host. Equal configs share one connection."""

    name: str
    hostname: str | None = None
    port: int = 22
    username: str | None = None
    identity_file: str | None = None
    known_hosts: str = DEFAULT_KNOWN_HOSTS
    docker_command: str = "docker"
    connect_timeout: float = 10.0
    max_sessions: int = 10
    tool_image: str = DEFAULT_TOOL_IMAGE

    @property
    def is_local(self) -> bool:
        """True for Docker on this machine, run without SSH."""
        return self.hostname is None

    @property
    def address(self) -> str:
        """`user@host:port` for messages, or `this machine` for local."""
        if self.hostname is None:
            return "this machine"
        return f"{self.username}@{self.hostname}:{self.port}"


def load_hosts(config: Mapping[str, Any]) -> dict[str, HostConfig]:
    """Every host of the config, plus the implicit `local`, by name."""
    tables = config.get("hosts", {})
    if not isinstance(tables, Mapping):
        raise _config_error("hosts", "must be a table of [hosts.NAME] tables")

    hosts = {LOCAL_HOST: HostConfig(name=LOCAL_HOST)}
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise _config_error(f"hosts.{name}", "must be a table")
        if not HOST_NAME_PATTERN.match(name):
            raise _config_error(
                f"hosts.{name}",
                "host names use ASCII letters, digits, '.', '_' and '-'",
            )
        hosts[name] = _parse_host(name, table)
    return hosts


def default_host_name(config: Mapping[str, Any]) -> str:
    """The host used when a sandbox's settings name none."""
    name = config.get("default_host", LOCAL_HOST)
    if not isinstance(name, str) or not name:
        raise _config_error("default_host", "must be the name of a configured host")
    return name


def pick_host(config: Mapping[str, Any], name: str | None) -> HostConfig:
    """The host called `name` (default: the default host), or InvalidInputError."""
    hosts = load_hosts(config)
    chosen = name if name is not None else default_host_name(config)
    if chosen not in hosts:
        known = ", ".join(sorted(hosts))
        raise InvalidInputError(
            f"settings.host: unknown host {chosen!r}; configured hosts: {known} "
            f"(add a [hosts.{chosen}] table to {config_path()})",
            field="settings.host",
        )
    return hosts[chosen]


def _parse_host(name: str, table: Mapping[str, Any]) -> HostConfig:
    allowed = _LOCAL_KEYS if name == LOCAL_HOST else _SSH_KEYS
    for key in table:
        if key not in allowed:
            raise _config_error(
                f"hosts.{name}.{key}",
                f"unknown key; known keys: {', '.join(sorted(allowed))}",
            )

    docker_command = _string(table, name, "docker_command", "docker")
    tool_image = _string(table, name, "tool_image", DEFAULT_TOOL_IMAGE)
    if not TOOL_IMAGE_PATTERN.match(tool_image):
        raise _config_error(
            f"hosts.{name}.tool_image",
            f"{tool_image!r} is not an image reference such as 'debian:12'",
        )
    if name == LOCAL_HOST:
        return HostConfig(
            name=name, docker_command=docker_command, tool_image=tool_image
        )

    if "url" not in table:
        raise _config_error(f"hosts.{name}.url", "missing; e.g. ssh://user@host:22")
    hostname, port, username = _parse_url(name, _string(table, name, "url", ""))
    identity_file = table.get("identity_file")
    if identity_file is not None:
        identity_file = str(
            Path(_string(table, name, "identity_file", "")).expanduser()
        )
    known_hosts = _string(table, name, "known_hosts", DEFAULT_KNOWN_HOSTS)
    return HostConfig(
        name=name,
        hostname=hostname,
        port=port,
        username=username,
        identity_file=identity_file,
        known_hosts=str(Path(known_hosts).expanduser()),
        docker_command=docker_command,
        connect_timeout=_positive_number(table, name, "connect_timeout", 10.0),
        max_sessions=_whole_number(table, name, "max_sessions", 10),
        tool_image=tool_image,
    )


def _parse_url(name: str, url: str) -> tuple[str, int, str]:
    key = f"hosts.{name}.url"
    parts = urlsplit(url)
    if parts.scheme != "ssh" or not parts.hostname:
        raise _config_error(key, f"{url!r} is not of the form ssh://user@host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise _config_error(key, f"{url!r}: only user, host and port may be given")
    try:
        port = parts.port if parts.port is not None else 22
    except ValueError as error:
        raise _config_error(key, f"{url!r}: {error}") from error
    if port == 0:
        raise _config_error(key, f"{url!r}: port 0 is not a port to connect to")
    return parts.hostname, port, parts.username or getpass.getuser()


def _string(table: Mapping[str, Any], name: str, key: str, default: str) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise _config_error(f"hosts.{name}.{key}", "must be a non-empty string")
    if any(ord(char) < 32 for char in value):
        raise _config_error(
            f"hosts.{name}.{key}", "must not contain control characters"
        )
    return value


def _positive_number(
    table: Mapping[str, Any], name: str, key: str, default: float
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise _config_error(f"hosts.{name}.{key}", "must be a positive number")
    return float(value)


def _whole_number(table: Mapping[str, Any], name: str, key: str, default: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _config_error(
            f"hosts.{name}.{key}", "must be a whole number of 1 or more"
        )
    return value


def _config_error(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{config_path()}: {key}: {problem}", key=key)
