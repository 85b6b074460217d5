# shellcheck shell=bash
# The lazy block path: dadi convert into the bed's registry, a pull that commits overlaybd
# layers as remote snapshots (nothing of the layers downloaded), and what the registry served.
# Sourced by tests after lib/test.sh, and by the demo.

# lazy_begin: test_begin with dadi-blockd in the bed (and, where ctr cannot pull lazily, the
# CRI plugin; see lazy_pull_method). LAZY_PULL=cri lazy_begin: the CRI plugin on every series
# (the CRI tests). SKIP (77) when a program of the block path is not built.
lazy_begin() {
  [ "$SNAP" = dadi ] || { log "SKIP: the lazy block path concerns dadi only"; exit 77; }
  local b
  for b in "$DADI_SNAPSHOTTER_BIN" "$DADI_BLOCKD_BIN" "$DADI_CLI_BIN"; do
    [ -x "$b" ] || { log "SKIP: $b is not built"; exit 77; }
  done
  LAZY_PULL=${LAZY_PULL:-$(lazy_pull_method "${DADI_CONTAINERD:-1.6}")}
  if [ "$LAZY_PULL" = cri ]; then
    if ! cri_client_ready; then
      log "SKIP: CRI calls need python3-grpcio, python3-protobuf and protoc (deps/debian-packages.txt)"
      exit 77
    fi
    BED_WITH_BLOCKD=1 BED_WITH_CRI=1 test_begin
    # CRI keeps its images (and so their snapshots) in the namespace k8s.io.
    export BED_CTR_NS=k8s.io
  else
    BED_WITH_BLOCKD=1 test_begin
  fi
  log "lazy pulls through $LAZY_PULL"
}

# lazy_pull_method SERIES: how an overlaybd image is pulled lazily on containerd SERIES.
#   ctr  `ctr image pull --snapshotter dadi` passes each layer's containerd.io/snapshot/*
#        annotations as labels to Prepare (containerd 2.x: transfer service)
#   cri  ctr of this series passes no labels (it unpacks with Image.Unpack, and no flag changes
#        that; see docs/operations.md, "What reaches the snapshotter"): the image is pulled
#        through the CRI plugin (lib/cri.py pull), as the kubelet does, into namespace k8s.io
lazy_pull_method() {
  case $1 in
    1.6 | 1.7) echo cri ;;
    *) echo ctr ;;
  esac
}

# cri_client_ready: true when bcri can run (python3's grpc and protobuf modules, protoc).
cri_client_ready() {
  /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null && command -v protoc >/dev/null
}

# bcri COMMAND ARGS...: lib/cri.py (a tiny crictl) against this bed's CRI plugin; its generated
# code, pod configs and container logs in $BED_DIR/cri, pods' cgroups inside the bed's namespace.
bcri() {
  CRI_DIR=$BED_DIR/cri CRI_CGROUP_PARENT=/$BED_NS /usr/bin/python3 \
    "$DADI_REPO_DIR/integration/lib/cri.py" "$BED_DIR/containerd/containerd.sock" "$@"
}

# cri_state ID: CREATED, RUNNING, EXITED or UNKNOWN (CRI's state of container ID).
cri_state() { bcri status "$1" | jq -r .state; }

# cri_is ID STATE: true when container ID has STATE (for wait_until).
cri_is() { [ "$(cri_state "$1")" = "$2" ]; }

# snapshot_dirs KEY: "UPPERDIR LOWEST_LOWERDIR" of dadi's active snapshot KEY (a container's
# rootfs: CRI names it after the container id), from the mount the snapshotter returns.
snapshot_dirs() {
  local cmd opts
  cmd=$(bctr snapshots --snapshotter dadi mounts /rootfs "$1")
  opts=${cmd##* -o }
  echo "$(tr ',' '\n' <<<"$opts" | sed -n 's/^upperdir=//p')" \
    "$(tr ',' '\n' <<<"$opts" | sed -n 's/^lowerdir=//p' | tr ':' '\n' | tail -n 1)"
}

# lazy_pull REF: pulls the overlaybd image REF lazily for snapshotter dadi.
lazy_pull() {
  if [ "${LAZY_PULL:-ctr}" = cri ]; then
    bcri pull "$1" >/dev/null
  else
    bctr images pull --plain-http --snapshotter dadi "$1" >/dev/null
  fi
}

# lazy_id NAME: a container id unique to this bed (CRI's namespace k8s.io is shared by every
# bed, and runc keeps its state per namespace and id).
lazy_id() { echo "$1-${BED_NS#dadi-}"; }

# lazy_run [-d] NAME REF CMD...: ctr run --snapshotter dadi (--rm unless -d), container
# lazy_id NAME, its cgroup inside the bed's namespace whatever namespace ctr uses.
lazy_run() {
  local mode=--rm
  if [ "$1" = -d ]; then mode=-d; shift; fi
  local name=$1 ref=$2
  shift 2
  bctr run "$mode" --snapshotter dadi --cgroup "/$BED_NS/$name" "$ref" "$(lazy_id "$name")" "$@"
}

# lazy_convert REF: dadi convert docker://REF docker://REF-obd (plain HTTP to the bed's
# registry, dedup database and work directory inside the bed; extra flags from
# DADI_CONVERT_ARGS); prints the new reference.
# SKIP (77) when the build's dadi has no per-layer converter yet.
lazy_convert() {
  local ref=$1 obd=$1-obd out
  mkdir -p "$BED_DIR/convert"
  # shellcheck disable=SC2086 # DADI_CONVERT_ARGS is split into flags on purpose
  if ! out=$(TMPDIR=$BED_DIR/convert "$DADI_CLI_BIN" convert --plain-http ${DADI_CONVERT_ARGS:-} \
    --db "$BED_DIR/convert/convert.db" "docker://$ref" "docker://$obd" 2>&1); then
    printf '%s\n' "$out" | tail -n 20 >&2
    if grep -q "no per-layer converter" <<<"$out"; then
      log "SKIP: $DADI_CLI_BIN has no per-layer converter"
      exit 77
    fi
    fail "dadi convert $ref failed"
  fi
  log "dadi convert: $(tail -n 1 <<<"$out")"
  echo "$obd"
}

# The Accept header of a manifest GET: OCI and Docker manifests and indexes.
REGISTRY_MANIFEST_ACCEPT="application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json"
REGISTRY_MANIFEST_ACCEPT+=",application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json"

# registry_manifest REF: the image manifest of REF (host:port/name:tag) from the bed's registry;
# of an index, the manifest for this machine's platform.
registry_manifest() {
  local ref=$1 repo tag accept=$REGISTRY_MANIFEST_ACCEPT m
  repo=${ref#*/}
  tag=${repo##*:}
  repo=${repo%:*}
  m=$(curl -fsS -H "Accept: $accept" "http://$BED_REGISTRY/v2/$repo/manifests/$tag")
  if [ "$(jq -r '.manifests != null' <<<"$m")" = true ]; then
    m=$(curl -fsS -H "Accept: $accept" "http://$BED_REGISTRY/v2/$repo/manifests/$(jq -r --arg a "$(_bed_arch)" \
      '[.manifests[] | select(.platform.architecture == $a)][0].digest' <<<"$m")")
  fi
  printf '%s\n' "$m"
}

# image_layers_size_remote REF: total size of the layer blobs of REF in the registry.
image_layers_size_remote() { registry_manifest "$1" | jq '[.layers[].size] | add'; }

# image_manifest REF: the manifest of REF (as containerd stored it) on stdout.
image_manifest() {
  bctr content get "$(bctr images list | awk -v r="$1" '$1 == r {print $3}')"
}

# image_layer_digests REF / image_layers_size REF: the layer blobs of REF and their total size.
image_layer_digests() { image_manifest "$1" | jq -r '.layers[].digest'; }
image_layers_size() { image_manifest "$1" | jq '[.layers[].size] | add'; }

# image_chain_ids REF: chain id of every layer of REF, bottom first (snapshot keys).
image_chain_ids() {
  local config
  config=$(image_manifest "$1" | jq -r .config.digest)
  bctr content get "$config" | python3 -c '
import hashlib, json, sys
chain = None
for d in json.load(sys.stdin)["rootfs"]["diff_ids"]:
    chain = d if chain is None else "sha256:" + hashlib.sha256((chain + " " + d).encode()).hexdigest()
    print(chain)'
}

# expect_remote_layers REF: every layer of REF is a remote (blockd) snapshot of dadi, and
# containerd holds none of the layer blobs (nothing was downloaded).
expect_remote_layers() {
  local ref=$1 chain digest n=0
  for chain in $(image_chain_ids "$ref"); do
    bctr snapshots --snapshotter dadi info "$chain" |
      jq -e '.Labels["containerd.io/snapshot/dadi/remote-repository"]' >/dev/null ||
      fail "layer snapshot $chain of $ref is not remote: $(bctr snapshots --snapshotter dadi info "$chain")"
    n=$((n + 1))
  done
  for digest in $(image_layer_digests "$ref"); do
    ! bctr content list -q | grep -qxF "$digest" || fail "containerd downloaded layer $digest"
  done
  log "ok: $n layer(s) of $ref are remote snapshots; no layer blob in containerd's content store"
}

# registry_log_mark: the registry log's line count now; REGISTRY_LOG_FROM=$((mark + 1)) makes
# the functions below count only later requests.
registry_log_mark() { wc -l <"$BED_DIR/logs/registry.log"; }

# registry_blob_gets DIGEST...: access-log lines (from line REGISTRY_LOG_FROM, 1 by default, to
# line REGISTRY_LOG_TO, the last by default) of GETs of those blobs (combined log format:
# "GET /v2/<name>/blobs/<digest> HTTP/1.1" STATUS BYTES).
registry_blob_gets() {
  local d pattern=""
  for d in "$@"; do pattern+="${pattern:+|}/blobs/$d "; done
  sed -n "${REGISTRY_LOG_FROM:-1},${REGISTRY_LOG_TO:-\$}p" "$BED_DIR/logs/registry.log" |
    grep -E "\"GET [^\"]*($pattern)" || true
}

# registry_bytes_served DIGEST...: bytes the registry sent for GETs of those blobs.
registry_bytes_served() {
  registry_blob_gets "$@" | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^HTTP\/[0-9.]+"$/) { s += $(i + 2); break } } END { print s + 0 }'
}

# registry_range_gets DIGEST...: how many of those GETs were answered 206 (range requests).
registry_range_gets() {
  registry_blob_gets "$@" | awk '{ for (i = 1; i < NF; i++) if ($i ~ /^HTTP\/[0-9.]+"$/) { if ($(i + 1) == 206) n++; break } } END { print n + 0 }'
}

# wait_registry_idle: waits (up to 120 s) until the registry log has not grown for 2 s (blockd's
# readahead and a startup trace's prefetch are over); fails when it keeps growing.
wait_registry_idle() {
  _registry_idle_lines=-1
  _registry_idle_since=0
  # wait_until runs the check in this shell, so the state above persists between polls.
  wait_until 120 "the registry to be idle" _registry_idle
}
_registry_idle() {
  local n
  n=$(registry_log_mark)
  if [ "$n" != "$_registry_idle_lines" ]; then
    _registry_idle_lines=$n
    _registry_idle_since=$SECONDS
    return 1
  fi
  [ $((SECONDS - _registry_idle_since)) -ge 2 ]
}

# blockd_devices: loop devices bound to files of this bed's blockd, and its ext4 mounts.
blockd_devices() {
  losetup -n -l -O NAME,BACK-FILE 2>/dev/null | grep -F -- "$BED_DIR/blockd/" || true
  findmnt -rn -o TARGET,FSTYPE | grep -F -- "$BED_DIR/blockd/state/mnt" || true
}

blockd_has_no_devices() { [ -z "$(blockd_devices)" ]; }

# lazy_check_upper REF: a container of REF writes a new file and changes one of the image: both
# land in its upper dir; the block device's mount (the lowest lowerdir) is unchanged.
lazy_check_upper() {
  local ref=$1 id upper lowest
  id=$(lazy_id lazy-upper)
  lazy_run -d lazy-upper "$ref" /bin/sh -c \
    'echo written-by-container > /etc/lazy-written; echo lazy:x:4242:4242::/:/bin/sh >> /etc/passwd; while :; do sleep 1; done' >/dev/null
  wait_until 30 "$id to run" task_is "$id" RUNNING
  read -r upper lowest < <(snapshot_dirs "$id")
  if [ -z "$upper" ] || [ -z "$lowest" ]; then
    fail "no upperdir/lowerdir in the mounts of $id: $(bctr snapshots --snapshotter dadi mounts /rootfs "$id")"
  fi
  case $lowest in "$BED_DIR/blockd/state/mnt/"*) ;; *) fail "lowest lowerdir $lowest is not a blockd mount" ;; esac
  # shellcheck disable=SC2317 # called through wait_until
  upper_has() { grep -q "$2" "$upper/$1" 2>/dev/null; }
  wait_until 30 "the container's writes in $upper" upper_has etc/passwd '^lazy:' ||
    fail "container writes not in the upper dir $upper"
  expect_eq "new file in the upper dir" written-by-container "$(cat "$upper/etc/lazy-written")"
  [ ! -e "$lowest/etc/lazy-written" ] || fail "new file on the block device mount"
  ! grep -q '^lazy:' "$lowest/etc/passwd" || fail "changed file changed on the block device mount"
  grep -q '^root:' "$lowest/etc/passwd" || fail "the image's /etc/passwd is missing on the device"
  log "ok: writes of $id in $upper only; $lowest unchanged"
  bctr tasks kill -s SIGKILL "$id"
  wait_until 30 "$id to stop" task_is "$id" STOPPED
  bctr tasks delete "$id" >/dev/null
  bctr containers delete "$id"
}

# lazy_check_tree NAME SRC OBD: the tree of OBD under dadi (on blockd's device) equals the tree
# of SRC under overlayfs, but for the ext4 file system's own /lost+found.
lazy_check_tree() {
  local name=$1 src=$2 obd=$3 d=$BED_DIR/trees
  mkdir -p "$d"
  tree_of_image overlayfs "$src" "$d/$name.overlayfs"
  tree_of_image dadi "$obd" "$d/$name.dadi.raw" nopull
  grep -v '^/lost+found ' "$d/$name.dadi.raw" >"$d/$name.dadi"
  if ! diff -u "$d/$name.overlayfs" "$d/$name.dadi" >"$d/$name.diff"; then
    head -n 40 "$d/$name.diff" >&2
    fail "$name: the tree on the block device differs from the source image under overlayfs"
  fi
  log "ok: $name: $(wc -l <"$d/$name.dadi") entries equal (overlayfs of the source, dadi of the overlaybd image)"
}

# lazy_image_rm REF: ctr image rm --sync of every name of the image REF (CRI adds REPO@DIGEST
# and sha256:CONFIG beside the tag); fails when there is no image REF.
lazy_image_rm() {
  local digest name
  digest=$(bctr images list | awk -v r="$1" '$1 == r {print $3}')
  [ -n "$digest" ] || die "lazy_image_rm: no image $1"
  for name in $(bctr images list | awk -v d="$digest" 'NR > 1 && $3 == d {print $1}'); do
    bctr images rm --sync "$name" >/dev/null
  done
}

# lazy_check_gc REF: after ctr image rm --sync, dadi lists no snapshot, and no loop device,
# ext4 mount or FUSE file of blockd is left.
lazy_check_gc() {
  lazy_image_rm "$1"
  expect_node_clean "image rm"
  log "ok: image removed: no dadi snapshot, loop device, device mount or FUSE file left"
}

# expect_node_clean AFTER: once everything was removed (AFTER names how), dadi lists no snapshot
# and blockd has no device (loop device, ext4 mount) or FUSE file left; fails otherwise.
expect_node_clean() {
  wait_until 60 "every dadi snapshot to be collected" snapshot_keys_are "" ||
    fail "snapshots left after $1: $(snapshot_keys)"
  wait_until 30 "blockd devices to be detached" blockd_has_no_devices ||
    fail "devices left after $1: $(blockd_devices)"
  [ -z "$(ls -A "$BED_DIR/blockd/state/fuse" 2>/dev/null)" ] ||
    fail "FUSE files left after $1: $(ls -A "$BED_DIR/blockd/state/fuse")"
}
