"""The `sandboxer` command itself, run as a user runs it, on the SSH test host.

Each test starts the installed console script as a subprocess with the e2e
session's data directory and config, so nothing here is in-process: exit
codes, pipes and terminals are the real ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compose_ssh_helpers import NOTHING, HostShell

ROOT = Path(__file__).resolve().parents[2]
SANDBOXER = str(Path(sys.executable).with_name("sandboxer"))


def sandboxer(
    *arguments: str, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [SANDBOXER, *arguments],
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


def sandboxer_json(*arguments: str) -> Any:
    result = sandboxer(*arguments, "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def cli_sandbox(e2e_environment: Path) -> Iterator[str]:
    record = sandboxer_json(
        "create", "-p", "profile.compose-checkpoint", "-n", "cli-e2e"
    )
    yield record["id"]
    sandboxer("destroy", record["id"])


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("exit 3", 3),
        ("no-such-binary-anywhere", 127),
        ("touch /tmp/plain && /tmp/plain", 126),
        ("kill -9 $$", 137),
        ("exit 255", 255),
    ],
)
def test_cli_exits_with_the_commands_own_status(
    cli_sandbox: str, command: str, expected: int
) -> None:
    assert (
        sandboxer("exec", cli_sandbox, "--", "sh", "-c", command).returncode == expected
    )


def test_piped_stdin_reaches_the_command_every_time(cli_sandbox: str) -> None:
    for _ in range(10):
        result = sandboxer("exec", cli_sandbox, "--", "cat", input=b"hi\n", timeout=30)
        assert (result.returncode, result.stdout) == (0, b"hi\n")
    empty = sandboxer("exec", cli_sandbox, "--", "cat", input=b"", timeout=30)
    assert (empty.returncode, empty.stdout) == (0, b"")


def test_fifty_megabytes_piped_to_sha256sum_match(cli_sandbox: str) -> None:
    payload = os.urandom(50 * 1024 * 1024)
    result = sandboxer(
        "exec", cli_sandbox, "--", "sha256sum", input=payload, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0].decode() == hashlib.sha256(payload).hexdigest()


def test_both_streams_arrive_whole_and_apart(cli_sandbox: str) -> None:
    made = sandboxer(
        "exec",
        cli_sandbox,
        "--",
        "sh",
        "-c",
        "head -c 10485760 /dev/urandom > /tmp/o;"
        " head -c 10485760 /dev/urandom > /tmp/e;"
        " sha256sum /tmp/o /tmp/e",
    )
    sums = {name: digest for digest, name in map(bytes.split, made.stdout.splitlines())}

    result = sandboxer(
        "exec", cli_sandbox, "--", "sh", "-c", "cat /tmp/o & cat /tmp/e >&2; wait"
    )

    assert result.returncode == 0
    assert hashlib.sha256(result.stdout).hexdigest().encode() == sums[b"/tmp/o"]
    assert hashlib.sha256(result.stderr).hexdigest().encode() == sums[b"/tmp/e"]


def test_output_from_a_terminal_is_the_same_bytes_as_from_a_pipe(
    cli_sandbox: str, tmp_path: Path
) -> None:
    """C14: run from a terminal, captured output and copies are untouched."""
    if shutil.which("script") is None:
        pytest.fail("util-linux `script` is needed to give the CLI a terminal")
    payload = bytes(range(256)) * 64 + b"\r\n\n\r"
    source = tmp_path / "payload.bin"
    source.write_bytes(payload)
    assert (
        sandboxer("cp", str(source), f"{cli_sandbox}:/workspace/payload.bin").returncode
        == 0
    )

    piped = sandboxer("exec", cli_sandbox, "--", "cat", "/workspace/payload.bin")
    out, err, copied = (
        tmp_path / "out.bin",
        tmp_path / "err.txt",
        tmp_path / "copied.bin",
    )
    inner = (
        f"{shlex.quote(SANDBOXER)} exec {cli_sandbox} -- sh -c "
        f"'cat /workspace/payload.bin; echo oops >&2' > {out} 2> {err}; "
        f"{shlex.quote(SANDBOXER)} cp {cli_sandbox}:/workspace/payload.bin {copied}"
    )
    subprocess.run(
        ["script", "-q", "-e", "-c", inner, "/dev/null"],
        check=True,
        timeout=120,
        capture_output=True,
        env={**os.environ, "TERM": "xterm"},
    )

    assert piped.stdout == payload
    assert out.read_bytes() == payload
    assert err.read_bytes() == b"oops\n"
    assert copied.read_bytes() == payload


def test_quick_start_flow_through_the_cli(
    e2e_environment: Path, tmp_path: Path, host: HostShell
) -> None:
    source = sandboxer_json("create", "-p", "profile.compose-checkpoint", "-n", "flow")
    restored: dict[str, Any] = {}
    try:
        note = tmp_path / "notes.txt"
        note.write_text("before the snapshot\n")
        assert sandboxer("cp", str(note), "flow:/workspace/").returncode == 0
        snapshot = sandboxer_json("snapshot", "flow")
        assert snapshot["status"] == "ready"
        assert snapshot["size_bytes"] > 0 and len(snapshot["sha256"]) == 64
        listed = sandboxer_json("snapshots", "list")
        assert snapshot["id"] in [item["id"] for item in listed]

        changed = sandboxer(
            "exec", "flow", "--", "sh", "-c", "echo after > /workspace/notes.txt"
        )
        assert changed.returncode == 0
        restored = sandboxer_json("restore", snapshot["id"], "-n", "flow-restored")
        assert restored["restored_from"] == snapshot["id"]

        shown = sandboxer("exec", "flow-restored", "--", "cat", "/workspace/notes.txt")
        assert shown.stdout == b"before the snapshot\n"
        kept = sandboxer("exec", "flow", "--", "cat", "/workspace/notes.txt")
        assert kept.stdout == b"after\n"
    finally:
        for name in ("flow-restored", "flow"):
            sandboxer("destroy", name)
        for leftover in sandboxer_json("snapshots", "list", "--sandbox", source["id"]):
            sandboxer("snapshots", "delete", leftover["id"])
    assert host.labelled(source["id"]) == NOTHING
    if restored:
        assert host.labelled(restored["id"]) == NOTHING


def test_readme_quick_start_script_runs_end_to_end(tmp_path: Path) -> None:
    """README command 1, in a fresh data dir and config of its own."""
    environment = {
        **os.environ,
        "SANDBOXER_HOME": str(tmp_path / "home"),
        "SANDBOXER_CONFIG": str(tmp_path / "config.toml"),
    }
    environment.pop("SANDBOXER_PLUGINS", None)
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "quickstart.sh")],
        env=environment,
        capture_output=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout.decode()
    assert result.returncode == 0, output[-3000:] + result.stderr.decode()[-3000:]
    assert "restored /workspace/notes.txt: written on" in output
    assert "is left on the host" in output


def test_destroy_on_an_unreachable_host_keeps_the_record_until_forced(
    e2e_environment: Path, tmp_path: Path, host: HostShell
) -> None:
    record = sandboxer_json("create", "-p", "profile.compose-checkpoint", "-n", "lost")
    config = Path(os.environ["SANDBOXER_CONFIG"]).read_text()
    unreachable = tmp_path / "unreachable.toml"
    unreachable.write_text(config.replace("127.0.0.1:2222", "127.0.0.1:1"))
    try:
        result = subprocess.run(
            [SANDBOXER, "destroy", "lost"],
            env={**os.environ, "SANDBOXER_CONFIG": str(unreachable)},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 6
        assert result.stderr.count(b"\n") == 1
        assert b"cannot connect to sandboxer@127.0.0.1:1" in result.stderr
        assert sandboxer_json("get", "lost")["status"] == "failed"
        assert host.labelled(record["id"]) != NOTHING

        forced = subprocess.run(
            [SANDBOXER, "destroy", "lost", "--force", "--json"],
            env={**os.environ, "SANDBOXER_CONFIG": str(unreachable)},
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert json.loads(forced.stdout)["status"] == "destroyed"
    finally:
        cleanup = sandboxer("reap", "--orphans", "--json")
    assert cleanup.returncode == 0, cleanup.stderr
    orphans = json.loads(cleanup.stdout)["orphans"]
    assert record["id"] in {orphan["sandbox_id"] for orphan in orphans}
    assert host.labelled(record["id"]) == NOTHING
