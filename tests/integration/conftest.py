"""Fixtures for the npzmount integration tests.

The binary is $NPZMOUNT (default: <repo>/npzmount). Every mount goes through
npz_support.mounted(), which always unmounts (fusermount3 -u, then -uz) and checks that nothing
is left mounted and that the daemon exits. A watchdog kills our own daemons if one test runs
longer than $NPZMOUNT_TEST_TIMEOUT seconds (default 180), so that a hung FUSE request turns into
a failure (ENOTCONN) instead of a hung suite; a session finalizer lazily unmounts anything
still mounted under this session's pytest temporary directory.
"""

import faulthandler
import itertools
import os
import shutil
import signal
import sys
import threading

import numpy as np
import pytest

import npz_support as S

TEST_TIMEOUT = float(os.environ.get("NPZMOUNT_TEST_TIMEOUT", "180"))

# A suite started in the background (`make check &` in a script, nohup) has SIGINT or SIGHUP
# ignored, and so would every daemon it starts, since an ignored signal stays ignored across
# exec and libfuse leaves it so: the tests that stop a daemon with one would wait in vain.
# What Python installs when nothing is ignored (a handler here is the default after exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


# --------------------------------------------------------------------------------------------
# environment, watchdog, session cleanup


def _fuse_unusable_reason():
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is missing"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if shutil.which(S.FUSERMOUNT) is None:
        return f"{S.FUSERMOUNT} is not installed"
    return None


@pytest.fixture(scope="session", autouse=True)
def _session_environment(tmp_path_factory):
    reason = _fuse_unusable_reason()
    if reason:
        pytest.skip(f"FUSE is not usable here: {reason}")
    if not (os.path.isfile(S.BIN) and os.access(S.BIN, os.X_OK)):
        pytest.fail(f"npzmount binary not found or not executable: {S.BIN} "
                    "(build it with make, or point $NPZMOUNT at it)", pytrace=False)
    base = tmp_path_factory.getbasetemp()
    # Saved indexes of every daemon this session starts go here, not into the user's cache.
    os.environ["XDG_CACHE_HOME"] = str(base / "xdg-cache")
    # Daemons without a system log write here, not into /var/log or the user's state.
    os.environ["XDG_STATE_HOME"] = str(base / "xdg-state")
    yield
    # Anything a crashed test left behind: detach it lazily and end our own daemons.
    for mp in reversed(S.mounts_under(base)):
        S.fusermount_unmount(mp, lazy=True)
    for pid in list(S.ACTIVE.values()):
        if pid:
            S.kill_pid(pid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    def on_timeout():
        sys.stderr.write(f"\n[watchdog] {item.nodeid} ran over {TEST_TIMEOUT:.0f}s: "
                         "killing the npzmount daemons this session started\n")
        for pid in list(S.ACTIVE.values()):
            if pid:
                S.kill_pid(pid)

    timer = threading.Timer(TEST_TIMEOUT, on_timeout)
    timer.daemon = True
    timer.start()
    # Last resort if even that does not unblock the test.
    faulthandler.dump_traceback_later(TEST_TIMEOUT + 60, exit=True)
    try:
        yield
    finally:
        timer.cancel()
        faulthandler.cancel_dump_traceback_later()


# --------------------------------------------------------------------------------------------
# mounting


@pytest.fixture
def mount(tmp_path):
    """A factory of mount context managers with a fresh mount point under tmp_path:

        with mount(archive, "-o", "span=64k") as mnt:
            ...

    mnt is the (absolute) mount point; it is always unmounted on exit."""
    counter = itertools.count()

    def factory(archive, *options, mountpoint=None, env=None, cwd=None):
        mp = mountpoint if mountpoint is not None else tmp_path / f"mnt{next(counter)}"
        return S.mounted(archive, mp, options, env=env, cwd=cwd)

    return factory


# --------------------------------------------------------------------------------------------
# archives shared by several modules (generated once per session)


@pytest.fixture(scope="session")
def archive_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("archives")


@pytest.fixture(scope="session")
def stored_arrays():
    return S.make_stored_arrays()


@pytest.fixture(scope="session")
def stored_npz(archive_dir, stored_arrays):
    """np.savez of stored_arrays, plus one positional array (arr_0)."""
    path = archive_dir / "stored.npz"
    np.savez(path, np.arange(100, dtype=np.int16), **stored_arrays)
    return path


@pytest.fixture(scope="session")
def small_npz(archive_dir):
    path = archive_dir / "small.npz"
    np.savez(path, x=np.arange(1000, dtype=np.int64), y=np.linspace(0, 1, 77),
             **{"sub/z": np.eye(3)})
    return path


@pytest.fixture(scope="session")
def big_npz(archive_dir):
    """A 64 MiB (+ header) member and a small one."""
    path = archive_dir / "big.npz"
    rng = np.random.default_rng(64)
    big = rng.standard_normal(8 << 20)  # 8 Mi float64 = 64 MiB
    np.savez(path, big=big, after=np.arange(17))
    return path
