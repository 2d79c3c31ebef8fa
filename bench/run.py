"""Run every benchmark in this directory, one after the other.

`nox -s bench` calls this. Each benchmark measures its raw docker/ssh (or
plain HTTP) baseline in the same run and prints sandboxer's ratio to it.
Pass names to run only some: `python bench/run.py exec_latency`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(path for path in HERE.glob("*.py") if path.name != "run.py")
    if names:
        scripts = [path for path in scripts if path.stem in names]
    failed = 0
    for script in scripts:
        print(f"\n== {script.stem} ==", flush=True)
        failed |= subprocess.run([sys.executable, str(script)], check=False).returncode
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
