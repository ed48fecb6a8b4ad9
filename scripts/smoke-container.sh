#!/usr/bin/env bash
# scripts/smoke-container.sh: build repobox's own image, run it with the host's
# Docker socket mounted, and check from outside that it works end to end:
# docker_available is true, its health check passes, and a sandbox made from a
# git repository served on the host can run a command. Leaves nothing behind.
#
# The binary: $REPOBOX_BIN when set (`make test` passes the debug binary its
# `cargo test` has just built, so that no release build is needed just for this
# check), else the release binary, built here (the image a user would deploy).
set -euo pipefail
PROG=smoke-container
say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }
cd "$(dirname "$0")/.."

# A debug build gets a tag of its own: it must not pass for the release image.
if [ -n "${REPOBOX_BIN:-}" ]; then
  IMAGE=${REPOBOX_SERVER_IMAGE:-repobox/server:test}
else
  IMAGE=${REPOBOX_SERVER_IMAGE:-repobox/server:local}
fi
NAME=repobox-smoke-$$
PORT=${SMOKE_PORT:-18765}
GIT_PORT=${SMOKE_GIT_PORT:-18766}
work=$(mktemp -d)
git_pid=
cleanup() {
  # A graceful stop first: the server removes its warm pool's members on SIGTERM.
  docker stop -t 25 "$NAME" >/dev/null 2>&1 || true
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  # Sandboxes made by the containerised server carry its instance label; remove
  # any left over by a failed run.
  docker ps -aq --filter label=repobox.repo_url="http://127.0.0.1:$GIT_PORT/smoke.git" | xargs -r docker rm -f >/dev/null 2>&1 || true
  [ -n "$git_pid" ] && kill "$git_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${REPOBOX_BIN:-}" ]; then
  binary=$REPOBOX_BIN
  [ -x "$binary" ] || die "no repobox binary at $binary"
else
  say "building the release binary"
  cargo build --quiet --release --locked --bin repobox
  binary=${CARGO_TARGET_DIR:-target}/release/repobox
fi
say "building $IMAGE from $binary"
# A build context of just the binary (a hard link when it can be): the repository's
# target/ is gigabytes, and the binary may live in another CARGO_TARGET_DIR.
mkdir -p "$work/context"
ln "$binary" "$work/context/repobox" 2>/dev/null || cp "$binary" "$work/context/repobox"
DOCKER_BUILDKIT=0 docker build --quiet --network none -f deploy/Dockerfile --build-arg BINARY=repobox \
  -t "$IMAGE" "$work/context" >"$work/build.log" 2>&1 \
  || die "docker build failed: $(tail -5 "$work/build.log")"

say "serving a fixture repository on 127.0.0.1:$GIT_PORT"
git init -q -b trunk "$work/src"
echo "smoke" >"$work/src/README"
git -C "$work/src" -c user.name=smoke -c user.email=smoke@example.com add README
git -C "$work/src" -c user.name=smoke -c user.email=smoke@example.com commit -qm smoke
git clone -q --bare "$work/src" "$work/srv/smoke.git"
git -C "$work/srv/smoke.git" update-server-info
head=$(git -C "$work/src" rev-parse HEAD)
(cd "$work/srv" && exec python3 -m http.server "$GIT_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
git_pid=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$GIT_PORT/smoke.git/HEAD" >/dev/null 2>&1 && break
  sleep 0.2
done

say "starting $NAME"
# Host networking so the server reaches the fixture on the host's loopback; the
# sandboxes it makes still have no network at all.
# The image's health check runs every 10 s; check more often here. No warm pool:
# this checks the image and its access to the engine (tests/e2e/pool.rs tests the
# pool), and warm members would only take the machine's time.
docker run -d --name "$NAME" --network host --health-interval 1s \
  -v /var/run/docker.sock:/var/run/docker.sock \
  -e PORT="$PORT" -e ALLOWED_GIT_HOSTS=127.0.0.1 -e POOL_SIZE=0 "$IMAGE" >/dev/null

api=http://127.0.0.1:$PORT/api/v1
for _ in $(seq 1 50); do
  curl -fsS "$api/health/live" >/dev/null 2>&1 && break
  sleep 0.2
done
health=$(curl -fsS "$api/health/") || die "no answer from the server: $(docker logs "$NAME" 2>&1 | tail -5)"
say "health: $health"
echo "$health" | grep -q '"docker_available":true' || die "docker_available is not true"

say "creating a sandbox through the containerised server"
created=$(curl -sS -w '\n%{http_code}' -X POST "$api/containers/" -H 'Content-Type: application/json' \
  -d "{\"repo_url\": \"http://127.0.0.1:$GIT_PORT/smoke.git\"}") || die "create failed: no answer"
code=${created##*$'\n'}
created=${created%$'\n'*}
[ "$code" = 201 ] || die "create answered $code: $created; server log: $(docker logs "$NAME" 2>&1 | tail -5)"
id=$(echo "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["container_id"])')
out=$(curl -fsS -X POST "$api/containers/$id/execute" -H 'Content-Type: application/json' \
  -d '{"command": "git rev-parse HEAD; cat README"}')
echo "$out" | grep -q "$head" || die "unexpected checkout: $out"
curl -fsS -X DELETE "$api/containers/$id" >/dev/null || die "destroy failed"

for _ in $(seq 1 40); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
  [ "$status" = healthy ] && break
  sleep 0.5
done
[ "$status" = healthy ] || die "container health check says $status"
say "ok: docker_available true, health check $status, sandbox created, used and destroyed"
