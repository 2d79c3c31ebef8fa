"""ext.compose-ssh end to end on the `local` host: Docker on this machine.

The test host's Docker daemon is this machine's, so the same checks apply;
what differs is the connection (subprocess, no SSH) and where the compose
file lives (under the data directory).
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from compose_ssh_helpers import NOTHING, HostShell, Ran, SandboxFactory

from sandboxer.models import ExecRequest, ExecStreams, no_progress
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e


def test_local_host_runs_the_whole_lifecycle(
    sandboxes: SandboxFactory,
    extension: ComposeSshExtension,
    host: HostShell,
    run: Callable[..., Ran],
    isolated_environment: Path,
) -> None:
    sandbox = sandboxes.create({"host": "local"})
    compose_file = Path(sandbox.provider_data["compose_file"])
    assert compose_file.is_relative_to(isolated_environment)
    assert compose_file.stat().st_mode & 0o077 == 0

    assert run(sandbox, "sh", "-c", "exit 3").exit_code == 3
    assert run(sandbox, "no-such-command").exit_code == 127
    assert run(sandbox, "sha256sum", stdin=b"abc").stdout.startswith(
        b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    assert run(sandbox, "cat", stdin=None).stdout == b""
    timed_out = run(sandbox, "sh", "-c", "sleep 300 & sleep 300", timeout=1)
    assert (timed_out.exit_code, timed_out.status.timed_out) == (124, True)

    terminal = io.BytesIO()
    extension.sandboxer_exec(
        sandbox,
        ExecRequest(argv=("tty",), tty=True, timeout=20),
        ExecStreams(stdout=terminal, stderr=io.BytesIO()),
    )
    assert terminal.getvalue().startswith(b"/dev/pts/")

    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = 6
        tar.addfile(info, io.BytesIO(b"hello\n"))
    archive.seek(0)
    extension.sandboxer_put_files(sandbox, "/workspace", archive, no_progress)
    sink = io.BytesIO()
    extension.sandboxer_get_files(sandbox, "/workspace/hello.txt", sink, no_progress)
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        extracted = tar.extractfile("hello.txt")
        assert extracted is not None and extracted.read() == b"hello\n"

    extension.sandboxer_destroy(sandbox)
    assert host.labelled(sandbox.id) == NOTHING
    assert not compose_file.parent.exists()
