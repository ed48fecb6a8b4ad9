#!/usr/bin/env bash
# Runs the Python SDK's tests against a real repobox server (started by the tests).
#
#   sdk/python/run-tests.sh [pytest args...]
#
# Makes (once) a virtualenv under <repo>/target/sdk-venv, installs this package and
# pytest (and pytest-xdist) into it (from PyPI only), then runs pytest. Needs Docker, git, the sandbox
# image, and the server binary: $REPOBOX_BIN, default <repo>/target/debug/repobox.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${SDK_VENV:-$repo/target/sdk-venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
fi
# Quiet when everything is already there; the package itself is reinstalled each
# time so that the tests run the code of this checkout.
# pytest-xdist: `-n 2` runs the tests in two processes, each with servers of its own
# (the session fixtures are per process); `make test` uses it.
"$venv/bin/python" -m pip install -q "pytest>=7" "pytest-xdist>=3" "httpx>=0.23"
"$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$here"
rm -rf "$here/build" "$here"/src/*.egg-info

cd "$here"
exec "$venv/bin/python" -m pytest "$@"
