# repobox: the two commands a newcomer needs are `make run` and `make test`.
# Both set up what is missing first (Docker engine, sandbox image), idempotently.

CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
TEST_BIN := $(abspath $(TARGET_DIR)/debug/repobox)
TEST_FLAGS ?= --include-ignored --skip timing_breakdown --skip kube:: --skip nodes::sandboxes_land

.PHONY: setup engine image run test lint unit e2e conformance conformance-local kube-test kube-up kube-down bench smoke schemathesis ui-test harbor-test soak clean

## setup: a Docker engine and the sandbox image (no-op when both are there)
setup: image

engine:
	bash scripts/setup-docker.sh

image: engine
	bash scripts/build-image.sh

## run: start the service on :8000 (HOST/PORT and every other setting: see example.env)
run: setup
	$(CARGO) run --locked --release -- serve

## test: formatting, lints, unit tests, the end-to-end suite against the real engine,
## the engine-restart test, the Kubernetes backend on a test cluster (conformance
## cases and the deploy/kubernetes manifest: scripts/kube-test.sh), the container
## smoke test (repobox itself in a container)
## schemathesis against the OpenAPI document, the Python SDK's tests (pytest, real server),
## a Harbor task run by Harbor's oracle agent in the SDK's repobox environment,
## the TypeScript SDK's (node --test, real servers) and the dashboard's (headless
## Chromium, real servers)
##
## Two compiles only: clippy's check build and `cargo test`'s debug build (plus the
## agent's small release build that build.rs makes once). Every script after it runs
## the debug binary `cargo test` made ($(TEST_BIN)); none builds another profile.
## TEST_FLAGS: the tests #[ignore]d for a plain `cargo test` because they need what
## setup provides (gVisor's runsc, live-restore) run here, and fail when it is missing;
## `timing_breakdown` is a probe run by hand. `make test TEST_FLAGS=` leaves them out.
## `make test SHELL=scripts/timed-shell.sh` prints how long each step took.
test: setup lint
	$(CARGO) test --locked --workspace --all-targets -- $(TEST_FLAGS)
	REPOBOX_BIN=$(TEST_BIN) bash scripts/kube-test.sh
	REPOBOX_BIN=$(TEST_BIN) bash scripts/smoke-container.sh
	REPOBOX_BIN=$(TEST_BIN) bash scripts/schemathesis.sh
	REPOBOX_BIN=$(TEST_BIN) bash sdk/python/run-tests.sh -q -n 2
	REPOBOX_BIN=$(TEST_BIN) bash scripts/harbor-test.sh
	REPOBOX_BIN=$(TEST_BIN) bash sdk/typescript/run-tests.sh
	REPOBOX_BIN=$(TEST_BIN) bash scripts/ui-test.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --locked --workspace --lib --bins

e2e: setup
	$(CARGO) test --locked --test e2e -- $(TEST_FLAGS)

## conformance: the same cases against every backend (Docker and the local test backend)
conformance: setup
	$(CARGO) test --locked --test conformance

## conformance-local: the local backend's cases alone (seconds; no Docker needed)
conformance-local:
	$(CARGO) test --locked --test conformance -- local::

## kube-up / kube-down: a one-node Kubernetes 1.20 cluster on loopback, built once per
## machine from Debian's source package (docs/KUBERNETES.md); not part of `make test`
## until the Kubernetes backend lands
kube-up:
	bash scripts/kubernetes.sh up

kube-down:
	bash scripts/kubernetes.sh down

## bench: repobox against the raw Docker Engine API, and its Kubernetes backend against the
## raw Kubernetes API on the two-node test cluster (brought up and down around it);
## prints a table, writes target/bench/latest.json
## BENCH_ARGS=--quick: a few samples of every figure (checks the benchmark, measures nothing)
bench: setup
	$(CARGO) build --locked --release --bins --examples
	REPOBOX_BIN=$(abspath $(TARGET_DIR)/release/repobox) bash scripts/with-kube.sh $(TARGET_DIR)/release/examples/bench $(BENCH_ARGS)

## smoke: build and run repobox itself in a container, check it reaches Docker
smoke: setup
	bash scripts/smoke-container.sh

## schemathesis: property-based tests of /openapi.json against a running server
schemathesis: setup
	bash scripts/schemathesis.sh

## harbor-test: Harbor (Terminal-Bench's framework) runs sdk/python/tests/harbor_task on a
## repobox server with its oracle agent and must score 1; the first run on a machine builds
## CPython 3.13 for it (scripts/python.sh, about 5 min, cached under /var/cache/repobox)
harbor-test: setup
	bash scripts/harbor-test.sh

## ui-test: the dashboard (/ui) in headless Chromium against real servers
ui-test: setup
	bash scripts/ui-test.sh

## soak: 20 clients x 10 minutes of mixed traffic, 10 kill -9 restarts of the server and
## one restart of dockerd; prints what it saw, fails on a 5xx, a lost or a leaked sandbox.
## SOAK_ARGS="--clients 10 --minutes 2 --kills 3" for a shorter run.
soak: setup
	$(CARGO) build --locked --release --bin repobox
	python3 scripts/soak.py $(SOAK_ARGS)

clean:
	$(CARGO) clean
