"""ext.compose-ssh end to end: copying files in and out (C06)."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable

import pytest
from compose_ssh_helpers import Ran

from sandboxer.errors import BackendError, NotFoundError
from sandboxer.models import Sandbox, no_progress
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e

UNICODE_NAME = "ünïcødé ✓ spaced.txt"


def _archive(*members: tuple[tarfile.TarInfo, bytes | None]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    buffer.seek(0)
    return buffer


def _file(name: str, data: bytes, mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
    return info, data


def _directory(name: str, mode: int = 0o755) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, 1_600_000_000
    return info, None


def _symlink(name: str, target: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    return info, None


def _tree() -> io.BytesIO:
    return _archive(
        _directory("tree"),
        _file(f"tree/{UNICODE_NAME}", "grüße\n".encode(), 0o640),
        _file("tree/run.sh", b"#!/bin/sh\necho ran\n", 0o755),
        _directory("tree/private", 0o700),
        _file("tree/private/data.bin", bytes(range(256)) * 64, 0o600),
        _directory("tree/empty"),
        _symlink("tree/a", "-1"),
        _symlink("tree/b", "/etc/passwd"),
        _symlink("tree/c", "../outside"),
    )


def _get(extension: ComposeSshExtension, sandbox: Sandbox, source: str) -> bytes:
    sink = io.BytesIO()
    extension.sandboxer_get_files(sandbox, source, sink, no_progress)
    return sink.getvalue()


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {member.name: member for member in archive.getmembers()}


def test_tree_round_trip_keeps_names_modes_and_links(
    shared_sandbox: Sandbox, extension: ComposeSshExtension
) -> None:
    """C06: odd links arrive as links, and none aborts the copy."""
    extension.sandboxer_put_files(
        shared_sandbox, "/workspace/c06", _tree(), no_progress
    )

    data = _get(extension, shared_sandbox, "/workspace/c06/tree")

    members = _members(data)
    assert set(members) == {
        "tree",
        f"tree/{UNICODE_NAME}",
        "tree/run.sh",
        "tree/private",
        "tree/private/data.bin",
        "tree/empty",
        "tree/a",
        "tree/b",
        "tree/c",
    }
    assert members["tree/a"].issym() and members["tree/a"].linkname == "-1"
    assert members["tree/b"].linkname == "/etc/passwd"
    assert members["tree/c"].linkname == "../outside"
    assert members["tree/run.sh"].mode & 0o777 == 0o755
    assert members["tree/private"].mode & 0o777 == 0o700
    assert members[f"tree/{UNICODE_NAME}"].mode & 0o777 == 0o640
    assert members["tree/private/data.bin"].mtime == 1_600_000_000
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        extracted = archive.extractfile(f"tree/{UNICODE_NAME}")
        assert extracted is not None
        assert extracted.read() == "grüße\n".encode()


def test_put_onto_an_existing_symlink_replaces_the_link(
    shared_sandbox: Sandbox, extension: ComposeSshExtension, run: Callable[..., Ran]
) -> None:
    """C06: writing to dir/b never writes where the link b points."""
    passwd_before = run(shared_sandbox, "sha256sum", "/etc/passwd").stdout
    extension.sandboxer_put_files(
        shared_sandbox, "/workspace/c06b", _tree(), no_progress
    )

    replacement = _archive(_file("b", b"new content\n"), _file("c", b"other\n"))
    extension.sandboxer_put_files(
        shared_sandbox, "/workspace/c06b/tree", replacement, no_progress
    )

    assert run(shared_sandbox, "sha256sum", "/etc/passwd").stdout == passwd_before
    kinds = run(
        shared_sandbox,
        "sh",
        "-c",
        "cd /workspace/c06b/tree && for f in b c; do "
        '[ -f "$f" ] && [ ! -L "$f" ] && echo "$f file"; done',
    )
    assert kinds.stdout == b"b file\nc file\n"
    assert run(shared_sandbox, "cat", "/workspace/c06b/tree/b").stdout == (
        b"new content\n"
    )
    assert run(shared_sandbox, "test", "-e", "/workspace/c06b/outside").exit_code == 1


def test_members_that_climb_out_are_refused(
    shared_sandbox: Sandbox, extension: ComposeSshExtension, run: Callable[..., Ran]
) -> None:
    hostile = _archive(
        _file("../escaped.txt", b"x"),
        _file("/tmp/absolute-escape.txt", b"x"),
        _file("kept.txt", b"kept\n"),
    )
    with pytest.raises(BackendError, match=r"\.\."):
        extension.sandboxer_put_files(
            shared_sandbox, "/workspace/climb/inner", hostile, no_progress
        )
    assert run(shared_sandbox, "test", "-e", "/workspace/climb/escaped.txt").exit_code
    assert run(shared_sandbox, "test", "-e", "/tmp/absolute-escape.txt").exit_code
    assert run(shared_sandbox, "cat", "/workspace/climb/inner/kept.txt").stdout == (
        b"kept\n"
    )


def test_get_of_a_single_file_and_of_a_symlink(
    shared_sandbox: Sandbox, extension: ComposeSshExtension
) -> None:
    extension.sandboxer_put_files(
        shared_sandbox, "/workspace/one", _tree(), no_progress
    )

    assert list(_members(_get(extension, shared_sandbox, "/workspace/one/tree/run.sh")))
    members = _members(_get(extension, shared_sandbox, "/workspace/one/tree/b"))
    assert list(members) == ["b"]
    assert members["b"].issym()


def test_get_of_a_missing_path_is_not_found(
    shared_sandbox: Sandbox, extension: ComposeSshExtension
) -> None:
    with pytest.raises(NotFoundError, match="/workspace/nothing-here"):
        _get(extension, shared_sandbox, "/workspace/nothing-here")


def test_progress_reports_every_byte(
    shared_sandbox: Sandbox, extension: ComposeSshExtension
) -> None:
    archive = _tree()
    size = len(archive.getvalue())
    seen: list[tuple[int, int | None]] = []

    extension.sandboxer_put_files(
        shared_sandbox,
        "/workspace/progress",
        archive,
        lambda *update: seen.append(update),
    )

    assert seen[-1][0] == size
    got: list[int] = []
    sink = io.BytesIO()
    extension.sandboxer_get_files(
        shared_sandbox,
        "/workspace/progress/tree",
        sink,
        lambda done, total: got.append(done),
    )
    assert got[-1] == len(sink.getvalue())
