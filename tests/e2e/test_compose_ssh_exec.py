"""ext.compose-ssh end to end: running commands (C04, C05, C10, C14)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from collections.abc import Callable

import attrs
import pytest
from compose_ssh_helpers import HostShell, Ran

from sandboxer.errors import BackendError
from sandboxer.models import ExecRequest, ExecStreams, Sandbox
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["sh", "-c", "exit 3"], 3),
        (["no-such-command"], 127),
        (["/workspace/not-executable"], 126),
        (["sh", "-c", "kill -9 $$"], 137),
        (["sh", "-c", "exit 255"], 255),
        (["true"], 0),
    ],
)
def test_exit_code_is_the_commands_own(
    shared_sandbox: Sandbox,
    run: Callable[..., Ran],
    argv: list[str],
    expected: int,
) -> None:
    """C04."""
    run(shared_sandbox, "sh", "-c", "echo x > /workspace/not-executable")
    assert run(shared_sandbox, *argv).exit_code == expected


def test_a_lost_exit_status_is_an_error_not_zero(host: HostShell) -> None:
    """C04: a session whose process dies of a signal sends no exit status.

    `exec` makes the login shell itself the process that is killed.
    """
    with pytest.raises(BackendError, match="without an exit status"):
        host.connection.run(["exec", "sh", "-c", "kill -9 $$"])


def test_exec_into_a_missing_container_is_a_backend_error(
    shared_sandbox: Sandbox, extension: ComposeSshExtension
) -> None:
    gone = attrs.evolve(
        shared_sandbox,
        provider_data={**shared_sandbox.provider_data, "container": "sandboxer-gone"},
    )
    with pytest.raises(BackendError, match="No such container"):
        extension.sandboxer_exec(
            gone,
            ExecRequest(argv=("true",)),
            ExecStreams(stdout=io.BytesIO(), stderr=io.BytesIO()),
        )


def test_stdin_reaches_the_command(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    assert run(shared_sandbox, "cat", stdin=b"some\x00bytes\r\n").stdout == (
        b"some\x00bytes\r\n"
    )


@pytest.mark.parametrize("stdin", [None, b""], ids=["no-stdin", "empty-stdin"])
def test_empty_stdin_does_not_hang(
    shared_sandbox: Sandbox, run: Callable[..., Ran], stdin: bytes | None
) -> None:
    """C10."""
    ran = run(shared_sandbox, "cat", stdin=stdin, timeout=20)
    assert (ran.exit_code, ran.stdout, ran.status.timed_out) == (0, b"", False)


def test_stdin_that_never_ends_does_not_block_a_command_that_ignores_it(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    """C10: the command's end, not stdin's, ends the exec."""
    reader, writer = os.pipe()
    try:
        with open(reader, "rb", buffering=0) as stdin:
            started = time.monotonic()
            ran = run(shared_sandbox, "true", stdin=stdin, timeout=20)
            assert ran.exit_code == 0
            assert time.monotonic() - started < 10
    finally:
        os.close(writer)


def test_twenty_short_piped_execs_each_return(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    """C10 asks for 200 rounds of `echo hi | exec cat`; 20 keep this suite short."""
    for _ in range(20):
        ran = run(shared_sandbox, "cat", stdin=b"hi\n", timeout=20)
        assert (ran.exit_code, ran.stdout) == (0, b"hi\n")


def test_fifty_megabytes_of_stdin_arrive_intact(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    """C10."""
    data = os.urandom(50 * 1000 * 1000)
    ran = run(shared_sandbox, "sha256sum", stdin=data, timeout=120)
    assert ran.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()


def test_ten_mebibytes_on_both_streams_at_once(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    """C05: no deadlock, both streams byte-exact and never merged."""
    script = (
        "head -c 10485760 /dev/urandom > /tmp/out; "
        "head -c 10485760 /dev/urandom > /tmp/err; "
        "sha256sum /tmp/out /tmp/err > /tmp/sums; "
        "cat /tmp/out & cat /tmp/err >&2; wait"
    )
    ran = run(shared_sandbox, "sh", "-c", script, timeout=120)
    sums = run(shared_sandbox, "cat", "/tmp/sums").stdout.decode().split()
    assert ran.exit_code == 0
    assert (len(ran.stdout), len(ran.stderr)) == (10 * MiB, 10 * MiB)
    assert hashlib.sha256(ran.stdout).hexdigest() == sums[0]
    assert hashlib.sha256(ran.stderr).hexdigest() == sums[2]


def test_no_terminal_is_allocated_and_bytes_stay_exact(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    """C14: no pty, so no \\r\\n rewriting and stderr stays apart."""
    ran = run(shared_sandbox, "sh", "-c", "tty; printf 'a\\nb'; printf 'e\\n' >&2")
    assert ran.stdout == b"not a tty\na\nb"
    assert ran.stderr == b"e\n"


def test_a_terminal_only_when_asked(
    shared_sandbox: Sandbox, extension: ComposeSshExtension
) -> None:
    stdout = io.BytesIO()
    status = extension.sandboxer_exec(
        shared_sandbox,
        ExecRequest(argv=("tty",), tty=True, timeout=20),
        ExecStreams(stdout=stdout, stderr=io.BytesIO()),
    )
    assert status.exit_code == 0
    assert stdout.getvalue().startswith(b"/dev/pts/")


def test_env_and_workdir_of_a_request(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    ran = run(
        shared_sandbox,
        "sh",
        "-c",
        'echo "$ONE"; pwd',
        env={"ONE": "1 two"},
        workdir="/tmp",
    )
    assert ran.stdout == b"1 two\n/tmp\n"


def _live_sleeps(run: Callable[..., Ran], sandbox: Sandbox) -> list[str]:
    """Processes named sleep in the container that are not zombies."""
    script = (
        "for stat in /proc/[0-9]*/stat; do "
        'read -r line < "$stat" 2>/dev/null || continue; '
        'case "$line" in *"(sleep) "[!Z]*) echo "$line";; esac; '
        "done"
    )
    return run(sandbox, "sh", "-c", script).stdout.decode().splitlines()


def test_timeout_kills_the_command_and_its_children(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    started = time.monotonic()
    ran = run(
        shared_sandbox,
        "sh",
        "-c",
        "env -i /bin/sleep 300 & sleep 300 & sleep 300",
        timeout=1,
    )
    assert (ran.exit_code, ran.status.timed_out) == (124, True)
    assert time.monotonic() - started < 10
    assert _live_sleeps(run, shared_sandbox) == []


def test_cancel_stops_the_command(
    shared_sandbox: Sandbox, extension: ComposeSshExtension, run: Callable[..., Ran]
) -> None:
    streams = ExecStreams(stdout=io.BytesIO(), stderr=io.BytesIO())
    threading.Timer(0.5, streams.cancel.set).start()
    status = extension.sandboxer_exec(
        shared_sandbox, ExecRequest(argv=("sleep", "300")), streams
    )
    assert (status.exit_code, status.timed_out) == (124, True)
    assert _live_sleeps(run, shared_sandbox) == []


def test_a_dropped_connection_is_reopened(
    shared_sandbox: Sandbox, extension: ComposeSshExtension, run: Callable[..., Ran]
) -> None:
    assert run(shared_sandbox, "true").exit_code == 0
    # Reach into the kept connection to cut it, as a network failure would.
    for connection in extension._connections.values():
        client = getattr(connection, "_client", None)
        if client is not None:
            client.get_transport().close()
    assert run(shared_sandbox, "echo", "again").stdout == b"again\n"


def test_concurrent_execs_share_the_connection(
    shared_sandbox: Sandbox, run: Callable[..., Ran]
) -> None:
    results: list[bytes] = []

    def one(index: int) -> None:
        results.append(run(shared_sandbox, "echo", str(index)).stdout)

    threads = [threading.Thread(target=one, args=(index,)) for index in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(results) == sorted(f"{index}\n".encode() for index in range(12))
