"""Saved and shared indexes of a remote archive (served by nginx on 127.0.0.1): the archive's
identity is the same read remotely as locally, so an index saved by a local mount serves a
remote one; a sidecar next to the object is fetched and used first, and a missing one is no
error. Bytes are compared with zipfile; how much was decoded is read from the member's
user.npzmount.decoded attribute. Needs the remote side (remote_support, nginx)."""

import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

import npz_support as S
from index_check import decoded, tail_read

R = pytest.importorskip("remote_support")
if not os.path.exists(R.NGINX):
    pytest.skip("nginx is not installed", allow_module_level=True)

SPAN = 256 << 10
MEMBERS = ("f.npy", "i.npy", "s.npy")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """nginx serving a directory that holds c.npz (two deflated members, one stored)."""
    root = tmp_path_factory.mktemp("www")
    rng = np.random.default_rng(21)
    np.savez_compressed(root / "c.npz", f=rng.standard_normal(1_500_000).astype(np.float32),
                        i=np.arange(1_000_000, dtype=np.int64))
    with zipfile.ZipFile(root / "c.npz", "a", zipfile.ZIP_STORED) as z:
        z.writestr("s.npy", rng.integers(0, 255, 300_000, dtype=np.uint8).tobytes())
    with R.Nginx(root, tmp_path_factory.mktemp("nginx")) as server:
        yield root, server


def opts(index_dir, log, *more):
    return ["-o", ",".join([f"index_dir={index_dir}", f"span={SPAN // 1024}k", "noprefetch",
                            f"logfile={log}", *more])]


def check_indexed_reads(mnt, ref):
    for name in ("f.npy", "i.npy"):
        data = ref.data(name)
        assert tail_read(mnt / name, len(data)) == data[-4096:]
        assert decoded(mnt / name) <= 2 * SPAN + (256 << 10), name
    for name in MEMBERS:
        assert S.read_file(mnt / name) == ref.data(name), name


def test_local_index_serves_remote_mount(served, tmp_path, mount):
    root, server = served
    ref = S.Reference(root / "c.npz")
    idx = tmp_path / "idx"
    res = subprocess.run([S.BIN, "--index", "-o", f"index_dir={idx},span={SPAN // 1024}k",
                          str(root / "c.npz")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    log = tmp_path / "log"
    with mount(server.url("c.npz"), *opts(idx, log)) as mnt:
        check_indexed_reads(mnt, ref)
    assert "ignored" not in log.read_text()  # and no sidecar is no error


def test_remote_sidecar_used_first(served, tmp_path, mount):
    root, server = served
    ref = S.Reference(root / "c.npz")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(root / "c.npz", work / "c.npz")
    res = subprocess.run([S.BIN, "--index", "--sidecar", "-o",
                          f"index_dir={tmp_path / 'build_idx'},span={SPAN // 1024}k",
                          str(work / "c.npz")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    shutil.copy(work / "c.npz.npzidx", root / "c.npz.npzidx")  # "uploaded"
    try:
        empty = tmp_path / "empty"
        empty.mkdir()
        log = tmp_path / "log"
        with mount(server.url("c.npz"), *opts(empty, log)) as mnt:
            check_indexed_reads(mnt, ref)
        assert "ignored" not in log.read_text()
        assert any(e["uri"] == "/c.npz.npzidx" for e in server.log())
    finally:
        os.unlink(root / "c.npz.npzidx")


def test_changed_object_reads_eio_for_good(served, tmp_path, mount):
    """The object is replaced while mounted: reads that reach the server fail with EIO, and
    from then on every read does, cached or not: never a mix of two versions."""
    root, server = served
    arc = root / "changing.npz"
    shutil.copy(root / "c.npz", arc)
    ref = S.Reference(arc)
    log = tmp_path / "log"
    try:
        with mount(server.url("changing.npz"), *opts(tmp_path / "idx", log, "block=64k",
                                                     "remote_cache=256k")) as mnt:
            s, f = ref.data("s.npy"), ref.data("f.npy")
            fs = os.open(mnt / "s.npy", os.O_RDONLY)
            ff = os.open(mnt / "f.npy", os.O_RDONLY)
            try:
                assert os.pread(fs, 4096, 0) == s[:4096]
                R.replace_file(arc, arc.read_bytes()[::-1])
                with pytest.raises(OSError) as e:
                    os.pread(ff, 4096, len(f) - 4096)  # decodes it all: new GETs
                assert e.value.errno == S.EIO
                os.posix_fadvise(fs, 0, 0, os.POSIX_FADV_DONTNEED)
                with pytest.raises(OSError) as e:
                    os.pread(fs, 4096, 0)  # fetched before the change, failed all the same
                assert e.value.errno == S.EIO
            finally:
                os.close(fs)
                os.close(ff)
        assert "changed while mounted" in log.read_text()
    finally:
        arc.unlink()
