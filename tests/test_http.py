"""The HTTP API through starlette's TestClient, against the saas-stub.

Every route is exercised with success and its main errors; one test walks
the CLI's commands and fails for a command without a route; schemathesis
checks the server against its own OpenAPI document.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import tarfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import anyio
import attrs
import click
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from sandboxer.cli import cli
from sandboxer.hookspecs import hookimpl
from sandboxer.http.app import create_app
from sandboxer.http.routes import ENDPOINTS
from sandboxer.manager import SandboxManager
from sandboxer.models import ExecRequest, ExecStatus, ExecStreams, Sandbox, utcnow
from sandboxer.plugins import PluginHost
from sandboxer.stores import JsonSandboxStore, JsonSnapshotStore
from sandboxer_saas_stub.extension import SaasStubExtension

with warnings.catch_warnings():
    # starlette would rather use httpx2 for its test client; httpx works.
    warnings.simplefilter("ignore", UserWarning)
    from starlette.testclient import TestClient

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MiB = 1024 * 1024


class NoisyExtension(SaasStubExtension):
    """The stub, plus `noise OUT ERR` writing that many bytes to each stream
    at once (interleaved), and a record of whether each exec saw `cancel`."""

    id = "ext.test-noisy"
    cancelled: ClassVar[list[bool]] = []

    def sandboxer_exec(
        self, sandbox: Sandbox, request: ExecRequest, streams: ExecStreams
    ) -> ExecStatus:
        if request.argv[0] == "threaded-cat":
            return _cat_from_other_threads(streams)
        if request.argv[0] == "noise":
            out, err = int(request.argv[1]), int(request.argv[2])
            _write_noise(streams, out, err)
            code = int(request.argv[3]) if len(request.argv) > 3 else 0
            return ExecStatus(exit_code=code)
        status: ExecStatus = super().sandboxer_exec(sandbox, request, streams)
        NoisyExtension.cancelled.append(streams.cancel.is_set())
        return status


def _cat_from_other_threads(streams: ExecStreams) -> ExecStatus:
    """Read stdin and write both streams from threads of the extension's own,
    as backends that drain a connection do (not the server's worker thread)."""
    received = bytearray()

    def pump() -> None:
        for chunk in iter(
            lambda: streams.stdin.read(4096) if streams.stdin else b"", b""
        ):
            received.extend(chunk)
            streams.stdout.write(chunk)
        streams.stderr.write(b"done\n")

    worker = threading.Thread(target=pump)
    worker.start()
    worker.join()
    return ExecStatus(exit_code=0 if received else 3)


def _write_noise(streams: ExecStreams, out: int, err: int) -> None:
    chunk = 64 * 1024
    written_out = written_err = 0
    while written_out < out or written_err < err:
        if written_out < out:
            size = min(chunk, out - written_out)
            streams.stdout.write(noise_bytes(b"O", written_out, size))
            written_out += size
        if written_err < err:
            size = min(chunk, err - written_err)
            streams.stderr.write(noise_bytes(b"E", written_err, size))
            written_err += size


def noise_bytes(tag: bytes, offset: int, size: int) -> bytes:
    """Deterministic bytes, different at every offset, so hashes catch reordering."""
    line = tag + b"%014d\n"
    start = offset // 16
    data = b"".join(line % index for index in range(start, start + size // 16 + 2))
    skip = offset - start * 16
    return data[skip : skip + size]


def expected_noise(tag: bytes, size: int) -> bytes:
    return noise_bytes(tag, 0, size)


class MisspeltExtension:
    """A plugin whose hook name is misspelt; it must fail to load, alone."""

    @hookimpl
    def sandboxer_describ(self) -> None:  # the typo is the point
        """Never called."""


@pytest.fixture
def plugin_host() -> PluginHost:
    host = PluginHost()
    host.register(
        SaasStubExtension(), "ext.saas-stub", distribution="sandboxer-ext-saas-stub"
    )
    host.register(NoisyExtension(), "ext.test-noisy")
    return host


@pytest.fixture
def app(manager: SandboxManager) -> Any:
    return create_app(manager, token=TOKEN)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app, headers=AUTH) as test_client:
        yield test_client


@pytest.fixture
def sandbox(client: TestClient) -> dict[str, Any]:
    response = client.post(
        "/v1/sandboxes", json={"extension": "ext.saas-stub", "name": "demo"}
    )
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record


@pytest.fixture
def noisy(client: TestClient) -> dict[str, Any]:
    response = client.post("/v1/sandboxes", json={"extension": "ext.test-noisy"})
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()
    return record


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}
    assert "Traceback" not in error["message"]
    return error


def exec_in(client: TestClient, sandbox_id: str, **body: Any) -> httpx.Response:
    response: httpx.Response = client.post(
        f"/v1/sandboxes/{sandbox_id}/exec", json=body
    )
    return response


def events_of(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


def tar_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# -- health, authentication, documents -------------------------------------------------


def test_health_answers_without_a_token(app: Any) -> None:
    with TestClient(app) as anonymous:
        response = anonymous.get("/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {report["id"] for report in body["extensions"]} == {
        "ext.saas-stub",
        "ext.test-noisy",
    }


def test_health_reports_an_extension_that_failed_to_load(
    plugin_host: PluginHost, data_dir: Path
) -> None:
    assert not plugin_host.register(MisspeltExtension(), "ext.misspelt")
    manager = SandboxManager(
        plugin_host, JsonSandboxStore(data_dir), JsonSnapshotStore(data_dir)
    )
    with TestClient(create_app(manager, token=TOKEN), headers=AUTH) as client:
        health = client.get("/v1/health").json()
        listed = client.get("/v1/sandboxes")
    assert health["status"] == "degraded"
    (broken,) = [r for r in health["extensions"] if r["id"] == "ext.misspelt"]
    assert broken["status"] == "failed"
    assert "sandboxer_describ" in broken["error"]
    assert listed.status_code == 200


@pytest.mark.parametrize(
    "endpoint", [e for e in ENDPOINTS if not e.public], ids=lambda e: e.operation_id
)
def test_every_route_but_health_needs_the_token(app: Any, endpoint: Any) -> None:
    path = endpoint.path.replace("{id}", "sb-x").replace("{name}", "p")
    with TestClient(app) as anonymous:
        missing = anonymous.request(endpoint.method, path)
        wrong = anonymous.request(
            endpoint.method, path, headers={"Authorization": "Bearer nope"}
        )
    for response in (missing, wrong):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert error_of(response)["code"] == "unauthorized"


def test_a_token_of_another_scheme_is_refused(client: TestClient) -> None:
    response = client.get("/v1/sandboxes", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status_code == 401


def test_without_a_configured_token_no_header_is_needed(
    manager: SandboxManager,
) -> None:
    with TestClient(create_app(manager)) as open_client:
        assert open_client.get("/v1/sandboxes").status_code == 200


def test_openapi_document_lists_every_route(client: TestClient) -> None:
    document = client.get("/v1/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for endpoint in ENDPOINTS:
        operation = document["paths"][endpoint.path][endpoint.method.lower()]
        assert operation["operationId"] == endpoint.operation_id
        assert "500" in operation["responses"]


def test_an_unknown_route_is_a_json_404(client: TestClient) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_a_wrong_method_is_a_json_405_with_allow(client: TestClient) -> None:
    response = client.patch("/v1/sandboxes")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert error_of(response)["code"] == "method_not_allowed"


def test_a_trailing_slash_is_not_redirected(client: TestClient) -> None:
    response = client.get("/v1/sandboxes/", follow_redirects=False)
    assert response.status_code == 404


def test_an_unexpected_exception_is_a_generic_500_and_is_logged(
    manager: SandboxManager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(**_: Any) -> list[Sandbox]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(manager, "list", broken)
    app = create_app(manager, token=TOKEN)
    with TestClient(app, headers=AUTH) as client, caplog.at_level(logging.ERROR):
        response = client.get("/v1/sandboxes")
    assert response.status_code == 500
    error = error_of(response)
    assert error["code"] == "internal"
    assert "secret" not in response.text
    assert "secret internal detail" in caplog.text


# -- extensions and profiles -----------------------------------------------------------


def test_extensions_lists_the_loaded_extensions(client: TestClient) -> None:
    reports = client.get("/v1/extensions").json()
    stub = next(r for r in reports if r["id"] == "ext.saas-stub")
    assert stub["status"] == "loaded"
    assert "snapshots" in stub["capabilities"]


def test_profiles_list_and_show(client: TestClient) -> None:
    names = [profile["name"] for profile in client.get("/v1/profiles").json()]
    assert "profile.saas-stub" in names
    profile = client.get("/v1/profiles/profile.saas-stub").json()
    assert profile["extension"] == "ext.saas-stub"


def test_an_unknown_profile_is_404(client: TestClient) -> None:
    response = client.get("/v1/profiles/profile.nope")
    assert response.status_code == 404
    assert error_of(response)["details"] == {"profile": "profile.nope"}


# -- create, list, get -----------------------------------------------------------------


def test_create_answers_201_with_the_ready_record(client: TestClient) -> None:
    response = client.post(
        "/v1/sandboxes",
        json={
            "profile": "profile.saas-stub",
            "name": "made",
            "labels": {"team": "qa"},
            "ttl_seconds": 60,
            "settings": {"latency": 0},
        },
    )
    assert response.status_code == 201
    record = response.json()
    assert record["status"] == "ready"
    assert record["labels"]["team"] == "qa"
    assert record["ttl_seconds"] == 60


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"name": 5}, "$.name"),
        ({"labels": {"a": 1}}, "$.labels"),
        ({"ttl_seconds": "60"}, "$.ttl_seconds"),
        ({"ttl_seconds": True}, "$.ttl_seconds"),
        ({"nmae": "typo"}, "nmae"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_malformed_create_body_is_422_naming_the_key(
    client: TestClient, body: Any, where: str
) -> None:
    response = client.post("/v1/sandboxes", json=body)
    assert response.status_code == 422
    error = error_of(response)
    assert error["code"] == "invalid_input"
    assert where in error["message"]
    assert "\n" not in error["message"]


def test_invalid_json_is_422_with_one_line(client: TestClient) -> None:
    response = client.post(
        "/v1/sandboxes",
        content=b'{"name": ',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "not valid JSON" in error_of(response)["message"]


def test_nan_is_not_accepted_as_a_number(client: TestClient) -> None:
    response = client.post(
        "/v1/sandboxes",
        content=b'{"ttl_seconds": NaN}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_a_json_body_over_the_limit_is_413(client: TestClient) -> None:
    response = client.post("/v1/sandboxes", content=b" " * (MiB + 1))
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"


def test_a_taken_name_is_409(client: TestClient, sandbox: dict[str, Any]) -> None:
    response = client.post("/v1/sandboxes", json={"name": "demo"})
    assert response.status_code == 409
    assert error_of(response)["details"]["sandbox"] == sandbox["id"]


def test_an_invalid_name_is_422(client: TestClient) -> None:
    response = client.post("/v1/sandboxes", json={"name": "My Sandbox!"})
    assert response.status_code == 422


def test_an_unknown_profile_on_create_is_404(client: TestClient) -> None:
    assert client.post("/v1/sandboxes", json={"profile": "nope"}).status_code == 404


def test_a_backend_failure_on_create_is_503(client: TestClient) -> None:
    response = client.post(
        "/v1/sandboxes",
        json={"extension": "ext.saas-stub", "settings": {"fail_on": ["provision"]}},
    )
    assert response.status_code == 503
    assert error_of(response)["code"] == "backend_failure"
    (failed,) = client.get("/v1/sandboxes", params={"status": "failed"}).json()
    assert "injected fault" in failed["error"]


def test_list_filters_by_label_status_and_extension(client: TestClient) -> None:
    client.post("/v1/sandboxes", json={"labels": {"team": "qa", "tier": "1"}})
    client.post("/v1/sandboxes", json={"labels": {"team": "dev"}})
    client.post("/v1/sandboxes", json={"extension": "ext.test-noisy"})

    def ids(**params: Any) -> int:
        response = client.get("/v1/sandboxes", params=params)
        assert response.status_code == 200
        return len(response.json())

    assert ids() == 3
    assert ids(label="team=qa") == 1
    assert ids(label=["team=qa", "tier=1"]) == 1
    assert ids(label=["team=qa", "tier=2"]) == 0
    assert ids(extension="ext.test-noisy") == 1
    assert ids(status="ready") == 3
    assert ids(status="destroyed") == 0


def test_list_includes_destroyed_sandboxes_only_with_all(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    client.delete(f"/v1/sandboxes/{sandbox['id']}")
    assert client.get("/v1/sandboxes").json() == []
    assert len(client.get("/v1/sandboxes", params={"all": "true"}).json()) == 1


@pytest.mark.parametrize(
    "params",
    [{"status": "sleepy"}, {"label": "novalue"}, {"all": "1"}, {"all": ""}, {"x": "1"}],
)
def test_bad_list_filters_are_422(client: TestClient, params: dict[str, str]) -> None:
    response = client.get("/v1/sandboxes", params=params)
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_input"


def test_get_finds_a_sandbox_by_id_or_name(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    by_id = client.get(f"/v1/sandboxes/{sandbox['id']}").json()
    by_name = client.get("/v1/sandboxes/demo").json()
    assert by_id == by_name == sandbox


def test_get_with_refresh_asks_the_backend(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.get(f"/v1/sandboxes/{sandbox['id']}", params={"refresh": "true"})
    assert response.status_code == 200
    assert response.json()["updated_at"] >= sandbox["updated_at"]


def test_get_of_an_unknown_sandbox_is_404(client: TestClient) -> None:
    response = client.get("/v1/sandboxes/sb-000000000000")
    assert response.status_code == 404
    error = error_of(response)
    assert error["code"] == "not_found"
    assert "sandboxer list" in error["message"]


# -- destroy, extend, labels -----------------------------------------------------------


def test_destroy_is_idempotent(client: TestClient, sandbox: dict[str, Any]) -> None:
    first = client.delete(f"/v1/sandboxes/{sandbox['id']}")
    again = client.delete(f"/v1/sandboxes/{sandbox['id']}")
    assert first.status_code == again.status_code == 200
    assert again.json()["status"] == "destroyed"


def test_destroy_failing_in_the_backend_is_503_unless_forced(
    client: TestClient,
) -> None:
    created = client.post(
        "/v1/sandboxes", json={"settings": {"fail_on": ["destroy"]}}
    ).json()
    failed = client.delete(f"/v1/sandboxes/{created['id']}")
    forced = client.delete(f"/v1/sandboxes/{created['id']}", params={"force": "true"})
    assert failed.status_code == 503
    assert forced.status_code == 200
    assert forced.json()["status"] == "destroyed"


def test_destroy_of_an_unknown_sandbox_is_404(client: TestClient) -> None:
    assert client.delete("/v1/sandboxes/nope").status_code == 404


def test_extend_sets_a_new_expiry(client: TestClient, sandbox: dict[str, Any]) -> None:
    response = client.post(
        f"/v1/sandboxes/{sandbox['id']}/extend", json={"ttl_seconds": 7200}
    )
    assert response.status_code == 200
    assert response.json()["ttl_seconds"] == 7200
    assert sandbox["expires_at"] is None
    assert response.json()["expires_at"] is not None


@pytest.mark.parametrize("body", [{}, {"ttl_seconds": 0}, {"ttl_seconds": 1.5}])
def test_extend_needs_a_positive_whole_ttl(
    client: TestClient, sandbox: dict[str, Any], body: dict[str, Any]
) -> None:
    response = client.post(f"/v1/sandboxes/{sandbox['id']}/extend", json=body)
    assert response.status_code == 422


def test_extend_of_a_destroyed_sandbox_is_409(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    client.delete(f"/v1/sandboxes/{sandbox['id']}")
    response = client.post(
        f"/v1/sandboxes/{sandbox['id']}/extend", json={"ttl_seconds": 60}
    )
    assert response.status_code == 409


def test_labels_are_set_and_removed(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    path = f"/v1/sandboxes/{sandbox['id']}/labels"
    client.post(path, json={"set_labels": {"a": "1", "b": "2"}})
    response = client.post(path, json={"set_labels": {"c": "3"}, "remove": ["a"]})
    assert response.status_code == 200
    assert response.json()["labels"] == {"b": "2", "c": "3"}


def test_an_invalid_label_key_is_422(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.post(
        f"/v1/sandboxes/{sandbox['id']}/labels", json={"set_labels": {"bad key": "x"}}
    )
    assert response.status_code == 422


# -- exec ------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 126, 127, 137, 255])
def test_exec_carries_the_exit_code_exactly(
    client: TestClient, sandbox: dict[str, Any], code: int
) -> None:
    response = exec_in(client, sandbox["id"], argv=["sh", "-c", f"exit {code}"])
    assert response.status_code == 200
    assert response.json()["exit_code"] == code


def test_exec_returns_both_streams_as_text(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    result = exec_in(client, sandbox["id"], argv=["cat", "/missing"]).json()
    assert result["exit_code"] == 1
    assert result["stdout"] == ""
    assert "No such file" in result["stderr"]
    assert result["stdout_base64"] is None
    assert result["timed_out"] is False


def test_exec_passes_env_and_workdir(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    env = exec_in(client, sandbox["id"], argv=["env"], env={"GREETING": "hi"}).json()
    pwd = exec_in(client, sandbox["id"], argv=["pwd"], workdir="/tmp").json()
    assert env["stdout"] == "GREETING=hi\n"
    assert pwd["stdout"] == "/tmp\n"


def test_exec_feeds_stdin_as_text_or_base64(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    text = exec_in(client, sandbox["id"], argv=["cat"], stdin="héllo\n").json()
    raw = exec_in(client, sandbox["id"], argv=["cat"], stdin_base64="/wD+").json()
    assert text["stdout"] == "héllo\n"
    assert raw["stdout"] is None
    assert base64.b64decode(raw["stdout_base64"]) == b"\xff\x00\xfe"


@pytest.mark.parametrize(
    "body",
    [
        {"argv": ["cat"], "stdin": "a", "stdin_base64": "YQ=="},
        {"argv": ["cat"], "stdin_base64": "not base64!"},
        {"argv": []},
        {"argv": "echo hi"},
        {"argv": ["echo"], "env": {"1BAD": "x"}},
        {"argv": ["echo"], "workdir": "relative"},
        {"argv": ["echo"], "timeout": 0},
        {"argv": ["echo"], "output_limit": 0},
    ],
)
def test_invalid_exec_requests_are_422(
    client: TestClient, sandbox: dict[str, Any], body: dict[str, Any]
) -> None:
    response = exec_in(client, sandbox["id"], **body)
    assert response.status_code == 422, response.text


def test_exec_of_an_unsupported_command_is_400(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = exec_in(client, sandbox["id"], argv=["python3"])
    assert response.status_code == 400
    assert error_of(response)["code"] == "unsupported"


def test_exec_in_an_unknown_sandbox_is_404(client: TestClient) -> None:
    assert exec_in(client, "nope", argv=["true"]).status_code == 404


def test_exec_in_a_destroyed_sandbox_is_409(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    client.delete(f"/v1/sandboxes/{sandbox['id']}")
    for stream in (False, True):
        response = exec_in(client, sandbox["id"], argv=["true"], stream=stream)
        assert response.status_code == 409


def test_exec_failing_in_the_backend_is_503(client: TestClient) -> None:
    created = client.post("/v1/sandboxes", json={"settings": {"fail_on": ["exec"]}})
    response = exec_in(client, created.json()["id"], argv=["true"])
    assert response.status_code == 503


def test_exec_timeout_is_reported(client: TestClient, sandbox: dict[str, Any]) -> None:
    result = exec_in(client, sandbox["id"], argv=["sleep", "5"], timeout=0.05).json()
    assert result["timed_out"] is True
    assert result["exit_code"] == 124


def test_each_stream_is_capped_separately_keeping_its_end(
    client: TestClient, noisy: dict[str, Any]
) -> None:
    # A long stdout must not push the short stderr (the error) out.
    response = exec_in(
        client, noisy["id"], argv=["noise", str(5 * MiB), "32", "1"], output_limit=1000
    )
    result = response.json()
    assert result["exit_code"] == 1
    assert result["stdout_truncated"] is True
    assert result["stderr_truncated"] is False
    assert result["stdout"].encode() == expected_noise(b"O", 5 * MiB)[-1000:]
    assert result["stderr"].encode() == expected_noise(b"E", 32)


def test_the_server_limit_caps_what_a_request_may_keep(
    manager: SandboxManager, noisy_id: Callable[[TestClient], str]
) -> None:
    app = create_app(manager, token=TOKEN, output_limit=4096)
    with TestClient(app, headers=AUTH) as client:
        sandbox_id = noisy_id(client)
        result = exec_in(
            client, sandbox_id, argv=["noise", "10000", "10"], output_limit=MiB
        ).json()
    assert len(result["stdout"]) == 4096
    assert result["stdout_truncated"] is True


@pytest.fixture
def noisy_id() -> Callable[[TestClient], str]:
    def create(client: TestClient) -> str:
        response = client.post("/v1/sandboxes", json={"extension": "ext.test-noisy"})
        sandbox_id: str = response.json()["id"]
        return sandbox_id

    return create


def test_captured_exec_bounds_both_large_streams(
    client: TestClient, noisy: dict[str, Any]
) -> None:
    response = exec_in(
        client, noisy["id"], argv=["noise", str(10 * MiB), str(10 * MiB)]
    )
    result = response.json()
    assert result["stdout_truncated"] is result["stderr_truncated"] is True
    assert result["stdout"].encode() == expected_noise(b"O", 10 * MiB)[-MiB:]
    assert result["stderr"].encode() == expected_noise(b"E", 10 * MiB)[-MiB:]


# -- exec, streaming -------------------------------------------------------------------


def test_streamed_exec_sends_output_events_then_the_exit(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = exec_in(
        client, sandbox["id"], argv=["cat"], stdin_base64="AP8=", stream=True
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    *chunks, end = events_of(response)
    assert chunks == [{"stream": "stdout", "data_base64": "AP8="}]
    assert end["exit_code"] == 0
    assert end["timed_out"] is False


def test_accept_ndjson_asks_for_streaming(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.post(
        f"/v1/sandboxes/{sandbox['id']}/exec",
        json={"argv": ["sh", "-c", "exit 7"]},
        headers={"Accept": "application/x-ndjson"},
    )
    assert events_of(response)[-1]["exit_code"] == 7


def test_streamed_exec_reports_a_late_error_as_the_last_event(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = exec_in(client, sandbox["id"], argv=["python3"], stream=True)
    (end,) = events_of(response)
    assert end["error"]["code"] == "unsupported"


def test_streamed_exec_refuses_up_front_what_it_can(client: TestClient) -> None:
    assert exec_in(client, "nope", argv=["true"], stream=True).status_code == 404
    response = exec_in(client, "nope", argv=[], stream=True)
    assert response.status_code == 422


def test_streamed_exec_delivers_both_large_streams_byte_exact(
    client: TestClient, noisy: dict[str, Any]
) -> None:
    started = time.monotonic()
    response = exec_in(
        client,
        noisy["id"],
        argv=["noise", str(10 * MiB), str(10 * MiB), "3"],
        stream=True,
    )
    out, err = hashlib.sha256(), hashlib.sha256()
    events = events_of(response)
    for event in events[:-1]:
        data = base64.b64decode(event["data_base64"])
        (out if event["stream"] == "stdout" else err).update(data)
    assert events[-1]["exit_code"] == 3
    assert out.hexdigest() == hashlib.sha256(expected_noise(b"O", 10 * MiB)).hexdigest()
    assert err.hexdigest() == hashlib.sha256(expected_noise(b"E", 10 * MiB)).hexdigest()
    assert time.monotonic() - started < 30


# -- disconnects and the event loop ----------------------------------------------------


def call_and_disconnect(
    app: Any, path: str, body: dict[str, Any], after: float
) -> float:
    """Send a request, disconnect after `after` seconds; return when the app ended."""
    payload = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }

    async def main() -> float:
        body_sent = False

        async def receive() -> dict[str, Any]:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await anyio.sleep(after)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            pass

        started = time.monotonic()
        with anyio.fail_after(20):
            await app(scope, receive, send)
        return time.monotonic() - started

    return anyio.run(main)


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_disconnect_stops_the_running_command(
    app: Any, client: TestClient, noisy: dict[str, Any], stream: bool
) -> None:
    NoisyExtension.cancelled.clear()
    elapsed = call_and_disconnect(
        app,
        f"/v1/sandboxes/{noisy['id']}/exec",
        {"argv": ["sleep", "30"], "stream": stream},
        after=0.3,
    )
    assert elapsed < 10
    assert NoisyExtension.cancelled == [True]


def test_a_long_command_holds_up_neither_the_loop_nor_quick_requests(
    manager: SandboxManager, sandbox: dict[str, Any]
) -> None:
    # One backend thread, taken by the command: a list must still answer.
    app = create_app(manager, token=TOKEN, backend_threads=1)

    async def main() -> tuple[float, int]:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(
                transport=transport, base_url="http://test", headers=AUTH
            ) as http,
            anyio.create_task_group() as group,
        ):
            path = f"/v1/sandboxes/{sandbox['id']}/exec"
            group.start_soon(lambda: http.post(path, json={"argv": ["sleep", "1"]}))
            await anyio.sleep(0.2)
            started = time.monotonic()
            listed = await http.get("/v1/sandboxes")
            quick = time.monotonic() - started
        return quick, listed.status_code

    quick, status = anyio.run(main)
    assert status == 200
    assert quick < 0.5


# -- files -----------------------------------------------------------------------------


def test_files_round_trip_as_tar_streams(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    payload = bytes(range(256)) * 4096
    put = client.put(
        f"/v1/sandboxes/{sandbox['id']}/files",
        params={"path": "/workspace"},
        content=tar_of({"dir/data.bin": payload}),
        headers={"Content-Type": "application/x-tar"},
    )
    assert put.status_code == 200
    assert put.json()["id"] == sandbox["id"]
    got = client.get(
        f"/v1/sandboxes/{sandbox['id']}/files", params={"path": "/workspace/dir"}
    )
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(got.content)) as archive:
        member = archive.extractfile("dir/data.bin")
        assert member is not None
        assert member.read() == payload


def test_get_files_of_a_missing_path_is_404(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.get(
        f"/v1/sandboxes/{sandbox['id']}/files", params={"path": "/workspace/none"}
    )
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_files_need_an_absolute_path(
    client: TestClient, sandbox: dict[str, Any], method: str
) -> None:
    path = f"/v1/sandboxes/{sandbox['id']}/files"
    assert client.request(method, path).status_code == 422
    response = client.request(method, path, params={"path": "relative"}, content=b"")
    assert response.status_code == 422


def test_put_files_refuses_a_corrupt_archive(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.put(
        f"/v1/sandboxes/{sandbox['id']}/files",
        params={"path": "/workspace"},
        content=b"this is not a tar archive" * 100,
    )
    assert response.status_code == 422


def test_put_files_refuses_a_member_escaping_the_destination(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.put(
        f"/v1/sandboxes/{sandbox['id']}/files",
        params={"path": "/workspace"},
        content=tar_of({"../../escape.txt": b"x"}),
    )
    assert response.status_code == 422
    assert error_of(response)["code"] == "unsafe_archive"


def test_file_transfers_failing_in_the_backend_are_503(client: TestClient) -> None:
    created = client.post(
        "/v1/sandboxes", json={"settings": {"fail_on": ["put_files", "get_files"]}}
    ).json()
    path = f"/v1/sandboxes/{created['id']}/files"
    put = client.put(path, params={"path": "/workspace"}, content=tar_of({"a": b"1"}))
    got = client.get(path, params={"path": "/workspace"})
    assert put.status_code == got.status_code == 503


def test_files_of_an_unknown_sandbox_are_404(client: TestClient) -> None:
    path = "/v1/sandboxes/nope/files"
    assert client.get(path, params={"path": "/x"}).status_code == 404
    put = client.put(path, params={"path": "/x"}, content=tar_of({"a": b"1"}))
    assert put.status_code == 404


# -- snapshots and restore -------------------------------------------------------------


def test_snapshot_waits_until_ready_by_default(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.post(
        f"/v1/sandboxes/{sandbox['id']}/snapshot", json={"labels": {"kind": "nightly"}}
    )
    assert response.status_code == 201
    record = response.json()
    assert record["status"] == "ready"
    assert len(record["sha256"]) == 64
    assert record["labels"] == {"kind": "nightly"}


def test_snapshot_without_wait_answers_202_pending_and_finishes(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    response = client.post(
        f"/v1/sandboxes/{sandbox['id']}/snapshot", json={"wait": False}
    )
    assert response.status_code == 202
    assert response.json()["status"] == "pending"
    path = f"/v1/snapshots/{response.json()['id']}"
    wait_for(lambda: client.get(path).json()["status"] == "ready")


def test_snapshot_of_a_sandbox_without_snapshots_is_400(client: TestClient) -> None:
    created = client.post("/v1/sandboxes", json={"settings": {"snapshots": False}})
    response = client.post(f"/v1/sandboxes/{created.json()['id']}/snapshot")
    assert response.status_code == 400
    assert error_of(response)["code"] == "unsupported"


def test_snapshot_failing_in_the_backend_is_503_and_the_record_failed(
    client: TestClient,
) -> None:
    created = client.post("/v1/sandboxes", json={"settings": {"fail_on": ["snapshot"]}})
    response = client.post(f"/v1/sandboxes/{created.json()['id']}/snapshot")
    assert response.status_code == 503
    (record,) = client.get("/v1/snapshots", params={"status": "failed"}).json()
    assert "injected fault" in record["error"]


def test_snapshot_of_an_unknown_sandbox_is_404(client: TestClient) -> None:
    assert client.post("/v1/sandboxes/nope/snapshot").status_code == 404


def test_snapshots_list_get_and_delete(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    path = f"/v1/sandboxes/{sandbox['id']}/snapshot"
    first = client.post(path, json={"labels": {"keep": "yes"}}).json()
    client.post(path)
    assert len(client.get("/v1/snapshots").json()) == 2
    assert len(client.get("/v1/snapshots", params={"label": "keep=yes"}).json()) == 1
    assert len(client.get("/v1/snapshots", params={"sandbox": "sb-x"}).json()) == 0
    assert client.get(f"/v1/snapshots/{first['id']}").json() == first
    deleted = client.delete(f"/v1/snapshots/{first['id']}")
    assert deleted.json()["status"] == "deleted"
    assert len(client.get("/v1/snapshots").json()) == 1
    assert len(client.get("/v1/snapshots", params={"all": "true"}).json()) == 2


def test_an_unknown_snapshot_is_404(client: TestClient) -> None:
    for response in (
        client.get("/v1/snapshots/snap-nope"),
        client.delete("/v1/snapshots/snap-nope"),
        client.post("/v1/snapshots/snap-nope/restore"),
    ):
        assert response.status_code == 404


def test_deleting_a_pending_snapshot_is_409(
    client: TestClient, manager: SandboxManager, sandbox: dict[str, Any]
) -> None:
    pending, _, _ = manager.begin_snapshot(sandbox["id"])
    assert client.delete(f"/v1/snapshots/{pending.id}").status_code == 409


def test_restore_creates_a_new_ready_sandbox(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    snapshot = client.post(f"/v1/sandboxes/{sandbox['id']}/snapshot").json()
    response = client.post(
        f"/v1/snapshots/{snapshot['id']}/restore",
        json={"name": "copy", "labels": {"from": "snap"}},
    )
    assert response.status_code == 201
    restored = response.json()
    assert restored["status"] == "ready"
    assert restored["restored_from"] == snapshot["id"]
    assert restored["id"] != sandbox["id"]


def test_restore_without_wait_answers_202_provisioning_and_finishes(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    snapshot = client.post(f"/v1/sandboxes/{sandbox['id']}/snapshot").json()
    response = client.post(
        f"/v1/snapshots/{snapshot['id']}/restore", json={"wait": False}
    )
    assert response.status_code == 202
    assert response.json()["status"] == "provisioning"
    path = f"/v1/sandboxes/{response.json()['id']}"
    wait_for(lambda: client.get(path).json()["status"] == "ready")


def test_restore_of_a_deleted_snapshot_is_409(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    snapshot = client.post(f"/v1/sandboxes/{sandbox['id']}/snapshot").json()
    client.delete(f"/v1/snapshots/{snapshot['id']}")
    response = client.post(f"/v1/snapshots/{snapshot['id']}/restore")
    assert response.status_code == 409


def test_restore_with_a_taken_name_is_409(
    client: TestClient, sandbox: dict[str, Any]
) -> None:
    snapshot = client.post(f"/v1/sandboxes/{sandbox['id']}/snapshot").json()
    response = client.post(
        f"/v1/snapshots/{snapshot['id']}/restore", json={"name": "demo"}
    )
    assert response.status_code == 409


# -- reap and orphans ------------------------------------------------------------------


def test_reap_destroys_expired_sandboxes(
    client: TestClient, manager: SandboxManager, sandbox: dict[str, Any]
) -> None:
    past = utcnow() - timedelta(seconds=1)
    manager.sandboxes.update(
        sandbox["id"], lambda record: attrs.evolve(record, expires_at=past)
    )
    dry = client.post("/v1/reap", json={"dry_run": True}).json()
    assert dry["dry_run"] is True
    assert [record["id"] for record in dry["sandboxes"]] == [sandbox["id"]]
    done = client.post("/v1/reap").json()
    assert done["sandboxes"][0]["status"] == "destroyed"


def test_reap_refuses_a_negative_stale_after(client: TestClient) -> None:
    assert client.post("/v1/reap", json={"stale_after": -1}).status_code == 422


def test_reap_snapshots_fails_stuck_pending_snapshots(
    client: TestClient, manager: SandboxManager, sandbox: dict[str, Any]
) -> None:
    pending, _, _ = manager.begin_snapshot(sandbox["id"])
    response = client.post("/v1/reap/snapshots", json={"stale_after": 0})
    assert response.status_code == 200
    (reaped,) = response.json()["snapshots"]
    assert reaped["id"] == pending.id
    assert reaped["status"] == "failed"


def _force_destroyed_leaving_resources(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> str:
    record = client.post("/v1/sandboxes", json={"extension": "ext.saas-stub"}).json()
    monkeypatch.setenv("SANDBOXER_SAAS_STUB_FAIL_ON", "destroy")
    forced = client.delete(f"/v1/sandboxes/{record['id']}", params={"force": "true"})
    assert forced.json()["status"] == "destroyed"
    monkeypatch.delenv("SANDBOXER_SAAS_STUB_FAIL_ON")
    sandbox_id: str = record["id"]
    return sandbox_id


def test_orphans_lists_resources_of_sandboxes_destroyed_here_only(
    client: TestClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forced = _force_destroyed_leaving_resources(client, monkeypatch)
    foreign = data_dir / "saas-stub" / "sandboxes" / "sb-of-another-home"
    foreign.mkdir(parents=True)

    body = client.get("/v1/orphans").json()

    # The noisy test extension shares the stub's state, so both report it.
    assert {resource["sandbox_id"] for resource in body["resources"]} == {forced}
    assert body["errors"] == {}


def test_removing_orphans_destroys_their_resources(
    client: TestClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forced = _force_destroyed_leaving_resources(client, monkeypatch)
    foreign = data_dir / "saas-stub" / "sandboxes" / "sb-of-another-home"
    foreign.mkdir(parents=True)

    removed = client.delete("/v1/orphans")

    assert removed.status_code == 200
    assert {r["sandbox_id"] for r in removed.json()["resources"]} == {forced}
    assert not (data_dir / "saas-stub" / "sandboxes" / forced).exists()
    assert foreign.is_dir()
    assert client.get("/v1/orphans").json()["resources"] == []


# -- parity with the CLI ---------------------------------------------------------------


CLI_ROUTES = {
    "extensions list": {("GET", "/v1/extensions")},
    "profiles list": {("GET", "/v1/profiles")},
    "profiles show": {("GET", "/v1/profiles/{name}")},
    "create": {("POST", "/v1/sandboxes")},
    "list": {("GET", "/v1/sandboxes")},
    "get": {("GET", "/v1/sandboxes/{id}")},
    "exec": {("POST", "/v1/sandboxes/{id}/exec")},
    "cp": {("PUT", "/v1/sandboxes/{id}/files"), ("GET", "/v1/sandboxes/{id}/files")},
    "destroy": {("DELETE", "/v1/sandboxes/{id}")},
    "extend": {("POST", "/v1/sandboxes/{id}/extend")},
    "label": {("POST", "/v1/sandboxes/{id}/labels")},
    "reap": {
        ("POST", "/v1/reap"),
        ("POST", "/v1/reap/snapshots"),
        ("GET", "/v1/orphans"),
        ("DELETE", "/v1/orphans"),
    },
    "snapshot": {("POST", "/v1/sandboxes/{id}/snapshot")},
    "restore": {("POST", "/v1/snapshots/{id}/restore")},
    "snapshots list": {("GET", "/v1/snapshots")},
    "snapshots get": {("GET", "/v1/snapshots/{id}")},
    "snapshots delete": {("DELETE", "/v1/snapshots/{id}")},
}
NOT_REMOTE = {"serve"}


def cli_commands(group: click.Group, prefix: str = "") -> set[str]:
    names = set()
    for name, command in group.commands.items():
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            names |= cli_commands(command, f"{full} ")
        else:
            names.add(full)
    return names


def test_every_cli_command_has_a_route() -> None:
    commands = cli_commands(cli) - NOT_REMOTE
    assert set(CLI_ROUTES) == commands
    routes = {(endpoint.method, endpoint.path) for endpoint in ENDPOINTS}
    for command, needed in CLI_ROUTES.items():
        assert needed <= routes, f"`sandboxer {command}` lacks {needed - routes}"


# -- the OpenAPI document, checked by schemathesis -------------------------------------


@pytest.fixture
def api_schema(plugin_host: PluginHost, data_dir: Path) -> Any:
    manager = SandboxManager(
        plugin_host,
        JsonSandboxStore(data_dir),
        JsonSnapshotStore(data_dir),
        ready_timeout=2.0,
        poll_interval=0.01,
    )
    app = create_app(manager, token=TOKEN)
    # The token goes in through the document's own security scheme, so
    # schemathesis also sends requests without it and expects 401.
    config = SchemathesisConfig.from_dict(
        {"auth": {"openapi": {"bearer": {"bearer": TOKEN}}}}
    )
    return schemathesis.openapi.from_asgi(
        "/v1/openapi.json", app, config=config, headers=AUTH
    )


# Schemathesis' pytest loader (`schemathesis.pytest.from_fixture`) fails on
# pytest 9.2 (it sets `request.node._nodeid`), so each operation's hypothesis
# strategy is driven directly: positive and negative cases, a few each.
EXAMPLES_PER_MODE = 25

# Tar uploads are opaque bytes to schemathesis, like octet streams.
schemathesis.serializer.alias("application/x-tar", "application/octet-stream")


def test_the_server_keeps_to_its_openapi_document(api_schema: Any) -> None:
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()
        check_operation(operation, GenerationMode.POSITIVE)
        definition = operation.definition.raw
        if definition.get("parameters") or definition.get("requestBody"):
            check_operation(operation, GenerationMode.NEGATIVE)
        checked.append(operation.label)
    documented = {f"{e.method} {e.path}" for e in ENDPOINTS}
    # schemathesis leaves out the route that serves the document itself.
    assert set(checked) == documented - {"GET /v1/openapi.json"}


def check_operation(operation: Any, mode: GenerationMode) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    def conforms(case: Any) -> None:
        # Positive data may still be refused with 422: the document cannot
        # say which settings an extension accepts or which names are taken.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])

    conforms()


def test_exec_output_and_input_may_be_handled_on_the_extensions_own_threads(
    client: TestClient, noisy: dict[str, Any]
) -> None:
    payload = bytes(range(256)) * 512
    captured = exec_in(
        client,
        noisy["id"],
        argv=["threaded-cat"],
        stdin_base64=base64.b64encode(payload).decode(),
    )
    assert captured.status_code == 200, captured.text
    assert base64.b64decode(captured.json()["stdout_base64"]) == payload
    assert captured.json()["stderr"] == "done\n"

    streamed = exec_in(
        client, noisy["id"], argv=["threaded-cat"], stdin="hi", stream=True
    )
    events = events_of(streamed)
    data = b"".join(
        base64.b64decode(event["data_base64"])
        for event in events
        if event.get("stream") == "stdout"
    )
    assert data == b"hi"
    assert events[-1]["exit_code"] == 0


def test_a_json_body_sent_as_text_is_refused(client: TestClient) -> None:
    """A browser's cross-site "simple" request cannot carry a JSON body."""
    response = client.post(
        "/v1/sandboxes",
        content=b'{"extension": "ext.saas-stub"}',
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 422
    assert "application/json" in error_of(response)["message"]
    assert client.get("/v1/sandboxes").json() == []


def test_a_loopback_server_answers_only_loopback_host_names(
    manager: SandboxManager,
) -> None:
    app = create_app(manager, allowed_hosts=("127.0.0.1", "localhost"))
    with TestClient(app, base_url="http://127.0.0.1:8787") as local:
        assert local.get("/v1/sandboxes").status_code == 200
        rebound = local.get(
            "/v1/sandboxes", headers={"Host": "rebind.evil.example:8787"}
        )
        assert rebound.status_code == 403
        assert error_of(rebound)["code"] == "forbidden"
        created = local.post(
            "/v1/sandboxes",
            json={"extension": "ext.saas-stub"},
            headers={"Host": "rebind.evil.example"},
        )
        assert created.status_code == 403
        assert local.get("/v1/sandboxes").json() == []
