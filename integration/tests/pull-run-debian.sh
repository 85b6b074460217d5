#!/usr/bin/env bash
# ctr image pull and ctr run of the three-layer Debian image with the snapshotter under test:
# python3 (layer 2) runs, and layer 3's whiteouts, opaque directory and replacements show.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
test_begin
ref=$(bed_push_image debian)
pull "$ref"

out=$(bctr run --rm --snapshotter "$SNAP" "$ref" py-1 python3 -c 'print("hello from", "python3")')
expect_eq "python3 output" "hello from python3" "$out"

out=$(bctr run --rm --snapshotter "$SNAP" "$ref" py-2 /usr/bin/python3-hello)
expect_eq "layer-3 script" "hello from layer 3" "$out"

# shellcheck disable=SC2016 # expanded by the container's shell
check='
for p in /etc/motd /var/mail /usr/lib/python3.11/this.py; do [ -e "$p" ] && echo "present $p"; done
ls /usr/share/doc
readlink /etc/issue
cat /etc/debian_version
stat -c "%a %u:%g %F" /opt/dadi /var/log/apt
'
out=$(bctr run --rm --snapshotter "$SNAP" "$ref" sh-1 /bin/sh -c "$check")
expected='README.dadi
issue.net
12-dadi
750 1234:5678 directory
644 0:0 regular file'
expect_eq "whiteouts, opaque directory, replacements" "$expected" "$out"
