"""`sandboxer cp`: copy files and trees between this machine and a sandbox.

Files travel as tar streams built and unpacked by `sandboxer.archives`, so
the link policy is the same for every backend: symbolic links are copied as
links (their targets verbatim, even ones that point outside), hardlinks as
hardlinks, unless `--follow-links` asks for the files they point to. On the
way in, nothing is ever written through a link that already exists in the
destination; a link there is replaced.

Destination rules, like `docker cp`: a destination ending in `/` (or an
existing local directory) receives the source under its own name; any other
destination is the new path of the source.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click

from sandboxer import archives
from sandboxer.cli.context import (
    CliState,
    json_option,
    pass_state,
    print_json,
    progress_reporter,
)
from sandboxer.errors import InvalidInputError, NotFoundError, SandboxerError

REMOTE_PATTERN = re.compile(
    r"^(?P<sandbox>[A-Za-z0-9][A-Za-z0-9_.-]{0,62}):(?P<path>/.*)$"
)


def split_target(target: str) -> tuple[str | None, str]:
    """`SANDBOX:/path` gives (SANDBOX, /path); anything else is a local path."""
    match = REMOTE_PATTERN.match(target)
    if match:
        return match["sandbox"], match["path"]
    return None, target


@contextlib.contextmanager
def _pipe() -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    read_fd, write_fd = os.pipe()
    reader = os.fdopen(read_fd, "rb")
    writer = os.fdopen(write_fd, "wb")
    try:
        yield reader, writer
    finally:
        for stream in (writer, reader):
            with contextlib.suppress(OSError):
                stream.close()


def _run_beside(
    producer: Callable[[IO[bytes]], Any], writer: IO[bytes]
) -> tuple[threading.Thread, list[BaseException]]:
    """Run `producer(writer)` in a thread that closes `writer` when done."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            producer(writer)
        except BrokenPipeError:
            pass  # the consumer stopped early; its own error is the one to report
        except BaseException as error:
            errors.append(error)
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    thread = threading.Thread(target=run, name="sandboxer-cp", daemon=True)
    thread.start()
    return thread, errors


def upload(
    api: Any,
    local: str,
    sandbox: str,
    remote: str,
    *,
    follow_links: bool,
    progress: Any,
) -> str:
    """Copy a local file or tree into a sandbox; return the remote path written."""
    source = Path(local)
    if not os.path.lexists(source):
        raise NotFoundError(f"local path {local!r} does not exist")
    if remote.endswith("/"):
        directory, name = remote.rstrip("/") or "/", source.resolve().name
    else:
        directory, name = posixpath.dirname(remote) or "/", posixpath.basename(remote)
    if not name or name in (".", ".."):
        raise InvalidInputError(
            f"cannot copy to {remote!r}: name a file or end with '/'"
        )
    with _pipe() as (reader, writer):
        thread, errors = _run_beside(
            lambda sink: archives.write_tree(
                [source], sink, dereference=follow_links, arcnames=[name]
            ),
            writer,
        )
        try:
            api.put_files(sandbox, directory, reader, progress)
        finally:
            reader.close()
            thread.join()
    if errors:
        raise errors[0]
    return posixpath.join(directory, name)


def download(api: Any, sandbox: str, remote: str, local: str, *, progress: Any) -> str:
    """Copy a file or tree out of a sandbox; return the local path written.

    Into an existing directory (or one named with a trailing `/`) the tree is
    unpacked in place: existing directories are merged, existing files and
    links at a member's path are replaced, never written through. To a new
    name it is unpacked beside the destination first and then renamed, so a
    failed copy leaves nothing half-written under that name.
    """
    target = Path(local)
    name = posixpath.basename(remote.rstrip("/"))
    if not name or {".", ".."} & set(remote.split("/")):
        raise InvalidInputError(
            f"cannot copy {remote!r}: name a file or directory inside the sandbox"
        )
    into_directory = local.endswith("/") or target.is_dir()
    if into_directory:
        target.mkdir(parents=True, exist_ok=True)
        _unpack(api, sandbox, remote, target, progress)
        return str(target / name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".sandboxer-cp-", dir=target.parent))
    try:
        _unpack(api, sandbox, remote, staging, progress)
        if target.is_symlink() or target.exists():
            target.unlink()  # a file or a link: replaced, never followed
        os.replace(staging / name, target)
        return str(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _unpack(
    api: Any, sandbox: str, remote: str, destination: Path, progress: Any
) -> None:
    """Stream `remote` out of the sandbox and unpack it safely below `destination`.

    When the sandbox side fails (a missing path, an unknown sandbox), its
    error is the one reported, not the empty archive it leaves behind.
    """
    with _pipe() as (reader, writer):
        thread, errors = _run_beside(
            lambda sink: api.get_files(sandbox, remote, sink, progress), writer
        )
        try:
            archives.extract_stream(reader, destination)
        except SandboxerError:
            reader.close()
            thread.join()
            if errors:
                raise errors[0] from None
            raise
        finally:
            reader.close()
            thread.join()
    if errors:
        raise errors[0]


@click.command()
@click.argument("source")
@click.argument("destination")
@click.option(
    "--follow-links",
    "-L",
    is_flag=True,
    help="Copy what symbolic links point to (uploads only).",
)
@json_option
@pass_state
def cp(
    state: CliState, source: str, destination: str, follow_links: bool, as_json: bool
) -> None:
    """Copy files between this machine and a sandbox.

    Exactly one of SOURCE and DESTINATION is `SANDBOX:/absolute/path`.

    \b
      sandboxer cp ./src demo:/workspace/      # -> /workspace/src
      sandboxer cp ./a.txt demo:/workspace/b.txt
      sandboxer cp demo:/workspace/out ./results/

    Symbolic links are copied as links; a link already at the destination
    is replaced, never written through.
    """
    source_sandbox, source_path = split_target(source)
    destination_sandbox, destination_path = split_target(destination)
    api = state.api()
    if source_sandbox and not destination_sandbox:
        written = download(
            api,
            source_sandbox,
            source_path,
            destination_path,
            progress=progress_reporter("cp"),
        )
        direction = "downloaded"
    elif destination_sandbox and not source_sandbox:
        written = upload(
            api,
            source_path,
            destination_sandbox,
            destination_path,
            follow_links=follow_links,
            progress=progress_reporter("cp"),
        )
        direction = "uploaded"
    else:
        raise InvalidInputError(
            "exactly one of SOURCE and DESTINATION must be SANDBOX:/absolute/path"
        )
    if as_json:
        print_json({"direction": direction, "path": written})
    else:
        click.echo(f"{direction} {written}")
