#!/usr/bin/python3
"""The --optimize chunk size trade-off, on the bench's members.

Usage: scripts/bench-tools/optimize-chunks.py [MiB] [CHUNK...]   (default 32 MiB per member;
       chunks 32k 64k 128k 256k 512k 1M)

Makes the bench's members (f32: float32 standard normal, seed 20240611; i64: int64 arange) with
np.savez_compressed, rewrites the archive with `npzmount --optimize --chunk-size=C` for every C,
and prints per member the size change against numpy's own deflate stream and the time one
random read pays: inflating one chunk with zlib, from its offset in the hidden index (median
over 50 random chunks). Also prints the time of the rewrite against np.savez_compressed.
Environment: NPZMOUNT (binary, default ./npzmount), BENCH_DIR (default /tmp/npzmount-bench).
"""
import os
import random
import statistics
import struct
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np

SEED = 20240611
SIZES = {"k": 10, "M": 20}


def parse_size(s):
    return int(s[:-1]) << SIZES[s[-1]] if s[-1] in SIZES else int(s)


def index_of(data, info):
    """Chunk size and chunk boundaries of a member, from the hidden index after its data."""
    nlen, xlen = struct.unpack_from("<HH", data, info.header_offset + 26)
    start = info.header_offset + 30 + nlen + xlen
    at = start + info.compress_size
    nlen, xlen = struct.unpack_from("<HH", data, at + 26)
    idx = at + 30 + nlen + xlen
    _v, skip, chunk, osize, usize, csize = struct.unpack_from("<IIIIQQ", data, idx)
    n = (usize - 1) // chunk
    offs = struct.unpack_from("<%d%s" % (n, "I" if osize == 4 else "Q"), data, idx + 32 + skip)
    return chunk, [start + o for o in (0, *offs, csize)]


def chunk_decode_ms(data, info, rounds=50):
    _chunk, bounds = index_of(data, info)
    times = []
    rng = random.Random(1)
    for _ in range(rounds):
        k = rng.randrange(len(bounds) - 1)
        raw = data[bounds[k]:bounds[k + 1]]
        t = time.perf_counter()
        zlib.decompressobj(-15).decompress(raw)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main():
    mib = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    chunks = [parse_size(c) for c in sys.argv[2:]] or [c << 10 for c in (32, 64, 128, 256,
                                                                          512, 1024)]
    binary = os.environ.get("NPZMOUNT", "./npzmount")
    work = os.environ.get("BENCH_DIR", "/tmp/npzmount-bench")
    os.makedirs(work, exist_ok=True)
    n = mib << 20
    arrays = {"f32": np.random.default_rng(SEED).standard_normal(n // 4, dtype=np.float32),
              "i64": np.arange(n // 8, dtype=np.int64)}
    src = os.path.join(work, f"chunks-{mib}.npz")
    t = time.perf_counter()
    np.savez_compressed(src, **arrays)
    savez = time.perf_counter() - t
    with zipfile.ZipFile(src) as z:
        base = {i.filename: i.compress_size for i in z.infolist()}
    print(f"{mib} MiB per member; np.savez_compressed {savez:.2f} s")
    print(f"{'chunk':>8} {'member':>8} {'size change':>12} {'decode/chunk':>13} {'rewrite':>9}")
    for c in chunks:
        out = os.path.join(work, f"chunks-{mib}-{c}.npz")
        t = time.perf_counter()
        subprocess.run([binary, "--optimize", f"--chunk-size={c}", src, out], check=True,
                       stdout=subprocess.DEVNULL)
        took = time.perf_counter() - t
        data = open(out, "rb").read()
        with zipfile.ZipFile(out) as z:
            for info in z.infolist():
                grow = 100 * (info.compress_size / base[info.filename] - 1)
                ms = chunk_decode_ms(data, info)
                print(f"{c >> 10:>7}k {info.filename:>8} {grow:>+11.2f}% {ms:>10.2f} ms "
                      f"{took:>7.2f} s ({savez / took:.2f}x)")
        os.unlink(out)


if __name__ == "__main__":
    main()
