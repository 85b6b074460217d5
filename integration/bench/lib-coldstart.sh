# shellcheck shell=bash
# Helpers of integration/bench/coldstart: a network namespace holding the bed's registry behind a
# rate-limited veth pair, and the sequential-read image (the Debian test image plus a 200 MiB
# file). Sourced after lib/bed.sh.

# --- the registry's network namespace -------------------------------------------------------
#
# cs_net_up NAME: creates network namespace cs-<run>-NAME and a veth pair between it and the
# host, in a private /30 of 10.231.0.0/16 not in use on this machine; sets CS_NETNS (namespace),
# CS_VETH_HOST / CS_VETH_NS (link names), CS_HOST_ADDR / CS_NS_ADDR (the host's and the
# namespace's addresses). Names and subnets are unique per run (they embed the pid), so parallel
# runs do not clash. No rate limit yet (cs_net_limit). cs_net_down removes everything again.
cs_net_up() {
  local name=$1 i a b used
  CS_NETNS=cs-$$-$name
  # Link names have at most 15 characters.
  CS_VETH_HOST=cs$$h$name
  CS_VETH_NS=cs$$n$name
  CS_VETH_HOST=${CS_VETH_HOST:0:15}
  CS_VETH_NS=${CS_VETH_NS:0:15}
  used=$(ip -4 -o addr show | awk '{print $4}')
  for ((i = 0; i < 64; i++)); do
    a=$(((($$ + i * 7919) / 64) % 256))
    b=$(((($$ + i * 7919) % 64) * 4))
    grep -q "^10\.231\.$a\.$b/" <<<"$used" || break
  done
  CS_HOST_ADDR=10.231.$a.$((b + 1))
  CS_NS_ADDR=10.231.$a.$((b + 2))
  ip netns add "$CS_NETNS"
  ip link add "$CS_VETH_HOST" type veth peer name "$CS_VETH_NS"
  ip link set "$CS_VETH_NS" netns "$CS_NETNS"
  ip addr add "$CS_HOST_ADDR/30" dev "$CS_VETH_HOST"
  ip link set "$CS_VETH_HOST" up
  ip -n "$CS_NETNS" addr add "$CS_NS_ADDR/30" dev "$CS_VETH_NS"
  ip -n "$CS_NETNS" link set "$CS_VETH_NS" up
  ip -n "$CS_NETNS" link set lo up
  log "netns $CS_NETNS: host $CS_VETH_HOST $CS_HOST_ADDR <-> $CS_VETH_NS $CS_NS_ADDR"
}

# cs_net_limit RATE: a tbf qdisc of RATE (tc syntax: 100mbit, 1gbit) on both ends of the veth
# pair, so both directions (requests, and the registry's answers) are limited. The bucket holds
# 4 ms at RATE (at least 64 KiB, above one GSO packet); packets wait at most 50 ms in the queue.
cs_net_limit() {
  local rate=$1 bits burst
  case $rate in
    *gbit) bits=$((${rate%gbit} * 1000000000)) ;;
    *mbit) bits=$((${rate%mbit} * 1000000)) ;;
    *) die "rate $rate: use NNNmbit or NNNgbit" ;;
  esac
  burst=$((bits / 8 / 250))
  [ "$burst" -ge 65536 ] || burst=65536
  tc qdisc replace dev "$CS_VETH_HOST" root tbf rate "$rate" burst "$burst" latency 50ms
  tc -n "$CS_NETNS" qdisc replace dev "$CS_VETH_NS" root tbf rate "$rate" burst "$burst" latency 50ms
  log "tbf $rate (burst $burst bytes) on $CS_VETH_HOST and $CS_NETNS/$CS_VETH_NS"
}

# cs_net_down: removes the veth pair and the namespace (killing what still runs in it). Safe to
# call twice or before cs_net_up.
cs_net_down() {
  [ -n "${CS_NETNS:-}" ] || return 0
  local pid
  if ip netns list | awk '{print $1}' | grep -qxF "$CS_NETNS"; then
    for pid in $(ip netns pids "$CS_NETNS" 2>/dev/null); do kill -s KILL "$pid" 2>/dev/null || true; done
  fi
  ip link del "$CS_VETH_HOST" 2>/dev/null || true
  ip netns del "$CS_NETNS" 2>/dev/null || true
  CS_NETNS=
}

# cs_net_leaks: namespaces or links of this run left behind; empty if none.
cs_net_leaks() {
  ip netns list | awk '{print $1}' | grep "^cs-$$-" | sed 's/^/netns /' || true
  ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | grep "^cs$$[hn]" | sed 's/^/link /' || true
}

# --- the sequential-read image --------------------------------------------------------------
#
# cs_seq_image DEBIAN_DIR: the Debian test image (OCI layout DEBIAN_DIR/oci, tag debian) plus one
# layer holding /data/seq200.bin, 200 MiB of AES-CTR keystream (incompressible, the same bytes in
# every build: fixed key and IV). Built once into
# $DADI_CACHE_DIR/images/coldstart-seq200-<key>/oci (tag seq200), key = this file and the Debian
# image's directory; prints that directory. Built in a temporary directory renamed on success,
# under a flock; builds of other keys are removed.
CS_SEQ_FILE=/data/seq200.bin
CS_SEQ_BYTES=$((200 * 1048576))

cs_seq_image() {
  local debian=$1 dir
  dir=$DADI_CACHE_DIR/images/coldstart-seq200-$(cache_key "${BASH_SOURCE[0]}" "$debian")
  if [ ! -f "$dir/oci/index.json" ]; then
    with_lock "$DADI_CACHE_DIR/images/.lock-coldstart-seq200" cache_build "$dir" _cs_seq_build "$debian" >&2
  fi
  echo "$dir"
}

# _cs_seq_build DEBIAN_DIR TMP: the image's layout into TMP/oci.
_cs_seq_build() {
  local debian=$1 tmp=$2
  cp -a "$debian/oci" "$tmp/oci"
  mkdir -p "$tmp/layer/data"
  # openssl dies of SIGPIPE when head has enough: not a failure.
  { openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 00000000000000000000000000000000 \
    -in /dev/zero 2>/dev/null || true; } | head -c "$CS_SEQ_BYTES" >"$tmp/layer$CS_SEQ_FILE"
  [ "$(stat -c %s "$tmp/layer$CS_SEQ_FILE")" -eq "$CS_SEQ_BYTES" ] || die "short $CS_SEQ_FILE"
  tar -C "$tmp/layer" --numeric-owner --owner=0 --group=0 --mtime=@0 --sort=name -cf "$tmp/layer.tar" data
  umoci tag --image "$tmp/oci:debian" seq200
  umoci raw add-layer --image "$tmp/oci:seq200" --history.created_by "coldstart: $CS_SEQ_FILE, 200 MiB" "$tmp/layer.tar"
  umoci gc --layout "$tmp/oci"
  rm -rf "$tmp/layer" "$tmp/layer.tar"
}

# --- startup traces -------------------------------------------------------------------------
#
# cs_copy_tag REF TAG: the manifest of REF (host:port/name:tag in the bed's registry) also under
# TAG of the same repository, byte for byte (same digest).
cs_copy_tag() {
  local ref=$1 tag=$2 repo src tmp ct
  repo=${ref#*/}
  src=${repo##*:}
  repo=${repo%:*}
  tmp=$(mktemp -d "$BED_DIR/copy-tag.XXXXXX")
  curl -fsS -H "Accept: $REGISTRY_MANIFEST_ACCEPT" -D "$tmp/headers" -o "$tmp/body" "http://$BED_REGISTRY/v2/$repo/manifests/$src"
  ct=$(awk 'tolower($1) == "content-type:" {print $2}' "$tmp/headers" | tr -d '\r' | tail -n 1)
  curl -fsS -X PUT -H "Content-Type: $ct" --data-binary "@$tmp/body" \
    "http://$BED_REGISTRY/v2/$repo/manifests/$tag" >/dev/null
  rm -rf "$tmp"
}

# cs_forget_lazy_image REF: the node forgets the lazily pulled image REF: every name of it
# removed from containerd (CRI adds REPO@DIGEST and sha256:CONFIG beside the tag), its dadi
# snapshots collected, blockd's devices detached, then dadi-blockd restarted with an empty node
# cache. Containers of REF must be gone already.
cs_forget_lazy_image() {
  local ref=$1
  lazy_image_rm "$ref"
  wait_until 60 "dadi's snapshots of $ref to be collected" _cs_no_dadi_snapshots ||
    die "dadi snapshots left: $(bctr snapshots --snapshotter dadi list)"
  wait_until 60 "blockd's devices to be detached" blockd_has_no_devices ||
    die "blockd devices left: $(blockd_devices)"
  bed_stop_blockd
  rm -rf "$BED_DIR/blockd/cache"
  bed_start_blockd
}

_cs_no_dadi_snapshots() {
  local n
  n=$(bctr snapshots --snapshotter dadi list | awk 'NR > 1' | wc -l) && [ "$n" -eq 0 ]
}

# cs_record_trace OBD CMD...: records the startup trace of CMD on the overlaybd image OBD and
# publishes it as OBD-trace (the same image, the trace annotations on its top layer): pulls OBD
# lazily, runs CMD detached (so blockd's attachment outlives it; its output in the bed), saves
# the trace with `dadi trace save`, copies OBD's manifest to the tag OBD-trace and `dadi trace
# push`es the trace there, then forgets OBD (cs_forget_lazy_image). Sets CS_TRACE_REF (OBD-trace),
# CS_TRACE_RANGES and CS_TRACE_BYTES (the trace's ranges and bytes of the disk). Runs in the
# caller's shell, never in $(...): it restarts blockd, whose pid the bed keeps in a variable.
cs_record_trace() {
  local obd=$1 id out trace=$BED_DIR/startup-trace.json
  shift
  id=$(lazy_id trace-rec)
  lazy_pull "$obd"
  bctr run -d --log-uri "file://$BED_DIR/trace-rec.out" --snapshotter dadi \
    --cgroup "/$BED_NS/trace-rec" "$obd" "$id" "$@" >/dev/null
  wait_until 120 "$id to exit" _cs_task_stopped "$id" || die "the traced command did not exit"
  [ -s "$BED_DIR/trace-rec.out" ] || die "the traced command printed nothing"
  out=$("$DADI_CLI_BIN" trace save --blockd "$BED_BLOCKD_SOCKET" "$trace") || die "dadi trace save failed"
  log "dadi trace save: $out"
  cs_copy_tag "$obd" "${obd##*:}-trace"
  out=$("$DADI_CLI_BIN" trace push --plain-http "$trace" "docker://$obd-trace") || die "dadi trace push failed"
  log "dadi trace push: $obd-trace is $out"
  bctr tasks delete "$id" >/dev/null
  bctr containers delete "$id"
  cs_forget_lazy_image "$obd"
  # shellcheck disable=SC2034 # read by coldstart
  CS_TRACE_REF=$obd-trace
  # shellcheck disable=SC2034
  CS_TRACE_RANGES=$(jq '.ranges | length' "$trace")
  # shellcheck disable=SC2034
  CS_TRACE_BYTES=$(jq '[.ranges[][1]] | add // 0' "$trace")
}

# cs_trace_blobs REF: the digests of the startup trace blob that the top layer of REF names and
# of the packs that trace names (what blockd fetches besides the layers), one per line.
cs_trace_blobs() {
  local repo=${1#*/} trace
  repo=${repo%:*}
  trace=$(registry_manifest "$1" | jq -r '.layers[-1].annotations["containerd.io/snapshot/dadi/startup-trace-digest"] // empty')
  [ -n "$trace" ] || return 0
  echo "$trace"
  curl -fsS "http://$BED_REGISTRY/v2/$repo/blobs/$trace" | jq -r '.packs[]?.digest'
}

_cs_task_stopped() { [ "$(bctr tasks list | awk -v id="$1" '$1 == id {print $3}')" = STOPPED ]; }
