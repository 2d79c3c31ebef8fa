"""The hooks of ext.compose-ssh: one sandbox, one Compose project on a host.

The module-level `extension` is the plugin the `sandboxer` entry point names.
It lives as long as the process (a CLI run, or `sandboxer serve`) and keeps
one connection per host, shared by the worker threads the manager calls
hooks from, and each host's prerequisite check once it has passed.

Every Docker name comes from the sandbox id (see `compose.project_names`),
so the hooks work from the id alone: `sandboxer_destroy` cleans up after a
provision that failed before it returned any provider data.
"""

from __future__ import annotations

import concurrent.futures
import logging
import shutil
import threading
from collections.abc import Mapping
from typing import IO, Any

from sandboxer.config import config_path, load_config
from sandboxer.errors import ConfigError, SandboxerError
from sandboxer.extension import SandboxExtension
from sandboxer.models import (
    ExecRequest,
    ExecStatus,
    ExecStreams,
    ManagedResource,
    Profile,
    Progress,
    ProvisionResult,
    Sandbox,
    SandboxStatus,
    SnapshotData,
    SnapshotOptions,
    SnapshotRecord,
)
from sandboxer_compose_ssh import __version__
from sandboxer_compose_ssh.compose import (
    COMPOSE_FILE,
    ProjectNames,
    compose_document,
    project_names,
    render,
)
from sandboxer_compose_ssh.connections import Connection, connect
from sandboxer_compose_ssh.docker import DockerHost, probe
from sandboxer_compose_ssh.execution import run_in_container
from sandboxer_compose_ssh.files import get_archive, put_archive
from sandboxer_compose_ssh.hosts import (
    HostConfig,
    default_host_name,
    load_hosts,
)
from sandboxer_compose_ssh.settings import SandboxSettings, validate_settings
from sandboxer_compose_ssh.snapshots import (
    delete_snapshot,
    restore_snapshot,
    snapshot_host_name,
    take_snapshot,
)

logger = logging.getLogger(__name__)

# Hosts asked at once by sandboxer_list_resources.
LIST_WORKERS = 8


class ComposeSshExtension(SandboxExtension):
    """Sandboxes as Docker Compose projects on hosts reached over SSH."""

    id = "ext.compose-ssh"
    version = __version__
    capabilities = ("exec", "files", "resources", "snapshots")
    description = "Docker Compose projects on a Docker host over SSH, or locally"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections: dict[HostConfig, Connection] = {}
        self._docker_hosts: dict[HostConfig, DockerHost] = {}
        self._probe_locks: dict[HostConfig, threading.Lock] = {}

    # --- hooks ----------------------------------------------------------------

    def sandboxer_validate_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        return validate_settings(settings, load_config())

    def sandboxer_provision(self, sandbox: Sandbox) -> ProvisionResult:
        config = load_config()
        settings = SandboxSettings.from_config(sandbox.config, config)
        docker_host = self._docker_host(_host_config(config, settings.host, sandbox))
        names = project_names(sandbox.id)
        directory = docker_host.project_dir(names.project)
        compose_file = f"{directory}/{COMPOSE_FILE}"

        document = compose_document(sandbox, settings, names)
        docker_host.write_file(directory, COMPOSE_FILE, render(document))
        docker_host.compose_up(names.project, compose_file)
        docker_host.wait_running(names.container)
        logger.info(
            "sandbox %s: compose project %s is up on host %s",
            sandbox.id,
            names.project,
            docker_host.name,
        )
        return ProvisionResult(
            status=SandboxStatus.READY,
            provider_data=_provider_data(docker_host, names, directory, compose_file),
        )

    def sandboxer_status(self, sandbox: Sandbox) -> ProvisionResult:
        docker_host, names = self._locate(sandbox)
        state = docker_host.container_state(names.container)
        if state == "running":
            return ProvisionResult(status=SandboxStatus.READY)
        if state in (None, "dead", "removing"):
            return ProvisionResult(
                status=SandboxStatus.FAILED,
                error=f"container {names.container} is {state or 'gone'} on host "
                f"{docker_host.name}; destroy the sandbox and create a new one",
            )
        return ProvisionResult(status=SandboxStatus.STOPPED)

    def sandboxer_exec(
        self, sandbox: Sandbox, request: ExecRequest, streams: ExecStreams
    ) -> ExecStatus:
        docker_host, names = self._locate(sandbox)
        return run_in_container(docker_host, names.container, request, streams)

    def sandboxer_put_files(
        self, sandbox: Sandbox, destination: str, archive: IO[bytes], progress: Progress
    ) -> None:
        docker_host, names = self._locate(sandbox)
        put_archive(docker_host, names.container, destination, archive, progress)

    def sandboxer_get_files(
        self, sandbox: Sandbox, source: str, sink: IO[bytes], progress: Progress
    ) -> None:
        docker_host, names = self._locate(sandbox)
        get_archive(docker_host, names.container, source, sink, progress)

    def sandboxer_destroy(self, sandbox: Sandbox) -> None:
        docker_host, names = self._locate(sandbox)
        directory = str(
            sandbox.provider_data.get("project_dir")
            or docker_host.project_dir(names.project)
        )
        docker_host.compose_down(names.project, f"{directory}/{COMPOSE_FILE}")
        docker_host.sweep(sandbox.id, directory)
        logger.info(
            "sandbox %s: removed compose project %s from host %s",
            sandbox.id,
            names.project,
            docker_host.name,
        )

    def sandboxer_list_resources(
        self, sandbox_ids: list[str] | None
    ) -> list[ManagedResource]:
        # Limitation: the local host is asked only when its docker client is
        # on PATH, and a daemon reached both as `local` and over SSH (as on
        # the test host) has its resources listed once for each host name.
        hosts = [
            host
            for host in load_hosts(load_config()).values()
            if not host.is_local or shutil.which(host.docker_command)
        ]
        with concurrent.futures.ThreadPoolExecutor(
            max_workers=min(LIST_WORKERS, len(hosts)) or 1
        ) as pool:
            answers = pool.map(lambda host: self._list_on(host, sandbox_ids), hosts)
            return [resource for answer in answers for resource in answer]

    def sandboxer_supports_snapshots(self, sandbox: Sandbox) -> bool:
        # Every sandbox has its workspace in a named volume.
        return True

    def sandboxer_snapshot(
        self,
        sandbox: Sandbox,
        snapshot: SnapshotRecord,
        options: SnapshotOptions,
        progress: Progress,
    ) -> SnapshotData:
        docker_host, names = self._locate(sandbox)
        return take_snapshot(
            docker_host,
            sandbox.id,
            names,
            snapshot.id,
            pause=options.pause,
            progress=progress,
        )

    def sandboxer_restore_from_snapshot(
        self, sandbox: Sandbox, snapshot: SnapshotRecord, progress: Progress
    ) -> None:
        docker_host, names = self._locate(sandbox)
        work_dir = str(
            sandbox.provider_data.get("project_dir")
            or docker_host.project_dir(names.project)
        )
        restore_snapshot(docker_host, sandbox.id, names, work_dir, snapshot, progress)

    def sandboxer_delete_snapshot(self, snapshot: SnapshotRecord) -> None:
        config = load_config()
        name = snapshot_host_name(snapshot) or default_host_name(config)
        hosts = load_hosts(config)
        if name not in hosts:
            raise ConfigError(
                f"snapshot {snapshot.id} is kept on host {name!r}, which is not "
                f"configured in {config_path()}; add its [hosts.{name}] table back",
                key=f"hosts.{name}",
            )
        delete_snapshot(self._docker_host(hosts[name]), snapshot.id)

    def sandboxer_profiles(self) -> list[Profile]:
        # profile.compose-checkpoint ships with the core's built-in profiles.
        return []

    # --- hosts and connections ------------------------------------------------

    def close(self) -> None:
        """Close every kept connection (later calls reconnect)."""
        with self._lock:
            connections = list(self._connections.values())
            self._connections.clear()
            self._docker_hosts.clear()
        for connection in connections:
            connection.close()

    def _list_on(
        self, host: HostConfig, sandbox_ids: list[str] | None
    ) -> list[ManagedResource]:
        try:
            return self._docker_host(host).list_resources(sandbox_ids)
        except SandboxerError as error:
            logger.warning(
                "host %s skipped while listing resources: %s", host.name, error
            )
            return []

    def _locate(self, sandbox: Sandbox) -> tuple[DockerHost, ProjectNames]:
        """The checked host of an existing sandbox, and its Docker names."""
        config = load_config()
        name = sandbox.provider_data.get("host") or sandbox.config.get("host")
        if not isinstance(name, str) or not name:
            name = default_host_name(config)
        docker_host = self._docker_host(_host_config(config, name, sandbox))
        return docker_host, _names_of(sandbox)

    def _docker_host(self, host: HostConfig) -> DockerHost:
        """The host, connected and checked; the check runs once per process.

        A failed check is not remembered: the next call checks again, so a
        fixed host works without restarting `sandboxer serve`.

        Limitation: once a host has passed its check, a later loss of Docker
        (or of its socket) shows docker's own error instead of the check's
        message, until the process restarts.
        """
        with self._lock:
            probe_lock = self._probe_locks.setdefault(host, threading.Lock())
        # One check per host at a time; calls for other hosts go on.
        with probe_lock:
            with self._lock:
                docker_host = self._docker_hosts.get(host)
                connection = self._connections.get(host)
                if connection is None:
                    connection = self._connections[host] = connect(host)
            if docker_host is None:
                docker_host = DockerHost(connection, probe(connection))
                with self._lock:
                    self._docker_hosts[host] = docker_host
            return docker_host


def _host_config(config: Mapping[str, Any], name: str, sandbox: Sandbox) -> HostConfig:
    hosts = load_hosts(config)
    if name not in hosts:
        raise ConfigError(
            f"sandbox {sandbox.id} lives on host {name!r}, which is not configured "
            f"in {config_path()}; add its [hosts.{name}] table back",
            key=f"hosts.{name}",
        )
    return hosts[name]


def _names_of(sandbox: Sandbox) -> ProjectNames:
    """The names recorded at provision time, else the ones the id gives."""
    derived = project_names(sandbox.id)
    recorded = sandbox.provider_data
    return ProjectNames(
        project=str(recorded.get("project") or derived.project),
        container=str(recorded.get("container") or derived.container),
        volume=str(recorded.get("volume") or derived.volume),
        network=str(recorded.get("network") or derived.network),
    )


def _provider_data(
    docker_host: DockerHost, names: ProjectNames, directory: str, compose_file: str
) -> dict[str, Any]:
    return {
        "host": docker_host.name,
        "address": docker_host.connection.host.address,
        "compose": docker_host.tools.compose_version,
        "project": names.project,
        "project_dir": directory,
        "compose_file": compose_file,
        "container": names.container,
        "volume": names.volume,
        "network": names.network,
    }


extension = ComposeSshExtension()
