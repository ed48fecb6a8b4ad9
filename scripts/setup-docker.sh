#!/usr/bin/env bash
# scripts/setup-docker.sh: make a Docker engine available for repobox.
#
# Idempotent and quick: if `docker info` already works (DOCKER_HOST is
# respected) it exits 0 at once. Otherwise, as root on Debian 12:
#   * installs Debian's docker.io (and tini, which provides docker-init for
#     `docker run --init`) when dockerd is missing, and gVisor's runsc when
#     Debian offers it (apt-get update only when a package can't be found);
#   * registers runsc as an extra runtime in /etc/docker/daemon.json, with
#     runtimeArgs ["--network=none"], and sets "live-restore": true there (also
#     on an engine that already runs, by a reload), so sandboxes survive a
#     restart of dockerd;
#   * removes stale pid/socket files left by an engine that is gone, starts
#     dockerd in the background (log: /var/log/repobox-dockerd.log) and waits
#     (bounded) until `docker info` answers;
#   * puts the engine's storage on btrfs (REPOBOX_DOCKER_STORAGE=auto, the
#     default), so that a container's disk can be capped (`--storage-opt size`,
#     by btrfs quota groups; Docker's other way, overlay2 on xfs with project
#     quotas, needs CONFIG_XFS_QUOTA, which kernels like this machine's lack):
#     a sparse file (REPOBOX_DOCKER_BTRFS_IMG) formatted btrfs and loop-mounted
#     at the data root REPOBOX_DOCKER_DATA_ROOT, with simple quotas (Linux 6.7+),
#     "data-root" and
#     "storage-driver": "btrfs" in daemon.json. Only when this script starts
#     dockerd and daemon.json names no other data root or driver; when it cannot
#     (no loop device, no btrfs, little free disk) it says so and keeps the
#     engine's default, where repobox reports disk limits as not enforced;
#   * probes the engine with a tiny image made locally (no registry needed):
#     a plain container, `--init`, and `--runtime=runsc`. If containers cannot
#     start on overlay2 it switches to the vfs storage driver; if runsc does not
#     work it is unregistered again.
# Not root and no engine: says what to do and exits 1.
# Test tools, as root, on every run (also when the engine already runs, and
# cheaply: only when a command is missing): Debian's docker-registry (the CNCF
# distribution registry, /usr/bin/docker-registry, for the image pull tests)
# and busybox-static (/bin/busybox, for the tests' tiny image).
#
# Environment:
#   DOCKER_HOST              engine to use; a unix:// socket is started if absent
#   REPOBOX_DOCKERD_LOG      dockerd log file (default /var/log/repobox-dockerd.log)
#   REPOBOX_DOCKER_WAIT      seconds to wait for the engine (default 60)
#   REPOBOX_SKIP_RUNSC=1     do not install or register gVisor
#   REPOBOX_DOCKER_STORAGE   auto (default: btrfs where possible) | btrfs (or fail) | engine (leave it)
#   REPOBOX_DOCKER_DATA_ROOT the engine's data root on btrfs (default /var/lib/repobox-docker)
#   REPOBOX_DOCKER_BTRFS_IMG its backing file (default /var/lib/repobox-docker.btrfs)
#   REPOBOX_DOCKER_BTRFS_GB  its size (default: 3/4 of the free space, at most 200)
set -euo pipefail

PROG=setup-docker
say()  { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die()  { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

DOCKERD_LOG=${REPOBOX_DOCKERD_LOG:-/var/log/repobox-dockerd.log}
WAIT_SECS=${REPOBOX_DOCKER_WAIT:-60}
SKIP_RUNSC=${REPOBOX_SKIP_RUNSC:-0}
STORAGE=${REPOBOX_DOCKER_STORAGE:-auto}
BTRFS_ROOT=${REPOBOX_DOCKER_DATA_ROOT:-/var/lib/repobox-docker}
BTRFS_IMG=${REPOBOX_DOCKER_BTRFS_IMG:-/var/lib/repobox-docker.btrfs}
BTRFS_GB=${REPOBOX_DOCKER_BTRFS_GB:-}
DAEMON_JSON=/etc/docker/daemon.json
DOCKERD_PIDFILE=/var/run/docker.pid
DEFAULT_SOCK=/var/run/docker.sock
PROBE_IMAGE=repobox/setup-probe:latest
T0=$SECONDS

docker_ok() { command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1; }
engine_summary() {
  docker info --format 'server {{.ServerVersion}}, storage driver {{.Driver}}, cgroup {{.CgroupDriver}} v{{.CgroupVersion}}, runtimes: {{range $k, $v := .Runtimes}}{{$k}} {{end}}' 2>/dev/null || true
}

# ------------------------------------------------------------ packages
APT_UPDATED=0
APT_LOG=/var/log/repobox-apt.log
apt_run() {  # apt_run ARGS...: apt-get, output to $APT_LOG, its tail shown on failure
  local rc=0
  printf '==== %s %s: apt-get %s\n' "$(date -Is)" "$PROG" "$*" >>"$APT_LOG"
  DEBIAN_FRONTEND=noninteractive apt-get "$@" </dev/null >>"$APT_LOG" 2>&1 || rc=$?
  if [[ $rc -ne 0 ]]; then
    warn "apt-get $* failed (rc=$rc); last lines of $APT_LOG:"
    tail -n 15 "$APT_LOG" >&2 || true
  fi
  return $rc
}
apt_update_once() {
  if [[ $APT_UPDATED -eq 0 ]]; then
    say "apt-get update"
    apt_run update || die "apt-get update failed"
    APT_UPDATED=1
  fi
}
apt_candidate() {  # prints the candidate version, empty if none
  apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}
apt_install() {
  local p need_update=0 policy_added=0 rc=0
  for p in "$@"; do [[ -n $(apt_candidate "$p") ]] || need_update=1; done
  [[ $need_update -eq 0 ]] || apt_update_once
  # Never let package scripts start services (there is no init system to own
  # them); this script starts dockerd itself.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
    policy_added=1
  fi
  say "apt-get install $* (log: $APT_LOG)"
  apt_run install -y --no-install-recommends "$@" || rc=$?
  if [[ $rc -ne 0 && $APT_UPDATED -eq 0 ]]; then
    say "retrying after apt-get update"
    apt_update_once
    rc=0
    apt_run install -y --no-install-recommends "$@" || rc=$?
  fi
  [[ $policy_added -eq 0 ]] || rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || die "apt-get install $* failed (rc=$rc)"
}

# Tools the e2e tests need (not the engine): a local registry and busybox.
# Cheap when present (two `command -v`); only root installs them, and a failure
# is only a warning (the engine itself is fine).
ensure_test_tools() {
  local tools=()
  command -v docker-registry >/dev/null 2>&1 || tools+=(docker-registry)
  command -v busybox >/dev/null 2>&1 || tools+=(busybox-static)
  [[ ${#tools[@]} -gt 0 ]] || return 0
  if [[ $(id -u) -ne 0 ]]; then
    warn "not root: cannot install ${tools[*]} (the registry and tiny-image e2e tests need them)"
    return 0
  fi
  local t=$SECONDS
  # a subshell: apt_install's die must not end this run
  if (apt_install "${tools[@]}"); then
    say "test tools installed in $((SECONDS - t))s: ${tools[*]}"
  else
    warn "could not install ${tools[*]}; the registry and tiny-image e2e tests will fail"
  fi
}

# ---------------------------------------------------------------- fast path
if docker_ok; then
  # Sandboxes must survive a restart of the engine: a local dockerd we may
  # configure gets live-restore (a reloadable setting: SIGHUP, no restart).
  if [[ $(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null) == false && $(id -u) -eq 0 \
        && ${DOCKER_HOST:-unix://$DEFAULT_SOCK} == "unix://$DEFAULT_SOCK" ]] \
      && command -v jq >/dev/null 2>&1 && pgrep -x dockerd >/dev/null 2>&1; then
    mkdir -p "$(dirname "$DAEMON_JSON")"
    cur=$(cat "$DAEMON_JSON" 2>/dev/null || true)
    jq '. + {"live-restore": true}' <<<"${cur:-{\}}" >"$DAEMON_JSON.tmp" && mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
    pkill -HUP -x dockerd || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [[ $(docker info --format '{{.LiveRestoreEnabled}}' 2>/dev/null) == true ]] && break
      sleep 0.5
    done
    say "enabled live-restore on the running engine (sandboxes survive an engine restart)"
  fi
  ensure_test_tools
  if [[ $STORAGE != engine && $(docker info --format '{{.Driver}}' 2>/dev/null) != btrfs ]]; then
    say "note: the engine's storage is not btrfs, so repobox cannot cap a sandbox's disk; to change that, stop dockerd and re-run $0 as root"
  fi
  say "Docker engine already available ($(engine_summary)); nothing to do"
  exit 0
fi

# ------------------------------------------------------------- not root
if [[ $(id -u) -ne 0 ]]; then
  why=
  if command -v docker >/dev/null 2>&1; then
    why=$(timeout 20 docker info 2>&1 >/dev/null | grep -v '^$' | tail -n 1 || true)
  fi
  cat >&2 <<EOF
$PROG: error: no usable Docker engine at ${DOCKER_HOST:-unix://$DEFAULT_SOCK}${why:+ ($why)}, and only root can start one.
$PROG: do one of:
$PROG:   * run this script as root:   sudo $0
$PROG:   * start the engine yourself: sudo systemctl start docker  (or: sudo dockerd &)
$PROG:   * point DOCKER_HOST at an engine you can reach, or add yourself to the
$PROG:     'docker' group (sudo usermod -aG docker \$USER) and log in again.
EOF
  exit 1
fi

# Which socket should the engine listen on?
SOCK=$DEFAULT_SOCK
DOCKERD_ARGS=()
if [[ -n ${DOCKER_HOST:-} ]]; then
  case $DOCKER_HOST in
    unix://*)
      SOCK=${DOCKER_HOST#unix://}
      [[ $SOCK == "$DEFAULT_SOCK" || $SOCK == /run/docker.sock ]] || DOCKERD_ARGS+=(-H "$DOCKER_HOST")
      ;;
    *) die "DOCKER_HOST=$DOCKER_HOST does not answer and is not a local unix:// socket; start that engine, or unset DOCKER_HOST to get a local one" ;;
  esac
fi
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

want=()
command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
command -v jq >/dev/null 2>&1 || want+=(jq)
command -v docker-registry >/dev/null 2>&1 || want+=(docker-registry)   # e2e tests' registry
command -v busybox >/dev/null 2>&1 || want+=(busybox-static)            # e2e tests' tiny image
[[ -x /usr/bin/tini-static ]] || want+=(tini)   # docker-init, for `docker run --init`
case $STORAGE in
  auto|btrfs) command -v mkfs.btrfs >/dev/null 2>&1 || want+=(btrfs-progs) ;;  # disk limits
  engine) ;;
  *) die "REPOBOX_DOCKER_STORAGE=$STORAGE: use auto, btrfs or engine" ;;
esac
if [[ $SKIP_RUNSC != 1 ]] && ! command -v runsc >/dev/null 2>&1; then
  [[ -n $(apt_candidate runsc) ]] || apt_update_once
  if [[ -n $(apt_candidate runsc) ]]; then
    want+=(runsc)
  else
    say "gVisor: no 'runsc' package in this machine's apt sources; skipping it"
  fi
fi
if [[ ${#want[@]} -gt 0 ]]; then
  t=$SECONDS
  apt_install "${want[@]}"
  say "packages installed in $((SECONDS - t))s"
fi
command -v dockerd >/dev/null 2>&1 || die "dockerd still missing after installing docker.io"
command -v docker >/dev/null 2>&1 || die "no docker client on PATH"

# docker-init: dockerd runs `docker-init` for `docker run --init`. Debian's
# docker.io points it at tini; make sure it resolves.
find_docker_init() {
  local d
  for d in /usr/local/libexec/docker /usr/libexec/docker /usr/local/lib/docker /usr/lib/docker; do
    [[ -x $d/docker-init ]] && { echo "$d/docker-init"; return 0; }
  done
  command -v docker-init 2>/dev/null
}
if ! find_docker_init >/dev/null; then
  if [[ -x /usr/bin/tini-static ]]; then
    mkdir -p /usr/local/libexec/docker
    ln -sf /usr/bin/tini-static /usr/local/libexec/docker/docker-init
    say "linked /usr/local/libexec/docker/docker-init -> /usr/bin/tini-static"
  else
    warn "no docker-init and no tini-static: 'docker run --init' will not work"
  fi
fi

# ---------------------------------------------------------- daemon.json
# Only the keys this script owns are touched; the rest of the file is kept.
json_apply() {  # json_apply JQ_FILTER [jq args...]: rewrite daemon.json if it changes
  local filter=$1; shift
  local cur new
  mkdir -p "$(dirname "$DAEMON_JSON")"
  if [[ -s $DAEMON_JSON ]]; then cur=$(cat "$DAEMON_JSON"); else cur='{}'; fi
  new=$(jq "$@" "$filter" <<<"$cur") || die "cannot update $DAEMON_JSON (is it valid JSON?)"
  if [[ "$(jq -S . <<<"$cur")" != "$(jq -S . <<<"$new")" || ! -s $DAEMON_JSON ]]; then
    printf '%s\n' "$new" >"$DAEMON_JSON.tmp" && mv "$DAEMON_JSON.tmp" "$DAEMON_JSON"
    return 0
  fi
  return 1   # unchanged
}
register_runsc() {
  # shellcheck disable=SC2016  # $p is a jq variable
  json_apply '.runtimes = ((.runtimes // {}) + {runsc: {path: $p, runtimeArgs: ["--network=none"]}})' \
    --arg p "$(command -v runsc)"
}
unregister_runsc() {
  # leaves "runtimes": {} rather than no key: dockerd's reload (SIGHUP) only
  # applies the keys present in the file
  json_apply 'if .runtimes.runsc then .runtimes |= del(.runsc) else . end'
}

# Containers keep running while dockerd restarts; repobox re-attaches after.
if json_apply '. + {"live-restore": true}'; then say "enabled live-restore in $DAEMON_JSON"; fi
if [[ $SKIP_RUNSC != 1 ]] && command -v runsc >/dev/null 2>&1; then
  if register_runsc; then say "registered runtime 'runsc' in $DAEMON_JSON"; fi
else
  if unregister_runsc; then say "unregistered runtime 'runsc' from $DAEMON_JSON"; fi
fi

# ------------------------------------------------------------ dockerd
alive() {  # alive PID NAME: PID is a running (not zombie) process called NAME
  local stat
  [[ -n $1 ]] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # /proc/PID/stat is "PID (COMM) STATE ..."
  [[ ${stat#*(} == "$2) "* && ${stat##*) } != Z* ]]
}
running() {  # running PID: PID exists and is not a zombie (whatever it is called)
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  [[ ${stat##*) } != Z* ]]
}
pid_is() {  # pid_is PIDFILE NAME: the pid in PIDFILE is a live process called NAME
  [[ -s $1 ]] && alive "$(tr -dc '0-9' <"$1")" "$2"
}
live_pids() {  # live_pids NAME: pids of non-zombie processes called NAME
  local p
  for p in $(pgrep -x "$1" 2>/dev/null); do alive "$p" "$1" && echo "$p"; done
  return 0
}
clean_stale() {
  if [[ -e $DOCKERD_PIDFILE ]] && ! pid_is "$DOCKERD_PIDFILE" dockerd; then
    say "removing stale $DOCKERD_PIDFILE"
    rm -f "$DOCKERD_PIDFILE"
  fi
  if [[ -S $SOCK ]]; then
    say "removing stale socket $SOCK"
    rm -f "$SOCK"
  elif [[ -e $SOCK ]]; then
    die "$SOCK exists and is not a socket; remove it and re-run"
  fi
  # containerd that dockerd starts itself
  local cd=/var/run/docker/containerd
  if [[ -e $cd/containerd.pid ]] && ! pid_is "$cd/containerd.pid" containerd; then
    say "removing stale $cd/containerd.{pid,sock}"
    rm -f "$cd/containerd.pid" "$cd/containerd.sock" "$cd/containerd.sock.ttrpc" "$cd/containerd-debug.sock"
  fi
  # a system containerd socket with no containerd behind it would make dockerd
  # try (and fail) to use it
  if [[ -S /run/containerd/containerd.sock && -z $(live_pids containerd) ]]; then
    say "removing stale /run/containerd/containerd.sock"
    rm -f /run/containerd/containerd.sock /run/containerd/containerd.sock.ttrpc
  fi
}

DOCKERD_PID=
wait_engine() {
  local i
  for ((i = 0; i < WAIT_SECS; i++)); do
    docker_ok && return 0
    if [[ -n $DOCKERD_PID ]] && ! running "$DOCKERD_PID"; then
      warn "dockerd (pid $DOCKERD_PID) exited; last lines of $DOCKERD_LOG:"
      tail -n 25 "$DOCKERD_LOG" >&2 || true
      return 1
    fi
    sleep 1
  done
  warn "engine did not answer within ${WAIT_SECS}s; last lines of $DOCKERD_LOG:"
  tail -n 25 "$DOCKERD_LOG" >&2 || true
  return 1
}
start_dockerd() {
  clean_stale
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  printf '==== %s %s: starting dockerd %s\n' "$(date -Is)" "$PROG" "${DOCKERD_ARGS[*]:-}" >>"$DOCKERD_LOG"
  say "starting dockerd in the background (log: $DOCKERD_LOG)"
  (
    # hand dockerd no descriptor but 0-2: an inherited pipe (from CI's log
    # capture, say) would otherwise be held open for as long as dockerd runs
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      if [[ $fd -gt 2 ]]; then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid dockerd "${DOCKERD_ARGS[@]}"
  ) </dev/null >>"$DOCKERD_LOG" 2>&1 &
  DOCKERD_PID=$!
  disown "$DOCKERD_PID" 2>/dev/null || true
  local t=$SECONDS
  wait_engine || die "could not start the Docker engine"
  say "engine up after $((SECONDS - t))s (pid $DOCKERD_PID): $(engine_summary)"
}
stop_dockerd() {  # only ever the dockerd this run started
  [[ -n $DOCKERD_PID ]] || return 0
  say "stopping dockerd (pid $DOCKERD_PID)"
  kill -TERM "$DOCKERD_PID" 2>/dev/null || true
  local i
  for ((i = 0; i < 30; i++)); do running "$DOCKERD_PID" || break; sleep 1; done
  running "$DOCKERD_PID" && die "dockerd (pid $DOCKERD_PID) did not stop"
  DOCKERD_PID=
}

# ------------------------------------------------ storage: btrfs (disk limits)
# Docker caps a container's writable layer (`--storage-opt size`) with overlay2
# on xfs with project quotas, or with the btrfs driver (quota groups). Kernels
# built without CONFIG_XFS_QUOTA (this project's CI machines) have only the
# second, so the engine's data root goes on a btrfs filesystem in a file.
storage_unusable() {  # storage_unusable WHY: btrfs is out; fail or fall back
  [[ $STORAGE == btrfs ]] && die "cannot put the engine's storage on btrfs: $1"
  warn "engine storage stays the engine's default (repobox will report disk limits as not enforced): $1"
  # drop our keys if an earlier run set them
  if json_apply 'if ."data-root" == $r then del(."data-root", ."storage-driver") else . end' --arg r "$BTRFS_ROOT"; then
    say "removed the btrfs data root from $DAEMON_JSON"
  fi
}
mount_btrfs() {  # the data root mounted from its btrfs file, made if missing
  local fstype gb avail
  fstype=$(findmnt -n -o FSTYPE --target "$BTRFS_ROOT" 2>/dev/null || true)
  if mountpoint -q "$BTRFS_ROOT" 2>/dev/null && [[ $fstype == btrfs ]]; then
    simple_quotas
    return
  fi
  grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || true
  grep -qw btrfs /proc/filesystems || { storage_unusable "the kernel has no btrfs"; return 1; }
  command -v mkfs.btrfs >/dev/null 2>&1 || { storage_unusable "no mkfs.btrfs (btrfs-progs)"; return 1; }
  if [[ ! -s $BTRFS_IMG ]]; then
    mkdir -p "$(dirname "$BTRFS_IMG")"
    avail=$(df --output=avail -BG "$(dirname "$BTRFS_IMG")" | tail -n 1 | tr -dc '0-9')
    gb=${BTRFS_GB:-$((avail * 3 / 4 > 200 ? 200 : avail * 3 / 4))}
    if [[ $gb -lt 16 ]]; then
      storage_unusable "only ${avail}G free beside $BTRFS_IMG (16G wanted)"
      return 1
    fi
    say "making a ${gb}G btrfs filesystem in $BTRFS_IMG (sparse: it takes host disk only as the engine writes)"
    truncate -s "${gb}G" "$BTRFS_IMG.tmp" && mkfs.btrfs -q -f "$BTRFS_IMG.tmp" >/dev/null \
      && mv "$BTRFS_IMG.tmp" "$BTRFS_IMG" || { rm -f "$BTRFS_IMG.tmp"; storage_unusable "mkfs.btrfs failed"; return 1; }
  fi
  mkdir -p "$BTRFS_ROOT"
  # discard: space the engine frees goes back to the host's disk
  if ! mount -o loop,discard=async "$BTRFS_IMG" "$BTRFS_ROOT" 2>/tmp/repobox-mount.err; then
    storage_unusable "cannot mount $BTRFS_IMG at $BTRFS_ROOT: $(head -n 1 /tmp/repobox-mount.err)"
    return 1
  fi
  say "mounted $BTRFS_IMG (btrfs) at $BTRFS_ROOT"
  simple_quotas || { umount "$BTRFS_ROOT" || true; return 1; }
}
# Simple quotas (Linux 6.7+) count, for each subvolume, the extents it wrote: a
# container's writes, not the image it shares. Full quota groups, what dockerd would
# turn on by itself, count shared extents too and make every container create
# take seconds here (backreference walks at each snapshot). btrfs-progs before
# 6.7 (Debian 12's is 6.2) cannot ask for them, so the ioctl is made directly:
# BTRFS_IOC_QUOTA_CTL (_IOWR(0x94, 40, 16 bytes)), BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA (4).
simple_quotas() {
  local uuid mode
  uuid=$(findmnt -n -o UUID --target "$BTRFS_ROOT")
  mode=$(cat "/sys/fs/btrfs/$uuid/qgroups/mode" 2>/dev/null || echo off)
  [[ $mode == squota ]] && return 0
  command -v python3 >/dev/null 2>&1 || { storage_unusable "no python3 to turn on btrfs simple quotas"; return 1; }
  if [[ $mode != off ]]; then
    say "btrfs quota mode is '$mode': switching to simple quotas"
    btrfs quota disable "$BTRFS_ROOT" || { storage_unusable "cannot disable btrfs quotas on $BTRFS_ROOT"; return 1; }
  fi
  if ! python3 - "$BTRFS_ROOT" <<'PY' 2>/tmp/repobox-squota.err; then
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
fcntl.ioctl(fd, 0xC0109428, bytearray(struct.pack("QQ", 4, 0)))
PY
    storage_unusable "this kernel has no btrfs simple quotas (Linux 6.7+): $(tail -n 1 /tmp/repobox-squota.err)"
    return 1
  fi
  say "btrfs simple quotas on at $BTRFS_ROOT"
}
others=$(live_pids dockerd | tr '\n' ' ')
if [[ $STORAGE != engine && -z $others ]]; then
  theirs=$(jq -r --arg r "$BTRFS_ROOT" 'if (."data-root" // $r) != $r or ((."storage-driver" // "btrfs") != "btrfs") then "data-root \(."data-root" // "default"), storage driver \(."storage-driver" // "default")" else empty end' "$DAEMON_JSON" 2>/dev/null || true)
  if [[ -n $theirs ]]; then
    if [[ $STORAGE == btrfs ]]; then die "$DAEMON_JSON already sets $theirs; remove those keys to let this script put the engine on btrfs"; fi
    say "$DAEMON_JSON sets $theirs: keeping it (repobox reports disk limits per that storage)"
  elif mount_btrfs; then
    if json_apply '. + {"data-root": $r, "storage-driver": "btrfs"}' --arg r "$BTRFS_ROOT"; then
      say "the engine's data root is now $BTRFS_ROOT (btrfs): sandboxes' disk can be capped"
    fi
  fi
fi


if [[ -n $others ]]; then
  # An engine is running (perhaps still starting): wait for it, don't start a second one.
  say "a dockerd is already running (pid ${others% }); waiting for it to answer"
  wait_engine || die "the running dockerd does not answer at ${DOCKER_HOST:-unix://$DEFAULT_SOCK}; see $DOCKERD_LOG or stop it and re-run $0"
  say "engine answers: $(engine_summary)"
else
  start_dockerd
fi

# -------------------------------------------------------------- probes
# A tiny image made here from tini-static: no registry needed.
PROBE_DIR=
cleanup() {
  [[ -z $PROBE_DIR ]] || rm -rf "$PROBE_DIR"
  docker image rm -f "$PROBE_IMAGE" >/dev/null 2>&1 || true
}
trap cleanup EXIT
make_probe_image() {
  [[ -n $PROBE_DIR ]] || PROBE_DIR=$(mktemp -d /tmp/repobox-probe.XXXXXX)
  cp /usr/bin/tini-static "$PROBE_DIR/probe"
  tar -C "$PROBE_DIR" -c . | docker import - "$PROBE_IMAGE" >/dev/null
}
# A container whose start fails (seen with runsc when its network is not
# "none") can leave containerd's shim and the sandbox processes behind: stop
# that container's own shim and drop containerd's record of it.
reap_container() {
  local id=$1 p sock
  for p in $(pgrep -f -- "containerd-shim.* -id $id" 2>/dev/null); do kill -TERM "$p" 2>/dev/null || true; done
  for sock in /var/run/docker/containerd/containerd.sock /run/containerd/containerd.sock; do
    if [[ ! -S $sock ]] || ! command -v ctr >/dev/null 2>&1; then continue; fi
    ctr -a "$sock" -n moby tasks delete -f "$id" >/dev/null 2>&1 || true
    ctr -a "$sock" -n moby containers delete "$id" >/dev/null 2>&1 || true
  done
}
PROBE_ERR=
probe() {  # probe [docker run options...]: run /probe --version in the probe image
  local id rc=0 out
  if ! id=$(timeout 60 docker create --network none "$@" "$PROBE_IMAGE" /probe --version 2>&1); then
    PROBE_ERR=$(grep -m1 -i error <<<"$id" || head -n 1 <<<"$id")
    return 1
  fi
  out=$(timeout 60 docker start -a "$id" 2>&1) || rc=$?
  docker rm -f "$id" >/dev/null 2>&1 || true
  if [[ $rc -ne 0 ]]; then
    PROBE_ERR=$(grep -m1 -i error <<<"$out" || head -n 1 <<<"$out")
    reap_container "$id"
  fi
  return $rc
}

if [[ ! -x /usr/bin/tini-static ]]; then
  warn "no /usr/bin/tini-static: skipping the container probes"
  say "done in $((SECONDS - T0))s"
  exit 0
fi
make_probe_image || die "docker import of the probe image failed"

if ! probe; then
  driver=$(docker info --format '{{.Driver}}' 2>/dev/null || true)
  warn "a plain container does not start on storage driver '$driver': $PROBE_ERR"
  if [[ $driver != vfs && -n $DOCKERD_PID ]]; then
    say "switching to the vfs storage driver"
    json_apply '."storage-driver" = "vfs"' || true
    stop_dockerd
    start_dockerd
    make_probe_image || die "docker import of the probe image failed"
    probe || die "containers still do not start: $PROBE_ERR (see $DOCKERD_LOG)"
  else
    die "containers do not start: $PROBE_ERR (see $DOCKERD_LOG)"
  fi
fi
say "probe: 'docker run --network none' works (storage driver $(docker info --format '{{.Driver}}'))"

if probe --init; then
  say "probe: 'docker run --init' works"
else
  warn "'docker run --init' does not work: $PROBE_ERR"
fi

if [[ $SKIP_RUNSC != 1 ]] && command -v runsc >/dev/null 2>&1; then
  if probe --runtime=runsc; then
    say "probe: 'docker run --runtime=runsc' (gVisor) works"
  else
    warn "gVisor does not work here: $PROBE_ERR"
    if unregister_runsc; then
      say "unregistered runtime 'runsc'; reloading dockerd"
      kill -HUP "$(tr -dc '0-9' <"$DOCKERD_PIDFILE")" || warn "could not signal dockerd; restart it to drop runsc"
      sleep 1
    fi
  fi
fi

say "done in $((SECONDS - T0))s: $(engine_summary)"
