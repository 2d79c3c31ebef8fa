"""Exec latency through sandboxer against raw docker and ssh, in one run.

Needs the test host (`scripts/testhost.sh`). Prints medians and p90s of:

- warm: `SandboxManager.exec` of a no-op through the one kept SSH connection
  (what `sandboxer serve` and Python programs get), against `docker exec`
  run directly on the Docker host;
- cold: the `sandboxer exec` CLI (a new process, a new SSH connection),
  against `ssh host docker exec`.

Usage: python bench/exec_latency.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sandboxer.manager import SandboxManager

STATE_DIR = Path(
    os.environ.get("SANDBOXER_TESTHOST_DIR", "/var/lib/sandboxer-testhost")
)
SSH = [
    "ssh",
    "-F",
    "/dev/null",
    "-i",
    str(STATE_DIR / "client_ed25519"),
    "-o",
    f"UserKnownHostsFile={STATE_DIR / 'known_hosts'}",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    "BatchMode=yes",
    "-p",
    "2222",
    "sandboxer@127.0.0.1",
]


def timed(action: Callable[[], object], runs: int) -> list[float]:
    action()  # warm-up, not counted
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def quiet(argv: list[str]) -> Callable[[], object]:
    return lambda: subprocess.run(argv, check=True, capture_output=True)


def report(name: str, samples: list[float], baseline: list[float] | None) -> None:
    median = statistics.median(samples)
    p90 = statistics.quantiles(samples, n=10)[-1]
    ratio = f"{median / statistics.median(baseline):5.2f}x" if baseline else "     -"
    print(f"{name:<44} {median:8.1f} ms {p90:8.1f} ms   {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    runs = parser.parse_args().runs

    with tempfile.TemporaryDirectory() as home:
        os.environ["SANDBOXER_HOME"] = home
        manager = SandboxManager.from_environment()
        sandbox = manager.create(
            profile="profile.compose-checkpoint", settings={"host": "testhost"}
        )
        try:
            container = sandbox.provider_data["container"]
            warm = timed(lambda: manager.exec(sandbox.id, ["true"]), runs)
            docker = timed(quiet(["docker", "exec", container, "true"]), runs)
            cold_runs = max(5, runs // 3)
            cli = timed(
                quiet(
                    [
                        str(Path(sys.executable).with_name("sandboxer")),
                        "exec",
                        sandbox.id,
                        "--",
                        "true",
                    ]
                ),
                cold_runs,
            )
            ssh = timed(quiet([*SSH, "docker", "exec", container, "true"]), cold_runs)
        finally:
            manager.destroy(sandbox.id)

    print(f"exec of a no-op, {runs} warm / {cold_runs} cold runs")
    print(f"{'path':<44} {'median':>11} {'p90':>11}   vs raw")
    report("raw: docker exec on the host", docker, None)
    report("sandboxer: manager.exec, kept SSH connection", warm, docker)
    report("raw: ssh host docker exec (new connection)", ssh, None)
    report("sandboxer: `sandboxer exec` CLI (cold)", cli, ssh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
