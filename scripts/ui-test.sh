#!/usr/bin/env bash
# The dashboard's tests: a real headless browser (Debian's chromium, driven by
# playwright-core) against real repobox servers and a git smart-HTTP server.
#
#   bash scripts/ui-test.sh            (REPOBOX_BIN=… to test another binary)
#
# Idempotent: installs chromium (and node, npm) with apt and playwright-core (npm, into target/ui-test/)
# when missing. Starts a git server over a fixture repository, a repobox server
# without keys and one with API_KEYS=k1, runs tests/ui/dashboard.test.mjs, then stops
# the servers (SIGTERM) and removes every container they made. Screenshots go to
# target/ui-screenshots/ (each page on failure, the sandbox page always).
set -euo pipefail

PLAYWRIGHT_VERSION=1.65.1

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
modules="$repo/target/ui-test"
shots="$repo/target/ui-screenshots"
chromium="${CHROMIUM:-/usr/bin/chromium}"

missing=()
[ -x "$chromium" ] || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ui-test: installing ${missing[*]} (apt)"
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$modules" "$shots"
if [ "$(node -p "require('$modules/node_modules/playwright-core/package.json').version" 2>/dev/null)" != "$PLAYWRIGHT_VERSION" ]; then
    echo "ui-test: installing playwright-core $PLAYWRIGHT_VERSION (npm)"
    [ -f "$modules/package.json" ] || echo '{"name": "repobox-ui-test", "private": true}' >"$modules/package.json"
    (cd "$modules" && npm install --no-audit --no-fund --save-exact --silent "playwright-core@$PLAYWRIGHT_VERSION")
fi

if [ -z "${REPOBOX_BIN:-}" ]; then
    ${CARGO:-cargo} build --locked --quiet --bin repobox
    REPOBOX_BIN="${CARGO_TARGET_DIR:-$repo/target}/debug/repobox"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/repobox-ui-test.XXXXXX")"
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

# The fixture: `simple.git`, default branch trunk (README.md, src/main.py, a binary
# file), and a branch `feature`.
git_() { GIT_CONFIG_GLOBAL=/dev/null GIT_CONFIG_NOSYSTEM=1 git -c user.name=Fixture -c user.email=fixture@example.com -c init.defaultBranch=trunk "$@"; }
mkdir -p "$work/git/simple-work/src"
(
    cd "$work/git/simple-work"
    git_ init -q
    printf '# simple\n\nA fixture repository.\n' >README.md
    printf "print('hello from simple')\n" >src/main.py
    printf '\000\237\222\226\377\000\001' >binary.bin
    git_ add -A && git_ commit -q -m first
    git_ checkout -q -b feature && echo feature >FEATURE && git_ add -A && git_ commit -q -m feature
    git_ checkout -q trunk
)
git_ -C "$work/git" clone -q --bare simple-work simple.git
rm -rf "$work/git/simple-work"

python3 -u scripts/git_http_server.py "$work/git" >"$work/git.port" 2>"$work/git.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/git.port" ] && break; sleep 0.1; done
git_port="$(head -n1 "$work/git.port")"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_server NAME KEYS: a repobox server in its own directory; sets $url.
start_server() {
    local name="$1" keys="$2" port dir
    port="$(free_port)"
    dir="$work/$name"
    mkdir -p "$dir"
    (cd "$dir" && exec env HOST=127.0.0.1 PORT="$port" DATA_DIR="$dir/data" CACHE_DIR="$dir/cache" \
        ALLOWED_GIT_HOSTS=127.0.0.1 POOL_SIZE=0 API_KEYS="$keys" LOG_FORMAT=human \
        "$REPOBOX_BIN" >"$work/$name.log" 2>&1) &
    pids+=($!)
    url="http://127.0.0.1:$port"
    for _ in $(seq 1 600); do
        curl -fsS "$url/api/v1/health/live" >/dev/null 2>&1 && break
        sleep 0.1
    done
    local auth=()
    [ -z "$keys" ] || auth=(-H "Authorization: Bearer ${keys%%,*}")
    instances+=("$(curl -fsS "${auth[@]}" "$url/api/v1/info" | python3 -c 'import json, sys; print(json.load(sys.stdin)["instance"])')")
}

start_server open ""
open_url="$url"
start_server keyed "k1"
keyed_url="$url"

UI_URL="$open_url" UI_KEYED_URL="$keyed_url" UI_KEY=k1 \
UI_REPO_URL="http://127.0.0.1:$git_port/ui/simple.git" \
UI_CHROMIUM="$chromium" UI_MODULES="$modules/node_modules" UI_SCREENSHOTS="$shots" \
    node --test --test-reporter=spec tests/ui/dashboard.test.mjs
