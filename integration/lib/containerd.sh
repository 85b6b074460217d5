# shellcheck shell=bash
# containerd (and runc) releases from Debian's archive, extracted into the cache:
#   $DADI_CACHE_DIR/containerd/<package version>/usr/bin/{containerd,ctr,containerd-shim-runc-v2}
#   $DADI_CACHE_DIR/runc/<package version>/usr/sbin/runc
# The series -> suite map: 1.6 is Debian 12's package, 1.7 Debian 13's, 2.1 unstable's. The
# archive URI is read from this machine's apt sources. A version is resolved once with
# apt-cache madison (newest <series>.* found); later runs reuse the newest complete extraction
# of that series unless DADI_REFRESH_CONTAINERD=1. Extraction goes to a temporary directory
# that is renamed on success, so a partial extraction is never used.

export DADI_CONTAINERD_SERIES="1.6 1.7 2.1"

_dadi_apt_dir() { echo "$DADI_CACHE_DIR/apt"; }

_dadi_apt() {
  local d
  d=$(_dadi_apt_dir)
  "$@" -o Dir::Etc::SourceList="$d/sources.list" -o Dir::Etc::SourceParts=/dev/null \
    -o Dir::State::Lists="$d/lists" -o Dir::Cache="$d/cache" -o Dir::Cache::pkgcache="" \
    -o Dir::Cache::srcpkgcache=""
}

_dadi_apt_update() {
  local d uri
  d=$(_dadi_apt_dir)
  # Index files younger than an hour are fresh enough (a stamp, since callers run in subshells).
  if [ -n "$(find "$d/updated" -mmin -60 2>/dev/null)" ]; then return 0; fi
  uri=$(debian_mirror_uri)
  mkdir -p "$d/lists/partial" "$d/cache/archives/partial"
  {
    for suite in bookworm trixie sid; do
      echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri $suite main"
    done
  } >"$d/sources.list"
  log "apt-get update (bookworm, trixie, sid) into $d"
  _dadi_apt apt-get -q update >"$d/update.log" 2>&1 || { tail "$d/update.log" >&2; die "apt-get update failed"; }
  touch "$d/updated"
}

# _dadi_fetch_pkg PACKAGE VERSION CACHE_SUBDIR: downloads and extracts, prints the directory.
_dadi_fetch_pkg() {
  local pkg=$1 version=$2 sub=$3 dest
  dest=$DADI_CACHE_DIR/$sub/$version
  if [ ! -d "$dest" ]; then
    with_lock "$DADI_CACHE_DIR/apt/lock" _dadi_extract "$pkg" "$version" "$sub" "$dest"
  fi
  echo "$dest"
}

_dadi_extract() {
  local pkg=$1 version=$2 sub=$3 dest=$4 tmp
  if [ ! -d "$dest" ]; then
    _dadi_apt_update
    mkdir -p "$DADI_CACHE_DIR/$sub"
    tmp=$(mktemp -d "$DADI_CACHE_DIR/$sub/.fetch-XXXXXX")
    log "fetching $pkg=$version"
    if ! (cd "$tmp" && _dadi_apt apt-get -q download "$pkg=$version" >download.log 2>&1 &&
      dpkg -x ./*.deb root && rm -f ./*.deb); then
      tail "$tmp/download.log" >&2 || true
      rm -rf "$tmp"
      die "could not fetch $pkg=$version"
    fi
    mv "$tmp/root" "$tmp/extracted"
    rm -rf "$dest"
    mv -T "$tmp/extracted" "$dest"
    rm -rf "$tmp"
  fi
}

# _dadi_newest_cached SUB SERIES: newest complete cached extraction of SERIES, or nothing.
_dadi_newest_cached() {
  local sub=$1 series=$2
  [ -d "$DADI_CACHE_DIR/$sub" ] || return 0
  find "$DADI_CACHE_DIR/$sub" -mindepth 1 -maxdepth 1 -type d -name "$series.*" -printf '%f\n' |
    sort -V | tail -n 1
}

_dadi_newest_in_archive() {
  local pkg=$1 series=$2
  with_lock "$(_dadi_apt_dir)/lock" _dadi_apt_update
  _dadi_apt apt-cache madison "$pkg" | awk -v s="$series." '{ v = $3; if (index(v, s) == 1) print v }' |
    sort -V | tail -n 1
}

# containerd_dir SERIES: prints the extracted root of the newest containerd of SERIES.
containerd_dir() {
  local series=$1 version=""
  case $series in 1.6 | 1.7 | 2.1) ;; *) die "unknown containerd series $series (1.6, 1.7, 2.1)" ;; esac
  [ "${DADI_REFRESH_CONTAINERD:-0}" = 1 ] || version=$(_dadi_newest_cached containerd "$series")
  [ -n "$version" ] || version=$(_dadi_newest_in_archive containerd "$series")
  [ -n "$version" ] || die "no containerd $series.* in the archive"
  _dadi_fetch_pkg containerd "$version" containerd
}

# runc_path: the runc every containerd series runs with: $DADI_RUNC or the system's (Debian
# 12's runc 1.1). Unstable's runc 1.3 needs glibc 2.38 and does not run on Debian 12.
runc_path() {
  if [ -n "${DADI_RUNC:-}" ]; then echo "$DADI_RUNC"; else command -v runc || die "runc not installed"; fi
}
