#!/usr/bin/env bash
# scripts/build-image.sh: build the repobox sandbox image.
#
# Tag: $DOCKER_BASE_IMAGE, default repobox/sandbox:bookworm. Recipe:
# images/sandbox/ (Dockerfile + packages.txt).
#
# Idempotent and quick: if the image exists (and, when this script built it,
# its recipe is unchanged) it exits 0 at once. Otherwise it builds the
# Dockerfile FROM the first base that can be had:
#   1. repobox/base:bookworm, if it exists from an earlier run with the same
#      package list;
#   2. debian:bookworm-slim, if an image registry answers `docker pull`;
#   3. offline (the path that works with no registry): debootstrap a Debian 12
#      minbase with every package of packages.txt from the machine's own apt
#      mirror, apply bookworm-updates/-security, strip docs and caches, and
#      `docker import` it as repobox/base:bookworm.
# Then it checks the image with `docker run --network none`.
#
# Environment:
#   DOCKER_BASE_IMAGE        tag to build (default repobox/sandbox:bookworm)
#   REPOBOX_BASE_TAG         tag of the debootstrap'd base (default repobox/base:bookworm)
#   REPOBOX_IMAGE_SOURCE     auto (default) | pull | debootstrap
#   REPOBOX_REBUILD          1: rebuild the image; 2: rebuild the base too
#   REPOBOX_IMAGE_UPGRADE    0: skip applying bookworm-updates/-security to the base
#   REPOBOX_PULL_TIMEOUT     seconds for the registry probe (default 20)
set -euo pipefail

PROG=build-image
say()  { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die()  { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
RECIPE_DIR=$ROOT/images/sandbox
PACKAGES_FILE=$RECIPE_DIR/packages.txt
IMAGE=${DOCKER_BASE_IMAGE:-repobox/sandbox:bookworm}
BASE_TAG=${REPOBOX_BASE_TAG:-repobox/base:bookworm}
SOURCE=${REPOBOX_IMAGE_SOURCE:-auto}
REBUILD=${REPOBOX_REBUILD:-0}
UPGRADE=${REPOBOX_IMAGE_UPGRADE:-1}
PULL_TIMEOUT=${REPOBOX_PULL_TIMEOUT:-20}
SUITE=bookworm
PULL_IMAGE=debian:bookworm-slim
DEFAULT_MIRROR=http://deb.debian.org/debian
DEFAULT_SECURITY=http://deb.debian.org/debian-security
LOG=/var/log/repobox-build-image.log
T0=$SECONDS

[[ -f $RECIPE_DIR/Dockerfile && -f $PACKAGES_FILE ]] || die "recipe not found in $RECIPE_DIR"

docker_ok() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }
label_of() {  # label_of IMAGE LABEL: the label's value ("" if none); fails if no such image
  local v
  v=$(docker image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null) || return 1
  [[ $v == "<no value>" ]] && v=
  printf '%s' "$v"
}
hash_files() { (cd "$RECIPE_DIR" && sha256sum "$@") | sha256sum | cut -c1-16; }
package_list() { sed -e 's/#.*//' "$PACKAGES_FILE" | xargs; }

# ------------------------------------------------------------ engine
if ! docker_ok; then
  say "no Docker engine answers; running setup-docker.sh"
  "$HERE/setup-docker.sh"
  docker_ok || die "still no Docker engine"
fi

# ---------------------------------------------------------- fast path
RECIPE_HASH=$(hash_files Dockerfile packages.txt)
PACKAGES_HASH=$(hash_files packages.txt)
if [[ $REBUILD == 0 ]] && have=$(label_of "$IMAGE" org.repobox.recipe); then
  if [[ -z $have ]]; then
    say "$IMAGE exists (not built by this script); keeping it"
    exit 0
  elif [[ $have == "$RECIPE_HASH" ]]; then
    say "$IMAGE exists and is up to date; nothing to do"
    exit 0
  fi
  say "$IMAGE exists but images/sandbox/ changed (recipe $have -> $RECIPE_HASH); rebuilding"
fi

# ----------------------------------------------------------- locking
if [[ $(id -u) -eq 0 ]]; then LOCK_DIR=/var/cache/repobox; else LOCK_DIR=${TMPDIR:-/tmp}; LOG=$LOCK_DIR/repobox-build-image.log; fi
mkdir -p "$LOCK_DIR"
exec 9>"$LOCK_DIR/build-image.lock"
if ! flock -n 9; then
  say "another build is running; waiting for it (up to 15 min)"
  flock -w 900 9 || die "timed out waiting for $LOCK_DIR/build-image.lock"
  if [[ $REBUILD == 0 && $(label_of "$IMAGE" org.repobox.recipe || true) == "$RECIPE_HASH" ]]; then
    say "$IMAGE was built meanwhile; nothing to do"
    exit 0
  fi
fi

WORK=
cleanup() {
  local rc=$? m
  if [[ -n $WORK && -d $WORK ]]; then
    # never rm -rf through a mount (debootstrap and the chroot mount /proc etc.)
    for m in $(findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r); do umount -l "$m" 2>/dev/null || true; done
    if findmnt -rn -o TARGET | grep -qF "$WORK/"; then
      warn "mounts left under $WORK; not removing it"
    else
      rm -rf --one-file-system "$WORK"
    fi
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------ apt sources
# First URI of an enabled "deb" source serving suite $1, from the machine's
# apt sources (deb822 *.sources and one-line *.list).
apt_source_uri() {
  local suite=$1 f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk -v suite="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          k = tolower(line); sub(/:.*/, "", k)
          v = line; sub(/^[^:]*:[ \t]*/, "", v)
          if (k == "types") types = v
          else if (k == "uris") uris = v
          else if (k == "suites") suites = v
          else if (k == "enabled") enabled = tolower(v)
        }
        if (enabled == "no") next
        if ((" " types " ") !~ / deb /) next
        if ((" " suites " ") !~ (" " suite " ")) next
        split(uris, u, /[ \t]+/)
        print u[1]; exit
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "${uri%/}"; return 0; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk -v suite="$suite" '
      $1 != "deb" { next }
      {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f")
    [[ -n $uri ]] && { printf '%s\n' "${uri%/}"; return 0; }
  done
  return 1
}
usable_uri() { [[ $1 =~ ^(https?|ftp|file):// ]]; }

# ----------------------------------------------------------- helpers
APT_UPDATED=0
ensure_cmd() {  # ensure_cmd COMMAND PACKAGE: apt-get install PACKAGE if COMMAND is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  [[ $(id -u) -eq 0 ]] || die "'$1' is missing; install the '$2' package (as root: apt-get install $2)"
  local cand
  cand=$(apt-cache policy "$2" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }')
  if [[ -z $cand && $APT_UPDATED == 0 ]]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG" 2>&1 || die "apt-get update failed (see $LOG)"
    APT_UPDATED=1
  fi
  say "installing $2"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" </dev/null >>"$LOG" 2>&1; then
    [[ $APT_UPDATED == 0 ]] || die "apt-get install $2 failed (see $LOG)"
    say "retrying after apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update >>"$LOG" 2>&1 || die "apt-get update failed (see $LOG)"
    APT_UPDATED=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2" </dev/null >>"$LOG" 2>&1 \
      || die "apt-get install $2 failed (see $LOG)"
  fi
}
run_logged() {  # run_logged WHAT CMD...: output to $LOG; its tail on failure
  local what=$1 rc=0; shift
  printf '==== %s %s: %s\n' "$(date -Is)" "$PROG" "$*" >>"$LOG"
  "$@" </dev/null >>"$LOG" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    warn "$what failed (rc=$rc); last lines of $LOG:"
    tail -n 20 "$LOG" >&2 || true
  fi
  return $rc
}

# ---------------------------------------------- offline base: debootstrap
build_base_debootstrap() {
  [[ $(id -u) -eq 0 ]] || die "building the base with debootstrap needs root (or a reachable image registry)"
  ensure_cmd debootstrap debootstrap
  local mirror security rootfs include t
  mirror=$(apt_source_uri "$SUITE" || true)
  usable_uri "$mirror" || mirror=$DEFAULT_MIRROR
  security=$(apt_source_uri "$SUITE-security" || true)
  usable_uri "$security" || security=$DEFAULT_SECURITY

  mkdir -p /var/cache/repobox
  WORK=$(mktemp -d /var/cache/repobox/build.XXXXXX)
  rootfs=$WORK/rootfs
  include=$(package_list | tr ' ' ',')

  t=$SECONDS
  say "debootstrap --variant=minbase $SUITE from $mirror (log: $LOG)"
  run_logged debootstrap debootstrap --variant=minbase --components=main --include="$include" \
    "$SUITE" "$rootfs" "$mirror" || die "debootstrap failed"
  say "debootstrap done in $((SECONDS - t))s"

  # apt sources of the image: the machine's mirror, with updates and security
  rm -f "$rootfs/etc/apt/sources.list"
  cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # keep later package installs small, as Debian's slim images do
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90-repobox-nodoc" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    >"$rootfs/etc/apt/apt.conf.d/90-repobox-norecommends"

  if [[ $UPGRADE != 0 ]]; then
    t=$SECONDS
    say "applying $SUITE-updates and $SUITE-security to the base"
    printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
    chmod +x "$rootfs/usr/sbin/policy-rc.d"
    cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf" 2>/dev/null || true
    mount -t proc proc "$rootfs/proc"
    if run_logged "apt-get update (chroot)" chroot "$rootfs" apt-get update &&
       run_logged "apt-get upgrade (chroot)" chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get -y upgrade; then
      say "upgrade done in $((SECONDS - t))s"
    else
      warn "could not apply updates; the base keeps the $SUITE point-release packages"
    fi
    umount "$rootfs/proc"
    rm -f "$rootfs/usr/sbin/policy-rc.d"
  fi

  # strip caches, logs, docs and anything of this machine
  chroot "$rootfs" apt-get clean >/dev/null 2>&1 || true
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
    "$rootfs"/var/cache/debconf/*-old "$rootfs"/var/lib/dpkg/*-old \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/groff/* \
    "$rootfs"/usr/share/lintian/* "$rootfs"/usr/share/linda/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache
  find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
  find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
  find "$rootfs/var/log" -type f -delete
  : >"$rootfs/etc/resolv.conf"
  printf 'localhost\n' >"$rootfs/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$rootfs/etc/hosts"
  [[ -e $rootfs/etc/machine-id ]] && : >"$rootfs/etc/machine-id"

  t=$SECONDS
  say "importing the root filesystem as $BASE_TAG ($(du -sh --one-file-system "$rootfs" | cut -f1))"
  tar -C "$rootfs" --numeric-owner --one-file-system \
      --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -cf - . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change "LABEL org.repobox.packages=$PACKAGES_HASH" \
      --change "LABEL org.repobox.mirror=$mirror" \
      --change 'CMD ["bash"]' \
      - "$BASE_TAG" >/dev/null || die "docker import failed"
  say "import done in $((SECONDS - t))s"

  rm -rf --one-file-system "$WORK"
  WORK=
}

# --------------------------------------------------------- choose a base
image_id() { docker image inspect --format '{{ .Id }}' "$1" 2>/dev/null || true; }
OLD_IDS=()   # images this run replaces, removed once the new one is verified
BASE=
BUILD_NET=(--network none)
if [[ $SOURCE == auto && $REBUILD != 2 ]] && [[ $(label_of "$BASE_TAG" org.repobox.packages || true) == "$PACKAGES_HASH" ]]; then
  say "using the existing base $BASE_TAG"
  BASE=$BASE_TAG
fi
if [[ -z $BASE && ($SOURCE == auto || $SOURCE == pull) ]]; then
  say "trying the registry: docker pull $PULL_IMAGE (timeout ${PULL_TIMEOUT}s)"
  if out=$(timeout "$PULL_TIMEOUT" docker pull -q "$PULL_IMAGE" 2>&1); then
    say "pulled $PULL_IMAGE"
    BASE=$PULL_IMAGE
    BUILD_NET=()   # the Dockerfile's apt-get install needs network
  else
    say "no registry (${out##*$'\n'}); building offline"
    [[ $SOURCE == pull ]] && die "REPOBOX_IMAGE_SOURCE=pull but the pull failed"
  fi
fi
if [[ -z $BASE ]]; then
  [[ $SOURCE == auto || $SOURCE == debootstrap ]] || die "unknown REPOBOX_IMAGE_SOURCE=$SOURCE (auto|pull|debootstrap)"
  OLD_IDS+=("$(image_id "$BASE_TAG")")
  build_base_debootstrap
  BASE=$BASE_TAG
fi

# ---------------------------------------------------------------- build
t=$SECONDS
say "docker build $IMAGE FROM $BASE"
OLD_IDS+=("$(image_id "$IMAGE")")
# The legacy builder works with every engine and needs no buildx plugin.
run_logged "docker build" env DOCKER_BUILDKIT=0 docker build "${BUILD_NET[@]}" \
  --build-arg "BASE_IMAGE=$BASE" \
  --label "org.repobox.recipe=$RECIPE_HASH" \
  --label "org.repobox.base=$BASE" \
  -t "$IMAGE" "$RECIPE_DIR" || die "docker build failed"
say "build done in $((SECONDS - t))s"

# --------------------------------------------------------------- verify
say "verifying $IMAGE"
if ! out=$(timeout 120 docker run --rm --network none "$IMAGE" \
    bash -c 'git --version && python --version && python3 --version && find --version | head -1 && ps --version && test -x /usr/bin/tini' 2>&1); then
  docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
  die "verification failed (image removed so the next run rebuilds it): $out"
fi
while IFS= read -r line; do say "  $line"; done <<<"$out"
if docker info --format '{{ range $k, $v := .Runtimes }}{{ $k }} {{ end }}' 2>/dev/null | grep -qw runsc; then
  if timeout 120 docker run --rm --runtime=runsc --network none "$IMAGE" true >/dev/null 2>&1; then
    say "  gVisor: 'docker run --runtime=runsc' works with $IMAGE"
  else
    warn "'docker run --runtime=runsc $IMAGE' fails (runc still works)"
  fi
fi
# drop what this run replaced, unless something still uses or tags it
for id in "${OLD_IDS[@]}"; do
  [[ -n $id && $id != "$(image_id "$IMAGE")" && $id != "$(image_id "$BASE_TAG")" ]] || continue
  if docker image rm "$id" >/dev/null 2>&1; then say "removed the replaced image $(cut -c8-19 <<<"$id")"; fi
done
say "built $IMAGE ($(docker image inspect --format '{{ .Size }}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')) in $((SECONDS - T0))s"
