#!/usr/bin/env bash
# scripts/harbor-test.sh: Harbor (the framework behind Terminal-Bench) runs a task of
# ours on repobox, end to end, and must score it 1.
#
# What it does: builds (once per machine) CPython 3.13 and a venv with Harbor
# (scripts/python.sh), installs this checkout's Python SDK into it, serves nothing of
# its own but starts $REPOBOX_BIN on a free loopback port with image builds allowed,
# then runs
#
#   harbor run -p sdk/python/tests/harbor_task -a oracle \
#       -e repobox.harbor:RepoboxEnvironment --ek url=http://127.0.0.1:PORT
#
# Harbor's oracle agent runs the task's solution/solve.sh in the sandbox and the
# verifier its tests/test.sh, which writes the reward. The environment builds the
# task's environment/Dockerfile through POST /images (from a git server it starts
# itself), so this covers the whole path: image build, sandbox, exec, file and
# directory transfer both ways, destroy. Then sdk/python/tests/harbor_environment.py
# checks the environment's calls that the oracle does not make. Fails unless the
# trial's reward is 1, the checks pass and no sandbox is left behind.
#
# Needs: Docker, git, the sandbox image (make setup), curl; root the first time (for
# apt-get, when a -dev package that CPython's build needs is missing).
#   REPOBOX_BIN   the server binary (default: target/debug/repobox, built by cargo)
set -euo pipefail
PROG=harbor-test
say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
cd "$(dirname "$0")/.."

python=$(bash scripts/python.sh)
venv=$(dirname "$(dirname "$python")")
# This checkout's SDK, every time (the venv is per machine; the code is not).
"$python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps sdk/python
rm -rf sdk/python/build sdk/python/src/*.egg-info
"$python" -c 'import repobox.harbor' || die "repobox.harbor does not import"

if [ -z "${REPOBOX_BIN:-}" ]; then
  cargo build --quiet --locked --bin repobox
  REPOBOX_BIN=${CARGO_TARGET_DIR:-target}/debug/repobox
fi
[ -x "$REPOBOX_BIN" ] || die "no repobox binary at $REPOBOX_BIN"

work=$(mktemp -d)
pid=
instance=
cleanup() {
  local status=$?
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then wait "$pid" 2>/dev/null || true; fi
  # The server leaves its built images (they are a cache); these are the test's.
  if [ -n "$instance" ]; then
    docker ps -aq --filter "label=repobox.instance=$instance" | xargs -r docker rm -f >/dev/null 2>&1 || true
    docker images -q "repobox-image/$instance" | sort -u | xargs -r docker rmi -f >/dev/null 2>&1 || true
  fi
  if [ "$status" -ne 0 ]; then
    say "the server's log: $work/server.log; Harbor's: $work/jobs"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
# The environment's own git server listens on 127.0.0.1, hence ALLOWED_GIT_HOSTS.
# The task needs no network (network_mode = "no-network"), so ALLOW_NETWORK stays off.
(cd "$work" && HOST=127.0.0.1 PORT=$port DATA_DIR="$work/data" CACHE_DIR="$work/cache" \
  ALLOWED_GIT_HOSTS=127.0.0.1 ALLOW_IMAGE_BUILDS=true POOL_SIZE=0 API_KEYS='' \
  exec "$REPOBOX_BIN" serve >"$work/server.log" 2>&1) &
pid=$!
for _ in $(seq 1 150); do
  curl -fsS "$url/api/v1/health/live" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || die "the server exited at start: $(tail -20 "$work/server.log")"
  sleep 0.2
done
instance=$(curl -fsS "$url/api/v1/info" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["instance"])')
say "repobox $url (instance $instance); Harbor $("$venv/bin/harbor" --version 2>/dev/null || echo '?')"

start=$SECONDS
# -y: no prompts (Harbor asks before running a task's scripts on some environments).
if ! "$venv/bin/harbor" run -y \
  -p sdk/python/tests/harbor_task \
  -a oracle \
  -e repobox.harbor:RepoboxEnvironment \
  --ek "url=$url" \
  -o "$work/jobs" \
  -n 1 >"$work/harbor.log" 2>&1; then
  cat "$work/harbor.log" >&2
  die "harbor run failed"
fi
say "harbor run took $((SECONDS - start)) s"

# One trial, and its result.json must say reward 1 with no exception.
"$python" - "$work/jobs" <<'PY' || { cat "$work/harbor.log" >&2; die "the trial did not score 1"; }
import json, sys
from pathlib import Path

results = [p for p in Path(sys.argv[1]).glob("*/*/result.json")]
if len(results) != 1:
    sys.exit(f"harbor-test: expected one trial result, found {[str(p) for p in results]}")
result = json.loads(results[0].read_text())
exception = result.get("exception_info")
rewards = (result.get("verifier_result") or {}).get("rewards") or {}
print(f"harbor-test: {results[0].parent.name}: rewards {rewards}, exception {exception and exception.get('exception_type')}",
      file=sys.stderr)
if exception:
    sys.exit(f"harbor-test: the trial raised {exception.get('exception_type')}: {exception.get('exception_message')}")
if rewards.get("reward") != 1:
    sys.exit(f"harbor-test: reward {rewards!r}, expected 1")
PY

# What the oracle trial does not call: streamed output, another user, a timeout,
# transfers with nested directories and modes.
"$python" sdk/python/tests/harbor_environment.py "$url" || die "sdk/python/tests/harbor_environment.py failed"

left=$(curl -fsS "$url/api/v1/containers" | "$python" -c 'import json, sys; print(json.load(sys.stdin)["total_count"])')
[ "$left" = 0 ] || die "$left sandbox(es) left on the server after the trial"
say "ok: reward 1"
