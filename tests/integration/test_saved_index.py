"""Saved checkpoint indexes (-o index_dir, --index): a remount continues from the index saved
by the last one, reads through a loaded index are checked against its CRCs, and an index file
that does not fit is ignored or deleted, never trusted. Bytes are compared with zipfile; how
much was decoded is read from the member's user.npzmount.decoded attribute."""

import os
import random
import shutil
import subprocess
import threading
import zipfile

import numpy as np
import pytest

import npz_support as S

SPAN = 256 << 10


@pytest.fixture(scope="module")
def compressed_npz(tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "c.npz"
    rng = np.random.default_rng(7)
    np.savez_compressed(path, f=rng.standard_normal(3_000_000).astype(np.float32),
                        i=np.arange(2_000_000, dtype=np.int64), small=np.arange(10))
    return path


def decoded(path):
    return int(os.getxattr(path, "user.npzmount.decoded"))


def opts(index_dir, *more):
    return ["-o", ",".join([f"index_dir={index_dir}", f"span={SPAN // 1024}k", *more])]


def index_files(index_dir):
    return sorted(p for p in os.listdir(index_dir) if p.endswith(".npzidx")) \
        if os.path.isdir(index_dir) else []


def random_reads(path, ref, n=40, seed=1):
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDONLY)
    try:
        for _ in range(n):
            off = rnd.randrange(len(ref))
            size = rnd.randrange(1, 20000)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            assert os.pread(fd, size, off) == ref[off:off + size], (off, size)
    finally:
        os.close(fd)


def build_index(mount, archive, index_dir):
    """Reads every member once, then unmounts: the indexes are saved."""
    with mount(archive, *opts(index_dir, "noprefetch")) as mnt:
        for name in ("f.npy", "i.npy"):
            S.read_file(mnt / name)
    return index_files(index_dir)


def test_round_trip_no_full_decode(compressed_npz, tmp_path, mount):
    ref = S.Reference(compressed_npz)
    idx = tmp_path / "idx"
    assert len(build_index(mount, compressed_npz, idx)) == 2
    with mount(compressed_npz, *opts(idx, "noprefetch")) as mnt:
        for name in ("f.npy", "i.npy"):
            data = ref.data(name)
            fd = os.open(mnt / name, os.O_RDONLY)
            try:  # the far end first: without the saved index this decodes everything
                assert os.pread(fd, 4096, len(data) - 4096) == data[-4096:]
            finally:
                os.close(fd)
            assert decoded(mnt / name) <= 2 * SPAN + (256 << 10), name
            assert os.getxattr(mnt / name, "user.npzmount.complete") == b"1"
            random_reads(mnt / name, data)
        np.testing.assert_array_equal(np.load(mnt / "f.npy", mmap_mode="r"),
                                      np.load(compressed_npz)["f"])


def test_partial_index_continues(compressed_npz, tmp_path, mount):
    ref = S.Reference(compressed_npz)
    data = ref.data("i.npy")
    idx = tmp_path / "idx"
    with mount(compressed_npz, *opts(idx, "noprefetch")) as mnt:
        fd = os.open(mnt / "i.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, len(data) // 2) == data[len(data) // 2:][:4096]
        finally:
            os.close(fd)
    assert len(index_files(idx)) == 1
    with mount(compressed_npz, *opts(idx, "noprefetch")) as mnt:
        half = len(data) // 2
        with open(mnt / "i.npy", "rb") as f:
            f.seek(half)
            assert f.read() == data[half:]
        # the second half once, plus one span to resume from the last saved checkpoint
        assert decoded(mnt / "i.npy") <= half + 2 * SPAN + (512 << 10)


def test_noindex_neither_reads_nor_writes(compressed_npz, tmp_path, mount):
    ref = S.Reference(compressed_npz)
    idx = tmp_path / "idx"
    build_index(mount, compressed_npz, idx)
    before = {p: (idx / p).stat().st_mtime_ns for p in index_files(idx)}
    with mount(compressed_npz, "-o", f"index_dir={idx},noindex,noprefetch") as mnt:
        data = ref.data("f.npy")
        fd = os.open(mnt / "f.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, len(data) - 4096) == data[-4096:]
        finally:
            os.close(fd)
        assert decoded(mnt / "f.npy") >= len(data) - 4096 - (256 << 10)
    assert {p: (idx / p).stat().st_mtime_ns for p in index_files(idx)} == before


def test_background_indexing_saves(compressed_npz, tmp_path, mount):
    idx = tmp_path / "idx"
    with mount(compressed_npz, *opts(idx)) as mnt:
        S.poll(lambda: all(os.getxattr(mnt / n, "user.npzmount.complete") == b"1"
                           for n in ("f.npy", "i.npy")), timeout=120,
               what="the background indexer to complete both members")
        S.poll(lambda: len(index_files(idx)) == 2, timeout=60, what="both indexes saved")
        # nothing read, nothing cached: the first read far in costs one restart
        data = S.Reference(compressed_npz).data("f.npy")
        before = decoded(mnt / "f.npy")
        fd = os.open(mnt / "f.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, len(data) - 10000) == data[-10000:][:4096]
        finally:
            os.close(fd)
        assert decoded(mnt / "f.npy") - before <= 2 * SPAN + (256 << 10)


def corrupt_stream_keeping_directory(path, name):
    """Flips bytes well inside member name's deflate data, leaving every header and the
    central directory (hence the archive's identity) as they were."""
    e = S.find_entry(S.zip_layout(path.read_bytes()), name)
    with open(path, "r+b") as f:
        for k in range(64):
            at = e.data_off + e.csize * 3 // 4 + k * 7
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x55]))


def test_corrupt_data_behind_loaded_index_reads_eio(compressed_npz, tmp_path, mount):
    arc = tmp_path / "c.npz"
    shutil.copy(compressed_npz, arc)
    idx = tmp_path / "idx"
    assert len(build_index(mount, arc, idx)) == 2
    corrupt_stream_keeping_directory(arc, "f.npy")
    ref = S.Reference(compressed_npz)
    with mount(arc, *opts(idx, "noprefetch")) as mnt:
        data = ref.data("f.npy")
        fd = os.open(mnt / "f.npy", os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                for off in range(len(data) // 2, len(data), 64 << 10):
                    got = os.pread(fd, 4096, off)
                    assert got == data[off:off + 4096], "corrupt data served"
            assert e.value.errno == S.EIO
        finally:
            os.close(fd)
        assert os.getxattr(mnt / "f.npy", "user.npzmount.error")
        assert S.read_file(mnt / "i.npy") == ref.data("i.npy")  # the rest keeps working
    assert len(index_files(idx)) == 1  # the one that lied was deleted


@pytest.mark.parametrize("damage", ["truncate_half", "truncate_header", "flip_header",
                                    "flip_table", "flip_window", "zero"])
def test_damaged_index_file_is_not_trusted(damage, compressed_npz, tmp_path, mount):
    ref = S.Reference(compressed_npz)
    idx = tmp_path / "idx"
    files = build_index(mount, compressed_npz, idx)
    for p in files:
        path = idx / p
        b = bytearray(path.read_bytes())
        if damage == "truncate_half":
            b = b[:len(b) // 2]
        elif damage == "truncate_header":
            b = b[:20]
        elif damage == "flip_header":
            b[9] ^= 0x01
        elif damage == "flip_table":
            b[200] ^= 0x80
        elif damage == "flip_window":
            b[len(b) - 1000] ^= 0x10
        else:
            b = bytearray(len(b))
        path.write_bytes(bytes(b))
    with mount(compressed_npz, *opts(idx, "noprefetch")) as mnt:
        for name in ("f.npy", "i.npy"):
            data = ref.data(name)
            try:
                got = S.read_file(mnt / name)
            except OSError as e:  # a bad window behind a good table: EIO, file dropped
                assert damage == "flip_window" and e.errno == S.EIO
                continue
            assert got == data, name


def test_index_of_another_archive_of_same_size(compressed_npz, tmp_path, mount):
    """Same member names and sizes, different contents: the identity differs, so the other
    archive's index files are never used."""
    a = tmp_path / "a.npz"
    b = tmp_path / "b.npz"
    rng = np.random.default_rng(3)
    x = rng.standard_normal(500_000).astype(np.float32)
    np.savez(a, x=x)
    np.savez(b, x=x[::-1].copy())
    assert a.stat().st_size == b.stat().st_size
    for p in (a, b):  # recompress with the same level so that sizes match as well
        with zipfile.ZipFile(p) as z:
            data = z.read("x.npy")
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            z.writestr("x.npy", data)
    idx = tmp_path / "idx"
    with mount(a, *opts(idx, "noprefetch")) as mnt:
        S.read_file(mnt / "x.npy")
    saved = index_files(idx)
    with mount(b, *opts(idx, "noprefetch")) as mnt:
        assert S.read_file(mnt / "x.npy") == S.Reference(b).data("x.npy")
    assert set(saved) <= set(index_files(idx))


def test_two_daemons_save_at_once(compressed_npz, tmp_path, mount):
    """Two daemons on two copies of one archive build the same index and save it at the same
    moment (both unmounted at once): one complete file, no temporary leftovers."""
    ref = S.Reference(compressed_npz)
    idx = tmp_path / "idx"
    mps, pids = [], []
    try:
        for k in range(2):
            arc = tmp_path / f"copy{k}.npz"
            shutil.copy(compressed_npz, arc)
            mp = tmp_path / f"m{k}"
            mp.mkdir()
            res = S.run_npzmount([*opts(idx, "noprefetch"), str(arc), str(mp)])
            assert res.returncode == 0, res.stderr
            mps.append(mp)
            pids += S.find_daemons(mp)
        readers = [threading.Thread(target=S.read_file, args=(mp / "f.npy",)) for mp in mps]
        for t in readers:
            t.start()
        for t in readers:
            t.join()
        unmounts = [threading.Thread(target=S.fusermount_unmount, args=(mp,)) for mp in mps]
        for t in unmounts:
            t.start()
        for t in unmounts:
            t.join()
        assert all(S.wait_exit(pid, 30) for pid in pids)
    finally:
        for mp in mps:
            if S.is_mountpoint(mp):
                S.force_unmount(mp)
        for pid in pids:
            if S.pid_alive(pid):
                S.kill_pid(pid)
    assert [p for p in os.listdir(idx) if not p.endswith(".npzidx")] == []  # no temp files
    assert len(index_files(idx)) == 1
    with mount(compressed_npz, *opts(idx, "noprefetch")) as mnt:
        data = ref.data("f.npy")
        fd = os.open(mnt / "f.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, len(data) - 4096) == data[-4096:]
        finally:
            os.close(fd)
        assert decoded(mnt / "f.npy") <= 2 * SPAN + (256 << 10)


@pytest.mark.parametrize("where", ["under_a_file", "missing_parents"])
def test_unwritable_or_missing_index_dir(where, compressed_npz, tmp_path, mount):
    ref = S.Reference(compressed_npz)
    if where == "under_a_file":
        (tmp_path / "plain").write_text("not a directory")
        idx = tmp_path / "plain" / "idx"
    else:
        idx = tmp_path / "a" / "b" / "c"
    with mount(compressed_npz, *opts(idx, "noprefetch")) as mnt:
        assert S.read_file(mnt / "i.npy") == ref.data("i.npy")
    if where == "missing_parents":
        assert len(index_files(idx)) == 1
    else:
        assert not idx.exists()


def test_index_command(compressed_npz, tmp_path, mount):
    idx = tmp_path / "idx"
    res = subprocess.run([S.BIN, "--index", "-o", f"index_dir={idx},span={SPAN // 1024}k",
                          str(compressed_npz)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""  # not a terminal: no progress display
    assert len(index_files(idx)) == 2
    with mount(compressed_npz, *opts(idx, "noprefetch")) as mnt:
        data = S.Reference(compressed_npz).data("f.npy")
        fd = os.open(mnt / "f.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 4096, len(data) - 4096) == data[-4096:]
        finally:
            os.close(fd)
        assert decoded(mnt / "f.npy") <= 2 * SPAN + (256 << 10)


def test_index_command_directory(tmp_path, mount):
    """--index DIR indexes every archive a mount of DIR shows (subdirectories too), and each
    one then mounts with its index: a read at the end decodes about a span, not the member."""
    root = tmp_path / "tree"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(5)
    big = rng.standard_normal(400_000).astype(np.float32)
    np.savez_compressed(root / "a.npz", x=big, y=np.arange(300_000))
    with open(root / "sub" / "b.zip", "wb") as f:  # a name numpy would give .npz
        np.savez_compressed(f, z=big[::-1].copy())
    np.savez(root / "stored.npz", s=np.arange(10))  # nothing to index
    (root / "notes.txt").write_text("not an archive")
    idx = tmp_path / "idx"
    res = subprocess.run([S.BIN, "--index", "-o", f"index_dir={idx},span={SPAN // 1024}k",
                          str(root)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    assert len(index_files(idx)) == 3
    for arc, member in ((root / "a.npz", "x.npy"), (root / "sub" / "b.zip", "z.npy")):
        data = S.Reference(arc).data(member)
        with mount(arc, *opts(idx, "noprefetch")) as mnt:
            fd = os.open(mnt / member, os.O_RDONLY)
            try:
                assert os.pread(fd, 4096, len(data) - 4096) == data[-4096:]
            finally:
                os.close(fd)
            assert decoded(mnt / member) <= 2 * SPAN + (256 << 10)


def test_index_command_directory_failures(tmp_path):
    """A broken archive in a directory is one line and status 1, the others are indexed; a
    directory with no archive at all is one line too."""
    root = tmp_path / "tree"
    root.mkdir()
    np.savez_compressed(root / "good.npz", x=np.arange(100_000))
    (root / "bad.npz").write_bytes(b"not a zip at all" * 10)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("nothing here")
    idx = tmp_path / "idx"
    res = subprocess.run([S.BIN, "--index", "-o", f"index_dir={idx}", str(root), str(empty)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "bad.npz" in lines[0] and str(empty) in lines[1] and "no .npz or .zip" in lines[1]
    assert all(line.startswith("npzmount: ") for line in lines)
    assert len(index_files(idx)) == 1


def test_index_command_bad_archive(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all" * 10)
    res = subprocess.run([S.BIN, "--index", "-o", f"index_dir={tmp_path / 'idx'}", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npzmount: ") and "bad.npz" in lines[0]
