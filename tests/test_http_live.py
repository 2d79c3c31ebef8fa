"""`sandboxer serve` as a real process, driven by the client and the CLI.

The server runs on uvicorn in its own process, bound to 127.0.0.1 on a free
port, with its own data directory and only the saas-stub loaded; every
request stays on loopback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sandboxer.client import SandboxerClient
from sandboxer.errors import AuthenticationError, InvalidInputError

pytestmark = pytest.mark.slow

TOKEN = "live-test-token"
SANDBOXER = [sys.executable, "-c", "from sandboxer.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    environment = {
        **os.environ,
        "SANDBOXER_HOME": str(tmp_path / "home"),
        "SANDBOXER_CONFIG": str(tmp_path / "config.toml"),
        "SANDBOXER_PLUGINS": "ext.saas-stub",
    }
    for name in ("SANDBOXER_URL", "SANDBOXER_TOKEN", "SANDBOXER_SERVE_TOKEN"):
        environment.pop(name, None)
    return environment


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def server(environment: dict[str, str], token_file: Path) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [*SANDBOXER, "serve", "--port", str(port), "--token-file", str(token_file)],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def wait_until_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else b""
            pytest.fail(f"sandboxer serve exited early: {output.decode()}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail("sandboxer serve did not answer /v1/health within 20 s")


def sandboxer(
    environment: dict[str, str], *arguments: str, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*SANDBOXER, *arguments],
        env=environment,
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_the_client_drives_a_served_api(server: str) -> None:
    with SandboxerClient(server, token=TOKEN) as api:
        sandbox = api.create(name="live", labels={"run": "live"})
        assert [record.id for record in api.list(labels={"run": "live"})] == [
            sandbox.id
        ]
        assert api.exec(sandbox.id, ["sh", "-c", "exit 3"]).exit_code == 3
        snapshot = api.snapshot(sandbox.id)
        restored = api.restore(snapshot.id, name="live2")
        assert restored.restored_from == snapshot.id
        assert api.destroy(restored.id).status.value == "destroyed"
        assert api.destroy("live").status.value == "destroyed"


def test_requests_without_the_token_are_refused(server: str) -> None:
    response = httpx.get(f"{server}/v1/sandboxes")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert httpx.get(f"{server}/v1/health").json()["status"] == "ok"
    with SandboxerClient(server) as anonymous, pytest.raises(AuthenticationError):
        anonymous.list()


def test_the_remote_cli_drives_a_served_api(
    server: str, environment: dict[str, str], token_file: Path
) -> None:
    remote = {**environment, "SANDBOXER_URL": server, "SANDBOXER_TOKEN": TOKEN}

    created = sandboxer(remote, "create", "--name", "cli", "--json")
    assert created.returncode == 0, created.stderr
    assert b'"status": "ready"' in created.stdout

    listed = sandboxer(remote, "list")
    assert b"cli" in listed.stdout

    exited = sandboxer(remote, "exec", "cli", "--", "sh", "-c", "exit 3")
    assert exited.returncode == 3
    piped = sandboxer(remote, "exec", "cli", "--", "cat", stdin=b"through stdin\n")
    assert piped.stdout == b"through stdin\n"

    snapshot = sandboxer(remote, "snapshot", "cli")
    assert snapshot.returncode == 0, snapshot.stderr
    snapshot_id = snapshot.stdout.split()[1].decode()
    restored = sandboxer(remote, "restore", snapshot_id, "--name", "cli2")
    assert restored.returncode == 0, restored.stderr
    assert sandboxer(remote, "destroy", "cli2").returncode == 0

    with_file = sandboxer(
        environment, "--url", server, "--token-file", str(token_file), "destroy", "cli"
    )
    assert with_file.returncode == 0, with_file.stderr


def test_the_remote_cli_without_the_token_fails_with_one_line(
    server: str, environment: dict[str, str]
) -> None:
    result = sandboxer(environment, "--url", server, "list")
    assert result.returncode == AuthenticationError.exit_code
    assert result.stderr.decode().count("\n") == 1
    assert b"Bearer" in result.stderr


def test_serve_refuses_a_public_address_without_a_token(
    environment: dict[str, str],
) -> None:
    result = sandboxer(environment, "serve", "--host", "0.0.0.0", "--port", "1")
    assert result.returncode == InvalidInputError.exit_code
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1
    assert "without a token" in lines[0]
