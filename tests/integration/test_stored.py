"""Stored members (np.savez): listing, attributes, bytes, np.load(mmap_mode='r'), preads,
concurrency, a 64 MiB member, and the read-only behaviour of the mount."""

import errno
import os
import random
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor

from pathlib import Path

import numpy as np
import pytest

import npz_support as S

KEYS = list(S.make_stored_arrays())
MMAP_KEYS = [k for k in KEYS if k != "objects"]


@pytest.fixture(scope="module")
def mnt(stored_npz, tmp_path_factory):
    with S.mounted(stored_npz, tmp_path_factory.mktemp("stored") / "mnt") as mp:
        yield mp


@pytest.fixture(scope="module")
def ref(stored_npz):
    return S.Reference(stored_npz)


def test_archive_is_really_stored(ref):
    # The premise of this module: np.savez writes stored members.
    assert {i.compress_type for i in ref.infos} == {0}


# --------------------------------------------------------------------------------------------
# listing and attributes


def test_listing_matches_zipfile(mnt, ref):
    assert S.walk_mount(mnt) == ref.kinds()
    # and the mapping is the obvious one for numpy's names
    assert {p for p in ref.files()} == {i.filename for i in ref.infos}


def test_sizes_equal_zipinfo_file_size(mnt, ref):
    for p in ref.files():
        st = os.stat(mnt / p)
        assert stat.S_ISREG(st.st_mode), p
        assert st.st_size == ref.info(p).file_size, p
    for p in ref.dirs():
        assert stat.S_ISDIR(os.stat(mnt / p).st_mode), p
    assert stat.S_ISDIR(os.stat(mnt).st_mode)


def test_modes(mnt, ref):
    # numpy (through zipfile) records a bare 0600 with no file type: not a Unix mode, so 0444.
    for p in ref.files():
        info = ref.info(p)
        assert S.recorded_mode(info) == 0o600
        assert S.mode_bits(os.stat(mnt / p)) == 0o444, p
    for p in ref.dirs():  # no directory entries in an npz: default 0555
        assert S.mode_bits(os.stat(mnt / p)) == 0o555, p
    assert S.mode_bits(os.stat(mnt)) == 0o555


def test_mtimes_from_zipinfo_date_time(mnt, ref):
    # numpy writes the 1980 placeholder: every member takes the archive's mtime
    for p in ref.files():
        assert int(os.stat(mnt / p).st_mtime) == S.expected_mtime(ref.info(p), ref.archive), p


def test_stat_is_stable_and_inodes_unique(mnt, ref):
    paths = [""] + sorted(ref.tree)

    def snapshot():
        out = {}
        for p in paths:
            st = os.lstat(mnt / p) if p else os.lstat(mnt)
            out[p] = (st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_nlink,
                      st.st_uid, st.st_gid)
        return out

    first = snapshot()
    assert snapshot() == first
    # reading every file must not change what ls -l shows
    for p in ref.files():
        S.read_file(mnt / p)
    assert snapshot() == first
    # os.stat (following links) agrees with lstat: nothing is a symlink
    for p in paths:
        assert os.stat(mnt / p).st_ino == first[p][0]
    inos = [v[0] for v in first.values()]
    assert len(set(inos)) == len(inos), "two paths share an inode number"


def test_readdir_root_and_subdirs(mnt, ref):
    for d in [""] + ref.dirs():
        assert set(os.listdir(mnt / d)) == S.expected_children(ref.tree, d), d
    assert set(os.listdir(mnt / "a")) == {"b.npy", "c"}
    assert os.listdir(mnt / "a" / "c") == ["d.npy"]
    assert os.listdir(mnt / "deep" / "er" / "still") == ["x.npy"]


def test_lookup_errors(mnt):
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "no-such-member.npy")
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "a" / "nope")
    with pytest.raises(NotADirectoryError):
        os.stat(mnt / "c_order.npy" / "x")
    with pytest.raises(IsADirectoryError):
        open(mnt / "a", "rb").read()


# --------------------------------------------------------------------------------------------
# contents


def test_every_member_equals_zipfile_read(mnt, ref):
    for p in ref.files():
        assert S.read_file(mnt / p) == ref.data(p), p


def test_small_and_odd_read_sizes(mnt, ref):
    want = ref.data("medium.npy")
    for bufsize in (1, 4095, 4097, 65537, 1 << 20, 3 << 20):
        if bufsize == 1:
            with open(mnt / "structured.npy", "rb", buffering=0) as f:
                got = b"".join(iter(lambda: f.read(1), b""))
            assert got == ref.data("structured.npy")
            continue
        assert S.read_file(mnt / "medium.npy", bufsize) == want, bufsize


@pytest.mark.parametrize("key", MMAP_KEYS)
def test_np_load_mmap_equals_numpy(mnt, stored_npz, key):
    with np.load(stored_npz) as z:
        want = z[key]
    S.run_in_child(S.check_mmap_equal, mnt / f"{key}.npy", want)


def test_np_load_object_array_with_pickle(mnt, stored_npz, stored_arrays):
    with np.load(stored_npz, allow_pickle=True) as z:
        want = z["objects"]
    got = np.load(mnt / "objects.npy", allow_pickle=True)
    assert got.dtype == object
    assert got.tolist() == want.tolist() == stored_arrays["objects"].tolist()
    with pytest.raises(ValueError):
        np.load(mnt / "objects.npy", allow_pickle=False)


def test_positional_array_and_nested_keys(mnt, stored_npz):
    with np.load(stored_npz) as z:
        assert np.array_equal(np.load(mnt / "arr_0.npy"), z["arr_0"])
        for key in ("a/b", "a/c/d", "deep/er/still/x", "with space", "ünïcødé_key"):
            assert os.path.isfile(mnt / f"{key}.npy")
            assert np.array_equal(np.load(mnt / f"{key}.npy"), z[key]), key
    assert os.path.isdir(mnt / "a" / "c")
    assert os.path.isdir(mnt / "deep" / "er" / "still")


def test_random_preads_medium(mnt, ref):
    want = ref.data("medium.npy")
    size = len(want)
    rng = random.Random(7)
    cases = [(0, 0), (0, 1), (size - 1, 1), (size - 1, 100), (size, 1), (size, 0),
             (size + 1, 10), (size + 10 ** 6, 4096), (0, size), (0, size + 4096),
             (1, size), (4095, 8193), (131071, 131074), (size - 4096, 1 << 20)]
    for _ in range(400):
        kind = rng.random()
        if kind < 0.1:
            off = rng.randrange(size - 5000, size + 5000)
        elif kind < 0.2:
            off = rng.randrange(0, size // 4096) * 4096 + rng.choice((-1, 0, 1))
        else:
            off = rng.randrange(0, size)
        n = rng.choice((0, 1, 7, 512, 4096, 65536, 131072, 300000, rng.randrange(1, 1 << 20)))
        cases.append((max(0, off), n))
    fd = os.open(mnt / "medium.npy", os.O_RDONLY)
    try:
        for off, n in cases:
            got = os.pread(fd, n, off)
            assert got == want[off : off + n], (off, n)
    finally:
        os.close(fd)


def test_random_preads_every_member(mnt, ref):
    rng = random.Random(11)
    for p in ref.files():
        want = ref.data(p)
        fd = os.open(mnt / p, os.O_RDONLY)
        try:
            for _ in range(25):
                off = rng.randrange(0, len(want) + 200)
                n = rng.randrange(0, 70000)
                assert os.pread(fd, n, off) == want[off : off + n], (p, off, n)
        finally:
            os.close(fd)


def test_concurrent_readers(mnt, ref):
    files = [(mnt / p, ref.data(p)) for p in ref.files()]

    def worker(seed):
        rng = random.Random(seed)
        order = files[:]
        rng.shuffle(order)
        done = 0
        for path, want in order:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                # the whole member in random-sized sequential chunks...
                got = bytearray()
                while True:
                    b = os.pread(fd, rng.choice((1000, 4096, 65536, 200000)), len(got))
                    if not b:
                        break
                    got += b
                assert bytes(got) == want, (seed, path)
                # ...and some random preads
                for _ in range(10):
                    off = rng.randrange(0, len(want) + 1)
                    n = rng.randrange(0, 100000)
                    assert os.pread(fd, n, off) == want[off : off + n], (seed, path, off, n)
            finally:
                os.close(fd)
            done += 1
        return done

    with ThreadPoolExecutor(max_workers=8) as ex:
        results = list(ex.map(worker, range(8)))
    assert results == [len(files)] * 8


def test_cat_and_ls(mnt, ref):
    p = "f_order.npy"
    out = subprocess.run(["cat", str(mnt / p)], capture_output=True, timeout=60)
    assert out.returncode == 0 and out.stdout == ref.data(p)
    ls = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, timeout=60, text=True)
    assert ls.returncode == 0, ls.stderr
    assert ls.stderr == ""
    line = subprocess.run(["ls", "-ln", str(mnt / p)], capture_output=True, timeout=60,
                          text=True).stdout.split()
    assert line[0] == "-r--r--r--"
    assert int(line[4]) == ref.info(p).file_size


# --------------------------------------------------------------------------------------------
# read-only


def _erofs_ops(mnt):
    f = str(mnt / "c_order.npy")
    d = str(mnt / "a")
    return {
        "open_wronly": lambda: os.open(f, os.O_WRONLY),
        "open_rdwr": lambda: os.open(f, os.O_RDWR),
        "open_trunc": lambda: os.open(f, os.O_WRONLY | os.O_TRUNC),
        "open_append": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
        "create_root": lambda: os.open(str(mnt / "new.npy"), os.O_WRONLY | os.O_CREAT, 0o644),
        "create_subdir": lambda: os.open(d + "/new.npy", os.O_RDWR | os.O_CREAT | os.O_EXCL),
        "unlink": lambda: os.unlink(f),
        "mkdir": lambda: os.mkdir(str(mnt / "newdir")),
        "mkdir_sub": lambda: os.mkdir(d + "/newdir"),
        "rmdir": lambda: os.rmdir(str(mnt / "a" / "c")),
        "rename": lambda: os.rename(f, str(mnt / "renamed.npy")),
        "truncate": lambda: os.truncate(f, 0),
        "chmod": lambda: os.chmod(f, 0o644),
        "utime": lambda: os.utime(f, (0, 0)),
        "symlink": lambda: os.symlink("c_order.npy", str(mnt / "link")),
        "hardlink": lambda: os.link(f, str(mnt / "hard.npy")),
    }


@pytest.mark.parametrize("op", list(_erofs_ops(Path("/x"))))
def test_writes_fail_with_erofs(mnt, ref, op):
    with pytest.raises(OSError) as ei:
        fd = _erofs_ops(mnt)[op]()
        if isinstance(fd, int):  # it opened: do not leak it
            os.close(fd)
    assert ei.value.errno == errno.EROFS, f"{op}: {ei.value!r}"
    assert S.walk_mount(mnt) == ref.kinds()
    assert S.read_file(mnt / "c_order.npy") == ref.data("c_order.npy")


def test_mounted_read_only(mnt):
    assert "ro" in S.mount_options(mnt)


def test_statvfs(mnt):
    sv = os.statvfs(mnt)
    assert sv.f_bsize > 0
    assert sv.f_namemax >= 255
    assert sv.f_flag & os.ST_RDONLY
    sv2 = os.statvfs(mnt / "a")
    assert sv2.f_flag & os.ST_RDONLY


# --------------------------------------------------------------------------------------------
# a 64 MiB member


@pytest.fixture(scope="module")
def big_mnt(big_npz, tmp_path_factory):
    with S.mounted(big_npz, tmp_path_factory.mktemp("big") / "mnt") as mp:
        yield mp


def test_big_member_mmap(big_mnt, big_npz):
    with np.load(big_npz) as z:
        want = z["big"]
        after = z["after"]
    assert os.stat(big_mnt / "big.npy").st_size == want.nbytes + 128

    def check():
        got = np.load(big_mnt / "big.npy", mmap_mode="r")
        assert isinstance(got, np.memmap)
        assert got.shape == want.shape and got.dtype == want.dtype
        # the far end first, then a few spots, then everything
        assert np.array_equal(got[-1000:], want[-1000:])
        for i in (0, 1, 4095, 1 << 20, (1 << 22) + 3, len(want) - 1):
            assert got[i] == want[i], i
        assert np.array_equal(got, want)

    S.run_in_child(check)
    assert np.array_equal(np.load(big_mnt / "after.npy"), after)


def test_big_member_preads(big_mnt, big_npz):
    import zipfile

    with zipfile.ZipFile(big_npz) as zf:
        want = zf.read("big.npy")
    rng = random.Random(64)
    fd = os.open(big_mnt / "big.npy", os.O_RDONLY)
    try:
        for _ in range(100):
            off = rng.randrange(0, len(want) + 10)
            n = rng.choice((1, 4096, 1 << 17, 1 << 20, 5 << 20))
            assert os.pread(fd, n, off) == want[off : off + n], (off, n)
    finally:
        os.close(fd)
