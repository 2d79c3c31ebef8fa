"""sandboxer SIGKILLed mid-operation on an ext.compose-ssh host (C13).

`sandboxer create` and `sandboxer snapshot` run as real processes (the
console script next to this Python) against the e2e data directory and are
killed while the host is working for them. The records must say
`provisioning`/`pending`, never `ready`; whatever exists on the host carries
the sandbox's labels; the manager's reap (with no grace period) removes it
all, and the name can be used again.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from compose_ssh_helpers import NOTHING, HostShell

from sandboxer.manager import SandboxManager
from sandboxer.models import Sandbox, SandboxStatus, SnapshotRecord, SnapshotStatus
from sandboxer_compose_ssh.compose import project_names

pytestmark = pytest.mark.e2e

T = TypeVar("T")

PROFILE = "profile.compose-checkpoint"
SANDBOXER = Path(sys.executable).parent / "sandboxer"

# Waits (up to $2 tenths of a second) until the command in the rest of the
# arguments prints something; exits 1 if it never does.
_WAIT_FOR_OUTPUT = r"""
tries=$1
shift
while [ "$tries" -gt 0 ]; do
    [ -n "$("$@" 2>/dev/null)" ] && exit 0
    sleep 0.05
    tries=$((tries - 1))
done
exit 1
"""

# Waits until no process on the host mentions "$1$2" any more (given in two
# parts, so that this script's own command line does not mention it).
_WAIT_FOR_PROCESSES = r"""
text=$1$2
tries=300
while [ "$tries" -gt 0 ]; do
    ps -eo args | grep -F -- "$text" | grep -v '^grep ' >/dev/null || exit 0
    sleep 0.1
    tries=$((tries - 1))
done
exit 1
"""

# Kills the host-side shells of a snapshot ("$1$2" is its id): what a crash
# of the host's sshd session, or of the host itself, would leave behind.
_KILL_SNAPSHOT_SCRIPT = r"""
text=$1$2
ps -eo pid=,comm=,args= | while read -r pid command args; do
    [ "$command" = sh ] || continue
    case $args in *"$text"*) kill -KILL "$pid" ;; esac
done
"""


@pytest.fixture
def cleanup(manager: SandboxManager) -> Iterator[list[str]]:
    """Sandbox ids to destroy at the end, whatever happened."""
    sandbox_ids: list[str] = []
    yield sandbox_ids
    for sandbox_id in sandbox_ids:
        manager.destroy(sandbox_id)


def test_create_killed_while_provisioning_is_reaped_and_the_name_reused(
    manager: SandboxManager, host: HostShell, cleanup: list[str]
) -> None:
    name = f"crash-{secrets.token_hex(4)}"
    process = _start("create", "-p", PROFILE, "-n", name)
    try:
        record = _wait_for(lambda: _sandbox_named(manager, name), process)
        cleanup.append(record.id)
        label = f"label=sandboxer.sandbox-id={record.id}"
        _wait_on_host(host, "docker", "network", "ls", "-q", "--filter", label)
    finally:
        _kill(process)
    project = project_names(record.id).project
    _wait_for_host_processes(host, project)

    assert manager.get(record.id).status is SandboxStatus.PROVISIONING
    labelled = host.labelled(record.id)
    assert labelled["networks"], "the kill came before anything was created"
    assert _named(host, project) <= {
        item for items in labelled.values() for item in items
    }

    reaped = manager.reap(stale_after=0)

    assert record.id in [sandbox.id for sandbox in reaped]
    assert manager.get(record.id).status is SandboxStatus.DESTROYED
    assert host.labelled(record.id) == NOTHING
    again = manager.create(profile=PROFILE, name=name)
    cleanup.append(again.id)
    assert again.status is SandboxStatus.READY


@pytest.mark.parametrize("host_side", ["alive", "killed too"])
def test_snapshot_killed_while_streaming_is_reaped_and_the_sandbox_resumed(
    host_side: str, manager: SandboxManager, host: HostShell, cleanup: list[str]
) -> None:
    sandbox = manager.create(profile=PROFILE)
    cleanup.append(sandbox.id)
    filled = manager.exec(
        sandbox.id, ["sh", "-c", "head -c 524288000 /dev/zero >/workspace/zeros"]
    )
    assert filled.exit_code == 0, filled.stderr
    directory = host.run("sh", "-c", 'printf %s "$HOME"').text + "/.sandboxer/snapshots"
    container = sandbox.provider_data["container"]

    process = _start("snapshot", sandbox.id, "--pause")
    try:
        snapshot = _wait_for(lambda: _snapshot_of(manager, sandbox), process)
        partial = f"{directory}/{snapshot.id}.tar.partial"
        _wait_on_host(host, "find", partial, "-size", "+1k")
        if host_side == "killed too":
            host.run("sh", "-c", _KILL_SNAPSHOT_SCRIPT, "sh", *_halves(snapshot.id))
    finally:
        _kill(process)

    assert manager.get_snapshot(snapshot.id).status is SnapshotStatus.PENDING
    if host_side == "killed too":
        # Nothing on the host noticed: the sandbox stays paused until reap.
        assert _state(host, container) == "paused"
    helper_label = f"label=sandboxer.snapshot-id={snapshot.id}"
    owners = host.run(
        "docker",
        "ps",
        "-a",
        "--filter",
        helper_label,
        "--format",
        '{{.Label "sandboxer.sandbox-id"}} {{.Label "sandboxer.managed"}}',
    ).text.split("\n")
    assert all(line == f"{sandbox.id} true" for line in owners if line.strip()), owners

    reaped = manager.reap_snapshots(stale_after=0)

    assert snapshot.id in [record.id for record in reaped]
    assert manager.get_snapshot(snapshot.id).status is SnapshotStatus.FAILED
    assert host.run("docker", "ps", "-aq", "--filter", helper_label).text == ""
    leftovers = host.run("sh", "-c", 'ls -A "$1"', "sh", directory).text.split()
    assert [name for name in leftovers if name.startswith(snapshot.id)] == []
    assert _state(host, container) == "running"


def _state(host: HostShell, container: str) -> str:
    result = host.run("docker", "inspect", "--format", "{{.State.Status}}", container)
    return result.text.strip()


def _halves(text: str) -> tuple[str, str]:
    return text[:5], text[5:]


def _start(*args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SANDBOXER_PLUGINS": "ext.compose-ssh"}
    return subprocess.Popen(
        [str(SANDBOXER), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stderr is not None:
        process.stderr.close()


def _wait_for(
    find: Callable[[], T | None], process: subprocess.Popen[bytes], timeout: float = 60
) -> T:
    """Poll `find` until it returns something; fail if the process ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = find()
        if found is not None:
            return found
        if process.poll() is not None:
            stderr = process.stderr.read() if process.stderr else b""
            pytest.fail(f"sandboxer exited {process.returncode} early: {stderr!r}")
        time.sleep(0.02)
    pytest.fail(f"nothing appeared within {timeout:g}s")


def _sandbox_named(manager: SandboxManager, name: str) -> Sandbox | None:
    for record in manager.sandboxes.list():
        if record.name == name and record.is_live:
            assert record.status is SandboxStatus.PROVISIONING
            return record
    return None


def _snapshot_of(manager: SandboxManager, sandbox: Sandbox) -> SnapshotRecord | None:
    for record in manager.snapshots.list():
        if record.sandbox_id == sandbox.id:
            assert record.status is SnapshotStatus.PENDING
            return record
    return None


def _wait_on_host(host: HostShell, *argv: str) -> None:
    waited = host.run("sh", "-c", _WAIT_FOR_OUTPUT, "sh", "600", *argv)
    assert waited.exit_code == 0, f"{' '.join(argv)} never printed anything"


def _wait_for_host_processes(host: HostShell, text: str) -> None:
    """Let commands the killed CLI started on the host finish or die first."""
    waited = host.run("sh", "-c", _WAIT_FOR_PROCESSES, "sh", *_halves(text))
    assert waited.exit_code == 0, f"processes mentioning {text} kept running"


def _named(host: HostShell, project: str) -> set[str]:
    """Ids and names of the containers, volumes and networks named after it."""
    found = set()
    for argv in (
        ["docker", "ps", "-aq", "--filter", f"name={project}"],
        ["docker", "volume", "ls", "-q", "--filter", f"name={project}"],
        ["docker", "network", "ls", "-q", "--filter", f"name={project}"],
    ):
        found.update(host.run(*argv).text.split())
    return found
