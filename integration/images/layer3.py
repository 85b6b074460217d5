#!/usr/bin/env python3
"""Writes layer 3 of the Debian test image: an uncompressed OCI layer tar that deletes and
replaces files of layers 1 and 2, so that whiteouts and an opaque directory occur.

usage: layer3.py ROOTFS_OF_LAYER_2 OUT.tar

Each entry is chosen to exercise one rule of the OCI layer format:
  etc/.wh.motd                      file whiteout
  var/.wh.mail                      directory whiteout (a directory of layer 1)
  usr/share/doc/.wh..wh..opq        opaque directory, refilled with one file
  etc/issue                         regular file replaced by a symlink
  etc/debian_version                content and mode replaced
  var/log/apt                       directory replaced by a regular file
  usr/bin/python3-hello             new file with an xattr, and a hard link to it
  opt/dadi (1234:5678, 0750)        new directory with owner and mode
  usr/lib/python3.11/.wh.this.py    whiteout of a file of layer 2
"""
import io
import os
import sys
import tarfile

MTIME = 1700000000


def add_dir(tar, name, mode=0o755, uid=0, gid=0):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, MTIME
    tar.addfile(info)


def add_file(tar, name, data, mode=0o644, uid=0, gid=0, xattrs=None):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, MTIME
    if xattrs:
        info.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
    tar.addfile(info, io.BytesIO(data))


def add_whiteout(tar, path):
    head, tail = os.path.split(path)
    add_file(tar, os.path.join(head, ".wh." + tail), b"")


def add_symlink(tar, name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname, info.mode, info.mtime = target, 0o777, MTIME
    tar.addfile(info)


def add_hardlink(tar, name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname, info.mode, info.mtime = target, 0o755, MTIME
    tar.addfile(info)


def main():
    rootfs, out = sys.argv[1], sys.argv[2]
    for must in ("etc/motd", "var/mail", "usr/share/doc", "etc/issue", "var/log/apt"):
        if not os.path.lexists(os.path.join(rootfs, must)):
            sys.exit(f"layer3.py: {must} missing from layer 2, the image changed")
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        add_dir(tar, "etc")
        add_whiteout(tar, "etc/motd")
        add_symlink(tar, "etc/issue", "issue.net")
        add_file(tar, "etc/debian_version", b"12-dadi\n", mode=0o600)
        add_dir(tar, "var")
        add_whiteout(tar, "var/mail")
        add_dir(tar, "var/log")
        add_file(tar, "var/log/apt", b"was a directory\n")
        add_dir(tar, "usr")
        add_dir(tar, "usr/share")
        add_dir(tar, "usr/share/doc")
        add_file(tar, "usr/share/doc/.wh..wh..opq", b"")
        add_file(tar, "usr/share/doc/README.dadi", b"documentation removed by layer 3\n")
        add_dir(tar, "usr/bin")
        add_file(tar, "usr/bin/python3-hello",
                 b"#!/usr/bin/python3\nprint('hello from layer 3')\n", mode=0o755,
                 xattrs={"user.dadi.layer": "three"})
        add_hardlink(tar, "usr/bin/python3-hello-link", "usr/bin/python3-hello")
        add_dir(tar, "usr/lib")
        add_dir(tar, "usr/lib/python3.11")
        add_whiteout(tar, "usr/lib/python3.11/this.py")
        add_dir(tar, "opt")
        add_dir(tar, "opt/dadi", mode=0o750, uid=1234, gid=5678)
        add_file(tar, "opt/dadi/data", b"x" * 100000, uid=1234, gid=5678)


if __name__ == "__main__":
    main()
