#!/usr/bin/env bash
# scripts/kube-test.sh: the Kubernetes backend's tests, on the two-node test cluster
# of scripts/kubernetes.sh (brought up and down around them by scripts/with-kube.sh;
# built once per machine into its cache: a cold build takes ~17 minutes):
#   - the conformance suite's kube:: cases, and nodes:: (sandboxes on both nodes);
#   - deploy/kubernetes/repobox.yaml, checked by scripts/kube-deploy-test.sh.
#
# Environment:
#   REPOBOX_BIN   the repobox binary under test (default target/debug/repobox): the
#                 agent's image and the server's image are built from it
#   CARGO         cargo (default cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
export REPOBOX_BIN=${REPOBOX_BIN:-target/debug/repobox}
export CARGO=${CARGO:-cargo}
# The same cargo flags as `make test`'s run: its build is reused, not redone (a
# narrower `--test conformance` would unify features differently and rebuild).
exec bash scripts/with-kube.sh bash -c '
  REPOBOX_TEST_KUBECONFIG=/var/lib/repobox-kube/admin.kubeconfig \
    "$CARGO" test --locked --workspace --all-targets -- --ignored kube:: nodes::
  bash scripts/kube-deploy-test.sh
'
