"""Development sessions: `nox -s tests`, `e2e`, `lint`, `typecheck`, `bench`, `docs`.

Every session installs the three distributions from this checkout into its
own virtualenv. `scripts/test.sh` (what CI runs) is the one command that also
sets up the Docker-over-SSH test host; `e2e` and `bench` expect it to be up
(`scripts/testhost.sh`).
"""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True

DISTRIBUTIONS = [
    "-e",
    "./sandboxer-core",
    "-e",
    "./sandboxer-ext-saas-stub",
    "-e",
    "./sandboxer-ext-compose-ssh",
]


def install(session: nox.Session) -> None:
    session.install(*DISTRIBUTIONS, "-r", "requirements-dev.txt")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit, contract, CLI and HTTP tests (no Docker needed)."""
    install(session)
    session.run("pytest", "--ignore=tests/e2e", *session.posargs)


@nox.session
def e2e(session: nox.Session) -> None:
    """End-to-end tests against the real Docker-over-SSH test host."""
    install(session)
    session.run("pytest", "tests/e2e", *session.posargs, env={"SANDBOXER_E2E": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the three packages."""
    install(session)
    session.run("mypy")


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks with ratios against raw docker/ssh baselines (needs the test host)."""
    install(session)
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Regenerate docs/cli.md from the commands' --help (CI checks it is current)."""
    install(session)
    session.run("python", "scripts/gen_cli_docs.py", *session.posargs)
