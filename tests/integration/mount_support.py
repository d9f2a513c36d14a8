"""Mounting for the npzmount integration tests: /proc/self/mountinfo, unmounting, and the
context managers that mount an archive (in the background or with -f) and always unmount it.
Part of npz_support (import that)."""

import contextlib
import os
import subprocess
import threading
import time
from pathlib import Path

from proc_support import (BIN, DAEMON_EXIT_TIMEOUT, FUSERMOUNT, MOUNT_TIMEOUT,
                          UNMOUNT_TIMEOUT, find_daemons, kill_pid, pid_alive, run_npzmount,
                          wait_exit)

# Mounts made by this test process that are still up: realpath -> daemon pid (or None).
ACTIVE = {}
_ACTIVE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# /proc/self/mountinfo


def _unescape_mountinfo(field):
    """mountinfo escapes space, tab, newline and backslash as \\ooo (octal)."""
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mountinfo():
    """Yields dicts with mount_point, options, fstype, source, super_options, dev."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            pre, _, post = line.rstrip("\n").partition(" - ")
            a = pre.split(" ")
            b = post.split(" ")
            yield {
                "dev": a[2],
                "mount_point": _unescape_mountinfo(a[4]),
                "options": a[5].split(","),
                "fstype": b[0] if b else "",
                "source": _unescape_mountinfo(b[1]) if len(b) > 1 else "",
                "super_options": b[2].split(",") if len(b) > 2 else [],
            }


def mount_entries(path):
    p = os.path.realpath(path)
    return [m for m in mountinfo() if m["mount_point"] == p]


def mount_count(path):
    return len(mount_entries(path))


def is_mountpoint(path):
    return mount_count(path) > 0


def mount_options(path):
    """Per-mount options of the topmost mount at path (e.g. ['ro', 'nosuid', ...])."""
    entries = mount_entries(path)
    assert entries, f"{path} is not a mount point"
    return entries[-1]["options"]


def mounts_under(root):
    root = os.path.realpath(root).rstrip("/") + "/"
    return [m["mount_point"] for m in mountinfo() if m["mount_point"].startswith(root)]


def fusermount_unmount(mountpoint, lazy=False):
    args = [FUSERMOUNT, "-uz" if lazy else "-u", str(mountpoint)]
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=UNMOUNT_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        return -1


def force_unmount(mountpoint):
    """Unmounts every stacked mount at mountpoint: -u first, -uz when that fails."""
    for _ in range(8):
        if not is_mountpoint(mountpoint):
            return
        if fusermount_unmount(mountpoint) != 0:
            fusermount_unmount(mountpoint, lazy=True)


class MountError(AssertionError):
    pass


@contextlib.contextmanager
def mounted(archive, mountpoint, options=(), env=None, cwd=None, timeout=MOUNT_TIMEOUT):
    """Mounts archive at mountpoint (created when missing), yields the mountpoint as a Path,
    and always unmounts afterwards, asserting that nothing is left mounted and that the
    daemon exits. archive and mountpoint are passed to the binary exactly as given (so they
    may be relative to cwd)."""
    mp_given = str(mountpoint)
    mp = Path(os.path.realpath(os.path.join(cwd or os.getcwd(), mp_given)))
    mp.mkdir(parents=True, exist_ok=True)
    assert not is_mountpoint(mp), f"{mp} is already a mount point before mounting"
    body_failed = False
    pids = []
    try:
        try:
            res = run_npzmount([*options, archive, mp_given], timeout=timeout, env=env, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise MountError(f"npzmount {list(options)} {archive} {mp_given} did not return "
                             f"within {timeout}s (it must return once the mount is usable)")
        if res.returncode != 0:
            raise MountError(f"npzmount failed (exit {res.returncode}): {res.stderr.strip()!r}")
        if not is_mountpoint(mp):
            raise MountError("npzmount exited 0 but the mount point is not in "
                             f"/proc/self/mountinfo: {res!r}")
        pids = find_daemons(mp, cwd=cwd)
        with _ACTIVE_LOCK:
            ACTIVE[str(mp)] = pids[0] if pids else None
        try:
            yield mp
        except BaseException:
            body_failed = True
            raise
        # The daemon must have survived whatever the test did to it.
        for pid in pids:
            assert pid_alive(pid), f"the npzmount daemon (pid {pid}) died during the test"
        assert is_mountpoint(mp), "the mount disappeared during the test"
    finally:
        with _ACTIVE_LOCK:
            ACTIVE.pop(str(mp), None)
        clean = True
        if is_mountpoint(mp):
            if fusermount_unmount(mp) != 0:
                clean = False
                force_unmount(mp)
        left = is_mountpoint(mp)
        exited = all(wait_exit(pid, DAEMON_EXIT_TIMEOUT if clean else 2) for pid in pids)
        for pid in pids:
            if pid_alive(pid):
                kill_pid(pid)
        if not body_failed:
            assert not left, f"{mp} is still mounted after fusermount3 -u / -uz"
            assert clean, f"fusermount3 -u {mp} failed (busy?); needed a lazy unmount"
            assert exited, f"npzmount daemon {pids} did not exit after the unmount"


# --------------------------------------------------------------------------------------------
# a daemon in the foreground (-f), as a child of the test


class Foreground:
    """A running `npzmount -f`: mp (the mount point), proc (its Popen) and stderr()."""

    def __init__(self, mp, proc, err_path):
        self.mp, self.proc, self._err_path = mp, proc, err_path

    def stderr(self):
        return Path(self._err_path).read_text(errors="replace")


@contextlib.contextmanager
def foreground(archive, mountpoint, options=(), timeout=MOUNT_TIMEOUT):
    """Starts `npzmount -f [options] archive mountpoint`, yields a Foreground once the mount
    is in /proc/self/mountinfo, and always ends it: unmounts what is still mounted and reaps
    the child (killing it if it does not exit). A test may stop it itself (a signal) and
    look at proc.returncode."""
    mp = Path(os.path.realpath(mountpoint))
    mp.mkdir(parents=True, exist_ok=True)
    assert not is_mountpoint(mp), f"{mp} is already a mount point before mounting"
    err_path = mp.parent / f".{mp.name}.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([BIN, "-f", *[str(o) for o in options], str(archive), str(mp)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    with _ACTIVE_LOCK:
        ACTIVE[str(mp)] = proc.pid
    try:
        deadline = time.monotonic() + timeout
        while not is_mountpoint(mp):
            if proc.poll() is not None:
                raise MountError(f"npzmount -f exited ({proc.returncode}) before mounting: "
                                 f"{err_path.read_text(errors='replace')!r}")
            if time.monotonic() > deadline:
                raise MountError(f"npzmount -f: no mount after {timeout}s")
            time.sleep(0.02)
        yield Foreground(mp, proc, err_path)
    finally:
        with _ACTIVE_LOCK:
            ACTIVE.pop(str(mp), None)
        force_unmount(mp)
        try:
            proc.wait(DAEMON_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


FUSE_ASYNC_READ = 1  # bit 0 of the INIT flags (linux/fuse.h)


def async_read_granted(archive, mp, options=()):
    """Whether the daemon's INIT reply asked for asynchronous reads, from its -d trace: the
    kernel's flags come first, then the reply's, indented."""
    with foreground(archive, mp, ["-d", *options]) as fg:
        os.listdir(fg.mp)  # INIT is answered before any other request
        replies = [line.split("=", 1)[1] for line in fg.stderr().splitlines()
                   if line.startswith("   flags=")]
    assert len(replies) == 1, fg.stderr()[:2000]
    return bool(int(replies[0], 16) & FUSE_ASYNC_READ)
