#!/usr/bin/env bash
# README command 1: set up a Docker host reachable over SSH on this machine,
# install sandboxer into .venv, then run the main job end to end through the
# `sandboxer` CLI: create -> exec -> cp in and out -> snapshot -> change ->
# restore -> show the restored file -> destroy. Prints each step.
#
# Safe to run again: every run uses fresh sandboxes and cleans them up, also
# when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/testhost.sh
scripts/dev-env.sh

sandboxer=(.venv/bin/sandboxer)
work=$(mktemp -d)
run_id=$(date +%s)-$$
source_name="quickstart-$run_id"
restored_name="quickstart-restored-$run_id"
snapshot_id=""

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
show() { printf '$'; printf ' %q' "$@"; printf '\n'; "$@"; }
json_id() { .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["id"])'; }

cleanup() {
  status=$?
  set +e
  for name in "$restored_name" "$source_name"; do
    "${sandboxer[@]}" destroy "$name" >/dev/null 2>&1
  done
  [ -n "$snapshot_id" ] && "${sandboxer[@]}" snapshots delete "$snapshot_id" >/dev/null 2>&1
  rm -rf "$work"
  if [ "$status" -ne 0 ]; then
    echo "quickstart: FAILED (exit $status); sandboxes were cleaned up" >&2
  fi
  exit "$status"
}
trap cleanup EXIT

step "extensions and profiles installed"
show "${sandboxer[@]}" extensions list
show "${sandboxer[@]}" profiles show profile.compose-checkpoint

step "create a sandbox on the SSH Docker host 'testhost'"
show "${sandboxer[@]}" create --profile profile.compose-checkpoint --set host=testhost \
  --name "$source_name" --label purpose=quickstart

step "run a command inside it"
show "${sandboxer[@]}" exec "$source_name" -- sh -c 'echo "hello from $(hostname), kernel $(uname -r)"'

step "copy a file in, and back out"
echo "written on $(hostname) at $(date -u +%FT%TZ)" > "$work/notes.txt"
show "${sandboxer[@]}" cp "$work/notes.txt" "$source_name:/workspace/"
show "${sandboxer[@]}" exec "$source_name" -- ls -l /workspace
show "${sandboxer[@]}" cp "$source_name:/workspace/notes.txt" "$work/notes-back.txt"
cmp "$work/notes.txt" "$work/notes-back.txt"
echo "round trip identical: $(cat "$work/notes-back.txt")"

step "checkpoint the workspace"
printf '$ %s snapshot %s --label purpose=quickstart --json\n' "${sandboxer[*]}" "$source_name"
snapshot_json=$("${sandboxer[@]}" snapshot "$source_name" --label purpose=quickstart --json)
snapshot_id=$(json_id <<<"$snapshot_json")
show "${sandboxer[@]}" snapshots get "$snapshot_id"

step "change the source after the snapshot"
show "${sandboxer[@]}" exec "$source_name" -- sh -c 'echo "changed after the snapshot" > /workspace/notes.txt'
show "${sandboxer[@]}" exec "$source_name" -- cat /workspace/notes.txt

step "restore the snapshot into a new sandbox"
show "${sandboxer[@]}" restore "$snapshot_id" --name "$restored_name"
restored=$("${sandboxer[@]}" exec "$restored_name" -- cat /workspace/notes.txt)
echo "restored /workspace/notes.txt: $restored"
if [ "$restored" != "$(cat "$work/notes.txt")" ]; then
  echo "quickstart: the restored file differs from the one written before the snapshot" >&2
  exit 1
fi
show "${sandboxer[@]}" snapshots list

step "destroy both sandboxes"
ids=("$("${sandboxer[@]}" get "$source_name" --json | json_id)"
     "$("${sandboxer[@]}" get "$restored_name" --json | json_id)")
show "${sandboxer[@]}" destroy "$restored_name"
show "${sandboxer[@]}" destroy "$source_name"
show "${sandboxer[@]}" snapshots delete "$snapshot_id"
snapshot_id=""

for id in "${ids[@]}"; do
  for kind in container volume network; do
    left=$(docker "$kind" ls -q $([ "$kind" = container ] && echo -a) \
      --filter "label=sandboxer.sandbox-id=$id")
    if [ -n "$left" ]; then
      echo "quickstart: ${kind}s of $id remain on the host: $left" >&2
      exit 1
    fi
  done
done
step "done: no container, volume or network of ${ids[*]} is left on the host"
