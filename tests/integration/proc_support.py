"""Processes for the npzmount integration tests: the binary under test, running it, finding,
waiting for and killing its daemons, running a check in a forked child, and polling a
condition with a deadline. Part of npz_support (import that)."""

import contextlib
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("NPZMOUNT") or str(REPO / "npzmount")
FUSERMOUNT = "fusermount3"

MOUNT_TIMEOUT = float(os.environ.get("NPZMOUNT_MOUNT_TIMEOUT", "60"))
UNMOUNT_TIMEOUT = 30.0
DAEMON_EXIT_TIMEOUT = float(os.environ.get("NPZMOUNT_EXIT_TIMEOUT", "20"))


# --------------------------------------------------------------------------------------------
# processes


def _pid_state(pid):
    """The state letter of pid ('R', 'S', 'Z', ...) or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3].decode()


def pid_alive(pid):
    state = _pid_state(pid)
    return state is not None and state not in ("Z", "X")


def find_daemons(mountpoint, cwd=None, waiters=False):
    """Live npzmount processes (other than us) with mountpoint among their arguments (not
    the fusermount3 helper that auto_unmount leaves waiting, which names it too, nor root's
    own waiter, "npzmount-umount MOUNTPOINT", unless waiters says so)."""
    target = os.path.realpath(mountpoint)
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        name = os.path.basename(os.fsdecode(argv[0]))
        if name == FUSERMOUNT or (name == "npzmount-umount" and not waiters):
            continue
        for arg in argv[1:]:
            if not arg:
                continue
            s = os.fsdecode(arg)
            if not os.path.isabs(s):
                s = os.path.join(cwd or "/", s)
            if os.path.normpath(s) == target and pid_alive(int(d)):
                found.append(int(d))
                break
    return found


def proc_status(pid):
    """VmRSS and VmHWM (peak RSS) of pid, in bytes."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def daemon_fds(pid):
    """{fd number: target} of the daemon's open descriptors."""
    out = {}
    d = f"/proc/{pid}/fd"
    for n in os.listdir(d):
        try:
            out[int(n)] = os.readlink(f"{d}/{n}")
        except FileNotFoundError:
            pass
    return out


def wait_exit(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def kill_pid(pid):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# running the binary


class Result:
    def __init__(self, args, returncode, stdout, stderr):
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self):
        return (f"Result(args={self.args!r}, rc={self.returncode}, stdout={self.stdout!r}, "
                f"stderr={self.stderr!r})")


def run_npzmount(args, timeout=MOUNT_TIMEOUT, env=None, cwd=None):
    """Runs the binary with args. Output goes to temporary files, not pipes, so that a daemon
    that (wrongly) keeps the caller's stdout/stderr open cannot make this wait forever."""
    argv = [BIN, *[str(a) for a in args]]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=timeout, env=env, cwd=cwd)
        out.seek(0)
        err.seek(0)
        return Result(argv, proc.returncode, out.read().decode("utf-8", "replace"),
                      err.read().decode("utf-8", "replace"))


# --------------------------------------------------------------------------------------------
# memory mappings


def run_in_child(fn, *args):
    """Runs fn(*args) in a forked child and fails (AssertionError) when it fails.

    Touching a memory mapping whose FUSE read fails raises SIGBUS, which would kill pytest
    itself (leaving mounts behind); in a child it only fails the test that did it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            fn(*args)
        except BaseException:
            import traceback

            code = 1
            with contextlib.suppress(Exception):
                os.write(w, traceback.format_exc().encode("utf-8", "replace")[-60000:])
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        hint = (" (SIGBUS: a read through the memory mapping failed, i.e. the FUSE read "
                "returned an error)" if sig == signal.SIGBUS else "")
        raise AssertionError(f"the checking child died of signal {signal.Signals(sig).name}"
                             f"{hint}")
    if os.WEXITSTATUS(status) != 0:
        raise AssertionError("failed in the checking child:\n" + msg)


def poll(cond, timeout, what, interval=0.02):
    """Waits until cond() is true, checking every interval seconds; fails after timeout
    seconds with a message naming what was awaited. For conditions no event announces."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


