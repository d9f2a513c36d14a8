#!/usr/bin/python3
"""Write the seed corpora of the npzmount fuzz harnesses.

Usage: gen_seeds.py DIR
Creates DIR/seeds-zipdir/ (archives for fuzz_zipdir) and DIR/seeds-inflate/ (parameter block
plus payload for fuzz_inflate, see the comment at the top of fuzz_inflate.c), replacing what
they held, and DIR/zipdir.dict (ZIP tokens for libFuzzer's -dict). Every seed is small (well under the harnesses' -max_len). Needs numpy; the Info-ZIP
seeds are skipped when `zip` is not installed. The output is deterministic except for the
timestamps numpy and Info-ZIP write.
"""

import io
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import ziptool as Z  # noqa: E402  (tests/ziptool.py)

FIXED_TIME = (2020, 2, 29, 12, 34, 56)
DOS_TIME = (12 << 11) | (0 << 5)                # 12:00:00 (what the hand-made members say)
DOS_DATE = ((2020 - 1980) << 9) | (1 << 5) | 1  # 2020-01-01

# ------------------------------------------------------------------------------------------
# helpers


def raw_deflate(data, level=6, wbits=15, strategy=zlib.Z_DEFAULT_STRATEGY, pieces=None,
                flush=zlib.Z_NO_FLUSH):
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits, 8, strategy)
    out = []
    if pieces:
        for i in range(0, len(data), pieces):
            out.append(c.compress(data[i:i + pieces]))
            if flush != zlib.Z_NO_FLUSH:
                out.append(c.flush(flush))
    else:
        out.append(c.compress(data))
    out.append(c.flush(zlib.Z_FINISH))
    return b"".join(out)


def npz_bytes(arrays, compressed):
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    return buf.getvalue()


def zipfile_bytes(members, comment=b"", compression=zipfile.ZIP_DEFLATED, stream=False,
                  force_zip64=False):
    """members: list of (name, data, member comment)."""

    class Unseekable(io.RawIOBase):
        def __init__(self):
            self.buf = io.BytesIO()

        def writable(self):
            return True

        def write(self, b):
            return self.buf.write(b)

    target = Unseekable() if stream else io.BytesIO()
    with zipfile.ZipFile(target, "w", compression) as zf:
        zf.comment = comment
        for name, data, mcomment in members:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = compression
            info.comment = mcomment
            info.external_attr = (0o100644 << 16) if not name.endswith("/") else (0o40755 << 16)
            if force_zip64 or stream:
                with zf.open(info, "w", force_zip64=force_zip64) as f:
                    f.write(data)
            else:
                zf.writestr(info, data)
    return (target.buf if stream else target).getvalue()


class Member:
    """One member of a hand-made archive; every field can be set wrong on purpose."""

    def __init__(self, name, data=b"", method=8, level=6, **kw):
        self.name = name if isinstance(name, bytes) else name.encode()
        self.raw = data
        self.method = method
        self.payload = raw_deflate(data, level) if method == 8 else data
        self.crc = zlib.crc32(data)
        self.usize = len(data)
        self.csize = len(self.payload)
        self.flags = 0x800
        self.local_name = None
        self.local_extra = b""
        self.central_extra = b""
        self.comment = b""
        self.zip64 = False          # sizes and offset in a ZIP64 extra, 32-bit fields saturated
        self.descriptor = False     # flag bit 3, zero sizes in the local header, a descriptor
        self.header_at = None       # override of the central directory's header offset
        self.version_made = 0x031E  # Unix
        self.external = 0o100644 << 16
        for k, v in kw.items():
            setattr(self, k, v)


def build_zip(members, comment=b"", stub=b"", adjust_offsets=False, zip64_end=False,
              eocd_overrides=None):
    """A ZIP archive written by hand. stub: bytes before the archive; with adjust_offsets the
    offsets count them (like `zip -A`), otherwise they do not (a plain `cat stub a.zip`).
    eocd_overrides: ziptool.EOCD fields of the classic end record to set."""
    out = bytearray(stub)
    base = 0 if adjust_offsets else len(stub)
    offsets = []
    for m in members:
        offsets.append(len(out) - base)
        local_name = m.local_name if m.local_name is not None else m.name
        flags = m.flags | (0x08 if m.descriptor else 0)
        crc, cs, us = (0, 0, 0) if m.descriptor else (m.crc, m.csize, m.usize)
        extra = m.local_extra
        if m.zip64 and not m.descriptor:
            extra = Z.zip64_extra(m.usize, m.csize) + extra
            cs = us = Z.U32
        out += Z.local_header(local_name, extra, version=45 if m.zip64 else 20, flags=flags,
                              method=m.method, time=DOS_TIME, date=DOS_DATE, crc=crc, csize=cs,
                              usize=us)
        out += m.payload
        if m.descriptor:
            out += Z.data_descriptor(m.crc, m.csize, m.usize, zip64=m.zip64)
    cd_start = len(out) - base
    for m, off in zip(members, offsets):
        at = m.header_at if m.header_at is not None else off
        extra = m.central_extra
        cs, us, o = m.csize, m.usize, at
        if m.zip64:
            extra = Z.zip64_extra(m.usize, m.csize, at) + extra
            cs = us = o = Z.U32
        flags = m.flags | (0x08 if m.descriptor else 0)
        out += Z.central_header(m.name, extra, m.comment, made_by=m.version_made,
                                version=45 if m.zip64 else 20, flags=flags, method=m.method,
                                time=DOS_TIME, date=DOS_DATE, crc=m.crc, csize=cs, usize=us,
                                external=m.external, offset=o)
    cd_size = len(out) - base - cd_start
    n = len(members)
    if zip64_end:
        eocd64_at = len(out) - base
        out += Z.zip64_end_record(on_disk=n, total=n, cd_size=cd_size, cd_offset=cd_start)
        out += Z.zip64_locator(eocd64_at)
        fields = dict(disk=Z.U16, cd_disk=Z.U16, on_disk=Z.U16, total=Z.U16, cd_size=Z.U32,
                      cd_offset=Z.U32)
    else:
        fields = dict(on_disk=n, total=n, cd_size=cd_size, cd_offset=cd_start)
    fields.update(eocd_overrides or {})
    out += Z.end_record(comment, **fields)
    return bytes(out)


def info_zip_archives(tmp):
    """Archives from the Info-ZIP `zip` tool: a directory entry, extra fields (UT, ux), and a
    streamed one with data descriptors."""
    if not shutil.which("zip"):
        print("gen_seeds: `zip` not found; skipping the Info-ZIP seeds", file=sys.stderr)
        return {}
    src = os.path.join(tmp, "tree")
    os.makedirs(os.path.join(src, "sub", "deeper"))
    files = {
        "a.npy": npy_bytes(np.arange(1000, dtype="<i4")),
        "sub/b.npy": npy_bytes(np.linspace(0, 1, 3000)),
        "sub/deeper/c.txt": b"hello world\n" * 300,
        "sub/empty": b"",
    }
    for rel, data in files.items():
        with open(os.path.join(src, rel), "wb") as f:
            f.write(data)
    for root, dirs, names in os.walk(src):
        for x in dirs + names:
            os.utime(os.path.join(root, x), (1600000000, 1600000000))
    out = {}
    for tag, args in (("infozip_dirs.zip", ["-r", "-q"]),
                      ("infozip_store.zip", ["-r", "-q", "-0"]),
                      ("infozip_fz.zip", ["-r", "-q", "-fz"])):
        path = os.path.join(tmp, tag)
        subprocess.run(["zip", *args, path, "."], cwd=src, check=True)
        with open(path, "rb") as f:
            out[tag] = f.read()
    # Streamed to a pipe: data descriptors (and ZIP64 descriptors), no seeking back.
    r = subprocess.run(["zip", "-r", "-q", "-", "."], cwd=src, check=True,
                       stdout=subprocess.PIPE)
    out["infozip_streamed.zip"] = r.stdout
    return out


def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------
# fuzz_zipdir


def zipdir_seeds(tmp):
    rng = np.random.default_rng(1234)
    s = {}
    small = {"a": np.arange(10, dtype="<i8"), "b": np.eye(3), "s": np.array(["x", "yz"])}
    s["savez_small.npz"] = npz_bytes(small, False)
    s["savez_compressed_small.npz"] = npz_bytes(small, True)
    s["savez_compressed_kinds.npz"] = npz_bytes({
        "scalar": np.float32(1.5),
        "empty": np.zeros((0, 3)),
        "struct": np.zeros(4, dtype=[("x", "<i2"), ("y", "<f4")]),
        "big_endian": np.arange(100, dtype=">u2"),
        "bools": np.array([True, False] * 50),
    }, True)
    # Multi-chunk members (more than the harness's 32 KiB span once inflated).
    s["savez_compressed_multichunk.npz"] = npz_bytes({
        "zeros": np.zeros(200000),
        "ramp": np.arange(150000, dtype="<i4") % 1000,
        "noise": rng.integers(0, 4, 120000, dtype="u1"),
    }, True)
    s["savez_multichunk_stored.npz"] = npz_bytes({"ramp": np.arange(40000, dtype="<i2")}, False)

    members = [("x.npy", npy_bytes(np.arange(50)), b"first member"),
               ("dir/y.npy", npy_bytes(np.ones((4, 4))), b""),
               ("dir/", b"", b"a directory")]
    s["zipfile_comments.zip"] = zipfile_bytes(members, comment=b"archive comment " * 5)
    s["zipfile_stored.zip"] = zipfile_bytes(members, compression=zipfile.ZIP_STORED)
    s["zipfile_descriptors.zip"] = zipfile_bytes(members[:2], stream=True)
    s["zipfile_descriptors_stored.zip"] = zipfile_bytes(members[:2], stream=True,
                                                        compression=zipfile.ZIP_STORED)
    s["zipfile_force_zip64.zip"] = zipfile_bytes(members[:2], force_zip64=True)
    s["zipfile_empty.zip"] = zipfile_bytes([])
    s["zipfile_empty_comment.zip"] = zipfile_bytes([], comment=b"PK\x05\x06 fake end inside")

    # Other methods (decoded through libarchive): bzip2 and LZMA from zipfile, xz by hand.
    big = npy_bytes((np.arange(30000, dtype="<i4") % 1000))
    for tag, method in (("bzip2", zipfile.ZIP_BZIP2), ("lzma", zipfile.ZIP_LZMA)):
        s["zipfile_%s.zip" % tag] = zipfile_bytes(members[:2] + [("big.npy", big, b"")],
                                                  compression=method)
        bad = bytearray(s["zipfile_%s.zip" % tag])
        at = bad.find(b"big.npy") + len(b"big.npy") + 200  # inside big.npy's data
        bad[at] ^= 0x20
        s["zipfile_%s_corrupt.zip" % tag] = bytes(bad)
    # Members bigger than the harness's 1 MiB cache: re-reads restart libarchive's cursor.
    huge = npy_bytes(np.arange(330000, dtype="<i4") % 5000)
    s["zipfile_bzip2_big.zip"] = zipfile_bytes([("huge.npy", huge, b"")],
                                               compression=zipfile.ZIP_BZIP2)
    s["zipfile_lzma_big.zip"] = zipfile_bytes([("huge.npy", huge, b"")],
                                              compression=zipfile.ZIP_LZMA)
    xz_data = npy_bytes(np.linspace(0, 1, 9000))
    xz = Member("x.npy", xz_data, method=0)
    xz.method, xz.payload = 95, lzma.compress(xz_data, format=lzma.FORMAT_XZ)
    xz.csize = len(xz.payload)
    xz_bad = Member("x_crc.npy", xz_data, method=0, crc=1)
    xz_bad.method, xz_bad.payload, xz_bad.csize = 95, xz.payload, xz.csize
    s["hand_xz.zip"] = build_zip([xz, xz_bad])

    base = npz_bytes(small, True)
    stub = b"#!/bin/sh\necho self-extracting stub\nexit 0\n" + bytes(100)
    s["prepended_stub.npz"] = stub + base

    data = bytes(range(256)) * 200
    s["hand_basic.zip"] = build_zip([Member("a.bin", data), Member("b.bin", data, method=0)])
    s["hand_zip64_end.zip"] = build_zip([Member("a.bin", data, zip64=True),
                                         Member("b.bin", b"tiny", method=0, zip64=True)],
                                        zip64_end=True)
    s["hand_zip64_stub.zip"] = build_zip([Member("a.bin", data, zip64=True)], zip64_end=True,
                                         stub=stub)
    s["hand_stub_adjusted.zip"] = build_zip([Member("a.bin", data)], stub=stub,
                                            adjust_offsets=True)
    s["hand_descriptor_zip64.zip"] = build_zip([Member("a.bin", data, descriptor=True,
                                                       zip64=True)])
    # Names the namespace must clean up.
    odd = [Member(n, b"%d" % i, method=0) for i, n in enumerate([
        "../escape", "/abs/path", "./dot/./x", "a//b", "a/../b", "dup", "dup", "dup/",
        "dup/inner", "", "/", "..", "trailing/", b"nul\x00byte", "x" * 300 + "/y",
        "\u00e9t\u00e9.npy", "dup~1"])]
    odd.append(Member(b"cp437_\x81\xe9\xff", b"cp437", method=0, flags=0))
    s["hand_odd_names.zip"] = build_zip(odd)
    # Many entries: the namespace's tables grow; duplicates and deep paths.
    many = []
    for i in range(300):
        many.append(Member("d%d/sub%d/a%d.npy" % (i % 7, i % 3, i % 120), b"%d" % i, method=0))
    many += [Member("deep/" * 40 + "leaf", b"deep", method=0), Member("d1/", b"", method=0)]
    s["hand_many_members.zip"] = build_zip(many)
    # Member-level problems.
    bad = [
        Member("ok.bin", data),
        Member("encrypted.bin", b"secret", flags=0x801),
        Member("bzip2.bin", b"x" * 10, method=12),
        Member("crc_wrong.bin", data, crc=0x12345678),
        Member("usize_more.bin", data, usize=len(data) + 1),
        Member("usize_less.bin", data, usize=len(data) - 1),
        Member("stored_sizes.bin", b"abcdef", method=0, usize=3),
        Member("local_name_differs.bin", b"zz", method=0, local_name=b"much/longer/local/name",
               local_extra=b"\x99\x99\x04\x00abcd"),
    ]
    s["hand_member_errors.zip"] = build_zip(bad)
    corrupt = Member("corrupt.bin", data)
    p = bytearray(corrupt.payload)
    p[len(p) // 2] ^= 0x55
    corrupt.payload = bytes(p)
    s["hand_corrupt_deflate.zip"] = build_zip([corrupt, Member("fine.bin", b"fine", method=0)])
    # Two entries sharing one local header (the zip-bomb shape), and a bomb-like member.
    s["hand_overlap.zip"] = build_zip([Member("a", data), Member("b", data, header_at=0)])
    bomb = Member("bomb.bin", bytes(8 << 20), level=9)
    s["hand_bomb.zip"] = build_zip([bomb])
    s["hand_huge_claim.zip"] = build_zip([Member("huge.bin", data, usize=0xFFFFFFF0)])
    # Whole-archive problems.
    s["hand_multidisk.zip"] = build_zip([Member("a", b"a", method=0)],
                                        eocd_overrides={"disk": 1, "cd_disk": 1})
    s["hand_cd_outside.zip"] = build_zip([Member("a", b"a", method=0)],
                                         eocd_overrides={"cd_offset": 0x7FFFFFF0})
    s["hand_count_mismatch.zip"] = build_zip([Member("a", b"a", method=0)],
                                             eocd_overrides={"on_disk": 5, "total": 5})
    # Truncations of a real archive.
    z = s["savez_compressed_small.npz"]
    layout = Z.parse(z)
    eocd, cd = layout.eocd_off, layout.cd_off
    for tag, cut in (("half", len(z) // 2), ("eocd_cut", eocd + 10), ("no_eocd", eocd),
                     ("cd_cut", cd + 20), ("one_byte", 1)):
        s["trunc_%s.npz" % tag] = z[:cut]
    s["trunc_eocd_only.zip"] = z[eocd:]
    s["trunc_front.npz"] = z[30:]

    s.update(info_zip_archives(tmp))
    return s


# ------------------------------------------------------------------------------------------
# fuzz_inflate


def header(raw=False, true_size=True, true_crc=True, tweak=0, span=0, level=6, strategy=0,
           wbits=15, memlevel=8, flush=0, piece=0, prefix=0, nreads=4, garbage=0, trail=0,
           seed=b"seedseed"):
    flags = (1 if raw else 0) | (2 if true_size else 0) | (4 if true_crc else 0) | tweak << 3
    b2 = level + 10 * strategy
    b3 = (wbits - 9) + 7 * (memlevel - 1)
    b4 = flush | piece << 3
    b7 = garbage | trail << 2
    return bytes([flags, span, b2, b3, b4, prefix, nreads, b7]) + seed[:8].ljust(8, b"\0")


def inflate_seeds():
    rng = np.random.default_rng(99)
    text = b"".join(b"line %d of some fairly repetitive text\n" % i for i in range(3000))
    ramp = (np.arange(40000, dtype="<i4") % 777).tobytes()
    noise = rng.integers(0, 256, 60000, dtype="u1").tobytes()
    zeros = bytes(200000)
    npy = npy_bytes(np.linspace(0, 100, 20000))
    s = {}
    # Round trip: the harness compresses the payload itself.
    s["rt_text.bin"] = header(span=0, level=6) + text
    s["rt_ramp_span_big.bin"] = header(span=255, level=9, nreads=9) + ramp
    s["rt_noise_stored.bin"] = header(span=10, level=0) + noise
    s["rt_zeros_rle.bin"] = header(span=3, level=1, strategy=3) + zeros
    s["rt_npy_fixed.bin"] = header(span=20, level=6, strategy=4, wbits=9, memlevel=1) + npy
    s["rt_text_huffman.bin"] = header(span=1, level=5, strategy=2) + text[:50000]
    s["rt_sync_flush.bin"] = header(span=5, flush=1, piece=2, prefix=7, garbage=2) + ramp
    s["rt_full_flush.bin"] = header(span=0, flush=2, piece=0, trail=3) + text
    s["rt_partial_flush.bin"] = header(span=0, flush=3, piece=1, prefix=255) + npy
    s["rt_block_flush.bin"] = header(span=2, flush=4, piece=3) + text
    s["rt_level_switch.bin"] = header(span=0, flush=5, piece=4) + noise + text
    s["rt_tiny.bin"] = header() + b"x"
    s["rt_empty.bin"] = header()
    # Raw: the payload is the stream.
    for tag, data, kw in (("text", text, {}), ("ramp", ramp, {"level": 9}),
                          ("zeros", zeros, {"level": 1}), ("noise", noise, {"level": 0}),
                          ("fixed", npy, {"strategy": zlib.Z_FIXED}),
                          ("sync", text, {"pieces": 10000, "flush": zlib.Z_SYNC_FLUSH}),
                          ("full", ramp, {"pieces": 7000, "flush": zlib.Z_FULL_FLUSH})):
        stream = raw_deflate(data, **kw)
        s["raw_%s.bin" % tag] = header(raw=True, span=len(tag) * 20) + stream
        if tag in ("text", "ramp"):
            s["raw_%s_crc_wrong.bin" % tag] = header(raw=True, true_crc=False) + stream
            s["raw_%s_size_plus.bin" % tag] = header(raw=True, tweak=2) + stream
            s["raw_%s_size_minus.bin" % tag] = header(raw=True, tweak=1) + stream
            s["raw_%s_truncated.bin" % tag] = header(raw=True) + stream[:len(stream) * 2 // 3]
            flipped = bytearray(stream)
            flipped[len(flipped) // 3] ^= 0x10
            s["raw_%s_flipped.bin" % tag] = header(raw=True) + bytes(flipped)
            s["raw_%s_trailing.bin" % tag] = header(raw=True) + stream + b"trailing junk"
    # Many blocks over 2 MiB: dozens of checkpoints at a 32 KiB span.
    s["raw_many_blocks.bin"] = header(raw=True, nreads=12) + raw_deflate(
        ramp * 14, 6, pieces=20000, flush=zlib.Z_SYNC_FLUSH)
    s["raw_bomb.bin"] = header(raw=True) + raw_deflate(bytes(16 << 20), 9)
    s["raw_claimed_huge.bin"] = header(raw=True, true_size=False, tweak=3,
                                       seed=b"\xff" * 8) + raw_deflate(text)
    s["raw_empty_stream.bin"] = header(raw=True) + b"\x03\x00"
    s["raw_garbage.bin"] = header(raw=True, true_size=False,
                                  seed=b"\x00\x10\x00\x00abcd") + noise[:5000]
    return s


# Tokens for libFuzzer's -dict: record signatures, saturated fields, extra-field headers.
ZIPDIR_DICT = [
    b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07",
    b"PK\x07\x08", b"\xff\xff\xff\xff", b"\xff\xff", b"\x01\x00\x08\x00",
    b"\x01\x00\x10\x00", b"\x01\x00\x18\x00", b"UT\x05\x00\x01", b"ux\x0b\x00\x01",
    b"\x08\x00", b"\x00\x08", b"\x2d\x00", b"\x14\x00", b"\x1e\x03", b".npy", b"/", b"../",
    b"\x93NUMPY\x01\x00", b"{'descr': '<f8', 'fortran_order': False, 'shape': (",
]


def write_dict(path, tokens):
    with open(path, "w") as f:
        for t in tokens:
            f.write('"%s"\n' % "".join(
                chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else "\\x%02x" % b for b in t))


def write_dir(path, seeds):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(path, name), "wb") as f:
            f.write(data)
    total = sum(len(d) for d in seeds.values())
    biggest = max(len(d) for d in seeds.values())
    print("gen_seeds: %s: %d seeds, %d bytes (largest %d)" % (path, len(seeds), total, biggest))


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: gen_seeds.py DIR")
    out = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        write_dir(os.path.join(out, "seeds-zipdir"), zipdir_seeds(tmp))
    write_dir(os.path.join(out, "seeds-inflate"), inflate_seeds())
    write_dict(os.path.join(out, "zipdir.dict"), ZIPDIR_DICT)


if __name__ == "__main__":
    main()
