"""Sandbox lifecycle commands: create, list, get, exec, cp, destroy, extend, ..."""

from __future__ import annotations

import sys
from typing import IO, Any

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
)
from sandboxer.cli.transfer import cp
from sandboxer.models import ExecResult, Sandbox, to_json

SANDBOX_COLUMNS = ["id", "name", "extension", "profile", "status", "expires", "labels"]


def sandbox_row(record: Sandbox) -> list[Any]:
    return [
        record.id,
        record.name,
        record.extension,
        record.profile,
        record.status,
        record.expires_at,
        record.labels,
    ]


def show_sandbox(record: Sandbox, as_json: bool) -> None:
    if as_json:
        print_json(record)
        return
    print_fields(
        [
            ("id", record.id),
            ("name", record.name),
            ("extension", record.extension),
            ("profile", record.profile),
            ("status", record.status),
            ("created", record.created_at),
            ("expires", record.expires_at),
            ("labels", record.labels),
            ("restored_from", record.restored_from),
            ("error", record.error),
        ]
        + [(f"config.{key}", value) for key, value in sorted(record.config.items())]
    )


label_option = click.option(
    "--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label (repeatable)."
)
set_option = click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a profile setting (repeatable); VALUE is TOML or a plain string.",
)
ttl_option = click.option(
    "--ttl", type=click.IntRange(min=1), help="Seconds until `reap` destroys it."
)


@click.command()
@click.option(
    "--profile", "-p", help="Profile to create from (default: the configured default)."
)
@click.option(
    "--extension", "-e", help="Extension to use with its defaults, without a profile."
)
@click.option("--name", "-n", help="A unique name to refer to the sandbox by.")
@set_option
@label_option
@ttl_option
@json_option
@pass_state
def create(
    state: CliState,
    profile: str | None,
    extension: str | None,
    name: str | None,
    settings: tuple[str, ...],
    labels: tuple[str, ...],
    ttl: int | None,
    as_json: bool,
) -> None:
    """Create a sandbox and wait until it is ready.

    \b
    Examples:
      sandboxer create --extension ext.saas-stub
      sandboxer create -p profile.compose-checkpoint -n demo --set host=testhost
    """
    record = state.api().create(
        profile=profile,
        extension=extension,
        settings=parse_settings(settings),
        name=name,
        labels=parse_pairs(labels, "--label"),
        ttl_seconds=ttl,
    )
    show_sandbox(record, as_json)


@click.command("list")
@click.option("--extension", "-e", help="Only sandboxes of this extension.")
@click.option("--status", help="Only sandboxes in this status.")
@label_option
@click.option(
    "--all", "include_destroyed", is_flag=True, help="Include destroyed sandboxes."
)
@json_option
@pass_state
def list_command(
    state: CliState,
    extension: str | None,
    status: str | None,
    labels: tuple[str, ...],
    include_destroyed: bool,
    as_json: bool,
) -> None:
    """List sandboxes (live ones unless --all or --status)."""
    records = state.api().list(
        extension=extension,
        status=status,
        labels=parse_pairs(labels, "--label"),
        include_destroyed=include_destroyed,
    )
    if as_json:
        print_json(records)
        return
    print_table(SANDBOX_COLUMNS, [sandbox_row(record) for record in records])


@click.command()
@click.argument("sandbox")
@click.option(
    "--refresh", is_flag=True, help="Ask the backend for the current status first."
)
@json_option
@pass_state
def get(state: CliState, sandbox: str, refresh: bool, as_json: bool) -> None:
    """Show one sandbox, by id or name."""
    api = state.api()
    record = api.refresh(sandbox) if refresh else api.get(sandbox)
    show_sandbox(record, as_json)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("sandbox")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option(
    "--env", "env", multiple=True, metavar="KEY=VALUE", help="Environment variable."
)
@click.option("--workdir", "-w", help="Working directory inside the sandbox.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds before the command is killed (exit 124).",
)
@click.option(
    "--tty", "-t", is_flag=True, help="Allocate a terminal (merges stderr into stdout)."
)
@click.option(
    "--output-limit",
    type=click.IntRange(min=1),
    default=16 * 1024 * 1024,
    show_default=True,
    help="With --json: bytes kept per stream.",
)
@json_option
@pass_state
def exec_command(
    state: CliState,
    sandbox: str,
    command: tuple[str, ...],
    env: tuple[str, ...],
    workdir: str | None,
    timeout: float | None,
    tty: bool,
    output_limit: int,
    as_json: bool,
) -> None:
    """Run a command in a sandbox and exit with its exit status.

    Put `--` before the command so its options are not read as sandboxer's:

    \b
      sandboxer exec demo -- sh -c 'ls -la /workspace'
      echo hi | sandboxer exec demo -- cat

    Standard input is passed through when it is not a terminal. Output is
    streamed as it comes, stdout and stderr kept apart, byte for byte. With
    --json the output is captured (the last --output-limit bytes of each
    stream) and printed as one JSON document with truncated flags.
    """
    stdin = _stdin_stream()
    api = state.api()
    arguments: dict[str, Any] = {
        "env": parse_pairs(env, "--env"),
        "workdir": workdir,
        "timeout": timeout,
        "stdin": stdin,
        "tty": tty,
    }
    if as_json:
        result = api.exec(
            sandbox, list(command), output_limit=output_limit, **arguments
        )
        click.echo(_exec_json(result))
    else:
        stdout = sys.stdout.buffer
        stderr = sys.stderr.buffer
        result = api.exec(
            sandbox,
            list(command),
            stdout=_Flushing(stdout),
            stderr=_Flushing(stderr),
            **arguments,
        )
    if result.timed_out:
        click.echo(f"sandboxer: command timed out after {timeout:g} s", err=True)
    sys.exit(result.exit_code)


def _stdin_stream() -> IO[bytes] | None:
    stream: IO[bytes] | None = getattr(sys.stdin, "buffer", None)
    try:
        if stream is None or stream.isatty():
            return None
    except ValueError:  # stdin was closed
        return None
    return stream


class _Flushing:
    """Writes through to a binary stream and flushes, so output appears live."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.stream.write(data)
        self.stream.flush()
        return len(data)


def _exec_json(result: ExecResult) -> str:
    import base64
    import json

    document = to_json(result)
    for name in ("stdout", "stderr"):
        data: bytes = getattr(result, name)
        try:
            document[name] = data.decode("utf-8")
        except UnicodeDecodeError:
            document[name] = None
            document[f"{name}_base64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(document, indent=2, sort_keys=True)


@click.command()
@click.argument("sandbox")
@click.option(
    "--force",
    is_flag=True,
    help="Forget the record even if the backend cannot be reached.",
)
@json_option
@pass_state
def destroy(state: CliState, sandbox: str, force: bool, as_json: bool) -> None:
    """Destroy a sandbox and everything its backend created for it.

    Destroying an already destroyed sandbox succeeds. If the backend cannot
    be reached the record is kept as failed (try again later), unless --force.
    """
    record = state.api().destroy(sandbox, force=force)
    if as_json:
        print_json(record)
    else:
        click.echo(f"destroyed {record.id}")


@click.command()
@click.argument("sandbox")
@click.option(
    "--ttl",
    type=click.IntRange(min=1),
    required=True,
    help="New TTL in seconds from now.",
)
@json_option
@pass_state
def extend(state: CliState, sandbox: str, ttl: int, as_json: bool) -> None:
    """Push a sandbox's expiry to TTL seconds from now."""
    record = state.api().extend(sandbox, ttl)
    if as_json:
        print_json(record)
    else:
        click.echo(
            f"{record.id} expires {record.expires_at.isoformat(timespec='seconds')}"
        )


@click.command()
@click.argument("sandbox")
@click.argument("changes", nargs=-1, required=True, metavar="KEY=VALUE|KEY-...")
@json_option
@pass_state
def label(
    state: CliState, sandbox: str, changes: tuple[str, ...], as_json: bool
) -> None:
    """Set labels (KEY=VALUE) or remove them (KEY-) on a sandbox."""
    removals = [
        change[:-1] for change in changes if change.endswith("-") and "=" not in change
    ]
    additions = parse_pairs(
        [c for c in changes if not (c.endswith("-") and "=" not in c)], "label"
    )
    record = state.api().label(sandbox, additions, removals)
    show_sandbox(record, as_json) if as_json else click.echo(
        f"{record.id} labels: {record.labels}"
    )


@click.command()
@click.option("--dry-run", is_flag=True, help="Only list what would be destroyed.")
@click.option(
    "--orphans",
    is_flag=True,
    help="Also remove backend resources whose sandbox has no live record.",
)
@json_option
@pass_state
def reap(state: CliState, dry_run: bool, orphans: bool, as_json: bool) -> None:
    """Clean up what crashes and expiry leave behind.

    Destroys expired sandboxes and ones stuck provisioning (a killed
    `create`), marks snapshots stuck pending (a killed `snapshot`) failed and
    removes their partial data, and with --orphans removes labelled backend
    resources that no live sandbox owns. An unreadable store is an error,
    never "nothing to do".
    """
    api = state.api()
    records = api.reap(dry_run=dry_run)
    stuck_snapshots = api.reap_snapshots(dry_run=dry_run)
    found: list[Any] = []
    errors: dict[str, str] = {}
    if orphans:
        found, errors = api.orphans(remove=not dry_run)
    if as_json:
        print_json(
            {
                "sandboxes": records,
                "snapshots": stuck_snapshots,
                "orphans": found,
                "errors": errors,
                "dry_run": dry_run,
            }
        )
        return
    verb = "would destroy" if dry_run else "destroyed"
    for record in records:
        click.echo(f"{verb} {record.id} ({record.status.value})")
    for snapshot in stuck_snapshots:
        click.echo(f"{verb} interrupted snapshot {snapshot.id}")
    for resource in found:
        click.echo(
            f"{'orphan' if dry_run else 'removed orphan'} {resource.kind} "
            f"{resource.id} of {resource.sandbox_id} "
            f"on {resource.host or '-'}"
        )
    for extension, error in errors.items():
        click.echo(f"sandboxer: warning: {extension}: {error}", err=True)
    if not records and not found and not stuck_snapshots:
        click.echo("nothing to reap")


COMMANDS = [create, list_command, get, exec_command, cp, destroy, extend, label, reap]
exec_command.name = "exec"
