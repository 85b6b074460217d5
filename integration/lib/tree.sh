# shellcheck shell=bash
# Comparing the file tree of an image as two snapshotters present it. Needs a started bed.

# image_chain_id REF: the chain id of REF's top layer (the key of its committed snapshot),
# computed from the image config in containerd's content store.
image_chain_id() {
  local ref=$1 manifest config
  manifest=$(bctr images list | awk -v r="$ref" '$1 == r {print $3}')
  [ -n "$manifest" ] || { log "image $ref not in containerd"; return 1; }
  config=$(bctr content get "$manifest" | jq -r .config.digest)
  bctr content get "$config" | python3 -c '
import hashlib, json, sys
ids = json.load(sys.stdin)["rootfs"]["diff_ids"]
chain = ids[0]
for d in ids[1:]:
    chain = "sha256:" + hashlib.sha256((chain + " " + d).encode()).hexdigest()
print(chain)'
}

# snapshot_view SNAPSHOTTER KEY PARENT: a View of PARENT that containerd's garbage collector
# keeps. ctr cannot label a view when creating it and holds no lease past its own exit, so a
# collection triggered by an earlier removal can take the view before the label is on: then
# the label fails with not found and we try again.
snapshot_view() {
  local snapshotter=$1 key=$2 parent=$3 try
  for try in 1 2 3 4 5; do
    bctr snapshots --snapshotter "$snapshotter" view "$key" "$parent" >/dev/null
    if bctr snapshots --snapshotter "$snapshotter" label "$key" containerd.io/gc.root=dadi-tests \
      >/dev/null 2>&1; then
      return 0
    fi
    log "view $key was collected before it was labelled (try $try)"
    bctr snapshots --snapshotter "$snapshotter" rm "$key" >/dev/null 2>&1 || true
  done
  return 1
}

# snapshot_mount SNAPSHOTTER KEY TARGET: mounts the snapshot KEY at TARGET using the mounts
# the snapshotter returns.
snapshot_mount() {
  local snapshotter=$1 key=$2 target=$3 cmd
  mkdir -p "$target"
  # ctr prints the mount as a command line: "mount -t TYPE SOURCE TARGET -o OPTIONS".
  cmd=$(bctr snapshots --snapshotter "$snapshotter" mounts "$target" "$key")
  case $cmd in "mount -t "*) ;; *) log "unexpected mounts of $key: $cmd"; return 1 ;; esac
  [ "$(printf '%s\n' "$cmd" | wc -l)" -eq 1 ] || { log "several mounts for $key: $cmd"; return 1; }
  # shellcheck disable=SC2086 # the line is split into words on purpose; no globbing in it
  (set -f; $cmd)
}

# tree_of_image SNAPSHOTTER REF OUT [nopull]: pulls REF with SNAPSHOTTER (unless nopull: the
# caller pulled it), mounts a view of its top snapshot read-only inside the bed and writes the
# tree listing to OUT.
tree_of_image() {
  local snapshotter=$1 ref=$2 out=$3 chain key mnt
  [ "${4:-}" = nopull ] || bctr images pull --plain-http --snapshotter "$snapshotter" "$ref" >/dev/null
  chain=$(image_chain_id "$ref")
  key=tree-view-$snapshotter-$RANDOM
  mnt=$BED_DIR/mnt/$key
  snapshot_view "$snapshotter" "$key" "$chain"
  snapshot_mount "$snapshotter" "$key" "$mnt"
  python3 "$DADI_REPO_DIR/integration/lib/tree-walk.py" "$mnt" >"$out"
  umount "$mnt"
  rmdir "$mnt"
  bctr snapshots --snapshotter "$snapshotter" rm "$key"
}
