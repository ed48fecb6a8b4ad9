#!/usr/bin/env bash
# scripts/schemathesis.sh: property-based tests of the HTTP contract. Starts
# $REPOBOX_BIN (default: the debug binary, built or brought up to date with cargo)
# without a warm pool on a free loopback port with scratch dirs, runs
# schemathesis (from PyPI, in a venv under target/) with every check against its
# /openapi.json, and stops it. Deterministic: a fixed seed.
#
# Two exclusions, both about what a schema cannot say:
#   * positive_data_acceptance: a schema-valid create still names a repository
#     host that ALLOWED_GIT_HOSTS (a setting) refuses, which is a correct 400;
#   * upload_archive: schemathesis cannot generate application/x-tar bodies.
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
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# No warm pool: no create here reaches a repository (none is served), so warm
# members would only take the machine's time.
HOST=127.0.0.1 PORT=$port DATA_DIR="$work/data" CACHE_DIR="$work/cache" ALLOWED_GIT_HOSTS=127.0.0.1 \
  POOL_SIZE=0 "$REPOBOX_BIN" serve >"$work/server.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$port/api/v1/health/live" >/dev/null 2>&1 && break
  sleep 0.2
done
say "testing http://127.0.0.1:$port/openapi.json"
"$VENV/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  --checks all --exclude-checks positive_data_acceptance \
  --exclude-operation-id upload_archive \
  --max-examples 30 --seed 1 --workers 2 \
  || die "schemathesis found problems (server log: $work/server.log is removed; rerun to inspect)"
say "ok"
