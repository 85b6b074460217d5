#!/usr/bin/env bash
# The lazy block path with the three-layer Debian image: dadi convert, a lazy pull, python3
# runs on a stack of three overlaybd layers, far fewer bytes than the image are fetched from
# the registry (range requests), layer 3's whiteouts show, the tree equals the source image's
# under overlayfs, writes land in the upper dir only, removing the image detaches the device.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
# shellcheck source=SCRIPTDIR/../lib/lazy.sh
source "$(dirname "$0")/../lib/lazy.sh"
lazy_begin
ref=$(bed_push_image debian)
obd=$(lazy_convert "$ref")
layers=$(image_layers_size_remote "$obd")
mark=$(registry_log_mark)
lazy_pull "$obd"
expect_remote_layers "$obd"

out=$(lazy_run lazy-py "$obd" python3 -c 'print(1)')
expect_eq "python3 output" 1 "$out"
digests=$(image_layer_digests "$obd")
# shellcheck disable=SC2086 # one digest per word
{ ranges=$(registry_range_gets $digests); served=$(registry_bytes_served $digests); }
log "registry: $ranges range GETs, $served of $layers bytes of the layer blobs served to run python3"
[ "$ranges" -gt 0 ] || fail "no range request for the layer blobs in the registry log"
[ "$served" -gt 0 ] || fail "nothing of the layer blobs served"
# blockd's defaults (32 KiB units, 128 KiB device readahead, readahead only after 256 KiB read
# in a row): about 7% of the layers' bytes; the issue's bound is 10%.
[ $((served * 10)) -lt "$layers" ] ||
  fail "$served of $layers bytes fetched to start python3: not lazy enough (>= 10%)"
tail -n +"$((mark + 1))" "$BED_DIR/logs/registry.log" | grep -E '"GET [^"]*/blobs/' |
  grep -v ' 206 ' | grep -vF "$(image_manifest "$obd" | jq -r .config.digest)" >&2 &&
  fail "whole-blob GETs of layers after the pull (above)"

# shellcheck disable=SC2016 # expanded by the container's shell
out=$(lazy_run lazy-sh "$obd" /bin/sh -c \
  'for p in /etc/motd /var/mail; do [ -e "$p" ] && echo "present $p"; done; ls /usr/share/doc; readlink /etc/issue; cat /etc/debian_version')
expect_eq "layer 3 on the block device" "$(printf 'README.dadi\nissue.net\n12-dadi')" "$out"

lazy_check_upper "$obd"
lazy_check_tree debian "$ref" "$obd"
lazy_check_gc "$obd"
