"""What npzmount says about members besides their bytes (issue 8): the user.npy.* and
user.zip.* extended attributes, user.npzmount.error, `npzmount --list [--json]`, names of 250
to 255 bytes, and the layering of the adapter over the core.

Every expected value comes from an independent reference: numpy's own header parser
(np.lib.format), np.load's NpzFile, Python's zipfile, and the naming model in npz_support.
"""

import errno
import io
import json
import os
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

import npz_support as S

REPO = Path(__file__).resolve().parents[2]
METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated",
           zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}
NPY_ATTRS = {"user.npy.dtype", "user.npy.shape", "user.npy.fortran_order", "user.npy.version",
             "user.npy.header_len", "user.npy.key"}
ZIP_ATTRS = {"user.zip.name", "user.zip.method", "user.zip.compressed_size", "user.zip.crc32",
             "user.zip.offset"}


def arrays():
    """One array of each kind the issue names."""
    rng = np.random.default_rng(8)
    return {
        "c_order": rng.random((100, 3)),
        "f_order": np.asfortranarray(rng.integers(0, 9, (7, 5), dtype=np.int32)),
        "big_endian": np.arange(11, dtype=">u2"),
        "zero_d": np.float32(2.5) * np.ones((), np.float32),
        "empty": np.zeros((0, 4), dtype="<U7"),
        "structured": np.zeros(4, dtype=[("a", "<i4"), ("b", ">f8", (2,)), ("c", "S3")]),
        "padded": np.zeros(2, dtype=np.dtype({"names": ["x"], "formats": ["<i2"],
                                              "offsets": [4], "itemsize": 8})),
        "objects": np.array([1, "two", None, [3]], dtype=object),
        "complex_f": np.asfortranarray(np.ones((2, 3), dtype=np.complex128)),
        "grp/nested": np.arange(5, dtype=np.int8),
    }


def npy_v2(arr):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, version=(2, 0))
    return buf.getvalue()


def write_archive(path, compression):
    members = [(k + ".npy", S.npy_bytes(v)) for k, v in arrays().items()]
    members += [("v2.npy", npy_v2(np.arange(6.0).reshape(2, 3))),
                ("notes.txt", b"not an array"), ("fake.npy", b"\x93NUMPY\x01\x00\xff\xff{")]
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def numpy_header(data):
    """What numpy's own reader makes of the header at the start of data: the expected
    user.npy.* values, or None when numpy refuses it."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read(f)
    except (ValueError, OSError, SyntaxError):
        return None
    hlen = struct.unpack_from("<H" if version == (1, 0) else "<I", data, 8)[0]
    descr = np.lib.format.dtype_to_descr(dtype)
    return {"user.npy.dtype": dtype.str if isinstance(descr, str) else repr(descr),
            "user.npy.shape": repr(shape), "user.npy.fortran_order": repr(fortran),
            "user.npy.version": "%d.%d" % version, "user.npy.header_len": str(hlen)}


def expected_xattrs(archive):
    """name -> {attribute: value (str)} from zipfile, numpy's NpzFile and np.lib.format."""
    with np.load(archive, allow_pickle=False) as npz:
        keys = list(npz.files)
    out = {}
    with zipfile.ZipFile(archive) as zf:
        for info, key in zip(zf.infolist(), keys):
            want = {"user.zip.name": info.filename, "user.zip.method": METHODS[info.compress_type],
                    "user.zip.compressed_size": str(info.compress_size),
                    "user.zip.crc32": "%08x" % info.CRC,
                    "user.zip.offset": str(info.header_offset)}
            hdr = numpy_header(zf.read(info))
            if hdr:
                want.update(hdr, **{"user.npy.key": key})
            out[info.filename] = want
    return out


def xattrs(path):
    names = os.listxattr(path)
    assert len(names) == len(set(names))
    return {n: os.getxattr(path, n).decode() for n in names}


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_xattrs_equal_numpys_header_parse(tmp_path, mount, compression):
    arc = write_archive(tmp_path / "a.npz", compression)
    want = expected_xattrs(arc)
    assert sum(NPY_ATTRS <= set(w) for w in want.values()) == len(arrays()) + 1  # not fake.npy
    with mount(arc) as mnt:
        for name, w in want.items():
            got = xattrs(mnt / name)
            assert {k: v for k, v in got.items() if not k.startswith("user.npzmount.")} == w, name
            for attr, value in w.items():  # the same values by name, without listing first
                assert os.getxattr(mnt / name, attr).decode() == value
            assert "user.npzmount.error" not in got
            if compression == zipfile.ZIP_DEFLATED:
                assert {"user.npzmount.checkpoints", "user.npzmount.index_bytes",
                        "user.npzmount.complete"} <= set(got)
            else:
                assert not any(k.startswith("user.npzmount.") for k in got)
        with pytest.raises(OSError) as e:
            os.getxattr(mnt / "notes.txt", "user.npy.dtype")
        assert e.value.errno == errno.ENODATA
        assert os.listxattr(mnt / "grp") == []  # a directory the archive has no entry for
        if shutil.which("getfattr"):  # attr package: not always installed
            out = subprocess.run(["getfattr", "-d", "--absolute-names",
                                  str(mnt / "c_order.npy")], capture_output=True, text=True)
            assert 'user.npy.dtype="<f8"' in out.stdout


def list_json(archive, *extra):
    r = S.run_npzmount(["--list", "--json", *extra, str(archive)])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_list_json_against_zipfile_and_numpy(tmp_path, mount):
    arc = write_archive(tmp_path / "a.npz", zipfile.ZIP_DEFLATED)
    rows = list_json(arc)
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    with np.load(arc, allow_pickle=False) as npz:
        keys = list(npz.files)
    with zipfile.ZipFile(arc) as zf:
        infos = zf.infolist()
        assert len(rows) == len(infos)
        tree = S.expected_tree(infos)
        paths = {v.index: p for p, v in tree.items() if v.index is not None}
        for i, (row, info, key) in enumerate(zip(rows, infos, keys)):
            assert set(row) == {"key", "path", "size", "compressed_size", "method", "crc32",
                                "sozip_chunk", "offset", "dtype", "shape", "fortran_order", "npy_version",
                                "header_len"}
            assert row["key"] == key
            assert row["path"] == paths[i]
            assert (row["size"], row["compressed_size"], row["crc32"], row["offset"]) == \
                (info.file_size, info.compress_size, info.CRC, info.header_offset)
            assert row["method"] == METHODS[info.compress_type]
            hdr = numpy_header(zf.read(info))
            if hdr is None:
                assert [row[k] for k in ("dtype", "shape", "fortran_order", "npy_version",
                                         "header_len")] == [None] * 5
                continue
            assert row["dtype"] == hdr["user.npy.dtype"]
            assert repr(tuple(row["shape"])) == hdr["user.npy.shape"]
            assert all(isinstance(n, int) for n in row["shape"])
            assert repr(row["fortran_order"]) == hdr["user.npy.fortran_order"]
            assert row["npy_version"] == hdr["user.npy.version"]
            assert str(row["header_len"]) == hdr["user.npy.header_len"]
    with mount(arc) as mnt:  # each path holds its member
        with zipfile.ZipFile(arc) as zf:
            for row, info in zip(rows, infos):
                assert S.read_file(mnt / row["path"]) == zf.read(info)


def test_list_table_and_failures(tmp_path):
    arc = write_archive(tmp_path / "a.npz", zipfile.ZIP_STORED)
    r = S.run_npzmount(["--list", str(arc)])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["KEY", "PATH", "SIZE", "CSIZE", "METHOD", "DTYPE", "SHAPE",
                                "ORDER"]
    rows = {ln.split()[0]: ln.split() for ln in lines[1:]}
    assert rows["f_order"][1:] == ["f_order.npy", str(len(S.npy_bytes(arrays()["f_order"]))),
                                   str(len(S.npy_bytes(arrays()["f_order"]))), "stored", "<i4",
                                   "(7,", "5)", "F"]
    assert rows["notes.txt"][-3:] == ["-", "-", "-"]
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x05\x06 this is not an archive")
    for args in (["--list", str(bad)], ["--list", "--json", str(bad)],
                 ["--list", str(tmp_path / "missing.npz")]):
        r = S.run_npzmount(args)
        assert r.returncode != 0 and r.stdout == ""
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert S.run_npzmount(["--list"]).returncode == 2
    assert S.run_npzmount(["--json", str(arc)]).returncode == 2


def test_list_json_of_odd_names(tmp_path):
    """Names that are not valid UTF-8, or hold quotes and control bytes, still give JSON that
    parses, with paths as os.fsdecode would spell them."""
    arc = S.write_zip(tmp_path / "odd.zip", [("aéb.npy", b"1"), ('q"\\\n.npy', b"2")])
    S.rename_member_bytes(arc, "aéb.npy".encode(), b"a\xff\xfeb.npy")  # UTF-8 flag kept
    rows = list_json(arc)
    assert [r["path"] for r in rows] == [os.fsdecode(b"a\xff\xfeb.npy"), 'q"\\\n.npy']
    assert [r["key"] for r in rows] == [os.fsdecode(b"a\xff\xfeb"), 'q"\\\n']


def test_error_xattr_on_corrupt_and_unsupported(tmp_path, mount):
    rng = np.random.default_rng(3)
    big = rng.integers(0, 4, 400_000, dtype=np.uint8)  # compressible, several deflate blocks
    arc = tmp_path / "bad.npz"
    with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in ("corrupt.npy", "odd.npy", "fine.npy"):
            zf.writestr(name, S.npy_bytes(big))
    S.corrupt_member_data(arc, "corrupt.npy", fraction=0.6)
    S.set_flags_and_method(arc, "odd.npy", method=77)  # a method nobody implements
    with mount(arc, "-o", "noprefetch") as mnt:
        assert "user.npzmount.error" not in os.listxattr(mnt / "corrupt.npy")
        assert S.read_errno(mnt / "corrupt.npy") == S.EIO
        why = os.getxattr(mnt / "corrupt.npy", "user.npzmount.error").decode()
        assert why and "\n" not in why
        assert "user.npzmount.error" in os.listxattr(mnt / "corrupt.npy")
        # the header lies before the damage: still numpy's
        assert os.getxattr(mnt / "corrupt.npy", "user.npy.shape") == b"(400000,)"
        odd = os.listxattr(mnt / "odd.npy")
        assert "user.npzmount.error" in odd and not NPY_ATTRS & set(odd)
        assert os.getxattr(mnt / "odd.npy", "user.zip.method") == b"77"
        assert os.getxattr(mnt / "odd.npy", "user.npzmount.error")
        assert "user.npzmount.error" not in os.listxattr(mnt / "fine.npy")


def long_names():
    """Names of 250 to 255 bytes, with and without .npy, each twice; and one of 300."""
    names = []
    for i, n in enumerate(range(250, 256)):
        names += [chr(ord("a") + i) * (n - 4) + ".npy", chr(ord("m") + i) * n]
    return names + ["z" * 296 + ".npy"]


def test_names_of_250_to_255_bytes(tmp_path, mount):
    names = long_names()
    members = [(n, S.npy_bytes(np.full(3, i, np.int16))) for i, n in enumerate(names)]
    members += [(n, S.npy_bytes(np.full(2, -i, np.int16))) for i, n in enumerate(names)]
    arc = S.write_zip(tmp_path / "long.npz", members)
    want = {}
    for i, n in enumerate(names):
        want[n if len(n) <= 255 else "z" * 251 + ".npy"] = members[len(names) + i][1]
        stem, ext = (n[:-4], ".npy") if n.endswith(".npy") else (n, "")
        want[stem[:255 - 2 - len(ext)] + "~1" + ext] = members[i][1]
    assert all(len(p.encode()) <= 255 for p in want)
    rows = list_json(arc)
    with np.load(arc) as npz:
        assert [r["key"] for r in rows] == list(npz.files)
    assert {r["path"] for r in rows} == set(want)
    with mount(arc) as mnt:
        assert sorted(os.listdir(mnt)) == sorted(want)
        for p, data in want.items():
            assert S.read_file(mnt / p) == data
        for r in rows:
            assert os.getxattr(mnt / r["path"], "user.npy.key").decode() == r["key"]


def test_adapter_uses_the_core_api_only():
    """fuse_ops.c and main.c see the core through npz.h alone (issue 8's seam); npz.h itself
    shows neither the member table nor the tree nor the readers, so the adapter cannot reach
    them even through it."""
    for name in ("fuse_ops.c", "fuse_ops.h", "main.c"):
        text = (REPO / "src" / name).read_text()
        for header in ("zipdir.h", "namespace.h", "npz_core.h", "reader.h"):
            assert f'#include "{header}"' not in text, (name, header)
        assert not re.search(r"\b(zip_member|zip_archive|ns_node|npz_zip|npz_ns|ns_get|"
                             r"ns_lookup|ns_child)\b", text), name
    for name in ("npz.h", "listing.h", "sched.h", "stop.h"):
        text = (REPO / "src" / name).read_text()
        assert not re.findall(r'#include "(zipdir|namespace|reader|npz_core)\.h"', text), name
