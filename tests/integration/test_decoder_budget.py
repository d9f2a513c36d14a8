"""The memory of libarchive's decoders (bzip2, LZMA, xz, zstd, PPMd) is bounded by
``-o decoder_mem``: the daemon's peak RSS stays within that budget, the cache and a fixed slack
while members with big dictionaries are read part-way (leaving their decoders idle, not
finished), and a member whose decoder could never fit reads EIO with one log line naming the
method and the size while the other members still read right.

Streams are made here: LZMA and xz with Python's lzma module, bzip2 with bz2, zstd with the
zstd program and PPMd with 7-Zip (7zz or 7z) when installed. References are the generated
contents and Python's zipfile, never the mount."""

import bz2
import contextlib
import errno
import functools
import lzma
import os
import re
import shutil
import struct
import subprocess
import threading
import time
import zipfile

import numpy as np
import pytest

import hostile as H
import npz_support as S
from test_limits import SANITIZED  # ASan's shadow memory makes RSS figures meaningless

MIB = 1 << 20
CACHE = "8M"
SLACK = 32 * MIB  # FUSE buffers, chunks in flight, allocator slack
BIG = 16 * MIB    # output size of each big member, and its dictionary
READ = 13 * MIB   # how much of each big member is read: its decoder stays open
SEVEN_ZIP = shutil.which("7zz") or shutil.which("7z")
ZSTD = shutil.which("zstd")


# --------------------------------------------------------------------------------------------
# contents and streams


@functools.lru_cache(maxsize=None)
def content(size, seed=1):
    """size bytes that compress well with a 64 KiB window (a random block repeated, a few bytes
    changed in each copy) yet fill whatever dictionary they pass through."""
    rng = np.random.default_rng(seed)
    block = 64 << 10
    data = np.tile(rng.integers(0, 256, block, dtype=np.uint8), -(-size // block))[:size].copy()
    idx = rng.integers(0, size, size // 4096)
    data[idx] = rng.integers(0, 256, idx.size, dtype=np.uint8)
    return data.tobytes()


@functools.lru_cache(maxsize=None)
def text(size, seed=2):
    """Base64 of random bytes: a PPMd model grows on it until it fills its memory."""
    import base64

    rng = np.random.default_rng(seed)
    return base64.b64encode(rng.bytes(size * 3 // 4 + 3))[:size]


@functools.lru_cache(maxsize=None)
def lzma_stream(size, dict_size):
    """ZIP method 14: LZMA SDK version, properties size, 5 properties bytes, raw LZMA with an
    end marker (general purpose flag bit 1)."""
    f = {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": 3, "lp": 0, "pb": 2,
         "mode": lzma.MODE_FAST, "mf": lzma.MF_HC3, "nice_len": 32}
    props = lzma._encode_filter_properties({k: f[k] for k in ("id", "dict_size", "lc", "lp",
                                                               "pb")})
    raw = lzma.compress(content(size), format=lzma.FORMAT_RAW, filters=[f])
    return struct.pack("<BBH", 9, 20, len(props)) + props + raw


@functools.lru_cache(maxsize=None)
def xz_stream(size, dict_size):
    f = {"id": lzma.FILTER_LZMA2, "dict_size": dict_size, "mode": lzma.MODE_FAST, "mf": lzma.MF_HC3,
         "nice_len": 32}
    return lzma.compress(content(size), format=lzma.FORMAT_XZ, filters=[f])


@functools.lru_cache(maxsize=None)
def zstd_stream(size, wlog):
    if not ZSTD:
        pytest.skip("zstd is not installed")
    # from a pipe: no content size in the frame, so the window descriptor says it all
    return subprocess.run([ZSTD, "-q", "-1", f"--zstd=wlog={wlog}", "-c"], input=content(size),
                          stdout=subprocess.PIPE, check=True, timeout=120).stdout


@functools.lru_cache(maxsize=None)
def ppmd_stream(size, mem_mb, tmp):
    if not SEVEN_ZIP:
        pytest.skip("7-Zip (7zz or 7z) is not installed")
    src = os.path.join(tmp, "t.bin")
    out = os.path.join(tmp, f"ppmd{mem_mb}.zip")
    with open(src, "wb") as f:
        f.write(text(size))
    subprocess.run([SEVEN_ZIP, "a", "-tzip", f"-mm=PPMd:mem={mem_mb}m:o=16", out, src],
                   stdout=subprocess.DEVNULL, check=True, timeout=300)
    raw, entry = S.member_raw_data(out, "t.bin")
    assert entry.method == 98 and (struct.unpack("<H", raw[:2])[0] >> 4 & 0xFF) + 1 == mem_mb
    return raw


def member(name, method, raw, data):
    # method 14 marks its end-of-stream marker with flag bit 1, as zipfile does
    return H.Member(name, data, method=method, raw=raw, flags=2 if method == 14 else 0)


def write_archive(path, members):
    data, _ = H.build_zip(members)
    path.write_bytes(bytes(data))
    return path


def read_part(path, n, bufsize=MIB):
    """The first n bytes, without kernel readahead: reaching the member's end would close its
    decoder, and this test wants it left open."""
    with open(path, "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        out = bytearray()
        while len(out) < n:
            b = f.read(min(bufsize, n - len(out)))
            assert b, f"{path}: ended at {len(out)}"
            out += b
        return bytes(out)


# --------------------------------------------------------------------------------------------
# peak RSS


def big_members(method, tmp):
    """(members, their content, decoder_mem that holds one of their decoders but not two,
    how much of each to read)."""
    if method == "lzma":
        raw = lzma_stream(BIG, BIG)
    elif method == "xz":
        raw = xz_stream(BIG, BIG)
    elif method == "zstd":
        raw = zstd_stream(BIG, 24)
    else:  # an 8 MiB model, which 512 KiB of this text fill
        raw = ppmd_stream(MIB, 8, str(tmp))
        members = [member(f"m{i}.npy", 98, raw, text(MIB)) for i in range(8)]
        return members, text(MIB), "12M", 512 << 10
    method_id = {"lzma": 14, "xz": 95, "zstd": 93}[method]
    return [member(f"m{i}.npy", method_id, raw, content(BIG)) for i in range(6)], \
        content(BIG), "24M", READ


@pytest.mark.parametrize("method", ["lzma", "xz", "zstd", "ppmd"])
def test_peak_rss_within_decoder_mem(method, tmp_path):
    members, data, budget, part = big_members(method, tmp_path)
    arc = write_archive(tmp_path / f"{method}.zip", members)
    limit = int(budget[:-1]) * MIB
    with S.mounted(arc, tmp_path / "mnt", ["-o", f"cache={CACHE},span=256k,decoder_mem={budget}"]) as mnt:
        pid = S.find_daemons(mnt)[0]
        start = S.proc_status(pid)["VmHWM"]
        # each member part-way: its decoder stays open (idle) unless the budget closes it
        for m in members:
            assert read_part(mnt / m.name.decode(), part) == data[:part], m.name
        peak = S.proc_status(pid)["VmHWM"]
        # and the rest of one, from a cursor closed in the meantime
        with open(mnt / members[0].name.decode(), "rb") as f:
            f.seek(part)
            assert f.read() == data[part:]
    bound = start + limit + int(CACHE[:-1]) * MIB + SLACK
    print(f"\nPEAK_RSS decoders {method}: {(peak - start) // MIB} MiB over the "
          f"{start // MIB} MiB at mount; bound {(bound - start) // MIB} MiB")
    if not SANITIZED:
        assert peak <= bound, f"peak RSS {peak // MIB} MiB, bound {bound // MIB} MiB"


# --------------------------------------------------------------------------------------------
# a decoder larger than the budget


@contextlib.contextmanager
def foreground(archive, mp, options, errpath):
    """npzmount -f with its standard error in errpath; always unmounted and waited for."""
    mp.mkdir()
    with open(errpath, "wb") as err:
        proc = subprocess.Popen([S.BIN, "-f", *options, str(archive), str(mp)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + S.MOUNT_TIMEOUT
        while not S.is_mountpoint(mp):
            assert proc.poll() is None, errpath.read_text()
            assert time.monotonic() < deadline, "not mounted in time"
            time.sleep(0.02)
        yield mp
    finally:
        S.force_unmount(mp)
        try:
            proc.wait(timeout=S.DAEMON_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not S.is_mountpoint(mp)


def ppmd_claim(mem_mb):
    """Only the two property bytes of a PPMd stream (order 8, mem_mb MiB, restore 0) and some
    bytes: the decoder must be refused before anything is decoded."""
    return struct.pack("<H", (mem_mb - 1) << 4 | 7) + bytes(range(200))


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    small = content(2 * MIB, seed=3)
    big = {  # name: (method, raw, content, at least this many MiB)
        "ppmd_claim.npy": (98, ppmd_claim(256), b"x" * 5000, 256),
        "lzma_big.npy": (14, lzma_stream(BIG, BIG), content(BIG), BIG // MIB),
        "xz_big.npy": (95, xz_stream(BIG, BIG), content(BIG), BIG // MIB),
    }
    fits = {
        "bzip2_9.npy": (12, bz2.compress(small, 9), small),
        "lzma_small.npy": (14, lzma_stream(2 * MIB, MIB), content(2 * MIB)),
        "xz_small.npy": (95, xz_stream(2 * MIB, MIB), content(2 * MIB)),
    }
    if ZSTD:
        big["zstd_big.npy"] = (93, zstd_stream(BIG, 24), content(BIG), BIG // MIB)
        fits["zstd_small.npy"] = (93, zstd_stream(2 * MIB, 20), content(2 * MIB))
    members = [member(n, m, raw, data) for n, (m, raw, data, _) in big.items()]
    members += [member(n, m, raw, data) for n, (m, raw, data) in fits.items()]
    members.append(H.Member("stored.npy", small[:100_000]))
    path = write_archive(tmp_path_factory.mktemp("mixed") / "mixed.zip", members)
    return path, big, fits


def test_decoder_over_budget_reads_eio_and_logs(mixed, tmp_path):
    path, big, fits = mixed
    # the reference for the methods zipfile knows; the others are compared to their content
    with zipfile.ZipFile(path) as z:
        known = {n: z.read(n) for n in fits if fits[n][0] in (12, 14)}
        known["stored.npy"] = z.read("stored.npy")
    errpath = tmp_path / "stderr"
    with foreground(path, tmp_path / "mnt", ["-o", "decoder_mem=12M"], errpath) as mnt:
        for name in big:
            for _ in range(2):  # and it stays failed
                with pytest.raises(OSError) as e:
                    S.read_file(mnt / name)
                assert e.value.errno == errno.EIO, name
        for name, (_, _, data) in fits.items():
            got = S.read_file(mnt / name)
            assert got == data, name
            if name in known:
                assert got == known[name], name
        assert S.read_file(mnt / "stored.npy") == known["stored.npy"]
    log = errpath.read_text()
    for name, (method, _, _, mib) in big.items():
        lines = [ln for ln in log.splitlines() if name in ln]
        assert len(lines) == 1, log
        label = {98: "PPMd", 14: "LZMA", 95: "xz", 93: "zstd"}[method]
        m = re.search(rf"{re.escape(name)}: {label} decoder needs (\d+) MiB, more than "
                      r"decoder_mem=12M allows", lines[0])
        assert m, lines[0]
        # the claim (or, for dictionaries, the output size they can fill) plus a little
        assert mib <= int(m.group(1)) <= mib + 2, lines[0]
    for name in fits:
        assert name not in log, log


# --------------------------------------------------------------------------------------------
# eviction and waiting


def test_readers_share_a_budget_of_one_decoder(tmp_path):
    # four threads read four members whose decoders fit one at a time: each new one closes an
    # idle decoder or waits for a busy one to finish its chunk; all bytes come out right
    size = 4 * MIB
    data = content(size, seed=4)
    raw = lzma.compress(data, format=lzma.FORMAT_RAW,
                        filters=[{"id": lzma.FILTER_LZMA1, "dict_size": 8 * MIB}])
    props = lzma._encode_filter_properties({"id": lzma.FILTER_LZMA1, "dict_size": 8 * MIB})
    stream = struct.pack("<BBH", 9, 20, len(props)) + props + raw
    members = [member(f"t{i}.npy", 14, stream, data) for i in range(4)]
    arc = write_archive(tmp_path / "four.zip", members)
    results = {}

    def reader(name):
        try:
            results[name] = S.read_file(mnt / name, bufsize=256 << 10) == data
        except OSError as e:
            results[name] = e

    with S.mounted(arc, tmp_path / "mnt", ["-o", "cache=2M,span=256k,decoder_mem=6M"]) as mnt:
        threads = [threading.Thread(target=reader, args=(m.name.decode(),)) for m in members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert results == {m.name.decode(): True for m in members}
