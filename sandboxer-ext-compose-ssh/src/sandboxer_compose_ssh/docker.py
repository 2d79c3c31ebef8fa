"""Docker and Compose on one host, as this extension uses them.

`DockerHost` wraps a `Connection` with the handful of commands a sandbox's
life needs: compose up and down, the container's state, the sweep of
everything labelled with a sandbox id, the listing of managed resources.
`probe` checks first that the host has what those commands need, and says
precisely what is missing (docker itself, access to its socket, a Compose).

Small shell scripts run on the host where one command is not enough. They
are constants, and every value reaches them as a positional argument
(`sh -c SCRIPT sh VALUE...`), so no value is ever parsed as shell code.
"""

from __future__ import annotations

import getpass
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sandboxer.config import data_dir
from sandboxer.errors import BackendError
from sandboxer.models import ManagedResource
from sandboxer_compose_ssh.compose import MANAGED_LABEL, SANDBOX_ID_LABEL
from sandboxer_compose_ssh.connections import Completed, Connection

logger = logging.getLogger(__name__)

PROBE_TIMEOUT = 30.0
COMPOSE_UP_TIMEOUT = 180.0
COMPOSE_DOWN_TIMEOUT = 120.0
RUNNING_TIMEOUT = 60.0
RUNNING_POLL_SECONDS = 0.25
SWEEP_TIMEOUT = 120.0
# Seconds compose gives containers to stop on `down`; init: true makes
# sandboxes stop at once, anything slower is killed.
DOWN_STOP_SECONDS = "5"

_PROBE_SCRIPT = r"""
# probe: is docker there, may we use its socket, which Compose?
docker=$1
if ! command -v "$docker" >/dev/null 2>&1; then echo docker=missing; exit 0; fi
printf 'home=%s\n' "$HOME"
if ! "$docker" version --format '{{.Server.Version}}' >/dev/null; then
    echo daemon=unreachable; exit 0
fi
echo daemon=ok
if "$docker" compose version >/dev/null 2>&1; then echo compose=v2
elif command -v docker-compose >/dev/null 2>&1; then echo compose=v1
else echo compose=missing; fi
"""

_WRITE_FILE_SCRIPT = r"""
# write a file: $1 directory, $2 name, content on stdin
umask 077
mkdir -p -- "$1" && cat >"$1/$2.tmp" && mv -f -- "$1/$2.tmp" "$1/$2"
"""

# Runs the rest of its arguments only when the file $1 exists.
_IF_FILE_EXISTS_SCRIPT = r"""
# if the file $1 exists, run the rest of the arguments
[ -f "$1" ] || exit 0
shift
exec "$@"
"""

# Removes every container, volume and network labelled $2 (label=value),
# then the directory $3. Container ids, volume names and network ids never
# contain blanks, so the unquoted lists split safely (globbing is off).
_SWEEP_SCRIPT = r"""
# sweep: remove everything labelled $2, then the directory $3
set -f
docker=$1 label=$2 directory=$3 failed=0
containers=$("$docker" ps -aq --filter "label=$label") || failed=1
if [ -n "$containers" ]; then "$docker" rm -f -v $containers >/dev/null || failed=1; fi
volumes=$("$docker" volume ls -q --filter "label=$label") || failed=1
if [ -n "$volumes" ]; then "$docker" volume rm -f $volumes >/dev/null || failed=1; fi
networks=$("$docker" network ls -q --filter "label=$label") || failed=1
if [ -n "$networks" ]; then "$docker" network rm $networks >/dev/null || failed=1; fi
if [ "$failed" = 0 ] && [ -n "$directory" ]; then rm -rf -- "$directory" || failed=1; fi
exit "$failed"
"""

_LIST_SCRIPT = r"""
# list containers, volumes and networks matching filter $2
docker=$1 filter=$2
"$docker" ps -a --filter "$filter" --no-trunc \
    --format 'container	{{.ID}}	{{.Label "sandboxer.sandbox-id"}}	{{.Names}}' &&
"$docker" volume ls --filter "$filter" \
    --format 'volume	{{.Name}}	{{.Label "sandboxer.sandbox-id"}}	{{.Name}}' &&
"$docker" network ls --filter "$filter" --no-trunc \
    --format 'network	{{.ID}}	{{.Label "sandboxer.sandbox-id"}}	{{.Name}}'
"""


@dataclass(frozen=True)
class Tools:
    """What `probe` found on a host."""

    docker: str
    compose: tuple[str, ...]
    compose_version: str
    home: str


def probe(connection: Connection) -> Tools:
    """Check that the host can run sandboxes; BackendError says what is missing."""
    host = connection.host
    docker = host.docker_command
    result = connection.check(
        ["sh", "-c", _PROBE_SCRIPT, "sh", docker], timeout=PROBE_TIMEOUT
    )
    facts = dict(line.split("=", 1) for line in result.text.splitlines() if "=" in line)
    user = host.username or getpass.getuser()
    where = f"host {host.name} ({host.address})"

    if result.exit_code != 0:
        raise BackendError(
            f"{where}: the prerequisite check failed: {result.stderr_tail()}"
        )
    if facts.get("docker") == "missing":
        raise BackendError(
            f"{where}: `{docker}` is not on the PATH of user {user!r}; install "
            f"Docker there, or set hosts.{host.name}.docker_command to the full "
            "path of the docker client"
        )
    if facts.get("daemon") != "ok":
        raise BackendError(_daemon_problem(where, user, result))
    compose = facts.get("compose")
    if compose == "v2":
        compose_command: tuple[str, ...] = (docker, "compose")
    elif compose == "v1":
        compose_command = ("docker-compose",)
    else:
        raise BackendError(
            f"{where}: neither `docker compose` (Compose v2) nor `docker-compose` "
            "(Compose v1) is installed; install the Compose plugin (Debian/Ubuntu: "
            "docker-compose-plugin, or docker-compose for v1)"
        )
    home = facts.get("home", "")
    if not host.is_local and not home.startswith("/"):
        raise BackendError(
            f"{where}: HOME of user {user!r} is {home!r}, not an absolute path; "
            "sandboxer keeps compose files under ~/.sandboxer there"
        )
    tools = Tools(
        docker=docker, compose=compose_command, compose_version=compose, home=home
    )
    logger.info(
        "host %s: docker ready, using %s (Compose %s)",
        host.name,
        " ".join(compose_command),
        compose,
    )
    return tools


def _daemon_problem(where: str, user: str, result: Completed) -> str:
    detail = result.stderr_tail()
    lowered = detail.lower()
    if "permission denied" in lowered:
        return (
            f"{where}: permission denied on the Docker socket for user {user!r} "
            f"({detail}); add the user to the docker group on that host "
            f"(`sudo usermod -aG docker {user}`), then retry"
        )
    if (
        "cannot connect to the docker daemon" in lowered
        or "is the docker daemon running" in lowered
    ):
        return (
            f"{where}: the Docker daemon is not running or not reachable "
            f"({detail}); start it there (e.g. `sudo systemctl start docker`)"
        )
    return f"{where}: `docker version` failed: {detail}"


class DockerHost:
    """Docker and Compose commands on one checked host."""

    def __init__(self, connection: Connection, tools: Tools) -> None:
        self.connection = connection
        self.tools = tools

    @property
    def name(self) -> str:
        """The configured host name."""
        return self.connection.host.name

    def project_dir(self, project: str) -> str:
        """The directory on the host that holds a project's compose file.

        `~/.sandboxer/projects/<project>` of the SSH user; for the local host
        `<data dir>/compose-ssh/projects/<project>`.
        """
        if self.connection.host.is_local:
            return str(data_dir() / "compose-ssh" / "projects" / project)
        return f"{self.tools.home.rstrip('/')}/.sandboxer/projects/{project}"

    def docker(self, *args: str, timeout: float) -> Completed:
        """Run the docker client with `args`, capturing its output."""
        return self.connection.check([self.tools.docker, *args], timeout=timeout)

    def compose(
        self, project: str, compose_file: str, *args: str, timeout: float
    ) -> Completed:
        """Run Compose on one project with `args`, capturing its output."""
        argv = [*self.tools.compose, "-p", project, "-f", compose_file, *args]
        return self.connection.check(argv, timeout=timeout)

    def write_file(self, directory: str, name: str, content: bytes) -> None:
        """Create `directory` (mode 0700) and write `name` in it atomically."""
        result = self.connection.check(
            ["sh", "-c", _WRITE_FILE_SCRIPT, "sh", directory, name], input=content
        )
        if result.exit_code != 0:
            raise BackendError(
                f"host {self.name}: cannot write {directory}/{name}: "
                f"{result.stderr_tail()}"
            )

    def compose_up(self, project: str, compose_file: str) -> None:
        """Create and start the project's containers; BackendError on failure."""
        result = self.compose(
            project, compose_file, "up", "-d", "--no-build", timeout=COMPOSE_UP_TIMEOUT
        )
        if result.exit_code != 0:
            raise BackendError(
                f"host {self.name}: compose up of project {project} failed "
                f"(exit {result.exit_code}): {result.stderr_tail(5)}"
            )

    def compose_down(self, project: str, compose_file: str) -> bool:
        """`down -v --remove-orphans` if the compose file is still there.

        Returns False (after logging why) when compose failed; the caller's
        sweep removes what it left.
        """
        argv = [
            "sh",
            "-c",
            _IF_FILE_EXISTS_SCRIPT,
            "sh",
            compose_file,
            *self.tools.compose,
            "-p",
            project,
            "-f",
            compose_file,
            "down",
            "-v",
            "--remove-orphans",
            "-t",
            DOWN_STOP_SECONDS,
        ]
        result = self.connection.check(argv, timeout=COMPOSE_DOWN_TIMEOUT)
        if result.exit_code != 0:
            logger.warning(
                "host %s: compose down of project %s failed: %s",
                self.name,
                project,
                result.stderr_tail(),
            )
            return False
        return True

    def container_state(self, container: str) -> str | None:
        """`running`, `exited`, ... or None when the container does not exist."""
        result = self.docker(
            "inspect",
            "--type",
            "container",
            "--format",
            "{{.State.Status}}",
            container,
            timeout=RUNNING_TIMEOUT,
        )
        if result.exit_code != 0:
            if b"no such" in result.stderr.lower():
                return None
            raise BackendError(
                f"host {self.name}: cannot inspect container {container}: "
                f"{result.stderr_tail()}"
            )
        return result.text.strip()

    def wait_running(self, container: str) -> None:
        """Wait (with a deadline) until `container` runs; BackendError if not."""
        deadline = time.monotonic() + RUNNING_TIMEOUT
        while True:
            state = self.container_state(container)
            if state == "running":
                return
            if state in (None, "exited", "dead"):
                logs = self.docker("logs", "--tail", "5", container, timeout=30)
                raise BackendError(
                    f"host {self.name}: container {container} is {state or 'gone'} "
                    f"instead of running; its last output: {logs.stderr_tail()} "
                    f"{logs.text.strip()[-300:]}".rstrip()
                )
            if time.monotonic() >= deadline:
                raise BackendError(
                    f"host {self.name}: container {container} was still {state} "
                    f"after {RUNNING_TIMEOUT:g}s"
                )
            time.sleep(RUNNING_POLL_SECONDS)

    def sweep(self, sandbox_id: str, directory: str) -> None:
        """Remove every container, volume and network labelled with the id.

        Then remove `directory` (the project's). Raises BackendError when
        anything could not be removed.
        """
        label = f"{SANDBOX_ID_LABEL}={sandbox_id}"
        result = self.connection.check(
            ["sh", "-c", _SWEEP_SCRIPT, "sh", self.tools.docker, label, directory],
            timeout=SWEEP_TIMEOUT,
        )
        if result.exit_code != 0:
            raise BackendError(
                f"host {self.name}: could not remove everything labelled "
                f"{label}: {result.stderr_tail()}; retry the destroy"
            )

    def list_resources(
        self, sandbox_ids: Sequence[str] | None
    ) -> list[ManagedResource]:
        """Containers, volumes and networks labelled `sandboxer.managed=true`."""
        result = self.connection.check(
            [
                "sh",
                "-c",
                _LIST_SCRIPT,
                "sh",
                self.tools.docker,
                f"label={MANAGED_LABEL}=true",
            ],
        )
        if result.exit_code != 0:
            raise BackendError(
                f"host {self.name}: cannot list managed resources: "
                f"{result.stderr_tail()}"
            )
        wanted = None if sandbox_ids is None else set(sandbox_ids)
        resources = []
        for line in result.text.splitlines():
            fields = line.split("\t")
            if len(fields) != 4:
                continue
            kind, resource_id, sandbox_id, name = fields
            if wanted is not None and sandbox_id not in wanted:
                continue
            resources.append(
                ManagedResource(
                    kind=kind,
                    id=resource_id,
                    sandbox_id=sandbox_id or None,
                    host=self.name,
                    description=name,
                )
            )
        return resources
