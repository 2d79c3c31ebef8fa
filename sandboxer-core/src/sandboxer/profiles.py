"""Profiles: named, versioned recipes for sandboxes, and where they come from.

Three sources, later ones overriding earlier ones by name:

1. the built-in set shipped inside the sandboxer-core wheel (the repository's
   `profiles/*.toml`, packaged as `sandboxer_builtin_profiles`);
2. profiles returned by extensions' `sandboxer_profiles` hook;
3. the user's own: `*.toml` files in `<config dir>/profiles/` and
   `[profiles."profile.NAME"]` tables in the config file.

A profile file holds the fields of `sandboxer.models.Profile`; `name` may be
omitted in a config table (the table's key is used). An invalid definition
is a `ConfigError` naming the file and the key path.
"""

from __future__ import annotations

import importlib.resources
import logging
import tomllib
from collections.abc import Callable
from typing import Any

import cattrs

from sandboxer.config import config_path, load_config
from sandboxer.errors import ConfigError, NotFoundError
from sandboxer.models import Profile, from_json

logger = logging.getLogger(__name__)

BUILTIN_PACKAGE = "sandboxer_builtin_profiles"


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    """Build a Profile from TOML data, or raise ConfigError naming the problem."""
    data = {**data, "source": source}
    try:
        profile = from_json(data, Profile)
    except cattrs.BaseValidationError as error:
        details = "; ".join(cattrs.transform_error(error, path="profile"))
        raise ConfigError(f"invalid profile in {source}: {details}") from error
    if not profile.name.startswith("profile."):
        raise ConfigError(
            f"invalid profile in {source}: name {profile.name!r} "
            "must start with 'profile.'"
        )
    return profile


def builtin_profiles() -> list[Profile]:
    """The profiles shipped inside the sandboxer-core distribution."""
    try:
        directory = importlib.resources.files(BUILTIN_PACKAGE)
    except ModuleNotFoundError:
        logger.warning("built-in profiles are missing from this installation")
        return []
    profiles = []
    for entry in sorted(directory.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text(encoding="utf-8"))
            profiles.append(parse_profile(data, f"builtin:{entry.name}"))
    return profiles


def user_profiles(config: dict[str, Any] | None = None) -> list[Profile]:
    """Profiles from the user's config directory and config file."""
    path = config_path()
    profiles = []
    directory = path.parent / "profiles"
    if directory.is_dir():
        for file in sorted(directory.glob("*.toml")):
            try:
                data = tomllib.loads(file.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, OSError) as error:
                raise ConfigError(
                    f"cannot read profile file {file}: {error}"
                ) from error
            profiles.append(parse_profile(data, str(file)))
    tables = (config if config is not None else load_config()).get("profiles", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{path}: [profiles] must be a table of profile tables")
    for name, table in tables.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: profiles.{name} must be a table")
        profiles.append(
            parse_profile({"name": name, **table}, f"{path}#profiles.{name}")
        )
    return profiles


class ProfileCatalog:
    """Every known profile, resolved lazily and cached for the process."""

    def __init__(self, extension_profiles: Callable[[], list[Profile]]) -> None:
        self._extension_profiles = extension_profiles
        self._profiles: dict[str, Profile] | None = None

    def all(self) -> list[Profile]:
        return [self._load()[name] for name in sorted(self._load())]

    def get(self, name: str) -> Profile:
        profiles = self._load()
        if name not in profiles and f"profile.{name}" in profiles:
            name = f"profile.{name}"
        try:
            return profiles[name]
        except KeyError:
            raise NotFoundError(
                f"profile {name!r} not found; `sandboxer profiles list` shows "
                "the available profiles",
                profile=name,
            ) from None

    def _load(self) -> dict[str, Profile]:
        if self._profiles is None:
            merged: dict[str, Profile] = {}
            for source in (builtin_profiles, self._extension_profiles, user_profiles):
                for profile in source():
                    merged[profile.name] = profile
            self._profiles = merged
        return self._profiles
