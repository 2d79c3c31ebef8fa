"""Tests for sandboxer.archives: writing, checking, hashing and unpacking tar streams.

Hostile archives are built member by member with tarfile, in memory; every file
touched lives under pytest's tmp_path.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
import stat
import tarfile
import threading
import tracemalloc
from pathlib import Path

import pytest

from sandboxer.archives import (
    COPY_POLICY,
    RESTORE_POLICY,
    ArchivePolicy,
    ArchiveValidator,
    HashingReader,
    extract_stream,
    validate_stream,
    write_tree,
)
from sandboxer.errors import InvalidInputError, NotFoundError, UnsafeArchiveError

running_as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="setting arbitrary owners needs root"
)

# -- building archives -------------------------------------------------------

Member = tuple[tarfile.TarInfo, bytes | None]


def regular(name: str, data: bytes = b"data") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def directory(name: str, mode: int = 0o755) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = mode
    return info, None


def symlink(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def hardlink(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return info, None


def special(name: str, kind: bytes) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.devmajor, info.devminor = 1, 3
    return info, None


def archive(*members: Member) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def tree_archive(*paths: Path, dereference: bool = False) -> bytes:
    sink = io.BytesIO()
    write_tree(list(paths), sink, dereference=dereference)
    return sink.getvalue()


class Trickle:
    """A non-seekable source that hands out at most `chunk` bytes per read."""

    def __init__(self, data: bytes, chunk: int = 1000) -> None:
        self._data = memoryview(data)
        self._chunk = chunk

    def read(self, size: int, /) -> bytes:
        piece = bytes(self._data[: min(size, self._chunk)])
        self._data = self._data[len(piece) :]
        return piece


def link_text(path: Path) -> str:
    """The exact target text of a symlink (Path.readlink() would normalise it)."""
    return os.readlink(path)  # noqa: PTH115


@pytest.fixture
def destination(tmp_path: Path) -> Path:
    path = tmp_path / "destination"
    path.mkdir()
    return path


def extract(data: bytes, destination: Path, **options: object) -> list[str]:
    return extract_stream(io.BytesIO(data), destination, **options)  # type: ignore[arg-type]


# -- C01: writing through an earlier symlink ---------------------------------


def test_restore_refuses_a_file_that_replaces_an_earlier_symlink(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = archive(symlink("notes", str(outside / "x")), regular("notes", b"pwned"))

    with pytest.raises(UnsafeArchiveError, match="'notes'"):
        validate_stream(io.BytesIO(data))


def test_copy_extraction_refuses_a_file_that_replaces_an_earlier_symlink(
    tmp_path: Path, destination: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    data = archive(symlink("notes", str(outside / "x")), regular("notes", b"pwned"))

    with pytest.raises(UnsafeArchiveError, match=r"'notes'.*earlier symlink"):
        extract(data, destination, policy=COPY_POLICY)

    assert not (outside / "x").exists()
    assert list(outside.iterdir()) == []


def test_an_inside_symlink_cannot_be_replaced_by_a_later_member_either() -> None:
    data = archive(regular("real"), symlink("notes", "real"), regular("notes"))

    with pytest.raises(UnsafeArchiveError, match=r"'notes'.*earlier symlink"):
        validate_stream(io.BytesIO(data))


# -- C02: links checked by where they point ----------------------------------


def test_restore_refuses_a_symlink_that_climbs_out_of_the_root() -> None:
    data = archive(
        symlink("keys", "../../../root/.ssh"), regular("keys/authorized_keys")
    )

    with pytest.raises(UnsafeArchiveError, match=r"'keys'.*leaves the archive root"):
        validate_stream(io.BytesIO(data))


def test_copy_extraction_never_writes_through_an_outward_symlink(
    tmp_path: Path,
) -> None:
    destination = tmp_path / "x" / "y" / "destination"
    destination.mkdir(parents=True)
    ssh = tmp_path / "root" / ".ssh"
    ssh.mkdir(parents=True)
    data = archive(
        symlink("keys", "../../../root/.ssh"),
        regular("keys/authorized_keys", b"ssh-ed25519 attacker"),
    )

    with pytest.raises(UnsafeArchiveError, match=r"'keys/authorized_keys'.*'keys'"):
        extract(data, destination, policy=COPY_POLICY)

    assert list(ssh.iterdir()) == []


@pytest.mark.parametrize("policy", [RESTORE_POLICY, COPY_POLICY])
@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([hardlink("hostname", "/etc/hostname")], "absolute"),
        ([hardlink("x", "../x")], "'\\.\\.'"),
        ([hardlink("x", "later"), regular("later")], "earlier regular file"),
        ([regular("a"), symlink("s", "a"), hardlink("h", "s")], "earlier regular"),
        ([regular("a"), hardlink("a", "a")], "itself"),
    ],
)
def test_hardlinks_must_name_an_earlier_file_inside_the_archive(
    members: list[Member], reason: str, policy: ArchivePolicy
) -> None:
    with pytest.raises(UnsafeArchiveError, match=reason):
        validate_stream(io.BytesIO(archive(*members)), policy=policy)


def test_links_that_stay_inside_restore_exactly(destination: Path) -> None:
    data = archive(
        directory("a"),
        regular("a/file", b"shared"),
        directory("b"),
        symlink("b/link", "../a/file"),
        hardlink("c/hard", "a/file"),
    )

    validate_stream(io.BytesIO(data), policy=RESTORE_POLICY)
    extract(data, destination, policy=RESTORE_POLICY)

    assert link_text(destination / "b/link") == "../a/file"
    assert (destination / "b/link").read_bytes() == b"shared"
    original = (destination / "a/file").stat()
    linked = (destination / "c/hard").stat()
    assert (linked.st_dev, linked.st_ino) == (original.st_dev, original.st_ino)


@pytest.mark.parametrize(
    "members",
    [
        [symlink("a/up", ".."), symlink("a/same", "../a/./x")],
        [directory("a/b"), symlink("a/l", "b/../b/../x")],
        [symlink("here", ".")],
    ],
)
def test_symlinks_that_climb_only_through_real_directories_pass(
    members: list[Member],
) -> None:
    validate_stream(io.BytesIO(archive(*members)), policy=RESTORE_POLICY)


@pytest.mark.parametrize(
    ("members", "reason"),
    [
        ([symlink("l", "/etc")], "absolute"),
        ([symlink("a/l", "../../x")], "leaves the archive root"),
        # "x" could become a link to ".." later, so climbing out of it is refused.
        ([symlink("a/l", "x/../.."), symlink("a/x", "..")], "'a/x'.*not a directory"),
        ([symlink("a/up", ".."), symlink("a/l", "up/..")], "'a/up'"),
        ([symlink("l", "")], "empty"),
    ],
)
def test_restore_refuses_symlinks_that_could_point_outside(
    members: list[Member], reason: str
) -> None:
    with pytest.raises(UnsafeArchiveError, match=reason):
        validate_stream(io.BytesIO(archive(*members)), policy=RESTORE_POLICY)


# -- names and kinds ----------------------------------------------------------


@pytest.mark.parametrize("policy", [RESTORE_POLICY, COPY_POLICY])
@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (regular("/etc/cron.d/x"), "absolute"),
        (regular("a/../../x"), "'\\.\\.'"),
        (regular(".."), "'\\.\\.'"),
        (regular(""), "empty name"),
        (regular("."), "archive root"),
        (special("dev/mem", tarfile.CHRTYPE), "device node"),
        (special("dev/sda", tarfile.BLKTYPE), "device node"),
        (special("pipe", tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_unsafe_names_and_special_files_are_refused(
    member: Member, reason: str, policy: ArchivePolicy
) -> None:
    with pytest.raises(UnsafeArchiveError, match=reason):
        validate_stream(io.BytesIO(archive(member)), policy=policy)


def test_special_files_pass_when_the_policy_allows_them() -> None:
    policy = ArchivePolicy(allow_special_files=True)
    data = archive(special("pipe", tarfile.FIFOTYPE))

    assert validate_stream(io.BytesIO(data), policy=policy).member_count == 1


def test_a_member_under_a_file_is_refused() -> None:
    validator = ArchiveValidator()
    validator.check(regular("a")[0])

    with pytest.raises(UnsafeArchiveError, match=r"'a/b'.*not a directory"):
        validator.check(regular("a/b")[0])


def test_gnu_tar_style_dot_slash_names_extract(destination: Path) -> None:
    data = archive(directory("./"), directory("./sub"), regular("./sub/f", b"x"))

    names = extract(data, destination, policy=RESTORE_POLICY)

    assert names == [".", "sub", "sub/f"]
    assert (destination / "sub/f").read_bytes() == b"x"


# -- C06: links in copied trees -----------------------------------------------


def test_odd_links_round_trip_as_links(tmp_path: Path, destination: Path) -> None:
    tree = tmp_path / "dir"
    tree.mkdir()
    targets = {"a": "-1", "b": "/etc/passwd", "c": "../outside", "d": "./x//y/"}
    for name, target in targets.items():
        (tree / name).symlink_to(target)
    (tree / "file").write_bytes(b"content")

    data = tree_archive(tree)
    extract(data, destination)

    for name, target in targets.items():
        assert link_text(destination / "dir" / name) == target
    assert (destination / "dir/file").read_bytes() == b"content"
    with pytest.raises(UnsafeArchiveError, match="'dir/b'"):
        validate_stream(io.BytesIO(data), policy=RESTORE_POLICY)


def test_a_file_replaces_an_existing_symlink_instead_of_writing_through_it(
    tmp_path: Path, destination: Path
) -> None:
    precious = tmp_path / "precious"
    precious.write_bytes(b"keep me")
    (destination / "dir").mkdir()
    (destination / "dir/b").symlink_to(precious)

    extract(archive(regular("dir/b", b"new")), destination)

    assert not (destination / "dir/b").is_symlink()
    assert (destination / "dir/b").read_bytes() == b"new"
    assert precious.read_bytes() == b"keep me"


def test_an_existing_symlinked_parent_in_the_destination_is_not_followed(
    tmp_path: Path, destination: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (destination / "dir").symlink_to(elsewhere)

    with pytest.raises(UnsafeArchiveError, match=r"'dir/x'.*'dir'.*symlink"):
        extract(archive(regular("dir/x")), destination)

    assert list(elsewhere.iterdir()) == []


def test_a_directory_member_replaces_an_existing_symlink(
    tmp_path: Path, destination: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (destination / "dir").symlink_to(elsewhere)

    extract(archive(directory("dir"), regular("dir/x")), destination)

    assert (destination / "dir").is_dir()
    assert not (destination / "dir").is_symlink()
    assert list(elsewhere.iterdir()) == []


def test_dereference_follows_nested_links_and_skips_broken_ones(
    tmp_path: Path, destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "target.txt").write_bytes(b"followed")
    (real / "inner").symlink_to("target.txt")
    (real / "again").symlink_to(".")  # a directory loop once followed
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "nested").symlink_to(real)
    (tree / "dangling").symlink_to(tmp_path / "missing")
    (tree / "loop").symlink_to("loop")
    (tree / "after").write_bytes(b"still copied")

    with caplog.at_level(logging.WARNING, logger="sandboxer.archives"):
        extract(tree_archive(tree, dereference=True), destination)

    copied = destination / "tree"
    assert (copied / "nested").is_dir() and not (copied / "nested").is_symlink()
    assert not (copied / "nested/inner").is_symlink()
    assert (copied / "nested/inner").read_bytes() == b"followed"
    assert (copied / "after").read_bytes() == b"still copied"
    assert not os.path.lexists(copied / "dangling")
    assert not os.path.lexists(copied / "loop")
    messages = caplog.text
    assert "dangling symlink" in messages
    assert "symlink loop" in messages
    assert "loop back to a parent" in messages
    assert not os.path.lexists(copied / "nested/again")


def test_write_tree_skips_sockets_and_fifos_with_a_warning(
    tmp_path: Path, destination: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    os.mkfifo(tree / "pipe")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(tree / "sock"))
    (tree / "file").write_bytes(b"x")

    try:
        with caplog.at_level(logging.WARNING, logger="sandboxer.archives"):
            extract(tree_archive(tree), destination)
    finally:
        server.close()

    assert sorted(p.name for p in (destination / "tree").iterdir()) == ["file"]
    assert "fifos are not copied" in caplog.text
    assert "sockets cannot be copied" in caplog.text


def test_a_file_never_replaces_an_existing_directory(destination: Path) -> None:
    (destination / "d").mkdir()
    (destination / "d/keep").write_bytes(b"x")

    with pytest.raises(InvalidInputError, match=r"'d'.*directory of that name"):
        extract(archive(regular("d")), destination)

    assert (destination / "d/keep").read_bytes() == b"x"


def test_extracting_into_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such directory"):
        extract(archive(regular("f")), tmp_path / "missing")


def test_write_tree_refuses_a_missing_path(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="missing"):
        write_tree([tmp_path / "missing"], io.BytesIO())


def test_write_tree_returns_the_bytes_written_and_reports_progress(
    tmp_path: Path,
) -> None:
    (tmp_path / "f").write_bytes(b"x" * 5000)
    sink = io.BytesIO()
    updates: list[tuple[int, int | None]] = []

    written = write_tree(
        [tmp_path / "f"],
        sink,
        progress=lambda done, total: updates.append((done, total)),
    )

    assert written == len(sink.getvalue())
    assert updates[-1] == (written, None)


def test_hardlinked_files_are_copied_as_hardlinks(
    tmp_path: Path, destination: Path
) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "one").write_bytes(b"same inode")
    os.link(tree / "one", tree / "two")

    extract(tree_archive(tree), destination, policy=RESTORE_POLICY)

    one, two = (destination / "tree/one").stat(), (destination / "tree/two").stat()
    assert one.st_ino == two.st_ino
    assert (destination / "tree/two").read_bytes() == b"same inode"


# -- C11: owners, modes, mtimes, empty directories ---------------------------

OLD = 1_000_000_000  # 2001-09-09


@running_as_root
def test_owners_modes_mtimes_and_empty_directories_round_trip(
    tmp_path: Path, destination: Path
) -> None:
    workspace = tmp_path / "workspace"
    (workspace / "private").mkdir(parents=True)
    (workspace / "empty").mkdir()
    tool = workspace / "private" / "tool"
    tool.write_bytes(b"#!/bin/sh\n")
    os.chown(tool, 1234, 2345)
    tool.chmod(0o4755)
    (workspace / "private").chmod(0o700)
    for path in (tool, workspace / "empty", workspace / "private", workspace):
        os.utime(path, (OLD, OLD))

    data = tree_archive(workspace)
    validate_stream(io.BytesIO(data), policy=RESTORE_POLICY)
    extract(data, destination, policy=RESTORE_POLICY, numeric_owner=True)

    restored = destination / "workspace"
    for relative in ("", "empty", "private", "private/tool"):
        before = (workspace / relative).lstat()
        after = (restored / relative).lstat()
        assert after.st_mode == before.st_mode, relative
        assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
        assert after.st_mtime == OLD, relative
    assert stat.S_IMODE((restored / "private/tool").stat().st_mode) == 0o4755
    assert (restored / "private/tool").stat().st_uid == 1234
    assert list((restored / "empty").iterdir()) == []


@running_as_root
def test_root_without_owner_restore_drops_setuid_bits(destination: Path) -> None:
    info, data = regular("tool", b"x")
    info.mode = 0o4755
    info.uid = 0

    extract(archive((info, data)), destination)

    assert stat.S_IMODE((destination / "tool").stat().st_mode) == 0o755


# -- hashing and stream integrity --------------------------------------------


def test_summary_hash_covers_the_exact_raw_bytes() -> None:
    data = archive(directory("d"), regular("d/f", b"x" * 3000)) + b"\0" * 4096

    summary = validate_stream(Trickle(data))

    assert summary.sha256 == hashlib.sha256(data).hexdigest()
    assert summary.size_bytes == len(data)
    assert (summary.member_count, summary.file_bytes) == (2, 3000)


def test_checksum_mismatch_is_refused() -> None:
    data = archive(regular("f"))

    with pytest.raises(
        UnsafeArchiveError, match=r"^checksum mismatch: expected 0+, got"
    ):
        validate_stream(io.BytesIO(data), expected_sha256="0" * 64)


def test_a_matching_checksum_passes_in_any_case() -> None:
    data = archive(regular("f"))
    expected = hashlib.sha256(data).hexdigest().upper()

    assert validate_stream(io.BytesIO(data), expected_sha256=expected).sha256 == (
        expected.lower()
    )


def test_hashing_reader_hashes_what_it_hands_out() -> None:
    reader = HashingReader(Trickle(b"abc" * 1000, chunk=7))

    first = reader.read(10)  # a raw read: short when the source is
    reader.drain()

    assert first == b"abcabca"
    assert reader.bytes_read == 3000
    assert reader.sha256 == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_members_hidden_after_a_bad_header_are_refused() -> None:
    visible = archive(regular("a"))[:1024]  # one header and one data block
    hidden = archive(regular("evil", b"hidden"))

    with pytest.raises(UnsafeArchiveError, match="after its end-of-archive marker"):
        validate_stream(io.BytesIO(visible + b"\xff" * 512 + hidden))


def test_a_truncated_archive_is_refused() -> None:
    cut = archive(regular("a"), regular("b"))[:1024]

    with pytest.raises(InvalidInputError, match="truncated"):
        validate_stream(io.BytesIO(cut))


def test_an_archive_cut_inside_a_file_fails_extraction(destination: Path) -> None:
    cut = archive(regular("big", b"x" * 5000))[:2048]

    with pytest.raises(InvalidInputError, match="corrupt tar archive"):
        extract(cut, destination)


def test_a_stream_that_is_not_tar_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not a tar archive"):
        validate_stream(io.BytesIO(b""))


# -- names ----------------------------------------------------------------------


def test_unicode_and_long_names_round_trip(tmp_path: Path, destination: Path) -> None:
    tree = tmp_path / "tree"
    long_name = "n" * 200
    (tree / "ÄÖ ü 日本").mkdir(parents=True)
    (tree / "ÄÖ ü 日本" / long_name).write_bytes(b"long")
    (tree / "ÄÖ ü 日本" / "link").symlink_to(long_name)

    names = extract(tree_archive(tree), destination, policy=RESTORE_POLICY)

    assert f"tree/ÄÖ ü 日本/{long_name}" in names
    copied = destination / "tree" / "ÄÖ ü 日本"
    assert (copied / long_name).read_bytes() == b"long"
    assert link_text(copied / "link") == long_name


# -- large streams --------------------------------------------------------------


def test_a_100_megabyte_stream_validates_with_bounded_memory(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as file:
        file.truncate(100 * 1024 * 1024)  # sparse: no disk space used
    read_end, write_end = os.pipe()

    def produce() -> None:
        with open(write_end, "wb") as pipe:
            write_tree([big], pipe)

    producer = threading.Thread(target=produce)
    tracemalloc.start()
    try:
        producer.start()
        with open(read_end, "rb", buffering=0) as pipe:
            summary = validate_stream(pipe)
        producer.join()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert summary.file_bytes == 100 * 1024 * 1024
    assert summary.size_bytes > summary.file_bytes
    assert peak < 32 * 1024 * 1024


def _pax_archive(*members: tarfile.TarInfo) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member in members:
            archive.addfile(
                member, io.BytesIO(b"x" * member.size) if member.isfile() else None
            )
    return buffer.getvalue()


def test_sparse_name_headers_that_gnu_tar_would_read_differently_are_refused() -> None:
    link = tarfile.TarInfo("d1/d2/l")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc"
    link.pax_headers = {"GNU.sparse.name": "escape", "path": "d1/d2/l"}
    data = _pax_archive(link)

    with pytest.raises(UnsafeArchiveError, match="GNU sparse"):
        validate_stream(io.BytesIO(data))


def test_names_longer_than_any_file_system_takes_are_refused() -> None:
    member = tarfile.TarInfo("a/" + "n" * 5000)
    member.size = 1

    with pytest.raises(UnsafeArchiveError, match="longer than 4096 bytes") as caught:
        validate_stream(io.BytesIO(_pax_archive(member)))
    assert len(caught.value.message) < 300
