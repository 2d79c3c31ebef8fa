"""Checkpoint commands: `snapshot`, `restore` and `snapshots list|get|delete`."""

from __future__ import annotations

import click

from sandboxer.cli.context import (
    CliState,
    json_option,
    parse_pairs,
    parse_settings,
    pass_state,
    print_fields,
    print_json,
    print_table,
    progress_reporter,
)
from sandboxer.cli.sandboxes import label_option, set_option, show_sandbox, ttl_option
from sandboxer.models import SnapshotRecord


def show_snapshot(record: SnapshotRecord, as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    print_fields(
        [
            ("id", record.id),
            ("sandbox", record.sandbox_id),
            ("extension", record.extension),
            ("profile", record.profile),
            ("status", record.status),
            ("created", record.created_at),
            ("size_bytes", record.size_bytes),
            ("sha256", record.sha256),
            ("location", record.location),
            ("labels", record.labels),
            ("error", record.error),
        ]
    )


@click.command()
@click.argument("sandbox")
@label_option
@click.option(
    "--pause/--no-pause",
    default=None,
    help="Freeze the sandbox while archiving (default: the profile's policy).",
)
@json_option
@pass_state
def snapshot(
    state: CliState,
    sandbox: str,
    labels: tuple[str, ...],
    pause: bool | None,
    as_json: bool,
) -> None:
    """Checkpoint a sandbox's workspace.

    The record is `pending` while the archive is written and `ready` once
    it is complete with its size and sha256; a failure leaves it `failed`
    with the error and no partial data. The sandbox keeps running.
    """
    record = state.api().snapshot(
        sandbox,
        labels=parse_pairs(labels, "--label"),
        pause=pause,
        progress=progress_reporter("snapshot"),
    )
    show_snapshot(record, as_json)


@click.command()
@click.argument("snapshot_id", metavar="SNAPSHOT")
@click.option("--name", "-n", help="Name of the new sandbox.")
@click.option(
    "--profile", "-p", help="Profile for the new sandbox (default: the snapshot's)."
)
@set_option
@label_option
@ttl_option
@json_option
@pass_state
def restore(
    state: CliState,
    snapshot_id: str,
    name: str | None,
    profile: str | None,
    settings: tuple[str, ...],
    labels: tuple[str, ...],
    ttl: int | None,
    as_json: bool,
) -> None:
    """Create a NEW sandbox from a snapshot.

    The new sandbox gets the snapshot's settings (or --profile's), with
    --set overrides, and `restored_from` set. It is reported ready only after
    the workspace has been loaded. The source sandbox is not touched and
    may already be destroyed.
    """
    record = state.api().restore(
        snapshot_id,
        name=name,
        profile=profile,
        settings=parse_settings(settings),
        labels=parse_pairs(labels, "--label"),
        ttl_seconds=ttl,
        progress=progress_reporter("restore"),
    )
    show_sandbox(record, as_json)


@click.group()
def snapshots() -> None:
    """List, inspect and delete snapshots."""


@snapshots.command("list")
@click.option("--sandbox", "-s", help="Only snapshots of this sandbox id.")
@click.option("--extension", "-e", help="Only snapshots of this extension.")
@click.option(
    "--status", help="Only snapshots in this status (pending, ready, failed, deleted)."
)
@label_option
@click.option(
    "--all", "include_deleted", is_flag=True, help="Include deleted snapshots."
)
@json_option
@pass_state
def snapshots_list(
    state: CliState,
    sandbox: str | None,
    extension: str | None,
    status: str | None,
    labels: tuple[str, ...],
    include_deleted: bool,
    as_json: bool,
) -> None:
    """List snapshots, oldest first."""
    records = state.api().list_snapshots(
        sandbox=sandbox,
        extension=extension,
        status=status,
        labels=parse_pairs(labels, "--label"),
        include_deleted=include_deleted,
    )
    if as_json:
        print_json(records)
        return
    print_table(
        ["id", "sandbox", "extension", "status", "created", "size", "sha256"],
        [
            [
                r.id,
                r.sandbox_id,
                r.extension,
                r.status,
                r.created_at,
                r.size_bytes,
                r.sha256[:12] if r.sha256 else None,
            ]
            for r in records
        ],
    )


@snapshots.command("get")
@click.argument("snapshot_id", metavar="SNAPSHOT")
@json_option
@pass_state
def snapshots_get(state: CliState, snapshot_id: str, as_json: bool) -> None:
    """Show one snapshot."""
    show_snapshot(state.api().get_snapshot(snapshot_id), as_json)


@snapshots.command("delete")
@click.argument("snapshot_id", metavar="SNAPSHOT")
@json_option
@pass_state
def snapshots_delete(state: CliState, snapshot_id: str, as_json: bool) -> None:
    """Delete a snapshot's data; the record stays, marked deleted."""
    record = state.api().delete_snapshot(snapshot_id)
    if as_json:
        print_json(record)
    else:
        click.echo(f"deleted {record.id}")


COMMANDS = [snapshot, restore, snapshots]
