"""ext.compose-ssh end to end: hosts that are not ready, keys not trusted (C16)."""

from __future__ import annotations

import time

import pytest
from compose_ssh_helpers import NOTHING, HostShell, SandboxFactory

from sandboxer.errors import BackendError
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e


def _provision_fails(
    sandboxes: SandboxFactory, extension: ComposeSshExtension, host_name: str
) -> str:
    sandbox = sandboxes.record({"host": host_name})
    sandboxes.created.remove(sandbox)  # nothing to destroy on a refused host
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        extension.sandboxer_provision(sandbox)
    assert time.monotonic() - started < 30, "a refusal must come fast"
    return caught.value.message


def test_user_without_docker_socket_access_is_told_so(
    sandboxes: SandboxFactory, extension: ComposeSshExtension, host: HostShell
) -> None:
    message = _provision_fails(sandboxes, extension, "testhost-nodocker")
    assert "permission denied on the Docker socket" in message
    assert "usermod -aG docker sandboxer-nodocker" in message
    assert "\n" not in message


def test_docker_missing_from_path_is_told_so(
    sandboxes: SandboxFactory, extension: ComposeSshExtension
) -> None:
    message = _provision_fails(sandboxes, extension, "testhost-nodockercmd")
    assert "`docker-not-installed-here` is not on the PATH of user 'sandboxer'" in (
        message
    )
    assert "hosts.testhost-nodockercmd.docker_command" in message


def test_unknown_host_key_is_refused_with_how_to_trust_it(
    sandboxes: SandboxFactory, extension: ComposeSshExtension
) -> None:
    message = _provision_fails(sandboxes, extension, "testhost-unknownkey")
    assert "ssh-ed25519 key SHA256:" in message
    assert "connection refused" in message
    assert "ssh-keyscan -p 2222 127.0.0.1 >> " in message


def test_changed_host_key_is_refused(
    sandboxes: SandboxFactory, extension: ComposeSshExtension
) -> None:
    message = _provision_fails(sandboxes, extension, "testhost-changedkey")
    assert "does NOT match" in message
    assert "ssh-keygen -R '[127.0.0.1]:2222'" in message


def test_refused_provisions_leave_nothing_behind(
    sandboxes: SandboxFactory, extension: ComposeSshExtension, host: HostShell
) -> None:
    sandbox = sandboxes.record({"host": "testhost-nodocker"})
    sandboxes.created.remove(sandbox)
    with pytest.raises(BackendError):
        extension.sandboxer_provision(sandbox)
    assert host.labelled(sandbox.id) == NOTHING


def test_unreachable_host_makes_destroy_fail(
    sandboxes: SandboxFactory, extension: ComposeSshExtension
) -> None:
    """The manager then keeps the record as failed, to retry later."""
    sandbox = sandboxes.record({"host": "testhost-unknownkey"})
    sandboxes.created.remove(sandbox)
    with pytest.raises(BackendError):
        extension.sandboxer_destroy(sandbox)


def test_list_resources_skips_hosts_it_cannot_use(
    extension: ComposeSshExtension, caplog: pytest.LogCaptureFixture
) -> None:
    extension.sandboxer_list_resources(None)
    skipped = {
        record.getMessage().split()[1]
        for record in caplog.records
        if "skipped while listing" in record.getMessage()
    }
    assert {"testhost-nodocker", "testhost-unknownkey"} <= skipped
