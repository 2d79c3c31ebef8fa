"""Documentation that cannot go stale: hook reference and CLI help."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

from sandboxer import hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("sandboxer_"))


def test_every_hook_is_documented_with_its_arguments() -> None:
    text = (ROOT / "docs" / "extension-sdk.md").read_text()
    documented = dict(
        re.findall(r"^### (sandboxer_\w+)\(([^)]*)\)$", text, re.MULTILINE)
    )

    for name in HOOKS:
        arguments = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert documented.get(name) == arguments, (
            f"{name}({arguments}) in extension-sdk.md"
        )
    assert sorted(documented) == HOOKS


def test_every_hook_has_a_docstring_saying_what_to_return() -> None:
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert len(doc) > 80, name


def test_every_hook_is_exercised_by_some_test() -> None:
    sources = "\n".join(
        path.read_text()
        for path in (ROOT / "tests").rglob("*.py")
        if path.name != "test_docs.py"
    )
    sources += (ROOT / "sandboxer-core/src/sandboxer/testing/contract.py").read_text()
    operations = {
        "sandboxer_describe": "plugins.info(",
        "sandboxer_validate_settings": "settings.colour",
        "sandboxer_provision": ".create(",
        "sandboxer_status": "refresh",
        "sandboxer_exec": ".exec(",
        "sandboxer_put_files": "put_files",
        "sandboxer_get_files": "get_files",
        "sandboxer_destroy": ".destroy(",
        "sandboxer_list_resources": "--orphans",
        "sandboxer_profiles": "profiles",
        "sandboxer_supports_snapshots": "snapshots not supported",
        "sandboxer_snapshot": ".snapshot(",
        "sandboxer_restore_from_snapshot": ".restore(",
        "sandboxer_delete_snapshot": "delete_snapshot",
    }
    assert sorted(operations) == HOOKS
    for hook, marker in operations.items():
        assert marker in sources, f"no test drives {hook}"


def test_cli_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_every_limitation_in_code_is_listed_in_scope() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "list_limitations.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
