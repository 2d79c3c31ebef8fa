"""ext.compose-ssh settings are checked before anything reaches Docker."""

from __future__ import annotations

import pytest

from sandboxer.errors import InvalidInputError
from sandboxer_compose_ssh.settings import validate_settings

CONFIG = {"hosts": {"box": {"url": "ssh://user@127.0.0.1:2222"}}}


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({"memory": 2**80}, "memory"),
        ({"memory": "9" * 4000}, "memory"),
        ({"memory": "1k"}, "memory"),
        ({"cpus": "1e-300"}, "cpus"),
        ({"cpus": 0}, "cpus"),
        ({"workspace": "//"}, "workspace"),
        ({"workspace": "relative"}, "workspace"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_out_of_range_settings_name_their_key(
    settings: dict[str, object], key: str
) -> None:
    with pytest.raises(InvalidInputError, match=f"settings.{key}"):
        validate_settings({"host": "local", **settings}, CONFIG)


def test_sensible_settings_are_normalised() -> None:
    result = validate_settings(
        {"host": "local", "memory": "512m", "cpus": "1.5", "workspace": "//data/"},
        CONFIG,
    )
    assert result["memory"] == 512 * 1024**2
    assert result["cpus"] == 1.5
    assert result["workspace"] == "/data"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"url": "ssh://u@127.0.0.1:0"}, "port 0"),
        ({"url": "ssh://u@127.0.0.1", "max_sessions": 0.5}, "whole number"),
        ({"url": "ssh://u@127.0.0.1", "max_sessions": 0}, "whole number"),
    ],
)
def test_host_tables_that_could_never_work_are_config_errors(
    table: dict[str, object], problem: str
) -> None:
    from sandboxer.errors import ConfigError
    from sandboxer_compose_ssh.hosts import load_hosts

    with pytest.raises(ConfigError, match=problem):
        load_hosts({"hosts": {"odd": table}})
