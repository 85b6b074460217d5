#!/usr/bin/env python3
"""Prints one line per entry of a directory tree, in byte order of the paths, so that two
trees can be compared with diff:

  PATH TYPE mode=OCTAL uid=N gid=N [nlink=N] [size=N sha256=HEX] [-> TARGET] [rdev=MAJ,MIN]
       [xattr NAME=HEX ...]

Directories carry no size (it depends on the file system). xattrs of the overlay driver
itself (trusted.overlay.*) are implementation details and left out. Paths and link targets
are printed with backslash escapes so that any byte is visible.

usage: tree-walk.py ROOT
"""
import hashlib
import os
import stat
import sys


def esc(b):
    return b.decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe(root, rel):
    full = os.path.join(root, rel) if rel else root
    st = os.lstat(full)
    m = st.st_mode
    kind = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
            stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
            stat.S_IFSOCK: "socket"}.get(stat.S_IFMT(m), "unknown")
    parts = [esc(b"/" + rel), kind, "mode=%04o" % stat.S_IMODE(m), "uid=%d" % st.st_uid,
             "gid=%d" % st.st_gid]
    if kind != "dir":
        parts.append("nlink=%d" % st.st_nlink)
    if kind == "file":
        parts += ["size=%d" % st.st_size, "sha256=" + sha256(full)]
    elif kind == "symlink":
        parts += ["->", esc(os.readlink(full))]
    elif kind in ("char", "block"):
        parts.append("rdev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
    try:
        names = sorted(os.listxattr(full, follow_symlinks=False))
    except OSError:
        names = []
    for name in names:
        if name.startswith("trusted.overlay."):
            continue
        value = os.getxattr(full, name, follow_symlinks=False)
        parts.append("xattr %s=%s" % (name, value.hex()))
    return " ".join(parts)


def walk(root, rel, out):
    out.write(describe(root, rel) + "\n")
    full = os.path.join(root, rel) if rel else root
    if os.path.isdir(full) and not os.path.islink(full):
        for name in sorted(os.listdir(full)):
            walk(root, os.path.join(rel, name) if rel else name, out)


def main():
    root = os.fsencode(sys.argv[1])
    walk(root, b"", sys.stdout)


if __name__ == "__main__":
    main()
