"""The quick-start flow through `sandboxer serve` on the SSH test host.

A real server process (uvicorn on 127.0.0.1, a token file) holds the
manager and its one kept SSH connection; the CLI runs in remote mode
(`--url`, `SANDBOXER_TOKEN`) and never touches local stores.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from compose_ssh_helpers import NOTHING, HostShell

TOKEN = "e2e-remote-token"
SANDBOXER = str(Path(sys.executable).with_name("sandboxer"))


@pytest.fixture(scope="module")
def server(
    e2e_environment: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    token_file = tmp_path_factory.mktemp("serve") / "token"
    token_file.write_text(TOKEN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [SANDBOXER, "serve", "--port", str(port), "--token-file", str(token_file)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("sandboxer serve did not become healthy within 30 s")
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=15)


def remote(
    url: str, *arguments: str, token: str | None = TOKEN
) -> subprocess.CompletedProcess[bytes]:
    environment = {
        **os.environ,
        "SANDBOXER_HOME": "/nonexistent-remote-mode-needs-no-store",
    }
    environment.pop("SANDBOXER_TOKEN", None)
    if token is not None:
        environment["SANDBOXER_TOKEN"] = token
    return subprocess.run(
        [SANDBOXER, "--url", url, *arguments],
        env=environment,
        capture_output=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def remote_json(url: str, *arguments: str) -> Any:
    result = remote(url, *arguments, "--json")
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)


def test_requests_without_the_token_are_refused(server: str) -> None:
    assert httpx.get(f"{server}/v1/sandboxes").status_code == 401
    result = remote(server, "list", token=None)
    assert result.returncode == 10
    assert result.stderr.count(b"\n") == 1


def test_quick_start_flow_through_the_remote_cli(server: str, host: HostShell) -> None:
    source = remote_json(
        server, "create", "-p", "profile.compose-checkpoint", "-n", "remote"
    )
    restored: dict[str, Any] = {}
    try:
        hello = remote(
            server,
            "exec",
            "remote",
            "--",
            "sh",
            "-c",
            "echo draft > /workspace/n; cat /workspace/n",
        )
        assert (hello.returncode, hello.stdout) == (0, b"draft\n")
        assert (
            remote(server, "exec", "remote", "--", "sh", "-c", "exit 7").returncode == 7
        )

        snapshot = remote_json(server, "snapshot", "remote")
        assert snapshot["status"] == "ready" and len(snapshot["sha256"]) == 64
        remote(server, "exec", "remote", "--", "sh", "-c", "echo final > /workspace/n")
        restored = remote_json(server, "restore", snapshot["id"], "-n", "remote-copy")
        assert restored["restored_from"] == snapshot["id"]

        shown = remote(server, "exec", "remote-copy", "--", "cat", "/workspace/n")
        assert shown.stdout == b"draft\n"
        listed = remote_json(server, "snapshots", "list")
        assert snapshot["id"] in [item["id"] for item in listed]
    finally:
        remote(server, "destroy", "remote-copy")
        remote(server, "destroy", "remote")
        for leftover in remote_json(
            server, "snapshots", "list", "--sandbox", source["id"]
        ):
            assert remote(server, "snapshots", "delete", leftover["id"]).returncode == 0
    assert remote_json(server, "get", source["id"])["status"] == "destroyed"
    assert host.labelled(source["id"]) == NOTHING
    if restored:
        assert host.labelled(restored["id"]) == NOTHING
