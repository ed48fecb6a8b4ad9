#!/usr/bin/env bash
# A Python virtual environment with the official MCP client (scripts/mcp-requirements.txt),
# for the end-to-end tests of `repobox mcp` and `/mcp` (tests/e2e/mcp.rs runs this).
# Idempotent: returns at once when the environment has exactly these requirements.
# Prints the environment's python on stdout.
#
# Where: $MCP_VENV, else mcp-venv under $CARGO_TARGET_DIR (default target/).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MCP_VENV:-${CARGO_TARGET_DIR:-target}/mcp-venv}"
requirements=scripts/mcp-requirements.txt
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

mkdir -p "$(dirname "$venv")"
# One installer at a time (test binaries may start together).
exec 9>"$venv.lock"
flock 9
if [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    echo "$venv/bin/python"
    exit 0
fi
echo "mcp-venv: installing $(grep -v '^#' "$requirements" | xargs) into $venv" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
echo "$want" >"$stamp"
echo "$venv/bin/python"
