#!/usr/bin/env bash
# The TypeScript SDK's tests (node --test) against real servers.
#
#   bash sdk/typescript/run-tests.sh [test files...]     (default: every test/*.test.mjs)
#
# Installs the dev dependencies (typescript, for checking index.d.ts) from the lockfile
# when missing, makes a fixture repository with git, serves it with
# scripts/git_http_server.py, starts two repobox servers ($REPOBOX_BIN, default
# <repo>/target/debug/repobox, built with cargo when missing): one open, one with
# API_KEYS, a COMMAND_ALLOWLIST and small limits. Runs the tests, checks that they
# left no sandbox, snapshot or job behind, then stops the servers (SIGTERM) and
# removes whatever they left, also on failure. Exits non-zero when a test fails.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$here"

command -v node >/dev/null 2>&1 || { echo "sdk/typescript: node (20 or later) is not installed" >&2; exit 1; }
if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "sdk/typescript: node $(node --version) is too old (20 or later)" >&2
    exit 1
fi
# node_modules/.lock-installed: the lockfile it was installed from (npm ci only when it changed).
if [ ! -x node_modules/.bin/tsc ] || ! cmp -s package-lock.json node_modules/.lock-installed 2>/dev/null; then
    npm ci --no-audit --no-fund --silent
    cp package-lock.json node_modules/.lock-installed
fi

if [ -z "${REPOBOX_BIN:-}" ]; then
    REPOBOX_BIN="$repo/target/debug/repobox"
    if [ ! -x "$REPOBOX_BIN" ]; then
        (cd "$repo" && ${CARGO:-cargo} build --locked --quiet --bin repobox)
        REPOBOX_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/repobox"
    fi
fi
[ -x "$REPOBOX_BIN" ] || { echo "sdk/typescript: no repobox binary at $REPOBOX_BIN" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/repobox-ts-sdk.XXXXXX")"
pids=()
instances=()

cleanup() {
    local status=$?
    # SIGTERM: each server removes its own sandboxes; then whatever is left goes.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
        for _ in $(seq 1 600); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for instance in "${instances[@]}"; do
        left="$(docker ps -aq --filter "label=repobox.instance=$instance")"
        [ -z "$left" ] || docker rm -f $left >/dev/null
        images="$(docker images -q --filter "label=repobox.snapshot.instance=$instance")"
        [ -z "$images" ] || docker rmi -f $images >/dev/null 2>&1 || true
    done
    if [ "$status" != 0 ]; then
        for log in "$work"/*.log; do echo "--- $log"; tail -n 30 "$log"; done
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT INT TERM

# The fixture: `simple.git`, default branch trunk (two commits: README.md, src/main.py,
# a binary file, then CHANGELOG), and a branch `feature` off the first commit.
git_() { GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 git -c user.name=Fixture -c user.email=fixture@example.com -c init.defaultBranch=trunk "$@"; }
mkdir -p "$work/git/simple-work/src"
(
    cd "$work/git/simple-work"
    git_ init -q
    printf '# simple\n\nA fixture repository.\n' >README.md
    printf "print('hello from simple')\n" >src/main.py
    printf '\000\237\222\226\377\000\001\r\n' >binary.bin
    git_ add -A && git_ commit -q -m first
    echo second >CHANGELOG && git_ add -A && git_ commit -q -m second
    git_ checkout -q -b feature HEAD~1 && echo feature >FEATURE && git_ add -A && git_ commit -q -m feature
    git_ checkout -q trunk
)
export FIXTURE_FIRST="$(git_ -C "$work/git/simple-work" rev-parse trunk~1)"
export FIXTURE_TRUNK="$(git_ -C "$work/git/simple-work" rev-parse trunk)"
export FIXTURE_FEATURE="$(git_ -C "$work/git/simple-work" rev-parse feature)"
git_ -C "$work/git" clone -q --bare simple-work simple.git
rm -rf "$work/git/simple-work"

python3 -u "$repo/scripts/git_http_server.py" "$work/git" >"$work/git.port" 2>"$work/git.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/git.port" ] && break; sleep 0.1; done
export FIXTURE_GIT="http://127.0.0.1:$(head -n1 "$work/git.port")"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_server NAME KEY [VAR=VALUE...]: a repobox server in its own directory; sets $url.
start_server() {
    local name="$1" key="$2" port dir
    shift 2
    port="$(free_port)"
    dir="$work/$name"
    mkdir -p "$dir"
    (cd "$dir" && exec env HOST=127.0.0.1 PORT="$port" DATA_DIR="$dir/data" CACHE_DIR="$dir/cache" \
        ALLOWED_GIT_HOSTS=127.0.0.1 POOL_SIZE=0 API_KEYS="$key" LOG_FORMAT=human NO_COLOR=1 "$@" \
        "$REPOBOX_BIN" serve >"$work/$name.log" 2>&1) &
    pids+=($!)
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        curl -fsS "$url/api/v1/health/live" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local auth=()
    [ -z "$key" ] || auth=(-H "Authorization: Bearer $key")
    instances+=("$(curl -fsS "${auth[@]}" "$url/api/v1/info" | python3 -c 'import json, sys; print(json.load(sys.stdin)["instance"])')")
}

# Egress to names pinned to the loopback, where egress.test.mjs serves.
start_server open "" "EGRESS_ALLOW=*:*" EGRESS_HOSTS=pinned.test=127.0.0.1,other.test=127.0.0.1
export REPOBOX_TEST_URL="$url"
export REPOBOX_TEST_KEY="sdk-test-key"
start_server strict "$REPOBOX_TEST_KEY" COMMAND_ALLOWLIST=echo,cat,sleep,git,true MAX_STDIN_BYTES=1024 MAX_PROCESSES=2
export REPOBOX_TEST_STRICT_URL="$url"
unset REPOBOX_URL REPOBOX_API_KEY

files=("$@")
[ "${#files[@]}" -gt 0 ] || files=(test/*.test.mjs)
status=0
node --test --test-reporter=tap --test-concurrency="${TEST_CONCURRENCY:-6}" "${files[@]}" || status=$?

# Nothing may be left behind: every test destroys what it made.
leftovers() {
    local url="$1" key="$2" auth=()
    [ -z "$key" ] || auth=(-H "Authorization: Bearer $key")
    for route in containers snapshots jobs; do
        curl -fsS "${auth[@]}" "$url/api/v1/$route" | python3 -c "
import json, sys
items = json.load(sys.stdin)['$route']
if items:
    print('left behind on $url: $route', [i.get('container_id') or i.get('snapshot_id') or i.get('job_id') for i in items])
    sys.exit(1)"
    done
}
leftovers "$REPOBOX_TEST_URL" "" || status=1
leftovers "$REPOBOX_TEST_STRICT_URL" "$REPOBOX_TEST_KEY" || status=1
exit "$status"
