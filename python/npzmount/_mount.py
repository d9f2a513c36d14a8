"""mounted() and info(): thin wrappers around the npzmount and fusermount3 commands.

Not thread-safe in one respect only: Ctrl-C is deferred (in the main thread) while a mount is
being set up or torn down, so that an interrupt can neither leave a mount behind nor abort the
unmount; a second Ctrl-C in that window interrupts at once.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path

FUSERMOUNT = "fusermount3"
# npzmount returns once the mount is usable; this only bounds waiting for the kernel to show it.
LIVE_TIMEOUT = 10.0


class NpzmountError(RuntimeError):
    """npzmount or fusermount3 failed; the message carries what it said."""


def _binary():
    path = os.environ.get("NPZMOUNT") or shutil.which("npzmount")
    if not path:
        raise NpzmountError("npzmount not found: install it (make install) or set $NPZMOUNT")
    return path


def _run(argv, start_new_session=False):
    """(returncode, stdout, stderr) of argv. Output goes through files, not pipes: a daemon
    that kept an inherited pipe open would make reading it wait forever."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        rc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            start_new_session=start_new_session).returncode
        out.seek(0)
        err.seek(0)
        return (rc, out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace").strip())


def info(archive):
    """The members of archive as `npzmount --list --json` describes them: a list of dicts
    (key, path, size, compressed_size, method, crc32, offset, dtype, shape, fortran_order,
    npy_version, header_len, ...)."""
    rc, out, err = _run([_binary(), "--list", "--json", os.fspath(archive)])
    if rc != 0:
        raise NpzmountError(err or f"npzmount --list --json exited with status {rc}")
    return json.loads(out)


def _option_args(options):
    """-o arguments for keyword options: key=value, a bare key for True, nothing for
    None or False."""
    args = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        opt = key if value is True else f"{key}={value}"
        if "," in opt:
            raise ValueError(f"npzmount option {opt!r}: a comma would split it in two")
        args += ["-o", opt]
    return args


def _unescape(field):
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


def _is_mounted(path):
    """path is a mount point per /proc/self/mountinfo: asks the kernel, not the FUSE daemon,
    so a dead daemon's stale mount counts too."""
    target = os.fsencode(path)
    with open("/proc/self/mountinfo", "rb") as f:
        return any(_unescape(line.split(b" ")[4]) == target for line in f)


@contextlib.contextmanager
def _sigint_deferred():
    """Holds back a Ctrl-C (KeyboardInterrupt) until the block is done; a second one gets
    through at once. Only in the main thread with Python's own SIGINT handler installed:
    anything else is the application's business."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    pending = []

    def hold(signum, frame):
        if pending:
            raise KeyboardInterrupt
        pending.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pending:
        raise KeyboardInterrupt


def _mount(archive, path, options):
    parent_dev = os.stat(os.path.dirname(path)).st_dev
    # A session of its own: Ctrl-C in the terminal must not kill npzmount halfway (it is
    # held back here and acted on once the mount is complete).
    rc, _, err = _run([_binary(), *_option_args(options), archive, path],
                      start_new_session=True)
    if rc != 0:
        raise NpzmountError(err or f"npzmount exited with status {rc}")
    deadline = time.monotonic() + LIVE_TIMEOUT
    while not (_is_mounted(path) and os.stat(path).st_dev != parent_dev):
        if time.monotonic() > deadline:
            raise NpzmountError(f"npzmount succeeded but {path} is not a live mount")
        time.sleep(0.01)


def _fusermount(flag, path):
    return _run([FUSERMOUNT, flag, path])


def _detach(path):
    """Unmounts path if mounted (lazily, with a warning, when it is busy) and removes it."""
    if _is_mounted(path):
        rc, _, err = _fusermount("-u", path)
        if rc != 0 and _is_mounted(path):
            warnings.warn(f"npzmount: {path} is still in use ({err}): detaching it lazily; "
                          "open files and memory maps keep working, and the daemon exits "
                          "when the last one is closed", stacklevel=4)
            rc, _, err = _fusermount("-uz", path)
            if rc != 0 and _is_mounted(path):
                raise NpzmountError(f"cannot unmount {path}: {err}")
    os.rmdir(path)


@contextlib.contextmanager
def mounted(archive, **options):
    """Mounts archive on a new temporary directory and yields it as a Path; always unmounts
    and removes it afterwards, also when the body raises or is interrupted by Ctrl-C.

    Keyword options become npzmount's -o options: cache='64M' is `-o cache=64M`,
    noprefetch=True is `-o noprefetch`. If files or memory maps in the mount are still open at
    the end, it warns and detaches the mount lazily (fusermount3 -uz): they keep working, and
    the daemon exits when the last is closed.
    """
    archive = os.path.abspath(os.fspath(archive))
    path = None
    try:
        with _sigint_deferred():
            path = os.path.realpath(tempfile.mkdtemp(prefix="npzmount-"))
            _mount(archive, path, options)
        yield Path(path)
    finally:
        if path is not None:
            with _sigint_deferred():
                _detach(path)
