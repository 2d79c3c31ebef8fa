"""Fixtures for end-to-end tests against the Docker-over-SSH test host.

The test host is the sshd on 127.0.0.1:2222 with its Docker daemon that
`scripts/testhost.sh` sets up. These tests run only when `SANDBOXER_E2E` is
set (CI sets it); then they never skip, and an unreachable host fails them.
They call ext.compose-ssh's hooks directly on sandbox records built here.

Every test shares one data directory and one config file for the session
(it replaces the core's per-test `isolated_environment`), with these hosts:

    testhost             the docker-enabled user, the default host
    testhost-nodocker    a user outside the docker group
    testhost-nodockercmd testhost, but with a docker command that is not there
    testhost-unknownkey  testhost, with an empty known_hosts file
    testhost-changedkey  testhost, with a different key recorded for it
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from compose_ssh_helpers import HostShell, Ran, SandboxFactory

from sandboxer.config import load_config
from sandboxer.manager import SandboxManager
from sandboxer.models import (
    ExecRequest,
    ExecStreams,
    Sandbox,
)
from sandboxer.plugins import PluginHost
from sandboxer.stores import JsonSandboxStore, JsonSnapshotStore
from sandboxer_compose_ssh.connections import connect
from sandboxer_compose_ssh.extension import ComposeSshExtension
from sandboxer_compose_ssh.hosts import load_hosts

STATE_DIR = Path(
    os.environ.get("SANDBOXER_TESTHOST_DIR", "/var/lib/sandboxer-testhost")
)
URL = os.environ.get("SANDBOXER_TESTHOST_URL", "ssh://sandboxer@127.0.0.1:2222")
NODOCKER_URL = os.environ.get(
    "SANDBOXER_TESTHOST_NODOCKER_URL", "ssh://sandboxer-nodocker@127.0.0.1:2222"
)
IDENTITY = os.environ.get(
    "SANDBOXER_TESTHOST_IDENTITY", str(STATE_DIR / "client_ed25519")
)
KNOWN_HOSTS = os.environ.get(
    "SANDBOXER_TESTHOST_KNOWN_HOSTS", str(STATE_DIR / "known_hosts")
)


@pytest.fixture(scope="session")
def e2e_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Session-wide SANDBOXER_HOME and SANDBOXER_CONFIG naming the test hosts."""
    if not os.environ.get("SANDBOXER_E2E"):
        pytest.skip("end-to-end test: set SANDBOXER_E2E=1 and run scripts/testhost.sh")
    for path in (IDENTITY, KNOWN_HOSTS):
        if not Path(path).is_file():
            pytest.fail(f"{path} is missing: run scripts/testhost.sh (as root) first")

    root = tmp_path_factory.mktemp("e2e")
    empty_known_hosts = root / "empty_known_hosts"
    empty_known_hosts.write_text("")
    changed_known_hosts = root / "changed_known_hosts"
    changed_known_hosts.write_text(_foreign_known_hosts_line(root))

    config = root / "config.toml"
    config.write_text(
        'default_host = "testhost"\n'
        + _host_table("testhost", URL, KNOWN_HOSTS)
        + _host_table("testhost-nodocker", NODOCKER_URL, KNOWN_HOSTS)
        + _host_table(
            "testhost-nodockercmd",
            URL,
            KNOWN_HOSTS,
            docker_command="docker-not-installed-here",
        )
        + _host_table("testhost-unknownkey", URL, str(empty_known_hosts))
        + _host_table("testhost-changedkey", URL, str(changed_known_hosts))
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SANDBOXER_HOME", str(root / "home"))
        patch.setenv("SANDBOXER_CONFIG", str(config))
        patch.delenv("SANDBOXER_PLUGINS", raising=False)
        yield root


@pytest.fixture(autouse=True)
def isolated_environment(e2e_environment: Path) -> Path:
    """Replaces the core's per-test environment with the e2e session's."""
    return e2e_environment / "home"


@pytest.fixture(scope="session")
def extension(e2e_environment: Path) -> Iterator[ComposeSshExtension]:
    """One extension instance for the session, as `sandboxer serve` keeps one."""
    instance = ComposeSshExtension()
    yield instance
    instance.close()


@pytest.fixture(scope="session")
def manager(extension: ComposeSshExtension, e2e_environment: Path) -> SandboxManager:
    """A manager over the session's extension instance and data directory."""
    plugins = PluginHost()
    plugins.register(
        extension, "ext.compose-ssh", distribution="sandboxer-ext-compose-ssh"
    )
    home = e2e_environment / "home"
    return SandboxManager(
        plugins,
        JsonSandboxStore(home),
        JsonSnapshotStore(home),
        ready_timeout=120.0,
        poll_interval=0.1,
    )


@pytest.fixture(scope="session")
def host(e2e_environment: Path) -> Iterator[HostShell]:
    """Commands on the test host itself, to check what the extension did."""
    connection = connect(load_hosts(load_config())["testhost"])
    yield HostShell(connection)
    connection.close()


@pytest.fixture
def sandboxes(extension: ComposeSshExtension) -> Iterator[SandboxFactory]:
    factory = SandboxFactory(extension)
    yield factory
    factory.destroy_all()


@pytest.fixture(scope="session")
def shared_sandbox(extension: ComposeSshExtension) -> Iterator[Sandbox]:
    """One ready sandbox for tests that only run commands in it."""
    factory = SandboxFactory(extension)
    yield factory.create()
    factory.destroy_all()


@pytest.fixture
def run(extension: ComposeSshExtension) -> Callable[..., Ran]:
    """`run(sandbox, *argv, stdin=b"", ...)`: exec and capture the output."""

    def run_in(
        sandbox: Sandbox,
        *argv: str,
        stdin: bytes | io.RawIOBase | io.BufferedIOBase | None = None,
        timeout: float | None = 60,
        env: dict[str, str] | None = None,
        workdir: str | None = None,
    ) -> Ran:
        stdout, stderr = io.BytesIO(), io.BytesIO()
        source = io.BytesIO(stdin) if isinstance(stdin, bytes) else stdin
        status = extension.sandboxer_exec(
            sandbox,
            ExecRequest(argv=argv, env=env or {}, workdir=workdir, timeout=timeout),
            ExecStreams(stdout=stdout, stderr=stderr, stdin=source),  # type: ignore[arg-type]
        )
        return Ran(status, stdout.getvalue(), stderr.getvalue())

    return run_in


def _host_table(
    name: str, url: str, known_hosts: str, *, docker_command: str | None = None
) -> str:
    lines = [
        f"[hosts.{name}]",
        f'url = "{url}"',
        f'identity_file = "{IDENTITY}"',
        f'known_hosts = "{known_hosts}"',
    ]
    if docker_command is not None:
        lines.append(f'docker_command = "{docker_command}"')
    return "\n" + "\n".join(lines) + "\n"


def _foreign_known_hosts_line(directory: Path) -> str:
    """A known_hosts line giving the test host's address some other key."""
    key = directory / "foreign_key"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)],
        check=True,
        stdin=subprocess.DEVNULL,
    )
    key_type, key_data = key.with_suffix(".pub").read_text().split()[:2]
    pattern = _known_hosts_pattern()
    return f"{pattern} {key_type} {key_data}\n"


def _known_hosts_pattern() -> str:
    parts = urlsplit(URL)
    port = parts.port or 22
    hostname = parts.hostname or ""
    return hostname if port == 22 else f"[{hostname}]:{port}"
