"""Archives for the npzmount integration tests: writing them (zipfile, Info-ZIP), the test
arrays, and byte patches of written archives located with ziptool's parser. Part of
npz_support (import that)."""

import io
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ziptool as Z  # noqa: E402  (tests/ziptool.py)


def npy_bytes(arr, allow_pickle=True):
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=allow_pickle)
    return b.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED, comment=b"", compresslevel=None):
    """members: iterable of (name or ZipInfo, bytes). Duplicates allowed."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'Duplicate name'
        with zipfile.ZipFile(path, "w", compression=compression,
                             compresslevel=compresslevel) as zf:
            for name, data in members:
                zf.writestr(name, data)
            if comment:
                zf.comment = comment
    return Path(path)


Entry = Z.Entry


def zip_layout(data):
    """Parses the archive bytes (no prepended data) and returns a list of Entry with cd_off,
    local_off, data_off, name (bytes), flags, method, crc, csize, usize (see ziptool.parse)."""
    return Z.parse(data).entries


def find_entry(entries, name):
    if isinstance(name, str):
        name = name.encode()
    hits = [e for e in entries if e.name == name]
    assert len(hits) == 1, f"{name!r}: {len(hits)} entries"
    return hits[0]


def patch_file(path, edits):
    """edits: iterable of (offset, bytes)."""
    with open(path, "r+b") as f:
        for off, b in edits:
            f.seek(off)
            f.write(b)


def set_flags_and_method(path, name, flags_or=0, method=None):
    """Sets bits in the general purpose flags and/or the method, in both the local and the
    central header of member name."""
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    edits = []
    for rec, off in ((Z.LOCAL, e.local_off), (Z.CENTRAL, e.cd_off)):
        h = rec.unpack(data, off)
        edits.append((off + rec.offset("flags"),
                      struct.pack("<HH", h.flags | flags_or,
                                  h.method if method is None else method)))
    patch_file(path, edits)


def set_central_crc(path, name, crc):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    patch_file(path, [(e.cd_off + Z.CENTRAL.offset("crc"), struct.pack("<I", crc & Z.U32))])
    return e.crc


def set_central_sizes(path, name, csize, usize):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    patch_file(path, [(e.cd_off + Z.CENTRAL.offset("csize"), struct.pack("<II", csize, usize))])


def set_central_local_offset(path, name, offset):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    patch_file(path, [(e.cd_off + Z.CENTRAL.offset("offset"), struct.pack("<I", offset))])


def rename_member_bytes(path, old, new):
    """Replaces member name old by new (same length, bytes) in both headers."""
    assert len(old) == len(new)
    data = bytearray(Path(path).read_bytes())
    e = find_entry(zip_layout(bytes(data)), old)
    for off in (e.local_off + Z.LOCAL.size, e.cd_off + Z.CENTRAL.size):
        assert data[off : off + len(old)] == old
        data[off : off + len(old)] = new
    Path(path).write_bytes(bytes(data))


def corrupt_member_data(path, name, fraction=0.5, count=16):
    """XORs count bytes of member name's stored (compressed) data with 0xFF, starting at
    fraction of the way in. Returns the Entry."""
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    assert e.csize > count * 4, "member too small to corrupt in the middle"
    at = e.data_off + int(e.csize * fraction)
    chunk = bytes(b ^ 0xFF for b in data[at : at + count])
    patch_file(path, [(at, chunk)])
    return e


def member_raw_data(path, name):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    return data[e.data_off : e.data_off + e.csize], e


# --------------------------------------------------------------------------------------------
# test data

STRUCT_DTYPE = np.dtype([("id", "<i4"), ("pos", ">f8", (3,)), ("name", "S7"), ("ok", "?")])


def make_stored_arrays():
    """Arrays covering the layouts np.load(mmap_mode='r') must handle (keys -> arrays)."""
    rng = np.random.default_rng(20240601)
    s = np.zeros(1000, dtype=STRUCT_DTYPE)
    s["id"] = np.arange(1000)
    s["pos"] = rng.standard_normal((1000, 3))
    s["name"] = [b"n%05d" % i for i in range(1000)]
    s["ok"] = rng.integers(0, 2, 1000).astype(bool)
    arrays = {
        "c_order": rng.standard_normal((300, 201)),
        "f_order": np.asfortranarray(rng.standard_normal((123, 457)).astype(np.float32)),
        "f_order_3d": np.asfortranarray(rng.integers(-9, 9, (7, 11, 13)).astype(np.int16)),
        "structured": s,
        "big_endian_i4": np.arange(-5000, 5000, dtype=">i4"),
        "big_endian_f8": rng.standard_normal(777).astype(">f8"),
        "zero_d": np.array(42.5),
        "zero_d_int": np.array(-7, dtype=np.int64),
        "empty": np.zeros((0, 5)),
        "empty_1d_be": np.zeros(0, dtype=">u2"),
        "empty_struct": np.zeros(0, dtype=STRUCT_DTYPE),
        "bool_": rng.integers(0, 2, 4097).astype(bool),
        "int8": rng.integers(-128, 128, 10001, dtype=np.int8),
        "uint16": rng.integers(0, 2**16, (33, 65), dtype=np.uint16),
        "uint64": rng.integers(0, 2**63, 999, dtype=np.uint64),
        "float16": rng.standard_normal(3001).astype(np.float16),
        "complex128": (rng.standard_normal(500) + 1j * rng.standard_normal(500)),
        "datetime64": np.arange("2000-01-01", "2000-03-01", dtype="datetime64[h]"),
        "unicode": np.array(["alpha", "βeta", "γάμμα", "", "delta-long-string"]),
        "bytes_": np.array([b"ab", b"", b"xyz"]),
        # ~3 MiB, not a multiple of the page size: the random pread target.
        "medium": rng.integers(0, 2**31, 786_433, dtype=np.int32),
        "a/b": np.arange(10),
        "a/c/d": np.eye(4),
        "deep/er/still/x": np.arange(6, dtype=np.uint8).reshape(2, 3),
        "with space": np.ones(3),
        "ünïcødé_key": np.full(5, 3, dtype=np.int32),
    }
    objects = np.empty(5, dtype=object)
    objects[:] = ["text", 12345, (1, 2.5, "t"), None, {"k": [1, 2, 3]}]
    arrays["objects"] = objects
    return arrays


def set_central_attrs(path, name, create_system=None, external_attr=None):
    """Patches 'version made by' (its high byte: the host system) and/or the external
    attributes of member name in the central directory."""
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    edits = []
    if create_system is not None:
        # the high byte of 'version made by'
        edits.append((e.cd_off + Z.CENTRAL.offset("made_by") + 1, bytes([create_system])))
    if external_attr is not None:
        edits.append((e.cd_off + Z.CENTRAL.offset("external"), struct.pack("<I", external_attr)))
    patch_file(path, edits)


def add_archive_comment(path, comment):
    """Appends comment to the archive's end record (which must have none yet)."""
    data = Path(path).read_bytes()
    pos = _plain_end_record(data)
    e = Z.EOCD.unpack(data, pos)._replace(comment_len=len(comment))
    Path(path).write_bytes(data[:pos] + Z.EOCD.pack(**e._asdict()) + comment)


def _plain_end_record(data):
    """Offset of the end record that ends data (so the archive has no comment)."""
    pos = data.rindex(b"PK\x05\x06")
    assert pos + Z.EOCD.size == len(data), "the archive has a comment"
    return pos


def to_zip64_end(src, dst):
    """Rewrites an archive so that it ends with a ZIP64 end record + locator and a classic end
    record whose fields are all saturated (the ZIP64 record holds the real values)."""
    data = Path(src).read_bytes()
    pos = _plain_end_record(data)
    e = Z.EOCD.unpack(data, pos)
    body = data[:pos]
    z64 = Z.zip64_end_record(made_by=0x031E, on_disk=e.total, total=e.total,
                             cd_size=e.cd_size, cd_offset=e.cd_offset)
    loc = Z.zip64_locator(len(body))
    Path(dst).write_bytes(body + z64 + loc + Z.saturated_end_record(disks=True))
    return Path(dst)


INFOZIP_TREE = {
    # path -> (mode, array); directories: path ending in '/' -> mode
    "a.npy": (0o640, lambda: np.arange(1000, dtype=np.int32)),
    "c.npy": (0o444, lambda: np.linspace(0, 1, 333)),
    "sub/": 0o750,
    "sub/b.npy": (0o755, lambda: np.eye(20, dtype=np.float32)),
    "sub/empty/": 0o700,
    "sub/deeper/": 0o755,
    "sub/deeper/d.npy": (0o600, lambda: np.arange(5000, dtype=">i8").reshape(50, 100)),
}
INFOZIP_MTIME = 1622548800  # 2021-06-01 12:00:00 UTC: an even second


def make_infozip_tree(root):
    """Writes INFOZIP_TREE under root with its modes and an even-second mtime everywhere."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for p, spec in INFOZIP_TREE.items():
        if p.endswith("/"):
            (root / p).mkdir(parents=True, exist_ok=True)
    for p, spec in INFOZIP_TREE.items():
        if not p.endswith("/"):
            mode, make = spec
            np.save(root / p, make())
            os.chmod(root / p, mode)
            os.utime(root / p, (INFOZIP_MTIME, INFOZIP_MTIME))
    for p, spec in sorted(INFOZIP_TREE.items(), reverse=True):
        if p.endswith("/"):
            os.chmod(root / p, spec)
            os.utime(root / p, (INFOZIP_MTIME, INFOZIP_MTIME))
    return root


def infozip(tree, out, *flags, pipe=False):
    """Runs Info-ZIP zip -r inside tree. With pipe=True the archive is written to a pipe (so
    zip cannot seek: data descriptors)."""
    out = Path(out).resolve()
    if pipe:
        with open(out, "wb") as f:
            p = subprocess.run(["zip", "-q", "-r", *flags, "-", "."], cwd=tree,
                               stdout=subprocess.PIPE, check=True, timeout=120)
            f.write(p.stdout)
    else:
        subprocess.run(["zip", "-q", "-r", *flags, str(out), "."], cwd=tree, check=True,
                       timeout=120)
    return out


