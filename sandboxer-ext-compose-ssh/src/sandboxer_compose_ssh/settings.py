"""The settings of an ext.compose-ssh sandbox, checked and normalised.

A profile's `[settings]` table merged with the user's `--set key=value`
overrides arrive here. Values given on the command line may be strings
("2", "512m"); they are converted. Every error names the key
("settings.memory: ..."). The normalised dict is what the sandbox record
stores, and `SandboxSettings.from_config` reads it back.

    host       name of a configured host (default: default_host, or local)
    image      image reference (default sandboxer/base:latest)
    command    the container's main command, an argv list (default: idle)
    env        environment variables, a table of strings
    workspace  where the workspace volume is mounted (default /workspace)
    workdir    working directory of the container and of exec (default:
               the workspace)
    cpus       CPU limit, a positive number (default: none)
    memory     memory limit in bytes, or with a unit: "512m", "2g" (default:
               none)
    user       user (and group) the container runs as, "1000:1000" or a name
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sandboxer.errors import InvalidInputError
from sandboxer_compose_ssh.hosts import pick_host

DEFAULT_IMAGE = "sandboxer/base:latest"
DEFAULT_WORKSPACE = "/workspace"
# Keeps the container alive with busybox and coreutils alike; init: true
# makes it stop at once.
IDLE_COMMAND = ("tail", "-f", "/dev/null")
# Docker refuses memory limits below 6 MiB.
MINIMUM_MEMORY = 6 * 1024 * 1024
MAXIMUM_CPUS = 1024
# Docker schedules CPU in hundredths; anything finer is rounded to nothing.
MINIMUM_CPUS = 0.01
# Far above any machine, yet inside the 64-bit number Docker stores.
MAXIMUM_MEMORY = 2**50

ENV_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IMAGE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$")
USER_PATTERN = re.compile(
    r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"
)
MEMORY_PATTERN = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$", re.IGNORECASE)
MEMORY_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

KNOWN_KEYS = (
    "host",
    "image",
    "command",
    "env",
    "workspace",
    "workdir",
    "cpus",
    "memory",
    "user",
)


@dataclass(frozen=True)
class SandboxSettings:
    """Validated settings; `to_config()` gives the dict stored in the record."""

    host: str
    image: str = DEFAULT_IMAGE
    command: tuple[str, ...] = IDLE_COMMAND
    env: dict[str, str] = field(default_factory=dict)
    workspace: str = DEFAULT_WORKSPACE
    workdir: str = DEFAULT_WORKSPACE
    cpus: float | None = None
    memory: int | None = None
    user: str | None = None

    def to_config(self) -> dict[str, Any]:
        """The JSON-ready dict the manager stores as the sandbox's config."""
        config: dict[str, Any] = {
            "host": self.host,
            "image": self.image,
            "command": list(self.command),
            "env": dict(self.env),
            "workspace": self.workspace,
            "workdir": self.workdir,
        }
        for key in ("cpus", "memory", "user"):
            value = getattr(self, key)
            if value is not None:
                config[key] = value
        return config

    @classmethod
    def from_config(
        cls, settings: Mapping[str, Any], config: Mapping[str, Any]
    ) -> SandboxSettings:
        """Parse (and check again) settings from a record or a profile."""
        return parse_settings(settings, config)


def validate_settings(
    settings: Mapping[str, Any], config: Mapping[str, Any]
) -> dict[str, Any]:
    """The `sandboxer_validate_settings` hook's work: check, fill defaults."""
    return parse_settings(settings, config).to_config()


def parse_settings(
    settings: Mapping[str, Any], config: Mapping[str, Any]
) -> SandboxSettings:
    """Check every key of `settings`; `config` is the user's config file."""
    unknown = sorted(set(settings) - set(KNOWN_KEYS))
    if unknown:
        raise _invalid(unknown[0], f"unknown setting; known: {', '.join(KNOWN_KEYS)}")

    host_name = settings.get("host")
    if host_name is not None and (not isinstance(host_name, str) or not host_name):
        raise _invalid("host", "must be the name of a configured host")
    host = pick_host(config, host_name).name

    workspace = _absolute_path(settings, "workspace", DEFAULT_WORKSPACE)
    if workspace == "/":
        raise _invalid("workspace", "must not be / itself")
    return SandboxSettings(
        host=host,
        image=_image(settings.get("image", DEFAULT_IMAGE)),
        command=_command(settings.get("command", list(IDLE_COMMAND))),
        env=_env(settings.get("env", {})),
        workspace=workspace,
        workdir=_absolute_path(settings, "workdir", workspace),
        cpus=_cpus(settings.get("cpus")),
        memory=_memory(settings.get("memory")),
        user=_user(settings.get("user")),
    )


def check_env_key(key: object, where: str) -> str:
    """Return `key` if it is a valid environment variable name, else raise."""
    if not isinstance(key, str) or not ENV_KEY_PATTERN.match(key):
        raise InvalidInputError(
            f"{where}: invalid environment variable name {key!r}; use letters, "
            "digits and '_', not starting with a digit",
            field=where,
        )
    return key


def _image(value: object) -> str:
    if not isinstance(value, str) or not IMAGE_PATTERN.match(value):
        raise _invalid(
            "image", f"{value!r} is not an image reference such as 'debian:12'"
        )
    return value


def _command(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(part, str) and part for part in value)
    ):
        raise _invalid(
            "command",
            'must be a non-empty list of non-empty strings, e.g. ["sleep", "infinity"]',
        )
    if any("\0" in part for part in value):
        raise _invalid("command", "must not contain NUL characters")
    return tuple(value)


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise _invalid("env", 'must be a table of NAME = "value" strings')
    env: dict[str, str] = {}
    for key, item in value.items():
        check_env_key(key, "settings.env")
        if not isinstance(item, str):
            raise _invalid(f"env.{key}", "must be a string")
        if "\0" in item:
            raise _invalid(f"env.{key}", "must not contain NUL characters")
        env[key] = item
    return env


def _absolute_path(settings: Mapping[str, Any], key: str, default: str) -> str:
    value = settings.get(key, default)
    if not isinstance(value, str) or not value.startswith("/"):
        raise _invalid(key, f"{value!r} is not an absolute path such as /workspace")
    if any(ord(char) < 32 for char in value):
        raise _invalid(key, "must not contain control characters")
    # normpath keeps a leading "//" (POSIX allows it a meaning); we do not.
    return "/" + posixpath.normpath(value).lstrip("/")


def _cpus(value: object) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is None or not MINIMUM_CPUS <= number <= MAXIMUM_CPUS:
        raise _invalid("cpus", f"{value!r} is not a number of CPUs such as 1.5")
    return number


def _memory(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        amount = value
    else:
        match = MEMORY_PATTERN.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise _invalid(
                "memory", f"{value!r} is not a size such as 536870912, '512m' or '2g'"
            )
        # Decimal, not float: a number too long for a float is still a size.
        amount = int(Decimal(match.group(1)) * MEMORY_UNITS[match.group(2).lower()])
    if amount < MINIMUM_MEMORY:
        raise _invalid("memory", f"{value!r} is below Docker's minimum of 6m")
    if amount > MAXIMUM_MEMORY:
        raise _invalid("memory", f"{value!r} is more than any host has (1024t at most)")
    return amount


def _user(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise _invalid("user", "must be a user name or uid, optionally ':group'")
    text = str(value)
    if not USER_PATTERN.match(text):
        raise _invalid("user", f"{text!r} is not a user such as '1000' or 'app:app'")
    return text


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _invalid(key: str, problem: str) -> InvalidInputError:
    return InvalidInputError(f"settings.{key}: {problem}", field=f"settings.{key}")
