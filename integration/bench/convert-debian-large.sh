# shellcheck shell=bash
# Builds the large Debian image of integration/bench/convert, the kind of input of the issue's
# overlaybd comparison (three layers; 284 MB of gzip, 212 MB in the issue): layer 1 debootstrap
# --variant=minbase bookworm; layer 2 apt-get install python3 build-essential; layer 3 apt-get
# install default-jre-headless git curl. From the Debian archive of this machine's apt sources.
#
#   bash convert-debian-large.sh OUT_DIR     (root; writes OUT_DIR/oci, tag "debian-large")
#
# Not executable on purpose: run-all runs every executable of integration/bench. The caller
# caches OUT_DIR (key: this file, the mirror, the suite).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=SCRIPTDIR/../lib/common.sh
source "$here/../lib/common.sh"

suite=bookworm
work=$1
oci=$work/oci
bundle=$work/bundle
r=$bundle/rootfs
mirror=$(debian_mirror_uri)
mkdir -p "$work"
umoci init --layout "$oci"
umoci new --image "$oci:debian-large"
umoci unpack --image "$oci:debian-large" "$bundle"

log "debian-large layer 1: debootstrap --variant=minbase $suite from $mirror"
debootstrap --variant=minbase "$suite" "$r" "$mirror" >"$work/debootstrap.log" 2>&1 ||
  { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
find "$r/dev" -mindepth 1 -delete
rm -f "$r/etc/resolv.conf" "$r/etc/hostname"
rm -rf "$r/var/cache/apt/archives/"*.deb "$r/var/lib/apt/lists/"* "$r/var/log/"*.log
umoci repack --refresh-bundle --image "$oci:debian-large" \
  --history.created_by "debootstrap --variant=minbase $suite" "$bundle"

# apt_layer N PACKAGES...: installs PACKAGES in the rootfs (private mount namespace, so /proc
# and /dev go away with it) and commits the change as layer N.
apt_layer() {
  local n=$1
  shift
  log "debian-large layer $n: apt-get install $*"
  cp /etc/resolv.conf "$r/etc/resolv.conf"
  # shellcheck disable=SC2016 # expanded by the inner shell
  unshare --mount --propagation private -- /bin/sh -euc '
    r=$1
    shift
    mount -t proc proc "$r/proc"
    mount --rbind /dev "$r/dev"
    chroot "$r" /usr/bin/env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 \
      /bin/sh -euc "apt-get update -q && apt-get install -y -q --no-install-recommends $* && apt-get clean"
  ' sh "$r" "$@" >"$work/apt-$n.log" 2>&1 || { tail -n 30 "$work/apt-$n.log" >&2; die "apt-get install failed"; }
  rm -f "$r/etc/resolv.conf"
  rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin "$r/var/log/"*.log "$r/var/log/apt/"*
  find "$r" -name __pycache__ -prune -exec rm -rf {} +
  umoci repack --refresh-bundle --image "$oci:debian-large" \
    --history.created_by "apt-get install $*" "$bundle"
}
apt_layer 2 python3 build-essential
apt_layer 3 default-jre-headless git curl
umoci config --image "$oci:debian-large" \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd /bin/bash
umoci gc --layout "$oci"
rm -rf "$bundle"
