"""FUSE options against npzmount's own settings, and how the daemon stops.

Every option is either honoured (the mount comes up, serves the archive and shows the option)
or refused before anything is mounted, with one line and a non-zero status: never an exit 0
with nothing mounted, or with a mount that dies at the first access. A clean stop (SIGHUP,
SIGINT or SIGTERM) exits 0, in the foreground and as a daemon."""

import os
import signal
import subprocess
import sys
import zipfile

import pytest

import npz_support as S
from test_cli import _check_small, assert_clean_failure


def _super(opt):
    return lambda e: opt in e["super_options"]


# option -> what /proc/self/mountinfo shows for it
HONOURED = {
    "max_read=131072": _super("max_read=131072"),
    "max_read=65536": _super("max_read=65536"),
    "max_read=4096": _super("max_read=4096"),
    "ro": lambda e: True,
    "default_permissions": lambda e: True,
    "allow_other": _super("allow_other"),
    "auto_unmount": lambda e: True,
    "noatime": lambda e: "noatime" in e["options"],
    "sync": _super("sync"),
    "fsname=npz-source": lambda e: e["source"] == "npz-source",
    "subtype=npzkind": lambda e: e["fstype"] == "fuse.npzkind",
}


@pytest.mark.parametrize("opt", HONOURED)
def test_option_honoured(opt, small_npz, mount):
    with mount(small_npz, "-o", opt) as mnt:
        # the first access after the exit: INIT must have been accepted
        assert sorted(os.listdir(mnt)) == ["sub", "x.npy", "y.npy"]
        _check_small(mnt, small_npz)
        entry = S.mount_entries(mnt)[-1]
        assert "ro" in entry["options"]
        assert "default_permissions" in entry["super_options"]
        assert HONOURED[opt](entry), entry


@pytest.mark.parametrize("opt", [
    "rw",
    "ro,rw",
    "direct_io",
    "kernel_cache",
    "writeback_cache",
    "max_write=65536",
    "max_read=lots",
    "max_readahead=96",   # bytes: less than a page would turn readahead off
    "max_readahead=lots",
    "blkdev",
    "blksize=4096",
])
def test_option_refused(opt, small_npz, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        r = S.run_npzmount(["-o", opt, small_npz, mp])
        assert_clean_failure(r, mp)
    finally:
        S.force_unmount(mp)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's mounts have their own waiter")
def test_refused_archive_leaves_no_process(tmp_path):
    """Root's auto-unmount waiter is forked before the archive is opened; a refused archive
    lets it go and waits for it, so that nothing bearing the mount point is left behind when
    the command returns (a waiter still starting showed the command's own arguments). Without
    the wait it is caught in the act in most of the 20 tries, not in every one."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x05\x06" + b"\xff" * 18)  # an end record pointing nowhere
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        for _ in range(20):
            r = S.run_npzmount([bad, mp])
            assert_clean_failure(r, mp)
            assert not S.find_daemons(mp, waiters=True)
    finally:
        S.force_unmount(mp)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_foreground_stop_by_signal_exits_0(sig, small_npz, tmp_path):
    with S.foreground(small_npz, tmp_path / "mnt") as fg:
        assert os.listdir(fg.mp)  # serving
        fg.proc.send_signal(sig)
        status = fg.proc.wait(S.DAEMON_EXIT_TIMEOUT)
        assert status == 0, fg.stderr()
        assert not S.is_mountpoint(fg.mp), "the mount outlived the daemon"
        assert fg.stderr() == ""


# Runs npzmount as a daemon with this process as the subreaper, so that the daemon becomes its
# child once npzmount returns; stops it with the signal and prints its exit status.
_REAPER = r"""
import ctypes, os, signal, subprocess, sys
binary, archive, mnt, sig = sys.argv[1:]
PR_SET_CHILD_SUBREAPER = 36
assert ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
r = subprocess.run([binary, archive, mnt], stdin=subprocess.DEVNULL)
assert r.returncode == 0, r
me = str(os.getpid())
kids = []
for d in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    # not the fusermount3 helper that auto_unmount leaves waiting, reparented here too
    if stat[stat.rindex(")") + 2:].split()[1] == me and "(npzmount)" in stat:
        kids.append(int(d))
assert len(kids) == 1, kids
assert os.listdir(mnt)
os.kill(kids[0], int(sig))
_, status = os.waitpid(kids[0], 0)
print(os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status))
"""


def test_daemon_stop_by_sigterm_exits_0(small_npz, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        r = subprocess.run([sys.executable, "-c", _REAPER, S.BIN, str(small_npz), str(mp),
                            str(int(signal.SIGTERM))], capture_output=True, text=True,
                           timeout=S.MOUNT_TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "0", f"the daemon exited with {r.stdout.strip()}"
        assert not S.is_mountpoint(mp), "the mount outlived the daemon"
    finally:
        pids = S.find_daemons(mp)
        S.force_unmount(mp)
        for pid in pids:
            if not S.wait_exit(pid, 10):
                S.kill_pid(pid)


# --------------------------------------------------------------------------------------------
# the kernel's readahead window


def _read_ahead_kb(mnt):
    dev = os.stat(mnt).st_dev
    with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
        return int(f.read())


@pytest.mark.parametrize("kind,opts,kb", [
    ("compressed", [], 96),          # every byte of a fault's window is decoded: 96 KiB
    ("stored", [], 128),             # the kernel's own window: extra pages cost one pread
    ("sozip32k", [], 64),            # just the window's chunks are decoded: 64 KiB
    ("sozip256k", [], 96),           # chunks larger than a piece go through the cache
    ("many_sozip", [], 64),          # more members than are probed, all of them SOZip
    ("mixed", [], 96),               # most compressed bytes in a plain deflated member
    ("compressed", ["-o", "max_readahead=32768"], 32),
    ("stored", ["-o", "max_readahead=16k"], 16),
    ("sozip32k", ["-o", "max_readahead=128k"], 128),
    ("compressed", ["-o", "max_readahead=1M"], 128),  # the kernel's own is the most
])
def test_readahead_window(kind, opts, kb, tmp_path, mount):
    import numpy as np
    import sozip_writer as W
    path = tmp_path / f"{kind}.npz"
    arr = np.arange(200_000, dtype=np.int64)
    data = S.npy_bytes(arr)
    if kind.startswith("sozip"):
        chunk = int(kind[len("sozip"):-1]) << 10
        W.build(path, [W.Member("a.npy", data, chunk=chunk)])
    elif kind == "many_sozip":
        W.build(path, [W.Member("a.npy", data)] +
                [W.Member(f"m{i:02d}.npy", data) for i in range(40)])
    elif kind == "mixed":
        W.build(path, [W.Member("a.npy", data), W.Member("b.npy", data * 3, method="deflate")])
    else:
        (np.savez_compressed if kind == "compressed" else np.savez)(path, a=arr)
    with mount(path, *opts) as mnt:
        assert _read_ahead_kb(mnt) == kb
        assert np.array_equal(np.load(mnt / "a.npy", mmap_mode="r"), arr)


@pytest.mark.parametrize("kind,opts,want", [
    ("stored", [], True),        # reads wait for the local disk only
    ("compressed", [], False),   # a reader waiting on a decode must stay interruptible
    ("mixed", [], False),
    ("stored", ["-o", "sync_read"], False),
    ("compressed", ["-o", "async_read"], True),
    ("stored", ["-o", "sync_read,async_read"], True),  # the last one wins
    ("stored", ["-o", "async_read", "-o", "sync_read"], False),
    ("tree", [], False),         # archives of a tree are opened, and known, later
])
def test_async_reads_by_archive(kind, opts, want, tmp_path, mount):
    import numpy as np
    arr = np.arange(50_000, dtype=np.int64)
    if kind == "tree":
        src = tmp_path / "dir"
        src.mkdir()
        np.savez(src / "a.npz", a=arr)
    else:
        src = tmp_path / f"{kind}.npz"
        (np.savez_compressed if kind == "compressed" else np.savez)(src, a=arr)
        if kind == "mixed":
            with zipfile.ZipFile(src, "a", zipfile.ZIP_DEFLATED) as z:
                z.writestr("b.npy", arr.tobytes())
    assert S.async_read_granted(src, tmp_path / "mnt", opts) is want
    with mount(src, *opts) as mnt:
        member = mnt / "a.npz" / "a.npy" if kind == "tree" else mnt / "a.npy"
        assert np.array_equal(np.load(member, mmap_mode="r"), arr)
