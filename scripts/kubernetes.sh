#!/usr/bin/env bash
# scripts/kubernetes.sh: a real, small Kubernetes cluster on this machine, from
# Debian's packages alone, for repobox's Kubernetes backend and its tests.
#
#   scripts/kubernetes.sh up     build once (cached), start the cluster, wait
#                                until the node is Ready, print KUBECONFIG
#   scripts/kubernetes.sh down   stop what `up` started, remove the pods'
#                                containers, put the kernel settings back
#   scripts/kubernetes.sh env    print `export KUBECONFIG=...`
#
# What it runs: Kubernetes 1.20.2 from Debian 12's source package `kubernetes`
# (Debian builds only kubectl from it; we build kube-apiserver, kubelet,
# kube-scheduler, kube-controller-manager and kubectl with Debian's Go 1.19),
# etcd 3.4 from `etcd-server`, and the kubelet's dockershim on the Docker
# engine already here. Everything listens on 127.0.0.1 only. See
# docs/KUBERNETES.md for the two source changes and why they are needed.
#
# Must run as root (it starts a kubelet). Idempotent: `up` on a running
# cluster starts only what is missing; `down` on a stopped one does nothing.
#
# Environment:
#   REPOBOX_KUBE_CACHE   build cache, keyed by the source version (default
#                        /var/cache/repobox/kubernetes/<version>); binaries in
#                        bin/, the source tree and Go's build cache in src/
#                        while building (kept after an interrupted build so the
#                        next run resumes; removed once the binaries are in)
#   REPOBOX_KUBE_KEEP_BUILD=1  keep src/ (and Go's cache) after a good build
#   REPOBOX_KUBE_STATE   state dir (default /var/lib/repobox-kube): pki/,
#                        kubeconfigs, logs/, run/ (pids), etcd/, kubelet/
#   REPOBOX_KUBE_READY_WAIT  seconds to wait for the node to be Ready (120)
#   REPOBOX_KUBE_APISERVER_PORT  (6443), REPOBOX_KUBE_ETCD_PORT (12379; the
#                        peer port is the next one)
#   REPOBOX_KUBE_NICE    niceness of the build (19)
#   REPOBOX_KUBE_NODES   2: a second node (own kubelet, own Docker engine, in the
#                        network namespace repobox-node2; see node2_up); `load
#                        IMAGE...` copies images from the host's engine to it
#   DOCKER_HOST          the engine the kubelet uses (unix sockets only)
set -euo pipefail

readonly KUBE_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
HERE=${REPOBOX_KUBE_SCRIPTS:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
readonly HERE
readonly CACHE=${REPOBOX_KUBE_CACHE:-/var/cache/repobox/kubernetes/$KUBE_SRC_VERSION}
readonly STATE=${REPOBOX_KUBE_STATE:-/var/lib/repobox-kube}
readonly READY_WAIT=${REPOBOX_KUBE_READY_WAIT:-120}
readonly API_PORT=${REPOBOX_KUBE_APISERVER_PORT:-6443}
readonly ETCD_PORT=${REPOBOX_KUBE_ETCD_PORT:-12379}
readonly ETCD_PEER_PORT=$((ETCD_PORT + 1))
readonly BUILD_NICE=${REPOBOX_KUBE_NICE:-19}
readonly GO_ROOT=/usr/lib/go-1.19

readonly BIN=$CACHE/bin
readonly SRC=$CACHE/src
readonly PKI=$STATE/pki
readonly RUN=$STATE/run
readonly LOGS=$STATE/logs
readonly KUBECONFIG_ADMIN=$STATE/admin.kubeconfig
readonly BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
# The kubelet reaches the apiserver and the apiserver reaches the kubelet by
# this name: it resolves to 127.0.0.1 everywhere, and a node IP may not be a
# loopback address (the kubelet picks eth0's for InternalIP, unused here).
readonly NODE=localhost
readonly PAUSE_IMAGE=repobox/kube-pause:3.2
# A second node (REPOBOX_KUBE_NODES=2): a kubelet and a Docker engine of its own in
# the network namespace $NODE2_NS, joined to the host by a veth pair
# ($NODE2_HOST_IP on the host, $NODE2_IP in the namespace). Its name is its
# address, so the apiserver reaches its kubelet by name as it reaches the first.
readonly NODES=${REPOBOX_KUBE_NODES:-1}
readonly NODE2_NS=repobox-node2
readonly NODE2_HOST_IP=10.250.0.1
readonly NODE2_IP=10.250.0.2
readonly NODE2=$NODE2_IP
readonly N2=$STATE/node2
# What the kubelet changes at start (kubelet's setupKernelTunables), and that
# `down` puts back.
readonly SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

say() { echo "kubernetes: $*" >&2; }
die() {
  say "error: $*"
  exit 1
}

docker_socket() {
  local host=${DOCKER_HOST:-unix:///var/run/docker.sock}
  [[ $host == unix://* ]] || die "DOCKER_HOST=$host: the kubelet needs a unix socket"
  echo "$host"
}

# ---------------------------------------------------------------- building --

# Debian packages, installed only when missing: ensure_packages PACKAGE...
ensure_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  say "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  # etcd-server's postinst would start a system etcd where an init system
  # runs; we start our own, so keep it from starting one.
  DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}
readonly BUILD_PACKAGES=(golang-1.19-go rsync patch make gcc libc6-dev dpkg-dev
  golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev)
# The pods' network (see kubelet_config).
readonly POD_LINK=repobox-kube0
readonly RUN_PACKAGES=(etcd-server openssl curl containernetworking-plugins socat)

# The source package, fetched with a private apt configuration (its own
# deb-src list, state and cache dirs) so the system's sources stay as they are.
fetch_source() {
  [[ -f $SRC/.prepared ]] && return 0
  local apt=$CACHE/apt dl=$CACHE/download
  rm -rf "$apt" "$SRC" "$SRC.tmp"
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc/apt.conf.d" \
    "$apt/etc/sources.list.d" "$apt/etc/preferences.d" "$dl"
  cat >"$apt/sources.list" <<'EOF'
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main
deb-src http://deb.debian.org/debian bookworm-updates main
EOF
  cat >"$apt/apt.conf" <<EOF
Dir::Etc::SourceList "$apt/sources.list";
Dir::Etc::SourceParts "$apt/etc/sources.list.d";
Dir::Etc::Parts "$apt/etc/apt.conf.d";
Dir::Etc::Preferences "$apt/etc/preferences";
Dir::Etc::PreferencesParts "$apt/etc/preferences.d";
Dir::State::Lists "$apt/lists";
Dir::Cache "$apt/cache";
APT::Sandbox::User "root";
EOF
  if ! compgen -G "$dl/kubernetes_${KUBE_SRC_VERSION}.dsc" >/dev/null; then
    say "fetching Debian's source package kubernetes $KUBE_SRC_VERSION"
    APT_CONFIG=$apt/apt.conf apt-get update -qq >/dev/null
    (cd "$dl" && APT_CONFIG=$apt/apt.conf apt-get source -qq --download-only \
      "kubernetes=$KUBE_SRC_VERSION" >/dev/null)
  fi
  say "unpacking the source (Debian's patches applied)"
  dpkg-source --no-check -x "$dl/kubernetes_${KUBE_SRC_VERSION}.dsc" "$SRC.tmp" >/dev/null
  rm -f "$CACHE"/kubernetes_*.orig.tar.* # dpkg-source's copy beside the tree
  patch_source "$SRC.tmp"
  mv "$SRC.tmp" "$SRC"
  touch "$SRC/.prepared"
}

# The two changes (docs/KUBERNETES.md says why).
patch_source() {
  local tree=$1 gocode=/usr/share/gocode/src/github.com
  # 1. Debian's newer reflect2 (1.0.2) and json-iterator (1.1.12) in place of
  #    the vendored 1.0.1 / 1.1.10: the old reflect2 breaks map iteration with
  #    Go >= 1.18. Only the module's own files; tests are not vendored.
  local m
  for m in modern-go/reflect2 json-iterator/go; do
    [[ -d $gocode/$m ]] || die "$gocode/$m missing (Debian's -dev package)"
    rsync -a --delete --exclude='*_test.go' --exclude='*_tests/' --exclude='.*' --exclude=LICENSE \
      "$gocode/$m/" "$tree/vendor/github.com/$m/"
  done
  # 2. The pod sandbox's oom_score_adj: 0, not -998.
  patch -s -p1 -d "$tree" <"$HERE/kubernetes/sandbox-oom-score-adj.patch"
}

build() {
  if [[ -f $BIN/.complete ]]; then
    return 0
  fi
  ensure_packages "${BUILD_PACKAGES[@]}"
  mkdir -p "$CACHE"
  # One build at a time; a second `up` waits (bounded) or gives up clearly.
  exec 8>"$CACHE/.build.lock"
  if ! flock -w 5 8; then
    die "another build holds $CACHE/.build.lock"
  fi
  [[ -f $BIN/.complete ]] && return 0
  local avail
  avail=$(df -Pk "$CACHE" | awk 'NR==2 {print $4}')
  if [[ ! -d $SRC/_output ]] && ((avail < 6 * 1024 * 1024)); then
    die "the build needs about 5 GB free under $CACHE; $((avail / 1024)) MB are"
  fi
  fetch_source
  mkdir -p "$CACHE/home"
  local what="" b t0=$SECONDS
  for b in "${BINARIES[@]}"; do what+="cmd/$b "; done
  say "building ${BINARIES[*]} (log: $CACHE/build.log; ~20 min cold on 2 cores, resumes if interrupted)"
  # Go's build cache is the tree's own (_output/local/go/cache, set by
  # hack/lib/golang.sh), so it survives an interrupted build. GOPROXY=off:
  # everything comes from vendor/ (the default for this go.mod), nothing from
  # the network. No GOFLAGS: hack/lib/golang.sh reads build tags out of it.
  if ! (cd "$SRC" && env PATH="$GO_ROOT/bin:$PATH" HOME="$CACHE/home" GOPROXY=off GOSUMDB=off \
    nice -n "$BUILD_NICE" make WHAT="${what% }") >>"$CACHE/build.log" 2>&1; then
    tail -n 20 "$CACHE/build.log" >&2
    die "the build failed (log: $CACHE/build.log)"
  fi
  mkdir -p "$BIN.tmp"
  for b in "${BINARIES[@]}"; do
    install -m 0755 "$SRC/_output/bin/$b" "$BIN.tmp/$b"
  done
  # The pod sandbox image's only program, from the same tree.
  gcc -Os -static -DVERSION=v3.2-repobox -o "$BIN.tmp/pause" "$SRC/build/pause/linux/pause.c"
  strip "$BIN.tmp/pause"
  rm -rf "$BIN"
  mv "$BIN.tmp" "$BIN"
  echo "$KUBE_SRC_VERSION" >"$BIN/.complete"
  say "built in $((SECONDS - t0)) s: $(du -sh "$BIN" | cut -f1) in $BIN"
  if [[ ${REPOBOX_KUBE_KEEP_BUILD:-0} != 1 ]]; then
    say "removing the build tree and Go's cache (REPOBOX_KUBE_KEEP_BUILD=1 keeps them)"
    rm -rf "${SRC:?}" "${CACHE:?}/home"
  fi
}

# ---------------------------------------------------------------- identity --

# Certificates signed by our own CA; made once and kept across down/up so a
# KUBECONFIG stays valid.
cert() { # name CN O [subjectAltName] [extendedKeyUsage]
  local name=$1 cn=$2 o=$3 san=${4:-} eku=${5:-clientAuth}
  [[ -f $PKI/$name.crt ]] && return 0
  local subj="/CN=$cn" ext
  [[ -n $o ]] && subj+="/O=$o"
  ext="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku"
  [[ -n $san ]] && ext+="
subjectAltName=$san"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -sha256 -extfile <(echo "$ext") -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr"
}

kubeconfig() { # file user [server]
  local file=$1 user=$2 server=${3:-https://127.0.0.1:$API_PORT}
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: repobox
  cluster:
    server: $server
    certificate-authority: $PKI/ca.crt
users:
- name: $user
  user:
    client-certificate: $PKI/$user.crt
    client-key: $PKI/$user.key
contexts:
- name: repobox
  context: {cluster: repobox, user: $user, namespace: repobox}
current-context: repobox
EOF
}

make_identity() {
  mkdir -p "$PKI"
  chmod 0700 "$PKI"
  # An apiserver certificate from before the second node lacks its address.
  if [[ -f $PKI/apiserver.crt ]] && ! live_pid kube-apiserver >/dev/null &&
    ! openssl x509 -in "$PKI/apiserver.crt" -noout -text | grep -q "IP Address:$NODE2_HOST_IP"; then
    rm -f "$PKI/apiserver.crt" "$PKI/apiserver.key"
  fi
  if [[ ! -f $PKI/ca.crt ]]; then
    openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=repobox-kube-ca" -days 3650 \
      -sha256 -out "$PKI/ca.crt" 2>/dev/null
  fi
  cert apiserver kube-apiserver "" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE2_HOST_IP" \
    serverAuth
  cert admin repobox-admin system:masters
  # The apiserver's identity towards the kubelet (exec, attach, logs).
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert kubelet "system:node:$NODE" system:nodes
  cert kubelet-node2 "system:node:$NODE2" system:nodes
  cert scheduler system:kube-scheduler ""
  cert controller-manager system:kube-controller-manager ""
  if [[ ! -f $PKI/sa.key ]]; then
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  fi
  # A static bearer token for admin too, for clients that prefer a header.
  if [[ ! -f $PKI/admin.token ]]; then
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$PKI/admin.token"
    echo "$(cat "$PKI/admin.token"),repobox-admin,repobox-admin,system:masters" >"$PKI/tokens.csv"
  fi
  kubeconfig "$KUBECONFIG_ADMIN" admin
  kubeconfig "$STATE/kubelet.kubeconfig" kubelet
  # The second node reaches the apiserver through the forwarder on its veth's far end.
  mkdir -p "$N2"
  kubeconfig "$N2/kubelet.kubeconfig" kubelet-node2 "https://$NODE2_HOST_IP:$API_PORT"
  kubeconfig "$STATE/scheduler.kubeconfig" scheduler
  kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
}

# --------------------------------------------------------------- processes --

# The pid recorded for $1, if that process still runs and is ours: its
# program is the expected one and its command line names our state dir (a
# recycled pid fails one of the two).
live_pid() {
  local name=$1 pid exe
  [[ -f $RUN/$name.pid ]] || return 1
  pid=$(<"$RUN/$name.pid")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  local program=${name%%@*}
  [[ ${exe##*/} == "$program" || ${exe##*/} == "$program (deleted)" ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE" || return 1
  echo "$pid"
}

start_proc() { # name program args...
  local name=$1 pid
  shift
  if pid=$(live_pid "$name"); then
    say "$name already runs (pid $pid)"
    return 0
  fi
  echo "=== $(date -u +%FT%TZ) kubernetes.sh: $*" >>"$LOGS/$name.log"
  # setsid: the cluster outlives the shell that started it and its Ctrl-C.
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  say "started $name (pid $!, log $LOGS/$name.log)"
}

# wait_until DESCRIPTION SECONDS PROCESS COMMAND...: polls COMMAND until it
# succeeds, the time is up, or PROCESS (whose log is shown) has died.
wait_until() {
  local what=$1 secs=$2 proc=$3 deadline
  shift 3
  deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! live_pid "$proc" >/dev/null; then
      tail -n 15 "$LOGS/$proc.log" >&2 || true
      die "$proc exited while waiting for $what (log: $LOGS/$proc.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 15 "$LOGS/$proc.log" >&2 || true
      die "timed out after ${secs}s waiting for $what (log: $LOGS/$proc.log)"
    fi
    sleep 0.5
  done
}

kc() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_ADMIN" --request-timeout=10s "$@"; }

api_ready() {
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$API_PORT/readyz" | grep -qx ok
}

node_ready() {
  [[ $(kc get node "$NODE" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# ---------------------------------------------------------------- sysctls --

record_sysctls() {
  # Recorded once, before a kubelet of ours changes them; `down` removes the
  # record after restoring, so a crashed cluster's record is still the good one.
  [[ -f $STATE/sysctl.before ]] && return 0
  live_pid kubelet >/dev/null && return 0
  local k
  for k in "${SYSCTLS[@]}"; do
    echo "$k=$(sysctl -n "$k")"
  done >"$STATE/sysctl.before.tmp"
  mv "$STATE/sysctl.before.tmp" "$STATE/sysctl.before"
}

restore_sysctls() {
  [[ -f $STATE/sysctl.before ]] || return 0
  local line ok=1
  while IFS= read -r line; do
    [[ -n $line ]] || continue
    if [[ $(sysctl -n "${line%%=*}") != "${line#*=}" ]]; then
      sysctl -qw "$line" || ok=0
    fi
  done <"$STATE/sysctl.before"
  if ((ok)); then
    say "kernel settings restored ($(tr '\n' ' ' <"$STATE/sysctl.before"))"
    rm -f "$STATE/sysctl.before"
  else
    say "warning: could not restore every setting in $STATE/sysctl.before"
  fi
}

# --------------------------------------------------------------------- up --

import_pause() {
  docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1 && return 0
  say "importing $PAUSE_IMAGE into Docker"
  tar -C "$BIN" -c pause | timeout 60 docker import --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" >/dev/null
}

# The flags of a kubelet whose files are under `dir` (kubelet.yaml, kubeconfig,
# root, CNI config), in KUBELET_FLAGS.
kubelet_flags() { # dir node-name docker-endpoint dockershim-socket
  local dir=$1
  KUBELET_FLAGS=(--config "$dir/kubelet.yaml" --kubeconfig "$dir/kubelet.kubeconfig"
    --root-dir "$dir/kubelet" --cert-dir "$dir/kubelet/pki"
    --hostname-override "$2"
    --container-runtime docker --docker-endpoint "$3"
    --container-runtime-endpoint "unix://$4"
    --experimental-dockershim-root-directory "$dir/dockershim"
    --pod-infra-container-image "$PAUSE_IMAGE"
    --network-plugin cni --cni-conf-dir "$dir/cni/net.d" --cni-bin-dir /usr/lib/cni
    --cni-cache-dir "$dir/cni-cache")
}

# Unmounts what a kubelet left mounted under `dir` (deepest first).
unmount_under() { # dir
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "warning: could not unmount $m"
  done < <(awk -v p="$1/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r)
}

# Removes the empty cgroups at and under each path (cgroupfs driver); a cgroup
# still holding a process stays.
remove_empty_cgroups() { # path...
  local d
  for d in "$@"; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

kubelet_config() { # dir address cgroup-root subnet
  local dir=$1 address=$2 cgroup_root=$3 subnet=$4
  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $address
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
failSwapOn: false
# The kubelet's own score: it may not lower it without CAP_SYS_RESOURCE.
oomScoreAdj: 0
# Never delete images: Docker's disk here is shared with repobox and its tests.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# Evict only when memory is really short; the disk is shared and often full-ish.
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
volumePluginDir: $dir/kubelet/volume-plugins
EOF
  # The pod network: an address and nowhere to go. Each pod's eth0 is a macvlan
  # of $POD_LINK, a bridge with no port and no address (it carries nothing
  # anywhere; this kernel has no dummy interfaces), in `private`
  # mode (no pod reaches another), with an address from the node's subnet and no
  # route but that subnet's: no gateway, no host, no other pod. (The kubelet
  # restarts a pod whose sandbox has no IP, so loopback alone will not do.)
  mkdir -p "$dir/cni/net.d"
  cat >"$dir/cni/net.d/10-repobox-isolated.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "repobox-isolated", "plugins": [{
  "type": "macvlan", "master": "$POD_LINK", "mode": "private",
  "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet"}]],
           "dataDir": "$dir/cni-ipam"}}]}
EOF
}

pod_link() {
  if ! ip link show "$POD_LINK" >/dev/null 2>&1; then
    ip link add "$POD_LINK" type bridge
  fi
  ip link set "$POD_LINK" up
}

# ------------------------------------------------------------ second node --

node2_docker() { timeout 60 docker -H "unix://$N2/docker.sock" "$@"; }

node2_ready() {
  [[ $(kc get node "$NODE2" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]
}

# The namespace, its link to the host and its own bridge for the pods' macvlans.
node2_network() {
  if ! ip netns list | grep -qw "$NODE2_NS"; then
    ip netns add "$NODE2_NS"
  fi
  if ! ip link show rbx-node2 >/dev/null 2>&1; then
    ip link add rbx-node2 type veth peer name rbx-node2-in
    ip link set rbx-node2-in netns "$NODE2_NS"
    ip netns exec "$NODE2_NS" ip link set rbx-node2-in name eth0
    ip addr add "$NODE2_HOST_IP/30" dev rbx-node2
    ip netns exec "$NODE2_NS" ip addr add "$NODE2_IP/30" dev eth0
  fi
  ip link set rbx-node2 up
  ip netns exec "$NODE2_NS" ip link set lo up
  ip netns exec "$NODE2_NS" ip link set eth0 up
  if ! ip netns exec "$NODE2_NS" ip link show "$POD_LINK" >/dev/null 2>&1; then
    ip netns exec "$NODE2_NS" ip link add "$POD_LINK" type bridge
  fi
  ip netns exec "$NODE2_NS" ip link set "$POD_LINK" up
}

# A second node: its own Docker engine (overlay2 under $N2, its own containerd
# namespace, no bridge, no iptables) and kubelet, both in $NODE2_NS's network
# (entered with nsenter --net: `ip netns exec` would also remount /sys and hide
# the cgroup tree); socat on the host's end of the veth forwards to the
# apiserver on 127.0.0.1.
node2_up() {
  mkdir -p "$N2/kubelet" "$N2/dockershim" "$N2/docker" /run/repobox-node2
  node2_network
  kubelet_config "$N2" "$NODE2_IP" /repobox-node2 10.245.0.0/16
  # The kubelet's cgroup root must exist in every hierarchy (v1) or the tree (v2).
  local d
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    mkdir -p /sys/fs/cgroup/repobox-node2
  else
    for d in /sys/fs/cgroup/*/; do
      [[ -L ${d%/} ]] || mkdir -p "${d}repobox-node2" 2>/dev/null || true
    done
  fi
  echo '{}' >"$N2/daemon.json"
  start_proc "socat@node2" socat -L "$RUN/socat-node2.lock" \
    "TCP-LISTEN:$API_PORT,bind=$NODE2_HOST_IP,reuseaddr,fork" "TCP:127.0.0.1:$API_PORT"
  start_proc "dockerd@node2" nsenter --net="/run/netns/$NODE2_NS" dockerd \
    --config-file "$N2/daemon.json" --data-root "$N2/docker" --exec-root /run/repobox-node2 \
    --pidfile /run/repobox-node2/dockerd.pid -H "unix://$N2/docker.sock" \
    --containerd-namespace repobox-node2 --containerd-plugins-namespace repobox-node2-plugins \
    --storage-driver overlay2 --bridge none --iptables=false --ip-masq=false --ip-forward=false \
    --exec-opt native.cgroupdriver=cgroupfs --cgroup-parent /repobox-node2-docker
  wait_until "node 2's Docker engine" 60 "dockerd@node2" node2_docker info
  node2_load "$PAUSE_IMAGE"
  kubelet_flags "$N2" "$NODE2" "unix://$N2/docker.sock" "$N2/dockershim.sock"
  start_proc "kubelet@node2" nsenter --net="/run/netns/$NODE2_NS" "$BIN/kubelet" \
    "${KUBELET_FLAGS[@]}" --node-ip "$NODE2_IP"
  wait_until "node $NODE2 to be Ready" "$READY_WAIT" "kubelet@node2" node2_ready
}

# Copies images from the host's engine to node 2's (missing ones only).
node2_load() {
  local image missing=()
  for image in "$@"; do
    node2_docker image inspect "$image" >/dev/null 2>&1 || missing+=("$image")
  done
  ((${#missing[@]})) || return 0
  say "loading ${missing[*]} into node 2's engine"
  timeout 600 docker save "${missing[@]}" | timeout 600 docker -H "unix://$N2/docker.sock" load -q >/dev/null
}

node2_down() {
  stop_procs "kubelet@node2"
  if live_pid "dockerd@node2" >/dev/null; then
    local ids
    ids=$(node2_docker ps -aq --filter label=io.kubernetes.pod.uid 2>/dev/null) || true
    # shellcheck disable=SC2086 # ids: one per word
    [[ -z $ids ]] || node2_docker rm -f $ids >/dev/null 2>&1 || say "warning: node 2's pod containers were not all removed"
  fi
  # Stopping its engine stops the pods' containers (no live-restore there).
  stop_procs "dockerd@node2" "socat@node2"
  unmount_under "$N2"
  remove_empty_cgroups /sys/fs/cgroup/*/repobox-node2 /sys/fs/cgroup/*/repobox-node2-docker
  ip link del rbx-node2 2>/dev/null || true
  ip netns del "$NODE2_NS" 2>/dev/null || true
  # Its images stay (loading the sandbox image again takes a while).
  rm -rf "$N2/kubelet" "$N2/dockershim" "$N2/cni-cache" "$N2/cni-ipam" /run/repobox-node2
}

cmd_up() {
  [[ $(id -u) == 0 ]] || die "must run as root (it starts a kubelet)"
  local t0=$SECONDS docker
  docker=$(docker_socket)
  build
  ensure_packages "${RUN_PACKAGES[@]}"
  mkdir -p "$STATE" "$RUN" "$LOGS" "$STATE/etcd" "$STATE/kubelet" "$STATE/dockershim"
  chmod 0700 "$STATE/etcd"
  make_identity
  kubelet_config "$STATE" 127.0.0.1 / 10.244.0.0/16
  pod_link
  import_pause
  # The kubelet keeps pod logs in /var/log/pods and /var/log/containers
  # (fixed paths in 1.20); `down` removes the ones it made.
  [[ -d /var/log/pods || -f $STATE/created-var-log ]] || touch "$STATE/created-var-log"

  start_proc etcd etcd --name repobox --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "repobox=http://127.0.0.1:$ETCD_PEER_PORT"
  wait_until "etcd" 30 etcd curl -fsS --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

  start_proc kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 --secure-port "$API_PORT" --insecure-port 0 \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
    --anonymous-auth=false --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types Hostname \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --api-audiences https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range 10.96.0.0/24 --endpoint-reconciler-type none \
    --profiling=false
  wait_until "the apiserver" 60 kube-apiserver api_ready

  start_proc kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig "$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --port 0 --leader-elect=false --profiling=false
  start_proc kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --port 0 --leader-elect=false --profiling=false \
    --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
    --use-service-account-credentials=true

  record_sysctls
  kubelet_flags "$STATE" "$NODE" "$docker" "$RUN/dockershim.sock"
  start_proc kubelet "$BIN/kubelet" "${KUBELET_FLAGS[@]}"
  wait_until "node $NODE to be Ready" "$READY_WAIT" kubelet node_ready
  if ((NODES >= 2)); then
    node2_up
  fi

  if ! kc get namespace repobox >/dev/null 2>&1; then
    kc create namespace repobox >/dev/null
  fi
  # Pods are refused until the namespace's default service account exists.
  wait_until "the service account repobox/default" 30 kube-controller-manager \
    kc -n repobox get serviceaccount default
  say "up in $((SECONDS - t0)) s: node $NODE Ready, namespace repobox; kubectl: $BIN/kubectl"
  echo "KUBECONFIG=$KUBECONFIG_ADMIN"
}

# ------------------------------------------------------------------- down --

# stop_procs NAME...: TERM to each of ours, a bounded wait for all of them
# together, then KILL for any still there.
stop_procs() {
  local name pid i left
  local -A pids=()
  for name in "$@"; do
    if pid=$(live_pid "$name"); then
      kill -TERM "$pid" 2>/dev/null || true
      pids[$name]=$pid
    fi
    rm -f "$RUN/$name.pid"
  done
  for ((i = 0; i < 60; i++)); do
    left=0
    for name in "${!pids[@]}"; do
      [[ -d /proc/${pids[$name]} ]] && left=1
    done
    ((left)) || break
    sleep 0.25
  done
  for name in "${!pids[@]}"; do
    pid=${pids[$name]}
    if [[ -d /proc/$pid ]]; then
      say "$name (pid $pid) did not stop in 15 s: KILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 20; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.25
      done
    fi
    say "stopped $name (pid $pid)"
  done
}

# Containers the kubelet made: dockershim names them k8s_<...> and labels
# them io.kubernetes.pod.uid; both must hold.
remove_pod_containers() {
  local ids
  ids=$(timeout 30 docker ps -a --filter label=io.kubernetes.pod.uid \
    --format '{{.ID}} {{.Names}}' | awk '$2 ~ /^k8s_/ {print $1}') || {
    say "warning: could not list Docker's containers"
    return 0
  }
  [[ -n $ids ]] || return 0
  # shellcheck disable=SC2086 # ids: one per word
  timeout 120 docker rm -f $ids >/dev/null || say "warning: some pod containers were not removed"
  say "removed $(wc -w <<<"$ids") pod container(s)"
}

cmd_down() {
  [[ $(id -u) == 0 ]] || die "must run as root"
  # The kubelets first, so they start no container while the rest go; etcd
  # last, so the apiserver can finish its requests.
  node2_down
  stop_procs kubelet
  stop_procs kube-controller-manager kube-scheduler kube-apiserver
  stop_procs etcd
  remove_pod_containers
  # Volumes the kubelet mounted (service account tokens are tmpfs mounts)
  # outlive it.
  unmount_under "$STATE"
  remove_empty_cgroups /sys/fs/cgroup/*/kubepods
  restore_sysctls
  ip link del "$POD_LINK" 2>/dev/null || true
  # The cluster's objects go with it; pki/ and the kubeconfigs stay, so the
  # next `up` hands out the same credentials.
  if [[ -d $STATE ]]; then
    rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/dockershim" "$STATE/cni-cache" "$STATE/cni-ipam" "$RUN"
    if [[ -f $STATE/created-var-log ]]; then
      rm -rf /var/log/pods /var/log/containers
      rm -f "$STATE/created-var-log"
    fi
  fi
  say "down"
}

# Makes images of the host's engine available to every node (node 1 uses that
# engine itself).
cmd_load() {
  (($#)) || die "usage: $0 load IMAGE..."
  live_pid "dockerd@node2" >/dev/null || return 0
  node2_load "$@"
}

cmd_env() {
  live_pid kube-apiserver >/dev/null || die "no cluster runs (scripts/kubernetes.sh up)"
  echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
env) cmd_env ;;
load)
  shift
  cmd_load "$@"
  ;;
*)
  echo "usage: $0 up|down|env|load IMAGE..." >&2
  exit 2
  ;;
esac
