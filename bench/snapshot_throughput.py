"""Snapshot and restore throughput through sandboxer against raw Docker paths.

Needs the test host (`scripts/testhost.sh`), or any configured host given
with `--host`. Makes a workspace of one large file plus many small ones
(1 GiB and 10,000 files by default), then times, in the same run:

- sandboxer: `SandboxManager.snapshot` (archive written on the host,
  sha256 computed on the way) and `SandboxManager.restore` (the archive
  streamed here and validated, then extracted on the host), the latter
  also without the time a new sandbox takes to provision;
- raw, timed on the host itself (no SSH in the measurement): GNU tar in a
  container writing to a bind-mounted host directory, `docker exec` tar to
  stdout, `docker cp` to stdout, and GNU tar in a container extracting a
  bind-mounted archive into a fresh volume.

MB/s is archive bytes (10^6) per second; "sandboxer/raw" divides
sandboxer's MB/s by the fastest raw path's of the same direction.

Usage: python bench/snapshot_throughput.py [--host testhost] [--size-mib 1024]
       [--files 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable

from sandboxer.config import load_config
from sandboxer.manager import SandboxManager
from sandboxer_compose_ssh.compose import project_names
from sandboxer_compose_ssh.connections import connect
from sandboxer_compose_ssh.docker import DockerHost, probe
from sandboxer_compose_ssh.hosts import load_hosts

SMALL_FILE_BYTES = 1024

_FILL_SCRIPT = r"""
# fill the workspace: one large file of $1 bytes, $2 small files
set -e
cd /workspace
head -c "$1" /dev/urandom >large.bin
mkdir -p small
i=0
while [ "$i" -lt "$2" ]; do
    printf "%01024d" "$i" >"small/file-$i"
    i=$((i + 1))
done
"""

# Runs "$@" on the host and prints how many seconds it took.
_TIMED_SCRIPT = r"""
start=$(date +%s.%N)
"$@" >/dev/null || exit
end=$(date +%s.%N)
echo "$start $end"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="testhost")
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as home:
        os.environ["SANDBOXER_HOME"] = home
        return run(options)


def run(options: argparse.Namespace) -> int:
    manager = SandboxManager.from_environment()
    host_config = load_hosts(load_config())[options.host]
    connection = connect(host_config)
    docker_host = DockerHost(connection, probe(connection))
    work = f"{docker_host.tools.home.rstrip('/')}/.sandboxer/bench"
    if host_config.is_local:
        work = f"{home_dir()}/bench"
    shell(docker_host, "mkdir", "-p", work)

    settings = {"host": options.host}
    created: list[str] = []
    try:
        started = time.perf_counter()
        source = manager.create(profile="profile.compose-checkpoint", settings=settings)
        provision_seconds = time.perf_counter() - started
        created.append(source.id)
        small_total = options.files * SMALL_FILE_BYTES
        large = options.size_mib * 1024 * 1024 - small_total
        filled = manager.exec(
            source.id,
            ["sh", "-c", _FILL_SCRIPT, "sh", str(large), str(options.files)],
            timeout=1800,
        )
        if filled.exit_code != 0:
            raise SystemExit(f"filling the workspace failed: {filled.stderr!r}")

        snapshot_seconds, size = [], 0
        restore_seconds, provision_samples = [], [provision_seconds]
        for _ in range(options.runs):
            started = time.perf_counter()
            snapshot = manager.snapshot(source.id)
            snapshot_seconds.append(time.perf_counter() - started)
            size = snapshot.size_bytes or 0

            started = time.perf_counter()
            restored = manager.restore(snapshot.id)
            restore_seconds.append(time.perf_counter() - started)
            created.append(restored.id)
            manager.destroy(restored.id)
            manager.delete_snapshot(snapshot.id)

            started = time.perf_counter()
            empty = manager.create(
                profile="profile.compose-checkpoint", settings=settings
            )
            provision_samples.append(time.perf_counter() - started)
            created.append(empty.id)
            manager.destroy(empty.id)

        names = project_names(source.id)
        raw = raw_paths(docker_host, names.volume, names.container, work, options)
    finally:
        for sandbox_id in created:
            manager.destroy(sandbox_id)
        shell(docker_host, "rm", "-rf", work)
        connection.close()

    snapshot_median = statistics.median(snapshot_seconds)
    restore_median = statistics.median(restore_seconds)
    provision_median = statistics.median(provision_samples)
    load_median = max(restore_median - provision_median, 1e-9)
    fastest_create = min(raw["create"].values())
    fastest_extract = min(raw["extract"].values())

    print(
        f"workspace: {options.size_mib} MiB in one file + {options.files} small "
        f"files; archive {size / 1e6:.0f} MB; medians of {options.runs} runs; "
        f"host {options.host}"
    )
    print(f"{'path':<58} {'seconds':>8} {'MB/s':>8} {'sandboxer/raw':>14}")
    row("sandboxer snapshot (manager, incl. sha256)", snapshot_median, size)
    for name, seconds in raw["create"].items():
        row(f"  raw: {name}", seconds, size)
    row(
        "  sandboxer snapshot / fastest raw",
        snapshot_median,
        size,
        ratio=fastest_create / snapshot_median,
    )
    row("sandboxer restore (manager, incl. provisioning)", restore_median, size)
    row(
        f"sandboxer restore load (minus {provision_median:.2f} s provisioning)",
        load_median,
        size,
    )
    for name, seconds in raw["extract"].items():
        row(f"  raw: {name}", seconds, size)
    row(
        "  sandboxer restore load / fastest raw",
        load_median,
        size,
        ratio=fastest_extract / load_median,
    )
    return 0


def raw_paths(
    docker_host: DockerHost,
    volume: str,
    container: str,
    work: str,
    options: argparse.Namespace,
) -> dict[str, dict[str, float]]:
    """Median seconds of each raw path, timed on the host."""
    docker = docker_host.tools.docker
    image = docker_host.connection.host.tool_image
    archive = f"{work}/raw.tar"
    gtar = "/usr/bin/gtar"
    creates: dict[str, Callable[[], float]] = {
        "gtar in a container -> bind-mounted dir": lambda: timed(
            docker_host,
            docker,
            "run",
            "--rm",
            "--network=none",
            "--mount",
            f"type=volume,source={volume},target=/workspace,readonly",
            "--mount",
            f"type=bind,source={work},target=/out",
            image,
            gtar,
            "--format=pax",
            "-C",
            "/workspace",
            "-cf",
            "/out/raw.tar",
            ".",
        ),
        "docker exec gtar -> stdout -> file": lambda: timed(
            docker_host,
            "sh",
            "-c",
            '"$1" exec "$2" "$3" -C /workspace -cf - . >"$4"',
            "sh",
            docker,
            container,
            gtar,
            f"{work}/exec.tar",
        ),
        "docker cp -> stdout -> file": lambda: timed(
            docker_host,
            "sh",
            "-c",
            '"$1" cp "$2:/workspace/." - >"$3"',
            "sh",
            docker,
            container,
            f"{work}/cp.tar",
        ),
    }

    def extract() -> float:
        target = f"sandboxer-bench-{os.getpid()}-{time.monotonic_ns()}"
        shell(docker_host, docker, "volume", "create", target)
        try:
            return timed(
                docker_host,
                docker,
                "run",
                "--rm",
                "--network=none",
                "--mount",
                f"type=volume,source={target},target=/workspace",
                "--mount",
                f"type=bind,source={archive},target=/in.tar,readonly",
                image,
                gtar,
                "-xpf",
                "/in.tar",
                "--numeric-owner",
                "-C",
                "/workspace",
            )
        finally:
            shell(docker_host, docker, "volume", "rm", "-f", target)

    results: dict[str, dict[str, float]] = {"create": {}, "extract": {}}
    for name, action in creates.items():
        samples = [action() for _ in range(options.runs)]
        results["create"][name] = statistics.median(samples)
    samples = [extract() for _ in range(options.runs)]
    results["extract"]["gtar -x in a container from a bind-mounted file"] = (
        statistics.median(samples)
    )
    return results


def timed(docker_host: DockerHost, *argv: str) -> float:
    result = docker_host.connection.check(
        ["sh", "-c", _TIMED_SCRIPT, "sh", *argv], timeout=1800
    )
    if result.exit_code != 0:
        raise SystemExit(f"{' '.join(argv[:3])}...: {result.stderr_tail()}")
    start, end = (float(value) for value in result.text.split())
    return end - start


def shell(docker_host: DockerHost, *argv: str) -> None:
    result = docker_host.connection.check(list(argv), timeout=300)
    if result.exit_code != 0:
        raise SystemExit(f"{' '.join(argv)}: {result.stderr_tail()}")


def home_dir() -> str:
    return os.environ["SANDBOXER_HOME"]


def row(name: str, seconds: float, size: int, ratio: float | None = None) -> None:
    shown = f"{ratio:13.2f}x" if ratio is not None else f"{'':>14}"
    print(f"{name:<58} {seconds:8.2f} {size / 1e6 / seconds:8.1f} {shown}")


if __name__ == "__main__":
    raise SystemExit(main())
