"""Every case of the hostile corpus (hostile.py) against the real binary.

refuse   exit status 1, exactly one stderr line "npzmount: ...", nothing mounted, no daemon.
eio      mounted; the listing stays inside the mount; bad members are listed and read EIO (and
         again EIO); good members read exactly their reference bytes; the daemon still serves.
renamed  mounted; exactly the expected paths (naming rule), each file with its bytes.

The last test prints how many cases each class has (and how they fared).
"""

import errno
import hashlib
import os
import stat
import subprocess
import time

import pytest

import hostile as H
import npz_support as S

RESULTS = {}  # case name -> (class, "pass" | "fail")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


# --------------------------------------------------------------------------------------------
# fd-relative helpers: some cases have paths longer than PATH_MAX


def _open_rel(root, rel, flags=os.O_RDONLY):
    """Opens root/rel one component at a time (no PATH_MAX limit); returns an fd."""
    parts = rel.split("/")
    dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for comp in parts[:-1]:
            nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            os.close(dfd)
            dfd = nfd
        return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=dfd)
    finally:
        os.close(dfd)


def read_rel(root, rel, chunk=1 << 20, digest=False):
    """The bytes of root/rel (or (size, sha256) with digest=True)."""
    fd = _open_rel(root, rel)
    try:
        h = hashlib.sha256() if digest else None
        out = bytearray()
        size = 0
        while True:
            b = os.read(fd, chunk)
            if not b:
                break
            size += len(b)
            if h:
                h.update(b)
            else:
                out += b
        return (size, h.hexdigest()) if digest else bytes(out)
    finally:
        os.close(fd)


def read_errno_rel(root, rel):
    try:
        read_rel(root, rel, digest=True)
    except OSError as e:
        return e.errno
    return None


def stat_rel(root, rel):
    fd = _open_rel(root, rel, os.O_RDONLY | os.O_PATH)
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def walk(root):
    """{relative path: 'dir' | 'file' | 'other'} for everything under root, without following
    anything and without ever building a path the kernel has to resolve. Asserts that every
    entry lives on the mount's own file system (nothing reached outside it)."""
    root = os.path.realpath(root)
    dev = os.stat(root).st_dev
    out = {}
    for dirpath, dirnames, filenames, dfd in os.fwalk(root):
        rel = dirpath[len(root) + 1:]
        for n in dirnames + filenames:
            assert n not in (".", "..") and "/" not in n and n, repr(n)
            st = os.stat(n, dir_fd=dfd, follow_symlinks=False)
            assert st.st_dev == dev, f"{rel}/{n} is not on the mount"
            kind = ("dir" if stat.S_ISDIR(st.st_mode) else
                    "file" if stat.S_ISREG(st.st_mode) else "other")
            out[f"{rel}/{n}" if rel else n] = kind
    return out


def _short(p):
    return p if len(p) < 120 else p[:60] + f"...<{len(p)} chars>..." + p[-40:]


# --------------------------------------------------------------------------------------------
# the checks


def check_refused(archive, mp):
    mp.mkdir(exist_ok=True)
    try:
        r = S.run_npzmount([archive, mp], timeout=30)
        assert r.returncode == 1, f"expected exit status 1: {r!r}"
        lines = r.stderr.splitlines()
        assert len(lines) == 1, f"expected exactly one line on stderr: {r.stderr!r}"
        assert lines[0].startswith("npzmount: ") and len(lines[0]) > len("npzmount: "), lines
        assert not S.is_mountpoint(mp), "something got mounted"
        assert not S.find_daemons(mp), "a daemon was left running"
        return lines[0]
    finally:
        if S.is_mountpoint(mp):
            S.force_unmount(mp)
        for pid in S.find_daemons(mp):
            S.kill_pid(pid)


def _matches(got, expected):
    if isinstance(expected, H.Digest):
        return got == (expected.size, expected.sha256)
    return got == expected


def check_mounted(archive, details, mount, parent):
    before = sorted(os.listdir(parent))
    with mount(archive) as mnt:
        pids = S.find_daemons(mnt)
        assert pids, "no daemon found for the mount"
        listing = walk(mnt)
        assert "other" not in listing.values(), {p: k for p, k in listing.items()
                                                 if k == "other"}
        if details.get("paths") is not None:
            want = details["paths"]
            missing = sorted(_short(p) for p in set(want) - set(listing))
            extra = sorted(_short(p) for p in set(listing) - set(want))
            assert not missing and not extra, f"missing {missing}, unexpected {extra}"
            for p, kind in want.items():
                assert listing[p] == kind, (_short(p), listing[p], kind)
        for p, size in details.get("sizes", {}).items():
            assert stat_rel(mnt, p).st_size == size, p

        bad = details.get("bad", [])
        for p in bad:
            st = stat_rel(mnt, p)
            assert stat.S_ISREG(st.st_mode), f"{p}: a bad member must still be listed as a file"
            t0 = time.monotonic()
            e = read_errno_rel(mnt, p)
            assert e == errno.EIO, f"{p}: expected EIO, got {errno.errorcode.get(e, e)}"
            assert read_errno_rel(mnt, p) == errno.EIO, f"{p}: second read did not fail"
            assert time.monotonic() - t0 < 30, f"{p}: failing took too long"

        good = details.get("good", {})
        for p, expected in good.items():
            got = read_rel(mnt, p, digest=isinstance(expected, H.Digest))
            assert _matches(got, expected), f"{_short(p)}: wrong content"

        # still alive and serving after the failures
        for pid in pids:
            assert S.pid_alive(pid), "the daemon died"
        assert sorted(os.listdir(mnt)) == sorted(p for p in listing if "/" not in p)
        small = [p for p, v in good.items() if isinstance(v, bytes)]
        if small:
            assert read_rel(mnt, small[0]) == good[small[0]]
        if bad:
            assert read_errno_rel(mnt, bad[0]) == errno.EIO
    # nothing appeared next to the mount point
    assert sorted(os.listdir(parent)) == before


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(H.CASES))
def test_case(name, corpus_dir, tmp_path, mount):
    cls = H.CLASS_OF[name]
    RESULTS[name] = (cls, "fail")
    path, cls2, details = H.build(name, corpus_dir)
    assert cls2 == cls
    if cls == "refuse":
        check_refused(path, tmp_path / "mnt")
    else:
        # the mount point lives in its own directory, to see that nothing appears beside it
        parent = tmp_path / "box"
        (parent / "mnt").mkdir(parents=True)
        details = dict(details)
        _mount = lambda a: mount(a, mountpoint=parent / "mnt")  # noqa: E731
        check_mounted(path, details, _mount, parent)
    RESULTS[name] = (cls, "pass")


def test_fifo_archive_does_not_hang(tmp_path):
    """A FIFO is not a regular file: it must be refused promptly, not block in open()."""
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = subprocess.Popen([S.BIN, str(fifo), str(mp)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    hung = False
    try:
        deadline = time.monotonic() + 3
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if proc.poll() is None:
            hung = True
            # unblock it: a writer that goes away at once
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if S.is_mountpoint(mp):
            S.force_unmount(mp)
    assert not hung, "npzmount blocked in open() on a FIFO given as the archive"
    assert proc.returncode == 1, (proc.returncode, err)
    lines = err.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npzmount: "), err


def test_zz_corpus_summary(capsys):
    """Prints the number of cases per class (and the outcome of those that ran)."""
    counts = H.summary()
    assert all(counts[c] > 0 for c in H.CLASSES), counts
    ran = {c: [0, 0] for c in H.CLASSES}
    for name, (cls, outcome) in RESULTS.items():
        ran[cls][0 if outcome == "pass" else 1] += 1
    lines = [f"HOSTILE_CASES {c}: {counts[c]} (ran {ran[c][0] + ran[c][1]}, passed {ran[c][0]}, "
             f"failed {ran[c][1]})" for c in H.CLASSES]
    lines.append(f"HOSTILE_CASES total: {sum(counts.values())}")
    failed = sorted(n for n, (c, o) in RESULTS.items() if o != "pass")
    if failed:
        lines.append("HOSTILE_FAILED " + " ".join(failed))
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    metrics = os.environ.get("NPZ_METRICS")
    if metrics:
        with open(metrics, "a") as f:
            f.write("\n".join(lines) + "\n")
