"""npzmount --optimize IN OUT: the rewrite as a seek-optimized ZIP (SOZip 0.5).

Every output is checked against independent references: numpy and zipfile read it (CRCs
checked, testzip()), and sozip_check validates the hidden indexes and inflates every chunk on
its own with zlib. Nothing here mounts.
"""

import io
import json
import os
import signal
import subprocess
import time
import zipfile

import numpy as np
import pytest

import npz_support as S
from sozip_check import check_archive, hidden_name

Z = S.Z  # tests/ziptool.py

CHUNK = 64 << 10  # small, so that small arrays have many chunks


def optimize(src, dst, *extra):
    r = S.run_npzmount(["--optimize", *extra, src, dst], timeout=120)
    assert r.returncode == 0, r
    return r


def assert_same_arrays(a, b):
    with np.load(a) as x, np.load(b) as y:
        assert x.files == y.files
        for k in x.files:
            xa, ya = x[k], y[k]
            assert xa.dtype == ya.dtype and xa.shape == ya.shape, k
            assert np.array_equal(xa, ya), k


def assert_same_entries(a, b):
    """Names, order, timestamps, attributes, comments and contents (zipfile checks CRCs)."""
    with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
        assert zb.testzip() is None
        ia, ib = za.infolist(), zb.infolist()
        assert [i.orig_filename for i in ia] == [i.orig_filename for i in ib]
        for x, y in zip(ia, ib):
            assert (x.date_time, x.external_attr, x.internal_attr, x.comment, x.create_system,
                    x.file_size, x.CRC) == (y.date_time, y.external_attr, y.internal_attr,
                                            y.comment, y.create_system, y.file_size, y.CRC)
            assert za.read(x) == zb.read(y)
        assert za.comment == zb.comment


def no_leftovers(directory, expected):
    assert sorted(os.listdir(directory)) == sorted(expected)


def bench_like(n=600_000):
    rng = np.random.default_rng(12)
    return {"normal": rng.standard_normal(n).astype(np.float32), "ramp": np.arange(n // 2),
            "grp/sub/x": np.linspace(0, 1, 50_000), "small": np.arange(10),
            "empty": np.zeros(0)}


def test_deflated_roundtrip(tmp_path):
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez_compressed(src, **bench_like())
    r = optimize(src, dst, f"--chunk-size={CHUNK}")
    assert_same_arrays(src, dst)
    assert_same_entries(src, dst)
    found = check_archive(dst)
    with zipfile.ZipFile(src) as zf:
        big = {i.filename for i in zf.infolist() if i.file_size > CHUNK}
    assert set(found) == big == {"normal.npy", "ramp.npy", "grp/sub/x.npy"}
    assert all(ix.chunk_size == CHUNK for ix in found.values())
    with np.load(dst) as z:
        assert not any("sozip" in f for f in z.files)
    assert hidden_name("grp/sub/x.npy") == "grp/sub/.x.npy.sozip.idx"
    assert b"grp/sub/.x.npy.sozip.idx" in dst.read_bytes()
    # the summary line: sizes and the change in percent
    assert str(src) in r.stdout and "%" in r.stdout and "3 of 5" in r.stdout, r.stdout
    assert r.stderr == "", "no progress when stderr is not a terminal"
    no_leftovers(tmp_path, ["in.npz", "out.npz"])


def test_stored_kept_or_compressed(tmp_path):
    src = tmp_path / "in.npz"
    np.savez(src, **bench_like(200_000))
    kept, packed = tmp_path / "kept.npz", tmp_path / "packed.npz"
    optimize(src, kept, f"--chunk-size={CHUNK}")
    optimize(src, packed, "--compress", f"--chunk-size={CHUNK}")
    for out in (kept, packed):
        assert_same_arrays(src, out)
        assert_same_entries(src, out)
    assert check_archive(kept) == {}
    assert all(i.compress_type == zipfile.ZIP_STORED for i in S.zip_infos(kept))
    assert {i.filename: i.compress_type for i in S.zip_infos(packed)} == {
        "normal.npy": 8, "ramp.npy": 8, "grp/sub/x.npy": 8, "small.npy": 8, "empty.npy": 8}
    assert set(check_archive(packed)) == {"normal.npy", "ramp.npy", "grp/sub/x.npy"}
    assert packed.stat().st_size < src.stat().st_size


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_chunk_boundaries(tmp_path, size):
    """An index only above one chunk; a last chunk that is full or a single byte."""
    src, dst = tmp_path / "in.zip", tmp_path / "out.zip"
    data = np.random.default_rng(size).integers(0, 4, size, dtype=np.uint8).tobytes()
    S.write_zip(src, [("m", data)], compression=zipfile.ZIP_DEFLATED)
    optimize(src, dst, f"--chunk-size={CHUNK}")
    assert_same_entries(src, dst)
    found = check_archive(dst)
    if size > CHUNK:
        assert len(found["m"].offsets) == (size - 1) // CHUNK
    else:
        assert found == {}


class _Unseekable(io.RawIOBase):
    """Makes zipfile write data descriptors (it cannot seek back to the local header)."""

    def __init__(self, f):
        self.f = f

    def writable(self):
        return True

    def write(self, b):
        return self.f.write(b)


def test_entries_kept(tmp_path):
    """Comments, timestamps, attributes, a directory entry, CP437 and UTF-8 names, data
    descriptors, and a method other than stored or deflated (copied as it is)."""
    src, dst = tmp_path / "in.zip", tmp_path / "out.zip"
    payload = np.arange(100_000, dtype=np.int32).tobytes()
    with open(src, "wb") as f, zipfile.ZipFile(_Unseekable(f), "w") as zf:
        zf.comment = b"archive comment"
        d = zipfile.ZipInfo("dir/", date_time=(2001, 2, 3, 4, 5, 6))
        d.external_attr = (0o40755 << 16) | 0x10
        zf.writestr(d, b"")
        for i, (name, method) in enumerate([("dir/a.bin", 8), ("caf\u00e9.bin", 8),
                                            ("b.bin", 0), ("c.bz2", 12)]):
            info = zipfile.ZipInfo(name, date_time=(2010 + i, 12, 31, 23, 59, 58))
            info.compress_type = method
            info.comment = f"comment {i}".encode()
            info.external_attr = (0o100640 + i) << 16
            zf.writestr(info, payload[i:])
    assert any(i.flag_bits & 8 for i in S.zip_infos(src))
    optimize(src, dst, f"--chunk-size={CHUNK}")
    assert_same_entries(src, dst)
    assert set(check_archive(dst)) == {"dir/a.bin", "caf\u00e9.bin"}
    assert not any(i.flag_bits & 8 for i in S.zip_infos(dst))


def test_threads_do_not_change_the_output(tmp_path):
    src = tmp_path / "in.npz"
    np.savez_compressed(src, **bench_like(300_000))
    outs = []
    for i, opts in enumerate([["--threads=1"], ["-o", "threads=3"], []]):
        out = tmp_path / f"out{i}.npz"
        optimize(src, out, f"--chunk-size={CHUNK}", *opts)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1] == outs[2]


def _central_zip64(path, name):
    """Rewrites member name's central entry with saturated sizes and a ZIP64 field holding
    them, as writers do for members past 4 GiB."""
    data = bytearray(path.read_bytes())
    e = S.find_entry(S.zip_layout(bytes(data)), name)
    h = Z.CENTRAL.unpack(data, e.cd_off)
    at = e.cd_off + Z.CENTRAL.size + h.name_len + h.extra_len
    z64 = Z.zip64_extra(e.usize, e.csize)
    Z.CENTRAL.patch(data, e.cd_off, csize=Z.U32, usize=Z.U32, extra_len=h.extra_len + len(z64))
    data[at:at] = z64
    eocd = Z.find_end_record(data)
    assert eocd == len(data) - Z.EOCD.size
    Z.EOCD.patch(data, eocd, cd_size=Z.EOCD.unpack(data, eocd).cd_size + len(z64))
    path.write_bytes(bytes(data))


def test_zip64_input(tmp_path):
    """ZIP64 fields in the input: numpy writes them in local headers; the central ones are
    patched in. The output has them nowhere, since no value needs them."""
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez_compressed(src, a=np.arange(200_000), b=np.ones(10))
    first = S.zip_layout(src.read_bytes())[0]
    assert Z.zip64_values(Z.local_at(src.read_bytes(), first.local_off).extra) is not None, \
        "numpy wrote no local ZIP64 field"
    _central_zip64(src, "a.npy")
    assert zipfile.ZipFile(src).getinfo("a.npy").file_size == 200_000 * 8 + 128
    optimize(src, dst, f"--chunk-size={CHUNK}")
    assert_same_arrays(src, dst)
    assert_same_entries(src, dst)
    assert set(check_archive(dst)) == {"a.npy"}
    data = dst.read_bytes()
    for e in S.zip_layout(data):
        assert Z.zip64_values(e.extra) is None, "ZIP64 kept"
        assert Z.LOCAL.unpack(data, e.local_off).extra_len == 0, \
            "the local ZIP64 field is not needed"


def _write_many_empty(path, n):
    """A ZIP of n empty stored members, written directly: zipfile takes seconds for 70,000."""
    local, central = bytearray(), bytearray()
    for i in range(n):
        name = f"d{i % 7}/m{i}".encode()
        central += Z.central_header(name, date=0x21, offset=len(local))
        local += Z.local_header(name, date=0x21)
    end64 = Z.zip64_end_record(on_disk=n, total=n, cd_size=len(central), cd_offset=len(local))
    locator = Z.zip64_locator(len(local) + len(central))
    end = Z.end_record(on_disk=Z.U16, total=Z.U16, cd_size=len(central), cd_offset=len(local))
    path.write_bytes(bytes(local + central) + end64 + locator + end)


def test_many_members(tmp_path):
    """More than 65,535 members: the output needs the ZIP64 end records."""
    src, dst = tmp_path / "in.zip", tmp_path / "out.zip"
    n = 70_000
    _write_many_empty(src, n)
    optimize(src, dst)
    data = dst.read_bytes()
    eocd = Z.find_end_record(data)
    assert Z.LOC64.unpack(data, eocd - Z.LOC64.size).sig == Z.SIG_LOC64, "no ZIP64 end locator"
    assert Z.EOCD.unpack(data, eocd).total == Z.U16
    with zipfile.ZipFile(dst) as zb:
        ib = zb.infolist()
        assert [i.filename for i in ib] == [f"d{i % 7}/m{i}" for i in range(n)]
        assert {i.date_time for i in ib} == {(1980, 1, 1, 0, 0, 0)}
        for i in range(0, n, 997):
            assert zb.read(ib[i]) == b""


def test_bad_input(tmp_path):
    cases = {}
    (tmp_path / "text.npz").write_bytes(b"not a zip at all" * 10)
    cases["text.npz"] = "not a ZIP"
    cases["missing.npz"] = "No such file"
    bad = tmp_path / "crc.npz"
    np.savez_compressed(bad, a=np.arange(100_000))
    S.set_central_crc(bad, "a.npy", 0x12345678)
    cases["crc.npz"] = "CRC"
    corrupt = tmp_path / "corrupt.npz"
    np.savez_compressed(corrupt, a=np.arange(100_000))
    S.corrupt_member_data(corrupt, "a.npy")
    cases["corrupt.npz"] = "a.npy"
    before = sorted(os.listdir(tmp_path))
    for name, words in cases.items():
        r = S.run_npzmount(["--optimize", tmp_path / name, tmp_path / "out.npz"], timeout=60)
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and name in lines[0], r
        no_leftovers(tmp_path, before)


def test_bad_output(tmp_path):
    src = tmp_path / "in.npz"
    np.savez_compressed(src, a=np.arange(100_000))
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "keep").write_bytes(b"")
    for out, words in [(tmp_path / "nodir" / "out.npz", "No such file"),
                       (tmp_path / "adir", "directory")]:
        r = S.run_npzmount(["--optimize", src, out], timeout=60)
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and str(out) in lines[0], r
        no_leftovers(tmp_path, ["in.npz", "adir"])
        no_leftovers(tmp_path / "adir", ["keep"])


@pytest.mark.parametrize("args", [[], ["only.npz"], ["a", "b", "c"], ["--chunk-size=1k", "a", "b"],
                                  ["--chunk-size=9x", "a", "b"], ["--threads=0", "a", "b"],
                                  ["--bogus", "a", "b"]])
def test_usage_errors(tmp_path, args):
    r = S.run_npzmount(["--optimize", *args], timeout=20, cwd=tmp_path)
    assert r.returncode == 2, r
    assert len(r.stderr.strip().splitlines()) == 1, r
    assert os.listdir(tmp_path) == []


def test_interrupted(tmp_path):
    """SIGINT while writing: exit 1, one line, and the temporary file is gone."""
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez(src, a=np.random.default_rng(3).standard_normal(2 << 20))
    proc = subprocess.Popen([S.BIN, "--optimize", "--compress", "--threads=1", "--chunk-size=4k",
                             src, dst],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while len(os.listdir(tmp_path)) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.001)  # polling for the file, not synchronising by time
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0:
        pytest.skip("the rewrite finished before the signal arrived")
    assert proc.returncode == 1, err
    assert err.decode().strip().endswith("interrupted"), err
    no_leftovers(tmp_path, ["in.npz"])


def test_list_says_which_members_are_seek_optimized(tmp_path):
    src, dst = tmp_path / "in.npz", tmp_path / "out.npz"
    np.savez_compressed(src, **bench_like())
    optimize(src, dst, "--chunk-size=64k")
    r = S.run_npzmount(["--list", "--json", dst], timeout=60)
    assert r.returncode == 0, r
    rows = {row["path"]: row for row in json.loads(r.stdout)}
    indexed = check_archive(dst)  # the independent reader says which members carry an index
    with zipfile.ZipFile(dst) as zf:
        for info in zf.infolist():
            want = CHUNK if info.filename in indexed else None
            assert rows[info.filename]["sozip_chunk"] == want, info.filename
    assert any(row["sozip_chunk"] for row in rows.values())
    r = S.run_npzmount(["--list", "--json", src], timeout=60)
    assert all(row["sozip_chunk"] is None for row in json.loads(r.stdout))
