"""ext.compose-ssh end to end: hostile strings are data, never shell code.

Each hostile string would create a marker file if any shell on the host or
in the container parsed it. Values go everywhere a user can put one: sandbox
name and labels, settings env, exec argv, env and workdir, file paths.
"""

from __future__ import annotations

import io
import posixpath
import secrets
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from compose_ssh_helpers import HostShell, Ran, SandboxFactory

from sandboxer.models import no_progress
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e

TOKEN = secrets.token_hex(4)
MARKERS = [f"/tmp/sandboxer-pwned-{TOKEN}-{index}" for index in range(5)]
HOSTILE = [
    f"'; touch {MARKERS[0]} #",
    f"$(touch {MARKERS[1]})",
    f"`touch {MARKERS[2]}`",
    f"x\ntouch {MARKERS[3]}\n",
    f'" ; touch {MARKERS[4]} ; echo "$HOME',
]


def _environment(ran: Ran) -> dict[str, str]:
    entries = ran.stdout.decode().split("\0")
    return dict(entry.split("=", 1) for entry in entries if "=" in entry)


def _assert_no_marker(
    host: HostShell, run: Callable[..., Ran], sandbox: object
) -> None:
    for marker in MARKERS:
        assert not Path(marker).exists(), marker
        assert not host.exists(marker), marker
        assert run(sandbox, "test", "-e", marker).exit_code == 1, marker


def test_hostile_strings_never_run(
    sandboxes: SandboxFactory,
    extension: ComposeSshExtension,
    host: HostShell,
    run: Callable[..., Ran],
) -> None:
    env = {f"HOSTILE_{index}": value for index, value in enumerate(HOSTILE)}
    sandbox = sandboxes.create(
        {"env": env},
        name=HOSTILE[0],
        labels={f"k{index}": value for index, value in enumerate(HOSTILE)},
    )

    environment = _environment(run(sandbox, "cat", "/proc/self/environ"))
    assert {key: environment[key] for key in env} == env
    assert run(sandbox, "echo", *HOSTILE).stdout == " ".join(HOSTILE).encode() + b"\n"
    ran = run(sandbox, "cat", "/proc/self/environ", env={"EXTRA": HOSTILE[1]})
    assert _environment(ran)["EXTRA"] == HOSTILE[1]

    for index, value in enumerate(HOSTILE):
        directory = f"/workspace/{value}"
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(value.replace("/", "_"))
            info.size = 1
            tar.addfile(info, io.BytesIO(b"!"))
        archive.seek(0)
        extension.sandboxer_put_files(sandbox, directory, archive, no_progress)
        ran = run(sandbox, "pwd", workdir=directory)
        assert ran.stdout == directory.encode() + b"\n", index
        sink = io.BytesIO()
        extension.sandboxer_get_files(sandbox, directory, sink, no_progress)
        with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
            assert tar.getnames()[0] == posixpath.basename(directory)

    _assert_no_marker(host, run, sandbox)
