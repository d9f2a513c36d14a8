"""A SOZip writer for the tests only (seek-optimized ZIP, specification 0.5), on the standard
library's zlib, able to write the hostile variants the reader must survive.

A SOZip member is deflated with Z_SYNC_FLUSH then Z_FULL_FLUSH after every chunk_size bytes of
input (the last chunk ends with Z_FINISH), so every chunk decodes on its own. It is followed,
right after its data (and data descriptor, if any), by a local header and the stored hidden file
DIR/.NAME.sozip.idx, which the central directory does not list: a 32-byte header (uint32
version 1, skip_bytes, chunk_size, offset_size; uint64 uncompressed and compressed size,
little-endian), skip_bytes bytes, then the compressed offset of every chunk after the first.

Usage: build(path, [Member(...), ...]). Knobs on Member make the index or the stream lie.
Every ZIP record comes from tests/ziptool.py; only the index is written here.
"""
import dataclasses
import struct
import sys
import zlib
from pathlib import Path
from typing import Callable, Optional

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ziptool as Z  # noqa: E402  (tests/ziptool.py)

INDEX_HEADER = Z.Record("SozipIndex", [
    ("version", "I"), ("skip_bytes", "I"), ("chunk_size", "I"), ("offset_size", "I"),
    ("usize", "Q"), ("csize", "Q")])
DOS_DATE = 0x21  # 1980-01-01
UNIX_FILE = 0o100644 << 16  # external attributes: a regular file, rw-r--r--
MADE_BY_UNIX = 0x031E  # Unix, APPNOTE 3.0


@dataclasses.dataclass
class Member:
    name: str
    data: bytes
    method: str = "sozip"          # "sozip", "deflate" (plain) or "stored"
    chunk: int = 32 << 10
    offset_size: int = 4
    zip64: bool = False            # write the sizes in ZIP64 extra fields
    descriptor: bool = False       # flag bit 3 and a data descriptor after the data
    level: int = 6
    # hostile knobs
    full_flush: bool = True        # False: Z_SYNC_FLUSH only, back references cross chunks
    final_in: Optional[int] = None  # this chunk ends in a final block (then the flush marker,
                                    # then a new stream for the rest)
    index: Optional[bool] = None   # None: for sozip members above one chunk; True: always
                                   # (also after a stored member); False: never
    offsets: Optional[Callable[[list], list]] = None  # rewrites the chunk offsets
    header: Optional[dict] = None  # overrides header fields by name
    truncate: int = 0              # bytes cut off the end of the index
    skip: bytes = b""              # skip_bytes padding
    index_name: Optional[str] = None


def index_name(name):
    """dir/x.npy -> dir/.x.npy.sozip.idx"""
    head, sep, base = name.rpartition("/")
    return f"{head}{sep}.{base}.sozip.idx"


def chunked_deflate(data, chunk, level=6, full_flush=True, final_in=None):
    """The deflate stream and the offsets of chunks 1..n-1 in it."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out, offsets = bytearray(), []
    starts = list(range(0, len(data), chunk)) or [0]
    for i, at in enumerate(starts):
        if i:
            offsets.append(len(out))
        out += c.compress(data[at:at + chunk])
        if i == final_in:
            out += c.flush(zlib.Z_FINISH) + b"\x00\x00\xff\xff"
            c = zlib.compressobj(level, zlib.DEFLATED, -15)
        elif i + 1 < len(starts):
            out += c.flush(zlib.Z_SYNC_FLUSH)
            if full_flush:
                out += c.flush(zlib.Z_FULL_FLUSH)
    out += c.flush(zlib.Z_FINISH)
    return bytes(out), offsets


def index_bytes(m, usize, csize, offsets):
    h = {"version": 1, "skip_bytes": len(m.skip), "chunk_size": m.chunk,
         "offset_size": m.offset_size, "usize": usize, "csize": csize}
    h.update(m.header or {})
    body = INDEX_HEADER.pack(**h) + m.skip
    body += struct.pack(f"<{len(offsets)}{'I' if m.offset_size == 4 else 'Q'}", *offsets)
    return body[:len(body) - m.truncate] if m.truncate else body


def _header_fields(zip64, **values):
    """The ZIP64 extra (empty without zip64) and the header fields: values (usize, csize,
    offset, in that order) saturated when the extra holds them."""
    if not zip64:
        return b"", dict(values, version=20)
    return (Z.zip64_extra(*values.values()),
            dict(dict.fromkeys(values, Z.U32), version=45))


def local_header(name, method, flags, crc, csize, usize, zip64):
    extra, fields = _header_fields(zip64, usize=usize, csize=csize)
    return Z.local_header(name.encode(), extra, flags=flags, method=method, date=DOS_DATE,
                          crc=crc, **fields)


def central_header(name, method, flags, crc, csize, usize, offset, zip64):
    extra, fields = _header_fields(zip64, usize=usize, csize=csize, offset=offset)
    return Z.central_header(name.encode(), extra, made_by=MADE_BY_UNIX, flags=flags,
                            method=method, date=DOS_DATE, crc=crc, external=UNIX_FILE,
                            **fields)


def build(path, members):
    """Writes the archive; returns {name: offsets written} for the tests' own checks."""
    return _write(path, bytearray(), bytearray(), 0, members)


def append(path, members):
    """Adds members to an archive without ZIP64 end records or comment (zipfile's)."""
    with open(path, "rb") as f:
        data = f.read()
    e = Z.EOCD.unpack(data, Z.find_end_record(data))
    return _write(path, bytearray(data[:e.cd_offset]),
                  bytearray(data[e.cd_offset:e.cd_offset + e.cd_size]), e.total, members)


def _write(path, out, central, count, members):
    written = {}
    for m in members:
        crc = zlib.crc32(m.data)
        if m.method == "stored":
            payload, offsets, method = m.data, [], 0
        elif m.method == "deflate":
            c = zlib.compressobj(m.level, zlib.DEFLATED, -15)
            payload, offsets, method = c.compress(m.data) + c.flush(), [], 8
        else:
            payload, offsets = chunked_deflate(m.data, m.chunk, m.level, m.full_flush,
                                               m.final_in)
            method = 8
        offsets = m.offsets(list(offsets)) if m.offsets else offsets
        written[m.name] = offsets
        flags = Z.FLAG_DESCRIPTOR if m.descriptor else 0
        at = len(out)
        out += local_header(m.name, method, flags, crc, len(payload), len(m.data), m.zip64)
        out += payload
        if m.descriptor:
            out += Z.data_descriptor(crc, len(payload), len(m.data), zip64=m.zip64)
        auto = m.method == "sozip" and len(m.data) > m.chunk
        if m.index or (m.index is None and auto):
            body = index_bytes(m, len(m.data), len(payload), offsets)
            out += local_header(m.index_name or index_name(m.name), 0, 0, zlib.crc32(body),
                                len(body), len(body), False)
            out += body
        central += central_header(m.name, method, flags, crc, len(payload), len(m.data), at,
                                  m.zip64)
    cd_at = len(out)
    out += central
    count += len(members)
    ends = dict(on_disk=count, total=count, cd_size=len(central), cd_offset=cd_at)
    if any(m.zip64 for m in members):
        z64 = len(out)
        out += Z.zip64_end_record(**ends)
        out += Z.zip64_locator(z64)
    out += Z.end_record(**ends)
    with open(path, "wb") as f:
        f.write(out)
    return written
