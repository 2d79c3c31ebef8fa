"""Keep SCOPE.md's list of known limitations in step with the code.

Every shortcoming is stated in the code where it lives, in a comment or
docstring starting `Limitation:`. This script collects them:

    python scripts/list_limitations.py            # print them
    python scripts/list_limitations.py --write    # rewrite SCOPE.md's list
    python scripts/list_limitations.py --check    # exit 1 if SCOPE.md is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _statement(lines: list[str], start: int) -> str:
    """The limitation starting on `lines[start]`, up to its paragraph's end."""
    in_comment = lines[start].lstrip().startswith("#")
    parts = [lines[start].split("Limitation:", 1)[1]]
    for line in lines[start + 1 :]:
        stripped = line.strip()
        if in_comment and not stripped.startswith("#"):
            break
        stripped = stripped.lstrip("#").strip()
        if not stripped or stripped.startswith('"""'):
            break
        parts.append(stripped.removesuffix('"""'))
    return " ".join(part.strip() for part in parts)


def limitations() -> list[tuple[str, str]]:
    found = []
    for path in sorted(ROOT.glob("sandboxer-*/src/**/*.py")):
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines):
            if "Limitation:" in line and '"Limitation:' not in line:
                found.append((str(path.relative_to(ROOT)), _statement(lines, number)))
    return found


START = "<!-- limitations:start -->"
END = "<!-- limitations:end -->"


def render() -> str:
    return "\n".join(f"- {text} (`{path}`)" for path, text in limitations())


def main(arguments: list[str]) -> int:
    scope = ROOT / "SCOPE.md"
    if not arguments:
        print(render())
        return 0
    text = scope.read_text(encoding="utf-8")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    updated = f"{head}{START}\n{render()}\n{END}{tail}"
    if "--check" in arguments:
        if updated != text:
            print("SCOPE.md is stale: run scripts/list_limitations.py --write")
            return 1
        return 0
    scope.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
