"""Run commands on a Docker host, over one kept SSH connection or locally.

A `Connection` runs a command given as an argv list: it feeds the command's
stdin from a stream until end of file, writes stdout and stderr to two sinks
as the bytes arrive (drained at the same time, never merged), and reports the
exit status, all before a deadline. `SshConnection` opens one SSH session
channel per command on a single connection that it keeps, and reconnects
when that connection has dropped. `LocalConnection` runs the command on this
machine with `subprocess`. Callers above this module never see which one
they use.

Over SSH, the server hands the command line to the user's login shell, so
`SshConnection` turns the argv into one line with `shlex.join`: this is the
one place where values meet a remote shell, and every element is quoted.
Host keys are checked against the configured known_hosts file only; an
unknown or changed key refuses the connection.

Limitation: the SSH user's login shell must parse POSIX quoting (sh, dash,
bash, ksh and zsh do); with fish or csh as login shell commands fail.
"""

from __future__ import annotations

import abc
import io
import logging
import os
import pty
import shlex
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import fabric
import paramiko

from sandboxer.errors import BackendError
from sandboxer.models import OutputSink
from sandboxer_compose_ssh.hosts import HostConfig

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
DEFAULT_TIMEOUT = 60.0
# Limitation: a connection that dies silently during a command without a
# timeout is noticed only when TCP gives up (minutes); keepalives only keep
# idle connections open through NAT.
KEEPALIVE_SECONDS = 30
# How long a command waits for a free SSH session when all are in use.
SESSION_WAIT_SECONDS = 60.0
# Polling interval for `cancel`, which is an Event nobody else can wake us on.
CANCEL_POLL_SECONDS = 0.1


class ByteSource(Protocol):
    """Where a command's stdin comes from: any binary stream (a file, a pipe)."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Outcome:
    """How a command run by `Connection.run` ended."""

    exit_code: int | None
    """The command's exit status; None when the deadline or a cancel stopped it."""


@dataclass(frozen=True)
class Completed:
    """A finished command whose output was captured by `Connection.check`."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode("utf-8", "replace")

    def stderr_tail(self, lines: int = 3) -> str:
        """The last non-empty lines of stderr, on one line, for messages."""
        text = self.stderr.decode("utf-8", "replace")
        tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        joined = " / ".join(tail) or "(no error output)"
        return joined if len(joined) <= 600 else "..." + joined[-600:]


class _Process(abc.ABC):
    """One started command: its byte streams and how it ended."""

    @abc.abstractmethod
    def send(self, data: bytes) -> None:
        """Write to the command's stdin; raises OSError once it is gone."""

    @abc.abstractmethod
    def close_stdin(self) -> None:
        """Signal end of file on the command's stdin."""

    @abc.abstractmethod
    def read_stdout(self) -> bytes:
        """The next bytes of stdout, b"" at end of file."""

    @abc.abstractmethod
    def read_stderr(self) -> bytes:
        """The next bytes of stderr, b"" at end of file."""

    @abc.abstractmethod
    def wait(self, timeout: float | None) -> bool:
        """Wait for the command to end; False if `timeout` passed first."""

    @abc.abstractmethod
    def exit_code(self) -> int | None:
        """The exit status after `wait`, None when the host sent none."""

    @abc.abstractmethod
    def abandon(self) -> None:
        """Stop waiting for the command: close our end of everything."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what the process holds; called once, at the end."""


class Connection(abc.ABC):
    """Runs commands on one host. Thread-safe; one instance per host."""

    def __init__(self, host: HostConfig) -> None:
        self.host = host

    @abc.abstractmethod
    def _start(
        self, argv: Sequence[str], tty: bool, deadline: float | None
    ) -> _Process:
        """Start `argv`; raise BackendError when the host cannot run it."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close the connection (a later command opens a new one)."""

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: ByteSource | None = None,
        stdout: OutputSink | None = None,
        stderr: OutputSink | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        cancel: threading.Event | None = None,
        tty: bool = False,
        display: str | None = None,
    ) -> Outcome:
        """Run `argv` with streamed input and output; see the module docstring.

        `stdout`/`stderr` (None discards) are written from worker threads,
        each sink from one thread. Returns once both outputs reached end of
        file and the exit status arrived, or with `exit_code=None` as soon
        as `timeout` seconds passed or `cancel` was set: then the command is
        abandoned, not killed (the caller knows how to kill it). Raises
        BackendError when the host cannot be reached or sent no exit status.
        `display` replaces the argv in the debug log (to redact secrets).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        logger.debug("host %s: run %s", self.host.name, display or describe(argv))
        process = self._start(argv, tty, deadline)
        try:
            return self._communicate(process, stdin, stdout, stderr, deadline, cancel)
        finally:
            process.close()

    def check(
        self,
        argv: Sequence[str],
        *,
        input: bytes = b"",
        timeout: float = DEFAULT_TIMEOUT,
        display: str | None = None,
    ) -> Completed:
        """Run `argv` to completion and capture its output.

        Raises BackendError when it did not finish within `timeout` seconds;
        a non-zero exit status is returned, not raised.
        """
        stdout, stderr = io.BytesIO(), io.BytesIO()
        outcome = self.run(
            argv,
            stdin=io.BytesIO(input),
            stdout=stdout,
            stderr=stderr,
            timeout=timeout,
            display=display,
        )
        if outcome.exit_code is None:
            shown = display or describe(argv)
            raise BackendError(
                f"host {self.host.name}: `{_shorten(shown)}` did not finish "
                f"within {timeout:g}s; check that the host and its Docker "
                "daemon respond"
            )
        return Completed(outcome.exit_code, stdout.getvalue(), stderr.getvalue())

    def _communicate(
        self,
        process: _Process,
        stdin: ByteSource | None,
        stdout: OutputSink | None,
        stderr: OutputSink | None,
        deadline: float | None,
        cancel: threading.Event | None,
    ) -> Outcome:
        failures: list[BaseException] = []
        feeder = threading.Thread(
            target=_feed, args=(process, stdin), daemon=True, name="sandboxer-stdin"
        )
        readers = [
            threading.Thread(
                target=_drain,
                args=(read, sink, process, failures),
                daemon=True,
                name=f"sandboxer-{label}",
            )
            for read, sink, label in (
                (process.read_stdout, stdout, "stdout"),
                (process.read_stderr, stderr, "stderr"),
            )
        ]
        feeder.start()
        for reader in readers:
            reader.start()

        for reader in readers:
            if not _join(reader, deadline, cancel):
                process.abandon()
                return Outcome(exit_code=None)
        if failures:
            raise failures[0]
        while not process.wait(_wait_slice(deadline, cancel)):
            if _expired(deadline, cancel):
                process.abandon()
                return Outcome(exit_code=None)

        exit_code = process.exit_code()
        if exit_code is None:
            raise BackendError(
                f"host {self.host.name}: the command ended without an exit status "
                "(connection lost or the remote side was killed); its result is "
                "unknown, run it again if that is safe"
            )
        return Outcome(exit_code=exit_code)


# --- SSH ---------------------------------------------------------------------


# paramiko ships no type hints, so its classes are Any to mypy.
class UnknownHostKeyError(paramiko.SSHException):  # type: ignore[misc]
    """Raised by `_RejectUnknownHostKey`; carries the key for the message."""

    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("unknown host key")
        self.key = key


class _RejectUnknownHostKey(paramiko.MissingHostKeyPolicy):  # type: ignore[misc]
    """Like paramiko's RejectPolicy, but keeps the key to show its fingerprint."""

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        raise UnknownHostKeyError(key)


class SshConnection(Connection):
    """Commands over one SSH connection, kept open and shared by all threads.

    Each command gets its own session channel. At most `max_sessions` run at
    once (OpenSSH refuses more per connection).

    Limitation: commands beyond max_sessions at once wait for a free SSH
    session (at most SESSION_WAIT_SECONDS, then fail) instead of opening a
    second connection.
    """

    def __init__(self, host: HostConfig) -> None:
        super().__init__(host)
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None
        self._sessions = threading.BoundedSemaphore(host.max_sessions)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _start(
        self, argv: Sequence[str], tty: bool, deadline: float | None
    ) -> _Process:
        wait = SESSION_WAIT_SECONDS
        if deadline is not None:
            wait = max(0.0, min(wait, deadline - time.monotonic()))
        if not self._sessions.acquire(timeout=wait):
            raise BackendError(
                f"host {self.host.name}: all {self.host.max_sessions} SSH sessions "
                f"stayed busy for {wait:g}s; raise hosts.{self.host.name}.max_sessions "
                "(and MaxSessions in the server's sshd_config) or run fewer commands"
            )
        try:
            channel = self._open_channel()
        except BaseException:
            self._sessions.release()
            raise
        try:
            if tty:
                channel.get_pty(term=os.environ.get("TERM", "xterm"))
            channel.exec_command(shlex.join(argv))
        except (paramiko.SSHException, EOFError, OSError) as error:
            channel.close()
            self._sessions.release()
            raise BackendError(
                f"host {self.host.name}: the SSH server refused to start a command: "
                f"{error or type(error).__name__}"
            ) from error
        except BaseException:
            channel.close()
            self._sessions.release()
            raise
        return _ChannelProcess(channel, self._sessions.release)

    def _open_channel(self) -> paramiko.Channel:
        """A new session channel; reconnects once if the connection dropped."""
        for attempt in (1, 2):
            transport = self._transport()
            try:
                return transport.open_session(timeout=self.host.connect_timeout)
            except (paramiko.SSHException, EOFError, OSError) as error:
                if attempt == 2 or transport.is_active():
                    raise BackendError(
                        f"host {self.host.name}: cannot open an SSH session on "
                        f"{self.host.address}: {error or type(error).__name__}"
                    ) from error
                logger.info(
                    "host %s: SSH connection lost; reconnecting", self.host.name
                )
                self._drop(transport)
        raise AssertionError("unreachable")

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self._client.close()
                self._client = None
            client = self._connect()
            self._client = client
            transport = client.get_transport()
            assert transport is not None
            return transport

    def _drop(self, transport: paramiko.Transport) -> None:
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._client.close()
                self._client = None

    def _connect(self) -> paramiko.SSHClient:
        host = self.host
        use_default_keys = host.identity_file is None
        # fabric opens the connection; its client would add unknown host keys
        # on its own, so the policy is replaced before anything is sent.
        connection = fabric.Connection(
            host=host.hostname or "",
            user=host.username,
            port=host.port,
            connect_timeout=host.connect_timeout,
            connect_kwargs={
                "key_filename": host.identity_file,
                "allow_agent": use_default_keys,
                "look_for_keys": use_default_keys,
                "banner_timeout": host.connect_timeout,
                "auth_timeout": host.connect_timeout,
                "channel_timeout": host.connect_timeout,
            },
            config=fabric.Config(lazy=True),
        )
        client: paramiko.SSHClient = connection.client
        try:
            client.load_host_keys(host.known_hosts)
        except FileNotFoundError:
            logger.warning(
                "host %s: known_hosts file %s does not exist",
                host.name,
                host.known_hosts,
            )
        except (OSError, paramiko.SSHException) as error:
            raise BackendError(
                f"host {host.name}: cannot read known_hosts file {host.known_hosts}: "
                f"{error}; fix it or set hosts.{host.name}.known_hosts"
            ) from error
        client.set_missing_host_key_policy(_RejectUnknownHostKey())

        try:
            connection.open()
        except UnknownHostKeyError as error:
            client.close()
            raise BackendError(_unknown_key_message(host, error.key)) from None
        except paramiko.BadHostKeyException as error:
            client.close()
            raise BackendError(_changed_key_message(host, error.key)) from None
        except paramiko.AuthenticationException as error:
            client.close()
            raise BackendError(
                f"host {host.name}: SSH authentication as {host.username!r} failed "
                f"at {host.hostname}:{host.port} ({error}); add your public key to "
                f"~{host.username}/.ssh/authorized_keys there, or set "
                f"hosts.{host.name}.identity_file"
            ) from None
        except (paramiko.SSHException, OSError, EOFError) as error:
            client.close()
            raise BackendError(
                f"host {host.name}: cannot connect to {host.address} over SSH: "
                f"{error or type(error).__name__}; check the address in "
                f"hosts.{host.name}.url and that sshd runs there"
            ) from None

        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(KEEPALIVE_SECONDS)
        logger.info("host %s: connected to %s over SSH", host.name, host.address)
        return client


# Host key algorithm names and the file names OpenSSH gives such keys.
_KEY_FILE_KINDS = {
    "ssh-ed25519": "ed25519",
    "ssh-rsa": "rsa",
    "ecdsa-sha2-nistp256": "ecdsa",
    "ecdsa-sha2-nistp384": "ecdsa",
    "ecdsa-sha2-nistp521": "ecdsa",
}


def _known_hosts_pattern(host: HostConfig) -> str:
    if host.port == 22:
        return host.hostname or ""
    return f"[{host.hostname}]:{host.port}"


def _keyscan_command(host: HostConfig) -> str:
    return (
        f"ssh-keyscan -p {host.port} {shlex.quote(host.hostname or '')} "
        f">> {shlex.quote(host.known_hosts)}"
    )


def _unknown_key_message(host: HostConfig, key: paramiko.PKey) -> str:
    kind = _KEY_FILE_KINDS.get(key.get_name(), "ed25519")
    return (
        f"host {host.name}: the SSH server at {host.hostname}:{host.port} offered "
        f"{key.get_name()} key {key.fingerprint}, which is not in "
        f"{host.known_hosts}; connection refused. If that is the server's key "
        f"(compare with `ssh-keygen -lf /etc/ssh/ssh_host_{kind}_key.pub` run on "
        f"the server), trust it with `{_keyscan_command(host)}`"
    )


def _changed_key_message(host: HostConfig, key: paramiko.PKey) -> str:
    pattern = shlex.quote(_known_hosts_pattern(host))
    return (
        f"host {host.name}: the SSH server at {host.hostname}:{host.port} offered "
        f"{key.get_name()} key {key.fingerprint}, which does NOT match the key "
        f"recorded in {host.known_hosts}; connection refused (this can be an "
        f"attack). If the server's key really changed, remove the old entry with "
        f"`ssh-keygen -R {pattern} -f {shlex.quote(host.known_hosts)}` and trust "
        f"the new one with `{_keyscan_command(host)}` after checking its fingerprint"
    )


class _ChannelProcess(_Process):
    def __init__(self, channel: paramiko.Channel, release: Callable[[], None]) -> None:
        self._channel = channel
        self._release = release

    def send(self, data: bytes) -> None:
        self._channel.sendall(data)

    def close_stdin(self) -> None:
        self._channel.shutdown_write()

    def read_stdout(self) -> bytes:
        data: bytes = self._channel.recv(CHUNK_SIZE)
        return data

    def read_stderr(self) -> bytes:
        data: bytes = self._channel.recv_stderr(CHUNK_SIZE)
        return data

    def wait(self, timeout: float | None) -> bool:
        return bool(self._channel.status_event.wait(timeout))

    def exit_code(self) -> int | None:
        # paramiko leaves -1 when the channel closed without an exit-status
        # message (the remote process died of a signal, or the link broke).
        status: int = self._channel.exit_status
        return None if status < 0 else status

    def abandon(self) -> None:
        self._channel.close()

    def close(self) -> None:
        self._channel.close()
        self._release()


# --- local -------------------------------------------------------------------


class LocalConnection(Connection):
    """Commands run on this machine, without a shell."""

    def close(self) -> None:
        """Nothing to close: each command is its own process."""

    def _start(
        self, argv: Sequence[str], tty: bool, deadline: float | None
    ) -> _Process:
        try:
            if tty:
                return _PtyProcess(argv)
            return _PopenProcess(argv)
        except FileNotFoundError:
            raise BackendError(
                f"host {self.host.name}: {argv[0]!r} is not installed on this machine "
                f"or not on PATH; install it or set hosts.{self.host.name}."
                "docker_command to its full path"
            ) from None


class _LocalProcess(_Process):
    """What both kinds of local process share: a `subprocess.Popen`."""

    _popen: subprocess.Popen[bytes]

    def wait(self, timeout: float | None) -> bool:
        try:
            self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def exit_code(self) -> int | None:
        # A negative code means our own client process died of a signal: the
        # command's status is unknown.
        code = self._popen.returncode
        return None if code is None or code < 0 else code

    def abandon(self) -> None:
        self._popen.kill()

    def _end(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()
        self._popen.wait()


class _PopenProcess(_LocalProcess):
    def __init__(self, argv: Sequence[str]) -> None:
        self._popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        assert self._popen.stdin and self._popen.stdout and self._popen.stderr
        self._stdin = self._popen.stdin
        self._stdout = self._popen.stdout
        self._stderr = self._popen.stderr

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._stdin.write(view)
            view = view[written or 0 :]

    def close_stdin(self) -> None:
        self._stdin.close()

    def read_stdout(self) -> bytes:
        return self._stdout.read(CHUNK_SIZE) or b""

    def read_stderr(self) -> bytes:
        return self._stderr.read(CHUNK_SIZE) or b""

    def close(self) -> None:
        self._end()
        for stream in (self._stdin, self._stdout, self._stderr):
            stream.close()


class _PtyProcess(_LocalProcess):
    """A local command on a pseudo-terminal: one merged output stream.

    Limitation: on the local host, a terminal's end of input is sent as
    Ctrl-D, which a program reading the terminal in raw mode sees as a byte.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        self._master, replica = pty.openpty()
        # Input is ours, not a person's: without echo, the end-of-input byte
        # sent before the program takes over the terminal is not printed back.
        modes = termios.tcgetattr(replica)
        modes[3] &= ~(termios.ECHO | termios.ECHOCTL)
        termios.tcsetattr(replica, termios.TCSANOW, modes)
        try:
            self._popen = subprocess.Popen(
                list(argv),
                stdin=replica,
                stdout=replica,
                stderr=replica,
                start_new_session=True,
            )
        except BaseException:
            os.close(self._master)
            raise
        finally:
            os.close(replica)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._master, view) :]

    def close_stdin(self) -> None:
        os.write(self._master, b"\x04")

    def read_stdout(self) -> bytes:
        try:
            return os.read(self._master, CHUNK_SIZE)
        except OSError:  # EIO: every holder of the terminal has gone
            return b""

    def read_stderr(self) -> bytes:
        return b""

    def close(self) -> None:
        self._end()
        os.close(self._master)


# --- shared pumping ----------------------------------------------------------


def _feed(process: _Process, stdin: ByteSource | None) -> None:
    """Copy `stdin` into the command until end of file, then close its stdin.

    Limitation: when a command ends while its stdin is still open (a
    terminal nobody types into), the thread feeding it stays blocked
    reading, and the next chunk it reads is dropped.
    """
    try:
        if stdin is not None:
            read: Callable[[int], bytes] = getattr(stdin, "read1", stdin.read)
            while data := read(CHUNK_SIZE):
                process.send(data)
        process.close_stdin()
    except (OSError, EOFError, paramiko.SSHException, ValueError):
        # The command ended (or was abandoned) before reading all its input,
        # as `head` does; its exit status tells the rest.
        logger.debug("stdin not fully delivered: the command stopped reading")


def _drain(
    read: Callable[[], bytes],
    sink: OutputSink | None,
    process: _Process,
    failures: list[BaseException],
) -> None:
    """Copy one output stream into `sink` until end of file."""
    try:
        while data := read():
            if sink is not None:
                sink.write(data)
    except BaseException as error:  # the sink failed: stop the whole command
        failures.append(error)
        process.abandon()


def _join(
    thread: threading.Thread, deadline: float | None, cancel: threading.Event | None
) -> bool:
    """Wait for `thread`; False when the deadline passed or cancel was set."""
    while thread.is_alive():
        if _expired(deadline, cancel):
            return False
        thread.join(_wait_slice(deadline, cancel))
    return True


def _wait_slice(deadline: float | None, cancel: threading.Event | None) -> float | None:
    wait = CANCEL_POLL_SECONDS if cancel is not None else None
    if deadline is not None:
        remaining = max(0.0, deadline - time.monotonic())
        wait = remaining if wait is None else min(wait, remaining)
    return wait


def _expired(deadline: float | None, cancel: threading.Event | None) -> bool:
    if cancel is not None and cancel.is_set():
        return True
    return deadline is not None and time.monotonic() >= deadline


def describe(argv: Sequence[str]) -> str:
    """`argv` as a command line for logs and messages.

    The extension's own shell scripts (arguments starting with a newline
    and a `#` comment) are shown by that first comment only.
    """
    shown = []
    for argument in argv:
        if argument.startswith("\n# "):
            shown.append(f"<script: {argument[3:].splitlines()[0].strip()}>")
        else:
            shown.append(shlex.quote(argument))
    return " ".join(shown)


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def connect(host: HostConfig) -> Connection:
    """A new (lazily connecting) connection to `host`."""
    if host.is_local:
        return LocalConnection(host)
    return SshConnection(host)
