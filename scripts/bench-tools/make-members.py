#!/usr/bin/python3
"""Writes the raw deflate streams of the bench's np.savez_compressed members to DIR.

Usage: scripts/bench-tools/make-members.py DIR [MiB]   (default 256)

Makes the same members as scripts/bench (f32: float32 standard normal, seed 20240611; i64:
int64 arange), compressed by numpy's own zipfile/zlib, and extracts each member's deflate
stream from the archive: DIR/f32.deflate, DIR/i64.deflate, plus DIR/NAME.size holding the
uncompressed size. inflater-bench reads these.
"""
import os
import struct
import sys
import zipfile

import numpy as np

SEED = 20240611


def main():
    out = sys.argv[1]
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 256
    os.makedirs(out, exist_ok=True)
    n = mib << 20
    arrays = {"f32": np.random.default_rng(SEED).standard_normal(n // 4, dtype=np.float32),
              "i64": np.arange(n // 8, dtype=np.int64)}
    archive = os.path.join(out, "members.npz")
    np.savez_compressed(archive, **arrays)
    with zipfile.ZipFile(archive) as z, open(archive, "rb") as f:
        for name in arrays:
            info = z.getinfo(name + ".npy")
            f.seek(info.header_offset)
            head = f.read(30)
            name_len, extra_len = struct.unpack("<HH", head[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            with open(os.path.join(out, name + ".deflate"), "wb") as g:
                g.write(f.read(info.compress_size))
            with open(os.path.join(out, name + ".size"), "w") as g:
                g.write("%d\n" % info.file_size)
    os.unlink(archive)


if __name__ == "__main__":
    main()
