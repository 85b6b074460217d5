#!/usr/bin/env bash
# The whole file tree of each test image (names, types, modes, owners, sizes, content hashes,
# symlink targets, xattrs, hard links) as the snapshotter under test mounts it equals the tree
# containerd's built-in overlayfs snapshotter mounts.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
test_begin
reference=${TREE_REFERENCE:-overlayfs}
[ "$SNAP" != "$reference" ] || reference=native
for image in busybox debian; do
  ref=$(bed_push_image "$image")
  tree_of_image "$reference" "$ref" "$BED_DIR/$image.$reference.tree"
  tree_of_image "$SNAP" "$ref" "$BED_DIR/$image.$SNAP.tree"
  if ! diff -u "$BED_DIR/$image.$reference.tree" "$BED_DIR/$image.$SNAP.tree" >"$BED_DIR/$image.diff"; then
    head -n 40 "$BED_DIR/$image.diff" >&2
    fail "$image: trees differ between $reference and $SNAP"
  fi
  log "ok: $image: $(wc -l <"$BED_DIR/$image.$SNAP.tree") entries equal under $reference and $SNAP"
done
