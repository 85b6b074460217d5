#!/usr/bin/env bash
# Restarting dadi-snapshotter (SIGTERM, then SIGKILL) while a container runs does not disturb
# the container, and afterwards every snapshot is still listed and new containers start.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
[ "$SNAP" = dadi ] || { log "SKIP: restart concerns dadi-snapshotter only"; exit 77; }
test_begin
ref=$(bed_push_image debian)
pull "$ref"
bctr run -d --snapshotter "$SNAP" "$ref" long-1 /bin/sh -c \
  'echo before > /root/state; while :; do sleep 1; done' >/dev/null
wait_until 30 "long-1 to run" task_is long-1 RUNNING
before=$(snapshot_keys)

for sig in TERM KILL; do
  bed_stop_snapshotter "$sig"
  expect_eq "long-1 after dadi-snapshotter got SIG$sig" RUNNING "$(task_status long-1)"
  out=$(bctr tasks exec --exec-id "x-$sig" long-1 /bin/cat /root/state /etc/debian_version)
  expect_eq "files of long-1 with dadi-snapshotter down" "$(printf 'before\n12-dadi')" "$out"
  bed_start_snapshotter
  # containerd's gRPC client reconnects to the proxy with a backoff (1 s, growing): until it
  # has, calls fail with "unavailable". Poll instead of expecting the first call to succeed.
  wait_until 60 "containerd to reach the restarted dadi-snapshotter" \
    snapshot_keys_are "$before" || true
  expect_eq "snapshots listed after restart ($sig)" "$before" "$(snapshot_keys)"
  out=$(bctr tasks exec --exec-id "y-$sig" long-1 /bin/sh -c 'echo after >> /root/state; cat /root/state')
  expect_eq "long-1 writes after restart" "$(printf 'before\nafter')" "$out"
  bctr tasks exec --exec-id "z-$sig" long-1 /bin/sh -c 'sed -i /after/d /root/state'
  out=$(bctr run --rm --snapshotter "$SNAP" "$ref" "new-$sig" python3 -c 'print("new")')
  expect_eq "new container after restart ($sig)" new "$out"
done
bctr tasks kill -s SIGKILL long-1
wait_until 30 "long-1 to stop" task_is long-1 STOPPED
bctr tasks delete long-1
bctr containers delete long-1
