"""Tar streams on the client side: write them, check them, hash them, unpack them.

This is the one place where sandboxer reads or writes tar archives itself.
`sandboxer cp` uses `write_tree` to send local files into a sandbox and
`extract_stream` to unpack what comes back; the compose-ssh extension pipes a
snapshot archive through `validate_stream` (which hashes it on the way) before
GNU tar unpacks it inside the new sandbox's workspace. Other modules that only
need a checksum of a stream in flight use `HashingReader`.

Every archive is read once, front to back, as a stream: nothing is buffered
whole, so pipes, sockets and SSH channels work as sources and sinks, and
memory stays bounded by the number of member names, not by their size.

Member rules (`ArchiveValidator`, applied to every member in archive order):

- a name must be relative, non-empty, free of NUL bytes and of `..`
  components (`.` components and repeated slashes are ignored);
- no member may pass through an earlier symlink member (`keys -> /root/.ssh`
  then `keys/authorized_keys`) or replace one (`notes -> /tmp/x` then a
  file `notes`), and nothing but a directory may replace a directory;
- a hardlink must name an earlier regular-file member, by a relative path
  without `..`, never itself;
- device nodes and fifos are refused unless the policy allows special files;
  members of any other unknown type are always refused.

Link policy. Under `RESTORE_POLICY` (snapshots, the default of
`validate_stream`) a symlink must point inside the archive root: absolute
targets are refused, and a relative target may only climb (`..`) out of
directories it is known to be inside, which makes the check independent of
what later members create. Under `COPY_POLICY` (`sandboxer cp`, the default of
`extract_stream`) symlinks are kept verbatim and may point anywhere (`-1`,
`/etc/passwd`, `../outside`), because copying a link is not following it:
`extract_stream` never writes through a symlink, neither one from the archive
nor one already in the destination, and never creates anything outside the
destination, so an outward link is only ever a link. Hardlinks stay
restricted under both policies, since a hardlink shares the target's data.

Why not tarfile's extraction filters: `filter="data"` refuses outward
symlinks (which `cp` must keep), and both `"data"` and `"tar"` clear setuid,
setgid and sticky bits (which a restore must keep). They also check each
member with `os.path.realpath` against the disk before extraction and then
extract by path, which is how several bypasses of them arose. Here checks
are made against the archive's own history instead, and `extract_stream`
creates every entry relative to an open directory descriptor with
`O_NOFOLLOW`, so the disk cannot redirect a write.

Limitation: a refusal or error part-way through `extract_stream` leaves the
members before it in the destination; nothing is ever written outside it.
Callers that need all-or-nothing run `validate_stream` first.

Limitation: `validate_stream` refuses a member as soon as it is read, before
the checksum of the whole stream is known; callers must not extract anything
until it has returned.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NoReturn, Protocol

from sandboxer.errors import InvalidInputError, NotFoundError, UnsafeArchiveError
from sandboxer.models import OutputSink, Progress, no_progress

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
"""Bytes read or written at a time when copying file contents."""

PROGRESS_STEP = 1 << 20
"""Progress callbacks fire at most once per this many bytes (and at the end)."""

_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SET_ID_BITS = stat.S_ISUID | stat.S_ISGID


class ByteSource(Protocol):
    """Anything with a blocking `read(size)` that returns b"" at end of stream."""

    def read(self, size: int, /) -> bytes: ...


@dataclass(frozen=True)
class ArchivePolicy:
    """What an archive may contain beyond plain files, directories and links.

    `allow_links_outside`: symlink targets are not checked (any text is kept
    verbatim). Safe only for extraction that never writes through links, as
    `extract_stream` does. `allow_special_files`: device nodes and fifos are
    accepted instead of refused.
    """

    allow_links_outside: bool = False
    allow_special_files: bool = False


RESTORE_POLICY = ArchivePolicy()
"""Snapshot restore: every link must stay inside the workspace."""

COPY_POLICY = ArchivePolicy(allow_links_outside=True)
"""`sandboxer cp` downloads: links are copied as links, wherever they point."""


@dataclass(frozen=True)
class ArchiveSummary:
    """What `validate_stream` learnt from one complete pass over an archive."""

    sha256: str
    size_bytes: int
    member_count: int
    file_bytes: int


# ---------------------------------------------------------------------------
# Hashing and counting while bytes move


class _ProgressMeter:
    """Forwards byte counts to a `Progress`, at most once per PROGRESS_STEP."""

    def __init__(self, progress: Progress, total: int | None) -> None:
        self._progress = progress
        self._total = total
        self._reported = -PROGRESS_STEP
        self.done = 0

    def advance(self, count: int) -> None:
        self.done += count
        if self.done - self._reported >= PROGRESS_STEP:
            self._reported = self.done
            self._progress(self.done, self._total)

    def finish(self) -> None:
        if self._reported != self.done:
            self._reported = self.done
            self._progress(self.done, self._total)


class HashingReader:
    """Wraps a byte source; computes sha256 and counts every byte read through it.

    The digest covers exactly the raw bytes handed out by `read`, so after
    `drain()` it is the checksum of the whole stream. Usable as the `fileobj`
    of `tarfile.open(mode="r|")`; it cannot seek or write.
    """

    def __init__(
        self,
        source: ByteSource,
        *,
        progress: Progress = no_progress,
        total: int | None = None,
    ) -> None:
        self._source = source
        self._hash = hashlib.sha256()
        self._meter = _ProgressMeter(progress, total)
        self._last_nonzero_end = 0

    @property
    def bytes_read(self) -> int:
        """How many bytes have passed through so far."""
        return self._meter.done

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes read so far."""
        return self._hash.hexdigest()

    @property
    def last_nonzero_end(self) -> int:
        """Offset just past the last non-zero byte read so far (0 if none)."""
        return self._last_nonzero_end

    def read(self, size: int = -1, /) -> bytes:
        """Read up to `size` bytes (all remaining bytes if negative)."""
        data = self._source.read(CHUNK_SIZE if size < 0 else size)
        if size < 0:
            parts = [data]
            while data:
                data = self._source.read(CHUNK_SIZE)
                parts.append(data)
            data = b"".join(parts)
        self._account(data)
        return data

    def drain(self) -> int:
        """Read and hash the rest of the stream; return how many bytes that was."""
        drained = 0
        while chunk := self.read(CHUNK_SIZE):
            drained += len(chunk)
        self._meter.finish()
        return drained

    def _account(self, data: bytes) -> None:
        if not data:
            return
        start = self._meter.done
        self._hash.update(data)
        if data[-1]:
            self._last_nonzero_end = start + len(data)
        else:
            stripped = len(data.rstrip(b"\0"))
            if stripped:
                self._last_nonzero_end = start + stripped
        self._meter.advance(len(data))

    # The rest satisfies tarfile's file-object protocol for stream mode.

    def write(self, data: bytes, /) -> int:
        raise OSError(errno.EBADF, "a HashingReader is read-only")

    def tell(self) -> int:
        return self._meter.done

    def seek(self, position: int, /) -> int:
        raise OSError(errno.ESPIPE, "a HashingReader cannot seek")

    def close(self) -> None:
        """Does nothing: the wrapped source belongs to the caller."""


class _CountingSink:
    """Passes writes to a sink, counting bytes; tarfile's stream-mode fileobj."""

    def __init__(self, sink: OutputSink, meter: _ProgressMeter) -> None:
        self._sink = sink
        self.meter = meter

    def write(self, data: bytes, /) -> int:
        self._sink.write(data)
        self.meter.advance(len(data))
        return len(data)

    def read(self, size: int, /) -> bytes:
        raise OSError(errno.EBADF, "an archive sink is write-only")

    def tell(self) -> int:
        return self.meter.done

    def seek(self, position: int, /) -> int:
        raise OSError(errno.ESPIPE, "an archive sink cannot seek")

    def close(self) -> None:
        """Does nothing: the wrapped sink belongs to the caller."""


# ---------------------------------------------------------------------------
# Writing


def write_tree(
    paths: Sequence[Path],
    sink: OutputSink,
    *,
    dereference: bool = False,
    progress: Progress = no_progress,
    arcnames: Sequence[str] | None = None,
) -> int:
    """Write a PAX tar stream of local files and directory trees to `sink`.

    Each path becomes a member named after its last component (`./dir`
    gives `dir`, `dir/...`), or after the matching entry of `arcnames`
    when given (how `cp ./a.txt SB:/dir/b.txt` renames), followed by
    everything under it. Symlinks are
    stored as symlinks with their target text verbatim and hardlinked files as
    hardlinks, unless `dereference` is true: then every symlink, nested ones
    too, is replaced by what it points to, and a dangling or looping link is
    skipped with a logged warning. Sockets, devices and fifos, and files that
    cannot be read, are skipped with a logged warning too; one odd entry never
    aborts the copy. Owners are stored as numbers only (no user or group
    names); modes keep setuid/setgid/sticky bits; mtimes keep sub-second
    precision. `sink` may be a pipe or socket: the stream is written strictly
    forward. Returns the number of bytes written.

    Raises NotFoundError when a path does not exist, InvalidInputError for
    the filesystem root, which has no name to give it.
    """
    if arcnames is not None and len(arcnames) != len(paths):
        raise InvalidInputError("write_tree needs one arcname per path")
    named: list[tuple[Path, str]] = []
    for index, path in enumerate(map(Path, paths)):
        if not os.path.lexists(path):
            raise NotFoundError(f"cannot copy {str(path)!r}: no such file or directory")
        arcname = (
            arcnames[index]
            if arcnames is not None
            else Path(os.path.normpath(path.absolute())).name
        )
        if not arcname:
            raise InvalidInputError(
                f"cannot copy {str(path)!r}: copy the directories under it instead"
            )
        named.append((path, arcname))

    meter = _ProgressMeter(progress, None)
    counting_sink = _CountingSink(sink, meter)
    writer = _TreeWriter(dereference)
    with tarfile.open(
        fileobj=counting_sink, mode="w|", format=tarfile.PAX_FORMAT
    ) as archive:
        writer.archive = archive
        for path, arcname in named:
            writer.add(path, arcname, ancestors=frozenset())
    meter.finish()
    return meter.done


class _TreeWriter:
    """Walks local paths and appends one member per entry to an open archive."""

    archive: tarfile.TarFile

    def __init__(self, dereference: bool) -> None:
        self.dereference = dereference
        self.first_names: dict[tuple[int, int], str] = {}

    def add(
        self, path: Path, arcname: str, ancestors: frozenset[tuple[int, int]]
    ) -> None:
        status = self._stat(path)
        if status is None:
            return
        kind = stat.S_IFMT(status.st_mode)
        info = _tarinfo_from_stat(arcname, status)

        if kind == stat.S_IFDIR:
            identity = (status.st_dev, status.st_ino)
            if identity in ancestors:
                logger.warning("skipping %s: symlink loop back to a parent", path)
                return
            info.type = tarfile.DIRTYPE
            self.archive.addfile(info)
            for child in self._children(path):
                self.add(path / child, f"{arcname}/{child}", ancestors | {identity})
        elif kind == stat.S_IFLNK:
            info.type = tarfile.SYMTYPE
            # Path.readlink() would normalise the target text ("./x/" to "x").
            info.linkname = os.readlink(path)  # noqa: PTH115
            self.archive.addfile(info)
        elif kind == stat.S_IFREG:
            self._add_file(path, info, status)
        else:
            logger.warning("skipping %s: %s", path, _describe_special(kind))

    def _stat(self, path: Path) -> os.stat_result | None:
        try:
            return path.stat() if self.dereference else path.lstat()
        except OSError as error:
            if self.dereference and path.is_symlink():
                looping = error.errno == errno.ELOOP
                reason = "symlink loop" if looping else "dangling symlink"
                logger.warning("skipping %s: %s", path, reason)
            else:
                logger.warning("skipping %s: %s", path, error.strerror)
            return None

    def _children(self, path: Path) -> list[str]:
        try:
            return sorted(child.name for child in path.iterdir())
        except OSError as error:
            logger.warning("not copying the contents of %s: %s", path, error.strerror)
            return []

    def _add_file(
        self, path: Path, info: tarfile.TarInfo, status: os.stat_result
    ) -> None:
        identity = (status.st_dev, status.st_ino)
        first_name = self.first_names.get(identity)
        if first_name is not None:
            info.type = tarfile.LNKTYPE
            info.linkname = first_name
            self.archive.addfile(info)
            return

        try:
            source = open(path, "rb")  # noqa: SIM115 - closed right below
        except OSError as error:
            logger.warning("skipping %s: %s", path, error.strerror)
            return
        with source:
            info.type = tarfile.REGTYPE
            info.size = status.st_size
            self.archive.addfile(info, _ExactLengthReader(source, info.size, path))
        if status.st_nlink > 1:
            self.first_names[identity] = info.name


def _tarinfo_from_stat(arcname: str, status: os.stat_result) -> tarfile.TarInfo:
    info = tarfile.TarInfo(arcname)
    info.mode = stat.S_IMODE(status.st_mode)
    info.uid = status.st_uid
    info.gid = status.st_gid
    info.uname = ""
    info.gname = ""
    # Whole seconds stay integers so they need no extended PAX header.
    seconds, nanoseconds = divmod(status.st_mtime_ns, 1_000_000_000)
    info.mtime = status.st_mtime if nanoseconds else seconds
    return info


def _describe_special(kind: int) -> str:
    if kind == stat.S_IFSOCK:
        return "sockets cannot be copied"
    if kind == stat.S_IFIFO:
        return "fifos are not copied"
    return "device nodes are not copied"


class _ExactLengthReader:
    """Yields exactly `size` bytes of a file that may change while it is read.

    A file that shrinks is padded with zero bytes and one that grows is cut,
    so the archive stays well formed; either way a warning is logged.
    """

    def __init__(self, source: IO[bytes], size: int, path: Path) -> None:
        self._source = source
        self._left = size
        self._path = path
        self._warned = False

    def read(self, size: int = -1, /) -> bytes:
        wanted = self._left if size < 0 else min(size, self._left)
        data = self._source.read(wanted) if wanted else b""
        if len(data) < wanted:
            self._warn("shrank")
            data += b"\0" * (wanted - len(data))
        self._left -= len(data)
        if self._left == 0 and not self._warned and self._source.read(1):
            self._warn("grew")
        return data

    def _warn(self, change: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("%s %s while it was being copied", self._path, change)


# ---------------------------------------------------------------------------
# Checking members

_DIRECTORY = "directory"
_FILE = "file"
_SYMLINK = "symlink"
_SPECIAL = "special file"


class ArchiveValidator:
    """Checks tar members one at a time, in archive order, against a policy.

    Feed it every member, in order, with `check`; it remembers what earlier
    members were (directory, file, symlink) so that later ones cannot use them
    to escape. Any refusal raises UnsafeArchiveError naming the member; after
    one, the validator must not be used again.
    """

    def __init__(self, policy: ArchivePolicy = RESTORE_POLICY) -> None:
        self.policy = policy
        self._kinds: dict[str, str] = {}

    def check(self, member: tarfile.TarInfo) -> str:
        """Check `member`; return its normalised name ("" for the root itself)."""
        _check_headers(member)
        parts = _name_parts(member)
        path = "/".join(parts)
        if not parts:
            if not member.isdir():
                _refuse(member, "only a directory may name the archive root")
            return path

        kind = _member_kind(member, self.policy)
        self._check_parents(member, parts)
        self._check_replacement(member, path, kind)
        if member.issym():
            self._check_symlink(member, parts)
        elif member.islnk():
            self._check_hardlink(member, path)

        for depth in range(1, len(parts)):
            self._kinds["/".join(parts[:depth])] = _DIRECTORY
        self._kinds[path] = kind
        return path

    def _check_parents(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        for depth in range(1, len(parts)):
            parent = "/".join(parts[:depth])
            kind = self._kinds.get(parent, _DIRECTORY)
            if kind == _SYMLINK:
                _refuse(member, f"it would be written through the symlink {parent!r}")
            if kind != _DIRECTORY:
                _refuse(member, f"its parent {parent!r} is a {kind}, not a directory")

    def _check_replacement(self, member: tarfile.TarInfo, path: str, kind: str) -> None:
        previous = self._kinds.get(path)
        if previous == _SYMLINK:
            _refuse(member, "it would replace an earlier symlink of the same name")
        if previous == _DIRECTORY and kind != _DIRECTORY:
            _refuse(member, f"it would replace a directory with a {kind}")

    def _check_symlink(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        target = member.linkname
        if not target or "\0" in target:
            _refuse(member, "its symlink target is empty or contains a NUL byte")
        if self.policy.allow_links_outside:
            return
        if target.startswith("/"):
            _refuse(member, f"its symlink target {target!r} is absolute")

        # Climbing out of a directory is only safe when that directory is
        # known to be a real one: the link's own parents, or a directory
        # member seen earlier. Directories can never be replaced later, so the
        # answer cannot change as the archive goes on.
        parents = {"/".join(parts[:depth]) for depth in range(1, len(parts))}
        position = parts[:-1]
        for component in target.split("/"):
            if component in ("", "."):
                continue
            if component != "..":
                position.append(component)
                continue
            if not position:
                _refuse(
                    member, f"its symlink target {target!r} leaves the archive root"
                )
            here = "/".join(position)
            if here not in parents and self._kinds.get(here) != _DIRECTORY:
                _refuse(
                    member,
                    f"its symlink target {target!r} climbs out of {here!r}, "
                    "which is not a directory known so far",
                )
            position.pop()

    def _check_hardlink(self, member: tarfile.TarInfo, path: str) -> None:
        target = member.linkname
        if not target or "\0" in target:
            _refuse(member, "its hardlink target is empty or contains a NUL byte")
        if target.startswith("/"):
            _refuse(member, f"its hardlink target {target!r} is absolute")
        components = [part for part in target.split("/") if part not in ("", ".")]
        if ".." in components:
            _refuse(member, f"its hardlink target {target!r} contains '..'")
        target_path = "/".join(components)
        if target_path == path:
            _refuse(member, "it is a hardlink to itself")
        if self._kinds.get(target_path) != _FILE:
            _refuse(
                member,
                f"its hardlink target {target!r} is not an earlier regular file "
                "in the archive",
            )


MAX_NAME_BYTES = 4096


def _check_headers(member: tarfile.TarInfo) -> None:
    """Refuse headers that other tar readers could read differently.

    GNU tar takes a member's name from `GNU.sparse.*` PAX keys in preference
    to `path`, which Python's tarfile reads, so an archive could show one
    name to this check and another to the tar that extracts it. sandboxer
    never writes sparse members, so such keys are refused outright; so are
    names longer than any file system accepts.
    """
    if any(key.startswith("GNU.sparse") for key in member.pax_headers):
        _refuse(member, "GNU sparse headers are not accepted")
    for name in (member.name, member.linkname):
        if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise UnsafeArchiveError(
                f"refusing archive member {name[:80]!r}...: its name or link "
                f"target is longer than {MAX_NAME_BYTES} bytes"
            )


def _name_parts(member: tarfile.TarInfo) -> list[str]:
    name = member.name
    if not name:
        _refuse(member, "it has an empty name")
    if "\0" in name:
        _refuse(member, "its name contains a NUL byte")
    if name.startswith("/"):
        _refuse(member, "its name is an absolute path")
    if name.endswith("/") and not member.isdir():
        _refuse(member, "its name ends in '/' but it is not a directory")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        _refuse(member, "its name contains a '..' component")
    return parts


def _member_kind(member: tarfile.TarInfo, policy: ArchivePolicy) -> str:
    if member.isdir():
        return _DIRECTORY
    if member.isreg() or member.islnk():
        return _FILE
    if member.issym():
        return _SYMLINK
    if member.ischr() or member.isblk() or member.isfifo():
        if not policy.allow_special_files:
            what = "a fifo" if member.isfifo() else "a device node"
            _refuse(member, f"it is {what}, which this archive may not contain")
        return _SPECIAL
    _refuse(member, f"its member type {member.type!r} is not supported")


def _refuse(member: tarfile.TarInfo, reason: str) -> NoReturn:
    raise UnsafeArchiveError(
        f"refusing archive member {member.name!r}: {reason}", member=member.name
    )


# ---------------------------------------------------------------------------
# Reading


def validate_stream(
    source: ByteSource,
    *,
    expected_sha256: str | None = None,
    policy: ArchivePolicy = RESTORE_POLICY,
    progress: Progress = no_progress,
    total: int | None = None,
) -> ArchiveSummary:
    """Read a tar stream once, checking every member and hashing every byte.

    `source` is read to its end (after the end-of-archive blocks too), so the
    returned sha256 is that of the exact bytes received. Raises
    UnsafeArchiveError naming the first refused member (see the module's rules
    and `policy`), on data after the end-of-archive marker, or with "checksum
    mismatch" when `expected_sha256` is given and differs; InvalidInputError
    when the stream is not a complete tar archive. Members are refused as they
    are read, before the checksum is known: extract nothing until this returns.
    `progress` gets raw byte counts against `total` when known.
    """
    reader = HashingReader(source, progress=progress, total=total)
    validator = ArchiveValidator(policy)
    member_count = 0
    file_bytes = 0
    with _open_stream(reader) as archive:
        for member in _members(archive):
            validator.check(member)
            member_count += 1
            if member.isreg():
                file_bytes += member.size
        _finish_stream(archive, reader)

    actual = reader.sha256
    expected = expected_sha256.lower() if expected_sha256 is not None else None
    if expected is not None and expected != actual:
        raise UnsafeArchiveError(
            f"checksum mismatch: expected {expected}, got {actual}",
            expected=expected,
            actual=actual,
        )
    _check_trailing_bytes(archive, reader)
    return ArchiveSummary(
        sha256=reader.sha256,
        size_bytes=reader.bytes_read,
        member_count=member_count,
        file_bytes=file_bytes,
    )


def extract_stream(
    source: ByteSource,
    destination: Path,
    *,
    policy: ArchivePolicy = COPY_POLICY,
    numeric_owner: bool = False,
    progress: Progress = no_progress,
    total: int | None = None,
) -> list[str]:
    """Unpack a tar stream into the existing directory `destination`, safely.

    Every member is checked as `validate_stream` does, then created relative
    to `destination` without following any symlink: a symlink or file already
    at a member's path is replaced (never written through), and a member whose
    parent directory in the destination is a symlink is refused. Links stay
    links. Modes and mtimes are restored; owners only when `numeric_owner` is
    true and the process runs as root. When running as root without restoring
    owners, setuid/setgid bits are cleared, so a sandbox can never place a
    root-owned setuid program on this machine. The archive root's own entry
    (`.`) does not change `destination`'s attributes. Returns the normalised
    names of the extracted members, in archive order.

    Raises NotFoundError if `destination` does not exist, UnsafeArchiveError
    for a refused member (members before it stay extracted), InvalidInputError
    for a corrupt stream or a local file that cannot be created.
    """
    if not destination.is_dir():
        if destination.exists():
            raise InvalidInputError(
                f"cannot extract into {str(destination)!r}: not a directory"
            )
        raise NotFoundError(
            f"cannot extract into {str(destination)!r}: no such directory"
        )

    restore_owner = numeric_owner and os.geteuid() == 0
    strip_set_id = os.geteuid() == 0 and not restore_owner
    reader = HashingReader(source, progress=progress, total=total)
    validator = ArchiveValidator(policy)
    root_fd = os.open(destination, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        writer = _TreeExtractor(
            root_fd, restore_owner=restore_owner, strip_set_id=strip_set_id
        )
        with _open_stream(reader) as archive:
            for member in _members(archive):
                path = validator.check(member)
                writer.extract(archive, member, path)
            writer.finish_directories()
            _finish_stream(archive, reader)
        _check_trailing_bytes(archive, reader)
        return writer.extracted
    except tarfile.TarError as error:  # a member's data ended early
        raise InvalidInputError(f"corrupt tar archive: {error}") from error
    finally:
        os.close(root_fd)


def _open_stream(reader: HashingReader) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=reader, mode="r|")
    except tarfile.TarError as error:
        raise InvalidInputError(f"not a tar archive: {error}") from error


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """Yield members one by one without tarfile keeping them all in memory."""
    while True:
        try:
            member = archive.next()
        except tarfile.TarError as error:
            raise InvalidInputError(f"corrupt tar archive: {error}") from error
        if member is None:
            return
        # tarfile appends every member it reads to this list; emptying it keeps
        # memory flat on long streams. The attribute is not in the type stubs.
        archive.members.clear()  # type: ignore[attr-defined]
        yield member


def _finish_stream(archive: tarfile.TarFile, reader: HashingReader) -> None:
    """Hash what tarfile did not read, and insist on an end-of-archive marker.

    tarfile stops quietly at the first block that is not a valid header, so a
    stream cut at a member boundary, or one with garbage there, would look
    complete; GNU tar, by contrast, skips bad blocks and keeps reading.
    """
    reader.drain()
    if reader.bytes_read < archive.offset + tarfile.BLOCKSIZE:
        raise InvalidInputError(
            f"tar archive is truncated: it ends at byte {reader.bytes_read} "
            "without an end-of-archive marker"
        )


def _check_trailing_bytes(archive: tarfile.TarFile, reader: HashingReader) -> None:
    if reader.last_nonzero_end > archive.offset:
        raise UnsafeArchiveError(
            f"refusing archive: it has data after its end-of-archive marker at "
            f"byte {archive.offset}, which other tar readers might extract"
        )


# ---------------------------------------------------------------------------
# Local extraction


class _TreeExtractor:
    """Creates checked members under an open destination directory descriptor."""

    def __init__(
        self, root_fd: int, *, restore_owner: bool, strip_set_id: bool
    ) -> None:
        self.root_fd = root_fd
        self.restore_owner = restore_owner
        self.strip_set_id = strip_set_id
        self.extracted: list[str] = []
        self._directories: dict[str, tarfile.TarInfo] = {}

    def extract(
        self, archive: tarfile.TarFile, member: tarfile.TarInfo, path: str
    ) -> None:
        self.extracted.append(path or ".")
        if not path:
            return
        parts = path.split("/")
        parent_fd = self._open_directory(member, parts[:-1], create=True)
        try:
            leaf = parts[-1]
            if member.isdir():
                self._make_directory(member, parent_fd, leaf)
                self._directories[path] = member
            elif member.isreg():
                self._make_file(archive, member, parent_fd, leaf)
            elif member.issym():
                self._make_symlink(member, parent_fd, leaf)
            elif member.islnk():
                self._make_hardlink(member, parent_fd, leaf)
            else:
                self._make_special(member, parent_fd, leaf)
        except OSError as error:
            raise _local_error(member, error) from error
        finally:
            os.close(parent_fd)

    def finish_directories(self) -> None:
        """Apply directory modes, owners and mtimes, deepest first."""
        for path in sorted(
            self._directories, key=lambda name: name.count("/"), reverse=True
        ):
            member = self._directories[path]
            directory_fd = self._open_directory(member, path.split("/"), create=False)
            try:
                self._apply_attributes(member, directory_fd, is_directory=True)
            except OSError as error:
                raise _local_error(member, error) from error
            finally:
                os.close(directory_fd)

    def _open_directory(
        self, member: tarfile.TarInfo, parts: list[str], *, create: bool
    ) -> int:
        """Open destination/parts as a directory, refusing any symlink on the way."""
        current = os.dup(self.root_fd)
        try:
            for depth, component in enumerate(parts, start=1):
                next_fd = self._open_child_directory(member, current, component, create)
                if next_fd is None:
                    where = "/".join(parts[:depth])
                    _refuse_local(member, where)
                os.close(current)
                current = next_fd
        except BaseException:
            os.close(current)
            raise
        return current

    def _open_child_directory(
        self, member: tarfile.TarInfo, parent_fd: int, name: str, create: bool
    ) -> int | None:
        try:
            return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
        except NotADirectoryError:
            return None
        except OSError as error:
            raise _local_error(member, error) from error
        try:
            os.mkdir(name, 0o777, dir_fd=parent_fd)
        except FileExistsError:
            pass  # created meanwhile; opening it below re-checks what it is
        except OSError as error:
            raise _local_error(member, error) from error
        try:
            return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent_fd)
        except NotADirectoryError:
            return None

    def _clear(self, parent_fd: int, leaf: str) -> bool:
        """Remove a non-directory at `leaf`; return True if a directory is there."""
        try:
            existing = os.lstat(leaf, dir_fd=parent_fd)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(existing.st_mode):
            return True
        os.unlink(leaf, dir_fd=parent_fd)
        return False

    def _make_directory(
        self, member: tarfile.TarInfo, parent_fd: int, leaf: str
    ) -> None:
        if not self._clear(parent_fd, leaf):
            os.mkdir(leaf, 0o700, dir_fd=parent_fd)

    def _make_file(
        self,
        archive: tarfile.TarFile,
        member: tarfile.TarInfo,
        parent_fd: int,
        leaf: str,
    ) -> None:
        self._refuse_directory(member, parent_fd, leaf)
        contents = archive.extractfile(member)
        file_fd = os.open(leaf, _NEW_FILE_FLAGS, 0o600, dir_fd=parent_fd)
        with open(file_fd, "wb", closefd=True) as target:
            if contents is not None:
                while chunk := contents.read(CHUNK_SIZE):
                    target.write(chunk)
            target.flush()
            self._apply_attributes(member, target.fileno(), is_directory=False)

    def _make_symlink(self, member: tarfile.TarInfo, parent_fd: int, leaf: str) -> None:
        self._refuse_directory(member, parent_fd, leaf)
        os.symlink(member.linkname, leaf, dir_fd=parent_fd)
        if self.restore_owner:
            os.chown(
                leaf, member.uid, member.gid, dir_fd=parent_fd, follow_symlinks=False
            )
        os.utime(leaf, ns=_mtime_ns(member), dir_fd=parent_fd, follow_symlinks=False)

    def _make_hardlink(
        self, member: tarfile.TarInfo, parent_fd: int, leaf: str
    ) -> None:
        self._refuse_directory(member, parent_fd, leaf)
        target_parts = [
            part for part in member.linkname.split("/") if part not in ("", ".")
        ]
        source_fd = self._open_directory(member, target_parts[:-1], create=False)
        try:
            os.link(
                target_parts[-1],
                leaf,
                src_dir_fd=source_fd,
                dst_dir_fd=parent_fd,
                follow_symlinks=False,
            )
        finally:
            os.close(source_fd)

    def _make_special(self, member: tarfile.TarInfo, parent_fd: int, leaf: str) -> None:
        self._refuse_directory(member, parent_fd, leaf)
        mode = member.mode & 0o777
        if member.isfifo():
            os.mkfifo(leaf, mode, dir_fd=parent_fd)
        else:
            kind = stat.S_IFBLK if member.isblk() else stat.S_IFCHR
            device = os.makedev(member.devmajor, member.devminor)
            os.mknod(leaf, mode | kind, device, dir_fd=parent_fd)

    def _refuse_directory(
        self, member: tarfile.TarInfo, parent_fd: int, leaf: str
    ) -> None:
        if self._clear(parent_fd, leaf):
            raise InvalidInputError(
                f"cannot extract {member.name!r}: a directory of that name already "
                "exists in the destination"
            )

    def _apply_attributes(
        self, member: tarfile.TarInfo, fd: int, *, is_directory: bool
    ) -> None:
        # chown first: it clears setuid/setgid bits that chmod then restores.
        if self.restore_owner:
            os.fchown(fd, member.uid, member.gid)
        mode = stat.S_IMODE(member.mode)
        if self.strip_set_id and not is_directory and mode & _SET_ID_BITS:
            logger.debug("clearing setuid/setgid bits of %s", member.name)
            mode &= ~_SET_ID_BITS
        os.fchmod(fd, mode)
        os.utime(fd, ns=_mtime_ns(member))


def _mtime_ns(member: tarfile.TarInfo) -> tuple[int, int]:
    mtime = round(member.mtime * 1_000_000_000)
    return (mtime, mtime)


def _refuse_local(member: tarfile.TarInfo, where: str) -> NoReturn:
    raise UnsafeArchiveError(
        f"refusing archive member {member.name!r}: {where!r} in the destination is "
        "a symlink or not a directory, and nothing is written through links; "
        "remove it or extract elsewhere",
        member=member.name,
    )


def _local_error(member: tarfile.TarInfo, error: OSError) -> InvalidInputError:
    return InvalidInputError(
        f"cannot extract {member.name!r}: {error.strerror or error}", member=member.name
    )
