#!/usr/bin/env bash
# The lazy block path with the busybox image: dadi convert into the bed's registry, ctr image
# pull --snapshotter dadi commits every layer as a remote snapshot (nothing downloaded),
# ctr run prints what it is told through dadi-blockd's device, the tree equals the source
# image's under overlayfs, writes land in the container's upper dir only, and removing the
# image detaches the device.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
# shellcheck source=SCRIPTDIR/../lib/lazy.sh
source "$(dirname "$0")/../lib/lazy.sh"
lazy_begin
ref=$(bed_push_image busybox)
obd=$(lazy_convert "$ref")
layers=$(image_layers_size_remote "$obd")
lazy_pull "$obd"
expect_remote_layers "$obd"
blockd_has_no_devices || fail "a device is attached before any container: $(blockd_devices)"

out=$(lazy_run lazy-echo "$obd" /bin/echo hello from busybox)
expect_eq "echo output" "hello from busybox" "$out"
out=$(lazy_run lazy-cat "$obd" /bin/cat /data/hello-hardlink.txt)
expect_eq "hard-linked file" "hello from dadi" "$out"
# containerd removes the containers' snapshots from the snapshotter in its garbage collection,
# after ctr returned: poll.
wait_until 30 "the device to be detached" blockd_has_no_devices ||
  fail "device left after the containers were removed: $(blockd_devices)"

lazy_check_upper "$obd"
lazy_check_tree busybox "$ref" "$obd"

digests=$(image_layer_digests "$obd")
# shellcheck disable=SC2086 # one digest per word
{ ranges=$(registry_range_gets $digests); served=$(registry_bytes_served $digests); }
log "registry: $ranges range GETs of the layer blobs, $served of $layers bytes served"
[ "$ranges" -gt 0 ] || fail "no range request for the layer blobs in the registry log"

lazy_check_gc "$obd"
