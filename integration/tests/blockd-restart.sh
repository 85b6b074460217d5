#!/usr/bin/env bash
# dadi-blockd killed with SIGKILL while a container runs on its device, then started again
# (as systemd's Restart= would): it takes its state directory back (the dead FUSE mount and the
# device mount left on top are detached), a new container of the same image runs, what the
# first container wrote is still in its upper dir, and removing everything leaves no device.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
# shellcheck source=SCRIPTDIR/../lib/lazy.sh
source "$(dirname "$0")/../lib/lazy.sh"
lazy_begin
ref=$(bed_push_image busybox)
obd=$(lazy_convert "$ref")
lazy_pull "$obd"

first=$(lazy_id first)
lazy_run -d first "$obd" /bin/sh -c 'echo kept-by-first > /kept; while :; do sleep 1; done' >/dev/null
wait_until 30 "$first to run" task_is "$first" RUNNING
read -r upper _ < <(snapshot_dirs "$first")
[ -n "$upper" ] || fail "no upperdir in the mounts of $first"
# shellcheck disable=SC2317 # called through wait_until
kept() { [ "$(cat "$upper/kept" 2>/dev/null)" = kept-by-first ]; }
wait_until 30 "the first container's write" kept || fail "the first container did not write"

kill -KILL "$BED_BLOCKD_PID"
wait_until 10 "dadi-blockd to die" _bed_gone "$BED_BLOCKD_PID" || fail "blockd survived SIGKILL"
BED_BLOCKD_PID=
findmnt -rn -o TARGET | grep -qF -- "$BED_DIR/blockd/state/fuse" ||
  fail "the dead blockd's FUSE mount is gone already: nothing to test"
bed_start_blockd
grep -q 'the FUSE mount of a dadi-blockd that died' "$BED_DIR/logs/dadi-blockd.log" ||
  fail "the restarted blockd did not report the dead FUSE mount it detached"

out=$(lazy_run second "$obd" /bin/cat /data/hello-hardlink.txt)
expect_eq "a new container after the restart" "hello from dadi" "$out"
kept || fail "the first container's write is gone from $upper"
log "ok: blockd restarted after SIGKILL; new containers run; $upper keeps the first one's write"

bctr tasks kill -s SIGKILL "$first" >/dev/null 2>&1 || true
wait_until 30 "$first to stop" task_is "$first" STOPPED || true
bctr tasks delete "$first" >/dev/null 2>&1 || true
bctr containers delete "$first"
lazy_check_gc "$obd"
