"""The Compose project of a sandbox: its names and its generated compose file.

Every name derives from the sandbox id alone, never from the user's sandbox
name, so two sandboxes never share a project however their names differ
(case, dots, non-ASCII). The names are valid for Compose v1 and v2 alike:
lowercase letters, digits, '-' and '_', starting with a letter.

The compose file is JSON (Compose reads it as YAML, of which JSON is a
subset), so no value needs YAML quoting. Compose still interpolates `$` in
every value, so each `$` is written as `$$`. The file declares the project's
default network and the workspace volume explicitly, so that the service,
the network and the volume all carry the `sandboxer.*` labels: labelled in
the file, they are labelled before Docker creates them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from sandboxer.models import Sandbox
from sandboxer_compose_ssh.settings import SandboxSettings

SERVICE = "sandbox"
COMPOSE_FILE = "compose.json"
MANAGED_LABEL = "sandboxer.managed"
SANDBOX_ID_LABEL = "sandboxer.sandbox-id"
SANDBOX_NAME_LABEL = "sandboxer.sandbox-name"
USER_LABEL_PREFIX = "sandboxer.label."
# How long the container gets to stop on SIGTERM; with init: true it needs
# well under a second.
STOP_GRACE_PERIOD = "5s"

_SIMPLE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,40}$")


@dataclass(frozen=True)
class ProjectNames:
    """The Docker names of one sandbox's project and its parts."""

    project: str
    container: str
    volume: str
    network: str


def project_names(sandbox_id: str) -> ProjectNames:
    """The names for `sandbox_id`: `sandboxer-<id>` and friends.

    An id that is not already lowercase letters, digits, '-' and '_' (the
    core's ids are, e.g. `sb-1a2b3c4d5e6f`) is replaced by a hash of it, so
    that distinct ids still give distinct names.
    """
    if _SIMPLE_ID.match(sandbox_id):
        project = f"sandboxer-{sandbox_id}"
    else:
        digest = hashlib.sha256(sandbox_id.encode("utf-8")).hexdigest()[:24]
        project = f"sandboxer-x{digest}"
    return ProjectNames(
        project=project,
        container=project,
        volume=f"{project}-workspace",
        network=project,
    )


def sandbox_labels(sandbox: Sandbox) -> dict[str, str]:
    """The labels put on every container, volume and network of `sandbox`."""
    labels = {MANAGED_LABEL: "true", SANDBOX_ID_LABEL: sandbox.id}
    if sandbox.name:
        labels[SANDBOX_NAME_LABEL] = sandbox.name
    for key, value in sandbox.labels.items():
        labels[USER_LABEL_PREFIX + key] = value
    return labels


def compose_document(
    sandbox: Sandbox, settings: SandboxSettings, names: ProjectNames
) -> dict[str, Any]:
    """The compose file of `sandbox`, as a JSON-ready dict (before escaping)."""
    labels = sandbox_labels(sandbox)
    service: dict[str, Any] = {
        "image": settings.image,
        "container_name": names.container,
        "init": True,
        "command": list(settings.command),
        "environment": dict(settings.env),
        "working_dir": settings.workdir,
        "labels": labels,
        "stop_grace_period": STOP_GRACE_PERIOD,
        "volumes": [
            {"type": "volume", "source": "workspace", "target": settings.workspace}
        ],
    }
    if settings.user is not None:
        service["user"] = settings.user
    if settings.cpus is not None:
        service["cpus"] = settings.cpus
    if settings.memory is not None:
        service["mem_limit"] = settings.memory
    return {
        "services": {SERVICE: service},
        "volumes": {"workspace": {"name": names.volume, "labels": labels}},
        "networks": {"default": {"name": names.network, "labels": labels}},
    }


def render(document: dict[str, Any]) -> bytes:
    """The compose file's bytes: JSON with every `$` in a value doubled."""
    return (json.dumps(_escape(document), indent=2, sort_keys=True) + "\n").encode()


def _escape(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, dict):
        return {key: _escape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_escape(item) for item in value]
    return value
