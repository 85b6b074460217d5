#!/usr/bin/env bash
# ctr image rm and containerd's garbage collection remove the snapshots of the snapshotter
# under test and the space behind them.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
test_begin

# The disk space the snapshotter under test uses, in KiB.
snapshotter_usage() {
  local dir
  case $SNAP in
    dadi) dir=$BED_DIR/dadi/root ;;
    *) dir=$BED_DIR/containerd/root/io.containerd.snapshotter.v1.$SNAP ;;
  esac
  du -sk "$dir" | cut -f1
}

empty_usage=$(snapshotter_usage)
ref=$(bed_push_image debian)
pull "$ref"
out=$(bctr run --rm --snapshotter "$SNAP" "$ref" gc-1 /bin/sh -c 'echo data > /root/file; echo ran')
expect_eq "container ran" ran "$out"
[ "$(snapshot_keys | wc -l)" -eq 3 ] || fail "expected 3 committed snapshots, got: $(snapshot_keys)"
full_usage=$(snapshotter_usage)
[ "$full_usage" -gt $((empty_usage + 50000)) ] || fail "only ${full_usage} KiB used after pulling debian"

bctr images rm --sync "$ref" >/dev/null
# The sync removal runs the collector; poll in case a snapshotter removes lazily.
wait_until 30 "snapshots of $SNAP to be collected" snapshot_keys_are "" ||
  fail "snapshots left after image rm: $(snapshot_keys)"
usage_at_most() { [ "$(snapshotter_usage)" -le "$1" ]; }
wait_until 30 "space of $SNAP to be released" usage_at_most $((empty_usage + 1024)) ||
  fail "$(snapshotter_usage) KiB left (empty: $empty_usage KiB)"
log "ok: usage ${empty_usage} KiB -> ${full_usage} KiB -> $(snapshotter_usage) KiB"
bctr content list -q | grep -q . && fail "content left: $(bctr content list -q)"
true
