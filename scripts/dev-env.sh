#!/usr/bin/env bash
# Create (or refresh) the project's virtualenv in .venv with the three
# distributions installed editable and the development tools.
# Idempotent and quiet when nothing changed; used by quickstart.sh and test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv
stamp="$venv/.sandboxer-installed"
inputs=(pyproject.toml requirements-dev.txt sandboxer-core/pyproject.toml sandboxer-ext-saas-stub/pyproject.toml
        sandboxer-ext-compose-ssh/pyproject.toml)

if [ ! -x "$venv/bin/python" ]; then
  echo "dev-env: creating $venv" >&2
  python3 -m venv "$venv"
fi
wanted=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] \
   || ! "$venv/bin/python" -c 'import sandboxer, sandboxer_compose_ssh, sandboxer_saas_stub' 2>/dev/null; then
  echo "dev-env: installing sandboxer and development tools into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -e ./sandboxer-core -e ./sandboxer-ext-saas-stub -e ./sandboxer-ext-compose-ssh \
    -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi
