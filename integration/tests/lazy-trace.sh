#!/usr/bin/env bash
# Trace-based startup prefetch, end to end: the Debian image converted and pulled lazily, python3
# started once on it while blockd records what the device serves; `dadi trace save` writes that
# startup trace, `dadi trace push` publishes it next to the image (annotations on the top layer).
# Then the node forgets everything (containers and image removed, blockd restarted with an empty
# node cache), the traced image is pulled again and python3 runs again: blockd fetched the trace
# blob and its startup packs, logged its prefetch and its read-ahead of the traced files, and the
# registry served about as many bytes (layers and packs) as in the first run (the trace does not
# balloon fetches), in far fewer range GETs.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
# shellcheck source=SCRIPTDIR/../lib/lazy.sh
source "$(dirname "$0")/../lib/lazy.sh"
lazy_begin
ref=$(bed_push_image debian)
obd=$(lazy_convert "$ref")
PY=(python3 -c 'import json, sqlite3; print(1)')
digests=$(registry_manifest "$obd" | jq -r '.layers[].digest')
layers=$(image_layers_size_remote "$obd")

# --- record ------------------------------------------------------------------------------------
REGISTRY_LOG_FROM=$(($(registry_log_mark) + 1))
lazy_pull "$obd"
rec=$(lazy_id trace-rec)
# Detached, so the container (and with it blockd's attachment) outlives python3 until the trace
# is saved; its output goes to a file.
bctr run -d --log-uri "file://$BED_DIR/trace-rec.out" --snapshotter dadi \
  --cgroup "/$BED_NS/trace-rec" "$obd" "$rec" "${PY[@]}" >/dev/null
wait_until 60 "$rec to exit" task_is "$rec" STOPPED || fail "python3 did not exit"
expect_eq "python3 output (recording)" 1 "$(cat "$BED_DIR/trace-rec.out")"
wait_registry_idle || fail "the registry is still busy"
# shellcheck disable=SC2086 # one digest per word
first=$(registry_bytes_served $digests)
# shellcheck disable=SC2086 # one digest per word
first_gets=$(registry_range_gets $digests)
log "recording run: $first of $layers bytes of the layer blobs served in $first_gets range GETs"
[ "$first" -gt 0 ] || fail "nothing of the layer blobs served in the recording run"

trace=$BED_DIR/trace.json
out=$("$DADI_CLI_BIN" trace save --blockd "$BED_BLOCKD_SOCKET" "$trace") || fail "dadi trace save failed"
log "dadi trace save: $out"
ranges=$(jq '.ranges | length' "$trace")
traced_bytes=$(jq '[.ranges[][1]] | add // 0' "$trace")
[ "$ranges" -gt 0 ] || fail "the trace has no ranges"
grep -qF "$ranges ranges, $traced_bytes bytes of the disk" <<<"$out" ||
  fail "dadi trace save printed '$out', not $ranges ranges and $traced_bytes bytes"
# blockd named the layer bytes behind the ranges and the files that hold them: python3 itself.
[ "$(jq '.stored | length' "$trace")" -gt 0 ] || fail "the saved trace names no stored ranges"
jq -r '.files[][0]' "$trace" | grep -q '^usr/bin/python3' ||
  fail "the saved trace's files do not include usr/bin/python3*: $(jq -c '[.files[][0]]' "$trace" | head -c 500)"
pushed=$("$DADI_CLI_BIN" trace push --plain-http "$trace" "docker://$obd") || fail "dadi trace push failed"
log "dadi trace push: $pushed"
top=$(registry_manifest "$obd" | jq -c '.layers[-1].annotations')
trace_digest=$(jq -r '.["containerd.io/snapshot/dadi/startup-trace-digest"]' <<<"$top")
repo=${obd#*/}
repo=${repo%:*}
pushed_trace=$(curl -fsS "http://$BED_REGISTRY/v2/$repo/blobs/$trace_digest") ||
  fail "the registry has no trace blob $trace_digest"
expect_eq "trace size annotation on the top layer" "$(printf '%s' "$pushed_trace" | wc -c)" \
  "$(jq -r '.["containerd.io/snapshot/dadi/startup-trace-size"]' <<<"$top")"
expect_eq "the pushed trace's ranges (sha256)" "$(jq -c .ranges "$trace" | sha256sum)" \
  "$(jq -c .ranges <<<"$pushed_trace" | sha256sum)"
packs=$(jq -r '.packs[].digest' <<<"$pushed_trace")
[ -n "$packs" ] || fail "the pushed trace names no startup packs"
expect_eq "bytes in the packs" "$(jq '[.stored[][2]] | add' "$trace")" "$(jq '[.packs[].size] | add' <<<"$pushed_trace")"
again=$("$DADI_CLI_BIN" trace push --plain-http "$trace" "docker://$obd")
expect_eq "manifest digest of a second push" "$pushed" "$again"

# --- forget everything on the node -------------------------------------------------------------
bctr tasks delete "$rec" >/dev/null
bctr containers delete "$rec"
lazy_check_gc "$obd"
bed_stop_blockd
rm -rf "$BED_DIR/blockd/cache"
bed_start_blockd

# --- replay ------------------------------------------------------------------------------------
REGISTRY_LOG_FROM=$(($(registry_log_mark) + 1))
lazy_pull "$obd"
out=$(lazy_run trace-run "$obd" "${PY[@]}")
expect_eq "python3 output (with the trace)" 1 "$out"
blockd_log=$BED_DIR/logs/dadi-blockd.log
# shellcheck disable=SC2317 # called through wait_until
prefetched() { grep -q "startup trace $trace_digest" "$blockd_log"; }
wait_until 60 "blockd's startup trace line" prefetched ||
  fail "no 'startup trace $trace_digest' line in blockd's log: $(grep -i trace "$blockd_log" | tail -n 5)"
log "blockd: $(grep "startup trace $trace_digest" "$blockd_log" | tail -n 1)"
# The pull already had the device attached, and the trace prefetched, before the container.
grep -q "ahead of its first container (startup trace $trace_digest)" \
  "$BED_DIR/logs/dadi-snapshotter.log" ||
  fail "the pull did not attach ahead: $(grep -i ahead "$BED_DIR/logs/dadi-snapshotter.log")"
wait_registry_idle || fail "the registry is still busy"
[ -n "$(registry_blob_gets "$trace_digest")" ] || fail "the registry served no GET of the trace blob $trace_digest"
for p in $packs; do
  [ -n "$(registry_blob_gets "$p")" ] || fail "the registry served no GET of the startup pack $p"
done
grep "startup trace $trace_digest" "$blockd_log" | grep -qE '[( ][1-9][0-9]* from packs' ||
  fail "blockd filled nothing from the packs"
grep "startup trace $trace_digest" "$blockd_log" | grep -qE 'bytes of [1-9][0-9]* files read ahead' ||
  fail "blockd read no traced file ahead"
# shellcheck disable=SC2086 # one digest per word
second=$(registry_bytes_served $digests $packs)
# shellcheck disable=SC2086 # one digest per word
second_gets=$(registry_range_gets $digests)
log "run with the trace: $second bytes of the layer blobs and packs served, $second_gets range GETs (recording run: $first in $first_gets; trace: $ranges ranges, $traced_bytes bytes of the disk)"
# The trace's blocks come in packs (and multi-range GETs), not one GET per read.
[ $((3 * second_gets)) -le "$first_gets" ] ||
  fail "the trace took $second_gets range GETs, not a third of the recording run's $first_gets: no multi-range requests?"
[ "$second" -gt 0 ] || fail "nothing of the layer blobs served with the trace"
[ "$second" -le $((2 * first)) ] ||
  fail "the trace ballooned the fetches: $second bytes served, more than twice the $first of the recording run"
[ $((2 * second)) -ge "$first" ] ||
  fail "only $second bytes served with the trace, less than half the $first of the recording run: was the cache really empty?"

lazy_check_gc "$obd"
