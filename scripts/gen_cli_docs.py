"""Write docs/cli.md from the `sandboxer` commands' own --help text.

Run `python scripts/gen_cli_docs.py` after changing a command;
`python scripts/gen_cli_docs.py --check` exits 1 when the file is stale
(tests/test_docs.py runs that check).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from sandboxer.cli import cli

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


def walk(
    command: click.Command, path: list[str]
) -> list[tuple[list[str], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group):
        for name in sorted(command.commands):
            found += walk(command.commands[name], [*path, name])
    return found


def render() -> str:
    parts = [
        "# `sandboxer` command reference\n",
        "Generated from each command's `--help` by `scripts/gen_cli_docs.py`; "
        "do not edit by hand.\n",
    ]
    for path, command in walk(cli, ["sandboxer"]):
        context = click.Context(command, info_name=" ".join(path), terminal_width=88)
        parts.append(f"## `{' '.join(path)}`\n")
        parts.append("```text\n" + command.get_help(context) + "\n```\n")
    return "\n".join(parts)


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not OUTPUT.exists() or OUTPUT.read_text(encoding="utf-8") != text:
            print(
                f"{OUTPUT} is stale: run python scripts/gen_cli_docs.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.parent.mkdir(exist_ok=True)
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
