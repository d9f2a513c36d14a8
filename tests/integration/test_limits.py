"""Resource limits: the daemon's memory on a zip bomb and under 16 concurrent readers (with a
16 MiB cache), file descriptors over 2,000 open/read/close cycles, and a million members.

Figures are printed as lines like ``PEAK_RSS zipbomb: N KiB`` (shown even without -s) and
appended to the file named by $NPZ_METRICS when it is set.
"""

import contextlib
import errno
import hashlib
import os
import random
import threading
import time

import numpy as np
import pytest

import hostile as H
import npz_support as S

def _sanitized(binary):
    """True for a daemon built with ASan/UBSan: its memory figures mean nothing (shadow
    memory, quarantine), so the bounds are not asserted (the figures are still printed)."""
    try:
        with open(binary, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized(S.BIN)
MIB = 1 << 20
CACHE = 16 * MIB
SLACK = 48 * MIB
INDEX_PER_MIB = 32 << 10  # one 32 KiB window per 1 MiB span of output


def report(capsys, *lines):
    if SANITIZED:
        lines = [f"{line} [sanitized daemon: not checked]" for line in lines]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    path = os.environ.get("NPZ_METRICS")
    if path:
        with open(path, "a") as f:
            f.write("\n".join(lines) + "\n")


def daemon_of(mnt):
    pids = S.find_daemons(mnt)
    assert len(pids) == 1, pids
    return pids[0]


def drop_page_cache(fd, off=0, n=0):
    """Evicts the kernel's cached pages of this mounted file (so the next reads reach the
    daemon again): FUSE files live in the ordinary page cache."""
    os.posix_fadvise(fd, off, n, os.POSIX_FADV_DONTNEED)


def read_digest(path, chunk=MIB, start=0, drop=False):
    """(bytes read, sha256) of path from start to the end."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        if drop:
            drop_page_cache(f.fileno())
        f.seek(start)
        while True:
            b = f.read(chunk)
            if not b:
                return size, h.hexdigest()
            size += len(b)
            h.update(b)


# --------------------------------------------------------------------------------------------
# (a) zip bomb


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return H.zip_bomb(tmp_path_factory.mktemp("bomb"))


def test_zip_bomb_memory(bomb, mount, capsys):
    path, details = bomb
    usize = details["sizes"]["bomb.npy"]
    assert usize / details["csize"] > 900, "premise: a ratio of about 1000"
    with mount(path, "-o", "cache=16M") as mnt:
        pid = daemon_of(mnt)
        start = S.proc_status(pid)

        # the 2**40 claim: EIO quickly (the stream ends early), memory stays small
        assert os.stat(mnt / "tera.npy").st_size == 1 << 40
        t0 = time.monotonic()
        with open(mnt / "tera.npy", "rb", buffering=0) as f:
            with pytest.raises(OSError) as e:
                f.read(MIB)
            assert e.value.errno == errno.EIO
            f.seek((1 << 40) - 4096)
            with pytest.raises(OSError) as e:
                f.read(4096)
            assert e.value.errno == errno.EIO
        tera_s = time.monotonic() - t0
        tera = S.proc_status(pid)
        assert tera_s < 10, f"failing the 2**40 claim took {tera_s:.1f}s"
        if not SANITIZED:
            assert tera["VmHWM"] < start["VmHWM"] + 8 * MIB, (start, tera)

        # the real bomb: 200 MiB out of 200 KiB, read to the end
        t0 = time.monotonic()
        got = read_digest(mnt / "bomb.npy")
        bomb_s = time.monotonic() - t0
        expected = details["good"]["bomb.npy"]
        assert got == (expected.size, expected.sha256)
        after = S.proc_status(pid)

        # again, with the page cache dropped, by 4 readers starting at 0, 50, 100, 150 MiB:
        # now every chunk is decoded again (the cache holds 16 MiB of 200), by several threads
        results = {}
        zeros = bytes(MIB)

        def reread(k):
            if k == 0:
                results[k] = read_digest(mnt / "bomb.npy", drop=True)
                return
            n = 0
            with open(mnt / "bomb.npy", "rb", buffering=0) as f:  # past the header: zeros
                drop_page_cache(f.fileno())
                f.seek(k * 50 * MIB)
                while True:
                    b = f.read(MIB)
                    if not b:
                        break
                    assert b == zeros[:len(b)], f"reader {k}: non-zero bytes near {n}"
                    n += len(b)
            results[k] = (n, None)

        threads = [threading.Thread(target=reread, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads), "re-readers hung"
        assert results[0] == (expected.size, expected.sha256)
        for k in range(1, 4):
            assert results.get(k) == (usize - k * 50 * MIB, None), (k, results.get(k))
        again = S.proc_status(pid)

        bound = CACHE + INDEX_PER_MIB * (usize // MIB + 1) + SLACK
        report(capsys,
               f"PEAK_RSS zipbomb: {after['VmHWM'] // 1024} KiB (VmRSS {after['VmRSS'] // 1024} "
               f"KiB, at mount {start['VmHWM'] // 1024} KiB, bound {bound // 1024} KiB; "
               f"{usize // MIB} MiB from {details['csize'] // 1024} KiB read in {bomb_s:.2f}s)",
               f"PEAK_RSS zipbomb_reread4: {again['VmHWM'] // 1024} KiB (VmRSS "
               f"{again['VmRSS'] // 1024} KiB; page cache dropped, 4 concurrent readers)",
               f"PEAK_RSS terabyte_claim: {tera['VmHWM'] // 1024} KiB (EIO after {tera_s:.3f}s)")
        assert S.read_file(mnt / "small.npy") == details["good"]["small.npy"]
        if not SANITIZED:
            assert after["VmHWM"] < bound, f"peak RSS {after['VmHWM']} over {bound} (one pass)"
            assert again["VmHWM"] < bound, f"peak RSS {again['VmHWM']} over {bound} (4 readers)"


# --------------------------------------------------------------------------------------------
# (b) 16 concurrent readers, 16 MiB cache

CONC_SIZES_MIB = (8, 9, 10, 11, 12, 13, 14, 16)


@pytest.fixture(scope="module")
def concurrent_npz(tmp_path_factory):
    """np.savez_compressed of 8 uint8 arrays of 8-16 MiB: a 30011-byte pattern with 256 random
    bytes every 4 KiB (every position unique; ~14% compressed; deflate blocks of ordinary
    size)."""
    rng = np.random.default_rng(16)
    arrays = {}
    for i, mib in enumerate(CONC_SIZES_MIB):
        n = mib * MIB
        a = np.resize(rng.integers(0, 256, 30011, dtype=np.uint8), n)
        a.reshape(-1, 4096)[:, :256] = rng.integers(0, 256, (n // 4096, 256), dtype=np.uint8)
        arrays[f"m{i}"] = a
    path = tmp_path_factory.mktemp("conc") / "conc.npz"
    np.savez_compressed(path, **arrays)
    return path, {f"m{i}.npy": S.npy_bytes(a) for i, a in enumerate(arrays.values())}


def test_concurrent_readers_memory(concurrent_npz, mount, capsys):
    path, ref = concurrent_npz
    names = sorted(ref)
    total = sum(len(v) for v in ref.values())
    errors = []
    counts = [0] * 16

    def worker(k, mnt):
        rng = random.Random(1000 + k)
        try:
            for it in range(10):
                name = rng.choice(names)
                want = ref[name]
                fd = os.open(mnt / name, os.O_RDONLY)
                try:
                    if it == 0 and k < len(names):
                        # every member once from start to end, in 1 MiB reads
                        name = names[k]
                        want = ref[name]
                        os.close(fd)
                        fd = os.open(mnt / name, os.O_RDONLY)
                        got = S.pread_all(fd, len(want), MIB)
                        assert got == want, f"{name}: full read differs"
                    else:
                        off = rng.randrange(len(want))
                        n = rng.randrange(1, 2 * MIB)
                        drop_page_cache(fd, off, n)  # make the daemon serve it
                        got = os.pread(fd, n, off)
                        assert got == want[off:off + n], f"{name}: [{off}, +{n}) differs"
                    counts[k] += 1
                finally:
                    os.close(fd)
        except BaseException as e:  # reported below
            errors.append((k, repr(e)))

    with mount(path, "-o", "cache=16M") as mnt:
        pid = daemon_of(mnt)
        start = S.proc_status(pid)
        threads = [threading.Thread(target=worker, args=(k, mnt), daemon=True)
                   for k in range(16)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        elapsed = time.monotonic() - t0
        assert not any(t.is_alive() for t in threads), "readers hung"
        assert not errors, errors
        assert sum(counts) == 160
        after = S.proc_status(pid)
        bound = CACHE + INDEX_PER_MIB * (total // MIB + len(names)) + SLACK
        report(capsys,
               f"PEAK_RSS concurrent16: {after['VmHWM'] // 1024} KiB (VmRSS "
               f"{after['VmRSS'] // 1024} KiB, at mount {start['VmHWM'] // 1024} KiB, bound "
               f"{bound // 1024} KiB; 8 members, {total // MIB} MiB, 16 threads, "
               f"{elapsed:.2f}s)")
        if not SANITIZED:
            assert after["VmHWM"] < bound, f"peak RSS {after['VmHWM']} over {bound}"


# --------------------------------------------------------------------------------------------
# (c) file descriptors


def test_no_fd_leak(tmp_path, mount, capsys):
    # good stored and deflated members, one that fails when decoded (CRC mismatch) and one
    # flagged when the archive is opened (strong encryption): error paths must not leak either
    ms = H.std_members()
    ms[0].flags |= 0x41   # a.npy: strong encryption
    ms[1].crc ^= 1        # b.npy: CRC mismatch
    data, _ = H.build_zip(ms)
    path = H.write(tmp_path, "fd.npz", data)
    bad = {"a.npy", "b.npy"}
    good = {n: H.contents()[n] for n in H.STD_NAMES if n not in bad}
    names = sorted(H.STD_NAMES)
    with mount(path) as mnt:
        pid = daemon_of(mnt)
        archive = os.path.realpath(path)

        def cycle(i):
            name = names[i % len(names)]
            fd = os.open(mnt / name, os.O_RDONLY)
            try:
                size = os.fstat(fd).st_size
                # bad members at their end (a CRC mismatch shows only there), good ones anywhere
                off = size - 1 if name in bad else (i * 7919) % max(size, 1)
                try:
                    got = os.pread(fd, 4096, off)
                except OSError as e:
                    assert name in bad and e.errno == errno.EIO, (name, e)
                else:
                    assert name in good and got == good[name][off:off + 4096], name
            finally:
                os.close(fd)

        for i in range(len(names)):  # warm-up: every member once
            cycle(i)
        before = S.daemon_fds(pid)
        assert list(before.values()).count(archive) == 1, \
            f"the daemon should hold the archive open exactly once: {before}"
        for i in range(2000):
            cycle(i)
        after = S.daemon_fds(pid)
        report(capsys, f"DAEMON_FDS before: {len(before)} after 2000 cycles: {len(after)}")
        assert len(after) == len(before), (before, after)
        assert sorted(after.values()) == sorted(before.values())
        assert list(after.values()).count(archive) == 1


# --------------------------------------------------------------------------------------------
# (d) a million members


@pytest.mark.skipif(os.environ.get("NPZMOUNT_SKIP_SLOW") == "1", reason="NPZMOUNT_SKIP_SLOW=1")
@pytest.mark.skipif(SANITIZED, reason="scaling figures of a sanitized daemon mean nothing")
def test_million_members_scaling(tmp_path, mount, capsys):
    """Mount time, listing time and daemon memory for 250,000 and 1,000,000 tiny members
    (1,000 per directory): roughly linear."""
    figures = {}
    for n in (250_000, 1_000_000):
        path = H.many_members(tmp_path / f"many{n}.zip", n)
        with contextlib.ExitStack() as stack:
            t0 = time.monotonic()
            mnt = stack.enter_context(mount(path))
            t_mount = time.monotonic() - t0
            pid = daemon_of(mnt)
            at_mount = S.proc_status(pid)
            t0 = time.monotonic()
            dirs = os.listdir(mnt)
            count = sum(len(os.listdir(mnt / d)) for d in dirs)
            t_ls = time.monotonic() - t0
            assert len(dirs) == n // 1000 and count == n
            for i in random.Random(n).sample(range(n), 20) + [0, n - 1]:
                with open(mnt / H.many_member_name(i), "rb") as f:
                    assert f.read() == i.to_bytes(4, "little"), i
            st = S.proc_status(pid)
            figures[n] = (t_mount, t_ls, st["VmHWM"], st["VmRSS"], at_mount["VmHWM"])
        os.unlink(path)
    lines = []
    for n, (tm, tl, hwm, rss, hwm_mount) in figures.items():
        lines.append(f"MANY_MEMBERS {n}: mount {tm:.2f}s, list {tl:.2f}s, VmHWM {hwm // 1024} "
                     f"KiB (at mount {hwm_mount // 1024} KiB), VmRSS {rss // 1024} KiB")
    small, big = figures[250_000], figures[1_000_000]
    rss_ratio = big[2] / small[2]
    time_ratio = big[0] / max(small[0], 0.05)
    per_member = (big[2] - small[2]) / 750_000
    lines.append(f"MANY_MEMBERS ratios 1M/250k: VmHWM {rss_ratio:.2f}, mount time "
                 f"{time_ratio:.2f}; {per_member:.0f} bytes of daemon memory per member")
    report(capsys, *lines)
    assert rss_ratio < 6, lines
    assert time_ratio < 8, lines
    assert big[0] + big[1] < 40, f"mount + list of 1M members took {big[0] + big[1]:.1f}s"
