"""A SOZip writer for the tests only (seek-optimized ZIP, specification 0.5), on the standard
library's zlib, able to write the hostile variants the reader must survive.

A SOZip member is deflated with Z_SYNC_FLUSH then Z_FULL_FLUSH after every chunk_size bytes of
input (the last chunk ends with Z_FINISH), so every chunk decodes on its own. It is followed,
right after its data (and data descriptor, if any), by a local header and the stored hidden file
DIR/.NAME.sozip.idx, which the central directory does not list: a 32-byte header (uint32
version 1, skip_bytes, chunk_size, offset_size; uint64 uncompressed and compressed size,
little-endian), skip_bytes bytes, then the compressed offset of every chunk after the first.

Usage: build(path, [Member(...), ...]). Knobs on Member make the index or the stream lie.
"""
import dataclasses
import struct
import zlib
from typing import Callable, Optional

ZIP64_LIMIT = 0xFFFFFFFF


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


def chunked_deflate(data, chunk, level=6, full_flush=True):
    """The deflate stream and the offsets of chunks 1..n-1 in it."""
    c = zlib.compressobj(level, zlib.DEFLATED, -15)
    out, offsets = bytearray(), []
    starts = list(range(0, len(data), chunk)) or [0]
    for i, at in enumerate(starts):
        if i:
            offsets.append(len(out))
        out += c.compress(data[at:at + chunk])
        if i + 1 < len(starts):
            out += c.flush(zlib.Z_SYNC_FLUSH)
            if full_flush:
                out += c.flush(zlib.Z_FULL_FLUSH)
    out += c.flush(zlib.Z_FINISH)
    return bytes(out), offsets


def index_bytes(m, usize, csize, offsets):
    h = {"version": 1, "skip_bytes": len(m.skip), "chunk_size": m.chunk,
         "offset_size": m.offset_size, "usize": usize, "csize": csize}
    h.update(m.header or {})
    body = struct.pack("<IIIIQQ", h["version"], h["skip_bytes"], h["chunk_size"],
                       h["offset_size"], h["usize"], h["csize"]) + m.skip
    fmt = "<I" if m.offset_size == 4 else "<Q"
    body += b"".join(struct.pack(fmt, o) for o in offsets)
    return body[:len(body) - m.truncate] if m.truncate else body


def local_header(name, method, flags, crc, csize, usize, zip64):
    n = name.encode()
    extra = b""
    if zip64:
        extra = struct.pack("<HHQQ", 1, 16, usize, csize)
        csize = usize = ZIP64_LIMIT
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 45 if zip64 else 20, flags, method, 0,
                       0x21, crc, csize, usize, len(n), len(extra)) + n + extra


def central_header(name, method, flags, crc, csize, usize, offset, zip64):
    n = name.encode()
    extra = b""
    if zip64:
        extra = struct.pack("<HHQQQ", 1, 24, usize, csize, offset)
        csize = usize = offset = ZIP64_LIMIT
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 0x031E, 45 if zip64 else 20, flags,
                       method, 0, 0x21, crc, csize, usize, len(n), len(extra), 0, 0, 0,
                       0o100644 << 16, offset) + n + extra


def build(path, members):
    """Writes the archive; returns {name: offsets written} for the tests' own checks."""
    return _write(path, bytearray(), bytearray(), 0, members)


def append(path, members):
    """Adds members to an archive without ZIP64 end records or comment (zipfile's)."""
    with open(path, "rb") as f:
        data = f.read()
    count, cd_size, cd_at = struct.unpack("<HII", data[-12:-2])
    return _write(path, bytearray(data[:cd_at]), bytearray(data[cd_at:cd_at + cd_size]), count,
                  members)


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
            payload, offsets = chunked_deflate(m.data, m.chunk, m.level, m.full_flush)
            method = 8
        offsets = m.offsets(list(offsets)) if m.offsets else offsets
        written[m.name] = offsets
        flags = 8 if m.descriptor else 0
        at = len(out)
        out += local_header(m.name, method, flags, crc, len(payload), len(m.data), m.zip64)
        out += payload
        if m.descriptor:
            if m.zip64:
                out += struct.pack("<IIQQ", 0x08074B50, crc, len(payload), len(m.data))
            else:
                out += struct.pack("<IIII", 0x08074B50, crc, len(payload), len(m.data))
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
    if any(m.zip64 for m in members):
        z64 = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count,
                           len(central), cd_at)
        out += struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(central), cd_at, 0)
    with open(path, "wb") as f:
        f.write(out)
    return written
