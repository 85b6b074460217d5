# shellcheck shell=bash
# Sourced by every test in integration/tests/. A test is a bash script that exits 0 (pass),
# 77 (skipped: what it needs is not built) or anything else (fail). It starts its own bed with
# test_begin; the bed is torn down when the script exits, and leaks fail the test.
#
#   DADI_CONTAINERD   containerd series the test runs against (1.6 by default)
#   TEST_SNAPSHOTTER  the snapshotter under test, "dadi" by default; "overlayfs" checks the
#                     tests themselves against containerd's built-in snapshotter

set -euo pipefail
[ -z "${DADI_TRACE:-}" ] || { PS4="+ \$(date +%T.%N) "; set -x; }
# shellcheck source=SCRIPTDIR/bed.sh
source "$(dirname "${BASH_SOURCE[0]}")/bed.sh"
# shellcheck source=SCRIPTDIR/tree.sh
source "$(dirname "${BASH_SOURCE[0]}")/tree.sh"

TEST_SNAPSHOTTER=${TEST_SNAPSHOTTER:-dadi}
SNAP=$TEST_SNAPSHOTTER

test_begin() {
  if [ "$SNAP" = dadi ] && [ ! -x "$DADI_SNAPSHOTTER_BIN" ]; then
    log "SKIP: $DADI_SNAPSHOTTER_BIN is not built"
    exit 77
  fi
  bed_start "${DADI_CONTAINERD:-1.6}"
}

fail() { log "FAIL: $*"; exit 1; }

# expect_bed_gone DIR NS: nothing is left of the bed in DIR with namespace NS (its teardown
# ran): no directory, process, mount (fuse.dadi included), loop device or cgroup.
expect_bed_gone() {
  local dir=$1 ns=$2
  if [ -z "$dir" ] || [ -z "$ns" ]; then fail "expect_bed_gone: no bed directory or namespace"; fi
  [ ! -e "$dir" ] || fail "$dir still exists"
  ! pgrep -f -- "$dir" >/dev/null || fail "processes left: $(pgrep -af -- "$dir")"
  ! findmnt -rn -o TARGET | grep -qF -- "$dir" || fail "mounts left under $dir"
  ! grep -F -- "$dir" /proc/self/mountinfo | grep -q ' - fuse\.dadi ' || fail "fuse.dadi mount left under $dir"
  ! losetup -n -l -O BACK-FILE | grep -qF -- "$dir" || fail "loop device left for $dir"
  ! compgen -G "/sys/fs/cgroup/*/$ns" >/dev/null || fail "cgroups of $ns left"
  log "ok: nothing of $dir left"
}

# expect_eq WHAT EXPECTED ACTUAL
expect_eq() {
  [ "$2" = "$3" ] || fail "$1: expected '$2', got '$3'"
  log "ok: $1 = '$3'"
}

# pull REF: ctr image pull with the snapshotter under test.
pull() { bctr images pull --plain-http --snapshotter "$SNAP" "$1" >/dev/null; }

# task_status ID: RUNNING, STOPPED, ... or nothing.
task_status() { bctr tasks list | awk -v id="$1" '$1 == id {print $3}'; }

# task_is ID STATUS: true when task ID has STATUS (for wait_until).
task_is() { [ "$(task_status "$1")" = "$2" ]; }

# snapshot_keys: the keys the snapshotter under test lists, sorted.
snapshot_keys() { bctr snapshots --snapshotter "$SNAP" list | awk 'NR > 1 {print $1}' | sort; }

# snapshot_keys_are EXPECTED: true when snapshot_keys succeeds and prints EXPECTED.
snapshot_keys_are() {
  local keys
  keys=$(snapshot_keys 2>/dev/null) && [ "$keys" = "$1" ]
}
