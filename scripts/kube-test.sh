#!/usr/bin/env bash
# scripts/kube-test.sh: the Kubernetes backend's tests, on the test cluster of
# scripts/kubernetes.sh (built once per machine into its cache; a cold build takes
# ~17 minutes, a cached `up` ~30 s), with two nodes: the conformance suite's kube::
# cases and nodes:: (sandboxes on both nodes), then deploy/kubernetes/repobox.yaml
# checked by scripts/kube-deploy-test.sh.
#
# Brings the cluster up, builds the agent's image from the repobox binary under
# test (REPOBOX_BIN, default target/debug/repobox), runs both, and takes the
# cluster down again (also when a test fails), unless it was already up when this
# started.
#
# Environment:
#   REPOBOX_BIN   the repobox binary whose agent the image carries
#   CARGO         cargo (default cargo)
set -euo pipefail
cd "$(dirname "$0")/.."

PROG=kube-test
say() { printf '%s: %s\n' "$PROG" "$*"; }

BIN=${REPOBOX_BIN:-target/debug/repobox}
CARGO=${CARGO:-cargo}
[[ -x $BIN ]] || { say "error: no repobox binary at $BIN (cargo build first)"; exit 1; }

was_up=false
if bash scripts/kubernetes.sh env >/dev/null 2>&1; then
  was_up=true
fi
if ! $was_up; then
  trap 'bash scripts/kubernetes.sh down >/dev/null 2>&1 || say "warning: kubernetes.sh down failed"' EXIT
fi
# Two nodes: the conformance cases land on either, nodes:: checks both are used.
export REPOBOX_KUBE_NODES=2
bash scripts/kubernetes.sh up

image=$("$BIN" agent-image --tag)
if ! docker image inspect "$image" >/dev/null 2>&1; then
  say "building $image"
  "$BIN" agent-image | timeout 300 docker build -q -t "$image" - >/dev/null
fi
bash scripts/kubernetes.sh load "$image" "${DOCKER_BASE_IMAGE:-repobox/sandbox:bookworm}"

REPOBOX_TEST_KUBECONFIG=/var/lib/repobox-kube/admin.kubeconfig \
  "$CARGO" test --locked --test conformance -- --ignored kube:: nodes::
REPOBOX_BIN=$BIN bash scripts/kube-deploy-test.sh
