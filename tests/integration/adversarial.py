"""Adversarial archives for the memory-budget and liveness tests (issue 11).

Everything is generated at test time (no blobs) and the expensive part, the raw deflate
streams, is cached for the session (functools.lru_cache). Each generator checks its own output
with an independent decoder (Python's zlib or zipfile) before handing it out:

``single_block_stream``
    ONE fixed-Huffman deflate block of about 250 MiB (a run of one byte value), written by hand
    in ~1.6 MB: every output position is inside the same block, so no checkpoint can fall in it.
``zero_bomb_stream``
    the .npy of several GiB of zeros as a level-9 zlib stream (about 1000:1) with a block
    boundary every MiB (so the default 1 MiB span puts a checkpoint at each one), built from
    repeated byte-aligned pieces: a few GiB cost a second, mostly the CRC.
``flushed_period_stream``
    a few hundred MiB of a 30,000-byte random pattern repeated, with a block boundary every
    32 KiB (Z_SYNC_FLUSH): at span=32k every block boundary is a checkpoint, and the 32 KiB
    window at each one is random bytes (it does not compress on its own), although the stream
    compresses about 50:1.

``write_zip`` lays the members out with hostile.build_zip (ZIP64 fields where sizes need
them) and re-reads the central directory with zipfile.
"""

import collections
import functools
import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

import hostile as H
import ziptool as Z  # tests/ziptool.py, on sys.path once hostile is imported

KIB = 1 << 10
MIB = 1 << 20
TAIL = 1 * MIB  # bytes of output kept from the end of each verified stream

Stream = collections.namedtuple("Stream", "raw usize crc tail")
Stream.__doc__ = """raw: the raw deflate bytes; usize, crc: size and CRC-32 of the output;
tail: the last TAIL bytes of the output (checked with zlib)."""


# --------------------------------------------------------------------------------------------
# verification with zlib, in bounded memory


def inflate_pieces(raw, piece=16 * MIB):
    """Yields the output of raw deflate bytes in pieces of at most piece bytes (zlib)."""
    d = zlib.decompressobj(-15)
    data = raw
    while not d.eof:
        out = d.decompress(data, piece)
        data = d.unconsumed_tail
        if not out and not data:
            break
        if out:
            yield out
    assert d.eof, "the deflate stream does not end (no final block)"
    assert not d.unused_data, f"{len(d.unused_data)} bytes after the end of the stream"


def verify(raw):
    """Decodes raw with zlib: (size, crc, last TAIL bytes). Fails on an invalid stream."""
    size = crc = 0
    tail = b""
    for out in inflate_pieces(raw):
        size += len(out)
        crc = zlib.crc32(out, crc)
        tail = (tail + out)[-TAIL:]
    return size, crc, tail


# --------------------------------------------------------------------------------------------
# one huge fixed-Huffman block

SINGLE_BLOCK_UNITS = 127_000  # 5 + 2064 * units = 262,128,005 bytes: 250 MiB, under 256 MiB


def single_block_raw(byte, units):
    """BFINAL fixed-Huffman block: five literals `byte` (144..255, 9-bit codes, so that the
    header plus literals is 48 bits: byte aligned), then 8*units matches (length 258,
    distance 1), 13 bytes per 8 matches, repeated bytewise; then end of block. Its output is
    5 + 2064 * units copies of byte."""
    assert 144 <= byte <= 255
    head = H._Bits()
    head.put(1, 1)                       # BFINAL
    head.put(1, 2)                       # BTYPE 01: fixed Huffman
    for _ in range(5):
        head.code(0x190 + byte - 144, 9)  # literals 144..255: 9-bit codes from 0x190
    assert head.n == 0
    unit = H._Bits()
    for _ in range(8):
        unit.code(0xC0 + 285 - 280, 8)    # length code 285: 258, no extra bits
        unit.code(0, 5)                   # distance code 0: 1
    assert unit.n == 0
    end = H._Bits()
    end.code(0, 7)                        # end of block (256)
    return head.flush() + unit.flush() * units + end.flush()


def _check_single_block(byte, units):
    size, crc, tail = verify(single_block_raw(byte, units))
    assert size == 5 + 2064 * units, (size, units)
    assert tail == bytes([byte]) * min(size, TAIL)
    return crc, tail


@functools.lru_cache(maxsize=None)
def _check_full_length(units):
    """zlib decodes one full-length block (of 0xF0) to the expected run: done once, since
    blocks of other byte values differ only in their first 6 bytes, checked by
    single_block_stream on a short block."""
    return _check_single_block(0xF0, units)


@functools.lru_cache(maxsize=None)
def single_block_stream(byte, units=SINGLE_BLOCK_UNITS):
    """One ~250 MiB single-block stream of byte (see single_block_raw), checked with zlib."""
    _check_single_block(byte, 8)
    _check_full_length(units)
    usize = 5 + 2064 * units
    run = bytes([byte]) * MIB
    crc = 0
    for off in range(0, usize, MIB):
        crc = zlib.crc32(run[: min(MIB, usize - off)], crc)
    return Stream(single_block_raw(byte, units), usize, crc, bytes([byte]) * TAIL)


# --------------------------------------------------------------------------------------------
# a deflate bomb of several GiB of zeros

BOMB_UNIT = MIB  # a block boundary every MiB: a checkpoint per MiB at the default span


def npy_header(nbytes):
    """The .npy header of a 1-d uint8 array of nbytes elements."""
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(hdr, {"descr": "|u1", "fortran_order": False,
                                               "shape": (nbytes,)})
    return hdr.getvalue()


@functools.lru_cache(maxsize=None)
def zero_bomb_stream(units):
    """The .npy of units * BOMB_UNIT zeros (uint8), level 9, as first + middle * (units - 1) +
    last: first is the header and one unit of zeros, middle one more unit, each ended by a
    sync flush (byte aligned, no block open). A decoder enters every copy of middle in the same
    state (aligned, window all zeros), so if first+middle+middle+last decodes right, so does
    any number of middles. Returns (Stream, header)."""
    assert units >= 1
    header = npy_header(units * BOMB_UNIT)
    zero = bytes(BOMB_UNIT)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = c.compress(header) + c.compress(zero) + c.flush(zlib.Z_SYNC_FLUSH)
    middle = c.compress(zero) + c.flush(zlib.Z_SYNC_FLUSH)
    last = c.flush(zlib.Z_FINISH)
    for k in (0, 2):
        size, crc, tail = verify(first + middle * k + last)
        want = header + bytes((k + 1) * BOMB_UNIT)
        assert size == len(want) and crc == zlib.crc32(want), k
    raw = first + middle * (units - 1) + last
    crc = zlib.crc32(header)
    for _ in range(units):
        crc = zlib.crc32(zero, crc)
    usize = len(header) + units * BOMB_UNIT
    return Stream(raw, usize, crc, bytes(TAIL)), header


# --------------------------------------------------------------------------------------------
# a block boundary every 32 KiB, around incompressible windows

PERIOD = 30_000
FLUSH_EVERY = 32 * KIB


@functools.lru_cache(maxsize=None)
def period_pattern(seed=32):
    return np.random.default_rng(seed).integers(0, 256, PERIOD, dtype=np.uint8).tobytes()


def period_bytes(off, n):
    """Bytes [off, off + n) of the endless repetition of period_pattern()."""
    p = period_pattern()
    reps = (off % PERIOD + n) // PERIOD + 1
    start = off % PERIOD
    return (p * reps)[start : start + n]


@functools.lru_cache(maxsize=None)
def flushed_period_stream(usize):
    """usize bytes of the repeated pattern, level 1, sync-flushed every FLUSH_EVERY input
    bytes. Verified by decoding it with zlib against the pattern."""
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    parts = []
    crc = 0
    for off in range(0, usize, FLUSH_EVERY):
        piece = period_bytes(off, min(FLUSH_EVERY, usize - off))
        crc = zlib.crc32(piece, crc)
        parts.append(c.compress(piece))
        parts.append(c.flush(zlib.Z_SYNC_FLUSH))
    parts.append(c.flush(zlib.Z_FINISH))
    raw = b"".join(parts)
    off = 0
    for out in inflate_pieces(raw):
        assert out == period_bytes(off, len(out)), f"the stream differs near {off}"
        off += len(out)
    assert off == usize
    return Stream(raw, usize, crc, period_bytes(usize - TAIL, TAIL))


# --------------------------------------------------------------------------------------------
# archives


def deflated_member(name, stream):
    """A method-8 hostile.Member for stream, with a ZIP64 local extra when it needs one."""
    big = stream.usize >= H.U32 or len(stream.raw) >= H.U32
    local_extra = Z.zip64_extra(stream.usize, len(stream.raw)) if big else b""
    return H.Member(name, b"", 8, raw=stream.raw, usize=stream.usize, crc=stream.crc,
                    local_extra=local_extra)


def stored_member(name, content):
    return H.Member(name, content)


def write_zip(path, members):
    """Writes the archive and checks its directory with zipfile. Returns path."""
    data, _ = H.build_zip(members, zip64_end=any(m.usize >= H.U32 for m in members))
    path = Path(path)
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        for m in members:
            i = infos[m.name.decode()]
            assert (i.file_size, i.CRC, i.compress_type) == (m.usize, m.crc & H.U32, m.method)
    return path


def zipfile_pieces(path, name, piece=MIB):
    """Yields member name as zipfile decodes it, piece bytes at a time (the CRC is checked
    at the end)."""
    with zipfile.ZipFile(path) as zf, zf.open(name) as f:
        while True:
            b = f.read(piece)
            if not b:
                return
            yield b


# the archives the tests use

HUGE_BLOCK_MEMBERS = 10
BOMB_UNITS = 3072          # 3 GiB of zeros (+ the .npy header): ~35 s of zlib here
SPAN_USIZE = 256 * MIB
STORED = {f"s{i}.npy": H.npy(np.arange(150 + i, dtype=np.int64)) for i in range(4)}


def huge_blocks_zip(path):
    """blk0.npy .. blk9.npy, each one ~250 MiB deflate block of its own byte value (0xF0 + i),
    and the stored STORED members. Returns (path, {name: Stream})."""
    streams = {f"blk{i}.npy": single_block_stream(0xF0 + i) for i in range(HUGE_BLOCK_MEMBERS)}
    ms = [deflated_member(n, s) for n, s in streams.items()]
    ms += [stored_member(n, c) for n, c in STORED.items()]
    return write_zip(path, ms), streams


def bomb_zip(path, units=BOMB_UNITS):
    """bomb.npy (units * BOMB_UNIT of zeros) and the stored STORED members (so stored reads,
    stat and listdir can be tried while the bomb decodes). Returns (path, Stream, header);
    checked with zipfile by reading the start of bomb.npy."""
    stream, header = zero_bomb_stream(units)
    ms = [deflated_member("bomb.npy", stream)]
    ms += [stored_member(n, c) for n, c in STORED.items()]
    write_zip(path, ms)
    with zipfile.ZipFile(path) as zf, zf.open("bomb.npy") as f:
        assert f.read(len(header) + MIB) == header + bytes(MIB)
    return Path(path), stream, header


def span_zip(path, usize=SPAN_USIZE):
    """period.npy (flushed_period_stream) and one stored member. Returns (path, Stream)."""
    stream = flushed_period_stream(usize)
    ms = [deflated_member("period.npy", stream), stored_member("s0.npy", STORED["s0.npy"])]
    return write_zip(path, ms), stream
