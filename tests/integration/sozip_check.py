"""An independent SOZip 0.5 checker for the --optimize tests (written from the specification,
sharing nothing with src/optimize.c): the central directory comes from Python's zipfile, every
local header is parsed with tests/ziptool.py (test code, not the code under test), the hidden
indexes here, and every chunk is inflated on its own by zlib.

check_archive(path) returns {member name: Index} for the members that carry an index and
raises AssertionError on anything the specification forbids; check_sozip(data, chunk_size)
does the same on an archive's bytes and also wants every member larger than one chunk of
chunk_size to carry an index (what the writers of this project produce).
"""

import io
import struct
import sys
import zlib
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ziptool as Z  # noqa: E402  (tests/ziptool.py)

INDEX_HEADER = struct.Struct("<IIIIQQ")
FLUSH_MARKERS = b"\x00\x00\xff\xff\x00\x00\x00\xff\xff"


class Index:
    def __init__(self, chunk_size, offset_size, offsets, usize, csize):
        self.chunk_size = chunk_size
        self.offset_size = offset_size
        self.offsets = offsets
        self.usize = usize
        self.csize = csize


def hidden_name(name):
    """dir/x.npy -> dir/.x.npy.sozip.idx"""
    head, sep, base = name.rpartition("/")
    return f"{head}{sep}.{base}.sozip.idx"


def read_local(data, off):
    """(name bytes, method, flags, crc, csize, usize, data offset) of the local header at off."""
    loc = Z.local_at(data, off)
    assert loc is not None, f"no local header at {off}"
    h = loc.header
    csize, usize = h.csize, h.usize
    if Z.U32 in (csize, usize):  # a local ZIP64 field holds both sizes (APPNOTE 4.5.3)
        sizes = Z.zip64_values(loc.extra)
        assert sizes is not None, "saturated local sizes without a ZIP64 field"
        assert len(sizes) >= 2, "local ZIP64 field must hold both sizes"
        usize, csize = sizes[:2]
    return loc.name, h.method, h.flags, h.crc, csize, usize, loc.data_off


def parse_index(payload, usize, csize):
    assert len(payload) >= 32, "index shorter than its header"
    version, skip, chunk, osize, iu, ic = INDEX_HEADER.unpack_from(payload)
    assert version == 1, version
    assert chunk > 0
    assert osize in (4, 8), osize
    assert (iu, ic) == (usize, csize), ("index sizes differ from the member's",
                                        (iu, ic), (usize, csize))
    assert usize > chunk, "an index is only allowed for members larger than a chunk"
    n = (usize - 1) // chunk
    assert len(payload) == 32 + skip + n * osize, "offset section of the wrong length"
    fmt = "<%d%s" % (n, "I" if osize == 4 else "Q")
    offsets = list(struct.unpack_from(fmt, payload, 32 + skip))
    assert all(a < b for a, b in zip([0] + offsets, offsets)), "offsets not ascending"
    assert not offsets or offsets[-1] < csize, "offset past the compressed data"
    return Index(chunk, osize, offsets, usize, csize)


def check_chunks(raw, index, crc):
    """Every chunk inflates on its own to exactly chunk_size bytes (the last to the rest), and
    all of them together give the member's CRC-32."""
    bounds = [0] + index.offsets + [len(raw)]
    total, got_crc = 0, 0
    for k in range(len(bounds) - 1):
        if k > 0:  # what a Z_SYNC_FLUSH then a Z_FULL_FLUSH leave: two empty stored blocks
            assert raw[bounds[k] - 9:bounds[k]] == FLUSH_MARKERS, f"chunk {k - 1}: no flushes"
        d = zlib.decompressobj(-15)
        out = d.decompress(raw[bounds[k]:bounds[k + 1]])
        last = k == len(bounds) - 2
        want = index.usize - total if last else index.chunk_size
        assert len(out) == want, f"chunk {k}: {len(out)} bytes, expected {want}"
        assert d.eof == last, f"chunk {k}: final block {'missing' if last else 'too early'}"
        assert not d.unused_data, f"chunk {k}: data after the final block"
        total += len(out)
        got_crc = zlib.crc32(out, got_crc)
    assert got_crc == crc, "chunks do not give the member's CRC-32"


def check_archive(path):
    """path: a file name, or the archive's bytes."""
    data = bytes(path) if isinstance(path, (bytes, bytearray)) else open(path, "rb").read()
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
    names = {i.filename for i in infos}
    found = {}
    for info in infos:
        name, method, flags, crc, csize, usize, start = read_local(data, info.header_offset)
        assert name.decode("utf-8" if flags & Z.FLAG_UTF8 else "cp437") == info.orig_filename
        assert method == info.compress_type
        if not flags & Z.FLAG_DESCRIPTOR:  # sizes in the local header must agree with the central directory
            assert (crc, csize, usize) == (info.CRC, info.compress_size, info.file_size), \
                info.filename
        end = start + info.compress_size
        if Z.local_at(data, end) is None:
            continue
        iname, imethod, _f, icrc, icsize, iusize, istart = read_local(data, end)
        if iname.decode("utf-8", "replace") != hidden_name(info.orig_filename):
            continue  # the next member's own header: no index
        assert iname.decode("utf-8") not in names, "the index is listed in the directory"
        assert imethod == 0, "index not stored"
        assert icsize == iusize
        payload = data[istart:istart + iusize]
        assert zlib.crc32(payload) == icrc, "index CRC-32"
        assert info.compress_type == zipfile.ZIP_DEFLATED, "index on a member not deflated"
        index = parse_index(payload, info.file_size, info.compress_size)
        check_chunks(data[start:end], index, info.CRC)
        found[info.filename] = index
    return found


def check_sozip(data, chunk_size):
    """Returns {member name: number of chunks} for the members with an index."""
    found = check_archive(data)
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as zf:
        big = {i.filename for i in zf.infolist()
               if i.compress_type == zipfile.ZIP_DEFLATED and i.file_size > chunk_size}
    assert set(found) == big, (sorted(found), sorted(big))
    for name, index in found.items():
        assert index.chunk_size == chunk_size, (name, index.chunk_size)
    return {name: len(index.offsets) + 1 for name, index in found.items()}
