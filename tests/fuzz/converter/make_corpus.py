#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_tar_apply: small layers covering each entry kind, whiteouts,
opaque markers, long names, PAX xattrs, and a gzip layer. Run from anywhere."""
import gzip
import io
import os
import tarfile

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_tar_apply")


def layer(fmt, entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, kind, arg in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            data = None
            if kind == "file":
                data = arg.encode()
                info.size = len(data)
                info.mode = 0o644
            elif kind == "dir":
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            elif kind == "sym":
                info.type = tarfile.SYMTYPE
                info.linkname = arg
            elif kind == "hard":
                info.type = tarfile.LNKTYPE
                info.linkname = arg
            elif kind == "chr":
                info.type = tarfile.CHRTYPE
                info.devmajor, info.devminor = 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            elif kind == "xattr":
                data = b"x"
                info.size = 1
                info.pax_headers = {"SCHILY.xattr.user.k": "v",
                                    "SCHILY.xattr.security.capability": "\x01\x00\x00\x02"}
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        "kinds.tar": layer(tarfile.PAX_FORMAT, [
            ("etc/", "dir", None), ("etc/hosts", "file", "127.0.0.1 localhost\n"),
            ("bin/sh", "sym", "busybox"), ("bin/busybox", "file", "ELF"),
            ("bin/ls", "hard", "bin/busybox"), ("dev/null", "chr", None),
            ("run/fifo", "fifo", None), ("cap", "xattr", None)]),
        "whiteouts.tar": layer(tarfile.USTAR_FORMAT, [
            ("a/b", "file", "1"), ("a/.wh.b", "file", ""), ("c/x", "file", "2"),
            ("c/.wh..wh..opq", "file", ""), ("c/y", "file", "3"), ("d", "file", "f"),
            ("d/", "dir", None), ("d", "sym", "a")]),
        "escapes.tar": layer(tarfile.GNU_FORMAT, [
            ("../../etc/passwd", "file", "p"), ("/abs", "file", "a"), ("l", "sym", "/usr/lib"),
            ("l/x", "file", "x"), ("up", "sym", "../../.."), ("up/y", "file", "y"),
            ("n" * 150 + "/" + "m" * 200, "file", "long")]),
    }
    seeds["kinds.tar.gz"] = gzip.compress(seeds["kinds.tar"], mtime=0)
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
