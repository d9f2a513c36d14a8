"""Lifecycle conventions: auto_unmount by default (a killed daemon leaves no stale mount),
-o noauto_unmount and the hint for a stale mount, a mount point named after the archive when
none is given (created, and removed at unmount), and the absolute archive path in df."""

import errno
import os
import signal
import time
import zipfile

import numpy as np
import pytest

import npz_support as S


def _wait(cond, timeout=S.UNMOUNT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def _processes_by_argv(want):
    """Live processes whose command line is exactly want (a list of bytes); a command line
    rewritten in place ends in NULs, which are not arguments."""
    found = []
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if argv == want and S.pid_alive(int(d)):
            found.append(int(d))
    return found


def _daemons_by_argv(args):
    """Live npzmount processes started as `npzmount *args` (their mount point is not in it)."""
    return _processes_by_argv([os.fsencode(S.BIN), *[os.fsencode(str(a)) for a in args]])


def _daemon(mp, args=None):
    pids = S.find_daemons(mp) if args is None else _daemons_by_argv(args)
    assert len(pids) == 1, pids
    return pids[0]


def _mount_and_kill(archive, mp, *options):
    """Mounts, then kills the daemon with SIGKILL; returns its pid."""
    r = S.run_npzmount([*options, archive, mp])
    assert r.returncode == 0, r
    assert S.is_mountpoint(mp)
    pid = _daemon(mp)
    os.kill(pid, signal.SIGKILL)
    assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT)
    return pid


# The second name takes the escapes of /proc/self/mountinfo (space, tab, backslash), which
# the mount and the waiter's unmount must pass through unharmed.
@pytest.mark.parametrize("name", ["mnt", "m nt\t\\x"], ids=["plain", "escaped"])
def test_killed_daemon_is_unmounted(small_npz, tmp_path, name):
    mp = tmp_path / name
    mp.mkdir()
    try:
        _mount_and_kill(small_npz, mp)
        assert _wait(lambda: not S.is_mountpoint(mp)), "auto_unmount left the mount behind"
        assert os.listdir(mp) == []
    finally:
        S.force_unmount(mp)


def _waiters(mp):
    """Live processes whose command line is "npzmount-umount MP": root's auto_unmount waiter."""
    return _processes_by_argv([b"npzmount-umount", os.fsencode(os.path.realpath(mp))])


@pytest.mark.skipif(os.geteuid() != 0, reason="root's own waiter; others get fusermount3's")
def test_waiter_is_no_daemon_and_ends_with_it(small_npz, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        r = S.run_npzmount([small_npz, mp])
        assert r.returncode == 0, r
        pid = _daemon(mp)  # exactly one daemon names the mount point, right after the mount
        (waiter,) = _waiters(mp)
        # stdio on /dev/null and its pipe: not /dev/fuse, which would keep the mount alive
        fds = S.daemon_fds(waiter)
        assert sorted(fds) == [0, 1, 2, 3], fds
        assert [fds[i] for i in (0, 1, 2)] == ["/dev/null"] * 3 and fds[3].startswith("pipe:")
        S.fusermount_unmount(mp)
        assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT)
        assert S.wait_exit(waiter, S.DAEMON_EXIT_TIMEOUT)
    finally:
        S.force_unmount(mp)


@pytest.mark.skipif(os.geteuid() != 0, reason="root's own waiter; others get fusermount3's")
def test_waiter_spares_a_mount_made_since(small_npz, tmp_path):
    """The daemon ends while its waiter is stopped, and another mount takes the mount point:
    the waiter, woken, finds a live connection there (the device number may well be the same)
    and leaves it."""
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        r = S.run_npzmount([small_npz, mp])
        assert r.returncode == 0, r
        pid = _daemon(mp)
        (waiter,) = _waiters(mp)
        os.kill(waiter, signal.SIGSTOP)
        try:
            S.fusermount_unmount(mp)
            assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT)
            r = S.run_npzmount(["-o", "noauto_unmount", small_npz, mp])
            assert r.returncode == 0, r
        finally:
            os.kill(waiter, signal.SIGCONT)
        assert S.wait_exit(waiter, S.DAEMON_EXIT_TIMEOUT)
        assert S.is_mountpoint(mp)
        with zipfile.ZipFile(small_npz) as z:
            assert sorted(os.listdir(mp)) == sorted({n.split("/")[0] for n in z.namelist()})
    finally:
        S.force_unmount(mp)


@pytest.mark.skipif(os.geteuid() != 0, reason="root's own waiter; others get fusermount3's")
def test_waiter_of_a_failed_mount_goes(tmp_path):
    """The waiter starts before the archive is read; a mount that fails lets it go."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip archive" * 10)
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = S.run_npzmount([bad, mp])
    assert r.returncode == 1, r
    assert _wait(lambda: not _waiters(mp)), "the waiter outlived a failed mount"
    assert not S.is_mountpoint(mp)


def test_noauto_unmount_leaves_stale_mount_with_hint(small_npz, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        _mount_and_kill(small_npz, mp, "-o", "noauto_unmount")
        assert S.is_mountpoint(mp)
        with pytest.raises(OSError) as e:
            os.listdir(mp)
        assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        r = S.run_npzmount([small_npz, mp])
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and f"fusermount3 -u {mp}" in lines[0], r
    finally:
        S.force_unmount(mp)
    assert not S.is_mountpoint(mp)


def _cleanup_auto(mp, args):
    if S.is_mountpoint(mp):
        S.force_unmount(mp)
    for pid in _daemons_by_argv(args):
        S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT) or S.kill_pid(pid)


def test_mountpoint_named_after_archive(small_npz, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "data.npz").write_bytes(small_npz.read_bytes())
    mp = work / "data"
    try:
        r = S.run_npzmount(["data.npz"], cwd=work)
        assert r.returncode == 0, r
        assert S.is_mountpoint(mp)
        pid = _daemon(mp, ["data.npz"])
        with zipfile.ZipFile(small_npz) as zf:
            assert (mp / "x.npy").read_bytes() == zf.read("x.npy")
        np.testing.assert_array_equal(np.load(mp / "x.npy"), np.arange(1000, dtype=np.int64))
        assert S.mount_entries(mp)[-1]["source"] == str(work / "data.npz")  # absolute
        assert S.fusermount_unmount(mp) == 0
        assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT)
        assert not mp.exists(), "the mount point npzmount created was not removed"
    finally:
        _cleanup_auto(mp, ["data.npz"])


def test_existing_directory_named_after_archive_is_kept(small_npz, tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    (work / "set.v2.npz").write_bytes(small_npz.read_bytes())
    mp = work / "set.v2"
    mp.mkdir()
    try:
        r = S.run_npzmount(["set.v2.npz"], cwd=work)
        assert r.returncode == 0, r
        pid = _daemon(mp, ["set.v2.npz"])
        assert sorted(os.listdir(mp)) == ["sub", "x.npy", "y.npy"]
        assert S.fusermount_unmount(mp) == 0
        assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT)
        assert mp.is_dir(), "a directory npzmount did not create was removed"
    finally:
        _cleanup_auto(mp, ["set.v2.npz"])


def test_failed_mount_removes_created_mountpoint(tmp_path):
    (tmp_path / "bad.npz").write_bytes(b"not a zip file at all")
    r = S.run_npzmount(["bad.npz"], cwd=tmp_path)
    assert r.returncode == 1, r
    assert not (tmp_path / "bad").exists()


def test_fsname_is_absolute(small_npz, tmp_path, mount):
    with mount(small_npz.name, cwd=small_npz.parent, mountpoint=tmp_path / "m") as mnt:
        assert S.mount_entries(mnt)[-1]["source"] == os.path.realpath(small_npz)
