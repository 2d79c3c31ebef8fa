"""`sandboxer serve`: the HTTP API on uvicorn."""

from __future__ import annotations

import ipaddress
import os

import click

from sandboxer.cli.context import CliState, pass_state
from sandboxer.errors import InvalidInputError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    """True for addresses that only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: str | None) -> str | None:
    """The bearer token from --token-file or SANDBOXER_SERVE_TOKEN, if any."""
    if token_file:
        return read_token_file(token_file)
    return os.environ.get("SANDBOXER_SERVE_TOKEN") or None


def read_token_file(path: str) -> str:
    """The token in a file, stripped; an empty or non-text file is refused."""
    try:
        with open(path, encoding="utf-8") as file:
            token = file.read().strip()
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"cannot read token file {path}: {error}") from None
    if not token or any(not character.isprintable() for character in token):
        raise InvalidInputError(
            f"token file {path} must hold one line of printable text"
        )
    return token


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8787, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True),
    help="File with the bearer token clients must send (or put the token itself "
    "in SANDBOXER_SERVE_TOKEN).",
)
@pass_state
def serve(state: CliState, host: str, port: int, token_file: str | None) -> None:
    """Serve the sandboxer HTTP API (see docs/http-api.md).

    Every route but /v1/health needs `Authorization: Bearer TOKEN` when a
    token is set. Binding an address other than loopback without a token is
    refused.
    """
    token = read_token(token_file)
    if token is None and not is_loopback(host):
        raise InvalidInputError(
            f"refusing to serve on {host} without a token: pass --token-file "
            "(or set SANDBOXER_SERVE_TOKEN), or bind 127.0.0.1"
        )

    import uvicorn

    from sandboxer.http.app import create_app
    from sandboxer.manager import SandboxManager

    # Without a token (loopback only), answer only loopback host names, so a
    # web page cannot reach this server by rebinding its own name to 127.0.0.1.
    app = create_app(
        SandboxManager.from_environment(),
        token=token,
        allowed_hosts=None if token else LOOPBACK_NAMES,
    )
    click.echo(f"sandboxer: serving on http://{host}:{port}/v1", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


COMMANDS = [serve]
