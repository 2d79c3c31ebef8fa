"""Copying files into and out of a sandbox as tar streams.

Both directions stream through `docker exec` with GNU tar inside the
container, on one SSH session channel: nothing is staged on the host.

put: `tar -x` in the destination directory (created if missing), as the
container's user. GNU tar's defaults do the safe thing: a member whose path
holds an existing symlink replaces the link instead of writing through it,
members with `..` or absolute names never leave the destination, and links
in the archive are created as links (a symlink to an absolute path or with
`..` only after every other member, so nothing is written through it).
Numeric owners in the archive are kept when the container runs as root.
Limitation: with the `user` setting, tar runs as that user and extracted
files belong to it, whatever owners the archive records.

get: `tar -c` of the source relative to its parent, links kept as links.
"""

from __future__ import annotations

import logging
import os
import posixpath
import stat
from typing import IO

from sandboxer.errors import BackendError, InvalidInputError, NotFoundError
from sandboxer.models import OutputSink, Progress
from sandboxer_compose_ssh.connections import Completed
from sandboxer_compose_ssh.docker import DockerHost

logger = logging.getLogger(__name__)

# Limitation: a file transfer that takes longer than an hour is cut off.
TRANSFER_TIMEOUT = 3600.0

_NO_GNU_TAR = 201
_BAD_DESTINATION = 202
_NO_SOURCE = 203

# busybox's sh runs its own applets before anything on PATH, so GNU tar is
# looked up by absolute path and asked for its version.
_FIND_GNU_TAR = r"""
gnu_tar=
for candidate in /usr/bin/gtar /bin/gtar /usr/local/bin/gtar \
        /usr/bin/tar /bin/tar /usr/local/bin/tar; do
    [ -x "$candidate" ] || continue
    case "$("$candidate" --version 2>/dev/null)" in
        "tar (GNU tar)"*) gnu_tar=$candidate; break ;;
    esac
done
if [ -z "$gnu_tar" ]; then
    echo "GNU tar not found in the sandbox (looked for gtar and tar)" >&2
    exit 201
fi
"""

# Limitation: a symlink already in the sandbox at an intermediate directory
# of a member's path (a member `d/f` when the archive has no entry for `d`)
# is followed, as with `docker cp`: the write stays inside the container
# but may land outside the destination. Archives made by the core list each
# directory before its contents, so such a link is replaced first.
_PUT_SCRIPT = (
    "\n# put: extract the tar stream on stdin under the directory $1"
    + _FIND_GNU_TAR
    + r"""
mkdir -p -- "$1" && cd -- "$1" || exit 202
exec "$gnu_tar" -x -f - --numeric-owner
"""
)

_GET_SCRIPT = (
    "\n# get: write a tar stream of $2 (in the directory $1) to stdout"
    + _FIND_GNU_TAR
    + r"""
cd -- "$1" 2>/dev/null || exit 203
[ -e "$2" ] || [ -L "$2" ] || exit 203
exec "$gnu_tar" -c -f - --numeric-owner -- "$2"
"""
)


def put_archive(
    docker_host: DockerHost,
    container: str,
    destination: str,
    archive: IO[bytes],
    progress: Progress,
) -> None:
    """Extract the tar stream `archive` under `destination` in `container`."""
    _check_path(destination, "destination")
    stdin = _CountingReader(archive, progress, _size_of(archive))
    stderr = _Tail()
    argv = [
        docker_host.tools.docker,
        "exec",
        "-i",
        container,
        "sh",
        "-c",
        _PUT_SCRIPT,
        "sh",
        destination,
    ]
    outcome = docker_host.connection.run(
        argv, stdin=stdin, stderr=stderr, timeout=TRANSFER_TIMEOUT
    )
    result = Completed(_finished(docker_host, outcome.exit_code), b"", stderr.value())
    if result.exit_code == _BAD_DESTINATION:
        raise InvalidInputError(
            f"cannot put files into {destination!r} in container {container}: "
            f"{result.stderr_tail()}",
            field="destination",
        )
    _raise_for_status(docker_host, container, result, "extract")
    logger.info("put %d bytes into %s:%s", stdin.done, container, destination)


def get_archive(
    docker_host: DockerHost,
    container: str,
    source: str,
    sink: IO[bytes],
    progress: Progress,
) -> None:
    """Write a tar stream of `source` in `container` to `sink`."""
    _check_path(source, "source")
    normalized = posixpath.normpath(source)
    parent, name = posixpath.split(normalized)
    if not name:  # the root directory itself
        parent, name = "/", "."
    stdout = _CountingSink(sink, progress)
    stderr = _Tail()
    argv = [
        docker_host.tools.docker,
        "exec",
        container,
        "sh",
        "-c",
        _GET_SCRIPT,
        "sh",
        parent,
        name,
    ]
    outcome = docker_host.connection.run(
        argv, stdout=stdout, stderr=stderr, timeout=TRANSFER_TIMEOUT
    )
    result = Completed(_finished(docker_host, outcome.exit_code), b"", stderr.value())
    if result.exit_code == _NO_SOURCE:
        raise NotFoundError(f"{source!r} does not exist in container {container}")
    if result.exit_code == 1:
        # GNU tar: a file changed while it was read; the archive is complete.
        logger.warning("get %s:%s: %s", container, source, result.stderr_tail())
    else:
        _raise_for_status(docker_host, container, result, "archive")
    logger.info("got %d bytes from %s:%s", stdout.done, container, source)


def _check_path(path: str, what: str) -> None:
    if not path.startswith("/") or "\0" in path:
        raise InvalidInputError(
            f"{what} {path!r} must be an absolute path in the sandbox", field=what
        )


def _finished(docker_host: DockerHost, exit_code: int | None) -> int:
    if exit_code is None:
        raise BackendError(
            f"host {docker_host.name}: file transfer did not finish within "
            f"{TRANSFER_TIMEOUT:g}s"
        )
    return exit_code


def _raise_for_status(
    docker_host: DockerHost, container: str, result: Completed, verb: str
) -> None:
    if result.exit_code == 0:
        return
    if result.exit_code == _NO_GNU_TAR:
        raise BackendError(
            f"container {container} on host {docker_host.name} has no GNU tar, "
            "which copying files needs; install GNU tar in the sandbox image"
        )
    raise BackendError(
        f"host {docker_host.name}: tar could not {verb} in container {container} "
        f"(exit {result.exit_code}): {result.stderr_tail()}"
    )


def _size_of(archive: IO[bytes]) -> int | None:
    """The archive's size when it is a regular file, for progress totals."""
    try:
        status = os.fstat(archive.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    if not stat.S_ISREG(status.st_mode):
        return None
    try:
        return status.st_size - archive.tell()
    except OSError:
        return status.st_size


class _CountingReader:
    """Reads from `source`, reporting the running byte count to `progress`."""

    def __init__(
        self, source: IO[bytes], progress: Progress, total: int | None
    ) -> None:
        self._source = source
        self._progress = progress
        self._total = total
        self.done = 0

    def read(self, size: int = -1) -> bytes:
        return self._count(self._source.read(size))

    def read1(self, size: int = -1) -> bytes:
        read1 = getattr(self._source, "read1", self._source.read)
        return self._count(read1(size))

    def _count(self, data: bytes) -> bytes:
        if data:
            self.done += len(data)
            self._progress(self.done, self._total)
        return data


class _CountingSink:
    """Writes to `sink`, reporting the running byte count to `progress`."""

    def __init__(self, sink: IO[bytes] | OutputSink, progress: Progress) -> None:
        self._sink = sink
        self._progress = progress
        self.done = 0

    def write(self, data: bytes, /) -> object:
        self._sink.write(data)
        self.done += len(data)
        self._progress(self.done, None)
        return len(data)


class _Tail:
    """Keeps the last few KiB written, for error messages."""

    LIMIT = 8192

    def __init__(self) -> None:
        self._data = bytearray()

    def write(self, data: bytes, /) -> object:
        self._data += data
        if len(self._data) > self.LIMIT:
            del self._data[: -self.LIMIT]
        return len(data)

    def value(self) -> bytes:
        return bytes(self._data)
