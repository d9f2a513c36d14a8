"""SOZip (seek-optimized ZIP) members: served through their hidden index, compared with Python's
zipfile and numpy; hostile indexes either fall back to the checkpoint index (one log line) or
read EIO, and never give wrong bytes. The archives come from sozip_writer.py (the
specification, written on zlib), not from the code under test."""

import errno
import os
import random
import zipfile

import numpy as np
import pytest

import decode_support as D
import npz_support as S
import sozip_writer as W

XATTR_CHUNK = "user.npzmount.sozip_chunk"
PIECE = 128 << 10


def npy(arr):
    return S.npy_bytes(arr)


def sozip_chunk(path):
    try:
        return int(os.getxattr(path, XATTR_CHUNK))
    except OSError as e:
        assert e.errno == errno.ENODATA
        return None


def reference(path):
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def decoded(path):
    return int(os.getxattr(path, "user.npzmount.decoded"))


# --------------------------------------------------------------------------------------------
# well-formed archives


def good_arrays():
    rng = np.random.default_rng(12)
    return {
        "c4k": np.cumsum(rng.integers(-3, 4, 700_001), dtype=np.int32),
        "sub/dir/c32k": rng.normal(size=300_000).astype(np.float32),
        "c1m_zip64": np.cumsum(rng.integers(-2, 3, 1_300_003), dtype=np.int32),
        "c4m": np.repeat(rng.integers(0, 50, 600_000, dtype=np.int16), 8),
        "c100000": np.cumsum(rng.integers(-3, 4, 500_000), dtype=np.int64),
        "small": np.arange(1000, dtype=np.int16),
    }


# name -> (chunk, offset size, zip64, data descriptor)
LAYOUT = {
    "c4k": (4096, 4, False, False),
    "sub/dir/c32k": (32 << 10, 8, False, True),
    "c1m_zip64": (1 << 20, 8, True, True),
    "c4m": (4 << 20, 4, False, False),
    "c100000": (100_000, 4, True, False),
    "small": (32 << 10, 4, False, False),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    path = tmp_path_factory.mktemp("sozip") / "good.npz"
    arrays = good_arrays()
    members = [W.Member(f"{k}.npy", npy(v), chunk=LAYOUT[k][0], offset_size=LAYOUT[k][1],
                        zip64=LAYOUT[k][2], descriptor=LAYOUT[k][3]) for k, v in arrays.items()]
    members.append(W.Member("exact.bin", bytes(range(256)) * (64 << 2) * 8, chunk=64 << 10))
    members.append(W.Member("plain.npy", npy(arrays["c4k"]), method="deflate"))
    members.append(W.Member("stored.npy", npy(arrays["small"]), method="stored"))
    W.build(path, members)
    return path, arrays


def test_archive_is_plain_zip_to_others(good):
    path, arrays = good
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None
        assert not any("sozip.idx" in n for n in z.namelist())
    with np.load(path) as f:
        assert sorted(f.files) == sorted([*arrays, "exact.bin", "plain", "stored"])
        for k, v in arrays.items():
            np.testing.assert_array_equal(f[k], v)


def test_members_read_as_zipfile_and_numpy(good, mount):
    path, arrays = good
    ref = reference(path)
    with mount(path) as mnt:
        names = {str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.is_file()}
        assert names == set(ref)
        for name, want in ref.items():
            assert S.read_file(mnt / name) == want, name
        for k, v in arrays.items():
            a = np.load(mnt / f"{k}.npy", mmap_mode="r")
            np.testing.assert_array_equal(a, v)
            del a
        for k, (chunk, *_) in LAYOUT.items():
            assert sozip_chunk(mnt / f"{k}.npy") == (None if k == "small" else chunk), k
        assert sozip_chunk(mnt / "exact.bin") == 64 << 10
        assert sozip_chunk(mnt / "plain.npy") is None
        assert sozip_chunk(mnt / "stored.npy") is None


@pytest.mark.parametrize("name", ["c4k", "sub/dir/c32k", "c1m_zip64", "c4m", "c100000"])
def test_random_reads_decode_only_what_they_touch(good, mount, name):
    path, _ = good
    want = reference(path)[f"{name}.npy"]
    chunk = LAYOUT[name][0]
    rng = random.Random(name)
    with mount(path, "-o", "noprefetch") as mnt:
        fd = os.open(mnt / f"{name}.npy", os.O_RDONLY)
        try:
            at = len(want) * 9 // 10
            assert os.pread(fd, 8, at) == want[at:at + 8]
            # one group: the chunks of the piece read (and of a piece the kernel read with it)
            assert decoded(mnt / f"{name}.npy") <= 2 * (max(chunk, PIECE) + chunk)
            for _ in range(60):
                off = rng.randrange(len(want))
                n = rng.choice([1, 100, 5000, 200_000])
                assert os.pread(fd, n, off) == want[off:off + n], (off, n)
        finally:
            os.close(fd)


CHUNK_64K = 64 << 10


def one_member(tmp_path, name, seed):
    """An archive of one SOZip int64 member (4.6 MiB, 64 KiB chunks); returns it and the array."""
    want = np.cumsum(np.random.default_rng(seed).integers(-3, 4, 600_000), dtype=np.int64)
    path = tmp_path / f"{name}.npz"
    W.build(path, [W.Member(f"{name}.npy", npy(want), chunk=CHUNK_64K)])
    return path, want


def test_numpy_load_decodes_no_chunk_ahead(mount, tmp_path):
    """np.load reads the header, and the kernel the window after it, then a mapping is read at
    random: that is no sequential reader, so nothing is decoded ahead of what was asked for
    (a third read in a row would start it: 1 MiB)."""
    path, want = one_member(tmp_path, "c64k", 3)
    with mount(path) as mnt:
        a = np.load(mnt / "c64k.npy", mmap_mode="r")
        for frac in (0.1, 0.35, 0.6, 0.85, 0.5):
            i = int(len(want) * frac)
            assert a[i] == want[i]
        del a
        # the header's two 128 KiB reads touch 4 chunks, each fault's 96 KiB window at most 3
        assert decoded(mnt / "c64k.npy") <= (4 + 3 * 5) * CHUNK_64K


def test_sequential_reader_gets_chunks_decoded_ahead(mount, tmp_path):
    """Three reads in a row make a sequential reader: the chunks after them are decoded on
    the workers before anyone asks (a job of 256 KiB per worker at once), and read as the
    archive has them."""
    path, want = one_member(tmp_path, "seq", 4)
    data = npy(want)
    with mount(path, "-o", "noprefetch") as mnt:
        f = mnt / "seq.npy"
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # the kernel's readahead off
            for off in range(0, 3 * PIECE, PIECE):
                assert os.pread(fd, PIECE, off) == data[off:off + PIECE]
            ahead = D.poll_until(lambda: decoded(f) >= 3 * PIECE + (256 << 10), timeout=20)
            assert ahead, decoded(f)
            rest = os.pread(fd, len(data), 3 * PIECE)
            assert rest == data[3 * PIECE:]
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# hostile indexes


def _swap_two(offs):
    offs[3], offs[4] = offs[4], offs[3]
    return offs


def _past_end(offs):
    offs[-1] = 10 ** 9
    return offs


def _mid_chunk(offs):
    offs[5] += (offs[6] - offs[5]) // 2
    return offs


DATA = np.cumsum(np.random.default_rng(5).integers(-3, 4, 200_000), dtype=np.int32)
REPEATS = os.urandom(3000) * 200  # back references reach across every chunk boundary
# Chunks that compress to more than half their size are decoded by another decoder
# (libdeflate), which every hostile case must meet too: the same cases, of noise.
NOISE = np.random.default_rng(6).normal(size=200_000).astype(np.float32)
KINDS = {"": DATA, "_noise": NOISE}
# 3000 random bytes, then 1000 of them again: mostly literals, back references across every
# chunk boundary.
NOISY_REPEATS = b"".join(r + r[:1000] for r in (os.urandom(3000) for _ in range(200)))
BACKREFS = {"backrefs.bin": REPEATS, "backrefs_noise.bin": NOISY_REPEATS}

# name -> (Member knobs, what must happen: "fallback" (logged), "silent" (no index), "eio")
HOSTILE = {
    "out_of_order": (dict(offsets=_swap_two), "fallback"),
    "past_end": (dict(offsets=_past_end), "fallback"),
    "usize_lies": (dict(header={"usize": 800_200}), "fallback"),
    "csize_lies": (dict(header={"csize": 1234}), "fallback"),
    "version_2": (dict(header={"version": 2}), "fallback"),
    "offset_size_3": (dict(header={"offset_size": 3}), "fallback"),
    "chunk_0": (dict(header={"chunk_size": 0}), "fallback"),
    "truncated": (dict(truncate=6), "fallback"),
    "wrong_name": (dict(index_name="other.sozip.idx"), "silent"),
    "mid_chunk": (dict(offsets=_mid_chunk), "eio"),
    "final_mid": (dict(final_in=2), "eio"),  # a final block ends chunk 2
    "chunk_lies": (dict(header={"chunk_size": 64 << 10}), "eio"),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    path = tmp_path_factory.mktemp("sozip") / "hostile.npz"
    members = [W.Member(f"{k}{kind}.npy", npy(data), chunk=32 << 10, **knobs)
               for k, (knobs, _) in HOSTILE.items() for kind, data in KINDS.items()]
    members += [W.Member(name, data, chunk=32 << 10, full_flush=False)
                for name, data in BACKREFS.items()]
    members += [W.Member(f"crc{kind}.npy", npy(data), chunk=32 << 10)
                for kind, data in KINDS.items()]
    members.append(W.Member("stored_indexed.npy", npy(DATA), method="stored", index=True))
    W.build(path, members)
    for kind, data in KINDS.items():
        S.set_central_crc(path, f"crc{kind}.npy", zipfile.crc32(npy(data)) ^ 1)
    return path


def _reads_or_eio(path, want, rng, count=40):
    """Random reads give the right bytes (short of the end only when a later part of the
    kernel's request failed) or EIO; returns how many gave EIO or came short."""
    eio = 0
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(count):
            off = rng.randrange(len(want))
            n = rng.choice([1, 4096, 100_000])
            try:
                got = os.pread(fd, n, off)
                assert got == want[off:off + len(got)], (path, off, n)
                eio += len(got) < len(want[off:off + n])
            except OSError as e:
                assert e.errno == errno.EIO, e
                eio += 1
    finally:
        os.close(fd)
    return eio


def test_hostile_indexes_fall_back_or_fail(hostile, mount, tmp_path):
    log = tmp_path / "npz.log"
    rng = random.Random(7)
    names = [(f"{name}{kind}", outcome, npy(data))
             for name, (_, outcome) in HOSTILE.items() for kind, data in KINDS.items()]
    with mount(hostile, "-o", f"logfile={log}") as mnt:
        for name, outcome, want in names:
            p = mnt / f"{name}.npy"
            if outcome == "eio":
                _reads_or_eio(p, want, rng)
                assert S.read_errno(p) == errno.EIO, name
                assert sozip_chunk(p) == 32 << 10 or name.startswith("chunk_lies"), name
            else:
                assert S.read_file(p) == want, name
                assert _reads_or_eio(p, want, rng) == 0, name
                assert sozip_chunk(p) is None, name
        assert S.read_file(mnt / "stored_indexed.npy") == npy(DATA)
        S.poll(lambda: "mid_chunk.npy" in log.read_text(), 5, "the log line of mid_chunk")
    text = log.read_text()
    for name, outcome, _ in names:
        lines = [l for l in text.splitlines() if f"{name}.npy: SOZip index ignored" in l]
        assert len(lines) == (1 if outcome == "fallback" else 0), (name, text)


@pytest.mark.parametrize("name", BACKREFS)
def test_back_references_across_chunks_read_eio(hostile, mount, name):
    with mount(hostile) as mnt:
        p = mnt / name
        assert _reads_or_eio(p, BACKREFS[name], random.Random(3)) > 0
        assert S.read_errno(p) == errno.EIO


@pytest.mark.parametrize("kind", KINDS)
def test_crc_checked_once_read_through(hostile, mount, kind):
    want = npy(KINDS[kind])
    with mount(hostile) as mnt:
        p = mnt / f"crc{kind}.npy"
        with open(p, "rb") as f:  # any part alone is served: only the whole has a CRC
            assert f.read(1 << 16) == want[:1 << 16]
        assert S.read_errno(p) == errno.EIO
        assert "CRC" in os.getxattr(p, "user.npzmount.error").decode()


def test_chunk_too_large_for_cache_falls_back(good, mount):
    path, arrays = good
    with mount(path, "-o", "cache=4M") as mnt:
        p = mnt / "c4m.npy"
        np.testing.assert_array_equal(np.load(p), arrays["c4m"])
        assert sozip_chunk(p) is None
        assert sozip_chunk(mnt / "c1m_zip64.npy") == 1 << 20
