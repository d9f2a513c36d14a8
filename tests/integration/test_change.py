"""The archive changes while mounted, in ways that timestamps alone do not show: rewritten in
place with the same size and the mtime put back (cp -p, touch -r, rsync -t), or replaced by a
file renamed over its path. A member opened before the change then reads EIO, never bytes of
the new file; pages the kernel had cached (by read or mmap) are dropped, so they fail too once
the change is noticed, which happens even when no read reaches the daemon (inotify). With
-o nofollow everything reads EIO from then on.

The reference is numpy's own serialisation of the arrays each archive was made from."""

import errno
import faulthandler
import mmap
import os
import signal
import time

import numpy as np
import pytest

import npz_support as S

# Liveness bound: how long the kernel may go on serving cached pages of the old archive (they
# hold its bytes, never the new file's) before the daemon has dropped them.
INVALIDATION_TIMEOUT = 10.0

# These tests are about the old version going away, so the mount does not switch to the new
# one (test_follow.py covers that).
NOFOLLOW = ("-o", "nofollow")

BIG = "big.npy"  # 4 MiB + header: several readahead windows, one cached at the head only


def _arrays(seed):
    rng = np.random.default_rng(seed)
    return {"big": rng.integers(0, 2**30, 1 << 20, dtype=np.int32),
            "small": rng.standard_normal(1000),
            "late": rng.integers(0, 255, 300_000, dtype=np.uint8)}


@pytest.fixture(scope="module")
def versions(tmp_path_factory):
    """Two np.savez archives of the same layout and size with different contents, and the
    bytes of the old one's members."""
    d = tmp_path_factory.mktemp("versions")
    old, new = _arrays(1), _arrays(2)
    np.savez(d / "old.npz", **old)
    np.savez(d / "new.npz", **new)
    assert os.path.getsize(d / "old.npz") == os.path.getsize(d / "new.npz")
    ref = {f"{k}.npy": S.npy_bytes(v) for k, v in old.items()}
    for k, v in new.items():
        assert S.npy_bytes(v) != ref[f"{k}.npy"]
    return d / "old.npz", d / "new.npz", ref


def _copy(src, dst):
    dst.write_bytes(src.read_bytes())
    return dst


def _pread(fd, n, off):
    """The bytes, or None for EIO (any other error fails). A read that fails part way returns
    the bytes before the failure (short), as read(2) does."""
    try:
        return os.pread(fd, n, off)
    except OSError as e:
        assert e.errno == errno.EIO, f"offset {off}: {errno.errorcode.get(e.errno, e.errno)}"
        return None


def _cache_through_mmap(path, off, n):
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
        return bytes(m[off:off + n])


def _fails_now(fd, off, n=65536):
    """A range never read before: the very next read fails."""
    assert _pread(fd, n, off) is None, f"offset {off}: served bytes after the archive changed"


def _fails_soon(fd, off, want):
    """A range read before (cached): it may give the old bytes for a while, never others,
    then fails."""
    deadline = time.monotonic() + INVALIDATION_TIMEOUT
    while True:
        got = _pread(fd, len(want), off)
        if got is None:
            return
        assert got and got == want[:len(got)], f"offset {off}: bytes of another version"
        assert time.monotonic() < deadline, (
            f"offset {off}: cached pages still served {INVALIDATION_TIMEOUT}s after the change")
        time.sleep(0.01)


def _rewrite_keeping_times(arc, new):
    """Writes new's bytes over arc in place (same inode, same size), then puts arc's atime and
    mtime back, as cp -p or rsync -t would."""
    before = os.stat(arc)
    data = new.read_bytes()
    assert len(data) == before.st_size
    with open(arc, "r+b") as f:
        f.write(data)
    os.utime(arc, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(arc)
    # what the old check (size and mtime) saw: nothing
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == \
        (before.st_ino, before.st_size, before.st_mtime_ns)


def _rename_over(arc, new):
    tmp = arc.with_name(arc.name + ".tmp")
    _copy(new, tmp)
    os.replace(tmp, arc)


def _open_and_cache(mnt, ref):
    """Opens every member; caches the head of big.npy by read and a middle range by mmap.
    Returns (fds, {offset: cached bytes})."""
    fds = {m: os.open(mnt / m, os.O_RDONLY) for m in ref}
    cached = {0: os.pread(fds[BIG], 65536, 0)}
    mid = 1 << 20
    cached[mid] = _cache_through_mmap(mnt / BIG, mid, 65536)
    for off, b in cached.items():
        assert b == ref[BIG][off:off + len(b)]
    return fds, cached


def _check_all_fail(mnt, fds, ref):
    for m, fd in fds.items():
        for off in range(0, len(ref[m]), 1 << 20):
            assert _pread(fd, 65536, off) is None, f"{m} at {off}"
    # the mount itself still answers, from the table read at mount time
    assert sorted(os.listdir(mnt)) == sorted(ref)
    assert os.stat(mnt / BIG).st_size == len(ref[BIG])
    with open(mnt / "small.npy", "rb") as f:  # opened after the change
        with pytest.raises(OSError) as e:
            f.read()
        assert e.value.errno == errno.EIO


@pytest.mark.parametrize("change", [_rewrite_keeping_times, _rename_over],
                         ids=["rewritten-same-size-mtime-restored", "renamed-over"])
def test_read_after_change(change, versions, tmp_path):
    """A read reaches the daemon first (a range not read before): it notices the change."""
    old, new, ref = versions
    arc = _copy(old, tmp_path / "a.npz")
    with S.foreground(arc, tmp_path / "mnt", NOFOLLOW) as fg:
        fds, cached = _open_and_cache(fg.mp, ref)
        try:
            change(arc, new)
            _fails_now(fds[BIG], len(ref[BIG]) - 65536)
            _fails_now(fds["late.npy"], 4096)
            for off, want in cached.items():
                _fails_soon(fds[BIG], off, want)
            _check_all_fail(fg.mp, fds, ref)
        finally:
            for fd in fds.values():
                os.close(fd)
        assert fg.proc.poll() is None, "the daemon died"
        log = fg.stderr().splitlines()
        assert len(log) == 1, log  # one line for the archive, none per member
        assert str(arc) in log[0] and "changed" in log[0], log


@pytest.mark.parametrize("change", [_rewrite_keeping_times, _rename_over],
                         ids=["rewritten-same-size-mtime-restored", "renamed-over"])
def test_cached_pages_dropped_without_a_read(change, versions, tmp_path, mount):
    """Only cached ranges are read after the change, so no read need reach the daemon: it
    must notice by itself and drop the pages."""
    old, new, ref = versions
    arc = _copy(old, tmp_path / "a.npz")
    with mount(arc, *NOFOLLOW) as mnt:
        fds, cached = _open_and_cache(mnt, ref)
        try:
            change(arc, new)
            for off, want in cached.items():
                _fails_soon(fds[BIG], off, want)
            _check_all_fail(mnt, fds, ref)
        finally:
            for fd in fds.values():
                os.close(fd)


def test_live_mapping_faults_after_change(versions, tmp_path, mount):
    """A mapping made before the change: its pages are taken away, so the next access faults
    (SIGBUS, as for any failed read of a mapped file) instead of showing the new bytes."""
    old, new, ref = versions
    arc = _copy(old, tmp_path / "a.npz")
    with mount(arc, *NOFOLLOW) as mnt:
        to_child_r, to_child_w = os.pipe()
        to_parent_r, to_parent_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child: maps, reports, waits for the change, touches the page again
            code = 3  # the page never went away
            faulthandler.disable()  # the SIGBUS is expected: no traceback on stderr
            try:
                with open(mnt / BIG, "rb") as f:
                    m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
                os.write(to_parent_w, b"1" if m[:4096] == ref[BIG][:4096] else b"0")
                os.read(to_child_r, 1)
                deadline = time.monotonic() + INVALIDATION_TIMEOUT
                while time.monotonic() < deadline:
                    if m[:4096] != ref[BIG][:4096]:
                        code = 2  # bytes of another version
                        break
                    time.sleep(0.01)
            finally:
                os._exit(code)
        try:
            assert os.read(to_parent_r, 1) == b"1", "the mapping did not show the old bytes"
            _rewrite_keeping_times(arc, new)
        finally:
            os.write(to_child_w, b"x")
            _, status = os.waitpid(pid, 0)
            for fd in (to_child_r, to_child_w, to_parent_r, to_parent_w):
                os.close(fd)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGBUS, (
            "child: " + (f"exit {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
                         else f"signal {os.WTERMSIG(status)}"))


def test_readers_racing_the_change(versions, tmp_path, mount):
    """Readers keep reading (and the kernel reading ahead) while the archive is rewritten and
    the pages are dropped: each read gives the old bytes or EIO, every reader ends up with EIO,
    and the daemon neither deadlocks nor dies (the mount fixture unmounts and waits for it)."""
    import threading

    old, new, ref = versions
    arc = _copy(old, tmp_path / "a.npz")
    want = ref[BIG]
    with mount(arc, *NOFOLLOW) as mnt:
        errors, saw_eio, reads = [], [], []

        def reader(start):
            fd = os.open(mnt / BIG, os.O_RDONLY)
            try:
                off = start
                deadline = time.monotonic() + 2 * INVALIDATION_TIMEOUT
                while time.monotonic() < deadline:
                    got = _pread(fd, 65536, off)
                    if got is None:
                        saw_eio.append(start)
                        return
                    if not got or got != want[off:off + len(got)]:
                        errors.append(f"offset {off}: bytes of another version")
                        return
                    reads.append(off)
                    off = (off + len(got)) % len(want)
            except BaseException as e:  # reported below
                errors.append(repr(e))
            finally:
                os.close(fd)

        threads = [threading.Thread(target=reader, args=(i * (1 << 20),)) for i in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + INVALIDATION_TIMEOUT
        while len(reads) < 64 and not errors and time.monotonic() < deadline:
            time.sleep(0.01)  # the readers are under way before the change
        _rewrite_keeping_times(arc, new)
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(saw_eio) == len(threads), "a reader went on reading after the change"
