#!/usr/bin/env bash
# scripts/kube-deploy-test.sh: deploy/kubernetes/repobox.yaml on the test cluster
# (scripts/kubernetes.sh, up), checked from outside: the server runs as a pod with
# its service account and Role alone, makes a sandbox pod from a repository, runs
# a command in it, and after its own pod is deleted and replaced it still knows
# the sandbox and reaches it. Leaves nothing behind.
#
# What the test cluster changes in the manifest (it has no registry, no volume
# provisioner and no pod network): local images (`imagePullPolicy: Never`), a
# hostPath PersistentVolume for the claim, and the server on the first node, on
# the host's network (to reach the fixture served on 127.0.0.1 and the API server
# at 127.0.0.1:6443, with its service account's token, as in any cluster).
#
# Environment: REPOBOX_BIN (default target/debug/repobox), the binary the server's
# image and the agent's image are built from.
set -euo pipefail
cd "$(dirname "$0")/.."
PROG=kube-deploy-test
say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

BIN=${REPOBOX_BIN:-target/debug/repobox}
[[ -x $BIN ]] || die "no repobox binary at $BIN"
eval "$(bash scripts/kubernetes.sh env)"
KUBECTL=$(ls /var/cache/repobox/kubernetes/*/bin/kubectl | head -1)
kc() { timeout 60 "$KUBECTL" "$@"; }
SERVER_IMAGE=repobox/server:kube-test
AGENT_IMAGE=$("$BIN" agent-image --tag)
PORT=${KUBE_DEPLOY_PORT:-18775}
GIT_PORT=${KUBE_DEPLOY_GIT_PORT:-18776}
PV=repobox-deploy-test-$$
PV_DIR=/var/lib/repobox-kube/deploy-test-data-$$
work=$(mktemp -d)
git_pid=

cleanup() {
  # All the manifest made but the namespace (scripts/kubernetes.sh's, shared).
  kc -n repobox delete deployment/repobox service/repobox serviceaccount/repobox role/repobox \
    rolebinding/repobox pvc/repobox-data networkpolicy/repobox-sandbox-isolation \
    >/dev/null 2>&1 || true
  kc -n repobox delete pods -l repobox.managed=true --grace-period=0 --force >/dev/null 2>&1 || true
  kc delete pv "$PV" >/dev/null 2>&1 || true
  [[ -n $git_pid ]] && kill "$git_pid" 2>/dev/null || true
  rm -rf "$work" "$PV_DIR"
}
trap cleanup EXIT

say "building $SERVER_IMAGE and $AGENT_IMAGE from $BIN"
mkdir -p "$work/context"
ln "$BIN" "$work/context/repobox" 2>/dev/null || cp "$BIN" "$work/context/repobox"
DOCKER_BUILDKIT=0 timeout 300 docker build --quiet --network none -f deploy/Dockerfile \
  --build-arg BINARY=repobox -t "$SERVER_IMAGE" "$work/context" >/dev/null
docker image inspect "$AGENT_IMAGE" >/dev/null 2>&1 \
  || "$BIN" agent-image | timeout 300 docker build -q -t "$AGENT_IMAGE" - >/dev/null

say "serving a fixture repository on 127.0.0.1:$GIT_PORT"
git init -q -b trunk "$work/src"
echo deployed >"$work/src/README"
git -C "$work/src" -c user.name=t -c user.email=t@example.com add README
git -C "$work/src" -c user.name=t -c user.email=t@example.com commit -qm deployed
git clone -q --bare "$work/src" "$work/srv/fixture.git"
git -C "$work/srv/fixture.git" update-server-info
head=$(git -C "$work/src" rev-parse HEAD)
(cd "$work/srv" && exec python3 -m http.server "$GIT_PORT" --bind 127.0.0.1 >/dev/null 2>&1) &
git_pid=$!

say "applying deploy/kubernetes/repobox.yaml (with the test cluster's changes)"
mkdir -p "$PV_DIR" && chown 10001:10001 "$PV_DIR"
kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: $PV}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: repobox, name: repobox-data}
  hostPath: {path: $PV_DIR, type: Directory}
YAML
kc apply -f deploy/kubernetes/repobox.yaml >"$work/apply.log" 2>&1 \
  || die "kubectl apply failed: $(cat "$work/apply.log")"
kc -n repobox patch pvc repobox-data --type merge -p '{"spec": {"storageClassName": ""}}' >/dev/null 2>&1 || true
kc -n repobox patch deployment repobox --type json -p \
  "[{\"op\": \"replace\", \"path\": \"/spec/template/spec/containers/0/ports/0/containerPort\", \"value\": $PORT}]" >/dev/null
kc -n repobox patch deployment repobox --type strategic -p "$(cat <<JSON
{"spec": {"template": {"spec": {
  "hostNetwork": true,
  "nodeSelector": {"kubernetes.io/hostname": "localhost"},
  "containers": [{"name": "repobox", "image": "$SERVER_IMAGE", "imagePullPolicy": "Never",
    "env": [
      {"name": "PORT", "value": "$PORT"},
      {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
      {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"},
      {"name": "KUBE_IMAGE_PULL_POLICY", "value": "Never"},
      {"name": "ALLOWED_GIT_HOSTS", "value": "127.0.0.1"},
      {"name": "POOL_SIZE", "value": "0"}]}]}}}}
JSON
)" >/dev/null
timeout 130 "$KUBECTL" -n repobox rollout status deployment/repobox --timeout 120s >/dev/null \
  || die "the server did not become ready: $(kc -n repobox get pods -o wide 2>&1); $(kc -n repobox logs deployment/repobox --tail 20 2>&1)"

api=http://127.0.0.1:$PORT/api/v1
info=$(curl -fsS "$api/info") || die "no answer from the server"
echo "$info" | python3 -c 'import json,sys; b=json.load(sys.stdin)["backend"]; assert b["kind"] == "kubernetes", b' \
  || die "/info says: $info"

say "creating a sandbox through the server in the cluster"
created=$(curl -sS -w '\n%{http_code}' -X POST "$api/containers" -H 'Content-Type: application/json' \
  -d "{\"repo_url\": \"http://127.0.0.1:$GIT_PORT/fixture.git\"}")
code=${created##*$'\n'}
created=${created%$'\n'*}
[[ $code == 201 ]] || die "create answered $code: $created; $(kc -n repobox logs deployment/repobox --tail 10 2>&1)"
id=$(echo "$created" | python3 -c 'import json,sys; print(json.load(sys.stdin)["container_id"])')
run() {
  curl -fsS -X POST "$api/containers/$id/execute" -H 'Content-Type: application/json' \
    -d '{"command": "git rev-parse HEAD; cat README"}'
}
out=$(run) || die "execute failed"
echo "$out" | grep -q "$head" || die "unexpected checkout: $out"
pods=$(kc -n repobox get pods -l repobox.managed=true,repobox.id="$id" -o name)
[[ -n $pods ]] || die "no pod labelled repobox.id=$id"

say "deleting the server's pod; its replacement must still know $id"
kc -n repobox delete pod -l app.kubernetes.io/name=repobox --wait=true >/dev/null
timeout 130 "$KUBECTL" -n repobox rollout status deployment/repobox --timeout 120s >/dev/null || die "no replacement server"
for _ in $(seq 1 100); do
  curl -fsS "$api/containers/$id" 2>/dev/null | grep -q '"running"' && break
  sleep 0.2
done
out=$(run) || die "the replacement server cannot reach $id: $(curl -sS "$api/containers/$id")"
echo "$out" | grep -q "$head" || die "unexpected checkout after the restart: $out"
code=$(curl -sS -o /dev/null -w '%{http_code}' -X DELETE "$api/containers/$id")
[[ $code == 204 ]] || die "destroy answered $code"
for _ in $(seq 1 50); do
  [[ -z $(kc -n repobox get pods -l repobox.id="$id" -o name 2>/dev/null) ]] && break
  sleep 0.2
done
[[ -z $(kc -n repobox get pods -l repobox.id="$id" -o name) ]] || die "the sandbox's pod outlived its destroy"
say "ok: the server ran in the cluster with its Role, made, used, kept across its own restart and destroyed a sandbox pod"
