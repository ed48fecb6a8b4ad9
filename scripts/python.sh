#!/usr/bin/env bash
# scripts/python.sh: CPython 3.13 and a virtual environment with Harbor in it, built
# once per machine, for scripts/harbor-test.sh.
#
# Why: Harbor (PyPI `harbor`, the framework behind Terminal-Bench) needs Python >= 3.12
# and the machines we test on have 3.11 (Debian 12). PyPI has no CPython builds, but
# Debian's archive has the CPython source as trixie's `python3.13` orig tarball, so we
# build it from that: no PGO, no LTO, no test modules (a few minutes on 2 cores).
#
#   scripts/python.sh          build what is missing, print the venv's python on stdout
#
# Idempotent: returns at once when the interpreter and the venv (with exactly these
# requirements) are there. An interrupted build starts again from the tarball.
#
# Environment:
#   REPOBOX_PYTHON_CACHE  where (default /var/cache/repobox/python/<version>):
#                         the interpreter's prefix, plus harbor-venv/ and the tarball
#   REPOBOX_PYTHON_NICE   niceness of the build (10)
# Needs: curl, a C toolchain, and Debian's -dev packages for the stdlib's C modules
# (installed with apt-get when missing, which needs root).
set -euo pipefail

readonly PY_VERSION=3.13.5
readonly PY_URL=http://deb.debian.org/debian/pool/main/p/python3.13/python3.13_${PY_VERSION}.orig.tar.xz
readonly PY_SHA256=93e583f243454e6e9e4588ca2c2662206ad961659863277afcdb96801647d640
# The Harbor we test with; bump together with sdk/python/src/repobox/harbor.py.
readonly HARBOR_REQUIREMENT="harbor==0.26.0"
readonly DEV_PACKAGES=(build-essential pkg-config libssl-dev zlib1g-dev libffi-dev libsqlite3-dev
  libbz2-dev liblzma-dev libreadline-dev libncurses-dev uuid-dev)

readonly CACHE=${REPOBOX_PYTHON_CACHE:-/var/cache/repobox/python/$PY_VERSION}
readonly NICE=${REPOBOX_PYTHON_NICE:-10}
readonly PYTHON=$CACHE/bin/python3.13
readonly VENV=$CACHE/harbor-venv
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
# The venv is remade when what goes into it changes (this line and the SDK's metadata).
VENV_KEY=$(printf '%s\n' "$HARBOR_REQUIREMENT" | cat - "$HERE/../sdk/python/pyproject.toml" | sha256sum | cut -d' ' -f1)
readonly VENV_KEY

say() { echo "python.sh: $*" >&2; }

interpreter_ready() { [[ -f $CACHE/.complete && -x $PYTHON ]]; }
venv_ready() { [[ -x $VENV/bin/harbor && "$(cat "$VENV/.key" 2>/dev/null)" == "$VENV_KEY" ]]; }

if interpreter_ready && venv_ready; then
  echo "$VENV/bin/python"
  exit 0
fi

mkdir -p "$CACHE"
# One builder at a time; a second caller waits for the first and then finds it done.
exec 9>"$CACHE/.lock"
flock 9

install_dev_packages() {
  local missing=() p
  for p in "${DEV_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  say "installing ${missing[*]}"
  if ((EUID != 0)); then
    say "not root: install them first (apt-get install ${missing[*]})"
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 ||
    { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; }
}

build_interpreter() {
  local tarball=$CACHE/python3.13_${PY_VERSION}.orig.tar.xz src=$CACHE/src start=$SECONDS
  install_dev_packages
  if [[ ! -f $tarball ]] || ! echo "$PY_SHA256  $tarball" | sha256sum -c --status; then
    say "downloading $PY_URL"
    curl -fsSL --retry 3 -o "$tarball.part" "$PY_URL"
    echo "$PY_SHA256  $tarball.part" | sha256sum -c --status ||
      { say "sha256 mismatch for $PY_URL"; rm -f "$tarball.part"; exit 1; }
    mv "$tarball.part" "$tarball"
  fi
  rm -rf "$src" && mkdir -p "$src"
  tar -xJf "$tarball" -C "$src" --strip-components=1
  say "building CPython $PY_VERSION into $CACHE (log: $CACHE/build.log)"
  # No --enable-optimizations/--with-lto: they triple the build time for a few
  # percent that a test harness does not need. ensurepip's bundled pip comes with the
  # stdlib either way; `-m venv` uses it.
  if ! (cd "$src" &&
    nice -n "$NICE" ./configure --prefix="$CACHE" --without-ensurepip --disable-test-modules &&
    nice -n "$NICE" make -j"$(nproc)" &&
    make install) >"$CACHE/build.log" 2>&1; then
    tail -30 "$CACHE/build.log" >&2
    say "build failed; see $CACHE/build.log"
    exit 1
  fi
  # The stdlib modules Harbor and pip need must have been built.
  "$PYTHON" -c 'import ssl, sqlite3, zlib, bz2, lzma, ctypes, readline, uuid' ||
    { say "the built interpreter lacks a stdlib module (see $CACHE/build.log)"; exit 1; }
  rm -rf "$src"
  touch "$CACHE/.complete"
  say "CPython $PY_VERSION built in $((SECONDS - start)) s"
}

build_venv() {
  local start=$SECONDS
  say "installing $HARBOR_REQUIREMENT into $VENV"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$HARBOR_REQUIREMENT" "httpx>=0.23" >&2
  echo "$VENV_KEY" >"$VENV/.key"
  say "venv ready in $((SECONDS - start)) s"
}

interpreter_ready || build_interpreter
venv_ready || build_venv
echo "$VENV/bin/python"
