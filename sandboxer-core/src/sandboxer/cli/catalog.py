"""`sandboxer extensions ...` and `sandboxer profiles ...`: what is installed."""

from __future__ import annotations

import click

from sandboxer.cli.context import (
    CliState,
    json_option,
    pass_state,
    print_fields,
    print_json,
    print_table,
)


@click.group()
def extensions() -> None:
    """Installed extensions (sandbox backends)."""


@extensions.command("list")
@json_option
@pass_state
def extensions_list(state: CliState, as_json: bool) -> None:
    """List every discovered extension, including ones that failed to load.

    A failed extension is shown with its error; every other command keeps
    working without it. SANDBOXER_PLUGINS / SANDBOXER_BLOCK_PLUGINS choose
    which entry points are loaded.
    """
    reports = state.api().extensions()
    if as_json:
        print_json(reports)
        return
    print_table(
        ["id", "version", "status", "capabilities", "distribution", "error"],
        [
            [r.id, r.version, r.status, r.capabilities, r.distribution, r.error]
            for r in reports
        ],
    )


@click.group()
def profiles() -> None:
    """Profiles: named recipes for sandboxes."""


@profiles.command("list")
@json_option
@pass_state
def profiles_list(state: CliState, as_json: bool) -> None:
    """List the built-in, extension and user profiles."""
    found = state.api().list_profiles()
    if as_json:
        print_json(found)
        return
    print_table(
        ["name", "version", "extension", "source", "description"],
        [[p.name, p.version, p.extension, p.source, p.description] for p in found],
    )


@profiles.command("show")
@click.argument("name")
@json_option
@pass_state
def profiles_show(state: CliState, name: str, as_json: bool) -> None:
    """Show one profile: its extension, settings, TTL, labels, snapshot policy."""
    profile = state.api().get_profile(name)
    if as_json:
        print_json(profile)
        return
    print_fields(
        [
            ("name", profile.name),
            ("version", profile.version),
            ("extension", profile.extension),
            ("description", profile.description),
            ("source", profile.source),
            ("ttl_seconds", profile.ttl_seconds),
            ("labels", profile.labels),
            (
                "snapshots",
                f"enabled={profile.snapshots.enabled} pause={profile.snapshots.pause}",
            ),
        ]
        + [
            (f"settings.{key}", value)
            for key, value in sorted(profile.settings.items())
        ]
    )


COMMANDS = [extensions, profiles]
