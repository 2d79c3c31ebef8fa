"""Every CLI command through click's CliRunner, against the saas-stub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from sandboxer import __version__
from sandboxer.cli import cli


def run(runner: CliRunner, *arguments: str, input: bytes | None = None) -> Result:
    return runner.invoke(cli, list(arguments), input=input, catch_exceptions=False)


def run_json(runner: CliRunner, *arguments: str) -> Any:
    result = run(runner, *arguments, "--json")
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def sandbox(runner: CliRunner) -> dict[str, Any]:
    created: dict[str, Any] = run_json(
        runner,
        "create",
        "--extension",
        "ext.saas-stub",
        "--name",
        "demo",
        "--label",
        "team=qa",
    )
    return created


def test_version_is_printed(runner: CliRunner) -> None:
    result = run(runner, "--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_every_command_has_help(runner: CliRunner) -> None:
    commands = [
        ["extensions", "list"],
        ["profiles", "list"],
        ["profiles", "show"],
        ["create"],
        ["list"],
        ["get"],
        ["exec"],
        ["cp"],
        ["destroy"],
        ["extend"],
        ["label"],
        ["reap"],
        ["snapshot"],
        ["restore"],
        ["snapshots", "list"],
        ["snapshots", "get"],
        ["snapshots", "delete"],
        ["serve"],
    ]
    for command in commands:
        result = run(runner, *command, "--help")
        assert result.exit_code == 0, command
        assert "Usage:" in result.stdout


def test_extensions_list_json_shows_the_stub_with_version_and_capabilities(
    runner: CliRunner,
) -> None:
    (stub,) = run_json(runner, "extensions", "list")
    assert stub["id"] == "ext.saas-stub"
    assert stub["status"] == "loaded"
    assert stub["version"]
    assert "snapshots" in stub["capabilities"]
    assert "sandboxer_exec" in stub["hooks"]


def test_extensions_list_table(runner: CliRunner) -> None:
    result = run(runner, "extensions", "list")
    assert result.exit_code == 0
    assert "ext.saas-stub" in result.stdout and "loaded" in result.stdout


def test_profiles_list_and_show_include_builtins(runner: CliRunner) -> None:
    names = [profile["name"] for profile in run_json(runner, "profiles", "list")]
    assert "profile.compose-checkpoint" in names
    shown = run_json(runner, "profiles", "show", "profile.compose-checkpoint")
    assert shown["extension"] == "ext.compose-ssh"
    assert shown["snapshots"]["enabled"] is True
    table = run(runner, "profiles", "show", "compose-checkpoint")
    assert "settings.workspace" in table.stdout


def test_user_profile_from_config_file(runner: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[profiles."profile.fast-stub"]\nextension = "ext.saas-stub"\n'
        '[profiles."profile.fast-stub".settings]\nprovision_delay = 0\n'
    )
    record = run_json(runner, "create", "--profile", "profile.fast-stub")
    assert record["profile"] == "profile.fast-stub"
    assert record["config"]["provision_delay"] == 0


def test_create_prints_a_ready_sandbox(sandbox: dict[str, Any]) -> None:
    assert sandbox["status"] == "ready"
    assert sandbox["extension"] == "ext.saas-stub"
    assert sandbox["name"] == "demo"
    assert sandbox["labels"] == {"team": "qa"}
    assert sandbox["id"].startswith("sb-")


def test_create_table_output(runner: CliRunner) -> None:
    result = run(runner, "create", "-e", "ext.saas-stub")
    assert result.exit_code == 0
    assert "status" in result.stdout and "ready" in result.stdout


@pytest.mark.parametrize("name", ["_x", "ÄÖ", "", "a b", "x" * 64, "trailing\n"])
def test_invalid_names_are_refused_in_one_line(runner: CliRunner, name: str) -> None:
    result = run(runner, "create", "-e", "ext.saas-stub", "--name", name)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "invalid sandbox name" in result.stderr
    assert run_json(runner, "list") == []


def test_names_differing_in_case_are_distinct_sandboxes(runner: CliRunner) -> None:
    upper = run_json(runner, "create", "-e", "ext.saas-stub", "--name", "My.Sandbox")
    lower = run_json(runner, "create", "-e", "ext.saas-stub", "--name", "my.sandbox")
    assert run_json(runner, "get", "My.Sandbox")["id"] == upper["id"]
    assert run_json(runner, "get", "my.sandbox")["id"] == lower["id"]
    run(runner, "destroy", "my.sandbox")
    assert run_json(runner, "get", "My.Sandbox")["status"] == "ready"


def test_duplicate_name_is_a_conflict(
    runner: CliRunner, sandbox: dict[str, Any]
) -> None:
    result = run(runner, "create", "-e", "ext.saas-stub", "--name", "demo")
    assert result.exit_code == 4
    assert "already exists" in result.stderr


def test_list_filters_and_table(runner: CliRunner, sandbox: dict[str, Any]) -> None:
    run_json(runner, "create", "-e", "ext.saas-stub", "--label", "team=dev")
    assert [r["id"] for r in run_json(runner, "list", "--label", "team=qa")] == [
        sandbox["id"]
    ]
    assert len(run_json(runner, "list", "--status", "ready")) == 2
    assert run_json(runner, "list", "--extension", "ext.other") == []
    table = run(runner, "list")
    assert sandbox["id"] in table.stdout and "demo" in table.stdout


def test_get_by_id_and_name(runner: CliRunner, sandbox: dict[str, Any]) -> None:
    assert run_json(runner, "get", sandbox["id"])["name"] == "demo"
    assert run_json(runner, "get", "demo", "--refresh")["status"] == "ready"
    assert "restored_from" in run(runner, "get", "demo").stdout


def test_unknown_id_fails_with_one_clear_line(runner: CliRunner) -> None:
    for command in (["get"], ["destroy"], ["exec"], ["snapshot"]):
        arguments = [*command, "sb-000000000000"] + (
            ["--", "true"] if command == ["exec"] else []
        )
        result = run(runner, *arguments)
        assert result.exit_code == 3, command
        assert result.stderr == (
            "sandboxer: error: sandbox 'sb-000000000000' not found; "
            "`sandboxer list` shows existing sandboxes\n"
        )


def test_exec_passes_stdout_and_exit_code(
    runner: CliRunner, sandbox: dict[str, Any]
) -> None:
    result = run(runner, "exec", "demo", "--", "echo", "hello", "world")
    assert result.exit_code == 0
    assert result.stdout == "hello world\n"
    assert run(runner, "exec", "demo", "--", "sh", "-c", "exit 3").exit_code == 3
    assert run(runner, "exec", "demo", "--", "false").exit_code == 1


def test_exec_streams_stdin(runner: CliRunner, sandbox: dict[str, Any]) -> None:
    result = run(runner, "exec", "demo", "--", "cat", input=b"piped\x00bytes")
    assert result.stdout_bytes == b"piped\x00bytes"


def test_exec_json_reports_captured_output(
    runner: CliRunner, sandbox: dict[str, Any]
) -> None:
    result = run(runner, "exec", "--json", "demo", "--", "echo", "hi")
    document = json.loads(result.stdout)
    assert document["exit_code"] == 0
    assert document["stdout"] == "hi\n"
    assert document["stdout_truncated"] is False


def test_exec_timeout_exits_124(runner: CliRunner, sandbox: dict[str, Any]) -> None:
    result = run(runner, "exec", "--timeout", "0.2", "demo", "--", "sleep", "30")
    assert result.exit_code == 124
    assert "timed out" in result.stderr


def test_exec_of_unsupported_command_names_the_extension(
    runner: CliRunner, sandbox: dict[str, Any]
) -> None:
    result = run(runner, "exec", "demo", "--", "python3", "-V")
    assert result.exit_code == 5
    assert "not supported by ext.saas-stub" in result.stderr


def test_cp_round_trip(
    runner: CliRunner, sandbox: dict[str, Any], tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "file.txt").write_text("content")
    (tree / "link").symlink_to("sub/file.txt")

    assert run(runner, "cp", str(tree), "demo:/workspace/").exit_code == 0
    assert (
        run(runner, "exec", "demo", "--", "cat", "/workspace/tree/sub/file.txt").stdout
        == "content"
    )
    back = tmp_path / "back"
    result = run(runner, "cp", "demo:/workspace/tree", str(back))
    assert result.exit_code == 0, result.stderr

    assert (back / "sub" / "file.txt").read_text() == "content"
    assert (back / "link").readlink() == Path("sub/file.txt")


def test_cp_renames_a_single_file(
    runner: CliRunner, sandbox: dict[str, Any], tmp_path: Path
) -> None:
    source = tmp_path / "a.txt"
    source.write_text("A")
    assert run(runner, "cp", str(source), "demo:/workspace/b.txt").exit_code == 0
    assert run(runner, "exec", "demo", "--", "cat", "/workspace/b.txt").stdout == "A"


def test_cp_needs_exactly_one_sandbox_side(runner: CliRunner, tmp_path: Path) -> None:
    result = run(runner, "cp", str(tmp_path), str(tmp_path))
    assert result.exit_code == 2
    assert "exactly one of SOURCE and DESTINATION" in result.stderr


def test_destroy_is_idempotent(runner: CliRunner, sandbox: dict[str, Any]) -> None:
    assert run_json(runner, "destroy", "demo")["status"] == "destroyed"
    assert run_json(runner, "destroy", sandbox["id"])["status"] == "destroyed"
    assert run_json(runner, "list") == []
    assert len(run_json(runner, "list", "--all")) == 1


def test_destroy_failure_keeps_record_failed_and_force_forgets_it(
    runner: CliRunner, sandbox: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOXER_SAAS_STUB_FAIL_ON", "destroy")
    result = run(runner, "destroy", "demo")
    assert result.exit_code == 6
    assert "injected fault in destroy" in result.stderr
    assert run_json(runner, "get", "demo")["status"] == "failed"
    assert run_json(runner, "destroy", "demo", "--force")["status"] == "destroyed"


def test_extend_and_label(runner: CliRunner, sandbox: dict[str, Any]) -> None:
    extended = run_json(runner, "extend", "demo", "--ttl", "600")
    assert extended["ttl_seconds"] == 600
    labelled = run_json(runner, "label", "demo", "owner=me", "team-")
    assert labelled["labels"] == {"owner": "me"}


def test_reap_destroys_expired_sandboxes(runner: CliRunner) -> None:
    import time

    record = run_json(runner, "create", "-e", "ext.saas-stub", "--ttl", "1")
    time.sleep(1.1)
    assert [r["id"] for r in run_json(runner, "reap", "--dry-run")["sandboxes"]] == [
        record["id"]
    ]
    assert run_json(runner, "get", record["id"])["status"] == "ready"
    reaped = run_json(runner, "reap", "--orphans")
    assert [r["status"] for r in reaped["sandboxes"]] == ["destroyed"]
    assert reaped["orphans"] == []


def test_create_failure_leaves_a_failed_record_not_a_ready_one(
    runner: CliRunner,
) -> None:
    result = run(
        runner, "create", "-e", "ext.saas-stub", "--set", 'fail_on=["provision"]'
    )
    assert result.exit_code == 6
    (record,) = run_json(runner, "list")
    assert record["status"] == "failed"
    assert "injected fault in provision" in record["error"]


def test_bad_setting_names_the_key(runner: CliRunner) -> None:
    result = run(runner, "create", "-e", "ext.saas-stub", "--set", "colour=blue")
    assert result.exit_code == 2
    assert "settings.colour" in result.stderr
    assert run_json(runner, "list", "--all") == []


def test_malformed_pairs_are_refused(runner: CliRunner) -> None:
    result = run(runner, "create", "-e", "ext.saas-stub", "--label", "novalue")
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.stderr


def test_snapshot_commands(runner: CliRunner, sandbox: dict[str, Any]) -> None:
    snapshot = run_json(runner, "snapshot", "demo", "--label", "kind=nightly")
    assert snapshot["status"] == "ready"
    assert snapshot["size_bytes"] > 0 and len(snapshot["sha256"]) == 64
    listed = run_json(runner, "snapshots", "list", "--label", "kind=nightly")
    assert [s["id"] for s in listed] == [snapshot["id"]]
    assert (
        run_json(runner, "snapshots", "get", snapshot["id"])["sandbox_id"]
        == sandbox["id"]
    )
    assert snapshot["id"] in run(runner, "snapshots", "list").stdout

    restored = run_json(runner, "restore", snapshot["id"], "--name", "copy")
    assert restored["restored_from"] == snapshot["id"]
    assert restored["status"] == "ready"
    assert run_json(runner, "get", "demo")["status"] == "ready"

    assert (
        run_json(runner, "snapshots", "delete", snapshot["id"])["status"] == "deleted"
    )
    assert run_json(runner, "snapshots", "list") == []
    result = run(runner, "restore", snapshot["id"])
    assert result.exit_code == 4
    assert "only a ready snapshot can be restored" in result.stderr


def test_unknown_snapshot_is_not_found(runner: CliRunner) -> None:
    result = run(runner, "snapshots", "get", "snap-000000000000")
    assert result.exit_code == 3
    assert "`sandboxer snapshots list`" in result.stderr


def test_serve_refuses_public_bind_without_token(runner: CliRunner) -> None:
    result = run(runner, "serve", "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert "without a token" in result.stderr


def test_reap_orphans_removes_resources_without_a_live_record(
    runner: CliRunner, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = run_json(runner, "create", "-e", "ext.saas-stub")
    monkeypatch.setenv("SANDBOXER_SAAS_STUB_FAIL_ON", "destroy")
    assert run_json(runner, "destroy", record["id"], "--force")["status"] == "destroyed"
    monkeypatch.delenv("SANDBOXER_SAAS_STUB_FAIL_ON")
    stub_dir = data_dir / "saas-stub" / "sandboxes" / record["id"]
    assert stub_dir.is_dir()

    listed = run_json(runner, "reap", "--orphans", "--dry-run")
    assert [o["sandbox_id"] for o in listed["orphans"]] == [record["id"]]
    assert stub_dir.is_dir()

    removed = run_json(runner, "reap", "--orphans")
    assert [o["extension"] for o in removed["orphans"]] == ["ext.saas-stub"]
    assert not stub_dir.exists()
    assert run_json(runner, "reap", "--orphans")["orphans"] == []


@pytest.mark.parametrize(
    "arguments",
    [
        ["create", "--ttl", "0"],
        ["nosuch"],
        ["exec"],
        ["snapshots", "lst"],
        ["list", "--bogus"],
    ],
)
def test_usage_errors_are_one_line_with_a_pointer_to_help(
    runner: CliRunner, arguments: list[str]
) -> None:
    result = run(runner, *arguments)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("sandboxer: error: ")
    assert "--help`)" in result.stderr


def test_create_with_an_unknown_extension_is_not_found(runner: CliRunner) -> None:
    result = run(runner, "create", "--extension", "ext.nope")
    assert result.exit_code == 3
    assert "extension 'ext.nope' is not installed" in result.stderr
    assert run_json(runner, "list", "--all") == []


def _upload_tree(
    runner: CliRunner, tmp_path: Path, layout: dict[str, str | None]
) -> None:
    """Upload a tree `out/` to demo:/workspace/: value None makes a dir, a
    value starting with '->' a symlink, anything else a file's content."""
    staging = tmp_path / f"upload-{len(list(tmp_path.iterdir()))}"
    for relative, content in layout.items():
        path = staging / "out" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            path.mkdir(exist_ok=True)
        elif content.startswith("->"):
            path.symlink_to(content[2:])
        else:
            path.write_text(content)
    result = run(runner, "cp", str(staging / "out"), "demo:/workspace/")
    assert result.exit_code == 0, result.stderr


def test_downloading_twice_never_writes_through_a_link_it_brought(
    runner: CliRunner, sandbox: dict[str, Any], tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    results = tmp_path / "results"
    results.mkdir()
    _upload_tree(runner, tmp_path, {"r.txt": "one", "cache": f"->{victim}"})
    assert run(runner, "cp", "demo:/workspace/out", f"{results}/").exit_code == 0
    assert (results / "out" / "cache").readlink() == victim

    _upload_tree(runner, tmp_path, {"cache": None, "cache/authorized_keys": "planted"})
    second = run(runner, "cp", "demo:/workspace/out", f"{results}/")

    assert second.exit_code == 0, second.stderr
    assert list(victim.iterdir()) == []
    assert (results / "out" / "cache" / "authorized_keys").read_text() == "planted"
    assert not (results / "out" / "cache").is_symlink()


def test_downloading_a_tree_with_links_twice_replaces_them(
    runner: CliRunner, sandbox: dict[str, Any], tmp_path: Path
) -> None:
    _upload_tree(runner, tmp_path, {"file": "x", "link": "->file"})
    results = tmp_path / "results"
    for _ in range(2):
        result = run(runner, "cp", "demo:/workspace/out", f"{results}/")
        assert result.exit_code == 0, result.stderr
    assert (results / "out" / "link").readlink() == Path("file")


def test_download_of_a_missing_path_says_not_found(
    runner: CliRunner, sandbox: dict[str, Any], tmp_path: Path
) -> None:
    result = run(runner, "cp", "demo:/workspace/nope", str(tmp_path / "x"))
    assert result.exit_code == 3
    assert "does not exist" in result.stderr
    unknown = run(runner, "cp", "sb-000000000000:/workspace/x", str(tmp_path / "y"))
    assert unknown.exit_code == 3
    assert "not found" in unknown.stderr


@pytest.mark.parametrize("remote", ["/workspace/out/..", "/workspace/.", "/"])
def test_download_of_a_path_without_a_name_is_refused(
    runner: CliRunner, sandbox: dict[str, Any], tmp_path: Path, remote: str
) -> None:
    result = run(runner, "cp", f"demo:{remote}", f"{tmp_path}/")
    assert result.exit_code == 2
    assert "name a file or directory" in result.stderr


def test_failed_create_frees_its_name_and_names_find_destroyed_sandboxes(
    runner: CliRunner,
) -> None:
    failed = run(
        runner,
        "create",
        "-e",
        "ext.saas-stub",
        "-n",
        "box",
        "--set",
        "fail_on=provision",
    )
    assert failed.exit_code == 6
    assert failed.stderr.count("\n") == 1
    retried = run_json(runner, "create", "-e", "ext.saas-stub", "-n", "box")
    assert run_json(runner, "get", "box")["id"] == retried["id"]
    assert run_json(runner, "destroy", "box")["status"] == "destroyed"
    assert run_json(runner, "destroy", "box")["status"] == "destroyed"


def test_snapshots_can_be_listed_by_sandbox_name(
    runner: CliRunner, sandbox: dict[str, Any]
) -> None:
    snapshot = run_json(runner, "snapshot", "demo")
    assert [
        s["id"] for s in run_json(runner, "snapshots", "list", "--sandbox", "demo")
    ] == [snapshot["id"]]
    assert run_json(runner, "snapshots", "list", "--sandbox", "no-such-box") == []


def test_stub_refuses_shell_syntax_it_cannot_run(
    runner: CliRunner, sandbox: dict[str, Any]
) -> None:
    for script in ("echo hi > /workspace/a", "echo a && false", "true; false"):
        result = run(runner, "exec", "demo", "--", "sh", "-c", script)
        assert result.exit_code == 5, script
        assert "shell syntax" in result.stderr


def test_arguments_that_are_not_utf8_are_refused_before_running(
    runner: CliRunner, sandbox: dict[str, Any]
) -> None:
    result = run(runner, "exec", "demo", "--", "echo", "bad\udcff")
    assert result.exit_code == 2
    assert "valid UTF-8" in result.stderr


def test_a_token_file_that_is_not_text_is_one_clear_error(
    runner: CliRunner, tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_bytes(b"\xff\xfe")
    for arguments in (
        ["--url", "http://127.0.0.1:9", "--token-file", str(token), "list"],
        ["serve", "--token-file", str(token)],
    ):
        result = run(runner, *arguments)
        assert result.exit_code == 2, arguments
        assert result.stderr.startswith("sandboxer: error: cannot read token file")
