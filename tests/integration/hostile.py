"""A corpus of hostile, damaged and odd ZIP/.npz archives for the npzmount integration tests.

Every archive is generated (zipfile, numpy, struct); no binary blob is committed. Each case is
a function ``case_xxx(outdir) -> (path, expected_class, details)`` registered in ``CASES``:

``"refuse"``
    a whole-archive problem: npzmount must exit with status 1, print exactly one line
    ``npzmount: ...`` on stderr and mount nothing.
``"eio"``
    the archive mounts; every path in ``details["bad"]`` is listed but reading it to the end
    fails with EIO; every path in ``details["good"]`` reads exactly the given bytes (or
    matches the given ``Digest``); the daemon keeps serving afterwards.
``"renamed"``
    the archive mounts and shows exactly ``details["paths"]`` (names turned into safe paths by
    the naming rule of src/namespace.h), nothing outside the mount; ``details["good"]`` maps
    each file to its bytes.

``details`` always has ``"why"`` (one line: what the case is about). For the mounted classes it
also has ``"paths"`` ({relative path: "file" | "dir"}, the exact listing, or None when it is not
checked), ``"bad"`` (list), ``"good"`` (dict) and optionally ``"sizes"`` ({path: st_size}).

Most archives come from ``build_zip``, a small hand-rolled ZIP writer that gives full control
over every header field; ``Layout`` records where everything landed so that cases can patch
bytes afterwards. ``many_members`` writes an archive of N tiny stored members with numpy in a
second or two (zipfile would take minutes for a million).
"""

import functools
import hashlib
import io
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ziptool as Z  # noqa: E402  (tests/ziptool.py)

CLASSES = ("refuse", "eio", "renamed")

DOS_TIME = 0                                  # 00:00:00
DOS_DATE = (40 << 9) | (1 << 5) | 1           # 2020-01-01
U32 = Z.U32
U16 = Z.U16

MAX_CHUNK = 256 << 20                          # the largest chunk the first design could hold


class Digest:
    """Expected content of a member too big to keep in memory: its size and SHA-256."""

    def __init__(self, size, sha256):
        self.size = size
        self.sha256 = sha256

    def __repr__(self):
        return f"Digest(size={self.size}, sha256={self.sha256[:16]}...)"


# --------------------------------------------------------------------------------------------
# a ZIP writer with every field under control


def deflate(data, level=6):
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def npy(arr):
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=False)
    return b.getvalue()


class Member:
    """One archive entry. ``content`` is what the member should read as; ``raw`` the bytes
    written after the local header (defaults: content for stored and unknown methods, its raw
    deflate stream for method 8). Sizes and CRC default to the truth and can be made to lie.
    ``zip64``: central sizes saturated to 0xFFFFFFFF with the real ones in a ZIP64 extra.
    ``share``: another Member whose local header this central entry points at (no local
    header of its own is written)."""

    def __init__(self, name, content=b"", method=0, *, level=6, raw=None, crc=None,
                 usize=None, csize=None, flags=None, central_extra=b"", local_extra=b"",
                 disk=0, zip64=False, share=None):
        self.name = name.encode() if isinstance(name, str) else bytes(name)
        self.content = content
        self.method = method
        if raw is None:
            raw = deflate(content, level) if method == 8 else content
        self.raw = raw
        self.crc = zlib.crc32(content) if crc is None else crc
        self.usize = len(content) if usize is None else usize
        self.csize = len(raw) if csize is None else csize
        if flags is None:
            flags = 0x800 if any(c >= 0x80 for c in self.name) else 0
        self.flags = flags
        self.central_extra = central_extra
        self.local_extra = local_extra
        self.disk = disk
        self.zip64 = zip64
        self.share = share
        # filled in by build_zip
        self.local_off = self.data_off = self.cd_off = None


class Layout:
    """Where build_zip put things (absolute offsets in the returned bytes)."""

    def __init__(self):
        self.members = []
        self.cd_off = self.cd_size = self.eocd_off = None
        self.z64_off = self.loc_off = None

    def member(self, name):
        name = name.encode() if isinstance(name, str) else name
        hits = [m for m in self.members if m.name == name]
        assert len(hits) == 1, (name, len(hits))
        return hits[0]


def build_zip(members, *, zip64_end=False, saturate=True, gap=b"", comment=b""):
    """Lays out members (local headers and data, central directory, end records) and returns
    (bytearray, Layout). zip64_end adds a ZIP64 end record and locator (and, with saturate,
    fills the classic end record with 0xFFFF/0xFFFFFFFF); gap is inserted between the ZIP64
    end record and its locator."""
    out = bytearray()
    lay = Layout()
    for m in members:
        lay.members.append(m)
        if m.share is not None:
            continue
        m.local_off = len(out)
        big = m.zip64 or m.usize >= U32 or m.csize >= U32
        lcs = U32 if big else m.csize
        lus = U32 if big else m.usize
        out += Z.local_header(m.name, m.local_extra, version=45 if big else 20, flags=m.flags,
                              method=m.method, time=DOS_TIME, date=DOS_DATE, crc=m.crc & U32,
                              csize=lcs, usize=lus)
        m.data_off = len(out)
        out += m.raw
    lay.cd_off = len(out)
    for m in members:
        if m.share is not None:
            m.local_off, m.data_off = m.share.local_off, m.share.data_off
        m.cd_off = len(out)
        z = []
        us, cs, off = m.usize, m.csize, m.local_off
        if m.zip64 or us >= U32:
            z.append(us)
            us = U32
        if m.zip64 or cs >= U32:
            z.append(cs)
            cs = U32
        if off >= U32:
            z.append(off)
            off = U32
        extra = (Z.zip64_extra(*z) if z else b"") + m.central_extra
        out += Z.central_header(m.name, extra, version=45 if z else 20, flags=m.flags,
                                method=m.method, time=DOS_TIME, date=DOS_DATE, crc=m.crc & U32,
                                csize=cs, usize=us, disk=m.disk, offset=off)
    lay.cd_size = len(out) - lay.cd_off
    n = len(members)
    if zip64_end:
        lay.z64_off = len(out)
        out += Z.zip64_end_record(on_disk=n, total=n, cd_size=lay.cd_size,
                                  cd_offset=lay.cd_off)
        out += gap
        lay.loc_off = len(out)
        out += Z.zip64_locator(lay.z64_off)
    lay.eocd_off = len(out)
    if zip64_end and saturate:
        out += Z.saturated_end_record(comment)
    else:
        out += Z.end_record(comment, on_disk=min(n, U16), total=min(n, U16),
                            cd_size=lay.cd_size, cd_offset=lay.cd_off)
    return out, lay


def put(buf, off, fmt, *values):
    struct.pack_into("<" + fmt, buf, off, *values)


def write(outdir, fname, data):
    path = Path(outdir) / fname
    path.write_bytes(bytes(data))
    return path


# --------------------------------------------------------------------------------------------
# the standard contents (cached: several cases share them)


@functools.lru_cache(maxsize=None)
def contents():
    """a: stored-size array; b: 1.5 MB deflatable (several deflate blocks, two 1M spans);
    c: small; d: small text-like array (deflates well)."""
    rng = np.random.default_rng(1234)
    return {
        "a.npy": npy(np.arange(2000, dtype=np.int32)),
        "b.npy": npy(rng.integers(0, 16, 1_500_000, dtype=np.uint8)),
        "c.npy": npy(np.linspace(-1, 1, 333)),
        "d.npy": npy(np.array([f"word{i % 97}" for i in range(3000)])),
    }


@functools.lru_cache(maxsize=None)
def _deflated(key, level=6):
    return deflate(contents()[key], level)


def std_members():
    """a stored, b deflated, c stored, d deflated (fresh Member objects)."""
    c = contents()
    return [Member("a.npy", c["a.npy"]),
            Member("b.npy", c["b.npy"], 8, raw=_deflated("b.npy")),
            Member("c.npy", c["c.npy"]),
            Member("d.npy", c["d.npy"], 8, raw=_deflated("d.npy"))]


STD_NAMES = ("a.npy", "b.npy", "c.npy", "d.npy")


def files(*names):
    return {n: "file" for n in names}


def eio(path, why, bad, good=None, paths=None, sizes=None):
    """An "eio" result over the standard members: every standard name not in bad is good."""
    if good is None:
        good = {n: contents()[n] for n in STD_NAMES if n not in bad}
    if paths is None:
        paths = files(*sorted(set(bad) | set(good)))
    return path, "eio", {"why": why, "bad": list(bad), "good": good, "paths": paths,
                         "sizes": sizes or {}}


def refuse(path, why):
    return path, "refuse", {"why": why}


# --------------------------------------------------------------------------------------------
# the registry

CASES = {}        # name -> builder(outdir) -> (path, class, details)
CLASS_OF = {}     # name -> class, known without building


def case(cls):
    """Registers case_NAME under NAME with its expected class."""
    assert cls in CLASSES, cls

    def register(fn):
        name = fn.__name__[len("case_"):]
        assert fn.__name__.startswith("case_") and name not in CASES, fn.__name__
        CASES[name] = fn
        CLASS_OF[name] = cls
        return fn

    return register


def build(name, outdir):
    """Builds case name into its own subdirectory of outdir; returns (path, class, details)."""
    d = Path(outdir) / name
    d.mkdir(parents=True, exist_ok=True)
    path, cls, details = CASES[name](d)
    assert cls == CLASS_OF[name], (name, cls, CLASS_OF[name])
    return path, cls, details


def summary():
    """{class: number of registered cases}."""
    return {c: sum(1 for n in CASES if CLASS_OF[n] == c) for c in CLASSES}


# --------------------------------------------------------------------------------------------
# refuse: truncation at every structural boundary


def _three():
    c = contents()
    return [Member("a.npy", c["a.npy"]), Member("b.npy", c["b.npy"], 8, raw=_deflated("b.npy")),
            Member("c.npy", c["c.npy"])]


def _cuts(lay, total):
    """Cut points inside every structure of a 3-member archive built by build_zip."""
    a, b, c = lay.members
    cuts = {
        "in_first_local_header": a.local_off + 10,
        "in_first_name": a.local_off + 32,
        "in_first_data": a.data_off + len(a.raw) // 2,
        "at_second_local_header": b.local_off,
        "in_second_local_header": b.local_off + 29,
        "in_deflate_data": b.data_off + len(b.raw) // 3,
        "in_last_data": c.data_off + len(c.raw) - 1,
        "at_central_directory": lay.cd_off,
        "in_first_central_entry": lay.cd_off + 20,
        "in_second_central_entry": b.cd_off + 50,
        "in_last_central_name": c.cd_off + 47,
        "at_end_record": lay.eocd_off,
        "in_end_record": lay.eocd_off + 12,
        "end_record_minus_1": total - 1,
    }
    if lay.z64_off is not None:
        cuts.update({
            "at_zip64_end_record": lay.z64_off,
            "in_zip64_end_record": lay.z64_off + 30,
            "at_zip64_locator": lay.loc_off,
            "in_zip64_locator": lay.loc_off + 9,
        })
    return cuts


def _register_truncations():
    for zip64 in (False, True):
        data, lay = build_zip(_three(), zip64_end=zip64)
        for where in _cuts(lay, len(data)):
            def fn(outdir, where=where, zip64=zip64):
                data, lay = build_zip(_three(), zip64_end=zip64)
                at = _cuts(lay, len(data))[where]
                assert 0 < at < len(data)
                return refuse(write(outdir, "t.npz", data[:at]),
                              f"archive cut at {at} of {len(data)} ({where})")
            fn.__name__ = f"case_truncated{'_zip64' if zip64 else ''}_{where}"
            case("refuse")(fn)


_register_truncations()


@functools.lru_cache(maxsize=None)
def _savez_bytes():
    """A real np.savez_compressed archive (numpy's ZIP64 local extras) with 3 members."""
    b = io.BytesIO()
    rng = np.random.default_rng(7)
    np.savez_compressed(b, x=np.arange(5000), y=rng.integers(0, 9, 40000, dtype=np.int8),
                        z=np.eye(30))
    return b.getvalue()


def _savez_cuts():
    data = _savez_bytes()
    lay = Z.parse(data)
    cuts = {}
    for i, e in enumerate(lay.entries):
        cuts[f"m{i}_local_header"] = e.local_off + 15
        cuts[f"m{i}_local_zip64_extra"] = e.local_off + Z.LOCAL.size + e.local_name_len + 6
        cuts[f"m{i}_data"] = e.data_off + e.csize // 2
    cuts["central_directory"] = lay.cd_off + 60
    cuts["end_record"] = lay.eocd_off + 7
    return cuts


def _register_savez_truncations():
    for where in _savez_cuts():
        def fn(outdir, where=where):
            data = _savez_bytes()
            at = _savez_cuts()[where]
            return refuse(write(outdir, "t.npz", data[:at]),
                          f"np.savez_compressed archive cut at {at} of {len(data)} ({where})")
        fn.__name__ = f"case_truncated_savez_{where}"
        case("refuse")(fn)


_register_savez_truncations()


def _excise(outdir, start, end, why, zip64=False):
    data, lay = build_zip(_three(), zip64_end=zip64)
    s, e = start(lay), end(lay)
    return refuse(write(outdir, "x.npz", data[:s] + data[e:]),
                  f"bytes {s}..{e} removed, end records intact: {why}")


@case("refuse")
def case_excised_member_data(outdir):
    return _excise(outdir, lambda l: l.members[1].data_off + 100,
                   lambda l: l.members[1].data_off + 5000, "part of a member's data")


@case("refuse")
def case_excised_central_entry(outdir):
    return _excise(outdir, lambda l: l.members[1].cd_off, lambda l: l.members[2].cd_off,
                   "a whole central directory entry")


@case("refuse")
def case_excised_central_directory_tail(outdir):
    return _excise(outdir, lambda l: l.members[2].cd_off + 10, lambda l: l.eocd_off,
                   "the end of the central directory")


@case("refuse")
def case_excised_zip64_cd_tail(outdir):
    return _excise(outdir, lambda l: l.members[2].cd_off + 10, lambda l: l.z64_off,
                   "the end of the central directory (ZIP64 end records)", zip64=True)


@case("refuse")
def case_excised_front(outdir):
    return _excise(outdir, lambda l: 0, lambda l: l.members[1].local_off,
                   "the first member, headers and all")


# --------------------------------------------------------------------------------------------
# refuse: not a ZIP at all


@case("refuse")
def case_empty_file(outdir):
    return refuse(write(outdir, "e.npz", b""), "empty file")


@case("refuse")
def case_one_byte(outdir):
    return refuse(write(outdir, "e.npz", b"P"), "one byte")


@case("refuse")
def case_garbage_random(outdir):
    rng = np.random.default_rng(99)
    data = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    assert b"PK\x05\x06" not in data
    return refuse(write(outdir, "g.npz", data), "64 KiB of random bytes")


@case("refuse")
def case_garbage_zeros(outdir):
    return refuse(write(outdir, "g.npz", bytes(100_000)), "100 kB of zero bytes")


@case("refuse")
def case_local_header_only(outdir):
    data, lay = build_zip(_three())
    return refuse(write(outdir, "g.npz", data[:30]), "a lone local header")


@case("refuse")
def case_npy_not_npz(outdir):
    return refuse(write(outdir, "g.npz", contents()["c.npy"]), "an .npy file, not an archive")


@case("refuse")
def case_end_record_short(outdir):
    return refuse(write(outdir, "g.npz", Z.end_record(on_disk=0, total=0, cd_size=0,
                                                      cd_offset=0)[:21]),
                  "21 bytes of an end record")


@case("refuse")
def case_garbage_with_end_record(outdir):
    rng = np.random.default_rng(5)
    body = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    eocd = Z.end_record(on_disk=3, total=3, cd_size=1000, cd_offset=100)
    return refuse(write(outdir, "g.npz", body + eocd),
                  "random bytes where the end record says the central directory is")


# A directory given as the archive is no error: it is mounted as a tree (test_forest.py).


# --------------------------------------------------------------------------------------------
# refuse: lying end records


def _eocd_patch(outdir, why, patch, zip64=False, **kw):
    data, lay = build_zip(std_members(), zip64_end=zip64, **kw)
    patch(data, lay)
    return refuse(write(outdir, "p.npz", data), why)


@case("refuse")
def case_eocd_cd_offset_past_eof(outdir):
    return _eocd_patch(outdir, "end record: central directory offset past the end of file",
                       lambda d, l: Z.EOCD.patch(d, l.eocd_off, cd_offset=len(d) + 1000))


@case("refuse")
def case_eocd_cd_size_past_eof(outdir):
    return _eocd_patch(outdir, "end record: central directory size larger than the file",
                       lambda d, l: Z.EOCD.patch(d, l.eocd_off, cd_size=len(d) * 2))


@case("refuse")
def case_eocd_cd_offset_and_size_saturated(outdir):
    return _eocd_patch(outdir, "end record fields 0xFFFFFFFF with no ZIP64 locator",
                       lambda d, l: Z.EOCD.patch(d, l.eocd_off, cd_size=U32,
                                                          cd_offset=U32))


@case("refuse")
def case_eocd_multi_disk(outdir):
    return _eocd_patch(outdir, "end record: disk number 1",
                       lambda d, l: Z.EOCD.patch(d, l.eocd_off, disk=1, cd_disk=1))


@case("refuse")
def case_eocd_counts_differ(outdir):
    return _eocd_patch(outdir, "end record: entries on this disk != total entries",
                       lambda d, l: Z.EOCD.patch(d, l.eocd_off, on_disk=2, total=4))


@case("refuse")
def case_central_entry_bad_signature(outdir):
    return _eocd_patch(outdir, "the second central directory entry has a bad signature",
                       lambda d, l: Z.CENTRAL.patch(d, l.members[1].cd_off,
                                                             sig=0x02014B51))


@case("refuse")
def case_central_entry_name_overruns(outdir):
    return _eocd_patch(outdir, "the last central entry's name length runs past the directory",
                       lambda d, l: Z.CENTRAL.patch(d, l.members[3].cd_off,
                                                             name_len=60000))


@case("refuse")
def case_central_entry_extra_overruns(outdir):
    return _eocd_patch(outdir, "the first central entry's extra length runs past the directory",
                       lambda d, l: Z.CENTRAL.patch(d, l.members[0].cd_off,
                                                             extra_len=U16))


# --------------------------------------------------------------------------------------------
# ZIP64 end records and locators


@case("refuse")
def case_zip64_record_bad_signature(outdir):
    return _eocd_patch(outdir, "ZIP64 end record signature destroyed (locator intact)",
                       lambda d, l: Z.EOCD64.patch(d, l.z64_off, sig=0x06064B00), zip64=True)


@case("refuse")
def case_zip64_record_cd_offset_past_eof(outdir):
    return _eocd_patch(outdir, "ZIP64 end record: central directory offset 2**40",
                       lambda d, l: Z.EOCD64.patch(d, l.z64_off, cd_offset=1 << 40), zip64=True)


@case("refuse")
def case_zip64_record_cd_size_huge(outdir):
    return _eocd_patch(outdir, "ZIP64 end record: central directory size 2**62",
                       lambda d, l: Z.EOCD64.patch(d, l.z64_off, cd_size=1 << 62), zip64=True)


@case("refuse")
def case_zip64_record_multi_disk(outdir):
    return _eocd_patch(outdir, "ZIP64 end record: disk number 3",
                       lambda d, l: Z.EOCD64.patch(d, l.z64_off, disk=3), zip64=True)


@case("refuse")
def case_zip64_record_counts_differ(outdir):
    return _eocd_patch(outdir, "ZIP64 end record: entries on this disk != total",
                       lambda d, l: Z.EOCD64.patch(d, l.z64_off, on_disk=1), zip64=True)


@case("refuse")
def case_zip64_locator_multi_disk(outdir):
    return _eocd_patch(outdir, "ZIP64 locator: 5 disks",
                       lambda d, l: Z.LOC64.patch(d, l.loc_off, disks=5), zip64=True)


@case("refuse")
def case_zip64_locator_signature_broken(outdir):
    return _eocd_patch(outdir, "ZIP64 locator signature destroyed; the classic end record only "
                       "holds 0xFFFFFFFF",
                       lambda d, l: Z.LOC64.patch(d, l.loc_off, sig=0x07064B00), zip64=True)


@case("refuse")
def case_zip64_locator_to_zero_record_not_adjacent(outdir):
    return _eocd_patch(outdir, "ZIP64 locator points at offset 0 and the record does not sit "
                       "right before the locator (16 bytes in between)",
                       lambda d, l: Z.LOC64.patch(d, l.loc_off, offset=0), zip64=True,
                       gap=bytes(16))


def _forged_record(outdir, cd_off, cd_size, why):
    """A stored member whose content is a forged ZIP64 end record; the locator points at it."""
    forged = Z.zip64_end_record(on_disk=4, total=4, cd_size=cd_size, cd_offset=cd_off)
    ms = std_members()
    ms.insert(2, Member("forged.bin", forged))
    data, lay = build_zip(ms, zip64_end=True)
    Z.LOC64.patch(data, lay.loc_off, offset=lay.member("forged.bin").data_off)
    return refuse(write(outdir, "f.npz", data), why)


@case("refuse")
def case_zip64_locator_to_forged_record_huge_cd(outdir):
    return _forged_record(outdir, 1 << 50, 100, "ZIP64 locator points at a forged end record "
                          "(inside a member) whose central directory is 2**50 bytes in")


@case("refuse")
def case_zip64_locator_to_forged_record_garbage_cd(outdir):
    return _forged_record(outdir, 0, 500, "ZIP64 locator points at a forged end record whose "
                          "central directory is the first member's data")


# tolerated: the record is found right before the locator whatever the locator says (as in
# CPython's zipfile, which never follows the locator's offset)

def _tolerated_locator(outdir, value, why):
    data, lay = build_zip(std_members(), zip64_end=True)
    Z.LOC64.patch(data, lay.loc_off, offset=value(data, lay))
    return eio(write(outdir, "l.npz", data), why, bad=())


@case("eio")
def case_zip64_locator_past_eof(outdir):
    return _tolerated_locator(outdir, lambda d, l: len(d) + (1 << 30),
                              "ZIP64 locator points past the end of file (the record right "
                              "before the locator is used)")


@case("eio")
def case_zip64_locator_to_zero(outdir):
    return _tolerated_locator(outdir, lambda d, l: 0, "ZIP64 locator points at offset 0")


@case("eio")
def case_zip64_locator_to_garbage(outdir):
    return _tolerated_locator(outdir, lambda d, l: l.members[1].data_off + 77,
                              "ZIP64 locator points into deflate data")


@case("eio")
def case_zip64_locator_huge(outdir):
    return _tolerated_locator(outdir, lambda d, l: (1 << 64) - 1, "ZIP64 locator offset 2**64-1")


@case("eio")
def case_eocd_count_lies(outdir):
    data, lay = build_zip(std_members())
    Z.EOCD.patch(data, lay.eocd_off, on_disk=1, total=1)
    return eio(write(outdir, "c.npz", data), "end record claims 1 entry, the directory holds 4 "
               "(the walk trusts the directory size, as zipfile does)", bad=())


@case("eio")
def case_eocd_cd_offset_zero(outdir):
    # offset 0 with the right size makes the whole body look like prepended data (CPython does
    # the same arithmetic): every local header offset then lands past the central directory.
    data, lay = build_zip(std_members())
    Z.EOCD.patch(data, lay.eocd_off, cd_offset=0)
    return eio(write(outdir, "z.npz", data), "end record: central directory offset 0 (taken as "
               "prepended data, so every local header is out of place)", bad=STD_NAMES,
               good={})


# --------------------------------------------------------------------------------------------
# eio: members that cannot be served


def _member_case(outdir, why, victim, mutate=None, patch=None, members=None, good=None,
                 sizes=None, **kw):
    """Builds the standard members (or members), mutates Member victim before layout and/or
    patches the bytes after; victim then reads EIO and the rest as usual."""
    ms = members if members is not None else std_members()
    v = next(m for m in ms if m.name == victim.encode())
    if mutate:
        mutate(v)
    data, lay = build_zip(ms, **kw)
    if patch:
        patch(data, lay, lay.member(victim))
    return eio(write(outdir, "m.npz", data), why, bad=[victim], good=good, sizes=sizes)


@case("eio")
def case_encrypted_stored(outdir):
    return _member_case(outdir, "strong encryption flag on a stored member", "a.npy",
                        mutate=lambda m: setattr(m, "flags", m.flags | 0x41))


@case("eio")
def case_encrypted_deflated(outdir):
    return _member_case(outdir, "strong encryption flag on a deflated member", "d.npy",
                        mutate=lambda m: setattr(m, "flags", m.flags | 0x41))


def _register_methods():
    for method in (1, 9, 12, 14, 93, 95, 99, 0xFFFF):
        def fn(outdir, method=method):
            return _member_case(outdir, f"compression method {method}", "b.npy",
                                mutate=lambda m: setattr(m, "method", method))
        fn.__name__ = f"case_method_{method}"
        case("eio")(fn)


_register_methods()


@case("eio")
def case_local_signature_bad(outdir):
    return _member_case(outdir, "local header signature PK\\3\\5", "c.npy",
                        patch=lambda d, l, m: Z.LOCAL.patch(d, m.local_off, sig=0x05034B50))


@case("eio")
def case_local_name_length_huge(outdir):
    # the local name+extra length push the data start past the central directory
    return _member_case(outdir, "local header name length 65535 (data start beyond the "
                        "central directory)", "d.npy",
                        patch=lambda d, l, m: Z.LOCAL.patch(d, m.local_off, name_len=U16,
                                                                extra_len=U16))


@case("eio")
def case_local_name_shorter_stored(outdir):
    """The local header's name length is 10 bytes shorter than the central one, so the data
    would start 10 bytes early (inside the name). For a stored member nothing else (no CRC
    check, no overlap) catches it: serving it gives bytes that are not the member's. zipfile
    refuses such a member ("File name in directory and header differ")."""
    ms = std_members()
    ms[2].name = b"c.npy" + b"x" * 10

    def patch(d, l, m):
        Z.LOCAL.patch(d, m.local_off, name_len=5)

    return _member_case(outdir, "stored member whose local name length disagrees with the "
                        "central one (data offset shifted into the name)", "c.npyxxxxxxxxxx",
                        members=ms, patch=patch,
                        good={n: contents()[n] for n in STD_NAMES if n != "c.npy"})


@case("eio")
def case_local_header_inside_other_data(outdir):
    """A central-only entry whose local header offset points into another member's data
    (where there is no signature): only the entry itself fails; the member it points into
    is not collateral damage."""
    ms = std_members()
    ms.append(Member("ghost.npy", b"\0" * 64, share=ms[0]))
    data, lay = build_zip(ms)
    ghost = lay.member("ghost.npy")
    Z.CENTRAL.patch(data, ghost.cd_off, offset=lay.member("a.npy").data_off + 100)
    return eio(write(outdir, "g.npz", data), "central entry pointing into another member's "
               "data", bad=["ghost.npy"], good={n: contents()[n] for n in STD_NAMES})


@case("eio")
def case_local_header_past_central_directory(outdir):
    return _member_case(outdir, "central entry's local header offset points into the central "
                        "directory", "c.npy",
                        patch=lambda d, l, m: Z.CENTRAL.patch(d, m.cd_off, offset=l.cd_off + 4))


@case("eio")
def case_local_header_offset_past_eof(outdir):
    return _member_case(outdir, "local header offset 0xFFFFFFF0", "a.npy",
                        patch=lambda d, l, m: Z.CENTRAL.patch(d, m.cd_off, offset=0xFFFFFFF0))


@case("eio")
def case_zip64_extra_missing(outdir):
    return _member_case(outdir, "central usize 0xFFFFFFFF without a ZIP64 extra", "c.npy",
                        patch=lambda d, l, m: Z.CENTRAL.patch(d, m.cd_off, usize=U32))


@case("eio")
def case_zip64_extra_too_short(outdir):
    # ZIP64 sizes for both fields, but the extra holds only 4 bytes
    def mutate(m):
        m.zip64 = True
    def patch(d, l, m):
        off = m.cd_off + 46 + len(m.name)
        assert struct.unpack_from("<HH", d, off) == (1, 16)
        put(d, off, "HH", 1, 4)              # declared length 4, the rest becomes a junk field
        put(d, off + 8, "HH", 0x7777, 8)     # ... which we make a well-formed unknown field
    return _member_case(outdir, "ZIP64 extra of 4 bytes where 16 are needed", "a.npy",
                        mutate=mutate, patch=patch)


@case("eio")
def case_zip64_extra_offset_missing(outdir):
    # header offset saturated; the ZIP64 extra only holds the two sizes
    return _member_case(outdir, "local header offset 0xFFFFFFFF, ZIP64 extra without it",
                        "b.npy", mutate=lambda m: setattr(m, "zip64", True),
                        patch=lambda d, l, m: Z.CENTRAL.patch(d, m.cd_off, offset=U32))


@case("eio")
def case_data_past_central_directory(outdir):
    return _member_case(outdir, "last member's csize runs past the central directory", "d.npy",
                        mutate=lambda m: setattr(m, "csize", len(m.raw) + 200))


@case("eio")
def case_data_overlaps_next_header(outdir):
    return _member_case(outdir, "first member's data (csize) runs into the next local header",
                        "a.npy", mutate=lambda m: (setattr(m, "csize", len(m.raw) + 40),
                                                   setattr(m, "usize", len(m.raw) + 40)))


@case("eio")
def case_stored_terabyte_claim(outdir):
    return _member_case(outdir, "stored member claiming 2**40 bytes (ZIP64 sizes)", "c.npy",
                        mutate=lambda m: (setattr(m, "usize", 1 << 40),
                                          setattr(m, "csize", 1 << 40)),
                        sizes={"c.npy": 1 << 40})


@case("eio")
def case_stored_sizes_differ(outdir):
    return _member_case(outdir, "stored member with csize != usize", "a.npy",
                        mutate=lambda m: setattr(m, "usize", m.usize - 8))


@case("eio")
def case_member_on_other_disk(outdir):
    return _member_case(outdir, "central entry: disk number start 2", "c.npy",
                        mutate=lambda m: setattr(m, "disk", 2))


@case("eio")
def case_shared_local_header_two(outdir):
    ms = std_members()
    a = ms[0]
    ms.insert(1, Member("alias.npy", a.content, share=a))
    data, lay = build_zip(ms)
    good = {n: contents()[n] for n in STD_NAMES}
    return eio(write(outdir, "s.npz", data), "two central entries share one local header: the "
               "one the header names (a.npy) reads, the alias is flagged", bad=["alias.npy"],
               good=good)


@case("eio")
def case_shared_local_header_three(outdir):
    ms = std_members()
    b = ms[1]
    ms.append(Member("b2.npy", b.content, 8, raw=b.raw, share=b))
    ms.append(Member("b3.npy", b.content, 8, raw=b.raw, share=b))
    data, lay = build_zip(ms)
    good = {n: contents()[n] for n in STD_NAMES}
    return eio(write(outdir, "s.npz", data), "three central entries share the deflated "
               "member's header: the one it names reads, the aliases are flagged",
               bad=["b2.npy", "b3.npy"], good=good)


@case("eio")
def case_overlap_chain(outdir):
    """Overlapping entries as in a 'non-recursive zip bomb': ten local headers in a row, each
    entry's data running over all the later headers into one shared deflate kernel."""
    kernel_content = contents()["d.npy"]
    kernel = Member("k9.npy", kernel_content, 8, raw=_deflated("d.npy"))
    heads = [Member(f"k{i}.npy", b"", 0) for i in range(9)]
    data, lay = build_zip(heads + [kernel, Member("tail.npy", contents()["c.npy"])])
    end = kernel.data_off + len(kernel.raw)
    for m in heads:
        cs = end - m.data_off
        Z.CENTRAL.patch(data, m.cd_off, flags=0, method=8, crc=kernel.crc, csize=cs,
                        usize=len(kernel_content))
        Z.LOCAL.patch(data, m.local_off, method=8)
    good = {"k9.npy": kernel_content, "tail.npy": contents()["c.npy"]}
    return eio(write(outdir, "o.npz", data), "ten overlapping entries sharing one deflate "
               "kernel: all but the last are flagged", bad=[m.name.decode() for m in heads],
               good=good)


@case("eio")
def case_deflate_usize_larger(outdir):
    return _member_case(outdir, "declared usize 600 kB larger than the real deflate output "
                        "(CRC kept)", "b.npy",
                        mutate=lambda m: setattr(m, "usize", m.usize + 600_000))


@case("eio")
def case_deflate_usize_smaller(outdir):
    return _member_case(outdir, "declared usize 1 byte smaller than the real deflate output "
                        "(CRC kept)", "b.npy",
                        mutate=lambda m: setattr(m, "usize", m.usize - 1))


@case("eio")
def case_deflate_usize_much_smaller(outdir):
    return _member_case(outdir, "declared usize 100 bytes for a 1.5 MB deflate output",
                        "b.npy", mutate=lambda m: setattr(m, "usize", 100))


@case("eio")
def case_deflate_small_usize_larger(outdir):
    return _member_case(outdir, "small deflated member declaring 1 byte more than it holds",
                        "d.npy", mutate=lambda m: setattr(m, "usize", m.usize + 1))


@case("eio")
def case_deflate_csize_smaller(outdir):
    return _member_case(outdir, "csize cut to half the deflate stream", "b.npy",
                        mutate=lambda m: setattr(m, "csize", len(m.raw) // 2))


@case("eio")
def case_deflate_corrupt_bits(outdir):
    def mutate(m):
        raw = bytearray(m.raw)
        at = len(raw) // 2
        for i in range(at, at + 16):
            raw[i] ^= 0xFF
        m.raw = bytes(raw)
    return _member_case(outdir, "16 bytes flipped in the middle of a deflate stream", "b.npy",
                        mutate=mutate)


@case("eio")
def case_deflate_corrupt_start(outdir):
    def mutate(m):
        m.raw = bytes([m.raw[0] ^ 0x55]) + m.raw[1:]
    return _member_case(outdir, "first byte of a deflate stream altered", "d.npy",
                        mutate=mutate)


@case("eio")
def case_deflate_invalid_block_type(outdir):
    return _member_case(outdir, "deflate stream starting with block type 3 (reserved)", "d.npy",
                        mutate=lambda m: setattr(m, "raw", b"\x07" + m.raw[1:]))


@case("eio")
def case_deflate_empty_stream(outdir):
    return _member_case(outdir, "deflated member with csize 0 claiming 3000 bytes", "d.npy",
                        mutate=lambda m: (setattr(m, "raw", b""), setattr(m, "csize", 0),
                                          setattr(m, "usize", 3000)))


@case("eio")
def case_deflate_crc_mismatch(outdir):
    return _member_case(outdir, "central CRC-32 of a deflated member off by one bit", "b.npy",
                        mutate=lambda m: setattr(m, "crc", m.crc ^ 1))


@case("eio")
def case_deflate_small_crc_mismatch(outdir):
    return _member_case(outdir, "central CRC-32 of a one-chunk deflated member wrong", "d.npy",
                        mutate=lambda m: setattr(m, "crc", m.crc ^ 0x80000000))


@case("eio")
def case_deflate_trailing_garbage(outdir):
    """The stream ends before csize does; the junk after it is never needed (zipfile reads
    such members too), so nothing fails."""
    ms = std_members()
    ms[3].raw = ms[3].raw + b"\xde\xad\xbe\xef" * 8
    ms[3].csize = len(ms[3].raw)
    data, lay = build_zip(ms)
    return eio(write(outdir, "tg.npz", data), "deflate stream followed by 32 junk bytes inside "
               "csize (tolerated)", bad=())


@functools.lru_cache(maxsize=None)
def _tera_stream():
    return deflate(bytes(1 << 16), 9)


@case("eio")
def case_terabyte_claim(outdir):
    """A zip-bomb header: a 64 KiB deflate stream whose ZIP64 usize says 2**40."""
    ms = std_members()
    ms.insert(1, Member("tera.npy", bytes(1 << 16), 8, raw=_tera_stream(), usize=1 << 40,
                        zip64=True))
    data, lay = build_zip(ms)
    return eio(write(outdir, "tb.npz", data), "ZIP64 usize 2**40 for a 100-byte deflate stream",
               bad=["tera.npy"], good={n: contents()[n] for n in STD_NAMES},
               sizes={"tera.npy": 1 << 40})


@case("eio")
def case_stored_crc_unchecked(outdir):
    """Stored members are served straight from the archive (so that they can be mmap'd): the
    man page checks size and CRC only for deflated members. Pinned here: the bytes come back
    as stored, whatever the CRC says."""
    ms = std_members()
    ms[2].crc ^= 0xFFFF
    data, lay = build_zip(ms)
    return eio(write(outdir, "sc.npz", data), "stored member with a wrong CRC-32 (not checked "
               "for stored members, by design)", bad=())


# --------------------------------------------------------------------------------------------
# eio: hand-made deflate streams (one block over 256 MiB) and a real zip bomb


class _Bits:
    """LSB-first bit packer, as deflate wants."""

    def __init__(self):
        self.acc = 0
        self.n = 0
        self.out = bytearray()

    def put(self, value, nbits):
        self.acc |= value << self.n
        self.n += nbits
        while self.n >= 8:
            self.out.append(self.acc & 0xFF)
            self.acc >>= 8
            self.n -= 8

    def code(self, code, nbits):
        """A Huffman code (defined MSB-first)."""
        self.put(int(format(code, f"0{nbits}b")[::-1], 2), nbits)

    def flush(self):
        if self.n:
            self.out.append(self.acc & 0xFF)
            self.acc = self.n = 0
        return bytes(self.out)


@functools.lru_cache(maxsize=None)
def one_block_stream(units=131072):
    """A single fixed-Huffman deflate block: five 0xFF literals, then 8*units copies of
    (length 258, distance 1), then end of block: 5 + 2064*units bytes of 0xFF from 13 bytes per
    8 matches. The default is 258 MiB, in 1.7 MB.
    Returns (raw, usize, crc)."""
    head = _Bits()
    head.put(1, 1)                   # BFINAL
    head.put(1, 2)                   # BTYPE 01: fixed Huffman
    for _ in range(5):
        head.code(0x190 + (0xFF - 144), 9)   # literal 0xFF: 9-bit code
    assert head.n == 0               # 3 + 45 bits: byte aligned, so the matches repeat bytewise
    unit = _Bits()
    for _ in range(8):
        unit.code(0xC0 + (285 - 280), 8)     # length code 285 = 258, no extra bits
        unit.code(0, 5)                      # distance code 0 = 1
    assert unit.n == 0
    tail = _Bits()
    tail.code(0, 7)                  # end of block (256)
    raw = head.flush() + unit.flush() * units + tail.flush()
    usize = 5 + 8 * 258 * units
    crc = 0
    ff = b"\xff" * (1 << 20)
    left = usize
    while left:
        n = min(left, len(ff))
        crc = zlib.crc32(ff[:n] if n < len(ff) else ff, crc)
        left -= n
    return raw, usize, crc


@case("eio")
def case_single_block_over_256m(outdir):
    raw, usize, crc = one_block_stream()
    assert usize > MAX_CHUNK
    ms = std_members()
    # Such a block is streamed through in pieces now (test_budget reads one); what must still
    # be caught at its far end is a CRC that does not match.
    ms.append(Member("block.npy", b"", 8, raw=raw, usize=usize, crc=crc ^ 0x1))
    data, lay = build_zip(ms)
    return eio(write(outdir, "blk.npz", data), f"one deflate block producing {usize} bytes "
               f"from {len(raw)}, with a wrong CRC-32", bad=["block.npy"],
               good={n: contents()[n] for n in STD_NAMES}, sizes={"block.npy": usize})


BOMB_MIB = 200


@functools.lru_cache(maxsize=None)
def _bomb_stream(mib=BOMB_MIB):
    """An .npy of mib MiB of zeros (uint8) as a level-9 deflate stream, made in pieces.
    Returns (raw, usize, crc, sha256)."""
    body = mib << 20
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "|u1", "fortran_order": False,
                                               "shape": (body,)})
    header = hdr.getvalue()
    assert header.startswith(b"\x93NUMPY") and len(header) % 64 == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    h = hashlib.sha256(header)
    crc = zlib.crc32(header)
    parts = [c.compress(header)]
    zero = bytes(4 << 20)
    for _ in range(body // len(zero)):
        parts.append(c.compress(zero))
        h.update(zero)
        crc = zlib.crc32(zero, crc)
    parts.append(c.flush())
    return b"".join(parts), len(header) + body, crc, h.hexdigest()


def zip_bomb(outdir, mib=BOMB_MIB):
    """The real high-ratio archive: bomb.npy (mib MiB of zeros from ~mib KiB), tera.npy (claims
    2**40), small.npy. Returns (path, details) as for an "eio" case."""
    raw, usize, crc, sha = _bomb_stream(mib)
    small = contents()["c.npy"]
    ms = [Member("bomb.npy", b"", 8, raw=raw, usize=usize, crc=crc),
          Member("tera.npy", bytes(1 << 16), 8, raw=_tera_stream(), usize=1 << 40, zip64=True),
          Member("small.npy", small)]
    data, lay = build_zip(ms)
    path = write(outdir, "bomb.npz", data)
    return path, {"why": f"zip bomb: {usize} bytes from {len(raw)}, plus a 2**40 claim",
                  "bad": ["tera.npy"], "good": {"bomb.npy": Digest(usize, sha),
                                                "small.npy": small},
                  "paths": files("bomb.npy", "tera.npy", "small.npy"),
                  "sizes": {"bomb.npy": usize, "tera.npy": 1 << 40}, "csize": len(raw)}


@case("eio")
def case_zip_bomb_ratio_1000(outdir):
    path, details = zip_bomb(outdir)
    return path, "eio", details


# --------------------------------------------------------------------------------------------
# renamed: names that must not escape the mount, and collisions


def _names_case(outdir, why, entries, expected, dirs=()):
    """entries: [(raw name bytes, content) or (raw name, content, flags)]; expected:
    {path bytes: content}; dirs: extra expected directories (bytes). Parent directories of
    every expected path are implied."""
    ms = []
    for e in entries:
        name, content = e[0], e[1]
        flags = e[2] if len(e) > 2 else None
        ms.append(Member(name, content, flags=flags))
    data, lay = build_zip(ms)
    paths = {}
    good = {}
    for p, content in expected.items():
        s = os.fsdecode(p)
        paths[s] = "file"
        good[s] = content
        parts = s.split("/")
        for i in range(1, len(parts)):
            paths.setdefault("/".join(parts[:i]), "dir")
    for d in dirs:
        s = os.fsdecode(d)
        parts = s.split("/")
        for i in range(1, len(parts) + 1):
            paths.setdefault("/".join(parts[:i]), "dir")
    for p, kind in paths.items():
        assert kind == "dir" or not any(q.startswith(p + "/") for q in paths), p
    return write(outdir, "n.npz", data), "renamed", {"why": why, "paths": paths, "good": good,
                                                     "bad": [], "sizes": {}}


def _c(tag):
    """A distinct small content per entry."""
    return npy(np.array([sum(tag.encode()) % 251, len(tag)], dtype=np.int64)) + tag.encode()


@case("renamed")
def case_names_dotdot(outdir):
    e = [(b"../up.npy", _c("up")), (b"../../../../etc/evil.npy", _c("evil")),
         (b"a/../../b.npy", _c("ab")), (b"./dot.npy", _c("dot")),
         (b"x/./y/.././z.npy", _c("xyz")), (b"..", _c("dd")), (b"../", b"")]
    exp = {b"up.npy": _c("up"), b"etc/evil.npy": _c("evil"), b"a/b.npy": _c("ab"),
           b"dot.npy": _c("dot"), b"x/y/z.npy": _c("xyz"), b"_": _c("dd")}
    return _names_case(outdir, "'..' and '.' components are dropped", e, exp)


@case("renamed")
def case_names_absolute(outdir):
    e = [(b"/abs.npy", _c("abs")), (b"//double//slash.npy", _c("dbl")),
         (b"/tmp/../root.npy", _c("root")), (b"/", b""), (b"///", b"")]
    exp = {b"abs.npy": _c("abs"), b"double/slash.npy": _c("dbl"), b"tmp/root.npy": _c("root")}
    return _names_case(outdir, "leading and repeated '/' are stripped", e, exp)


@case("renamed")
def case_names_nul(outdir):
    e = [(b"nul\x00byte.npy", _c("nb")), (b"\x00lead.npy", _c("lead")),
         (b"dir\x00x/in.npy", _c("in")), (b"\x00", _c("only"))]
    exp = {b"nul_byte.npy": _c("nb"), b"_lead.npy": _c("lead"), b"dir_x/in.npy": _c("in"),
           b"_": _c("only")}
    return _names_case(outdir, "NUL bytes become '_'", e, exp)


@case("renamed")
def case_names_control_characters(outdir):
    names = [b"ctl\x01\x02\x1b[31m.npy", b"new\nline.npy", b"tab\there.npy", b"del\x7f.npy",
             b"back\\slash.npy", b"..\\..\\win.npy", b" space .npy", b"-dash.npy", b"~tilde",
             b"*?[glob].npy", b"\r", b"..."]
    e = [(n, _c(repr(n))) for n in names]
    exp = {n: _c(repr(n)) for n in names}
    return _names_case(outdir, "control characters, backslashes and shell metacharacters are "
                       "kept verbatim (they are valid Linux names)", e, exp)


@case("renamed")
def case_names_64k(outdir):
    long_ascii = b"L" * 65531 + b".npy"
    long_utf8 = "é".encode() * 32767               # 65534 bytes, 2-byte characters
    long_3byte = "€".encode() * 21845               # 65535 bytes, 3-byte characters
    e = [(long_ascii, _c("ascii")), (long_utf8, _c("utf8"), 0x800),
         (long_3byte, _c("euro"), 0x800)]
    exp = {b"L" * 251 + b".npy": _c("ascii"), "é".encode() * 127: _c("utf8"),
           "€".encode() * 85: _c("euro")}
    return _names_case(outdir, "64 KiB names are cut to 255 bytes at a UTF-8 boundary, "
                       "keeping their extension", e, exp)


@case("renamed")
def case_names_64k_many_components(outdir):
    comp = b"c" * 300
    name = b"/".join([comp] * 217) + b"/f"            # 65,533 bytes, 218 components
    assert len(name) <= 65535
    exp_path = b"/".join([b"c" * 255] * 217) + b"/f"
    return _names_case(outdir, "a 64 KiB name of 217 over-long components (path > PATH_MAX)",
                       [(name, _c("deep"))], {exp_path: _c("deep")})


@case("renamed")
def case_names_deep_200(outdir):
    e = [(b"d/" * 200 + b"leaf.npy", _c("leaf")), (b"d/" * 100 + b"mid.npy", _c("mid")),
         (b"d/" * 199 + b"d", _c("clash"))]       # a file where the 200th directory is
    exp = {b"d/" * 200 + b"leaf.npy": _c("leaf"), b"d/" * 100 + b"mid.npy": _c("mid"),
           b"d/" * 199 + b"d~1": _c("clash")}
    return _names_case(outdir, "200 levels of nesting", e, exp)


@case("renamed")
def case_names_duplicates(outdir):
    e = [(b"dup.npy", _c("A")), (b"dup.npy", _c("B")), (b"dup.npy", _c("C")),
         (b"x", _c("x0")), (b"x~1", _c("x1")), (b"x", _c("x2"))]
    exp = {b"dup.npy": _c("C"), b"dup~1.npy": _c("B"), b"dup~2.npy": _c("A"),
           b"x": _c("x2"), b"x~1": _c("x1"), b"x~2": _c("x0")}
    return _names_case(outdir, "duplicates: the last keeps the name, earlier ones get ~1, ~2 "
                       "counting backwards, skipping names taken", e, exp)


@case("renamed")
def case_names_suffix_collisions(outdir):
    # every member that can keep its own path does (f~1, f~2 and the last f); the earlier
    # f's then take the first free suffixes, counting backwards: f(3) -> f~3, f(0) -> f~4
    e = [(b"f", _c("0")), (b"f~1", _c("1")), (b"f~2", _c("2")), (b"f", _c("3")),
         (b"f", _c("4"))]
    exp = {b"f": _c("4"), b"f~1": _c("1"), b"f~2": _c("2"), b"f~3": _c("3"),
           b"f~4": _c("0")}
    return _names_case(outdir, "members literally named like the ~N suffixes keep their "
                       "names; suffixes skip them", e, exp)


@case("renamed")
def case_names_many_duplicates(outdir):
    n = 1000
    e = [(b"same.npy", b"%d" % i) for i in range(n)]
    exp = {b"same.npy": b"%d" % (n - 1)}
    exp.update({b"same~%d.npy" % (n - 1 - i): b"%d" % i for i in range(n - 1)})
    return _names_case(outdir, "1000 members with one name", e, exp)


@case("renamed")
def case_names_file_vs_directory(outdir):
    e = [(b"same.npy", _c("file")), (b"same.npy/inner.npy", _c("inner")),
         (b"explicit/", b""), (b"explicit", _c("expl")),
         (b"late", _c("late")), (b"late/", b""),
         (b"sub/x.npy", _c("subx")), (b"sub/..", _c("subdotdot"))]
    exp = {b"same~1.npy": _c("file"), b"same.npy/inner.npy": _c("inner"),
           b"explicit~1": _c("expl"), b"late~1": _c("late"), b"sub/x.npy": _c("subx"),
           b"sub~1": _c("subdotdot")}
    return _names_case(outdir, "a file whose path is also a directory gets ~1", e, exp,
                       dirs=[b"explicit", b"late"])


@case("renamed")
def case_names_empty(outdir):
    e = [(b"", _c("empty")), (b".", _c("dot")), (b"..", _c("dotdot")), (b"/.//..//", b""),
         (b"keep.npy", _c("keep"))]
    exp = {b"_": _c("dotdot"), b"_~1": _c("dot"), b"_~2": _c("empty"), b"keep.npy": _c("keep")}
    return _names_case(outdir, "names that are empty after cleaning become '_'", e, exp)


@case("renamed")
def case_names_cut_collision(outdir):
    base = b"T" * 300
    e = [(base + b"1.npy", _c("one")), (base + b"2.npy", _c("two"))]
    exp = {b"T" * 251 + b".npy": _c("two"), b"T" * 249 + b"~1.npy": _c("one")}
    return _names_case(outdir, "names equal after the 255-byte cut collide", e, exp)


@case("renamed")
def case_names_cut_without_char_boundary(outdir):
    """An over-long component of UTF-8 continuation bytes only (flag 11 set): there is no
    character boundary to cut at, so the bytes are cut as they are (it must not vanish)."""
    e = [(b"\x80" * 300, _c("cont"), 0x800), (b"dir/" + b"\xbf" * 400 + b"/f.npy", _c("f"),
                                                0x800)]
    exp = {b"\x80" * 255: _c("cont"), b"dir/" + b"\xbf" * 255 + b"/f.npy": _c("f")}
    return _names_case(outdir, "over-long components with no UTF-8 character boundary", e, exp)


@case("renamed")
def case_names_cp437_and_bad_utf8(outdir):
    e = [(b"caf\x82.npy", _c("cafe"), 0), (b"\xb0\xe4\xf6.npy", _c("box"), 0),
         (b"bad\xff\xfe.npy", _c("bad"), 0x800), (b"ok\xc3\xa9.npy", _c("ok"), 0x800)]
    exp = {"café.npy".encode(): _c("cafe"), "░Σ÷.npy".encode(): _c("box"),
           b"bad\xff\xfe.npy": _c("bad"), "oké.npy".encode(): _c("ok")}
    return _names_case(outdir, "CP437 names converted; invalid UTF-8 with flag 11 passed as "
                       "bytes", e, exp)


@case("renamed")
def case_names_directory_entries_only(outdir):
    e = [(b"empty/", b""), (b"a/b/c/", b""), (b"../outside/", b""), (b"f.npy", _c("f"))]
    return _names_case(outdir, "directory entries, including one trying to climb out", e,
                       {b"f.npy": _c("f")}, dirs=[b"empty", b"a/b/c", b"outside"])


# --------------------------------------------------------------------------------------------
# a million members


def many_members(path, n, per_dir=1000):
    """Writes a ZIP64 archive of n stored members named 'dNNNN/mNNNNNNN' (per_dir per
    directory), member i holding the 4 bytes of i (little endian), with numpy record arrays:
    a million members take a couple of seconds. Returns path."""
    assert n < 10 ** 7 and n // per_dir < 10 ** 4
    i = np.arange(n, dtype=np.int64)
    nlen = 14                                       # 'dNNNN/mNNNNNNN'
    names = np.empty((n, nlen), dtype=np.uint8)
    names[:, 0] = ord("d")
    dnum = i // per_dir
    for k in range(4):
        names[:, 1 + k] = 48 + (dnum // 10 ** (3 - k)) % 10
    names[:, 5] = ord("/")
    names[:, 6] = ord("m")
    for k in range(7):
        names[:, 7 + k] = 48 + (i // 10 ** (6 - k)) % 10
    return many_named_members(path, names)


def many_named_members(path, names):
    """Writes a ZIP64 archive of stored members named by the rows of names (an (n, nlen)
    uint8 array, all names of one length), member i holding the 4 bytes of i (little
    endian). Returns path."""
    n, nlen = names.shape
    i = np.arange(n, dtype=np.int64)
    data = i.astype("<u4")
    crc = np.fromiter((zlib.crc32(x) for x in data.view(np.uint8).reshape(n, 4)), np.uint32, n)

    ldt = Z.LOCAL.dtype(("name", "u1", (nlen,)), ("data", "<u4"))
    loc = np.zeros(n, dtype=ldt)
    loc["sig"] = Z.SIG_LOCAL
    loc["version"] = 20
    loc["date"] = DOS_DATE
    loc["crc"] = crc
    loc["csize"] = loc["usize"] = 4
    loc["name_len"] = nlen
    loc["name"] = names
    loc["data"] = data
    assert ldt.itemsize == Z.LOCAL.size + nlen + 4

    cdt = Z.CENTRAL.dtype(("name", "u1", (nlen,)))
    cen = np.zeros(n, dtype=cdt)
    cen["sig"] = Z.SIG_CENTRAL
    cen["made_by"] = cen["version"] = 20
    cen["date"] = DOS_DATE
    cen["crc"] = crc
    cen["csize"] = cen["usize"] = 4
    cen["name_len"] = nlen
    cen["offset"] = i * ldt.itemsize
    cen["name"] = names
    assert cdt.itemsize == Z.CENTRAL.size + nlen

    cd_off = n * ldt.itemsize
    cd_size = n * cdt.itemsize
    assert cd_off + cd_size < U32
    z64_off = cd_off + cd_size
    tail = (Z.zip64_end_record(on_disk=n, total=n, cd_size=cd_size, cd_offset=cd_off) +
            Z.zip64_locator(z64_off) +
            Z.end_record(on_disk=min(n, U16), total=min(n, U16), cd_size=cd_size,
                         cd_offset=cd_off))
    with open(path, "wb") as f:
        f.write(loc.tobytes())
        f.write(cen.tobytes())
        f.write(tail)
    return Path(path)


def many_member_name(i, per_dir=1000):
    return f"d{i // per_dir:04d}/m{i:07d}"


# --------------------------------------------------------------------------------------------


if __name__ == "__main__":                          # python3 hostile.py OUTDIR: write them all
    import sys
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus")
    for name in CASES:
        p, cls, d = build(name, out)
        print(f"{cls:8} {name:50} {p}")
