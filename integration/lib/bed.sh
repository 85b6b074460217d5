# shellcheck shell=bash
# The hermetic test bed: one scratch directory holding a docker-registry, a private containerd
# of a chosen series (its own root, state, sockets and config, with dadi-snapshotter as proxy
# plugin "dadi") and dadi-snapshotter itself. Everything listens on loopback ports or unix
# sockets inside the scratch directory. bed_stop tears it all down (tasks, shims, daemons,
# mounts, loop devices, cgroups) and is installed as an EXIT trap by bed_start.
#
# After bed_start these are set:
#   BED_DIR        the scratch directory
#   BED_SERIES     containerd series (1.6, 1.7, 2.1)
#   BED_NS         the containerd namespace the bed uses (unique, so cgroups never clash)
#   BED_REGISTRY   host:port of the registry (plain HTTP)
#   BED_DADI       1 when dadi-snapshotter runs, 0 when its binary is not built yet
#   BED_BLOCKD     1 when dadi-blockd runs (bed_start with BED_WITH_BLOCKD=1), else 0
#   BED_BLOCKD_SOCKET  its gRPC socket (when BED_BLOCKD=1)
#   BED_PAUSE_IMAGE    the CRI sandbox image in the bed's registry (bed_start with BED_WITH_CRI=1)
# and bctr runs this bed's ctr against this bed's containerd, in namespace $BED_NS (or
# $BED_CTR_NS: k8s.io for images CRI pulled).

# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=SCRIPTDIR/containerd.sh
source "$(dirname "${BASH_SOURCE[0]}")/containerd.sh"

DADI_SNAPSHOTTER_BIN=${DADI_SNAPSHOTTER_BIN:-$DADI_BUILD_DIR/snapshotter/dadi-snapshotter}
DADI_BLOCKD_BIN=${DADI_BLOCKD_BIN:-$DADI_BUILD_DIR/blockstore/blockd/dadi-blockd}
DADI_CLI_BIN=${DADI_CLI_BIN:-$DADI_BUILD_DIR/cli/dadi}

bctr() {
  "$BED_CONTAINERD_DIR/usr/bin/ctr" --address "$BED_DIR/containerd/containerd.sock" \
    --namespace "${BED_CTR_NS:-$BED_NS}" "$@"
}

_bed_pids=()

_bed_write_registry_config() {
  cat >"$BED_DIR/registry/config.yml" <<YML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $BED_DIR/registry/data
  delete:
    enabled: true
http:
  addr: $BED_REGISTRY
YML
}

_bed_arch() {
  case $(uname -m) in x86_64) echo amd64 ;; aarch64) echo arm64 ;; *) uname -m ;; esac
}

_bed_write_containerd_config() {
  local c=$BED_DIR/containerd
  if [ "${BED_SERIES%%.*}" = 1 ]; then
    local cri='"io.containerd.grpc.v1.cri", '
    [ "${BED_WITH_CRI:-0}" != 1 ] || cri=
    cat >"$c/config.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = [${cri}"io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp"]
$([ -n "$cri" ] || _bed_cri_config_v2)

[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = "$c/debug.sock"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"

[proxy_plugins.dadi]
  type = "snapshot"
  address = "$BED_DIR/dadi/dadi.sock"
TOML
  else
    local cri='"io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", '
    cri+='"io.containerd.podsandbox.controller.v1.podsandbox", "io.containerd.sandbox.controller.v1.shim", '
    [ "${BED_WITH_CRI:-0}" != 1 ] || cri=
    cat >"$c/config.toml" <<TOML
version = 3
root = "$c/root"
state = "$c/state"
disabled_plugins = [${cri}"io.containerd.nri.v1.nri", "io.containerd.tracing.processor.v1.otlp"]
$([ -n "$cri" ] || _bed_cri_config_v3)

[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[debug]
  address = "$c/debug.sock"
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"

# containerd 2.x pulls through its transfer service, which unpacks only for the snapshotters
# listed here.
[plugins."io.containerd.transfer.v1.local"]
$(for s in overlayfs native dadi; do
    printf '  [[plugins."io.containerd.transfer.v1.local".unpack_config]]\n'
    printf '    platform = "linux/%s"\n    snapshotter = "%s"\n' "$(_bed_arch)" "$s"
  done)

[proxy_plugins.dadi]
  type = "snapshot"
  address = "$BED_DIR/dadi/dadi.sock"
TOML
  fi
}

# The CRI plugin (BED_WITH_CRI=1): images for snapshotter dadi with the layers' annotations
# passed as labels (as the kubelet pulls), the bed's registry over plain HTTP (hosts directory),
# the sandbox image from the bed's registry ($BED_PAUSE_IMAGE, images/build pause), the
# streaming server on a free port, empty CNI directories inside the bed (pods use the host's
# network: no CNI plugin is called), OOM score adjustments no lower than containerd's own (runc
# cannot set the sandbox's -998 without CAP_SYS_RESOURCE, which this machine's root lacks). CRI
# keeps its images in the namespace k8s.io.
_bed_cri_dirs() {
  local c=$BED_DIR/containerd
  mkdir -p "$c/certs.d/$BED_REGISTRY" "$c/cni/bin" "$c/cni/conf"
  cat >"$c/certs.d/$BED_REGISTRY/hosts.toml" <<HOSTS
server = "http://$BED_REGISTRY"
[host."http://$BED_REGISTRY"]
  capabilities = ["pull", "resolve"]
HOSTS
}

# containerd 1.x, config version 2.
_bed_cri_config_v2() {
  local c=$BED_DIR/containerd
  _bed_cri_dirs
  cat <<TOML
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  sandbox_image = "$BED_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "dadi"
    disable_snapshot_annotations = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$c/cni/bin"
    conf_dir = "$c/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$c/certs.d"
TOML
}

# containerd 2.x, config version 3: the same keys, split over the images and runtime plugins.
_bed_cri_config_v3() {
  local c=$BED_DIR/containerd
  _bed_cri_dirs
  cat <<TOML
[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "dadi"
  disable_snapshot_annotations = false
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "$BED_PAUSE_IMAGE"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "$c/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = true
[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["$c/cni/bin"]
  conf_dir = "$c/cni/conf"
TOML
}

# BED_REGISTRY_NETNS=NAME BED_REGISTRY_HOST=ADDR (opt-in, both set by the caller, who owns the
# namespace): the registry runs inside network namespace NAME (ip netns exec) and listens on ADDR,
# an address of NAME the host routes to (integration/bench/coldstart: a veth pair with a rate
# limit). By default it listens on 127.0.0.1 of the host.
bed_start_registry() {
  mkdir -p "$BED_DIR/registry/data"
  BED_REGISTRY=${BED_REGISTRY_HOST:-127.0.0.1}:$(free_port)
  _bed_write_registry_config
  local in_netns=()
  [ -z "${BED_REGISTRY_NETNS:-}" ] || in_netns=(ip netns exec "$BED_REGISTRY_NETNS")
  "${in_netns[@]}" docker-registry serve "$BED_DIR/registry/config.yml" >"$BED_DIR/logs/registry.log" 2>&1 &
  BED_REGISTRY_PID=$!
  disown "$BED_REGISTRY_PID"
  wait_until 30 "registry on $BED_REGISTRY" curl -fsS "http://$BED_REGISTRY/v2/" ||
    { tail "$BED_DIR/logs/registry.log" >&2; return 1; }
}

# _bed_start_daemon NAME PIDVAR SOCKET CMD...: starts CMD in the background (log
# $BED_DIR/logs/NAME.log, appended), disowned, its pid in variable PIDVAR; waits up to 30 s for it
# to accept on SOCKET (removed first), or tails its log and fails when it does not (or dies).
_bed_start_daemon() {
  local name=$1 pidvar=$2 socket=$3
  shift 3
  rm -f "$socket"
  "$@" >>"$BED_DIR/logs/$name.log" 2>&1 &
  printf -v "$pidvar" %s "$!"
  disown "$!"
  wait_until 30 "$name to accept on its socket" _bed_serving "${!pidvar}" "$socket" ||
    { tail "$BED_DIR/logs/$name.log" >&2; return 1; }
}

# bed_start_snapshotter: starts (or restarts) dadi-snapshotter on $BED_DIR/dadi/dadi.sock.
bed_start_snapshotter() {
  if [ ! -x "$DADI_SNAPSHOTTER_BIN" ]; then
    BED_DADI=0
    log "dadi-snapshotter not built ($DADI_SNAPSHOTTER_BIN); the bed runs without it"
    return 0
  fi
  mkdir -p "$BED_DIR/dadi/root"
  chmod 0700 "$BED_DIR/dadi"
  # Remote layers go to this bed's dadi-blockd, or nowhere: never to a blockd of the host.
  printf 'blockd_address = "%s"\n' "${BED_BLOCKD_SOCKET:-}" >"$BED_DIR/dadi/config.toml"
  _bed_start_daemon dadi-snapshotter BED_SNAPSHOTTER_PID "$BED_DIR/dadi/dadi.sock" \
    "$DADI_SNAPSHOTTER_BIN" --config "$BED_DIR/dadi/config.toml" --root "$BED_DIR/dadi/root" \
    --address "$BED_DIR/dadi/dadi.sock" --log-level "${DADI_LOG_LEVEL:-info}" || return 1
  BED_DADI=1
}

# bed_stop_snapshotter [SIGNAL]: stops dadi-snapshotter (TERM by default) and waits for it.
bed_stop_snapshotter() {
  local sig=${1:-TERM}
  [ -n "${BED_SNAPSHOTTER_PID:-}" ] || return 0
  _bed_kill_wait "$BED_SNAPSHOTTER_PID" "$sig" 20
  BED_SNAPSHOTTER_PID=
}

bed_start_containerd() {
  local c=$BED_DIR/containerd runc
  mkdir -p "$c/root" "$c/state" "$c/opt"
  _bed_write_containerd_config
  runc=$(runc_path)
  # The shim and runc are found through PATH: this series' shim first, then the chosen runc.
  PATH="$BED_CONTAINERD_DIR/usr/bin:$(dirname "$runc"):$PATH" \
    "$BED_CONTAINERD_DIR/usr/bin/containerd" --config "$c/config.toml" \
    >"$BED_DIR/logs/containerd.log" 2>&1 &
  BED_CONTAINERD_PID=$!
  disown "$BED_CONTAINERD_PID"
  wait_until 60 "containerd $BED_SERIES" bctr version ||
    { tail -n 30 "$BED_DIR/logs/containerd.log" >&2; return 1; }
}

# bed_start_blockd: starts dadi-blockd with its socket, state and cache inside the bed, the
# bed's registry reached over plain HTTP, and short registry timeouts (a test fails fast).
bed_start_blockd() {
  local b=$BED_DIR/blockd
  mkdir -p "$b/state" "$b/cache"
  chmod 0700 "$b"
  : >"$b/blockd.toml"
  BED_BLOCKD_SOCKET=$b/blockd.sock
  # shellcheck disable=SC2086 # DADI_BLOCKD_ARGS is split into flags on purpose
  _bed_start_daemon dadi-blockd BED_BLOCKD_PID "$BED_BLOCKD_SOCKET" \
    "$DADI_BLOCKD_BIN" --config "$b/blockd.toml" --socket "$BED_BLOCKD_SOCKET" \
    --state-dir "$b/state" --cache-dir "$b/cache" --plain-http "$BED_REGISTRY" \
    --max-attempts 3 --request-timeout-ms 20000 --log-level "${DADI_LOG_LEVEL:-info}" \
    ${DADI_BLOCKD_ARGS:-} || return 1
  BED_BLOCKD=1
}

# bed_stop_blockd [SIGNAL]: stops dadi-blockd (TERM: it detaches every device and unmounts its
# FUSE mount) and waits for it.
bed_stop_blockd() {
  local sig=${1:-TERM}
  [ -n "${BED_BLOCKD_PID:-}" ] || return 0
  _bed_kill_wait "$BED_BLOCKD_PID" "$sig" 30
  BED_BLOCKD_PID=
}

# bed_start SERIES: the whole bed. Installs bed_stop as the EXIT trap. With BED_WITH_BLOCKD=1,
# dadi-blockd runs too and dadi-snapshotter serves remote layers through it.
bed_start() {
  BED_SERIES=$1
  BED_CONTAINERD_DIR=$(containerd_dir "$BED_SERIES")
  BED_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dadi-bed.XXXXXX")
  BED_NS=dadi-$(basename "$BED_DIR" | cut -d. -f2 | tr '[:upper:]' '[:lower:]')
  mkdir -p "$BED_DIR/logs"
  trap 'bed_stop' EXIT
  trap 'exit 130' INT TERM
  log "bed $BED_DIR: containerd $(basename "$BED_CONTAINERD_DIR"), namespace $BED_NS"
  bed_start_registry
  BED_PAUSE_IMAGE=
  if [ "${BED_WITH_CRI:-0}" = 1 ]; then BED_PAUSE_IMAGE=$(bed_push_image pause); fi
  BED_BLOCKD=0
  BED_BLOCKD_SOCKET=
  if [ "${BED_WITH_BLOCKD:-0}" = 1 ]; then bed_start_blockd; fi
  bed_start_snapshotter
  bed_start_containerd
  export BED_DIR BED_SERIES BED_NS BED_REGISTRY BED_DADI BED_CONTAINERD_DIR BED_BLOCKD BED_BLOCKD_SOCKET \
    BED_PAUSE_IMAGE
}

# _bed_kill_wait PID SIGNAL TIMEOUT: signals PID, waits up to TIMEOUT s, then SIGKILLs it.
_bed_kill_wait() {
  local pid=$1 sig=$2 timeout=$3
  kill -0 "$pid" 2>/dev/null || return 0
  kill -s "$sig" "$pid" 2>/dev/null || true
  if ! wait_until "$timeout" "pid $pid to exit" _bed_gone "$pid"; then
    kill -s KILL "$pid" 2>/dev/null || true
    wait_until 10 "pid $pid to die" _bed_gone "$pid" || true
  fi
}

# _bed_serving PID SOCKET: true when SOCKET accepts; when PID has died, returns 255, which makes
# wait_until fail at once.
_bed_serving() {
  unix_socket_accepts "$2" && return 0
  _bed_gone "$1" && { log "pid $1 exited"; return 255; }
  return 1
}

# A zombie counts as gone (the daemons are disowned; bash reaps them when it notices).
_bed_gone() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$state" = Z ]
}

# Processes whose command line mentions the scratch directory (shims, leftovers), not ours.
_bed_stray_pids() {
  local pid
  for pid in $(pgrep -f -- "$BED_DIR" || true); do
    [ "$pid" != $$ ] && [ "$pid" != "$BASHPID" ] && echo "$pid"
  done
}

_bed_no_strays() { [ -z "$(_bed_stray_pids)" ]; }

_bed_kill_tasks() {
  local ns task
  for ns in $(bctr namespaces list -q 2>/dev/null); do
    for task in $(bctr -n "$ns" task list -q 2>/dev/null); do
      "$BED_CONTAINERD_DIR/usr/bin/ctr" --address "$BED_DIR/containerd/containerd.sock" -n "$ns" \
        task kill -a -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
  done
}

# Kills every process left in this bed's cgroups (namespace $BED_NS) and removes the cgroups.
_bed_clean_cgroups() {
  local d pid
  for d in /sys/fs/cgroup/*/"$BED_NS" /sys/fs/cgroup/"$BED_NS"; do
    [ -d "$d" ] || continue
    cat "$d"/*/cgroup.procs "$d"/cgroup.procs 2>/dev/null | while read -r pid; do
      kill -s KILL "$pid" 2>/dev/null || true
    done
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
}

_bed_unmount_all() {
  local m
  for m in $(findmnt -rn -o TARGET | grep -F -- "$BED_DIR" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
}

_bed_detach_loops() {
  local dev file
  while read -r dev file; do
    case $file in "$BED_DIR"/*) losetup -d "$dev" 2>/dev/null || true ;; esac
  done < <(losetup -n -l -O NAME,BACK-FILE 2>/dev/null || true)
}

# runc keeps a container's state in /run/containerd/runc/<namespace>/<id> (the shim's default
# root) until its task is deleted; tasks killed with their shims leave it: remove what names
# this bed (after every process of the bed is gone).
_bed_clean_runc_state() {
  local f
  for f in /run/containerd/runc/*/*/state.json; do
    if [ -f "$f" ] && grep -qF -- "$BED_DIR/" "$f"; then rm -rf -- "$(dirname "$f")"; fi
  done
  rmdir "/run/containerd/runc/$BED_NS" 2>/dev/null || true
}

# bed_leaks: prints what the bed left behind (processes, mounts, loop devices); empty if none.
bed_leaks() {
  local p
  for p in $(_bed_stray_pids); do echo "process $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"; done
  findmnt -rn -o TARGET | grep -F -- "$BED_DIR" | sed 's/^/mount /' || true
  # blockd's FUSE mount (fuse.dadi), also where findmnt would not show it.
  awk -v d="$BED_DIR" '$0 ~ / - fuse\.dadi / && index($5, d) == 1 {print "fuse.dadi mount " $5}' \
    /proc/self/mountinfo || true
  losetup -n -l -O NAME,BACK-FILE 2>/dev/null | grep -F -- "$BED_DIR" | sed 's/^/loop /' || true
}

bed_stop() {
  local rc=$? p
  set +e
  trap - EXIT
  [ -n "${BED_DIR:-}" ] && [ -d "$BED_DIR" ] || return $rc
  if [ -n "${BED_KEEP:-}" ]; then log "BED_KEEP set: leaving $BED_DIR running"; return $rc; fi
  if [ -n "${BED_CONTAINERD_PID:-}" ] && kill -0 "$BED_CONTAINERD_PID" 2>/dev/null; then
    _bed_kill_tasks
  fi
  _bed_clean_cgroups
  [ -z "${BED_CONTAINERD_PID:-}" ] || _bed_kill_wait "$BED_CONTAINERD_PID" TERM 20
  for p in $(_bed_stray_pids); do kill -s KILL "$p" 2>/dev/null || true; done
  _bed_clean_cgroups
  bed_stop_snapshotter TERM
  bed_stop_blockd TERM
  # The registry keeps nothing worth a graceful stop (and ignores SIGTERM without a drain timeout).
  [ -z "${BED_REGISTRY_PID:-}" ] || _bed_kill_wait "$BED_REGISTRY_PID" KILL 10
  _bed_unmount_all
  _bed_detach_loops
  wait_until 10 "stray processes of $BED_DIR to exit" _bed_no_strays
  _bed_clean_runc_state
  local leaks
  leaks=$(bed_leaks)
  if [ -n "$leaks" ]; then
    log "bed $BED_DIR leaked:"
    printf '%s\n' "$leaks" >&2
    [ $rc -ne 0 ] || rc=1
  else
    rm -rf --one-file-system "$BED_DIR"
  fi
  return $rc
}

# bed_push_image NAME: builds (or takes from the cache) image NAME, pushes it to the bed's
# registry and prints its reference.
bed_push_image() {
  local name=$1 dir ref
  dir=$("$DADI_REPO_DIR/integration/images/build" "$name" | awk -v n="$name" '$1 == n {print $2}')
  [ -n "$dir" ] || die "no image $name"
  ref=$BED_REGISTRY/dadi/$name:latest
  skopeo copy --quiet --dest-tls-verify=false "oci:$dir/oci:$name" "docker://$ref" >&2
  echo "$ref"
}
