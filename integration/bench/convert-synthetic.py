"""Writes the synthetic image of integration/bench/convert: an OCI layout (tag "synthetic") of
three gzip tar layers holding about SIZE_MB MB (10^6 bytes) of many small files, the same bytes
on every run.

  python3 convert-synthetic.py OUT_DIR [SIZE_MB]

Files: 1 B .. 32 KiB (mean about 12 KiB), 100 to a directory, 10 directories to a parent; their
data is slices of a 4 MiB text-like pool (words, compresses about 3:1) and a 4 MiB random pool,
half and half, so both gzip and the converter's lz4 do real work. Every 50th file is a symlink,
every 97th a hard link to the previous file. Layer 2 rewrites 2% of layer 1's files and deletes
1% (whiteouts); layer 3 adds new directories. Not executable on purpose: run-all runs every
executable of integration/bench.
"""

import gzip
import hashlib
import io
import json
import os
import random
import sys
import tarfile

MB = 1000 * 1000
POOL = 4 << 20
WORDS = [b"lib", b"usr", b"share", b"the ", b"static ", b"int ", b"void ", b"{\n", b"}\n",
         b"return ", b"0x", b"include ", b"data", b"conf", b"=", b"\n", b"python3 ", b"def ",
         b"self", b"import ", b"(", b")", b"; ", b"#", b"  "]


def pools(rng):
    text = bytearray()
    while len(text) < POOL:
        text += b"".join(rng.choices(WORDS, k=4096))
    return bytes(text[:POOL]), rng.randbytes(POOL)


def info(name, kind=tarfile.REGTYPE, size=0, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.size = size
    ti.mode = mode
    ti.mtime = 1700000000
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


class Layer:
    def __init__(self, rng, text, rand):
        self.raw = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.raw, mode="w", format=tarfile.PAX_FORMAT)
        self.rng, self.text, self.rand = rng, text, rand
        self.dirs = set()

    def mkdirs(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.dirs:
                self.dirs.add(d)
                self.tar.addfile(info(d + "/", tarfile.DIRTYPE, mode=0o755))

    def file(self, path):
        size = min(int(self.rng.expovariate(1 / 12000)) + 1, 32 << 10)
        pool = self.text if self.rng.random() < 0.5 else self.rand
        off = self.rng.randrange(0, POOL - size)
        self.mkdirs(path)
        self.tar.addfile(info(path, size=size), io.BytesIO(pool[off:off + size]))
        return size

    def entry(self, kind, path, target):
        self.mkdirs(path)
        ti = info(path, kind, mode=0o777 if kind == tarfile.SYMTYPE else 0o644)
        ti.linkname = target
        self.tar.addfile(ti)

    def finish(self):
        self.tar.close()
        return self.raw.getvalue()


def fill(layer, prefix, budget, first_index):
    """Files under prefix until `budget` bytes of data; returns the paths of regular files."""
    used, i, files, prev = 0, first_index, [], None
    while used < budget:
        path = "%s/d%03d/s%03d/f%06d" % (prefix, i // 1000, (i // 100) % 10, i)
        if i % 50 == 49:
            layer.entry(tarfile.SYMTYPE, path + ".lnk", "f%06d" % (i - 1))
        elif i % 97 == 96 and prev is not None:
            layer.entry(tarfile.LNKTYPE, path + ".hard", prev)
        else:
            used += layer.file(path)
            files.append(path)
            prev = path
        i += 1
    return files


def main():
    out = sys.argv[1]
    size = int(sys.argv[2]) * MB if len(sys.argv) > 2 else 1024 * MB
    rng = random.Random(20261126)
    text, rand = pools(rng)
    layers = []

    l1 = Layer(rng, text, rand)
    files = fill(l1, "data", size * 70 // 100, 0)
    layers.append(l1.finish())

    l2 = Layer(rng, text, rand)
    picked = rng.sample(files, len(files) * 3 // 100)
    for path in picked[: len(picked) * 2 // 3]:
        l2.file(path)
    for path in picked[len(picked) * 2 // 3:]:
        d, name = path.rsplit("/", 1)
        l2.entry(tarfile.REGTYPE, d + "/.wh." + name, "")
    fill(l2, "app", size * 25 // 100, 0)
    layers.append(l2.finish())

    l3 = Layer(rng, text, rand)
    fill(l3, "extra", size * 5 // 100, 0)
    layers.append(l3.finish())

    blobs = os.path.join(out, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)

    def put(data):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest), "wb") as f:
            f.write(data)
        return "sha256:" + digest

    descs, diff_ids = [], []
    for raw in layers:
        gz = gzip.compress(raw, compresslevel=6, mtime=0)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": put(gz), "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "integration/bench/convert-synthetic.py layer %d" % (i + 1)}
                    for i in range(len(layers))],
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": len(config)},
        "layers": descs,
    }, sort_keys=True).encode()
    index = {"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "synthetic"}}]}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')


if __name__ == "__main__":
    main()
