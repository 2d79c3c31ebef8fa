"""Throughput and latency of `GET /v1/sandboxes` with 1,000 records.

A `sandboxer serve` process (uvicorn, one worker, saas-stub only) serves a
data directory holding 1,000 sandbox records; a second process sends a
bounded number of requests from a few threads over kept-alive loopback
connections and reports requests per second and latency percentiles. It
runs three times: with a bearer token, without one, and against a baseline
server that answers the same JSON document from memory (uvicorn and
starlette alone), so the ratio shows what reading and encoding the store
costs.

Needs no Docker. Usage:

    python bench/http_list.py [--records 1000] [--requests 2000] [--threads 8]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

TOKEN = "bench-token"  # noqa: S105 - a throwaway token for a loopback benchmark


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=8)
    subcommands = parser.add_subparsers(dest="mode")
    load = subcommands.add_parser("load", help="(internal) generate the load")
    load.add_argument("url")
    load.add_argument("--token")
    baseline = subcommands.add_parser("baseline", help="(internal) baseline server")
    baseline.add_argument("port", type=int)
    baseline.add_argument("document", type=Path)
    arguments = parser.parse_args()
    if arguments.mode == "load":
        print(json.dumps(run_load(arguments)))
        return 0
    if arguments.mode == "baseline":
        serve_baseline(arguments.port, arguments.document)
        return 0
    return run_benchmark(arguments)


def run_benchmark(arguments: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="sandboxer-bench-") as directory:
        root = Path(directory)
        environment = {
            **os.environ,
            "SANDBOXER_HOME": str(root / "home"),
            "SANDBOXER_CONFIG": str(root / "config.toml"),
            "SANDBOXER_PLUGINS": "ext.saas-stub",
        }
        started = time.monotonic()
        fill_store(root / "home", arguments.records)
        print(
            f"stored {arguments.records} records in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        token_file = root / "token"
        token_file.write_text(TOKEN)
        document = root / "document.json"

        results = {}
        with served(environment, ["--token-file", str(token_file)]) as url:
            results["with token"] = measure(arguments, url, TOKEN)
            document.write_bytes(
                httpx.get(
                    f"{url}/v1/sandboxes", headers={"Authorization": f"Bearer {TOKEN}"}
                ).content
            )
        with served(environment, []) as url:
            results["without token"] = measure(arguments, url, None)
        with served_baseline(document) as url:
            results["baseline"] = measure(arguments, url, None)

    print(
        f"\nGET /v1/sandboxes, {arguments.records} records, "
        f"{arguments.requests} requests from {arguments.threads} threads"
    )
    print(f"{'server':<15}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    for name, result in results.items():
        print(
            f"{name:<15}{result['rps']:>9.0f}{result['p50_ms']:>9.1f}"
            f"{result['p99_ms']:>9.1f}{result['max_ms']:>9.1f}"
        )
    ratio = results["baseline"]["rps"] / results["with token"]["rps"]
    print(f"baseline / sandboxer (with token): {ratio:.1f}x the throughput")
    return 0


def fill_store(home: Path, count: int) -> None:
    """Write `count` ready sandbox records, as `create` would leave them.

    The store document is written whole, in the format `sandboxer.stores`
    documents; adding records one by one rewrites the file each time.
    """
    from sandboxer.manager import new_sandbox_id
    from sandboxer.models import Sandbox, SandboxStatus, to_json, utcnow
    from sandboxer.stores import SCHEMA_VERSION, JsonSandboxStore

    now = utcnow()
    records = {}
    for index in range(count):
        record = Sandbox(
            id=new_sandbox_id(),
            extension="ext.saas-stub",
            status=SandboxStatus.READY,
            created_at=now,
            updated_at=now,
            name=f"bench-{index}",
            profile="profile.saas-stub",
            expires_at=now + timedelta(hours=1),
            ttl_seconds=3600,
            labels={"bench": "http_list", "index": str(index)},
            config={"latency": 0.0, "fail_on": [], "snapshots": True},
            provider_data={"stub_dir": f"/nonexistent/{index}"},
        )
        records[record.id] = to_json(record)
    store = JsonSandboxStore(home)
    store.path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "schema_version": SCHEMA_VERSION,
        "kind": "sandboxes",
        "records": records,
    }
    store.path.write_text(json.dumps(document))
    if len(store.list()) != count:
        raise SystemExit("the store did not read back the records written")


class served:
    """`sandboxer serve` on a free loopback port, for a `with` block."""

    def __init__(self, environment: dict[str, str], options: list[str]) -> None:
        self.port = free_port()
        self.command = [
            sys.executable,
            "-c",
            "from sandboxer.cli import main; main()",
            "serve",
            "--port",
            str(self.port),
            *options,
        ]
        self.environment = environment

    def __enter__(self) -> str:
        self.process = subprocess.Popen(
            self.command, env=self.environment, stdin=subprocess.DEVNULL
        )
        url = f"http://127.0.0.1:{self.port}"
        wait_for_health(url, self.process)
        return url

    def __exit__(self, *exc_info: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class served_baseline(served):
    """The baseline server: the same document from memory, no sandboxer."""

    def __init__(self, document: Path) -> None:
        self.port = free_port()
        self.command = [
            sys.executable,
            __file__,
            "baseline",
            str(self.port),
            str(document),
        ]
        self.environment = dict(os.environ)


def serve_baseline(port: int, document: Path) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    body = document.read_bytes()

    async def sandboxes(request: Any) -> Response:
        return Response(body, media_type="application/json")

    async def health(request: Any) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    app = Starlette(
        routes=[Route("/v1/sandboxes", sandboxes), Route("/v1/health", health)]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_health(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited early with status {process.returncode}")
        try:
            if httpx.get(f"{url}/v1/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise SystemExit("server did not become healthy within 30 s")


def measure(arguments: argparse.Namespace, url: str, token: str | None) -> Any:
    """Run the load generator in its own process and return its figures."""
    command = [
        sys.executable,
        __file__,
        "--requests",
        str(arguments.requests),
        "--threads",
        str(arguments.threads),
        "load",
        url,
    ]
    if token:
        command += ["--token", token]
    output = subprocess.run(command, capture_output=True, check=True, timeout=600)
    return json.loads(output.stdout)


def run_load(arguments: argparse.Namespace) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {arguments.token}"} if arguments.token else {}
    remaining = arguments.requests
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def take() -> bool:
        nonlocal remaining
        with lock:
            if remaining <= 0:
                return False
            remaining -= 1
            return True

    def worker() -> None:
        with httpx.Client(base_url=arguments.url, headers=headers, timeout=30) as http:
            http.get("/v1/health")  # open the kept-alive connection first
            while take():
                started = time.perf_counter()
                response = http.get("/v1/sandboxes")
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    failures.append(str(response.status_code))
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=worker) for _ in range(arguments.threads)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    ordered = sorted(latencies)
    return {
        "rps": len(latencies) / wall,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[int(len(ordered) * 0.99) - 1] * 1000,
        "max_ms": ordered[-1] * 1000,
    }


if __name__ == "__main__":
    sys.exit(main())
