"""ext.compose-ssh snapshots end to end, through a SandboxManager (C01, C02, C11, C14).

A workspace with every kind of entry a restore must keep (a 100 MB file,
links, a 0700 directory, an empty one, setuid, foreign owners, old mtimes,
unicode and long names) is snapshotted once per module; restores are
compared with it through a manifest computed inside the containers. Hostile
archives are crafted here with tarfile, put on the host as snapshot files
with matching ready records, and must be refused before anything is
extracted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pty
import secrets
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from compose_ssh_helpers import NOTHING, HostShell

from sandboxer.config import load_config
from sandboxer.errors import BackendError, InvalidInputError, UnsafeArchiveError
from sandboxer.manager import SandboxManager
from sandboxer.models import (
    Sandbox,
    SandboxStatus,
    SnapshotRecord,
    SnapshotStatus,
    no_progress,
    utcnow,
)
from sandboxer.stores import JsonSnapshotStore
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e

PROFILE = "profile.compose-checkpoint"
LONG_NAME = "n" * 196 + ".txt"
UNICODE_NAME = "ünïcödé-名前-😀.txt"

# Builds the workspace of the round-trip tests, as root in the sandbox.
TREE_SCRIPT = r"""
set -e
cd /workspace
head -c 104857600 /dev/urandom >big.bin
mkdir -p a/b c private empty owned-dir "deep/$1"
echo data >a/b/file
ln -s ../a/b/file c/up-and-over
ln -s b/file a/down
ln a/b/file c/hardlink
echo secret >private/key
printf '#!/bin/sh\necho hi\n' >setuid-tool
chmod 4755 setuid-tool
echo owned >owned-dir/owned-file
chown -R 1234:2345 owned-dir
chown -h 1234:2345 c/up-and-over
echo unicode >"$2"
echo long >"$1"
echo deeper >"deep/$1/$1"
touch -t 200102030405.06 big.bin setuid-tool a/b/file owned-dir/owned-file "$1"
touch -h -t 199901020304.05 c/up-and-over
chmod 0700 private
touch -t 200001010000.00 private a a/b c empty owned-dir deep "deep/$1" .
"""

# One line per entry: path, type, mode, uid, gid, mtime (ns), size (not for
# directories, whose size depends on their history), inode, link count,
# sha256 of regular files, symlink target.
MANIFEST_SCRIPT = r"""
cd /workspace
find . | sort | while IFS= read -r path; do
    kind=$(stat -c %F "$path")
    stats=$(stat -c '%a|%u|%g|%y|%i|%h' "$path")
    size=$(stat -c %s "$path")
    digest= target=
    case $kind in
        "regular file"|"regular empty file") digest=$(sha256sum <"$path") ;;
        "symbolic link") target=$(readlink "$path") ;;
        directory) size=- ;;
    esac
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$kind" "$stats" "$size" \
        "${digest%% *}" "$target"
done
"""


@dataclass(frozen=True)
class Entry:
    kind: str
    mode: str
    uid: str
    gid: str
    mtime: str
    links: str
    size: str
    sha256: str
    target: str


@dataclass(frozen=True)
class Manifest:
    entries: dict[str, Entry]
    hardlinks: frozenset[frozenset[str]]
    """Groups of paths that share an inode (more than one path each)."""


@dataclass
class Sandboxes:
    """Creates and restores through the manager; removes everything at the end."""

    manager: SandboxManager
    sandbox_ids: list[str] = field(default_factory=list)
    snapshot_ids: list[str] = field(default_factory=list)

    def create(self, **settings: object) -> Sandbox:
        sandbox = self.manager.create(profile=PROFILE, settings=dict(settings))
        self.sandbox_ids.append(sandbox.id)
        return sandbox

    def snapshot(self, sandbox: Sandbox, *, pause: bool = False) -> SnapshotRecord:
        snapshot = self.manager.snapshot(sandbox.id, pause=pause)
        self.snapshot_ids.append(snapshot.id)
        return snapshot

    def restore(self, snapshot: SnapshotRecord, **settings: object) -> Sandbox:
        try:
            restored = self.manager.restore(snapshot.id, settings=dict(settings))
        finally:
            self.sandbox_ids.extend(
                record.id
                for record in self.manager.sandboxes.list()
                if record.restored_from == snapshot.id
                and record.id not in self.sandbox_ids
            )
        return restored

    def run(self, sandbox: Sandbox, script: str, *args: str) -> bytes:
        result = self.manager.exec(sandbox.id, ["sh", "-c", script, "sh", *args])
        assert result.exit_code == 0, result.stderr
        return result.stdout

    def manifest(self, sandbox: Sandbox) -> Manifest:
        entries = {}
        inodes: dict[str, set[str]] = {}
        for line in self.run(sandbox, MANIFEST_SCRIPT).decode().splitlines():
            path, kind, stats, size, digest, target = line.split("\t")
            mode, uid, gid, mtime, inode, links = stats.split("|")
            entries[path] = Entry(
                kind, mode, uid, gid, mtime, links, size, digest, target
            )
            inodes.setdefault(inode, set()).add(path)
        groups = frozenset(
            frozenset(paths) for paths in inodes.values() if len(paths) > 1
        )
        return Manifest(entries, groups)

    def close(self) -> None:
        for snapshot_id in self.snapshot_ids:
            record = self.manager.get_snapshot(snapshot_id)
            if record.status is not SnapshotStatus.PENDING:
                self.manager.delete_snapshot(snapshot_id)
        for sandbox_id in self.sandbox_ids:
            self.manager.destroy(sandbox_id)


@pytest.fixture(scope="module")
def tracked(manager: SandboxManager) -> Iterator[Sandboxes]:
    sandboxes = Sandboxes(manager)
    yield sandboxes
    sandboxes.close()


@dataclass(frozen=True)
class TreeSnapshot:
    source: Sandbox
    snapshot: SnapshotRecord
    manifest: Manifest


@pytest.fixture(scope="module")
def tree_snapshot(tracked: Sandboxes) -> TreeSnapshot:
    """A sandbox holding the C11 tree, its manifest and a snapshot of it."""
    source = tracked.create()
    tracked.run(source, TREE_SCRIPT, LONG_NAME, UNICODE_NAME)
    manifest = tracked.manifest(source)
    return TreeSnapshot(source, tracked.snapshot(source), manifest)


@pytest.fixture(scope="module")
def empty_sandbox(tracked: Sandboxes) -> Sandbox:
    """A fresh sandbox; refused restores into it must leave its workspace empty."""
    return tracked.create()


@pytest.fixture(scope="module")
def snapshot_dir(host: HostShell) -> str:
    return host.run("sh", "-c", 'printf %s "$HOME"').text + "/.sandboxer/snapshots"


# --- round trip ---------------------------------------------------------------


def test_the_tree_holds_what_the_restore_must_keep(
    tree_snapshot: TreeSnapshot,
) -> None:
    entries = tree_snapshot.manifest.entries
    assert entries["./big.bin"].size == str(100 * 1024 * 1024)
    assert entries["./setuid-tool"].mode == "4755"
    assert entries["./private"].mode == "700"
    assert entries["./empty"].kind == "directory"
    owned = entries["./owned-dir/owned-file"]
    assert (owned.uid, owned.gid) == ("1234", "2345")
    assert entries["./c/up-and-over"].target == "../a/b/file"
    assert entries["./a/b/file"].mtime.startswith("2001-02-03 04:05:06")
    assert entries[f"./deep/{LONG_NAME}/{LONG_NAME}"].kind == "regular file"
    assert entries[f"./{UNICODE_NAME}"].kind == "regular file"
    assert frozenset({"./a/b/file", "./c/hardlink"}) in tree_snapshot.manifest.hardlinks


def test_snapshot_is_ready_with_the_size_and_sha256_of_the_archive(
    tree_snapshot: TreeSnapshot, host: HostShell, snapshot_dir: str
) -> None:
    snapshot = tree_snapshot.snapshot
    path = f"{snapshot_dir}/{snapshot.id}.tar"
    assert snapshot.status is SnapshotStatus.READY
    assert snapshot.location == f"testhost:{path}"
    assert snapshot.size_bytes is not None and snapshot.size_bytes > 100 * 1024 * 1024
    assert host.run("sha256sum", path).text.split()[0] == snapshot.sha256
    assert int(host.run("wc", "-c", path).text.split()[0]) == snapshot.size_bytes
    leftovers = host.run("sh", "-c", 'ls -A "$1"', "sh", snapshot_dir).text.split()
    assert [name for name in leftovers if name.startswith(snapshot.id)] == [
        f"{snapshot.id}.tar"
    ]


def test_restore_reproduces_the_workspace_and_leaves_the_source_alone(
    tree_snapshot: TreeSnapshot, tracked: Sandboxes
) -> None:
    source = tree_snapshot.source
    tracked.run(source, "echo changed >/workspace/a/b/file; rm /workspace/big.bin")

    restored = tracked.restore(tree_snapshot.snapshot)

    assert restored.status is SandboxStatus.READY
    assert restored.restored_from == tree_snapshot.snapshot.id
    assert tracked.manifest(restored) == tree_snapshot.manifest
    assert tracked.run(source, "cat /workspace/a/b/file") == b"changed\n"


def test_restore_works_after_the_source_is_destroyed(
    tree_snapshot: TreeSnapshot, tracked: Sandboxes, manager: SandboxManager
) -> None:
    # Runs after the tests above, which still use the source.
    manager.destroy(tree_snapshot.source.id)

    restored = tracked.restore(tree_snapshot.snapshot)

    assert tracked.manifest(restored) == tree_snapshot.manifest


def test_an_unchanged_workspace_gives_an_identical_archive_from_a_terminal_or_a_pipe(
    tracked: Sandboxes, host: HostShell, snapshot_dir: str
) -> None:
    sandbox = tracked.create()
    tracked.run(sandbox, "printf 'a\\r\\nb\\n' >/workspace/crlf; echo x >/workspace/y")

    from_terminal = _cli_snapshot(sandbox.id, terminal=True)
    from_pipe = _cli_snapshot(sandbox.id, terminal=False)
    tracked.snapshot_ids += [from_terminal.id, from_pipe.id]

    assert from_terminal.sha256 == from_pipe.sha256
    compared = host.run(
        "cmp",
        f"{snapshot_dir}/{from_terminal.id}.tar",
        f"{snapshot_dir}/{from_pipe.id}.tar",
    )
    assert compared.exit_code == 0, compared.text


def test_delete_removes_the_archive_and_is_idempotent(
    tracked: Sandboxes,
    manager: SandboxManager,
    extension: ComposeSshExtension,
    host: HostShell,
    snapshot_dir: str,
) -> None:
    sandbox = tracked.create()
    snapshot = tracked.snapshot(sandbox)
    assert host.exists(f"{snapshot_dir}/{snapshot.id}.tar")

    deleted = manager.delete_snapshot(snapshot.id)
    extension.sandboxer_delete_snapshot(deleted)

    assert deleted.status is SnapshotStatus.DELETED
    assert not host.exists(f"{snapshot_dir}/{snapshot.id}.tar")


def test_snapshot_and_restore_on_the_local_host(
    tracked: Sandboxes, isolated_environment: Path
) -> None:
    sandbox = tracked.create(host="local")
    tracked.run(
        sandbox,
        "mkdir -p /workspace/d && echo here >/workspace/d/f && "
        "chown 1234:2345 /workspace/d/f && chmod 4750 /workspace/d/f",
    )

    snapshot = tracked.snapshot(sandbox)
    restored = tracked.restore(snapshot)

    host_name, path = (snapshot.location or "").split(":", 1)
    assert host_name == "local"
    assert Path(path).is_relative_to(isolated_environment)
    assert Path(path).stat().st_size == snapshot.size_bytes
    assert tracked.manifest(restored) == tracked.manifest(sandbox)


# --- pause ----------------------------------------------------------------------


def test_pause_freezes_the_sandbox_only_while_archiving(
    tracked: Sandboxes, host: HostShell
) -> None:
    sandbox = tracked.create()
    since = _host_time(host)

    tracked.snapshot(sandbox, pause=True)

    container = sandbox.provider_data["container"]
    assert _container_state(host, container) == "running"
    assert _pause_events(host, container, since) == ["pause", "unpause"]


def test_pause_is_undone_when_the_snapshot_fails(
    manager: SandboxManager,
    host: HostShell,
    snapshot_dir: str,
    e2e_environment: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = e2e_environment / "config-badtool.toml"
    config.write_text(
        Path(os.environ["SANDBOXER_CONFIG"]).read_text()
        + _copy_of_testhost("testhost-badtool", "sandboxer/no-such-tool-image:1")
    )
    monkeypatch.setenv("SANDBOXER_CONFIG", str(config))
    sandbox = manager.create(profile=PROFILE, settings={"host": "testhost-badtool"})
    try:
        container = sandbox.provider_data["container"]
        since = _host_time(host)

        with pytest.raises(BackendError, match="no-such-tool-image"):
            manager.snapshot(sandbox.id, pause=True)

        assert _container_state(host, container) == "running"
        assert _pause_events(host, container, since) == ["pause", "unpause"]
        (failed,) = manager.list_snapshots(sandbox=sandbox.id)
        assert failed.status is SnapshotStatus.FAILED
        assert "no-such-tool-image" in (failed.error or "")
        leftovers = host.run("sh", "-c", 'ls -A "$1"', "sh", snapshot_dir).text
        assert failed.id not in leftovers
    finally:
        manager.destroy(sandbox.id)


# --- refusals -------------------------------------------------------------------


def test_a_tampered_archive_is_refused_and_the_new_sandbox_fails(
    tracked: Sandboxes, manager: SandboxManager, host: HostShell, snapshot_dir: str
) -> None:
    sandbox = tracked.create()
    tracked.run(sandbox, "echo original-content >/workspace/notes.txt")
    snapshot = tracked.snapshot(sandbox)
    path = f"{snapshot_dir}/{snapshot.id}.tar"
    archive = host.run("cat", path).stdout
    offset = archive.index(b"original-content")
    flipped = host.run(
        "dd", f"of={path}", "bs=1", f"seek={offset}", "conv=notrunc", input=b"O"
    )
    assert flipped.exit_code == 0, flipped.stderr

    with pytest.raises(UnsafeArchiveError, match="checksum mismatch"):
        tracked.restore(snapshot)

    (restored,) = [
        record
        for record in manager.list(include_destroyed=True)
        if record.restored_from == snapshot.id
    ]
    assert restored.status is SandboxStatus.FAILED
    assert "checksum mismatch" in (restored.error or "")
    assert host.labelled(restored.id) == NOTHING


@dataclass(frozen=True)
class Hostile:
    """A crafted archive and the member a restore must name when refusing it."""

    member: str
    build: Callable[[tarfile.TarFile, str], None]


def _c01_symlink_then_file(archive: tarfile.TarFile, outside: str) -> None:
    _add_symlink(archive, "notes", outside)
    _add_file(archive, "notes", b"written through the link\n")


def _c02_symlink_then_file_below_it(archive: tarfile.TarFile, outside: str) -> None:
    _add_symlink(archive, "keys", "../../../root/.ssh")
    _add_file(archive, "keys/authorized_keys", b"ssh-ed25519 AAAA attacker\n")


def _c02_hardlink_outside(archive: tarfile.TarFile, outside: str) -> None:
    link = tarfile.TarInfo("hostname")
    link.type = tarfile.LNKTYPE
    link.linkname = "/etc/hostname"
    archive.addfile(link)


def _inner_link_written_through(archive: tarfile.TarFile, outside: str) -> None:
    _add_directory(archive, "real")
    _add_symlink(archive, "alias", "real")
    _add_file(archive, "alias/file", b"through an inner link\n")


def _dot_dot_name(archive: tarfile.TarFile, outside: str) -> None:
    _add_file(archive, "sub/../../escape", b"up\n")


def _device_node(archive: tarfile.TarFile, outside: str) -> None:
    device = tarfile.TarInfo("disk")
    device.type = tarfile.BLKTYPE
    device.devmajor, device.devminor = 8, 0
    archive.addfile(device)


HOSTILE = {
    "c01-symlink-then-file": Hostile("notes", _c01_symlink_then_file),
    "c02-symlink-then-file-below": Hostile("keys", _c02_symlink_then_file_below_it),
    "c02-hardlink-outside": Hostile("hostname", _c02_hardlink_outside),
    "inner-link-written-through": Hostile("alias/file", _inner_link_written_through),
    "dot-dot-name": Hostile("sub/../../escape", _dot_dot_name),
    "device-node": Hostile("disk", _device_node),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_archive_is_refused_before_anything_is_extracted(
    case: str,
    empty_sandbox: Sandbox,
    extension: ComposeSshExtension,
    manager: SandboxManager,
    tracked: Sandboxes,
    host: HostShell,
    snapshot_dir: str,
) -> None:
    hostile = HOSTILE[case]
    outside = f"/tmp/sandboxer-{case}-{secrets.token_hex(4)}"
    data = _archive(lambda archive: hostile.build(archive, outside))
    snapshot = _plant_snapshot(manager, host, snapshot_dir, empty_sandbox, data)
    tracked.snapshot_ids.append(snapshot.id)

    with pytest.raises(UnsafeArchiveError) as refused:
        extension.sandboxer_restore_from_snapshot(empty_sandbox, snapshot, no_progress)

    assert refused.value.details.get("member") == hostile.member
    assert repr(hostile.member) in refused.value.message
    assert tracked.run(empty_sandbox, "ls -A /workspace") == b""
    assert not tracked.run(empty_sandbox, f"ls {outside} 2>/dev/null || true")
    assert not host.exists(outside)
    assert not Path(outside).exists()


def test_a_hostile_archive_leaves_the_restored_sandbox_failed(
    tracked: Sandboxes,
    manager: SandboxManager,
    empty_sandbox: Sandbox,
    host: HostShell,
    snapshot_dir: str,
) -> None:
    outside = f"/tmp/sandboxer-c01-{secrets.token_hex(4)}"
    data = _archive(lambda archive: _c01_symlink_then_file(archive, outside))
    snapshot = _plant_snapshot(manager, host, snapshot_dir, empty_sandbox, data)
    tracked.snapshot_ids.append(snapshot.id)

    with pytest.raises(UnsafeArchiveError, match="'notes'"):
        tracked.restore(snapshot)

    (restored,) = [
        record
        for record in manager.list(include_destroyed=True)
        if record.restored_from == snapshot.id
    ]
    assert restored.status is SandboxStatus.FAILED
    assert host.labelled(restored.id) == NOTHING
    assert not host.exists(outside)


def test_links_inside_the_workspace_are_restored_exactly(
    tracked: Sandboxes,
    manager: SandboxManager,
    empty_sandbox: Sandbox,
    host: HostShell,
    snapshot_dir: str,
) -> None:
    def build(archive: tarfile.TarFile) -> None:
        _add_directory(archive, "a")
        _add_file(archive, "a/file", b"shared\n")
        _add_directory(archive, "b")
        _add_symlink(archive, "b/link", "../a/file")
        link = tarfile.TarInfo("b/hard")
        link.type = tarfile.LNKTYPE
        link.linkname = "a/file"
        archive.addfile(link)

    snapshot = _plant_snapshot(
        manager, host, snapshot_dir, empty_sandbox, _archive(build)
    )
    tracked.snapshot_ids.append(snapshot.id)

    restored = tracked.restore(snapshot)

    listing = tracked.run(
        restored,
        "cd /workspace && readlink b/link && cat b/link && "
        "stat -c '%i %h' a/file b/hard",
    ).decode()
    target, content, first, second = listing.splitlines()
    assert (target, content) == ("../a/file", "shared")
    assert first == second and first.endswith(" 2")


def test_restore_onto_another_host_is_refused_naming_both(
    empty_sandbox: Sandbox,
    extension: ComposeSshExtension,
    tree_snapshot: TreeSnapshot,
) -> None:
    snapshot = tree_snapshot.snapshot
    elsewhere = SnapshotRecord(
        id=snapshot.id,
        sandbox_id=snapshot.sandbox_id,
        extension=snapshot.extension,
        status=SnapshotStatus.READY,
        created_at=snapshot.created_at,
        updated_at=snapshot.updated_at,
        size_bytes=snapshot.size_bytes,
        sha256=snapshot.sha256,
        location="local:/nowhere/" + snapshot.id + ".tar",
        config=snapshot.config,
    )

    with pytest.raises(InvalidInputError) as refused:
        extension.sandboxer_restore_from_snapshot(empty_sandbox, elsewhere, no_progress)

    assert "'local'" in refused.value.message
    assert "'testhost'" in refused.value.message


def test_a_workspace_with_a_fifo_is_refused_at_snapshot_time(
    tracked: Sandboxes, manager: SandboxManager
) -> None:
    sandbox = tracked.create()
    tracked.run(sandbox, "mkfifo /workspace/pipe")

    with pytest.raises(InvalidInputError, match="./pipe"):
        manager.snapshot(sandbox.id)


def test_a_workspace_with_an_absolute_symlink_is_refused_at_snapshot_time(
    tracked: Sandboxes, manager: SandboxManager
) -> None:
    """Restore would refuse it, so the snapshot says so at once."""
    sandbox = tracked.create()
    tracked.run(sandbox, "mkdir -p /workspace/venv/bin")
    tracked.run(sandbox, "ln -s /usr/bin/python3 /workspace/venv/bin/python")

    with pytest.raises(InvalidInputError, match="./venv/bin/python"):
        manager.snapshot(sandbox.id)
    assert manager.list_snapshots(sandbox=sandbox.id, status="ready") == []


# --- helpers --------------------------------------------------------------------


def _archive(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        build(archive)
    return buffer.getvalue()


def _add_file(archive: tarfile.TarFile, name: str, content: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(content))


def _add_directory(archive: tarfile.TarFile, name: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    archive.addfile(info)


def _add_symlink(archive: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    archive.addfile(info)


def _plant_snapshot(
    manager: SandboxManager,
    host: HostShell,
    snapshot_dir: str,
    like: Sandbox,
    data: bytes,
) -> SnapshotRecord:
    """Put `data` on the host as a snapshot archive with a matching ready record."""
    snapshot_id = f"snap-{secrets.token_hex(6)}"
    path = f"{snapshot_dir}/{snapshot_id}.tar"
    written = host.run(
        "sh", "-c", 'mkdir -p "$1" && cat >"$2"', "sh", snapshot_dir, path, input=data
    )
    assert written.exit_code == 0, written.stderr
    now = utcnow()
    record = SnapshotRecord(
        id=snapshot_id,
        sandbox_id="sb-crafted",
        extension="ext.compose-ssh",
        status=SnapshotStatus.READY,
        created_at=now,
        updated_at=now,
        profile=PROFILE,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        location=f"testhost:{path}",
        config=dict(like.config),
    )
    manager.snapshots.add(record)
    return record


def _cli_snapshot(sandbox_id: str, *, terminal: bool) -> SnapshotRecord:
    """Run `sandboxer snapshot --json` in a new process; on a terminal or a pipe."""
    argv = [str(Path(sys.executable).parent / "sandboxer"), "snapshot", sandbox_id]
    env = {**os.environ, "SANDBOXER_PLUGINS": "ext.compose-ssh"}
    if not terminal:
        ran = subprocess.run(argv, env=env, capture_output=True, timeout=120)
        assert ran.returncode == 0, ran.stderr
    else:
        controller, replica = pty.openpty()
        try:
            process = subprocess.Popen(
                argv, env=env, stdin=replica, stdout=replica, stderr=replica
            )
            os.close(replica)
            output = _read_all(controller)
            assert process.wait(timeout=120) == 0, output
        finally:
            os.close(controller)
    return _latest_snapshot(sandbox_id)


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO once the process has closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _latest_snapshot(sandbox_id: str) -> SnapshotRecord:
    store = JsonSnapshotStore(Path(os.environ["SANDBOXER_HOME"]))
    records = [record for record in store.list() if record.sandbox_id == sandbox_id]
    latest = max(records, key=lambda record: record.created_at)
    assert latest.status is SnapshotStatus.READY, latest.error
    return latest


def _host_time(host: HostShell) -> str:
    # Docker's event filter takes Unix seconds; step back one so that the
    # events of this second are included.
    return str(int(host.run("date", "+%s").text) - 1)


def _container_state(host: HostShell, container: str) -> str:
    return host.run(
        "docker", "inspect", "--format", "{{.State.Status}}", container
    ).text.strip()


def _pause_events(host: HostShell, container: str, since: str) -> list[str]:
    # With --until in the future, docker waits until then before it exits.
    until = str(int(host.run("date", "+%s").text) + 1)
    result = host.run(
        "docker",
        "events",
        "--since",
        since,
        "--until",
        until,
        "--filter",
        f"container={container}",
        "--filter",
        "event=pause",
        "--filter",
        "event=unpause",
        "--format",
        "{{.Action}}",
    )
    assert result.exit_code == 0, result.stderr
    return result.text.split()


def _copy_of_testhost(name: str, tool_image: str) -> str:
    """A [hosts.NAME] table for the test host, with another tool image."""
    table = {**load_config()["hosts"]["testhost"], "tool_image": tool_image}
    lines = [f"[hosts.{name}]"] + [
        f"{key} = {json.dumps(value)}" for key, value in table.items()
    ]
    return "\n" + "\n".join(lines) + "\n"
