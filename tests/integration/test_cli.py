"""The command line: --help, --version, error reporting, and the mount options."""

import calendar
import os
import re
import shutil
import subprocess
import time
import zipfile

import numpy as np
import pytest

import npz_support as S


def _makefile_version():
    try:
        text = (S.REPO / "Makefile").read_text()
    except OSError:
        return None
    m = re.search(r"^VERSION\s*:?=\s*(\S+)", text, re.M)
    return m.group(1) if m else None


# --------------------------------------------------------------------------------------------
# --help / --version


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag):
    r = S.run_npzmount([flag], timeout=20)
    assert r.returncode == 0, r
    assert r.stdout.strip(), "help must go to stdout"
    text = r.stdout.lower()
    assert "usage" in text
    assert "npzmount" in text
    for word in ("span", "cache"):
        assert word in text, f"--help does not mention -o {word}=SIZE"


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version(flag):
    r = S.run_npzmount([flag], timeout=20)
    assert r.returncode == 0, r
    assert "npzmount" in r.stdout
    assert re.search(r"\d+\.\d+(\.\d+)?", r.stdout), r.stdout
    version = _makefile_version()
    if version:
        assert version in r.stdout


# --------------------------------------------------------------------------------------------
# errors: exactly one line on stderr starting with "npzmount: ", non-zero exit, nothing mounted


def assert_clean_failure(r, mountpoint=None, expect_mounts=0, status=None):
    assert r.returncode != 0, f"expected failure: {r!r}"
    if status is not None:
        assert r.returncode == status, f"expected exit status {status}: {r!r}"
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr, got {r.stderr!r}"
    assert lines[0].startswith("npzmount: "), lines[0]
    assert len(lines[0]) > len("npzmount: "), "the error line says nothing"
    if mountpoint is not None and os.path.exists(mountpoint):
        assert S.mount_count(mountpoint) == expect_mounts, "something got mounted"
        if expect_mounts == 0:
            assert not S.find_daemons(mountpoint), "a daemon was left running"


def _truncated_half(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])


def _truncated_tail(src, dst):
    data = src.read_bytes()
    dst.write_bytes(data[:-7])  # the end record loses its last bytes


def _cd_cut(src, dst):
    # keep the end record but drop the middle of the central directory
    data = src.read_bytes()
    e = S.zip_layout(data)
    dst.write_bytes(data[: e[1].cd_off] + data[e[2].cd_off :])


ARCHIVE_ERRORS = {
    "missing_archive": lambda src, dst: None,
    "empty_file": lambda src, dst: dst.write_bytes(b""),
    "not_a_zip_text": lambda src, dst: dst.write_text("just some text\n" * 100),
    "not_a_zip_random": lambda src, dst: dst.write_bytes(
        np.random.default_rng(1).integers(0, 256, 100000, dtype=np.uint8).tobytes()),
    "npy_not_npz": lambda src, dst: dst.write_bytes(S.npy_bytes(np.arange(10))),
    "truncated_half": _truncated_half,
    "truncated_tail": _truncated_tail,
    "central_directory_cut": _cd_cut,
}
# A directory is no error: it is mounted as a tree of archives (test_forest.py).


@pytest.mark.parametrize("case", list(ARCHIVE_ERRORS))
def test_bad_archive(case, small_npz, tmp_path):
    bad = tmp_path / "bad.npz"
    ARCHIVE_ERRORS[case](small_npz, bad)
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        r = S.run_npzmount([bad, mp], timeout=30)
        assert_clean_failure(r, mp, status=1)  # man page: unusable archive -> status 1
    finally:
        S.force_unmount(mp)


@pytest.mark.parametrize("case", ["missing", "regular_file", "symlink_to_file"])
def test_bad_mountpoint(case, small_npz, tmp_path):
    mp = tmp_path / "mnt"
    if case == "regular_file":
        mp.write_bytes(b"x")
    elif case == "symlink_to_file":
        (tmp_path / "f").write_bytes(b"x")
        mp.symlink_to(tmp_path / "f")
    try:
        r = S.run_npzmount([small_npz, mp], timeout=30)
        assert_clean_failure(r, mp)
        if case == "missing":
            assert not mp.exists(), "the mount point must not be created"
    finally:
        if os.path.exists(mp):
            S.force_unmount(mp)


@pytest.mark.parametrize("args", [
    ["--no-such-option"],
    ["-Z"],
    ["-o", "no_such_fuse_option"],
    ["-o", "span=notasize"],
    ["-o", "cache=12parsecs"],
], ids=["long", "short", "o_unknown", "o_bad_span", "o_bad_cache"])
def test_bad_option(args, small_npz, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        r = S.run_npzmount([*args, small_npz, mp], timeout=30)
        # man page: usage errors exit with status 2 (a FUSE option is judged by FUSE)
        assert_clean_failure(r, mp, status=None if args[0] == "-o" else 2)
    finally:
        S.force_unmount(mp)


# Without a mount point the archive's name is used (test_unmount.py). With two before it, the
# arguments name a tree of archives (test_forest.py), which must not lie in the mount point.
@pytest.mark.parametrize("which", ["no_arguments", "extra_argument"])
def test_usage_errors(which, small_npz, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    args = {"no_arguments": [], "extra_argument": [small_npz, mp, tmp_path]}[which]
    try:
        r = S.run_npzmount(args, timeout=30)
        # a usage message may follow, but the first line says what is wrong
        assert r.returncode == 2, r
        assert r.stderr.startswith("npzmount: "), r
        assert S.mount_count(mp) == 0
    finally:
        S.force_unmount(mp)


def test_mounting_twice_fails_cleanly(small_npz, mount):
    with mount(small_npz) as mnt:
        before = S.read_file(mnt / "x.npy")
        r = S.run_npzmount([small_npz, mnt], timeout=30)
        assert_clean_failure(r, mnt, expect_mounts=1)
        # the first mount is untouched
        assert S.mount_count(mnt) == 1
        assert S.read_file(mnt / "x.npy") == before
        assert sorted(os.listdir(mnt)) == ["sub", "x.npy", "y.npy"]


# --------------------------------------------------------------------------------------------
# mount options and modes of operation


def _check_small(mnt, small_npz):
    ref = S.Reference(small_npz)
    S.check_mount(mnt, ref)
    with np.load(small_npz) as z:
        want = z["sub/z"]
    S.run_in_child(S.check_mmap_equal, mnt / "sub" / "z.npy", want)


def test_returns_when_usable(small_npz, mount):
    # no waiting at all between the exit of npzmount and the first access
    with mount(small_npz) as mnt:
        assert S.is_mountpoint(mnt)
        assert sorted(os.listdir(mnt)) == ["sub", "x.npy", "y.npy"]
        _check_small(mnt, small_npz)


@pytest.mark.parametrize("opts", [
    ["-s"],
    ["-o", "ro"],
    ["-o", "ro,allow_other"],
    ["-s", "-o", "ro"],
    ["-o", "span=64k"],
    ["-o", "cache=1M"],
    ["-o", "span=1M,cache=64M"],
    ["-o", "ro", "-o", "span=128k"],
], ids=lambda o: " ".join(o))
def test_options_accepted(opts, small_npz, mount):
    if "ro,allow_other" in opts and os.geteuid() != 0:
        pytest.skip("allow_other needs root (or user_allow_other in /etc/fuse.conf)")
    with mount(small_npz, *opts) as mnt:
        _check_small(mnt, small_npz)
        assert "ro" in S.mount_options(mnt)
        if "ro,allow_other" in opts:
            assert "allow_other" in S.mount_entries(mnt)[-1]["super_options"]


def test_single_threaded_concurrent_readers(stored_npz, mount):
    from concurrent.futures import ThreadPoolExecutor

    ref = S.Reference(stored_npz)
    with mount(stored_npz, "-s") as mnt:
        def work(p):
            return S.read_file(mnt / p, 65536) == ref.data(p)

        with ThreadPoolExecutor(8) as ex:
            assert all(ex.map(work, ref.files() * 2))


def test_relative_paths(small_npz, mount, tmp_path):
    # the daemon may change directory: relative archive and mount point must still work
    work = tmp_path / "work"
    work.mkdir()
    os.symlink(small_npz, work / "rel.npz")
    (work / "m").mkdir()
    with mount("rel.npz", mountpoint="m", cwd=work) as mnt:
        assert mnt == work / "m"
        _check_small(mnt, small_npz)


def test_env_tz_drives_mtime(tmp_path, mount):
    # mtime is the DOS date/time read as local time: with TZ=UTC-5:30 it moves by 5.5 hours
    dt = (2021, 7, 4, 10, 20, 30)

    zi = zipfile.ZipInfo("t.npy", date_time=dt)
    arc = S.write_zip(tmp_path / "t.zip", [(zi, S.npy_bytes(np.arange(3)))])
    times = {}
    for tz in ("UTC0", "XST-5:30"):
        env = dict(os.environ, TZ=tz)
        with mount(arc, env=env) as mnt:
            times[tz] = int(os.stat(mnt / "t.npy").st_mtime)
    utc = calendar.timegm(dt + (0, 0, 0))
    assert times["UTC0"] == utc
    assert times["XST-5:30"] == utc - 5 * 3600 - 1800


def test_daemon_releases_callers_stdio(small_npz, tmp_path):
    # `out=$(npzmount a.npz mnt)` must not hang: the daemon must not keep our pipes open
    mp = tmp_path / "mnt"
    mp.mkdir()
    proc = subprocess.Popen([S.BIN, str(small_npz), str(mp)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail("npzmount's stdout/stderr stayed open after it returned "
                        "(the daemon holds the caller's pipes)")
        assert proc.returncode == 0, err
        assert S.is_mountpoint(mp)
        assert sorted(os.listdir(mp)) == ["sub", "x.npy", "y.npy"]
    finally:
        pids = S.find_daemons(mp)
        S.force_unmount(mp)
        for pid in pids:
            S.wait_exit(pid, 10)
        assert not S.is_mountpoint(mp)


@pytest.mark.parametrize("flag", ["-f", "-d"])
def test_foreground(flag, small_npz, tmp_path):
    # -f (and -d, which implies it): stays in the foreground until unmounted, then exits 0
    mp = tmp_path / "mnt"
    mp.mkdir()
    with open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen([S.BIN, flag, str(small_npz), str(mp)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not S.is_mountpoint(mp):
            assert proc.poll() is None, (tmp_path / "err").read_text()
            assert time.monotonic() < deadline, "no mount after 30 s with -f"
            time.sleep(0.05)
        _check_small(mp, small_npz)
        assert proc.poll() is None, "-f returned while mounted"
        assert S.fusermount_unmount(mp) == 0
        assert proc.wait(timeout=20) == 0
        if flag == "-d":
            assert (tmp_path / "err").read_text().strip(), "-d logged nothing"
    finally:
        if proc.poll() is None:
            S.force_unmount(mp)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        assert not S.is_mountpoint(mp)


def test_paths_with_spaces_and_odd_characters(small_npz, tmp_path, mount):
    d = tmp_path / "we ird\tdir"
    d.mkdir()
    arc = d / "my archive (1).npz"
    shutil.copy2(small_npz, arc)  # keeps the mtime, which implicit directories show
    with mount(arc, mountpoint=d / "mount point\\x") as mnt:
        assert S.is_mountpoint(mnt)
        _check_small(mnt, small_npz)


def test_sigterm_unmounts(small_npz, tmp_path):
    # the daemon ends cleanly on SIGTERM and takes its mount with it
    import signal

    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        r = S.run_npzmount([small_npz, mp], timeout=30)
        assert r.returncode == 0, r
        pids = S.find_daemons(mp)
        assert len(pids) == 1, pids
        assert os.listdir(mp)
        os.kill(pids[0], signal.SIGTERM)
        assert S.wait_exit(pids[0], 20), "the daemon ignored SIGTERM"
        assert not S.is_mountpoint(mp), "SIGTERM left a dead mount behind"
    finally:
        S.force_unmount(mp)
