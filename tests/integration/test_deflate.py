"""Deflated members (np.savez_compressed and friends): bytes, np.load(mmap_mode='r'), random
access in any order, concurrency, the span/cache options, and corrupted data."""

import os
import random
import shutil
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import npz_support as S

VARIANTS = {
    "default": [],
    "span64k": ["-o", "span=64k"],
    "cache1M": ["-o", "cache=1M"],
    "span64k_cache1M": ["-o", "span=64k,cache=1M"],
}


def make_deflate_arrays():
    rng = np.random.default_rng(99)
    base = S.make_stored_arrays()
    arrays = {k: base[k] for k in ("c_order", "f_order", "structured", "big_endian_f8",
                                   "zero_d", "empty", "empty_struct", "unicode", "a/b",
                                   "a/c/d", "objects", "datetime64")}
    # ~24 MiB that deflate squeezes a few times: the random-access target
    arrays["smooth"] = np.cumsum(rng.integers(-3, 4, 6_000_001), dtype=np.int32)
    # incompressible: deflate emits stored blocks
    arrays["noise"] = rng.integers(0, 256, 3_000_017, dtype=np.uint8)
    # extremely compressible: long matches, tiny input for a lot of output
    arrays["zeros"] = np.zeros(2_000_000)
    return arrays


KEYS = list(make_deflate_arrays())


@pytest.fixture(scope="module")
def deflate_arrays():
    return make_deflate_arrays()


@pytest.fixture(scope="module")
def deflate_npz(tmp_path_factory, deflate_arrays):
    path = tmp_path_factory.mktemp("deflate") / "compressed.npz"
    np.savez_compressed(path, **deflate_arrays)
    return path


@pytest.fixture(scope="module")
def dref(deflate_npz):
    return S.Reference(deflate_npz)


@pytest.fixture(scope="module", params=list(VARIANTS))
def dmnt(request, deflate_npz, tmp_path_factory):
    mp = tmp_path_factory.mktemp(f"deflate_{request.param}") / "mnt"
    with S.mounted(deflate_npz, mp, VARIANTS[request.param]) as m:
        yield m


def test_archive_is_really_deflated(dref):
    assert {i.compress_type for i in dref.infos} == {zipfile.ZIP_DEFLATED}
    smooth = dref.info("smooth.npy")
    assert smooth.compress_size * 2 < smooth.file_size


# --------------------------------------------------------------------------------------------
# the same facts under every span/cache variant


def test_listing_and_sizes(dmnt, dref):
    S.check_mount(dmnt, dref, contents=False)


def test_bytes_equal_zipfile(dmnt, dref):
    for p in dref.files():
        assert S.read_file(dmnt / p) == dref.data(p), p


def test_bytes_with_odd_read_sizes(dmnt, dref):
    for p, size in (("smooth.npy", 4097), ("noise.npy", 100_003), ("c_order.npy", 1)):
        if size == 1:
            with open(dmnt / p, "rb", buffering=0) as f:
                got = b"".join(iter(lambda: f.read(1), b""))
        else:
            got = S.read_file(dmnt / p, size)
        assert got == dref.data(p), (p, size)


@pytest.mark.parametrize("key", [k for k in KEYS if k != "objects"])
def test_np_load_mmap_equals_numpy(dmnt, deflate_npz, key):
    with np.load(deflate_npz) as z:
        want = z[key]
    S.run_in_child(S.check_mmap_equal, dmnt / f"{key}.npy", want)


def test_np_load_objects(dmnt, deflate_npz):
    with np.load(deflate_npz, allow_pickle=True) as z:
        want = z["objects"]
    assert np.load(dmnt / "objects.npy", allow_pickle=True).tolist() == want.tolist()


def test_random_elements_through_mmap(dmnt, deflate_arrays):
    want = deflate_arrays["smooth"]
    fd = os.open(dmnt / "smooth.npy", os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    rng = random.Random(200)
    idx = [len(want) - 1, 0] + [rng.randrange(len(want)) for _ in range(198)]

    def check():
        got = np.load(dmnt / "smooth.npy", mmap_mode="r")
        for i in idx:
            assert got[i] == want[i], i

    S.run_in_child(check)


# --------------------------------------------------------------------------------------------
# cold random access: a fresh mount each, so nothing has been decompressed yet


def _pread_check(fd, want, off, n):
    got = os.pread(fd, n, off)
    assert got == want[off : off + n], (off, n, len(got))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_preads_far_end_first(variant, deflate_npz, dref, mount):
    with mount(deflate_npz, *VARIANTS[variant]) as mnt:
        for name in ("smooth.npy", "noise.npy", "zeros.npy"):
            want = dref.data(name)
            size = len(want)
            fd = os.open(mnt / name, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                _pread_check(fd, want, size - 4096, 4096)   # the far end first
                _pread_check(fd, want, size - 1, 100)       # across the end
                _pread_check(fd, want, size + 5, 100)       # past it
                _pread_check(fd, want, 0, 4096)             # then the start
                _pread_check(fd, want, size // 2, 70000)    # then the middle
                rng = random.Random(name)
                for _ in range(60):
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    off = rng.randrange(0, size + 100)
                    n = rng.choice((0, 1, 4096, 65536, 200_000, rng.randrange(1, 1 << 21)))
                    _pread_check(fd, want, off, n)
                # backwards, page by page over a stretch
                for off in range(size - 4096 * 64, size - 4096 * 96, -4096):
                    _pread_check(fd, want, off, 4096)
            finally:
                os.close(fd)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_concurrent_readers_one_member(variant, deflate_npz, dref, mount):
    want = dref.data("smooth.npy")
    size = len(want)
    with mount(deflate_npz, *VARIANTS[variant]) as mnt:
        def worker(seed):
            rng = random.Random(seed)
            fd = os.open(mnt / "smooth.npy", os.O_RDONLY)
            try:
                for i in range(40):
                    if i % 4 == 0:
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    off = rng.randrange(0, size)
                    n = rng.choice((1, 4096, 65536, 131072, rng.randrange(1, 300_000)))
                    got = os.pread(fd, n, off)
                    assert got == want[off : off + n], (seed, off, n)
            finally:
                os.close(fd)
            return True

        with ThreadPoolExecutor(max_workers=8) as ex:
            assert all(ex.map(worker, range(8)))
        # and everything is still right afterwards
        assert S.read_file(mnt / "smooth.npy") == want


def test_concurrent_readers_all_members(deflate_npz, dref, mount):
    files = dref.files()
    with mount(deflate_npz, "-o", "cache=1M") as mnt:
        def worker(seed):
            rng = random.Random(seed)
            order = files[:]
            rng.shuffle(order)
            for p in order:
                assert S.read_file(mnt / p, rng.choice((4096, 65536, 1 << 20))) == dref.data(p)
            return True

        with ThreadPoolExecutor(max_workers=8) as ex:
            assert all(ex.map(worker, range(8)))


# --------------------------------------------------------------------------------------------
# other writers and levels


@pytest.mark.parametrize("pipe", [False, True], ids=["seekable", "piped_data_descriptors"])
def test_infozip_deflated(pipe, tmp_path, mount):
    tree = S.make_infozip_tree(tmp_path / "tree")
    arc = S.infozip(tree, tmp_path / "iz.zip", pipe=pipe)
    ref = S.Reference(arc)
    assert any(i.compress_type == zipfile.ZIP_DEFLATED for i in ref.infos)
    with mount(arc) as mnt:
        S.check_mount(mnt, ref)


def test_zlib_levels_and_empty_member(tmp_path, mount):
    rng = np.random.default_rng(3)
    payload = S.npy_bytes(np.cumsum(rng.integers(-2, 3, 700_000)).astype(np.int32))
    arc = tmp_path / "levels.zip"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        for level in (0, 1, 6, 9):
            zf.writestr(f"level{level}.npy", payload, compresslevel=level)
        zf.writestr("empty.bin", b"")
        zf.writestr("one.bin", b"1")
        zf.writestr("mixed.bin", payload[:100_000] + rng.bytes(300_000) + payload[:200_000])
    ref = S.Reference(arc)
    with mount(arc, "-o", "span=64k") as mnt:
        S.check_mount(mnt, ref)
        fd = os.open(mnt / "mixed.bin", os.O_RDONLY)
        try:
            want = ref.data("mixed.bin")
            for off in (len(want) - 10, 350_000, 99_999, 0):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                _pread_check(fd, want, off, 70_000)
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# corrupted data and CRC mismatches


@pytest.fixture(scope="module")
def victim_npz(tmp_path_factory):
    rng = np.random.default_rng(13)
    path = tmp_path_factory.mktemp("victim") / "victim.npz"
    np.savez_compressed(path, victim=np.cumsum(rng.integers(-5, 6, 1_500_000), dtype=np.int32),
                        ok1=np.arange(100_000, dtype=np.float64),
                        ok2=rng.integers(0, 9, (300, 300)), **{"sub/ok3": np.eye(50)})
    return path


OK = ("ok1.npy", "ok2.npy", "sub/ok3.npy")


def _assert_corrupt_premise(raw, info):
    """The corrupted stream must really be wrong: zlib fails, or the output is not the
    member (wrong length or CRC)."""
    try:
        out = zlib.decompressobj(-15).decompress(raw)
    except zlib.error:
        return
    assert len(out) != info.file_size or zlib.crc32(out) != info.CRC


@pytest.mark.parametrize("fraction", [0.5, 0.1, 0.9])
def test_corrupted_deflate_data(fraction, victim_npz, tmp_path, mount):
    ref = S.Reference(victim_npz)
    arc = tmp_path / "bad.npz"
    shutil.copy(victim_npz, arc)
    S.corrupt_member_data(arc, "victim.npy", fraction=fraction, count=16)
    raw, _e = S.member_raw_data(arc, "victim.npy")
    _assert_corrupt_premise(raw, ref.info("victim.npy"))
    with mount(arc) as mnt:
        assert "victim.npy" in os.listdir(mnt)
        assert os.stat(mnt / "victim.npy").st_size == ref.info("victim.npy").file_size
        for p in OK:
            assert S.read_file(mnt / p) == ref.data(p), p
        assert S.read_errno(mnt / "victim.npy") == S.EIO
        # later reads still work, and the victim keeps failing
        for p in OK:
            assert S.read_file(mnt / p) == ref.data(p), p
        fd = os.open(mnt / "victim.npy", os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
        assert S.read_errno(mnt / "victim.npy", bufsize=65536) == S.EIO
        for p in OK:
            assert S.read_file(mnt / p) == ref.data(p), p


@pytest.mark.parametrize("variant", ["default", "span64k"])
@pytest.mark.parametrize("order", ["sequential", "far_end_first"])
def test_crc_mismatch(order, variant, victim_npz, tmp_path, mount):
    ref = S.Reference(victim_npz)
    arc = tmp_path / "crc.npz"
    shutil.copy(victim_npz, arc)
    old = S.set_central_crc(arc, "victim.npy", ref.info("victim.npy").CRC ^ 0x5A5A5A5A)
    assert old == ref.info("victim.npy").CRC
    size = ref.info("victim.npy").file_size
    with mount(arc, *VARIANTS[variant]) as mnt:
        if order == "far_end_first":
            fd = os.open(mnt / "victim.npy", os.O_RDONLY)
            try:
                try:
                    os.pread(fd, 4096, size - 4096)
                except OSError as e:  # failing here already is fine too
                    assert e.errno == S.EIO
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        assert S.read_errno(mnt / "victim.npy") == S.EIO
        for p in OK:
            assert S.read_file(mnt / p) == ref.data(p), p


@pytest.mark.parametrize("delta", [1000, 1, -1, -1000])
def test_size_mismatch(delta, victim_npz, tmp_path, mount):
    # the central directory's uncompressed size disagrees with the deflate stream
    ref = S.Reference(victim_npz)
    arc = tmp_path / "size.npz"
    shutil.copy(victim_npz, arc)
    e = S.find_entry(S.zip_layout(arc.read_bytes()), "victim.npy")
    S.set_central_sizes(arc, "victim.npy", e.csize, e.usize + delta)
    with mount(arc) as mnt:
        assert os.stat(mnt / "victim.npy").st_size == e.usize + delta
        assert S.read_errno(mnt / "victim.npy") == S.EIO
        for p in OK:
            assert S.read_file(mnt / p) == ref.data(p), p
