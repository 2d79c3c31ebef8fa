"""State shared by all CLI commands: which API to talk to, and output helpers."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import attrs
import click

from sandboxer.errors import InvalidInputError
from sandboxer.models import to_json


@attrs.define
class CliState:
    """Created by the root group; `api()` gives a manager or a remote client."""

    url: str | None = None
    token: str | None = None
    _api: Any = None

    def api(self) -> Any:
        """The `SandboxManager` (local) or `SandboxerClient` (with --url)."""
        if self._api is None:
            if self.url:
                from sandboxer.client import SandboxerClient

                self._api = SandboxerClient(self.url, token=self.token)
                click.get_current_context().call_on_close(self._api.close)
            else:
                from sandboxer.manager import SandboxManager

                self._api = SandboxManager.from_environment()
        return self._api


pass_state = click.make_pass_decorator(CliState)

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON instead of a table."
)


def print_json(value: Any) -> None:
    click.echo(json.dumps(to_json(value), indent=2, sort_keys=True))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print rows as aligned columns; `-` stands for an empty value."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [
            max(width, len(value)) for width, value in zip(widths, row, strict=True)
        ]
    click.echo(
        "  ".join(
            h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)
        ).rstrip()
    )
    for row in cells:
        click.echo(
            "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()
        )


def print_fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """Print `key: value` lines for one record."""
    width = max(len(key) for key, _ in pairs)
    for key, value in pairs:
        click.echo(f"{key.ljust(width)}  {_cell(value)}")


def _cell(value: Any) -> str:
    if value is None or value == "" or value == {}:
        return "-"
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in sorted(value.items()))
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value) or "-"
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    if hasattr(value, "value"):
        return str(value.value)
    return str(value)


def parse_pairs(values: Sequence[str], what: str) -> dict[str, str]:
    """Turn `KEY=VALUE` options into a dict, rejecting malformed ones."""
    pairs: dict[str, str] = {}
    for item in values:
        key, separator, value = item.partition("=")
        if not separator or not key:
            raise InvalidInputError(f"{what} {item!r} must look like KEY=VALUE")
        pairs[key] = value
    return pairs


def parse_settings(values: Sequence[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` options; values are TOML literals when they parse as one.

    `--set memory=512m` gives the string "512m", `--set cpus=2` the number 2,
    `--set 'command=["sleep","60"]'` a list.
    """
    import tomllib

    settings: dict[str, Any] = {}
    for key, raw in parse_pairs(values, "--set").items():
        try:
            settings[key] = tomllib.loads(f"value = {raw}")["value"]
        except tomllib.TOMLDecodeError:
            settings[key] = raw
    return settings


def progress_reporter(label: str) -> Any:
    """A Progress callback drawing a one-line counter on a terminal, else silent."""
    if not sys.stderr.isatty():
        return lambda done, total: None

    def report(done: int, total: int | None) -> None:
        shown = f"{done / 1e6:8.1f} MB"
        if total:
            shown += f" of {total / 1e6:.1f} MB ({100 * done / total:3.0f}%)"
        sys.stderr.write(f"\r{label}: {shown}")
        sys.stderr.flush()
        if total is not None and done >= total:
            sys.stderr.write("\n")

    return report
