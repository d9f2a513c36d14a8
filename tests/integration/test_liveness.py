"""Issue 11, liveness: while a long first decode runs (one read near the end of a 3 GiB deflate
bomb, see adversarial.bomb_zip: tens of seconds of zlib), the mount stays usable and the decode
can be stopped:

(1) 16 readers wait on the decode: a stored member is read, another is stat'ed and the root
    is listed, each within 1 s;
(2) a reader blocked in the decode ends within 1 s of SIGINT (pread fails with EINTR, so
    Python raises KeyboardInterrupt) or SIGKILL;
(3) unmount: the reader is killed, then fusermount3 -u (the decode may go on with no reader
    left); or a lazy unmount while the reader waits, then the reader is killed: either way
    the daemon is gone within 1 s;
(4) SIGTERM to the daemon during the decode: it exits within 1 s (status 0 in the foreground),
    leaving no mount.

Readers are child processes (their blocked pread can be signalled and killed); a reader is
"waiting" once /proc/PID/syscall shows it inside pread. A check that does not happen within
the bound fails the test, after which the readers and the daemon are killed (decode_support),
so that a daemon that cannot be stopped costs seconds, not the whole decode.

Kernel detail that matters for (2): with FUSE's default asynchronous reads the page a reader
waits for is read by a background request; the reader sleeps on the page lock, where only a
fatal signal wakes it, and the kernel sends no FUSE_INTERRUPT for background requests. So a
SIGINT that a process catches (Python's KeyboardInterrupt) can only end the read when reads
are synchronous requests (FUSE_CAP_ASYNC_READ off).
"""

import errno
import os
import signal
import time

import pytest

import adversarial as A
import decode_support as D
import npz_support as S

MIB = A.MIB
BOUND = D.LIVENESS_BOUND


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return A.bomb_zip(tmp_path_factory.mktemp("bomb") / "bomb.npz")


def near_end(stream, k):
    """Offset of the k-th reader: 2 MiB apart, so that each one is a request of its own."""
    return stream.usize - (k + 1) * 2 * MIB - 4096 * k


def start_blocked_reader(readers, mnt, stream):
    [p] = readers.start(mnt / "bomb.npy", [near_end(stream, 0)], 4096)
    readers.wait_blocked()
    return p


# --------------------------------------------------------------------------------------------
# (1) the rest of the mount is served while 16 readers wait


def test_other_members_served_while_16_readers_wait(bomb, mount):
    path, stream, _ = bomb
    stored = sorted(A.STORED)
    # new in issue 11: -o threads=2 (fewer decode threads than waiting readers)
    options = ("-o", "cache=8M", *D.new_options("-o", "threads=2"))
    with D.mount_new(mount, path, *options) as mnt:
        pid = D.daemon_of(mnt)
        with D.Readers(pid) as readers:
            readers.start(mnt / "bomb.npy", [near_end(stream, k) for k in range(16)], 4096)
            readers.wait_blocked()
            # paths nobody has looked up yet, so that each check reaches the daemon
            checks = [D.Timed(lambda: S.read_file(mnt / "s0.npy"), "read of stored s0.npy"),
                      D.Timed(lambda: os.stat(mnt / "s1.npy").st_size, "stat of s1.npy"),
                      D.Timed(lambda: sorted(os.listdir(mnt)), "listdir of the root")]
            deadline = time.monotonic() + BOUND
            late = [c.name for c in checks if not c.wait(deadline)]
            assert not late, (f"not done within {BOUND}s while 16 readers wait on a decode: "
                              f"{late}")
            assert checks[0].result() == A.STORED["s0.npy"]
            assert checks[1].result() == len(A.STORED["s1.npy"])
            assert checks[2].result() == sorted(["bomb.npy", *stored])
            assert len(readers.alive()) == 16, \
                "premise: the decode must still run (make the bomb bigger)"


# --------------------------------------------------------------------------------------------
# (2) a reader interrupted during the decode


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_reader_interrupted_during_decode(bomb, mount, sig):
    path, stream, _ = bomb
    with mount(path, "-o", "cache=8M", *D.ISOLATE) as mnt:
        with D.Readers(D.daemon_of(mnt)) as readers:
            p = start_blocked_reader(readers, mnt, stream)
            os.kill(p.pid, sig)
            took = D.wait_gone(p, BOUND)
            assert took is not None, (f"the reader was still blocked {BOUND}s after "
                                      f"{sig.name}")
            if sig == signal.SIGINT:
                assert p.returncode == D.READER_INTERRUPTED, \
                    f"pread should fail with EINTR: rc {p.returncode}, {readers.output(p)!r}"
            else:
                assert p.returncode == -signal.SIGKILL
        # the mount goes on working after the interrupted decode
        assert S.read_file(mnt / "s2.npy") == A.STORED["s2.npy"]


# --------------------------------------------------------------------------------------------
# (3) unmount during the decode


def test_unmount_after_reader_killed(bomb, tmp_path):
    """What a user does when fusermount3 -u says busy: kill the reader, then unmount. The
    decode it started may still run with no reader left: it must stop."""
    path, stream, _ = bomb
    with D.own_mount(path, tmp_path / "mnt", ("-o", "cache=8M")) as d:
        with D.Readers(d.pid) as readers:
            p = start_blocked_reader(readers, d.mp, stream)
            p.kill()
            assert D.wait_gone(p, BOUND) is not None, f"reader still there {BOUND}s after SIGKILL"
        rc = S.fusermount_unmount(d.mp)
        assert rc == 0, f"fusermount3 -u failed (rc {rc}) with no reader left"
        took = D.wait_pid_gone(d.pid, BOUND)
        assert took is not None, f"the daemon still runs {BOUND}s after fusermount3 -u"
        assert not S.is_mountpoint(d.mp)


def test_lazy_unmount_then_reader_killed(bomb, tmp_path):
    """fusermount3 -uz while a reader waits detaches the mount at once; the daemon serves the
    reader until it ends, and must be gone within 1 s after that."""
    path, stream, _ = bomb
    with D.own_mount(path, tmp_path / "mnt", ("-o", "cache=8M")) as d:
        with D.Readers(d.pid) as readers:
            p = start_blocked_reader(readers, d.mp, stream)
            assert S.fusermount_unmount(d.mp, lazy=True) == 0
            assert not S.is_mountpoint(d.mp)
            p.kill()
            assert D.wait_gone(p, BOUND) is not None, f"reader still there {BOUND}s after SIGKILL"
        took = D.wait_pid_gone(d.pid, BOUND)
        assert took is not None, (f"the daemon still runs {BOUND}s after the last user of a "
                                  "lazily unmounted mount ended")


# --------------------------------------------------------------------------------------------
# (4) SIGTERM during the decode


@pytest.mark.parametrize("foreground", [True, False], ids=["foreground", "background"])
def test_sigterm_during_decode(bomb, tmp_path, foreground):
    path, stream, _ = bomb
    with D.own_mount(path, tmp_path / "mnt", ("-o", "cache=8M"), foreground=foreground) as d:
        with D.Readers(d.pid) as readers:
            p = start_blocked_reader(readers, d.mp, stream)
            os.kill(d.pid, signal.SIGTERM)
            took = D.wait_pid_gone(d.pid, BOUND)
            assert took is not None, f"the daemon still runs {BOUND}s after SIGTERM"
            assert D.poll_until(lambda: not S.is_mountpoint(d.mp), BOUND), \
                "the mount is still there after the daemon's exit"
            if d.proc is not None:
                assert d.proc.wait(5) == 0, f"exit status {d.proc.returncode} after SIGTERM"
            # the reader's request dies with the connection
            assert D.wait_gone(p, 5) is not None, "the reader is still blocked"
            out = readers.output(p)
            assert out.startswith("errno ") and int(out.split()[1]) in (
                errno.ENOTCONN, errno.EIO, errno.EINTR, errno.ECONNABORTED), out
