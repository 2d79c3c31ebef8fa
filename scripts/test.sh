#!/usr/bin/env bash
# README command 2, and what CI runs: set up the Docker-over-SSH test host,
# install everything into .venv, run ruff and mypy, then the whole test
# suite, end-to-end tests included. Extra arguments go to pytest (e.g. `scripts/test.sh -k cli`).
#
# Exits non-zero when a test fails, when pytest errors, and when no test ran.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testhost.sh
scripts/dev-env.sh

echo "test.sh: lint and type checks" >&2
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy

export SANDBOXER_E2E=1
status=0
.venv/bin/python -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test.sh: no tests ran; that counts as a failure" >&2
  exit 1
fi
exit "$status"
