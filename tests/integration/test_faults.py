"""Faults while mounted: the archive truncated or rewritten underneath a live mount, the daemon
killed with SIGKILL, and unmounting (plain and lazy) while a reader is busy.

These tests manage their mounts themselves (bare_mount) because they kill or detach the daemon,
which npz_support.mounted() would report as a failure; bare_mount still always unmounts and
never leaves a daemon behind.
"""

import contextlib
import errno
import os
import shutil
import signal
import subprocess
import threading
import time
import zipfile

import numpy as np
import pytest

import npz_support as S

MEMBERS = ("stored.npy", "deflated.npy", "small.npy", "late.npy")


@pytest.fixture(scope="module")
def fault_archive(tmp_path_factory):
    """stored.npy (4 MiB random, stored), deflated.npy (~4 MiB, 4 spans), small.npy, late.npy
    (stored, placed last so that it lies in the second half of the file)."""
    rng = np.random.default_rng(31337)
    arrays = {
        "stored.npy": rng.integers(0, 2**31, 1 << 20, dtype=np.int32),
        "deflated.npy": rng.integers(0, 8, 4 << 20, dtype=np.uint8),
        "small.npy": np.arange(100, dtype=np.float64),
        "late.npy": rng.standard_normal(100_000),
    }
    ref = {k: S.npy_bytes(v) for k, v in arrays.items()}
    path = tmp_path_factory.mktemp("faults") / "fault.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("stored.npy", ref["stored.npy"], compress_type=zipfile.ZIP_STORED)
        zf.writestr("deflated.npy", ref["deflated.npy"], compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("small.npy", ref["small.npy"], compress_type=zipfile.ZIP_STORED)
        zf.writestr("late.npy", ref["late.npy"], compress_type=zipfile.ZIP_STORED)
    return path, ref


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)


@contextlib.contextmanager
def bare_mount(archive, mp, *options):
    """Mounts archive at mp and yields (mp, daemon pid). Always cleans up: unmounts (lazily if
    needed), waits for the daemon to exit, kills it if it does not."""
    mp.mkdir(parents=True, exist_ok=True)
    pid = None
    try:
        r = S.run_npzmount([*options, archive, mp])
        assert r.returncode == 0, r
        assert S.is_mountpoint(mp)
        pids = S.find_daemons(mp)
        assert len(pids) == 1, pids
        pid = pids[0]
        S.ACTIVE[str(mp)] = pid  # let the conftest watchdog end it if a test hangs
        yield mp, pid
    finally:
        S.ACTIVE.pop(str(mp), None)
        if S.is_mountpoint(mp):
            S.force_unmount(mp)
        if pid is not None and not S.wait_exit(pid, 10):
            S.kill_pid(pid)
            S.wait_exit(pid, 5)


def _daemon_state(pid):
    """The daemon must exist and not be a zombie (a SIGBUS/SIGSEGV would have killed it)."""
    assert S.pid_alive(pid), f"the daemon (pid {pid}) is gone"


def _pread_or_errno(fd, n, off):
    try:
        return os.pread(fd, n, off)
    except OSError as e:
        return e.errno


def _check_each_chunk(fd, ref, chunk=64 << 10):
    """Reads the whole member chunk by chunk: every chunk is either EIO or the ORIGINAL bytes.
    Returns the number of chunks that failed with EIO."""
    eio = 0
    for off in range(0, len(ref), chunk):
        got = _pread_or_errno(fd, chunk, off)
        if isinstance(got, int):
            assert got == errno.EIO, f"offset {off}: {errno.errorcode.get(got, got)}"
            eio += 1
        else:
            # A read the kernel split into several requests may end short when the change is
            # noticed between them: the bytes it did return must still be the original ones.
            assert got == ref[off:off + len(got)], f"offset {off}: bytes differ from the original"
            assert got or off >= len(ref), f"offset {off}: empty read inside the member"
    return eio


def _open_all(mnt):
    return {m: os.open(mnt / m, os.O_RDONLY) for m in MEMBERS}


def _close_all(fds):
    for fd in fds.values():
        os.close(fd)


def _read_heads(fds, ref):
    """Reads the first 64 KiB of the two big members (they are then cached)."""
    for m in ("stored.npy", "deflated.npy"):
        assert os.pread(fds[m], 65536, 0) == ref[m][:65536]


def _check_after_change(mnt, pid, fds, ref):
    # parts never read: the tails, and the never-touched members
    for m in ("stored.npy", "deflated.npy"):
        tail = len(ref[m]) - 65536
        assert _pread_or_errno(fds[m], 65536, tail) == errno.EIO, f"{m}: tail did not fail"
    assert _pread_or_errno(fds["late.npy"], 4096, 0) == errno.EIO
    assert _pread_or_errno(fds["small.npy"], 4096, 0) == errno.EIO
    for m in MEMBERS:
        _check_each_chunk(fds[m], ref[m])
    # the mount still answers and the daemon is alive
    assert sorted(os.listdir(mnt)) == sorted(MEMBERS)
    assert os.stat(mnt / "stored.npy").st_size == len(ref["stored.npy"])
    _daemon_state(pid)


def test_truncated_underneath(fault_archive, tmp_path):
    src, ref = fault_archive
    arc = tmp_path / "copy.npz"
    shutil.copyfile(src, arc)
    with bare_mount(arc, tmp_path / "mnt") as (mnt, pid):
        fds = _open_all(mnt)
        try:
            _read_heads(fds, ref)
            os.truncate(arc, os.path.getsize(arc) // 2)
            _check_after_change(mnt, pid, fds, ref)
        finally:
            _close_all(fds)
        _daemon_state(pid)
        assert S.fusermount_unmount(mnt) == 0
        assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT), "the daemon did not exit"


def _member_ranges(path):
    """{member name: (data offset, compressed size)}."""
    return {e.name.decode(): (e.data_off, e.csize) for e in S.zip_layout(path.read_bytes())}


def test_rewritten_in_place(fault_archive, tmp_path):
    """Same size, different bytes (headers intact, so a careless reader would serve the new
    member data as valid): uncached reads give EIO, never the new bytes."""
    src, ref = fault_archive
    arc = tmp_path / "copy.npz"
    shutil.copyfile(src, arc)
    ranges = _member_ranges(arc)
    size = os.path.getsize(arc)
    with bare_mount(arc, tmp_path / "mnt") as (mnt, pid):
        fds = _open_all(mnt)
        try:
            _read_heads(fds, ref)
            before = os.stat(arc).st_mtime_ns

            def rewrite():
                # every byte of every member's data + 1 (mod 256): a few passes never give
                # the original back
                with open(arc, "r+b") as f:
                    for off, n in ranges.values():
                        f.seek(off)
                        new = (np.frombuffer(f.read(n), np.uint8) + np.uint8(1)).tobytes()
                        f.seek(off)
                        f.write(new)
                return os.stat(arc).st_mtime_ns != before

            # timestamps have a granularity: rewrite again until the mtime has moved
            _wait(rewrite, 5, "the archive mtime to change")
            assert os.path.getsize(arc) == size
            assert arc.read_bytes() != src.read_bytes()
            _check_after_change(mnt, pid, fds, ref)
        finally:
            _close_all(fds)
        assert S.fusermount_unmount(mnt) == 0
        assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT), "the daemon did not exit"


def test_unlinked(fault_archive, tmp_path):
    """Unlinking the archive moves its ctime, which a same-size rewrite with the mtime put
    back also does: the daemon cannot tell them apart, so it counts as a change (reads fail;
    the mount and the daemon stay). A file renamed over the path: test_change.py."""
    src, ref = fault_archive
    arc = tmp_path / "copy.npz"
    shutil.copyfile(src, arc)
    with bare_mount(arc, tmp_path / "mnt") as (mnt, pid):
        fds = _open_all(mnt)
        try:
            _read_heads(fds, ref)
            os.unlink(arc)
            _check_after_change(mnt, pid, fds, ref)
        finally:
            _close_all(fds)
        assert S.fusermount_unmount(mnt) == 0
        assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT), "the daemon did not exit"


def test_kill_9(fault_archive, tmp_path):
    src, ref = fault_archive
    mp = tmp_path / "mnt"
    # without auto_unmount, which would take the dead mount away (test_unmount.py)
    with bare_mount(src, mp, "-o", "noauto_unmount") as (mnt, pid):
        fd = os.open(mnt / "stored.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, 0) == ref["stored.npy"][:4096]
            # the daemon found through /proc/*/cmdline is the one serving the mount
            assert S.find_daemons(mnt) == [pid]
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not S.pid_alive(pid), 10, "the daemon to die")
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, len(ref["stored.npy"]) - 4096)
            assert e.value.errno == errno.ENOTCONN
            with pytest.raises(OSError) as e:
                os.listdir(mnt)
            assert e.value.errno == errno.ENOTCONN
            with pytest.raises(OSError) as e:
                os.open(mnt / "late.npy", os.O_RDONLY)
            assert e.value.errno == errno.ENOTCONN
        finally:
            os.close(fd)
        assert S.is_mountpoint(mnt), "the dead mount should stay until unmounted"
        r = subprocess.run([S.FUSERMOUNT, "-u", str(mnt)], capture_output=True, timeout=30)
        assert r.returncode == 0, r
        assert not S.is_mountpoint(mnt)
        assert os.listdir(mnt) == []


class Reader(threading.Thread):
    """Reads a member in a loop (64 KiB preads, wrapping around) until stopped; checks bytes."""

    def __init__(self, path, ref):
        super().__init__(daemon=True)
        self.path, self.ref = path, ref
        self.stop = threading.Event()
        self.reads = 0
        self.error = None
        self.fd = os.open(path, os.O_RDONLY)

    def run(self):
        off = 0
        try:
            while not self.stop.is_set():
                b = os.pread(self.fd, 65536, off)
                assert b == self.ref[off:off + 65536], f"wrong bytes at {off}"
                self.reads += 1
                off = off + 65536 if off + 65536 < len(self.ref) else 0
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            os.close(self.fd)

    def wait_reads(self, n, timeout=20):
        target = self.reads + n
        _wait(lambda: self.reads >= target or self.error is not None or not self.is_alive(),
              timeout, f"{n} more reads")
        assert self.error is None, self.error
        assert self.reads >= target

    def finish(self):
        self.stop.set()
        self.join(30)
        assert not self.is_alive(), "the reader did not stop"
        assert self.error is None, self.error


def test_unmount_while_reading(fault_archive, tmp_path):
    src, ref = fault_archive
    with bare_mount(src, tmp_path / "mnt") as (mnt, pid):
        reader = Reader(mnt / "deflated.npy", ref["deflated.npy"])
        reader.start()
        try:
            reader.wait_reads(5)
            r = subprocess.run([S.FUSERMOUNT, "-u", str(mnt)], capture_output=True, timeout=30)
            if r.returncode != 0:
                # busy (EBUSY): the mount and the daemon are untouched and the reader goes on
                assert S.is_mountpoint(mnt), r
                _daemon_state(pid)
                reader.wait_reads(5)
        finally:
            reader.finish()
        if S.is_mountpoint(mnt):
            r = subprocess.run([S.FUSERMOUNT, "-u", str(mnt)], capture_output=True, timeout=30)
            assert r.returncode == 0, r
        assert not S.is_mountpoint(mnt)
        assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT), "the daemon did not exit"


def test_lazy_unmount_while_reading(fault_archive, tmp_path):
    src, ref = fault_archive
    base = tmp_path
    with bare_mount(src, tmp_path / "mnt") as (mnt, pid):
        reader = Reader(mnt / "deflated.npy", ref["deflated.npy"])
        reader.start()
        try:
            reader.wait_reads(5)
            r = subprocess.run([S.FUSERMOUNT, "-uz", str(mnt)], capture_output=True, timeout=30)
            assert r.returncode == 0, r
            assert not S.is_mountpoint(mnt), "a lazy unmount detaches at once"
            # the open file keeps the file system, and the daemon, alive; reads still work
            # (a whole pass over the member, so some of them reach the daemon)
            _daemon_state(pid)
            reader.wait_reads(len(ref["deflated.npy"]) // 65536 + 2)
            _daemon_state(pid)
        finally:
            reader.finish()
        # the last reference is gone: the daemon exits on its own
        _wait(lambda: not S.pid_alive(pid), S.DAEMON_EXIT_TIMEOUT,
              "the daemon to exit after the reader closed")
        assert not S.is_mountpoint(mnt)
        assert S.mounts_under(base) == []
