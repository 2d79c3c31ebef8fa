"""The `sandboxer` command line.

Commands are grouped by topic in the sibling modules; this module defines
the root group, its global options and the one place where errors become a
line on stderr and an exit status (`SandboxerError.exit_code`).

Every command works against a `SandboxManager` in this process, or, with
`--url` / `SANDBOXER_URL`, against a `sandboxer serve` server through
`sandboxer.client.SandboxerClient`, which offers the same methods.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from sandboxer import __version__
from sandboxer.cli.context import CliState
from sandboxer.errors import SandboxerError

NOISY_LIBRARIES = ("invoke", "paramiko", "fabric", "httpx", "httpcore", "asyncio")


class SandboxerGroup(click.Group):
    """A click group that reports sandboxer errors as one line on stderr."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SandboxerError as error:
            click.echo(f"sandboxer: error: {error.message}", err=True)
            logging.getLogger(__name__).debug("error details", exc_info=True)
            ctx.exit(error.exit_code)
        except click.UsageError as error:
            # click prints usage errors over three lines; keep errors to one.
            where = error.ctx.command_path if error.ctx else "sandboxer"
            click.echo(
                f"sandboxer: error: {error.format_message()} (see `{where} --help`)",
                err=True,
            )
            ctx.exit(error.exit_code)
        except BrokenPipeError:
            # The reader went away (`sandboxer list | head`); that is not an error.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)


@click.group(
    cls=SandboxerGroup, context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="sandboxer")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Log state changes (-v) and backend commands (-vv).",
)
@click.option(
    "--url",
    envvar="SANDBOXER_URL",
    metavar="URL",
    help="Talk to a `sandboxer serve` server, not local stores [env: SANDBOXER_URL].",
)
@click.option(
    "--token",
    envvar="SANDBOXER_TOKEN",
    metavar="TOKEN",
    help="Bearer token for --url [env: SANDBOXER_TOKEN].",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True),
    help="Read the bearer token for --url from this file.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    verbose: int,
    url: str | None,
    token: str | None,
    token_file: str | None,
) -> None:
    """Disposable sandboxes on your own Docker hosts or hosted backends.

    Create a sandbox, run commands in it, copy files, checkpoint its workspace
    and restore it later. Sandboxes come from extensions (`sandboxer
    extensions list`) configured by profiles (`sandboxer profiles list`).

    \b
    Quick tour:
      sandboxer create --profile profile.compose-checkpoint --name demo
      sandboxer exec demo -- sh -c 'echo hello > /workspace/hi.txt'
      sandboxer snapshot demo
      sandboxer restore SNAPSHOT_ID --name demo2
      sandboxer destroy demo

    Every command accepts --json for machine-readable output. Errors are one
    line on stderr; `exec` exits with the command's own status.
    """
    if not verbose:
        # Errors reach the user as the one line below; extension warnings
        # that repeat them would only add noise (-v shows them).
        logging.basicConfig(level=logging.ERROR, format="sandboxer: %(message)s")
    else:
        logging.basicConfig(
            level=logging.DEBUG if verbose > 1 else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        # Libraries under the extensions log their own internals at DEBUG;
        # -vv is about the commands sandboxer runs, so keep those quieter.
        for library in NOISY_LIBRARIES:
            logging.getLogger(library).setLevel(logging.WARNING)
    if token_file:
        from sandboxer.cli.serve import read_token_file

        try:
            token = read_token_file(token_file)
        except SandboxerError as error:
            click.echo(f"sandboxer: error: {error.message}", err=True)
            ctx.exit(error.exit_code)
    ctx.obj = CliState(url=url, token=token)


def _register_commands() -> None:
    from sandboxer.cli import catalog, sandboxes, serve, snapshots

    for module in (catalog, sandboxes, snapshots, serve):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sandboxer")
