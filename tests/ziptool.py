"""The one ZIP toolkit of the tests: a writer of every ZIP record and a parser of archives.

Shared by the unit corpus (tests/unit/gen_cases.py), the fuzz seeds (tests/fuzz/gen_seeds.py),
the hostile corpus (tests/integration/hostile.py, adversarial.py), the SOZip writer and checker
(tests/integration/sozip_writer.py, sozip_check.py) and the integration helpers
(tests/integration/npz_support.py). It shares no code with src/: it is the reference the C
reader is checked against, written from the APPNOTE layouts.

Each fixed-size record is declared once, as (field, struct code) pairs (``Record``); packing,
unpacking, field offsets for byte patches and numpy dtypes for vectorised writers all come from
that one declaration. Every field can be given any value, so a lying header is one keyword
away; the helpers (``local_header``, ``central_header``, ``end_record``, ...) only fill in what
follows from their arguments (lengths, signatures) unless told otherwise.
"""

import struct
from collections import namedtuple

SIG_LOCAL = 0x04034B50
SIG_CENTRAL = 0x02014B50
SIG_DESCRIPTOR = 0x08074B50
SIG_EOCD64 = 0x06064B50
SIG_LOC64 = 0x07064B50
SIG_EOCD = 0x06054B50

U16 = 0xFFFF
U32 = 0xFFFFFFFF

ID_ZIP64 = 0x0001
ID_UT = 0x5455          # extended timestamp
ID_UX = 0x7875          # Info-ZIP Unix uid/gid

FLAG_ENCRYPTED = 0x0001
FLAG_DESCRIPTOR = 0x0008
FLAG_UTF8 = 0x0800

_NUMPY_CODE = {"H": "<u2", "I": "<u4", "Q": "<u8"}


class Record:
    """A fixed-size little-endian record: its fields in order, with defaults for those a
    caller may leave out."""

    def __init__(self, name, fields, **defaults):
        self.names = tuple(f for f, _ in fields)
        self.codes = tuple(c for _, c in fields)
        self.fmt = "<" + "".join(self.codes)
        self.size = struct.calcsize(self.fmt)
        self.defaults = defaults
        self.tuple = namedtuple(name, self.names)

    def pack(self, **values):
        v = dict(self.defaults, **values)
        unknown = set(v) - set(self.names)
        assert not unknown, f"{self.tuple.__name__}: no field {sorted(unknown)}"
        return struct.pack(self.fmt, *(v[n] for n in self.names))

    def unpack(self, data, off=0):
        return self.tuple(*struct.unpack_from(self.fmt, data, off))

    def offset(self, field):
        """Byte offset of field within the record (for patching written archives)."""
        i = self.names.index(field)
        return struct.calcsize("<" + "".join(self.codes[:i]))

    def patch(self, buf, off, **values):
        """Overwrites the given fields of the record at off in buf (a bytearray)."""
        for field, v in values.items():
            i = self.names.index(field)
            struct.pack_into("<" + self.codes[i], buf, off + self.offset(field), v)

    def dtype(self, *tail):
        """A numpy dtype of the record followed by tail (numpy dtype field tuples)."""
        import numpy as np

        return np.dtype([(n, _NUMPY_CODE[c]) for n, c in zip(self.names, self.codes)] +
                        list(tail))


LOCAL = Record("Local", [
    ("sig", "I"), ("version", "H"), ("flags", "H"), ("method", "H"), ("time", "H"),
    ("date", "H"), ("crc", "I"), ("csize", "I"), ("usize", "I"), ("name_len", "H"),
    ("extra_len", "H")],
    sig=SIG_LOCAL, version=20, flags=0, method=0, time=0, date=0, crc=0, csize=0, usize=0)

CENTRAL = Record("Central", [
    ("sig", "I"), ("made_by", "H"), ("version", "H"), ("flags", "H"), ("method", "H"),
    ("time", "H"), ("date", "H"), ("crc", "I"), ("csize", "I"), ("usize", "I"),
    ("name_len", "H"), ("extra_len", "H"), ("comment_len", "H"), ("disk", "H"),
    ("internal", "H"), ("external", "I"), ("offset", "I")],
    sig=SIG_CENTRAL, made_by=20, version=20, flags=0, method=0, time=0, date=0, crc=0,
    csize=0, usize=0, disk=0, internal=0, external=0, offset=0)

EOCD64 = Record("Eocd64", [
    ("sig", "I"), ("size", "Q"), ("made_by", "H"), ("version", "H"), ("disk", "I"),
    ("cd_disk", "I"), ("on_disk", "Q"), ("total", "Q"), ("cd_size", "Q"), ("cd_offset", "Q")],
    sig=SIG_EOCD64, size=44, made_by=45, version=45, disk=0, cd_disk=0)

LOC64 = Record("Loc64", [("sig", "I"), ("disk", "I"), ("offset", "Q"), ("disks", "I")],
               sig=SIG_LOC64, disk=0, disks=1)

EOCD = Record("Eocd", [
    ("sig", "I"), ("disk", "H"), ("cd_disk", "H"), ("on_disk", "H"), ("total", "H"),
    ("cd_size", "I"), ("cd_offset", "I"), ("comment_len", "H")],
    sig=SIG_EOCD, disk=0, cd_disk=0)


# --------------------------------------------------------------------------------------------
# writing


def local_header(name, extra=b"", **fields):
    """A local file header followed by name and extra; lengths default to theirs."""
    fields.setdefault("name_len", len(name))
    fields.setdefault("extra_len", len(extra))
    return LOCAL.pack(**fields) + name + extra


def central_header(name, extra=b"", comment=b"", **fields):
    """A central directory header followed by name, extra and comment."""
    fields.setdefault("name_len", len(name))
    fields.setdefault("extra_len", len(extra))
    fields.setdefault("comment_len", len(comment))
    return CENTRAL.pack(**fields) + name + extra + comment


def data_descriptor(crc, csize, usize, signature=True, zip64=False):
    """A data descriptor, with or without its optional signature, sizes 32 or 64 bits."""
    sizes = struct.pack("<QQ" if zip64 else "<II", csize, usize)
    sig = struct.pack("<I", SIG_DESCRIPTOR) if signature else b""
    return sig + struct.pack("<I", crc) + sizes


def extra_field(header_id, data):
    return struct.pack("<HH", header_id, len(data)) + data


def zip64_extra(*values, disk=None):
    """The ZIP64 extended information extra field holding values (64-bit each, in the order
    usize, csize, offset of the fields they replace) and optionally the 32-bit disk number."""
    data = struct.pack(f"<{len(values)}Q", *values)
    if disk is not None:
        data += struct.pack("<I", disk)
    return extra_field(ID_ZIP64, data)


def ut_extra(mtime, flags=1):
    """The UT extended timestamp extra field with a modification time (flag bit 0)."""
    return extra_field(ID_UT, struct.pack("<Bi", flags, mtime))


def zip64_end_record(extensible=b"", **fields):
    """The ZIP64 end of central directory record (its size field counts extensible)."""
    fields.setdefault("size", 44 + len(extensible))
    return EOCD64.pack(**fields) + extensible


def zip64_locator(offset, **fields):
    return LOC64.pack(offset=offset, **fields)


def end_record(comment=b"", **fields):
    """The classic end of central directory record followed by comment."""
    fields.setdefault("comment_len", len(comment))
    return EOCD.pack(**fields) + comment


def saturated_end_record(comment=b"", disks=False):
    """A classic end record whose counts, size and offset are saturated (a ZIP64 end record
    holds the real values); with disks, the disk numbers too."""
    d = U16 if disks else 0
    return end_record(comment, disk=d, cd_disk=d, on_disk=U16, total=U16, cd_size=U32,
                      cd_offset=U32)


# --------------------------------------------------------------------------------------------
# parsing


def iter_extra(extra):
    """Yields (header id, data) of each field of an extra block; stops at a field whose
    declared length runs past the block (as src/zipdir.c does)."""
    i = 0
    while i + 4 <= len(extra):
        hid, n = struct.unpack_from("<HH", extra, i)
        if i + 4 + n > len(extra):
            return
        yield hid, extra[i + 4 : i + 4 + n]
        i += 4 + n


def zip64_values(extra):
    """The 64-bit values of the first ZIP64 extra field (in APPNOTE order: usize, csize,
    offset, as many as it holds), or None when there is none."""
    for hid, d in iter_extra(extra):
        if hid == ID_ZIP64:
            return struct.unpack_from(f"<{len(d) // 8}Q", d)
    return None


def ut_mtime(extra):
    """The modification time of the last UT extra field that has one, or None."""
    t = None
    for hid, d in iter_extra(extra):
        if hid == ID_UT and len(d) >= 5 and d[0] & 1:
            t = struct.unpack_from("<i", d, 1)[0]
    return t


LocalAt = namedtuple("LocalAt", "header name extra data_off")


def local_at(data, off):
    """The local header at off as (header, name, extra, data offset), or None when there is
    none (no signature, or too short a header)."""
    if off + LOCAL.size > len(data) or struct.unpack_from("<I", data, off)[0] != SIG_LOCAL:
        return None
    h = LOCAL.unpack(data, off)
    at = off + LOCAL.size
    return LocalAt(h, data[at : at + h.name_len],
                   data[at + h.name_len : at + h.name_len + h.extra_len],
                   at + h.name_len + h.extra_len)


def local_data_offset(data, off):
    """Where the data of the local header at off starts, or None when there is none."""
    loc = local_at(data, off)
    return None if loc is None else loc.data_off


def find_end_record(data):
    """Offset of the last classic end record whose comment ends exactly at the end of data."""
    for i in range(len(data) - EOCD.size, max(-1, len(data) - EOCD.size - 65536), -1):
        if data[i : i + 4] == b"PK\x05\x06":
            if i + EOCD.size + EOCD.unpack(data, i).comment_len == len(data):
                return i
    return None


class Entry:
    """One member as laid out in the file (all offsets absolute): cd_off, local_off,
    local_name_len, data_off, name (bytes), flags, method, crc, csize, usize (ZIP64 values
    applied), extra (central) and comment."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return f"Entry({self.name!r}, local={self.local_off}, data={self.data_off})"


class Layout:
    """A parsed archive: entries (central directory order), eocd_off, z64_off (None without
    ZIP64 end records), cd_off and cd_size (from the ZIP64 record when there is one)."""

    def __init__(self, entries, eocd_off, z64_off, cd_off, cd_size):
        self.entries = entries
        self.eocd_off = eocd_off
        self.z64_off = z64_off
        self.cd_off = cd_off
        self.cd_size = cd_size


def _apply_zip64(h, extra):
    """(usize, csize, offset) of central header h with its saturated fields taken from the
    ZIP64 extra, in APPNOTE order."""
    vals = {"usize": h.usize, "csize": h.csize, "offset": h.offset}
    need = [f for f in ("usize", "csize", "offset") if vals[f] == U32]
    for f, v in zip(need, zip64_values(extra) or ()):
        vals[f] = v
    return vals["usize"], vals["csize"], vals["offset"]


def parse(data):
    """Parses archive bytes (no prepended data): the central directory and every local header
    it points at. Fails (AssertionError) on what it cannot follow."""
    eocd_off = find_end_record(data)
    assert eocd_off is not None, "no end of central directory record"
    e = EOCD.unpack(data, eocd_off)
    cd_size, cd_off, z64_off = e.cd_size, e.cd_offset, None
    loc = eocd_off - LOC64.size
    if loc >= 0 and data[loc : loc + 4] == b"PK\x06\x07":
        z64_off = LOC64.unpack(data, loc).offset
        z = EOCD64.unpack(data, z64_off)
        assert z.sig == SIG_EOCD64, "the ZIP64 locator points at no ZIP64 end record"
        cd_size, cd_off = z.cd_size, z.cd_offset
    entries = []
    p = cd_off
    while p < cd_off + cd_size:
        h = CENTRAL.unpack(data, p)
        assert h.sig == SIG_CENTRAL, f"bad central entry at {p}"
        at = p + CENTRAL.size
        name = data[at : at + h.name_len]
        extra = data[at + h.name_len : at + h.name_len + h.extra_len]
        comment = data[at + h.name_len + h.extra_len : at + h.name_len + h.extra_len +
                       h.comment_len]
        usize, csize, local = _apply_zip64(h, extra)
        assert data[local : local + 4] == b"PK\x03\x04", f"bad local header at {local}"
        lh = LOCAL.unpack(data, local)
        entries.append(Entry(cd_off=p, local_off=local, local_name_len=lh.name_len,
                             data_off=local_data_offset(data, local), name=name,
                             flags=h.flags, method=h.method, crc=h.crc, csize=csize,
                             usize=usize, extra=extra, comment=comment))
        p = at + h.name_len + h.extra_len + h.comment_len
    return Layout(entries, eocd_off, z64_off, cd_off, cd_size)
