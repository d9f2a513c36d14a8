"""Members compressed with methods other than stored and deflate (bzip2, LZMA), which npzmount
decodes through libarchive with a forward-only cursor and the shared chunk cache. References
are Python's zipfile and numpy; nothing here reads the mount to make an expectation."""

import errno
import os
import random
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import npz_support as S

METHODS = {"bz": zipfile.ZIP_BZIP2, "lz": zipfile.ZIP_LZMA}


def arrays():
    rng = np.random.default_rng(7)
    return {
        "walk": np.cumsum(rng.integers(-2, 3, 700_001), dtype=np.int32),   # ~2.7 MiB
        "f_order": np.asfortranarray(rng.normal(size=(300, 211))),
        "small": np.arange(10, dtype=np.int16),
        "empty": np.zeros((0, 3)),
    }


def write_archive(path, compress_type):
    with zipfile.ZipFile(path, "w") as z:
        for key, arr in arrays().items():
            z.writestr(f"{key}.npy", S.npy_bytes(arr), compress_type=compress_type)
        z.writestr("stored.npy", S.npy_bytes(np.arange(1000)), compress_type=zipfile.ZIP_STORED)


@pytest.fixture(scope="module", params=list(METHODS))
def archive(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("methods") / f"{request.param}.npz"
    write_archive(path, METHODS[request.param])
    return path


def test_bytes_and_arrays(archive, tmp_path):
    ref = zipfile.ZipFile(archive)
    with S.mounted(archive, tmp_path / "mnt", ["-o", "span=64k"]) as mnt:
        for name in ref.namelist():
            assert (mnt / name).read_bytes() == ref.read(name), name
        for key, arr in arrays().items():
            got = np.load(mnt / f"{key}.npy", mmap_mode="r")
            same = got.dtype == arr.dtype and np.array_equal(got, arr)
            del got  # the map must be gone before unmounting
            assert same, key


def test_random_preads_backwards_and_forwards(archive, tmp_path):
    data = zipfile.ZipFile(archive).read("walk.npy")
    rng = random.Random(3)
    # a tiny cache forces the forward-only cursor to restart on backward reads
    with S.mounted(archive, tmp_path / "mnt", ["-o", "span=64k,cache=128k"]) as mnt:
        with open(mnt / "walk.npy", "rb", buffering=0) as f:
            offsets = [len(data) - 10, 0, len(data) // 2, 5] + \
                      [rng.randrange(len(data)) for _ in range(40)]
            for off in offsets:
                n = rng.choice([1, 4096, 100_000])
                assert os.pread(f.fileno(), n, off) == data[off:off + n], off


def test_concurrent_readers(archive, tmp_path):
    data = zipfile.ZipFile(archive).read("walk.npy")

    def worker(seed):
        rng = random.Random(seed)
        with open(mnt / "walk.npy", "rb", buffering=0) as f:
            for _ in range(25):
                off = rng.randrange(len(data))
                if os.pread(f.fileno(), 65536, off) != data[off:off + 65536]:
                    return False
        return True

    with S.mounted(archive, tmp_path / "mnt", ["-o", "span=64k,cache=256k"]) as mnt:
        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(worker, range(8)))


def test_crc_mismatch_reads_eio(archive, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(archive.read_bytes())
    info = zipfile.ZipFile(bad).getinfo("walk.npy")
    S.set_central_crc(bad, "walk.npy", info.CRC ^ 0x5A5A5A5A)
    ref = zipfile.ZipFile(archive)
    with S.mounted(bad, tmp_path / "mnt", ["-o", "span=64k"]) as mnt:
        with pytest.raises(OSError) as e:
            (mnt / "walk.npy").read_bytes()
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError):  # and it stays failed
            (mnt / "walk.npy").read_bytes()
        assert (mnt / "small.npy").read_bytes() == ref.read("small.npy")
        assert (mnt / "stored.npy").read_bytes() == ref.read("stored.npy")


def test_corrupt_stream_reads_eio(archive, tmp_path):
    bad = tmp_path / "bad.npz"
    blob = bytearray(archive.read_bytes())
    entry = S.find_entry(S.zip_layout(bytes(blob)), "walk.npy")
    mid = entry.data_off + entry.csize // 2
    blob[mid:mid + 64] = bytes(64)
    bad.write_bytes(bytes(blob))
    ref = zipfile.ZipFile(archive)
    with S.mounted(bad, tmp_path / "mnt") as mnt:
        with pytest.raises(OSError) as e:
            (mnt / "walk.npy").read_bytes()
        assert e.value.errno == errno.EIO
        assert (mnt / "f_order.npy").read_bytes() == ref.read("f_order.npy")
