# shellcheck shell=bash
# Helpers shared by every integration script: logging, cache paths, the Debian mirror, free
# loopback ports and polling with a timeout. Sourced, never executed.

DADI_REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DADI_CACHE_DIR=${DADI_CACHE_DIR:-/var/cache/dadi}
DADI_BUILD_DIR=${DADI_BUILD_DIR:-$DADI_REPO_DIR/build}
export DADI_REPO_DIR DADI_CACHE_DIR DADI_BUILD_DIR

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The URI of Debian's main archive, read from the apt sources of this machine so that no host
# name is written into the repository. The first deb822 stanza whose suites are not *-security.
debian_mirror_uri() {
  local f=${DADI_DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}
  [ -r "$f" ] || die "cannot read $f"
  awk '
    function flush() { if (uri != "" && suites !~ /-security/ && !done) { print uri; done = 1 } uri = ""; suites = "" }
    /^[[:space:]]*$/ { flush(); next }
    /^URIs:/ { uri = $2 }
    /^Suites:/ { suites = $0 }
    END { flush() }
  ' "$f"
}

# A free TCP port on 127.0.0.1 (the kernel picks it; a race with another process is possible
# but harmless in practice, the caller fails loudly).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait_until TIMEOUT_SECONDS DESCRIPTION COMMAND...: polls COMMAND every 0.1 s until it succeeds.
# COMMAND is run again each time: pass a function, never a "$(...)" (expanded only once). A
# COMMAND exiting 255 means "never": the wait fails at once.
wait_until() {
  local timeout=$1 what=$2 rc
  shift 2
  local deadline=$((SECONDS + timeout))
  while :; do
    rc=0
    "$@" >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 0 ] || return 0
    if [ "$rc" -eq 255 ]; then
      log "gave up waiting for $what"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "timed out after ${timeout}s waiting for $what"
      return 1
    fi
    sleep 0.1
  done
}

# with_lock LOCKFILE COMMAND...: runs COMMAND holding an exclusive flock on LOCKFILE, so that
# concurrent runs never build or extract the same cache entry at once.
with_lock() {
  local lock=$1
  shift
  mkdir -p "$(dirname "$lock")"
  (
    flock 9
    "$@"
  ) 9>"$lock"
}

# sha256 of the files and strings given, used as cache keys.
cache_key() {
  local item
  for item in "$@"; do
    if [ -f "$item" ]; then sha256sum <"$item"; else printf '%s\n' "$item"; fi
  done | sha256sum | cut -c1-16
}

# unix_socket_accepts PATH: true when something listens on the unix socket PATH.
unix_socket_accepts() {
  python3 -c 'import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.close()' "$1"
}

# cache_build DIR COMMAND...: builds the cache entry DIR (<name>-<key>) unless DIR/oci/index.json
# exists: runs `COMMAND... TMP` in a temporary directory beside DIR, removed when COMMAND fails or
# the build is interrupted, renames it to DIR on success and removes the entries of other keys
# (<name>-*). Run it under with_lock (a subshell: its EXIT trap is the build's own).
cache_build() {
  local dir=$1 tmp old start=$SECONDS
  shift
  [ ! -f "$dir/oci/index.json" ] || return 0
  mkdir -p "$(dirname "$dir")"
  tmp=$(mktemp -d "$(dirname "$dir")/.build-$(basename "${dir%-*}")-XXXXXX")
  log "building $(basename "${dir%-*}") in $tmp"
  # shellcheck disable=SC2064 # expand now: tmp is local
  trap "rm -rf '$tmp'" EXIT
  # Not in a condition, so that errexit (when on) stops COMMAND at its first failing command.
  local rc
  "$@" "$tmp"
  rc=$?
  [ "$rc" -eq 0 ] || return "$rc"
  trap - EXIT
  rm -rf "$dir"
  mv -T "$tmp" "$dir"
  for old in "${dir%-*}"-*; do
    [ "$old" = "$dir" ] || rm -rf "$old"
  done
  log "built $(basename "${dir%-*}") in $((SECONDS - start))s: $dir"
}
