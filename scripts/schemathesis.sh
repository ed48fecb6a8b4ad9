#!/usr/bin/env bash
# scripts/schemathesis.sh: property-based tests of the HTTP contract. Starts
# $REPOBOX_BIN (default: the debug binary, built or brought up to date with cargo)
# without a warm pool on a free loopback port with scratch dirs, runs
# schemathesis (from PyPI, in a venv under target/) with every check against its
# /openapi.json, and stops it. Deterministic: a fixed seed.
#
# It serves a small repository over smart HTTP (scripts/git_http_server.py), and
# in the stateful phase creates name it (scripts/schemathesis_hooks.py): they
# succeed, and the phase follows the document's links from each creation to the
# routes behind its id (a container's files, commands, processes, sessions,
# snapshots; a job's results). At most MAX_CONTAINERS=6 sandboxes at once, each
# for 20 s; what is left is destroyed before the server stops.
#
# Every check runs (scripts/schemathesis.toml turns off what is named below; checks
# given on the command line would override its per-operation settings). Two
# exclusions, both about what a schema cannot say:
#   * positive_data_acceptance: a schema-valid create still names a repository
#     host that ALLOWED_GIT_HOSTS (a setting) refuses, which is a correct 400;
#   * upload_archive: schemathesis cannot generate application/x-tar bodies.
# And a sandbox's port answers 502 or 504 by design (nothing listens there, or it
# does not answer in time): the forwarding routes skip not_a_server_error.
#
# One worker: with two, Python 3.11's ast.parse, which Hypothesis calls to describe
# its strategies, now and then fails in both threads at once ("AST constructor
# recursion depth mismatch"), a runtime error that is not about this server.
set -euo pipefail
PROG=schemathesis
say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
cd "$(dirname "$0")/.."

VERSION=4.32.5
VENV=target/schemathesis-venv
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
  say "installing schemathesis $VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "schemathesis==$VERSION" || die "pip install schemathesis failed"
fi
if [ -z "${REPOBOX_BIN:-}" ]; then
  # Always (a no-op when up to date): a stale binary would test old code.
  cargo build --quiet --locked --bin repobox
  REPOBOX_BIN=${CARGO_TARGET_DIR:-target}/debug/repobox
fi
[ -x "$REPOBOX_BIN" ] || die "no repobox binary at $REPOBOX_BIN"

work=$(mktemp -d)
pid=
git_pid=
cleanup() {
  # The sandboxes outlive the server (by design): cancel the jobs, destroy the
  # sandboxes and snapshots, then stop it.
  [ -n "$pid" ] && python3 - "http://127.0.0.1:$port/api/v1" <<'PY' || true
import json, sys, urllib.request
api = sys.argv[1]
def call(method, path):
    request = urllib.request.Request(api + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return json.load(answer) if method == "GET" else None
    except Exception as err:
        print(f"schemathesis: cleanup: {method} {path}: {err}", file=sys.stderr)
for job in call("GET", "/jobs")["jobs"]:
    if job["status"] in ("queued", "running"):
        call("POST", f"/jobs/{job['job_id']}/cancel")
for container in call("GET", "/containers")["containers"]:
    call("DELETE", f"/containers/{container['container_id']}")
for snapshot in call("GET", "/snapshots")["snapshots"]:
    call("DELETE", f"/snapshots/{snapshot['snapshot_id']}")
PY
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  [ -n "$git_pid" ] && kill "$git_pid" 2>/dev/null && wait "$git_pid" 2>/dev/null || true
  cp "$work/server.log" target/schemathesis-server.log 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The repository: one commit on `main`.
git_() { git -c user.name=schemathesis -c user.email=schemathesis@localhost -c init.defaultBranch=main "$@"; }
mkdir -p "$work/git/demo"
git_ -C "$work/git/demo" init -q
printf 'hello\n' >"$work/git/demo/README.md"
git_ -C "$work/git/demo" add -A
git_ -C "$work/git/demo" commit -q -m first
git_ -C "$work/git" clone -q --bare demo demo.git
python3 -u scripts/git_http_server.py "$work/git" >"$work/git.port" 2>"$work/git.log" &
git_pid=$!
for _ in $(seq 1 100); do [ -s "$work/git.port" ] && break; sleep 0.1; done
[ -s "$work/git.port" ] || die "the git server did not start"
repo_url="http://127.0.0.1:$(head -n1 "$work/git.port")/demo.git"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# No warm pool: no test here is about the pool, and warm members would only take
# the machine's time.
HOST=127.0.0.1 PORT=$port DATA_DIR="$work/data" CACHE_DIR="$work/cache" ALLOWED_GIT_HOSTS=127.0.0.1 \
  POOL_SIZE=0 MAX_CONTAINERS=6 "$REPOBOX_BIN" serve >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$port/api/v1/health/live" >/dev/null 2>&1 && break
  sleep 0.2
done
say "testing http://127.0.0.1:$port/openapi.json"
SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py SCHEMATHESIS_REPO_URL=$repo_url \
"$VENV/bin/schemathesis" --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --exclude-operation-id upload_archive \
  --max-examples 30 --seed 1 --workers 1 \
  || die "schemathesis found problems (the server's log: target/schemathesis-server.log)"
say "ok"
