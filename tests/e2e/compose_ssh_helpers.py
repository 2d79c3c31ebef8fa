"""Helpers of the ext.compose-ssh end-to-end tests (fixtures: conftest.py)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import attrs

from sandboxer.models import ExecStatus, Sandbox, SandboxStatus, utcnow
from sandboxer_compose_ssh.connections import Completed, Connection
from sandboxer_compose_ssh.extension import ComposeSshExtension

# What `HostShell.labelled` finds once a sandbox is gone.
NOTHING: dict[str, list[str]] = {"containers": [], "volumes": [], "networks": []}


@dataclass
class HostShell:
    connection: Connection

    def run(self, *argv: str, input: bytes = b"") -> Completed:
        return self.connection.check(list(argv), input=input, timeout=60)

    def labelled(self, sandbox_id: str) -> dict[str, list[str]]:
        """Containers, volumes and networks labelled with the sandbox id."""
        label = f"label=sandboxer.sandbox-id={sandbox_id}"
        found = {}
        for kind, argv in (
            ("containers", ["docker", "ps", "-aq", "--filter", label]),
            ("volumes", ["docker", "volume", "ls", "-q", "--filter", label]),
            ("networks", ["docker", "network", "ls", "-q", "--filter", label]),
        ):
            result = self.run(*argv)
            assert result.exit_code == 0, result.stderr
            found[kind] = result.text.split()
        return found

    def exists(self, path: str) -> bool:
        return self.run("test", "-e", path).exit_code == 0


@dataclass
class Ran:
    """An exec's status and captured output."""

    status: ExecStatus
    stdout: bytes
    stderr: bytes

    @property
    def exit_code(self) -> int:
        return self.status.exit_code


@dataclass
class SandboxFactory:
    """Provisions sandboxes through the hooks and destroys them at teardown."""

    extension: ComposeSshExtension
    created: list[Sandbox] = field(default_factory=list)

    def record(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Sandbox:
        """A `provisioning` record with validated settings, as the manager makes."""
        validated = self.extension.sandboxer_validate_settings(dict(settings or {}))
        now = utcnow()
        sandbox = Sandbox(
            id=f"sb-{secrets.token_hex(6)}",
            extension="ext.compose-ssh",
            status=SandboxStatus.PROVISIONING,
            created_at=now,
            updated_at=now,
            name=name,
            labels=labels or {},
            config=validated,
        )
        self.created.append(sandbox)
        return sandbox

    def create(
        self,
        settings: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
        labels: dict[str, str] | None = None,
    ) -> Sandbox:
        """A provisioned, ready sandbox."""
        sandbox = self.record(settings, name=name, labels=labels)
        result = self.extension.sandboxer_provision(sandbox)
        assert result.status is SandboxStatus.READY
        ready = attrs.evolve(
            sandbox,
            status=SandboxStatus.READY,
            provider_data=result.provider_data or {},
        )
        self.created[-1] = ready
        return ready

    def destroy_all(self) -> None:
        for sandbox in self.created:
            self.extension.sandboxer_destroy(sandbox)
