"""Snapshots of a sandbox's workspace volume: tar archives made and kept on its host.

Where archives live: `~/.sandboxer/snapshots/<snapshot id>.tar` of the SSH
user (for the host `local`, `<data dir>/compose-ssh/snapshots/`), in a
directory of mode 0700. A snapshot's location is `HOST:PATH`, for example
`build-box:/home/deploy/.sandboxer/snapshots/snap-3f2a9c1d0b7e.tar`.

Snapshot. One shell script on the host (one SSH session) does everything.
A throwaway helper container of the host's tool image mounts the workspace
volume read-only and runs GNU tar, which writes a PAX archive into a FIFO
bind-mounted from the snapshot directory. On the host, `copy_to` (perl with
1 MiB buffers, else `tee`) copies the FIFO into `<id>.tar.partial` and into
`openssl dgst -sha256` (else `sha256sum`), so the checksum is computed on
the way, never by reading the file again; the partial file is renamed to
`<id>.tar` only once tar, the copy and the hash all succeeded. Why this
path: `docker run`'s attached stdout moves ~21 MB/s and `docker exec` stdout
passes through the daemon, while a FIFO is a kernel pipe from tar in the
container to the host; busybox's tee copies 1 KiB at a time, so copying and
hashing run on the host, where OpenSSL hashes about five times faster than
coreutils. A 1 GB snapshot then takes about as long as tar writing straight
into a bind-mounted directory. The archive is deterministic (members sorted
by name, no atime/ctime, no process ids in header names), so an unchanged
workspace gives the same sha256.

Restore, into a new sandbox on the same host, in two passes:

1. the archive is read from the host (`cat` over its own SSH session, or
   the file itself for `local`) through `sandboxer.archives.validate_stream`:
   the sha256 must match the record and every member must stay inside the
   workspace, or restore fails before anything is extracted;
2. a helper container mounts the new, empty workspace volume and extracts
   with GNU tar, reading from a FIFO that `copy_to` fills from the archive
   while the host hashes it again: if the file changed after the first pass,
   the restore fails and the manager destroys the half-filled sandbox.

Delete removes `<id>.tar` and every temporary file of that snapshot, stops a
helper container still labelled with the snapshot id, and resumes containers
that a killed `--pause` snapshot left paused.

Helpers run as root with only the capabilities tar needs, no network, a
read-only root filesystem and `--pull=never`, labelled `sandboxer.managed`,
`sandboxer.sandbox-id` and `sandboxer.snapshot-id` (or
`sandboxer.restore-from`). While a script runs, sandboxer holds its stdin
open; when sandboxer dies, the script sees end of file and removes its
helper, so a killed CLI does not leave tar running on the host.

Shell scripts are constants; every value reaches them as a positional
argument. Nothing here allocates a terminal. A host needs `mkfifo`, `tee`,
`wc`, and `openssl` or `sha256sum`; `perl` makes the copy faster.

Limitation: archives are not compressed; a snapshot's size equals the
workspace's, plus tar headers.

Limitation: archives stay on the Docker host that made them and can only be
restored there; there is no export or import.

Limitation: archives are not fsynced before the snapshot is marked ready; a
host crash right after a snapshot can lose or truncate the archive, which
restore then refuses by its checksum.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandboxer.archives import validate_stream
from sandboxer.config import data_dir
from sandboxer.errors import (
    BackendError,
    InvalidInputError,
    SandboxerError,
    UnsafeArchiveError,
)
from sandboxer.models import Progress, SnapshotData, SnapshotRecord
from sandboxer_compose_ssh.compose import (
    MANAGED_LABEL,
    SANDBOX_ID_LABEL,
    ProjectNames,
)
from sandboxer_compose_ssh.connections import CHUNK_SIZE, Completed
from sandboxer_compose_ssh.docker import DockerHost
from sandboxer_compose_ssh.files import _FIND_GNU_TAR

logger = logging.getLogger(__name__)

SNAPSHOT_ID_LABEL = "sandboxer.snapshot-id"
RESTORE_FROM_LABEL = "sandboxer.restore-from"
HELPER_LABEL = "sandboxer.helper"

# GNU tar's default record (20 blocks of 512 bytes), which its checkpoints
# count; one progress line per CHECKPOINT_RECORDS records (10 MiB).
RECORD_BYTES = 10240
CHECKPOINT_RECORDS = 1024

# Limitation: a snapshot or restore that takes longer than an hour is cut
# off (and cleaned up) like a file transfer.
SNAPSHOT_TIMEOUT = 3600.0
RESTORE_TIMEOUT = 3600.0
DELETE_TIMEOUT = 120.0
PIPE_BYTES = 1 << 20

_SNAPSHOT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_PROGRESS_LINE = re.compile(rb"sandboxer-progress (\d+)")
_CHECKPOINT_OPTIONS = (
    f"--checkpoint={CHECKPOINT_RECORDS}",
    "--checkpoint-action=echo=sandboxer-progress %u",
)

# Exit statuses of the scripts below (docker run passes the helper's on).
_NO_GNU_TAR = 201  # from files._FIND_GNU_TAR
_NO_WORKSPACE = 202
_NOT_EMPTY = 210
_SPECIAL_FILES = 211
_NO_DIRECTORY = 220
_NO_FIFO = 221
_MISSING_TOOL = 222
_WRITE_FAILED = 230
_RESUME_FAILED = 231
_PAUSE_FAILED = 232
_NO_DIGEST = 233
_NO_ARCHIVE = 240
_CHANGED_ARCHIVE = 241
_DOCKER_RUN_FAILED = 125

# Functions shared by the host scripts. `copy_to FILE` copies stdin to FILE
# and to stdout, like `tee FILE`, but 1 MiB at a time with perl when it is
# there (coreutils tee copies 8 KiB at a time, which made a 1 GB snapshot a
# second slower here). `watch_client HELPER`: when our stdin reaches end of
# file while this script still runs, sandboxer has gone away, so the helper
# container is removed. `wait_gone HELPER` waits (at most 10 s) until the
# daemon has finished removing a helper that ran with --rm, so that a
# destroy right after finds nothing in removal.
_HOST_FUNCTIONS = r"""
set -u
set -f
copy_to() {
    if command -v perl >/dev/null 2>&1; then perl -e '
        open(my $out, ">", $ARGV[0]) or die "$ARGV[0]: $!\n";
        binmode STDIN; binmode STDOUT; binmode $out;
        while (1) {
            my $count = sysread(STDIN, my $data, 1 << 20);
            die "read: $!\n" unless defined $count;
            last if $count == 0;
            for my $handle ($out, \*STDOUT) {
                my $done = 0;
                while ($done < $count) {
                    my $written = syswrite($handle, $data, $count - $done, $done);
                    die "write: $!\n" unless defined $written;
                    $done += $written;
                }
            }
        }
        close($out) or die "$ARGV[0]: $!\n";
    ' "$1"
    else tee -- "$1"; fi
}
need() {
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 && continue
        echo "$tool is not installed on the host" >&2
        exit 222
    done
}
need_hasher() {
    command -v openssl >/dev/null 2>&1 || need sha256sum
}
hasher() {
    if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r
    else sha256sum; fi
}
wait_gone() {
    tries=100
    while "$docker" inspect --type container "$1" >/dev/null 2>&1; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || break
        sleep 0.1
    done
}
watch_client() {
    exec 3<&0
    (
        cat <&3 >/dev/null 2>&1
        if kill -0 "$$" 2>/dev/null; then "$docker" rm -f "$1" >/dev/null 2>&1; fi
    ) </dev/null >/dev/null 2>&1 &
    exec 3<&-
}
"""

# Limitation: two `--pause` snapshots of one sandbox at once do not nest:
# the first to finish resumes the sandbox while the other still reads it.
#
# Limitation: when the host-side script dies too (a killed sshd session, a
# host crash), a `--pause` snapshot leaves the sandbox paused until
# `sandboxer reap` (or `snapshots delete`) cleans up that snapshot.
_SNAPSHOT_SCRIPT = (
    "\n# snapshot: archive a volume into $2/$3.tar; the rest runs the helper"
    + _HOST_FUNCTIONS
    + r"""
docker=$1 dir=$2 id=$3 sandbox=$4 pause=$5 helper=$6
shift 6
umask 077
partial=$dir/$id.tar.partial fifo=$dir/$id.fifo paused=$dir/$id.paused
digest_file=$dir/$id.sha256 tee_status=$dir/$id.tee
need mkfifo tee wc mv
need_hasher
mkdir -p -- "$dir" || exit 220
rm -f -- "$partial" "$fifo" "$digest_file" "$tee_status" "$paused"
mkfifo -- "$fifo" || exit 221

resume_failed=0
resume() {
    if [ -s "$paused" ]; then
        "$docker" unpause $(cat "$paused") >/dev/null || resume_failed=1
    fi
    rm -f -- "$paused"
}
fail() {
    resume
    rm -f -- "$partial" "$fifo" "$digest_file" "$tee_status"
    exit "$1"
}

watch_client "$helper"
if [ "$pause" = 1 ]; then
    listed=$("$docker" ps --no-trunc --filter "label=sandboxer.sandbox-id=$sandbox" \
        --filter status=running --format '{{.ID}}/{{.Label "sandboxer.helper"}}') ||
        fail 232
    containers=
    for entry in $listed; do
        case $entry in */) containers="$containers ${entry%/}" ;; esac
    done
    if [ -n "$containers" ]; then
        printf '%s\n' $containers >"$paused"
        "$docker" pause $containers >/dev/null || fail 232
    fi
fi

# While the helper runs, this shell holds the FIFO open for reading and
# writing, so neither the copy's nor tar's open waits for the other, and the
# copy sees end of file only once the helper is gone. A copy that fails
# stops the helper and reads the rest of the FIFO, so that tar never waits
# on a full one. The subshells close their copy of that descriptor with
# `exec`: a redirection would keep a saved copy open in the subshell.
exec 6<>"$fifo"
{
    exec 6<&-
    copy_to "$partial"
    copied=$?
    echo "$copied" >"$tee_status"
    if [ "$copied" != 0 ]; then
        "$docker" rm -f "$helper" >/dev/null 2>&1
        cat >/dev/null
    fi
} <"$fifo" | {
    exec 6<&-
    hasher >"$digest_file"
} &
reader=$!
"$@" </dev/null >&2 6<&-
status=$?
exec 6<&-
resume
wait_gone "$helper"
wait "$reader"
[ "$resume_failed" = 0 ] || fail 231
[ "$(cat "$tee_status" 2>/dev/null)" = 0 ] || fail 230
[ "$status" -le 1 ] || fail "$status"
read -r digest rest <"$digest_file" || fail 233
size=$(wc -c <"$partial") || fail 230
mv -f -- "$partial" "$dir/$id.tar" || fail 230
rm -f -- "$fifo" "$digest_file" "$tee_status"
echo "$digest $size $status"
"""
)

_RESTORE_SCRIPT = (
    "\n# restore: feed the archive $2 through a FIFO to the helper; the rest runs it"
    + _HOST_FUNCTIONS
    + r"""
docker=$1 archive=$2 work=$3 expected=$4 helper=$5
shift 5
umask 077
fifo=$work/restore.fifo digest_file=$work/restore.sha256 tee_status=$work/restore.tee
need mkfifo tee
need_hasher
if [ ! -f "$archive" ] || [ ! -r "$archive" ]; then
    echo "$archive does not exist or cannot be read" >&2
    exit 240
fi
cleanup() { rm -f -- "$fifo" "$digest_file" "$tee_status"; }
mkdir -p -- "$work" && rm -f -- "$fifo" && mkfifo -- "$fifo" || exit 221

watch_client "$helper"
# The copy and the helper meet at the FIFO (each one's open waits for the
# other). Once the copy has ended, opening the FIFO for a moment lets a
# helper still waiting to open it go on, to end of file; this repeats until
# this shell removes the FIFO after the helper is gone.
{
    copy_to "$fifo" <"$archive"
    echo "$?" >"$tee_status"
    while [ -p "$fifo" ]; do
        exec 7<>"$fifo"
        exec 7<&-
        sleep 0.05
    done
} | hasher >"$digest_file" &
pump=$!
"$@" </dev/null >&2
status=$?
wait_gone "$helper"
# A copy still waiting to open the FIFO opens it now, and fails writing once
# this shell closes its end: the helper reads no more.
exec 7<>"$fifo"
rm -f -- "$fifo"
exec 7<&-
wait "$pump"
if [ "$status" != 0 ]; then cleanup; exit "$status"; fi
if [ "$(cat "$tee_status" 2>/dev/null)" != 0 ]; then cleanup; exit 230; fi
read -r digest rest <"$digest_file" || { cleanup; exit 233; }
cleanup
if [ "$digest" != "$expected" ]; then
    echo "extracted bytes have sha256 $digest, expected $expected" >&2
    exit 241
fi
echo "$digest"
"""
)

_DELETE_SCRIPT = r"""
# delete snapshot: stop its helper, resume what it paused, remove its files
set -u
set -f
docker=$1 dir=$2 id=$3
failed=0
labelled() { "$docker" ps -aq --filter "label=sandboxer.snapshot-id=$id"; }
containers=$(labelled) || failed=1
if [ -n "$containers" ]; then
    # The snapshot's own script may be removing its helper at the same time
    # (the daemon then refuses a second removal): wait for it to be gone.
    "$docker" rm -f $containers >/dev/null 2>&1
    tries=100
    while [ -n "$(labelled)" ]; do
        tries=$((tries - 1))
        if [ "$tries" = 0 ]; then
            echo "containers labelled sandboxer.snapshot-id=$id remain" >&2
            failed=1
            break
        fi
        sleep 0.1
    done
fi
if [ -s "$dir/$id.paused" ]; then
    "$docker" unpause $(cat "$dir/$id.paused") >/dev/null 2>&1
fi
rm -f -- "$dir/$id.tar" "$dir/$id.tar.partial" "$dir/$id.fifo" \
    "$dir/$id.sha256" "$dir/$id.tee" "$dir/$id.paused" || failed=1
exit "$failed"
"""

# Inside the snapshot helper: refuse what a restore would refuse, then let
# GNU tar write a deterministic archive of /workspace into the FIFO.
#
# Limitation: extended attributes, ACLs, SELinux labels and file
# capabilities are not captured, sparse files are restored fully allocated,
# and sockets are skipped (with a warning from GNU tar).
#
# Limitation: a workspace holding a fifo, a device node or a symlink with an
# absolute target cannot be snapshotted: restore refuses such members, so
# the snapshot is refused up front, naming the first one. A relative link
# climbing out of the workspace is only refused at restore.
#
# Limitation: without `--pause`, a file written while the archive is made
# may be captured half-written; GNU tar's "file changed as we read it" is
# logged as a warning and the snapshot still succeeds.
_SNAPSHOT_HELPER = (
    "\n# snapshot helper: archive /workspace into the FIFO /archive"
    + _FIND_GNU_TAR
    + r"""
cd /workspace || exit 202
special=$(find . \( -type p -o -type b -o -type c \) -print | head -n 1)
if [ -n "$special" ]; then
    echo "the workspace holds a fifo or device node, $special; restore refuses" \
        "those, so remove it before taking a snapshot" >&2
    exit 211
fi
outward=$(find . -type l | while IFS= read -r link; do
    case $(readlink "$link") in /*) printf '%s\n' "$link"; break ;; esac
done)
if [ -n "$outward" ]; then
    echo "the workspace holds a symlink with an absolute target, $outward;" \
        "restore refuses links that leave the workspace, so make it relative" \
        "or remove it before taking a snapshot" >&2
    exit 211
fi
exec "$gnu_tar" --create --file=/archive --format=pax --numeric-owner \
    --sort=name --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    "$@" .
"""
)

# Inside the restore helper: only an empty volume is filled; whatever tar
# leaves unread is read too, so that the host hashes every byte.
_RESTORE_HELPER = (
    "\n# restore helper: extract the FIFO /archive into the empty /workspace"
    + _FIND_GNU_TAR
    + r"""
cd /workspace || exit 202
if [ -n "$(ls -A)" ]; then
    echo "the new workspace volume is not empty" >&2
    exit 210
fi
exec 3</archive
"$gnu_tar" --extract --file=- --numeric-owner --same-owner --same-permissions \
    --delay-directory-restore "$@" <&3
status=$?
if [ "$status" = 0 ]; then cat <&3 >/dev/null; fi
exit "$status"
"""
)

# What the helpers may do as root: read everything (snapshot); also set
# owners, modes and times of what they create (restore).
_SNAPSHOT_CAPABILITIES = ("DAC_OVERRIDE", "DAC_READ_SEARCH")
_RESTORE_CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
)


@dataclass(frozen=True)
class Helper:
    """A throwaway container that runs one script against a workspace volume.

    Limitation: helpers bind-mount a FIFO from the SSH user's directories,
    so the host's docker client must drive a daemon on that same machine,
    whose root may open the user's files (no rootless Docker, no
    userns-remap); a home or data directory whose path contains ',' or ':'
    cannot be used.

    Limitation: the tool image must already be on the host; it is never
    pulled, so that no registry can substitute what runs as root there.
    """

    name: str
    labels: dict[str, str]
    volume: str
    read_only_volume: bool
    fifo: str
    capabilities: tuple[str, ...]
    script: str
    arguments: tuple[str, ...]

    def run_argv(self, docker_host: DockerHost) -> list[str]:
        """`docker run ...` for this helper on `docker_host`."""
        volume = f"type=volume,source={self.volume},target=/workspace"
        if self.read_only_volume:
            volume += ",readonly"
        argv = [docker_host.tools.docker, "run", "--rm", "--pull=never"]
        argv += ["--name", self.name]
        for key, value in self.labels.items():
            argv += ["--label", f"{key}={value}"]
        argv += [
            "--network=none",
            "--read-only",
            "--user=0:0",
            "--log-driver=none",
            "--security-opt=no-new-privileges",
            "--cap-drop=ALL",
        ]
        for capability in self.capabilities:
            argv.append(f"--cap-add={capability}")
        argv += [
            "--mount",
            volume,
            "--mount",
            f"type=bind,source={self.fifo},target=/archive",
            "--entrypoint=/bin/sh",
            docker_host.connection.host.tool_image,
            "-c",
            self.script,
            "sh",
            *self.arguments,
        ]
        return argv


# --- where archives live --------------------------------------------------------


def snapshot_dir(docker_host: DockerHost) -> str:
    """The directory of the host's archives (created by the first snapshot)."""
    if docker_host.connection.host.is_local:
        directory = str((data_dir() / "compose-ssh" / "snapshots").absolute())
    else:
        directory = f"{docker_host.tools.home.rstrip('/')}/.sandboxer/snapshots"
    _check_mount_source(docker_host, directory)
    return directory


def archive_path(docker_host: DockerHost, snapshot_id: str) -> str:
    """Where the archive of `snapshot_id` is on the host."""
    return f"{snapshot_dir(docker_host)}/{check_snapshot_id(snapshot_id)}.tar"


def location_of(docker_host: DockerHost, snapshot_id: str) -> str:
    """The location recorded for a snapshot: `HOST:PATH`."""
    return f"{docker_host.name}:{archive_path(docker_host, snapshot_id)}"


def parse_location(location: str) -> tuple[str, str]:
    """Split `HOST:PATH`; InvalidInputError when it is not of that form."""
    host, separator, path = location.partition(":")
    if not separator or not host or not path.startswith("/"):
        raise InvalidInputError(
            f"snapshot location {location!r} is not of the form HOST:/PATH that "
            "ext.compose-ssh records",
            field="location",
        )
    return host, path


def snapshot_host_name(snapshot: SnapshotRecord) -> str | None:
    """The host that holds the snapshot's archive, if the record tells."""
    if snapshot.location:
        return parse_location(snapshot.location)[0]
    host = snapshot.config.get("host")
    return host if isinstance(host, str) and host else None


def check_snapshot_id(snapshot_id: str) -> str:
    """`snapshot_id` if it is safe as a file and label name, else raise."""
    if not _SNAPSHOT_ID.match(snapshot_id):
        raise InvalidInputError(
            f"snapshot id {snapshot_id!r} is not usable as a file name; ids are "
            "letters, digits, '-' and '_'",
            field="snapshot",
        )
    return snapshot_id


# --- snapshot -------------------------------------------------------------------


def take_snapshot(
    docker_host: DockerHost,
    sandbox_id: str,
    names: ProjectNames,
    snapshot_id: str,
    *,
    pause: bool,
    progress: Progress,
) -> SnapshotData:
    """Archive the sandbox's workspace volume on its host; see the module doc.

    With `pause`, the sandbox's running containers are paused while tar
    reads the volume and resumed as soon as it is done, also on failure.
    Raises BackendError (after removing partial data) when anything fails.
    """
    directory = snapshot_dir(docker_host)
    check_snapshot_id(snapshot_id)
    helper = Helper(
        name=f"sandboxer-snapshot-{snapshot_id}",
        labels={
            MANAGED_LABEL: "true",
            SANDBOX_ID_LABEL: sandbox_id,
            SNAPSHOT_ID_LABEL: snapshot_id,
            HELPER_LABEL: "snapshot",
        },
        volume=names.volume,
        read_only_volume=True,
        fifo=f"{directory}/{snapshot_id}.fifo",
        capabilities=_SNAPSHOT_CAPABILITIES,
        script=_SNAPSHOT_HELPER,
        arguments=_CHECKPOINT_OPTIONS,
    )
    argv = [
        "sh",
        "-c",
        _SNAPSHOT_SCRIPT,
        "sh",
        docker_host.tools.docker,
        directory,
        snapshot_id,
        sandbox_id,
        "1" if pause else "0",
        helper.name,
        *helper.run_argv(docker_host),
    ]
    output = _HelperOutput(progress, offset=0, total=None)
    result = _run_script(docker_host, argv, output, SNAPSHOT_TIMEOUT, "snapshot")
    if result.exit_code != 0:
        raise _failure(docker_host, result, f"snapshot {snapshot_id}", output)

    fields = result.text.split()
    if len(fields) != 3 or not _SHA256.match(fields[0]) or not fields[1].isdigit():
        raise BackendError(
            f"host {docker_host.name}: snapshot {snapshot_id} ended without a "
            f"checksum and size (got {result.text.strip()[:200]!r})"
        )
    sha256, size, tar_status = fields[0], int(fields[1]), fields[2]
    if tar_status == "1":
        logger.warning(
            "snapshot %s of %s: files changed while they were archived (use "
            "--pause for a consistent snapshot): %s",
            snapshot_id,
            sandbox_id,
            output.tail(),
        )
    progress(size, size)
    logger.info(
        "snapshot %s of %s: %d bytes on host %s",
        snapshot_id,
        sandbox_id,
        size,
        docker_host.name,
    )
    return SnapshotData(
        location=location_of(docker_host, snapshot_id),
        size_bytes=size,
        sha256=sha256,
    )


# --- restore --------------------------------------------------------------------


def restore_snapshot(
    docker_host: DockerHost,
    sandbox_id: str,
    names: ProjectNames,
    work_dir: str,
    snapshot: SnapshotRecord,
    progress: Progress,
) -> None:
    """Fill the new sandbox's empty workspace volume from `snapshot`.

    `work_dir` is a directory of the new sandbox on the host (its project
    directory) for the FIFO. Progress counts both passes over the archive:
    `total` is twice its size. Raises InvalidInputError when the snapshot is
    on another host or not a ready archive of this extension,
    UnsafeArchiveError (nothing extracted) for a checksum mismatch or a
    refused member, BackendError when the host fails.

    Limitation: a workspace with symlinks that point outside it (absolute
    targets, or `..` climbing out of it), such as a virtualenv's
    `bin/python`, is snapshotted, but restoring it is refused, naming the
    first such link (the core's restore policy).

    Limitation: only an empty workspace volume is filled: an image with files
    at the workspace path (Docker copies them into a new volume) cannot be
    restored into.

    Limitation: restore first streams the whole archive over SSH to check
    it; through paramiko that pass runs at about 200 MB/s, so a restore
    takes longer than the snapshot did.
    """
    path, sha256, size = _archive_to_restore(docker_host, snapshot)
    total = 2 * size

    checked = _check_archive(docker_host, path, snapshot.id, sha256, progress, total)
    logger.info(
        "restore of %s into %s: %d bytes checked", snapshot.id, sandbox_id, checked
    )

    if docker_host.connection.host.is_local:
        work_dir = str(Path(work_dir).absolute())
    _check_mount_source(docker_host, work_dir)
    helper = Helper(
        name=f"sandboxer-restore-{sandbox_id}",
        labels={
            MANAGED_LABEL: "true",
            SANDBOX_ID_LABEL: sandbox_id,
            RESTORE_FROM_LABEL: snapshot.id,
            HELPER_LABEL: "restore",
        },
        volume=names.volume,
        read_only_volume=False,
        fifo=f"{work_dir}/restore.fifo",
        capabilities=_RESTORE_CAPABILITIES,
        script=_RESTORE_HELPER,
        arguments=_CHECKPOINT_OPTIONS,
    )
    argv = [
        "sh",
        "-c",
        _RESTORE_SCRIPT,
        "sh",
        docker_host.tools.docker,
        path,
        work_dir,
        sha256,
        helper.name,
        *helper.run_argv(docker_host),
    ]
    output = _HelperOutput(progress, offset=size, total=total)
    result = _run_script(docker_host, argv, output, RESTORE_TIMEOUT, "restore")
    if result.exit_code == _CHANGED_ARCHIVE:
        raise UnsafeArchiveError(
            f"checksum mismatch while extracting snapshot {snapshot.id} on host "
            f"{docker_host.name}: {path} changed after it was checked "
            f"({output.tail()})",
            snapshot=snapshot.id,
        )
    if result.exit_code != 0:
        raise _failure(docker_host, result, f"restore of {snapshot.id}", output)
    progress(total, total)
    logger.info(
        "restore of %s into %s: extracted on host %s",
        snapshot.id,
        sandbox_id,
        docker_host.name,
    )


def _archive_to_restore(
    docker_host: DockerHost, snapshot: SnapshotRecord
) -> tuple[str, str, int]:
    """The archive's path on `docker_host`, sha256 and size, from the record."""
    check_snapshot_id(snapshot.id)
    if not snapshot.location or snapshot.sha256 is None or snapshot.size_bytes is None:
        raise InvalidInputError(
            f"snapshot {snapshot.id} has no location, size or sha256; only a "
            "ready snapshot can be restored",
            snapshot=snapshot.id,
        )
    if not _SHA256.match(snapshot.sha256):
        raise InvalidInputError(
            f"snapshot {snapshot.id} records an invalid sha256 {snapshot.sha256!r}",
            snapshot=snapshot.id,
        )
    host, path = parse_location(snapshot.location)
    if host != docker_host.name:
        raise InvalidInputError(
            f"snapshot {snapshot.id} is kept on host {host!r}, but the new "
            f"sandbox is on host {docker_host.name!r}; restore it onto {host!r} "
            f"(--set host={host})",
            snapshot=snapshot.id,
            field="settings.host",
        )
    expected = archive_path(docker_host, snapshot.id)
    if path != expected:
        raise InvalidInputError(
            f"snapshot {snapshot.id}: its location {snapshot.location!r} is not "
            f"where ext.compose-ssh keeps it on host {host!r} ({expected})",
            snapshot=snapshot.id,
        )
    return path, snapshot.sha256, snapshot.size_bytes


def _check_archive(
    docker_host: DockerHost,
    path: str,
    snapshot_id: str,
    sha256: str,
    progress: Progress,
    total: int,
) -> int:
    """First pass: stream the archive here and validate it; return its size."""
    if docker_host.connection.host.is_local:
        try:
            source = open(path, "rb")  # noqa: SIM115 - closed right below
        except OSError as error:
            raise BackendError(
                f"host {docker_host.name}: cannot read the archive of snapshot "
                f"{snapshot_id} at {path}: {error.strerror}"
            ) from error
        with source:
            return validate_stream(
                source, expected_sha256=sha256, progress=progress, total=total
            ).size_bytes
    return _check_remote_archive(
        docker_host, path, snapshot_id, sha256, progress, total
    )


def _check_remote_archive(
    docker_host: DockerHost,
    path: str,
    snapshot_id: str,
    sha256: str,
    progress: Progress,
    total: int,
) -> int:
    """`cat` the archive over SSH into a pipe that `validate_stream` reads.

    The SSH side runs in a thread and writes into the pipe; when validation
    refuses a member, the transfer is cancelled and the pipe closed.
    """
    read_fd, write_fd = os.pipe()
    _enlarge_pipe(write_fd)
    stderr = _HelperOutput(progress, offset=0, total=None)
    outcome: list[Any] = []
    cancel = threading.Event()

    def transfer() -> None:
        try:
            outcome.append(
                docker_host.connection.run(
                    ["cat", "--", path],
                    stdout=_PipeSink(write_fd),
                    stderr=stderr,
                    timeout=RESTORE_TIMEOUT,
                    cancel=cancel,
                )
            )
        except BaseException as error:  # reported by the caller's thread
            outcome.append(error)
        finally:
            os.close(write_fd)

    thread = threading.Thread(target=transfer, name="sandboxer-restore-read")
    thread.start()
    refusal: SandboxerError | None = None
    size = 0
    try:
        with open(read_fd, "rb", buffering=CHUNK_SIZE) as reader:
            size = validate_stream(
                reader, expected_sha256=sha256, progress=progress, total=total
            ).size_bytes
    except SandboxerError as error:
        refusal = error
    finally:
        cancel.set()
        thread.join()

    ended = outcome[0] if outcome else None
    if isinstance(refusal, UnsafeArchiveError):
        raise refusal
    if ended is not None and getattr(ended, "exit_code", 0) not in (0, None):
        raise BackendError(
            f"host {docker_host.name}: cannot read the archive of snapshot "
            f"{snapshot_id} at {path}: {stderr.tail()}"
        )
    if refusal is not None:
        raise refusal
    if isinstance(ended, BaseException):
        if isinstance(ended, SandboxerError):
            raise ended
        raise BackendError(
            f"host {docker_host.name}: reading the archive of snapshot "
            f"{snapshot_id} failed: {type(ended).__name__}: {ended}"
        ) from ended
    # The pipe ends only after `run` has returned, so a complete archive
    # means `ended` is set; no exit status means the deadline passed.
    if ended is None or ended.exit_code is None:
        raise BackendError(
            f"host {docker_host.name}: reading the archive of snapshot "
            f"{snapshot_id} did not finish within {RESTORE_TIMEOUT:g}s"
        )
    return size


# --- delete ---------------------------------------------------------------------


def delete_snapshot(docker_host: DockerHost, snapshot_id: str) -> None:
    """Remove the snapshot's files and helper, resume what it paused. Idempotent."""
    directory = snapshot_dir(docker_host)
    check_snapshot_id(snapshot_id)
    result = docker_host.connection.check(
        [
            "sh",
            "-c",
            _DELETE_SCRIPT,
            "sh",
            docker_host.tools.docker,
            directory,
            snapshot_id,
        ],
        timeout=DELETE_TIMEOUT,
    )
    if result.exit_code != 0:
        raise BackendError(
            f"host {docker_host.name}: could not remove snapshot {snapshot_id} "
            f"from {directory}: {result.stderr_tail()}; retry the delete"
        )
    logger.info("snapshot %s: removed from host %s", snapshot_id, docker_host.name)


# --- running the scripts ----------------------------------------------------------


def _run_script(
    docker_host: DockerHost,
    argv: list[str],
    stderr: _HelperOutput,
    timeout: float,
    what: str,
) -> Completed:
    """Run a host script with stdin held open until it ends (see watch_client)."""
    stdin = _OpenUntilDone()
    stdout = io.BytesIO()
    try:
        outcome = docker_host.connection.run(
            argv, stdin=stdin, stdout=stdout, stderr=stderr, timeout=timeout
        )
    finally:
        stdin.finish()
    if outcome.exit_code is None:
        raise BackendError(
            f"host {docker_host.name}: {what} did not finish within {timeout:g}s; "
            "its helper container has been stopped"
        )
    return Completed(outcome.exit_code, stdout.getvalue(), stderr.tail().encode())


def _failure(
    docker_host: DockerHost, result: Completed, what: str, output: _HelperOutput
) -> SandboxerError:
    """The error for a script that exited with `result.exit_code`."""
    where = f"host {docker_host.name}"
    image = docker_host.connection.host.tool_image
    detail = output.tail()
    code = result.exit_code
    if code == _DOCKER_RUN_FAILED and "no such image" in detail.lower():
        return BackendError(
            f"{where}: {what} failed: the tool image {image!r} is not on the host "
            f"(it is never pulled); load it there, or set "
            f"hosts.{docker_host.name}.tool_image to an image with sh and GNU tar"
        )
    if code == _NO_GNU_TAR:
        return BackendError(
            f"{where}: {what} failed: the tool image {image!r} has no GNU tar; set "
            f"hosts.{docker_host.name}.tool_image to an image that has it"
        )
    if code == _NOT_EMPTY:
        return BackendError(
            f"{where}: {what} refused: the new workspace volume is not empty (the "
            "image has files at the workspace path, which Docker copied into it); "
            "restore into an image whose workspace directory is empty"
        )
    if code == _SPECIAL_FILES:
        return InvalidInputError(f"{where}: {what} refused: {detail}")
    messages = {
        _NO_WORKSPACE: "the helper could not enter /workspace",
        _NO_DIRECTORY: "cannot create the snapshot directory",
        _NO_FIFO: "cannot create the FIFO next to the archive",
        _MISSING_TOOL: "a tool the snapshot needs is missing on the host",
        _WRITE_FAILED: "writing or reading the archive failed (is the disk full?)",
        _RESUME_FAILED: "the paused containers could not all be resumed; run "
        "`docker unpause` on them",
        _PAUSE_FAILED: "the sandbox's containers could not be paused",
        _NO_DIGEST: "the checksum of the archive could not be read",
        _NO_ARCHIVE: "the archive is missing on the host",
        137: "its helper container was killed",
    }
    reason = messages.get(code, f"exit status {code}")
    return BackendError(f"{where}: {what} failed: {reason}: {detail}")


def _check_mount_source(docker_host: DockerHost, path: str) -> None:
    # `--mount` splits its value at commas; Docker cannot bind paths with
    # them, and colons confuse older clients.
    if "," in path or ":" in path or not path.startswith("/"):
        raise BackendError(
            f"host {docker_host.name}: {path!r} cannot be bind-mounted into a helper "
            "container (it must be absolute, without ',' or ':'); use a home "
            "directory or data directory without them"
        )


def _enlarge_pipe(fd: int) -> None:
    """Give a pipe 1 MiB of buffer where Linux allows it (fewer wake-ups)."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return
    try:
        fcntl.fcntl(fd, set_size, PIPE_BYTES)
    except OSError:
        logger.debug("could not enlarge a pipe to %d bytes", PIPE_BYTES)


class _PipeSink:
    """An output sink writing everything into a pipe's write end."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes, /) -> object:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        return len(data)


class _OpenUntilDone:
    """Stdin for a host script: sends nothing, but ends only at `finish()`.

    The script takes the end of its stdin for sandboxer having gone away.
    """

    def __init__(self) -> None:
        self._done = threading.Event()

    def read(self, size: int = -1, /) -> bytes:
        self._done.wait()
        return b""

    def finish(self) -> None:
        self._done.set()


class _HelperOutput:
    """A script's stderr: GNU tar's checkpoint lines become progress calls.

    A checkpoint line carries the number of records tar has moved; each is
    reported as `offset + records * RECORD_BYTES` against `total`. Other
    lines are kept (the last few) for error messages.
    """

    KEEP_LINES = 20
    MAX_LINE = 4096

    def __init__(self, progress: Progress, *, offset: int, total: int | None) -> None:
        self._progress = progress
        self._offset = offset
        self._total = total
        self._partial = b""
        self._lines: list[str] = []

    def write(self, data: bytes, /) -> object:
        *lines, rest = (self._partial + data).split(b"\n")
        self._partial = rest[-self.MAX_LINE :]
        for line in lines:
            self._take(line)
        return len(data)

    def tail(self) -> str:
        """The last lines that were not progress, on one line."""
        lines = list(self._lines)
        if self._partial.strip():
            lines.append(self._partial.decode("utf-8", "replace").strip())
        joined = " / ".join(lines[-5:]) or "(no error output)"
        return joined if len(joined) <= 800 else "..." + joined[-800:]

    def _take(self, line: bytes) -> None:
        match = _PROGRESS_LINE.search(line)
        if match is not None:
            done = self._offset + int(match.group(1)) * RECORD_BYTES
            if self._total is not None:
                done = min(done, self._total)
            self._progress(done, self._total)
            return
        text = line.decode("utf-8", "replace").strip()
        if text:
            self._lines = [*self._lines[-self.KEEP_LINES :], text]
