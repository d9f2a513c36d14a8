"""The archive is rewritten while mounted and the mount follows it (the default): files opened
on the old version read EIO (or, for a moment, their own old bytes, never others), and new
lookups and opens find the new version, new keys included, within a liveness bound.
Scenarios: np.savez over the mounted path, `mv new.npz old.npz`, truncation (nothing to
follow until a whole archive is back), and a member appended in place. The reference for
every byte is Python's zipfile on the archive as it was written."""

import errno
import os
import shutil
import time
import zipfile

import numpy as np
import pytest

import npz_support as S

FOLLOW_TIMEOUT = 10.0  # liveness bound: from the change to the new version being served


def _members(path):
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


GONE = object()  # a name listed a moment ago that the mount no longer has


def _read(path, may_vanish=False):
    """The file's bytes, or None for EIO (any other error fails the test). With may_vanish,
    ENOENT gives GONE: the mount followed a change between the listing and the open."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        if may_vanish and e.errno == errno.ENOENT:
            return GONE
        assert e.errno == errno.EIO, f"{path}: {errno.errorcode.get(e.errno, e.errno)}"
        return None


def _wait_for(mnt, want, old=None):
    """Polls until the mount shows exactly want (name -> bytes). Meanwhile every file read
    must be EIO, its old bytes or its new bytes: never a mix or a third thing."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    old = old or {}
    while True:
        try:
            names = set(os.listdir(mnt))
        except OSError as e:
            assert e.errno == errno.EIO, e
            names = set()
        got = {}
        for n in names:
            b = _read(mnt / n, may_vanish=True)
            if b is GONE:
                got[n] = b  # never equal to want: poll again
                continue
            assert b is None or b == want.get(n) or b == old.get(n), f"{n}: foreign bytes"
            got[n] = b
        if got == want:
            return
        assert time.monotonic() < deadline, (
            f"not following after {FOLLOW_TIMEOUT}s: {sorted(names)} vs {sorted(want)}")
        time.sleep(0.02)


def _old_fd_never_new(fd, old_bytes):
    """An fd opened on the old version: its bytes are the old ones or EIO, and end as EIO."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    while True:
        try:
            got = os.pread(fd, len(old_bytes), 0)
        except OSError as e:
            assert e.errno == errno.EIO, e
            return
        assert got == old_bytes[:len(got)], "an fd of the old version served other bytes"
        assert time.monotonic() < deadline, "an fd of the old version still reads"
        time.sleep(0.02)


@pytest.fixture
def arc(tmp_path):
    path = tmp_path / "a.npz"
    np.savez(path, a=np.arange(50_000), b=np.linspace(0, 1, 999))
    return path


def _scenario(mount, arc, change, *opts):
    old = _members(arc)
    with mount(arc, *opts) as mnt:
        assert sorted(os.listdir(mnt)) == ["a.npy", "b.npy"]
        fd = os.open(mnt / "a.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 1 << 20, 0) == old["a.npy"]  # its pages are now cached
            want = change(arc)
            _old_fd_never_new(fd, old["a.npy"])
            _wait_for(mnt, want, old)
        finally:
            os.close(fd)
        # and it stays on the new version
        for n, b in want.items():
            assert (mnt / n).read_bytes() == b
        np.testing.assert_array_equal(np.load(mnt / "a.npy"), np.load(arc)["a"])


def test_np_savez_over_mounted_archive(mount, arc):
    def change(path):
        np.savez(path, a=np.arange(50_000) * 3, b=np.zeros(999), c=np.arange(7))
        return _members(path)
    _scenario(mount, arc, change)


def test_np_savez_compressed_over_mounted_archive(mount, arc, tmp_path):
    """Also: the stored archive was mounted with asynchronous reads (test_lifecycle), which
    its compressed successor keeps, and the log says what that costs."""
    def change(path):
        np.savez_compressed(path, a=np.arange(50_000) * 5, new=np.eye(4))
        return _members(path)
    log = tmp_path / "daemon.log"
    _scenario(mount, arc, change, "-o", f"logfile={log}")
    assert "compressed members are read asynchronously" in log.read_text()


def test_mv_new_over_old(mount, arc, tmp_path):
    def change(path):
        new = tmp_path / "new.npz"
        np.savez(new, a=np.arange(50_000) - 1, d=np.ones(3))
        os.rename(new, path)
        return _members(path)
    _scenario(mount, arc, change)


def test_truncate_then_rewrite(mount, arc, tmp_path):
    def change(path):
        staged = tmp_path / "staged.npz"
        np.savez(staged, a=np.arange(50_000) + 11, e=np.arange(4))
        os.truncate(path, 0)
        shutil.copyfile(staged, path)
        return _members(path)
    _scenario(mount, arc, change)


def test_truncated_archive_reads_eio_until_rewritten(mount, arc, tmp_path):
    old = _members(arc)
    with mount(arc) as mnt:
        assert (mnt / "a.npy").read_bytes() == old["a.npy"]
        fd = os.open(mnt / "b.npy", os.O_RDONLY)
        try:
            os.truncate(arc, 0)
            _old_fd_never_new(fd, old["b.npy"])
            # nothing to follow: what is listed reads EIO, never old bytes after the pages went
            deadline = time.monotonic() + FOLLOW_TIMEOUT
            while _read(mnt / "a.npy") is not None:
                assert time.monotonic() < deadline, "a truncated archive still serves"
                time.sleep(0.02)
        finally:
            os.close(fd)
        np.savez(arc, z=np.arange(12))
        _wait_for(mnt, _members(arc))


def test_member_appended_in_place(mount, arc):
    def change(path):
        with zipfile.ZipFile(path, "a") as zf:
            zf.writestr("added.npy", S.npy_bytes(np.arange(9)))
        return _members(path)
    _scenario(mount, arc, change)


def test_nofollow_keeps_eio(mount, arc):
    old = _members(arc)
    with mount(arc, "-o", "nofollow") as mnt:
        assert (mnt / "a.npy").read_bytes() == old["a.npy"]
        np.savez(arc, a=np.arange(3), c=np.arange(4))
        deadline = time.monotonic() + FOLLOW_TIMEOUT
        while _read(mnt / "a.npy") is not None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert sorted(os.listdir(mnt)) == ["a.npy", "b.npy"]  # the old listing, all EIO
        assert _read(mnt / "b.npy") is None
