"""savez_compressed(): np.savez_compressed, writing each member as a SOZip (seek-optimized
ZIP, profile 0.5) deflate stream, so that a reader can start decoding at any chunk.

What the profile asks of a writer: every chunk_size bytes of input, deflate() is called with
Z_SYNC_FLUSH and then Z_FULL_FLUSH (the stream becomes byte-aligned and forgets its history,
so each chunk decodes alone); the last chunk ends with Z_FINISH. A member whose size exceeds
one chunk is followed directly by a stored file `DIR/.NAME.sozip.idx` behind its own local
header and absent from the central directory, which ordinary readers therefore never see:
a 32-byte header (uint32 version 1, skip_bytes 0, chunk_size, offset_size 8; uint64
uncompressed and compressed size) and the compressed offset of every chunk after the first.

Everything else follows numpy and zipfile: keys, order, a local header that always carries
the ZIP64 sizes (numpy forces ZIP64), ZIP64 in the central directory and the end records
only where a value needs it.
"""

import os
import shutil
import struct
import tempfile
import time
import zlib

DEFAULT_CHUNK_SIZE = 32 << 10

_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_EXTRA = struct.Struct("<HHQQ")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_SOZIP_HEADER = struct.Struct("<IIIIQQ")
_LOCAL_SIG, _CENTRAL_SIG, _END_SIG = 0x04034B50, 0x02014B50, 0x06054B50
_END64_SIG, _LOCATOR64_SIG = 0x06064B50, 0x07064B50
_UTF8_FLAG = 0x800
_DEFLATED, _STORED = 8, 0
_VERSION_ZIP64, _VERSION_DEFAULT = 45, 20
_UNIX = 3
_U32 = 0xFFFFFFFF
_ZIP64_LIMIT = (1 << 31) - 1  # zipfile's threshold, kept so the output looks like numpy's
_FILE_MODE = 0o600 << 16  # what zipfile gives members written through ZipFile.open('w')


class _Member:
    """What the central directory needs to know about one written member."""

    def __init__(self, name, flags, dostime, offset):
        self.name, self.flags, self.dostime, self.offset = name, flags, dostime, offset
        self.crc = self.csize = self.usize = 0


class _ChunkedDeflate:
    """A write-only file object that deflates into out, cut into chunks of chunk_size input
    bytes that each decode alone. The flush at a chunk boundary waits for the next byte, so
    input ending exactly on a boundary gets no empty last chunk (and no offset for it)."""

    def __init__(self, out, chunk_size):
        self._out = out
        self._z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
        self._chunk = chunk_size
        self.usize = self.csize = self.crc = 0
        self.offsets = []  # compressed offset of every chunk after the first

    def _emit(self, data):
        self._out.write(data)
        self.csize += len(data)

    def write(self, data):
        view = memoryview(data).cast("B")
        pos = 0
        while pos < len(view):
            room = self._chunk - self.usize % self._chunk
            if room == self._chunk and self.usize:
                self._emit(self._z.flush(zlib.Z_SYNC_FLUSH))
                self._emit(self._z.flush(zlib.Z_FULL_FLUSH))
                self.offsets.append(self.csize)
            piece = view[pos:pos + room]
            self.crc = zlib.crc32(piece, self.crc)
            self._emit(self._z.compress(piece))
            self.usize += len(piece)
            pos += len(piece)
        return len(view)

    def finish(self):
        self._emit(self._z.flush(zlib.Z_FINISH))


def _dos_time(t):
    y, mo, d, h, mi, s = t[:6]
    return ((y - 1980) << 9 | mo << 5 | d) << 16 | h << 11 | mi << 5 | s // 2


def _encode_name(name):
    name = name.split("\0", 1)[0]  # as zipfile.ZipInfo does
    try:
        return name.encode("ascii"), 0
    except UnicodeEncodeError:
        return name.encode("utf-8"), _UTF8_FLAG


def _index_name(name):
    head, sep, tail = name.rpartition(b"/")
    return head + sep + b"." + tail + b".sozip.idx"


def _local_header(name, flags, method, dostime, crc, csize, usize, zip64):
    extra = b""
    version = _VERSION_DEFAULT
    if zip64:
        extra = _ZIP64_EXTRA.pack(1, 16, usize, csize)
        csize = usize = _U32
        version = _VERSION_ZIP64
    return _LOCAL.pack(_LOCAL_SIG, version, flags, method, dostime & 0xFFFF, dostime >> 16,
                       crc, csize, usize, len(name), len(extra)) + name + extra


def _write_member(f, name, produce, chunk_size):
    """Writes one deflated member (produce(fileobj) writes its bytes) and, if it spans more
    than one chunk, its SOZip index. f must be seekable: the sizes go into the local header
    afterwards, since a data descriptor would stand between the data and the index."""
    name, flags = _encode_name(name)
    m = _Member(name, flags, _dos_time(time.localtime()), f.tell())
    f.write(_local_header(name, flags, _DEFLATED, m.dostime, 0, 0, 0, zip64=True))
    stream = _ChunkedDeflate(f, chunk_size)
    produce(stream)
    stream.finish()
    m.crc, m.csize, m.usize = stream.crc, stream.csize, stream.usize
    end = f.tell()
    f.seek(m.offset)
    f.write(_local_header(name, flags, _DEFLATED, m.dostime, m.crc, m.csize, m.usize,
                          zip64=True))
    f.seek(end)
    if m.usize > chunk_size:  # the profile indexes only members of more than one chunk
        index = _SOZIP_HEADER.pack(1, 0, chunk_size, 8, m.usize, m.csize) + b"".join(
            struct.pack("<Q", off) for off in stream.offsets)
        f.write(_local_header(_index_name(name), 0, _STORED, m.dostime, zlib.crc32(index),
                              len(index), len(index), zip64=False))
        f.write(index)
    return m


def _central_entry(m):
    extra = []
    usize, csize, offset = m.usize, m.csize, m.offset
    if usize > _ZIP64_LIMIT or csize > _ZIP64_LIMIT:
        extra += [usize, csize]
        usize = csize = _U32
    if offset > _ZIP64_LIMIT:
        extra.append(offset)
        offset = _U32
    extra_bytes = (struct.pack(f"<HH{len(extra)}Q", 1, 8 * len(extra), *extra)
                   if extra else b"")
    return _CENTRAL.pack(_CENTRAL_SIG, _UNIX << 8 | _VERSION_ZIP64, _VERSION_ZIP64, m.flags,
                         _DEFLATED, m.dostime & 0xFFFF, m.dostime >> 16, m.crc, csize, usize,
                         len(m.name), len(extra_bytes), 0, 0, 0, _FILE_MODE, offset) + \
        m.name + extra_bytes


def _write_directory(f, members):
    start = f.tell()
    for m in members:
        f.write(_central_entry(m))
    size, count = f.tell() - start, len(members)
    if count > 0xFFFF or start > _ZIP64_LIMIT or size > _ZIP64_LIMIT:
        end64 = f.tell()
        f.write(_END64.pack(_END64_SIG, _END64.size - 12, _VERSION_ZIP64, _VERSION_ZIP64, 0, 0,
                            count, count, size, start))
        f.write(_LOCATOR64.pack(_LOCATOR64_SIG, 0, end64, 1))
    count16 = min(count, 0xFFFF)
    f.write(_END.pack(_END_SIG, 0, 0, count16, count16, min(size, _U32), min(start, _U32), 0))


def _named_arrays(args, kwds):
    named = dict(kwds)
    for i, value in enumerate(args):
        key = f"arr_{i}"
        if key in named:
            raise ValueError(f"Cannot use un-named variables and keyword {key}")
        named[key] = value
    return named


def _seekable(f):
    try:
        f.tell()
        return f.seekable()
    except (AttributeError, OSError, ValueError):
        return False


def _write_npz(f, named, chunk_size, allow_pickle):
    import numpy as np  # the caller has arrays, so it has numpy

    members = []
    for key, value in named.items():
        array = np.asanyarray(value)
        members.append(_write_member(
            f, key + ".npy",
            lambda out: np.lib.format.write_array(out, array, allow_pickle=allow_pickle),
            chunk_size))
    _write_directory(f, members)


def savez_compressed(file, *args, chunk_size=DEFAULT_CHUNK_SIZE, allow_pickle=True, **kwds):
    """np.savez_compressed(file, *args, **kwds), but seek-optimized (SOZip): every
    chunk_size bytes of each member decode alone, and members larger than one chunk carry
    the hidden SOZip index, so npzmount (and GDAL's /vsizip/) reads them at any offset
    without decoding what comes before. np.load and every ZIP tool read the file as usual.

    file is a path (".npz" is appended when missing, like numpy) or a file object (written
    from its current position; one that cannot seek gets the archive built in a temporary
    file first). Positional arrays are stored as arr_0, arr_1, ...; chunk_size and
    allow_pickle cannot be used as array names.
    """
    if not isinstance(chunk_size, int) or not 0 < chunk_size <= _U32:
        raise ValueError(f"chunk_size must be an integer in 1..{_U32}, not {chunk_size!r}")
    named = _named_arrays(args, kwds)
    if not hasattr(file, "write"):
        file = os.fspath(file)
        if not file.endswith(".npz"):
            file = file + ".npz"
        with open(file, "wb") as f:
            _write_npz(f, named, chunk_size, allow_pickle)
    elif _seekable(file):
        _write_npz(file, named, chunk_size, allow_pickle)
    else:
        with tempfile.TemporaryFile() as tmp:
            _write_npz(tmp, named, chunk_size, allow_pickle)
            tmp.seek(0)
            shutil.copyfileobj(tmp, file)
