"""ext.compose-ssh end to end: provision, status, list, destroy (C03, C09)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from compose_ssh_helpers import NOTHING, HostShell, Ran, SandboxFactory

from sandboxer.errors import InvalidInputError
from sandboxer.models import SandboxStatus
from sandboxer_compose_ssh.compose import project_names
from sandboxer_compose_ssh.extension import ComposeSshExtension

pytestmark = pytest.mark.e2e


def test_lifecycle_leaves_nothing_labelled_behind(
    sandboxes: SandboxFactory,
    extension: ComposeSshExtension,
    host: HostShell,
    run: Callable[..., Ran],
) -> None:
    sandbox = sandboxes.create(name="My.Sandbox", labels={"team": "qa"})
    data = sandbox.provider_data
    assert data["host"] == "testhost"
    assert data["project"] == f"sandboxer-{sandbox.id}"
    assert extension.sandboxer_status(sandbox).status is SandboxStatus.READY
    found = host.labelled(sandbox.id)
    assert len(found["containers"]) == 1
    assert len(found["volumes"]) == 1
    assert len(found["networks"]) == 1

    ran = run(sandbox, "sh", "-c", "echo hello; pwd")
    assert (ran.exit_code, ran.stdout) == (0, b"hello\n/workspace\n")

    extension.sandboxer_destroy(sandbox)
    assert host.labelled(sandbox.id) == NOTHING
    assert not host.exists(data["project_dir"])
    status = extension.sandboxer_status(sandbox)
    assert status.status is SandboxStatus.FAILED


def test_destroy_is_idempotent(
    sandboxes: SandboxFactory, extension: ComposeSshExtension, host: HostShell
) -> None:
    sandbox = sandboxes.create()
    extension.sandboxer_destroy(sandbox)
    extension.sandboxer_destroy(sandbox)
    assert host.labelled(sandbox.id) == NOTHING


def test_destroy_of_a_never_provisioned_record_succeeds(
    sandboxes: SandboxFactory, extension: ComposeSshExtension
) -> None:
    extension.sandboxer_destroy(sandboxes.record())


def test_container_volume_and_network_carry_the_labels(
    sandboxes: SandboxFactory, host: HostShell
) -> None:
    sandbox = sandboxes.create(name="lab", labels={"sandboxer.profile": "x", "k": "v"})
    data = sandbox.provider_data
    for argv in (
        ["docker", "inspect", "--format", "{{json .Config.Labels}}", data["container"]],
        ["docker", "volume", "inspect", "--format", "{{json .Labels}}", data["volume"]],
        [
            "docker",
            "network",
            "inspect",
            "--format",
            "{{json .Labels}}",
            data["network"],
        ],
    ):
        result = host.run(*argv)
        assert result.exit_code == 0, result.stderr
        labels = json.loads(result.text)
        assert labels["sandboxer.managed"] == "true"
        assert labels["sandboxer.sandbox-id"] == sandbox.id
        assert labels["sandboxer.sandbox-name"] == "lab"
        assert labels["sandboxer.label.sandboxer.profile"] == "x"
        assert labels["sandboxer.label.k"] == "v"


def test_container_gets_settings(
    sandboxes: SandboxFactory, host: HostShell, run: Callable[..., Ran]
) -> None:
    sandbox = sandboxes.create(
        {
            "env": {"GREETING": "hi there"},
            "workspace": "/data",
            "cpus": "1.5",
            "memory": "64m",
            "user": "65534:65534",
        }
    )
    ran = run(sandbox, "sh", "-c", 'echo "$GREETING"; pwd; id -u')
    assert ran.stdout == b"hi there\n/data\n65534\n"
    result = host.run(
        "docker",
        "inspect",
        "--format",
        "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}} {{.HostConfig.Init}}",
        sandbox.provider_data["container"],
    )
    assert result.text.split() == ["1500000000", str(64 * 1024 * 1024), "true"]


def test_destroy_removes_what_was_added_after_provision(
    sandboxes: SandboxFactory, extension: ComposeSshExtension, host: HostShell
) -> None:
    """C09: a `compose run` container, a stray volume and network all go."""
    sandbox = sandboxes.create()
    data = sandbox.provider_data
    labels = [
        "--label",
        "sandboxer.managed=true",
        "--label",
        f"sandboxer.sandbox-id={sandbox.id}",
    ]
    started = host.run(
        "docker-compose",
        "-p",
        data["project"],
        "-f",
        data["compose_file"],
        "run",
        "-d",
        "sandbox",
        "sleep",
        "300",
    )
    assert started.exit_code == 0, started.stderr
    volume = host.run(
        "docker",
        "volume",
        "create",
        *labels,
        "--label",
        f"com.docker.compose.project={data['project']}",
        f"{data['project']}_removed-service-data",
    )
    assert volume.exit_code == 0, volume.stderr
    network = host.run(
        "docker", "network", "create", *labels, f"{data['project']}_extra"
    )
    assert network.exit_code == 0, network.stderr
    found = host.labelled(sandbox.id)
    assert (len(found["containers"]), len(found["volumes"])) == (2, 2)

    extension.sandboxer_destroy(sandbox)

    assert host.labelled(sandbox.id) == NOTHING


def test_list_resources_reports_each_labelled_resource(
    sandboxes: SandboxFactory, extension: ComposeSshExtension
) -> None:
    sandbox = sandboxes.create()
    resources = extension.sandboxer_list_resources([sandbox.id])
    on_testhost = [item for item in resources if item.host == "testhost"]
    assert sorted(item.kind for item in on_testhost) == [
        "container",
        "network",
        "volume",
    ]
    assert {item.sandbox_id for item in on_testhost} == {sandbox.id}

    extension.sandboxer_destroy(sandbox)
    assert extension.sandboxer_list_resources([sandbox.id]) == []


def test_project_names_differ_for_names_that_differ_only_in_case(
    sandboxes: SandboxFactory,
) -> None:
    """C03: the project comes from the id; the sandbox name is only a label."""
    upper = sandboxes.create(name="Box")
    lower = sandboxes.create(name="box")
    assert upper.provider_data["project"] != lower.provider_data["project"]


@pytest.mark.parametrize(
    "sandbox_id", ["sb-0a1b2c3d4e5f", "SB-Upper", "sb.dotted", "ÄÖ", "_x", ""]
)
def test_project_names_are_valid_for_compose_v1_and_v2(sandbox_id: str) -> None:
    names = project_names(sandbox_id)
    assert names.project[0].isalpha()
    assert set(names.project) <= set("abcdefghijklmnopqrstuvwxyz0123456789-_")


def test_project_names_of_distinct_ids_are_distinct() -> None:
    ids = ["SB-Upper", "sb-upper", "sb.dotted", "sb_dotted", "ÄÖ", "AO"]
    assert len({project_names(sandbox_id).project for sandbox_id in ids}) == len(ids)


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"host": "nowhere"}, "settings.host"),
        ({"image": "bad image"}, "settings.image"),
        ({"command": "tail -f /dev/null"}, "settings.command"),
        ({"env": {"1BAD": "x"}}, "settings.env"),
        ({"env": {"OK": 1}}, "settings.env.OK"),
        ({"workspace": "relative"}, "settings.workspace"),
        ({"workspace": "/"}, "settings.workspace"),
        ({"cpus": "many"}, "settings.cpus"),
        ({"memory": "1k"}, "settings.memory"),
        ({"memory": "lots"}, "settings.memory"),
        ({"user": "a b"}, "settings.user"),
        ({"colour": "blue"}, "settings.colour"),
    ],
)
def test_invalid_settings_name_the_key(
    extension: ComposeSshExtension, settings: dict[str, object], key: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        extension.sandboxer_validate_settings(settings)
    assert caught.value.message.startswith(f"{key}:")


def test_unknown_host_lists_the_configured_ones(
    extension: ComposeSshExtension,
) -> None:
    with pytest.raises(InvalidInputError, match="configured hosts: local, testhost"):
        extension.sandboxer_validate_settings({"host": "nowhere"})


def test_settings_get_defaults(extension: ComposeSshExtension) -> None:
    assert extension.sandboxer_validate_settings({"memory": "1g", "cpus": 2}) == {
        "host": "testhost",
        "image": "sandboxer/base:latest",
        "command": ["tail", "-f", "/dev/null"],
        "env": {},
        "workspace": "/workspace",
        "workdir": "/workspace",
        "cpus": 2.0,
        "memory": 1024**3,
    }
