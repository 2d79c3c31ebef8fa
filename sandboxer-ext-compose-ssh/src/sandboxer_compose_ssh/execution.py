"""Running a command inside a sandbox's container with `docker exec`.

One exec is one `docker exec -i CONTAINER ARGV...` on the host: one SSH
session channel on the kept connection, no terminal unless the request asks
for one, stdin streamed in until end of file, stdout and stderr streamed out
separately. Its exit status is docker's, which is the command's own.

Stopping a command needs more than closing the connection: the process that
`docker exec` started inside the container lives on when the client goes
away. So every exec carries a marker in its environment,
`SANDBOXER_EXEC_ID=<random>`, which its children inherit. On a timeout or
cancel, a second exec (as root) finds every process in the container whose
environment holds the marker, adds their descendants (for children that
cleared their environment), stops them all and kills them.
"""

from __future__ import annotations

import logging
import secrets
import shlex

from sandboxer.errors import BackendError, InvalidInputError
from sandboxer.models import ExecRequest, ExecStatus, ExecStreams, OutputSink
from sandboxer_compose_ssh.docker import DockerHost
from sandboxer_compose_ssh.settings import check_env_key

logger = logging.getLogger(__name__)

EXEC_MARKER = "SANDBOXER_EXEC_ID"
TIMED_OUT_EXIT_CODE = 124
KILL_TIMEOUT = 30.0
# docker's own error for a command it could not start is one line; more
# output was written by the command itself.
_DOCKER_ERROR_MAX_BYTES = 2048
_DAEMON_ERRORS = ("Error response from daemon:", "Error: No such container")
_RUNTIME_ERROR = "OCI runtime exec failed"

# Kills every process whose environment holds $1 (the marker), and their
# descendants. Processes are stopped before their children are looked up, so
# nothing forks past the sweep; rounds repeat until none is left.
_KILL_SCRIPT = r"""
# kill the processes of an exec: $1 is its marker
marker=$1
tagged() {
    for dir in /proc/[0-9]*; do
        case "$(cat "$dir/environ" 2>/dev/null)" in
            *"$marker"*) printf '%s ' "${dir#/proc/}" ;;
        esac
    done
}
with_descendants() {
    found=" $1 "
    changed=1
    while [ "$changed" = 1 ]; do
        changed=0
        for dir in /proc/[0-9]*; do
            pid=${dir#/proc/}
            case "$found" in *" $pid "*) continue ;; esac
            stat=$(cat "$dir/stat" 2>/dev/null) || continue
            set -- ${stat##*) }
            case "$found" in
                *" $2 "*) found="$found$pid "; changed=1 ;;
            esac
        done
    done
    printf '%s' "$found"
}
killed=0
for round in 1 2 3 4 5; do
    pids=$(tagged)
    [ -n "$pids" ] || break
    kill -STOP $pids 2>/dev/null
    pids=$(with_descendants "$pids")
    kill -KILL $pids 2>/dev/null
    set -- $pids
    killed=$((killed + $#))
    sleep 0.1
done
echo "$killed"
"""


def run_in_container(
    docker_host: DockerHost,
    container: str,
    request: ExecRequest,
    streams: ExecStreams,
) -> ExecStatus:
    """Run `request` in `container`; see the module docstring and the hookspec."""
    if not request.argv:
        raise InvalidInputError("exec needs a command to run", field="argv")
    for key in request.env:
        check_env_key(key, "env")
    if request.workdir is not None and not request.workdir.startswith("/"):
        raise InvalidInputError(
            f"workdir {request.workdir!r} must be an absolute path", field="workdir"
        )

    # Limitation: the env values of an exec request are arguments of `docker
    # exec` on the host, so its other users can read them in the process
    # list while the command runs (the debug log redacts them).
    marker = f"{EXEC_MARKER}={secrets.token_hex(16)}"
    # A terminal session without input gets no `-i`: then nothing we send to
    # close the input can reach the command's terminal and be echoed.
    options = ["-i"] if streams.stdin is not None or not request.tty else []
    options += ["-t"] if request.tty else []
    options += ["-e", marker]
    shown_options = list(options)
    for key, value in request.env.items():
        options += ["-e", f"{key}={value}"]
        shown_options += ["-e", f"{key}=<redacted>"]
    if request.workdir is not None:
        options += ["-w", request.workdir]
        shown_options += ["-w", request.workdir]
    docker = docker_host.tools.docker
    argv = [docker, "exec", *options, container, *request.argv]
    display = shlex.join([docker, "exec", *shown_options, container, *request.argv])

    stdout = _Watched(streams.stdout)
    stderr = _Watched(streams.stderr)
    outcome = docker_host.connection.run(
        argv,
        stdin=streams.stdin,
        stdout=stdout,
        stderr=stderr,
        timeout=request.timeout,
        cancel=streams.cancel,
        tty=request.tty,
        display=display,
    )
    if outcome.exit_code is None:
        reason = "cancelled" if streams.cancel.is_set() else "timed out"
        logger.info("exec in %s %s; stopping its processes", container, reason)
        stop_command(docker_host, container, marker)
        return ExecStatus(exit_code=TIMED_OUT_EXIT_CODE, timed_out=True)
    return ExecStatus(
        exit_code=_command_status(
            docker_host, container, outcome.exit_code, stdout, stderr
        )
    )


def stop_command(docker_host: DockerHost, container: str, marker: str) -> None:
    """Kill every process of the exec tagged with `marker`, children included.

    Limitation: killing a timed-out command needs `sh`, `cat` and a readable
    /proc in the image; without them the command keeps running (a warning
    is logged).
    """
    argv = [
        docker_host.tools.docker,
        "exec",
        "-u",
        "0",
        container,
        "sh",
        "-c",
        _KILL_SCRIPT,
        "sh",
        marker,
    ]
    try:
        result = docker_host.connection.check(argv, timeout=KILL_TIMEOUT)
    except BackendError as error:
        logger.warning("could not stop a timed-out command in %s: %s", container, error)
        return
    if result.exit_code != 0:
        logger.warning(
            "could not stop a timed-out command in %s: %s",
            container,
            result.stderr_tail(),
        )
    else:
        logger.debug("stopped %s process(es) in %s", result.text.strip(), container)


def _command_status(
    docker_host: DockerHost,
    container: str,
    exit_code: int,
    stdout: _Watched,
    stderr: _Watched,
) -> int:
    """The command's exit status, told apart from docker's own failures.

    When docker cannot start the command, its one-line error is all the
    output there is: daemon errors on stderr with status 1, runtime errors
    ("OCI runtime exec failed") on stdout with status 126.

    Limitation: a command that prints exactly docker's one-line error and
    nothing else, exiting with that status, is taken for docker's failure.
    """
    if exit_code == 1 and stdout.size == 0:
        error = stderr.sole_line()
        if error is not None and error.startswith(_DAEMON_ERRORS):
            raise BackendError(
                f"host {docker_host.name}: cannot run a command in container "
                f"{container}: {error}"
            )
    if exit_code == 126 and stderr.size == 0:
        error = stdout.sole_line()
        # Like a shell (and `docker run`), report a command that does not
        # exist as 127; docker exec says 126 for every failure to start.
        if (
            error is not None
            and error.startswith(_RUNTIME_ERROR)
            and (
                "executable file not found" in error
                or ("no such file or directory" in error and "chdir" not in error)
            )
        ):
            return 127
    return exit_code


class _Watched:
    """An output sink that also keeps the size and the start of what passed."""

    def __init__(self, sink: OutputSink) -> None:
        self._sink = sink
        self._head = bytearray()
        self.size = 0

    def write(self, data: bytes, /) -> object:
        self.size += len(data)
        if len(self._head) <= _DOCKER_ERROR_MAX_BYTES:
            self._head += data[: _DOCKER_ERROR_MAX_BYTES + 1]
        return self._sink.write(data)

    def sole_line(self) -> str | None:
        """What was written, if it was one short line; else None."""
        if self.size == 0 or self.size > _DOCKER_ERROR_MAX_BYTES:
            return None
        text = bytes(self._head).decode("utf-8", "replace").strip()
        return None if "\n" in text else text
