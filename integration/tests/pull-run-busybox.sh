#!/usr/bin/env bash
# ctr image pull and ctr run of the busybox image with the snapshotter under test: the
# container prints what it is told, sees the image's files, and can write to its rootfs.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
test_begin
ref=$(bed_push_image busybox)
pull "$ref"
bctr images list -q | grep -qxF "$ref" || fail "$ref not listed after pull"

out=$(bctr run --rm --snapshotter "$SNAP" "$ref" echo-1 /bin/echo hello from busybox)
expect_eq "echo output" "hello from busybox" "$out"

out=$(bctr run --rm --snapshotter "$SNAP" "$ref" cat-1 /bin/cat /data/hello-hardlink.txt)
expect_eq "hard-linked file" "hello from dadi" "$out"

out=$(bctr run --rm --snapshotter "$SNAP" "$ref" write-1 /bin/sh -c \
  'echo written > /data/new && cat /data/new && rm /data/hello.txt && ls /data')
expect_eq "write in the rootfs" "$(printf 'written\nhello-hardlink.txt\nnew\nowned\nsetuid.sh')" "$out"

# A second container starts from the unchanged image.
out=$(bctr run --rm --snapshotter "$SNAP" "$ref" cat-2 /bin/cat /data/hello.txt)
expect_eq "image unchanged by an earlier container" "hello from dadi" "$out"
