#!/usr/bin/env bash
# dadi convert of the three-layer Debian test image (OCI layout -> OCI layout) as an
# unprivileged user (nobody, no capabilities, no groups): the result verifies clean against
# the source (dadi verify), a second conversion with an empty dedup database gives the same
# manifest digest, and the same image written as a docker-archive verifies clean too. Needs no
# bed (no containerd, no registry): it runs once per run-tests invocation, with the first
# containerd series of the run, and is skipped for the others.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"

series=${DADI_TEST_SERIES:-${DADI_CONTAINERD:-1.6}}
if [ "${DADI_CONTAINERD:-1.6}" != "${series%% *}" ]; then
  log "SKIP: independent of containerd, runs with containerd ${series%% *} only"
  exit 77
fi
dadi_bin=$DADI_CLI_BIN
[ -x "$dadi_bin" ] || { log "SKIP: $dadi_bin is not built"; exit 77; }

src=$("$DADI_REPO_DIR/integration/images/build" debian | awk '$1 == "debian" {print $2}')/oci
[ -f "$src/index.json" ] || fail "no Debian test image at $src"

# Everything the unprivileged user touches is a copy in a directory it owns (the image cache
# is root's, 0700).
work=$(mktemp -d "${TMPDIR:-/tmp}/dadi-convert-debian.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
cp "$dadi_bin" "$work/bin/dadi"
cp -r "$src" "$work/src"
chown -R 65534:65534 "$work"
unpriv() {
  env -i PATH=/usr/bin:/bin HOME="$work" \
    setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all --bounding-set=-all -- "$@"
}
# shellcheck disable=SC2016 # awk's $2
expect_eq "capabilities of the unprivileged user" 0000000000000000 \
  "$(unpriv awk '/^CapEff:/ {print $2}' /proc/self/status)"

# convert NAME DST: converts as nobody with its own dedup database, prints the summary's digest.
convert() {
  local start=$SECONDS out
  out=$(unpriv "$work/bin/dadi" convert "oci:$work/src:debian" "$2" --db "$work/$1.db" --json) ||
    fail "dadi convert to $2 failed as nobody"
  log "convert $1: $out ($((SECONDS - start)) s)"
  jq -r .digest <<<"$out"
}
first=$(convert first "oci:$work/out:debian-obd")
expect_eq "files of the output owned by nobody" "" \
  "$(find "$work/out" "$work/first.db" ! -user 65534 -print)"

manifest=$(jq -r '.manifests[0].digest' "$work/out/index.json")
expect_eq "tagged manifest" "$first" "$manifest"
layers=$(jq '.layers | length' "$work/out/blobs/sha256/${manifest#sha256:}")
expect_eq "converted layers" 3 "$layers"
obd=$(jq '[.layers[] | select(.annotations["containerd.io/snapshot/overlaybd/blob-digest"] == .digest)] | length' \
  "$work/out/blobs/sha256/${manifest#sha256:}")
expect_eq "layers with the overlaybd annotations" 3 "$obd"

verify=$(unpriv "$work/bin/dadi" verify "oci:$work/out:debian-obd" --source "oci:$work/src:debian") ||
  fail "dadi verify reported differences: $verify"
log "verify: $verify"
[[ $verify == "OK: 3 layers, "*" entries identical" ]] || fail "unexpected verify output: $verify"

second=$(convert second "oci:$work/out2:debian-obd")
expect_eq "manifest digest of a second conversion" "$first" "$second"
cmp -s <(cd "$work/out/blobs" && find . -type f | sort | xargs sha256sum) \
  <(cd "$work/out2/blobs" && find . -type f | sort | xargs sha256sum) ||
  fail "the two conversions wrote different blobs"

archived=$(convert first "docker-archive:$work/debian-obd.tar:dadi/debian:obd")
expect_eq "manifest digest written to a docker-archive" "$first" "$archived"
verify=$(unpriv "$work/bin/dadi" verify "docker-archive:$work/debian-obd.tar" \
  --source "oci:$work/src:debian") || fail "dadi verify of the docker-archive: $verify"
[[ $verify == "OK: 3 layers, "*" entries identical" ]] || fail "unexpected verify output: $verify"
log "docker-archive verify: $verify"
log "PASS"
