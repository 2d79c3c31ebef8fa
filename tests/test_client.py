"""`SandboxerClient` and the CLI's remote mode against a real server.

The server is the app on uvicorn in a thread of the test process, bound to
127.0.0.1 on a free port, over the saas-stub; the tests then use the client
exactly as they would a `SandboxManager`.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import uvicorn
from click.testing import CliRunner, Result

from sandboxer import archives
from sandboxer.cli import cli
from sandboxer.client import SandboxerClient
from sandboxer.errors import (
    AuthenticationError,
    BackendError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    UnsupportedError,
)
from sandboxer.http.app import create_app
from sandboxer.manager import SandboxManager
from sandboxer.models import ExecRequest, ExecStatus, ExecStreams, Progress, Sandbox
from sandboxer.plugins import PluginHost
from sandboxer_saas_stub.extension import SaasStubExtension

TOKEN = "client-test-token"
MiB = 1024 * 1024


class WatchedStub(SaasStubExtension):
    """The stub, recording whether each exec had its cancel event set."""

    id = "ext.test-watched"

    def __init__(self) -> None:
        self.cancelled: list[bool] = []

    def sandboxer_exec(
        self, sandbox: Sandbox, request: ExecRequest, streams: ExecStreams
    ) -> ExecStatus:
        status: ExecStatus = super().sandboxer_exec(sandbox, request, streams)
        self.cancelled.append(streams.cancel.is_set())
        return status

    def sandboxer_get_files(
        self, sandbox: Sandbox, source: str, sink: IO[bytes], progress: Progress
    ) -> None:
        if source != "/broken":
            super().sandboxer_get_files(sandbox, source, sink, progress)
            return
        sink.write(b"\0" * 600_000)  # a good start, then the backend fails
        raise BackendError("the disk went away")


@pytest.fixture
def watched() -> WatchedStub:
    return WatchedStub()


@pytest.fixture
def plugin_host(watched: WatchedStub) -> PluginHost:
    host = PluginHost()
    host.register(
        SaasStubExtension(), "ext.saas-stub", distribution="sandboxer-ext-saas-stub"
    )
    host.register(watched, "ext.test-watched")
    return host


@pytest.fixture
def server_url(manager: SandboxManager) -> Iterator[str]:
    """The base URL of the app served by uvicorn in a background thread."""
    app = create_app(manager, token=TOKEN)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ws="none", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def api(server_url: str) -> Iterator[SandboxerClient]:
    with SandboxerClient(server_url, token=TOKEN) as client:
        yield client


@pytest.fixture
def sandbox(api: SandboxerClient) -> Sandbox:
    return api.create(extension="ext.saas-stub", name="demo", labels={"team": "qa"})


# -- the same API as the manager -------------------------------------------------------


MANAGER_ONLY = {
    "from_environment",  # builds a local manager
    "begin_snapshot",  # the server's halves of snapshot and restore;
    "complete_snapshot",  # remotely, `wait=False` does what they are for
    "begin_restore",
    "complete_restore",
}


def public_methods(kind: type[Any]) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(kind, inspect.isfunction)
        if not name.startswith("_")
    }


def test_the_client_has_every_manager_method_with_its_parameters() -> None:
    manager_methods = public_methods(SandboxManager)
    client_methods = public_methods(SandboxerClient)
    for name, signature in manager_methods.items():
        if name in MANAGER_ONLY:
            continue
        assert name in client_methods, f"SandboxerClient lacks {name}"
        client_parameters = client_methods[name].parameters
        for parameter in signature.parameters.values():
            assert parameter.name in client_parameters, f"{name}({parameter.name})"
            theirs = client_parameters[parameter.name]
            assert theirs.kind == parameter.kind, f"{name}({parameter.name}) kind"
            assert theirs.default == parameter.default, f"{name}({parameter.name})"


# -- records ---------------------------------------------------------------------------


def test_create_returns_the_same_record_the_server_stored(
    api: SandboxerClient, manager: SandboxManager
) -> None:
    created = api.create(
        profile="profile.saas-stub", name="made", labels={"a": "1"}, ttl_seconds=90
    )
    assert isinstance(created, Sandbox)
    assert created == manager.get("made")
    assert api.get("made") == created
    assert api.get(created.id) == created


def test_list_filters_like_the_manager(api: SandboxerClient, sandbox: Sandbox) -> None:
    other = api.create(labels={"team": "dev"})
    assert [r.id for r in api.list()] == [sandbox.id, other.id]
    assert [r.id for r in api.list(labels={"team": "qa"})] == [sandbox.id]
    assert api.list(status="failed") == []
    api.destroy(other.id)
    assert [r.id for r in api.list(include_destroyed=True)] == [sandbox.id, other.id]


def test_refresh_extend_label_and_destroy(
    api: SandboxerClient, sandbox: Sandbox
) -> None:
    assert api.refresh(sandbox.id).status.value == "ready"
    assert api.extend(sandbox.id, 600).ttl_seconds == 600
    labelled = api.label(sandbox.id, {"tier": "1"}, ["team"])
    assert labelled.labels == {"tier": "1"}
    assert api.destroy("demo").status.value == "destroyed"
    assert api.destroy(sandbox.id, force=True).status.value == "destroyed"


def test_extensions_and_profiles(api: SandboxerClient) -> None:
    assert {report.id for report in api.extensions()} == {
        "ext.saas-stub",
        "ext.test-watched",
    }
    names = [profile.name for profile in api.list_profiles()]
    assert "profile.saas-stub" in names
    assert api.get_profile("profile.saas-stub").extension == "ext.saas-stub"


def test_health_needs_no_token(server_url: str) -> None:
    with SandboxerClient(server_url) as anonymous:
        assert anonymous.health()["status"] == "ok"


# -- errors ----------------------------------------------------------------------------


def test_errors_arrive_as_the_managers_classes_and_messages(
    api: SandboxerClient, manager: SandboxManager, sandbox: Sandbox
) -> None:
    with pytest.raises(NotFoundError) as remote:
        api.get("sb-nope")
    with pytest.raises(NotFoundError) as local:
        manager.get("sb-nope")
    assert remote.value.message == local.value.message
    assert remote.value.details == {"sandbox": "sb-nope"}
    with pytest.raises(ConflictError):
        api.create(name="demo")
    with pytest.raises(InvalidInputError):
        api.create(name="not a name")
    with pytest.raises(UnsupportedError):
        api.exec(sandbox.id, ["python3"])
    with pytest.raises(BackendError, match="injected fault"):
        api.create(settings={"fail_on": ["provision"]})


def test_a_wrong_token_raises_authentication_error(server_url: str) -> None:
    with (
        SandboxerClient(server_url, token="wrong") as client,
        pytest.raises(AuthenticationError),
    ):
        client.list()


def test_an_unreachable_server_is_a_backend_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (
        SandboxerClient(f"http://127.0.0.1:{port}/v1", timeout=2) as client,
        pytest.raises(BackendError, match="cannot reach"),
    ):
        client.list()


# -- exec ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 3, 126, 127, 137, 255])
def test_exec_returns_the_exact_exit_code(
    api: SandboxerClient, sandbox: Sandbox, code: int
) -> None:
    assert api.exec(sandbox.id, ["sh", "-c", f"exit {code}"]).exit_code == code


def test_exec_captures_output_and_sends_stdin(
    api: SandboxerClient, sandbox: Sandbox
) -> None:
    data = bytes(range(256))
    result = api.exec(sandbox.id, ["cat"], stdin=io.BytesIO(data))
    assert result.stdout == data
    assert result.stderr == b""
    assert not result.stdout_truncated


def test_exec_with_empty_stdin_returns(api: SandboxerClient, sandbox: Sandbox) -> None:
    assert api.exec(sandbox.id, ["cat"], stdin=io.BytesIO(b"")).stdout == b""


def test_exec_writes_into_sinks_as_output_arrives(
    api: SandboxerClient, sandbox: Sandbox
) -> None:
    stdout, stderr = io.BytesIO(), io.BytesIO()
    result = api.exec(
        sandbox.id, ["cat", "/nope"], stdout=stdout, stderr=stderr, env={"A": "1"}
    )
    assert result.exit_code == 1
    assert stdout.getvalue() == b""
    assert b"No such file" in stderr.getvalue()
    assert result.stdout == result.stderr == b""


def test_exec_caps_captured_output_keeping_the_end(
    api: SandboxerClient, sandbox: Sandbox
) -> None:
    data = b"".join(b"%09d\n" % line for line in range(100_000))
    result = api.exec(sandbox.id, ["cat"], stdin=io.BytesIO(data), output_limit=50)
    assert result.stdout == data[-50:]
    assert result.stdout_truncated


def test_exec_streams_a_large_output_byte_exact(
    api: SandboxerClient, sandbox: Sandbox, tmp_path: Path
) -> None:
    payload = hashlib.sha256(b"seed").digest() * (20 * MiB // 32)
    big = tmp_path / "big.bin"
    big.write_bytes(payload)
    upload_tree(api, sandbox.id, big, "/workspace")
    sink = HashingSink()
    result = api.exec(sandbox.id, ["cat", "/workspace/big.bin"], stdout=sink)
    assert result.exit_code == 0
    assert sink.size == len(payload)
    assert sink.digest.hexdigest() == hashlib.sha256(payload).hexdigest()


class HashingSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def test_exec_timeout_is_reported(api: SandboxerClient, sandbox: Sandbox) -> None:
    result = api.exec(sandbox.id, ["sleep", "10"], timeout=0.1)
    assert result.timed_out
    assert result.exit_code == 124


def test_stdin_over_the_limit_is_refused_before_sending(
    api: SandboxerClient, sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sandboxer.client.MAX_STDIN_BYTES", 10)
    with pytest.raises(InvalidInputError, match="sandboxer cp"):
        api.exec(sandbox.id, ["cat"], stdin=io.BytesIO(b"x" * 11))


def test_cancel_stops_the_remote_command(
    api: SandboxerClient, watched: WatchedStub
) -> None:
    sandbox = api.create(extension="ext.test-watched")
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.monotonic()
    with pytest.raises(BackendError, match="cancelled"):
        api.exec(sandbox.id, ["sleep", "30"], cancel=cancel)
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while not watched.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert watched.cancelled == [True]


# -- files -----------------------------------------------------------------------------


def upload_tree(api: SandboxerClient, sandbox_id: str, path: Path, where: str) -> None:
    buffer = io.BytesIO()
    archives.write_tree([path], buffer)
    buffer.seek(0)
    api.put_files(sandbox_id, where, buffer)


def test_files_round_trip(
    api: SandboxerClient, sandbox: Sandbox, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_bytes(b"alpha")
    (tree / "link").symlink_to("sub/a.txt")
    progress: list[int] = []
    buffer = io.BytesIO()
    archives.write_tree([tree], buffer)
    buffer.seek(0)
    api.put_files(
        sandbox.id, "/workspace", buffer, lambda done, total: progress.append(done)
    )
    assert progress and progress[-1] == len(buffer.getvalue())

    sink = io.BytesIO()
    record = api.get_files(sandbox.id, "/workspace/tree", sink)
    assert record.id == sandbox.id
    out = tmp_path / "out"
    out.mkdir()
    sink.seek(0)
    archives.extract_stream(sink, out)
    assert (out / "tree" / "sub" / "a.txt").read_bytes() == b"alpha"
    assert (out / "tree" / "link").readlink() == Path("sub/a.txt")


def test_a_download_failing_half_way_is_an_error_not_a_short_archive(
    api: SandboxerClient,
) -> None:
    sandbox = api.create(extension="ext.test-watched")
    with pytest.raises(BackendError, match="broke off"):
        api.get_files(sandbox.id, "/broken", io.BytesIO())


def test_get_files_of_a_missing_path_raises_not_found(
    api: SandboxerClient, sandbox: Sandbox
) -> None:
    with pytest.raises(NotFoundError):
        api.get_files(sandbox.id, "/workspace/none", io.BytesIO())


# -- snapshots -------------------------------------------------------------------------


def test_snapshot_and_restore(api: SandboxerClient, sandbox: Sandbox) -> None:
    snapshot = api.snapshot(sandbox.id, labels={"kind": "test"})
    assert snapshot.status.value == "ready"
    assert api.get_snapshot(snapshot.id) == snapshot
    assert api.list_snapshots(sandbox=sandbox.id) == [snapshot]
    restored = api.restore(snapshot.id, name="copy")
    assert restored.restored_from == snapshot.id
    assert restored.status.value == "ready"
    assert api.delete_snapshot(snapshot.id).status.value == "deleted"
    assert api.list_snapshots() == []
    assert len(api.list_snapshots(include_deleted=True)) == 1


def test_snapshot_and_restore_without_waiting_can_be_polled(
    api: SandboxerClient, sandbox: Sandbox
) -> None:
    pending = api.snapshot(sandbox.id, wait=False)
    assert pending.status.value == "pending"
    deadline = time.monotonic() + 5
    while api.get_snapshot(pending.id).status.value == "pending":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    provisioning = api.restore(pending.id, wait=False)
    assert provisioning.status.value == "provisioning"
    while api.get(provisioning.id).status.value != "ready":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_reap_and_orphans(api: SandboxerClient, sandbox: Sandbox) -> None:
    assert api.reap(dry_run=True) == []
    assert api.reap_snapshots(dry_run=True) == []
    resources, errors = api.orphans()
    assert resources == []
    assert errors == {}


# -- the CLI in remote mode ------------------------------------------------------------


def remote(server_url: str, *arguments: str, input: bytes | None = None) -> Result:
    runner = CliRunner()
    return runner.invoke(
        cli,
        ["--url", server_url, "--token", TOKEN, *arguments],
        input=input,
        catch_exceptions=False,
    )


def test_the_cli_drives_a_server(server_url: str, tmp_path: Path) -> None:
    created = remote(server_url, "create", "--name", "cli", "--json")
    assert created.exit_code == 0, created.output
    sandbox_id = json.loads(created.stdout)["id"]

    listed = remote(server_url, "list", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)] == [sandbox_id]

    failed = remote(server_url, "exec", "cli", "--", "sh", "-c", "exit 3")
    assert failed.exit_code == 3

    echoed = remote(server_url, "exec", "cli", "--", "cat", input=b"piped\n")
    assert echoed.exit_code == 0
    assert echoed.stdout == "piped\n"

    local = tmp_path / "note.txt"
    local.write_text("hello")
    assert remote(server_url, "cp", str(local), "cli:/workspace/").exit_code == 0
    back = tmp_path / "back"
    copied = remote(server_url, "cp", "cli:/workspace/note.txt", f"{back}/")
    assert copied.exit_code == 0, copied.output
    assert (back / "note.txt").read_text() == "hello"

    snapshot = remote(server_url, "snapshot", "cli", "--json")
    snapshot_id = json.loads(snapshot.stdout)["id"]
    restored = remote(server_url, "restore", snapshot_id, "--name", "cli2", "--json")
    assert json.loads(restored.stdout)["restored_from"] == snapshot_id
    assert remote(server_url, "snapshots", "list").exit_code == 0
    assert remote(server_url, "reap", "--dry-run", "--orphans").exit_code == 0
    assert remote(server_url, "destroy", "cli").exit_code == 0


def test_the_cli_reports_remote_errors_as_one_line(server_url: str) -> None:
    result = remote(server_url, "get", "nope")
    assert result.exit_code == NotFoundError.exit_code
    assert result.stderr.strip().count("\n") == 0
    assert "not found" in result.stderr
