"""Input checks the manager makes before any backend sees the request."""

from __future__ import annotations

import io
import tarfile

import pytest

from sandboxer.errors import InvalidInputError
from sandboxer.manager import SandboxManager


def _tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        member = tarfile.TarInfo(name)
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


@pytest.mark.parametrize(
    "upload", [b"", b"this is not a tar archive" * 100, b"\x01" * 511]
)
def test_an_upload_that_is_not_a_tar_archive_is_bad_input(
    manager: SandboxManager, upload: bytes
) -> None:
    sandbox = manager.create(extension="ext.saas-stub")

    with pytest.raises(InvalidInputError, match="not a tar archive"):
        manager.put_files(sandbox.id, "/workspace", io.BytesIO(upload))


def test_a_tar_upload_arrives_byte_for_byte(manager: SandboxManager) -> None:
    sandbox = manager.create(extension="ext.saas-stub")

    manager.put_files(sandbox.id, "/workspace", io.BytesIO(_tar("a.txt", b"x" * 700)))

    assert manager.exec(sandbox.id, ["cat", "/workspace/a.txt"]).stdout == b"x" * 700
