#!/usr/bin/env bash
# A test that fails (and one that is killed) with containers running, a snapshot view mounted
# and a loop device bound still leaves nothing behind: no process, mount, loop device, cgroup
# or directory of its bed.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"

# The failing test: prints its bed directory and namespace, then fails (or waits to be killed).
child() {
  local mode=$1
  # shellcheck disable=SC2016 # expanded by the child shell
  exec bash -c '
    source "$1/integration/lib/test.sh"
    test_begin
    echo "$BED_DIR $BED_NS $$"
    ref=$(bed_push_image busybox)
    pull "$ref"
    bctr run -d --snapshotter "$SNAP" "$ref" c1 /bin/sleep 1000 >/dev/null
    bctr run -d --snapshotter overlayfs "$ref" c2 /bin/sleep 1000 >/dev/null
    tree_dir=$BED_DIR/mnt/view
    snapshot_view "$SNAP" v1 "$(image_chain_id "$ref")"
    snapshot_mount "$SNAP" v1 "$tree_dir"
    truncate -s 8M "$BED_DIR/disk.img"
    losetup -f "$BED_DIR/disk.img"
    echo ready
    [ "$2" = fail ] && exit 1
    sleep 1000
  ' child "$DADI_REPO_DIR" "$mode"
}

if [ "$SNAP" = dadi ] && [ ! -x "$DADI_SNAPSHOTTER_BIN" ]; then
  log "SKIP: $DADI_SNAPSHOTTER_BIN is not built"
  exit 77
fi

# Whatever fails below: no log of a child left outside any bed, and no killed child (in a session
# of its own, out of the runner's reach) left running with its bed.
pid=
fifo=
on_exit() {
  if [ -n "$pid" ] && ! _bed_gone "$pid"; then
    kill -TERM -- -"$pid" 2>/dev/null || true
    wait_until 60 "the killed child to exit" _bed_gone "$pid" || true
  fi
  rm -f "${TMPDIR:-/tmp}/teardown-child.$$.log" "${TMPDIR:-/tmp}/teardown-killed.$$.log" ${fifo:+"$fifo"}
}
trap on_exit EXIT

out=$(child fail 2>"${TMPDIR:-/tmp}/teardown-child.$$.log") && fail "the failing child passed"
read -r dir ns _ <<<"$(head -n 1 <<<"$out")"
[ "$(tail -n 1 <<<"$out")" = ready ] || { cat "${TMPDIR:-/tmp}/teardown-child.$$.log" >&2; fail "child did not get ready"; }
rm -f "${TMPDIR:-/tmp}/teardown-child.$$.log"
expect_bed_gone "$dir" "$ns"

# Killed from outside (as the runner's timeout does): TERM to the whole process group.
fifo=$(mktemp -u "${TMPDIR:-/tmp}/teardown-fifo.XXXXXX")
mkfifo "$fifo"
# setsid --fork: always a new session, so the child leads its own process group. In the
# background: opening the fifo for writing blocks until we open it for reading.
setsid --fork bash -c "$(declare -f child); child hang" >"$fifo" 2>"${TMPDIR:-/tmp}/teardown-killed.$$.log" &
exec 8<"$fifo"
rm -f "$fifo"
read -r dir ns pid <&8
read -r line <&8
[ "$line" = ready ] || fail "killed child did not get ready"
[ "$(ps -o pgid= -p "$pid" | tr -d ' ')" = "$pid" ] || fail "child $pid does not lead its process group"
kill -TERM -- -"$pid"
# The child holds the fifo until it has torn its bed down: wait for end of file.
timeout 60 cat <&8 >/dev/null || fail "killed child did not finish within 60 s"
exec 8<&-
wait_until 10 "the killed child to exit" _bed_gone "$pid" || fail "child did not exit"
rm -f "${TMPDIR:-/tmp}/teardown-killed.$$.log"
expect_bed_gone "$dir" "$ns"
