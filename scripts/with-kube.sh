#!/usr/bin/env bash
# scripts/with-kube.sh COMMAND [ARGS...]: runs COMMAND with the two-node test cluster
# of scripts/kubernetes.sh up and ready for the Kubernetes backend, then takes the
# cluster down again (also when COMMAND fails), unless it was already up.
#
# Ready means: the cluster up with two nodes (REPOBOX_KUBE_NODES=2; the first `up` on
# a machine builds Kubernetes, ~17 minutes, later ones take ~30 s), the agent's image
# built from REPOBOX_BIN (default target/debug/repobox) when missing, and it and the
# sandbox image ($DOCKER_BASE_IMAGE) loaded into the second node's engine. COMMAND
# gets KUBECONFIG-free settings: the tests and the benchmark find the test cluster's
# kubeconfig themselves. Exits with COMMAND's status.
set -euo pipefail
cd "$(dirname "$0")/.."
PROG=with-kube
say() { printf '%s: %s\n' "$PROG" "$*"; }
(($#)) || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }

BIN=${REPOBOX_BIN:-target/debug/repobox}
[[ -x $BIN ]] || { say "error: no repobox binary at $BIN (cargo build first)"; exit 1; }

was_up=false
if bash scripts/kubernetes.sh env >/dev/null 2>&1; then
  was_up=true
fi
if ! $was_up; then
  trap 'bash scripts/kubernetes.sh down >/dev/null 2>&1 || say "warning: kubernetes.sh down failed"' EXIT
fi
export REPOBOX_KUBE_NODES=2
bash scripts/kubernetes.sh up

image=$("$BIN" agent-image --tag)
if ! docker image inspect "$image" >/dev/null 2>&1; then
  say "building $image"
  "$BIN" agent-image | timeout 300 docker build -q -t "$image" - >/dev/null
fi
bash scripts/kubernetes.sh load "$image" "${DOCKER_BASE_IMAGE:-repobox/sandbox:bookworm}"

status=0
"$@" || status=$?
exit "$status"
