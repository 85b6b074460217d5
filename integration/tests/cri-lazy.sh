#!/usr/bin/env bash
# The Kubernetes path on every series: containerd's CRI plugin (snapshotter dadi, snapshot
# annotations on) driven by lib/cri.py as the kubelet would. The busybox and Debian images,
# converted by dadi convert, are pulled through CRI as remote snapshots (nothing of the layers
# downloaded); a host-network pod runs a container of each; their output and exit codes are
# CRI's; a write through ExecSync lands in the container's upper dir only; the registry served
# the layers in range GETs, far fewer bytes than the image; the tree on the device equals the
# source's under overlayfs; removing containers, pod and images through CRI detaches every
# device and leaves no snapshot.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
# shellcheck source=SCRIPTDIR/../lib/lazy.sh
source "$(dirname "$0")/../lib/lazy.sh"
LAZY_PULL=cri lazy_begin
log "CRI: $(bcri version)"
busybox_src=$(bed_push_image busybox)
busybox=$(lazy_convert "$busybox_src")
debian_src=$(bed_push_image debian)
debian=$(lazy_convert "$debian_src")
mark=$(registry_log_mark)

for ref in "$busybox" "$debian"; do
  bcri pull "$ref" >/dev/null
  bcri image "$ref" >/dev/null || fail "CRI does not list $ref after PullImage"
  expect_remote_layers "$ref"
done
blockd_has_no_devices || fail "a device is attached before any container: $(blockd_devices)"

pod=$(bcri runp cri-lazy)
log "pod $pod (host network)"
# busybox: prints a hard-linked file of the image, then stays up for the exec below.
bb=$(bcri create "$pod" bb "$busybox" -- /bin/sh -c 'cat /data/hello-hardlink.txt; exec sleep 100000')
bcri start "$bb"
# Debian: python3 with two C extension modules, from three overlaybd layers; exits.
py=$(bcri create "$pod" py "$debian" -- python3 -c 'import json, sqlite3; print(json.dumps(sqlite3.sqlite_version_info[0]))')
bcri start "$py"
wait_until 60 "python3 to exit" cri_is "$py" EXITED || fail "python3 container: $(bcri status "$py")"
expect_eq "python3 exit code" 0 "$(bcri status "$py" | jq .exit_code)"
expect_eq "python3 output (CRI log)" 3 "$(bcri logs "$py")"
wait_until 30 "busybox to print" cri_is "$bb" RUNNING
# shellcheck disable=SC2317 # called through wait_until
bb_printed() { [ -n "$(bcri logs "$bb")" ]; }
wait_until 30 "busybox's output" bb_printed || true
expect_eq "busybox output (CRI log)" "hello from dadi" "$(bcri logs "$bb")"

# The registry: range GETs only for the layer blobs, and for Debian far fewer bytes than its
# layers (measured with blockd's defaults: 8-9% to import json and sqlite3; the bound leaves
# room for the kernel's readahead, whose reach depends on timing).
for ref in "$busybox" "$debian"; do
  digests=$(image_layer_digests "$ref")
  # shellcheck disable=SC2086 # one digest per word
  { ranges=$(REGISTRY_LOG_FROM=$((mark + 1)) registry_range_gets $digests)
    served=$(REGISTRY_LOG_FROM=$((mark + 1)) registry_bytes_served $digests)
    whole=$(REGISTRY_LOG_FROM=$((mark + 1)) registry_blob_gets $digests | grep -vc '" 206 ' || true); }
  layers=$(image_layers_size "$ref")
  log "registry: $ref: $ranges range GETs, $served of $layers bytes of the layer blobs served"
  [ "$ranges" -gt 0 ] || fail "no range request for the layer blobs of $ref"
  [ "$whole" -eq 0 ] || fail "$whole whole-blob GETs of the layers of $ref"
  if [ "$ref" = "$debian" ] && [ $((served * 100)) -ge $((layers * 15)) ]; then
    fail "$served of $layers bytes of $debian fetched: not lazy (>= 15%)"
  fi
done

# A write through ExecSync lands in the busybox container's upper dir, in no other snapshot and
# not on the block devices.
bcri exec "$bb" -- /bin/sh -c 'echo written-by-exec > /written'
expect_eq "the write, read back through ExecSync" written-by-exec "$(bcri exec "$bb" -- /bin/cat /written)"
read -r upper lowest < <(snapshot_dirs "$bb")
case $upper in "$BED_DIR/dadi/root/snapshots/"*/fs) ;; *) fail "upper dir '$upper' is not a snapshot of dadi's root" ;; esac
case $lowest in "$BED_DIR/blockd/state/mnt/"*) ;; *) fail "lowest lowerdir '$lowest' is not a blockd mount" ;; esac
expect_eq "/written in the upper dir" written-by-exec "$(cat "$upper/written")"
found=$(find "$BED_DIR/dadi/root/snapshots" "$BED_DIR/blockd/state/mnt" -name written -print)
expect_eq "every /written under dadi's snapshots and blockd's mounts" "$upper/written" "$found"

lazy_check_tree busybox "$busybox_src" "$busybox"
lazy_check_tree debian "$debian_src" "$debian"

# Teardown through CRI: the containers and the pod, then the images (the pause image too).
for c in "$bb" "$py"; do bcri stop "$c"; bcri rm "$c"; done
bcri stopp "$pod"
bcri rmp "$pod"
for ref in "$busybox" "$debian" "$BED_PAUSE_IMAGE"; do
  bcri rmi "$ref"
  ! bcri image "$ref" >/dev/null || fail "CRI still lists $ref after RemoveImage"
done
expect_node_clean RemoveImage
log "ok: containers, pod and images removed through CRI: no snapshot, device mount, loop device or FUSE file left"
