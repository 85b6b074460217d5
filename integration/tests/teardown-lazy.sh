#!/usr/bin/env bash
# A failing test of the lazy block path leaves nothing behind: with a container running on a
# dadi-blockd device (FUSE mount, loop device, ext4 mount), and again after dadi-blockd was
# killed with SIGKILL (its FUSE connection gone, the loop device and ext4 mount still there),
# the bed's teardown leaves no process, mount (fuse.dadi included), loop device, cgroup or
# directory.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
# shellcheck source=SCRIPTDIR/../lib/lazy.sh
source "$(dirname "$0")/../lib/lazy.sh"

# The failing test: prints its bed directory and namespace, attaches a device, then fails.
child() {
  # shellcheck disable=SC2016 # expanded by the child shell
  bash -c '
    source "$1/integration/lib/test.sh"
    source "$1/integration/lib/lazy.sh"
    lazy_begin
    echo "$BED_DIR $BED_NS"
    ref=$(bed_push_image busybox)
    obd=$(lazy_convert "$ref")
    lazy_pull "$obd"
    lazy_run -d c1 "$obd" /bin/sleep 1000 >/dev/null
    has_device() { ! blockd_has_no_devices; }
    wait_until 30 "the device" has_device || exit 3
    if [ "$2" = kill-blockd ]; then
      kill -KILL "$BED_BLOCKD_PID"
      wait_until 10 "blockd to die" _bed_gone "$BED_BLOCKD_PID"
    fi
    echo ready
    exit 1
  ' child "$DADI_REPO_DIR" "$1"
}

# Skips as the lazy tests do when the block path is not built.
[ "$SNAP" = dadi ] || { log "SKIP: the lazy block path concerns dadi only"; exit 77; }
for b in "$DADI_SNAPSHOTTER_BIN" "$DADI_BLOCKD_BIN" "$DADI_CLI_BIN"; do
  [ -x "$b" ] || { log "SKIP: $b is not built"; exit 77; }
done

err=${TMPDIR:-/tmp}/teardown-lazy-child.$$.log
trap 'rm -f "$err"' EXIT # also when a check below fails
for mode in fail kill-blockd; do
  rc=0
  out=$(child "$mode" 2>"$err") || rc=$?
  [ "$rc" -ne 77 ] || { cat "$err" >&2; rm -f "$err"; exit 77; }
  [ "$rc" -ne 0 ] || fail "the failing child passed"
  read -r dir ns <<<"$(head -n 1 <<<"$out")"
  [ "$(tail -n 1 <<<"$out")" = ready ] || { cat "$err" >&2; fail "child ($mode) did not get ready"; }
  rm -f "$err"
  expect_bed_gone "$dir" "$ns"
done
