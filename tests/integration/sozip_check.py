"""An independent check of the SOZip profile (0.5) in a ZIP file, for the tests of the
Python writer: it walks the local headers itself and decodes every chunk with zlib alone.

check_sozip(data, chunk_size) returns {member name: number of chunks} for the members that
carry an index, and fails (AssertionError) on anything the profile forbids.
"""

import struct
import zipfile
import zlib

LOCAL = struct.Struct("<IHHHHHIIIHH")
LOCAL_SIG = b"PK\x03\x04"


def local_records(data):
    """(offset, name, method, data start, compressed size) of every local header in file
    order, from offset 0 up to the first record that is not a local header. Sizes come from
    the local header itself (its ZIP64 extra when the 32-bit fields are 0xFFFFFFFF)."""
    records = []
    pos = 0
    while data[pos:pos + 4] == LOCAL_SIG:
        (_, _, flags, method, _, _, _, csize, usize, nlen, xlen) = LOCAL.unpack_from(data, pos)
        assert not flags & 0x8, "a data descriptor would separate the data from the index"
        name = data[pos + 30:pos + 30 + nlen].decode("utf-8")
        extra = data[pos + 30 + nlen:pos + 30 + nlen + xlen]
        if csize == 0xFFFFFFFF:
            xid, xsize, _, csize = struct.unpack_from("<HHQQ", extra)
            assert (xid, xsize) == (1, 16), (xid, xsize)
        start = pos + 30 + nlen + xlen
        records.append((pos, name, method, start, csize))
        pos = start + csize
    return records


def index_name(name):
    head, sep, tail = name.rpartition("/")
    return f"{head}{sep}.{tail}.sozip.idx"


def check_chunks(raw, plain, chunk_size, offsets):
    """Each chunk, from its offset to the next, inflates alone (a fresh raw inflater) to
    exactly its chunk_size bytes of plain; the last one ends the deflate stream."""
    starts = [0, *offsets]
    ends = [*offsets, len(raw)]
    for i, (a, b) in enumerate(zip(starts, ends)):
        d = zlib.decompressobj(-15)
        out = d.decompress(raw[a:b]) + d.flush()
        want = plain[i * chunk_size:(i + 1) * chunk_size]
        assert out == want, f"chunk {i} at {a}..{b} inflates to {len(out)} bytes, not its " \
                            f"{len(want)}"
        assert d.eof == (i == len(starts) - 1), f"chunk {i}: end of stream in the wrong place"


def check_sozip(data, chunk_size):
    import io

    zf = zipfile.ZipFile(io.BytesIO(data))
    central = {i.filename: i for i in zf.infolist()}
    records = local_records(data)
    indexed = {}
    i = 0
    for name, zi in central.items():
        pos, lname, method, start, csize = records[i]
        assert (lname, pos, method) == (name, zi.header_offset, 8), records[i]
        assert csize == zi.compress_size
        raw, plain = data[start:start + csize], zf.read(name)
        i += 1
        if zi.file_size <= chunk_size:
            # One chunk: no index, and the next record is the next member or the directory.
            assert i == len(records) or records[i][1] in central, records[i]
            continue
        _, iname, imethod, istart, isize = records[i]
        assert iname == index_name(name) and iname not in central, (iname, name)
        assert imethod == 0, "the index is stored"
        i += 1
        index = data[istart:istart + isize]
        version, skip, csz, osz, usize, cs = struct.unpack_from("<IIIIQQ", index)
        assert (version, skip, csz, osz) == (1, 0, chunk_size, 8)
        assert (usize, cs) == (zi.file_size, zi.compress_size)
        count = (usize - 1) // chunk_size
        assert len(index) == 32 + 8 * count, (len(index), count)
        offsets = list(struct.unpack_from(f"<{count}Q", index, 32))
        assert offsets == sorted(set(offsets)) and all(0 < o < cs for o in offsets)
        check_chunks(raw, plain, chunk_size, offsets)
        indexed[name] = count + 1
    assert i == len(records), f"local headers left over: {records[i:]}"
    return indexed
