"""The Python helper package (python/npzmount): mounted() always unmounts (body raising,
SIGINT, busy memory maps), info() lists what zipfile and numpy see, savez_compressed() writes
what np.savez_compressed writes plus a valid SOZip index, and make install/uninstall put it
where Debian's python3 finds it and take it away again."""

import io
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import warnings
import zipfile

import numpy as np
import pytest

import npz_support as S
from sozip_check import check_sozip

sys.path.insert(0, str(S.REPO / "python"))
import npzmount  # noqa: E402

PYTHON = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def _environment(tmp_path, monkeypatch):
    """The package finds the binary under test through $NPZMOUNT, and mounts under this
    test's directory, which the session's cleanup covers should a test go wrong."""
    monkeypatch.setenv("NPZMOUNT", S.BIN)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(8)
    return {"x": np.arange(100_000, dtype=np.int64), "y": rng.standard_normal((30, 7)),
            "sub/z": np.asfortranarray(np.arange(12, dtype=np.int16).reshape(3, 4))}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("py") / "a.npz"
    np.savez(path, **arrays)
    return path


def daemon_of(mp):
    pids = S.find_daemons(mp)
    assert len(pids) == 1, f"npzmount daemons for {mp}: {pids}"
    return pids[0]


def assert_gone(mp, pid):
    """Nothing mounted at mp, mp removed, the daemon exited."""
    assert not S.is_mountpoint(mp), f"{mp} is still mounted"
    assert not os.path.exists(mp), f"{mp} was not removed"
    assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT), f"daemon {pid} did not exit"


def test_mounted_serves_and_unmounts(archive, arrays):
    with npzmount.mounted(archive, cache="64M", noprefetch=True) as d:
        pid = daemon_of(d)
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"cache=64M" in argv and b"noprefetch" in argv, argv
        S.run_in_child(S.check_mmap_equal, d / "x.npy", arrays["x"])
        assert np.array_equal(np.load(d / "sub" / "z.npy"), arrays["sub/z"])
    assert_gone(d, pid)


def test_mounted_unmounts_when_body_raises(archive):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with npzmount.mounted(archive) as d:
            pid = daemon_of(d)
            raise Boom
    assert_gone(d, pid)


def test_mounted_failure_says_why_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip archive at all" * 10)
    with pytest.raises(npzmount.NpzmountError, match=r"\S"):
        with npzmount.mounted(bad):
            pytest.fail("mounted a file that is not an archive")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("npzmount-")]


CHILD = """
import sys, signal
sys.path.insert(0, sys.argv[1])
import npzmount
with npzmount.mounted(sys.argv[2]) as d:
    print(d, flush=True)
    signal.pause()
"""


def test_mounted_unmounts_on_sigint(archive, tmp_path):
    # A session of its own, signalled as a whole: what Ctrl-C in a terminal does.
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.Popen([PYTHON, "-c", CHILD, str(S.REPO / "python"), str(archive)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    mp = None
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(S.MOUNT_TIMEOUT), "the child did not report its mount"
        line = proc.stdout.readline().decode().strip()
        assert line, proc.stderr.read().decode()
        mp = line
        assert S.is_mountpoint(mp)
        pid = daemon_of(mp)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=S.MOUNT_TIMEOUT)
        assert b"KeyboardInterrupt" in err, err
        assert_gone(mp, pid)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if mp and S.is_mountpoint(mp):
            S.force_unmount(mp)


def test_mounted_busy_at_exit_warns_and_detaches_lazily(archive, arrays):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with npzmount.mounted(archive) as d:
            pid = daemon_of(d)
            kept = np.load(d / "x.npy", mmap_mode="r")
    assert any("lazily" in str(w.message) for w in caught), [str(w.message) for w in caught]
    assert not S.is_mountpoint(d) and not os.path.exists(d)
    # The detached mount still serves the memory map; the daemon waits for it to go.
    S.run_in_child(lambda: np.testing.assert_array_equal(kept, arrays["x"]))
    assert S.pid_alive(pid), "the daemon quit while a memory map still used it"
    del kept
    assert S.wait_exit(pid, S.DAEMON_EXIT_TIMEOUT), f"daemon {pid} outlived the last map"


def test_ctrl_c_is_held_back_while_mounting_or_unmounting():
    """The deferral that keeps Ctrl-C from splitting a mount or an unmount in two: held
    back to the end of the block, unless pressed twice."""
    from npzmount._mount import _sigint_deferred

    done = []
    with pytest.raises(KeyboardInterrupt):
        with _sigint_deferred():
            signal.raise_signal(signal.SIGINT)  # runs the Python handler before returning
            done.append("finished")
    assert done == ["finished"]
    with pytest.raises(KeyboardInterrupt):
        with _sigint_deferred():
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
            done.append("not reached")
    assert done == ["finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# How --list names ZIP methods (zipfile's constants are the numbers from the ZIP format).
METHOD_NAMES = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflated",
                zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "lzma"}


def _has_list_json():
    out = subprocess.run([S.BIN, "--help"], capture_output=True, text=True)
    return "--list" in out.stdout + out.stderr


def test_info_matches_zipfile_and_numpy(archive):
    if not _has_list_json():
        pytest.skip("this npzmount has no --list --json yet")
    rows = npzmount.info(archive)
    with zipfile.ZipFile(archive) as zf:
        infos = {i.filename: i for i in zf.infolist()}
        assert len(rows) == len(infos)
        for row in rows:
            name = row["key"] if row["key"] in infos else row["key"] + ".npy"
            zi = infos[name]
            assert (row["size"], row["compressed_size"], row["crc32"]) == \
                (zi.file_size, zi.compress_size, zi.CRC), row
            assert row["method"] == METHOD_NAMES[zi.compress_type], row
            with zf.open(name) as f:
                version = np.lib.format.read_magic(f)
                shape, fortran, dtype = np.lib.format._read_array_header(f, version)
                end = f.tell()
            assert np.dtype(row["dtype"]) == dtype, row
            assert list(row["shape"]) == list(shape) and row["fortran_order"] == fortran, row
            # The header's length with or without the magic and length field before it.
            assert row["header_len"] in (end, end - (10 if version[0] == 1 else 12)), row
            v = row["npy_version"]
            assert v in (list(version), version[0], "%d.%d" % version), row


def test_info_of_a_non_archive_fails(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"\0" * 100)
    with pytest.raises(npzmount.NpzmountError):
        npzmount.info(bad)


# --------------------------------------------------------------------------------------------
# savez_compressed

CHUNK = 4096


def writer_inputs():
    """Arrays around the chunk size (an .npy header is 128 bytes here), of several kinds."""
    rng = np.random.default_rng(12)
    item = 8
    around = {f"n{n}": np.arange(n // item, dtype=np.int64)
              for n in (CHUNK - 128, CHUNK - 120, 3 * CHUNK - 128, 3 * CHUNK - 120)}
    args = (np.linspace(0, 1, 5000), np.array(3.5))
    kwds = {"big": rng.integers(0, 50, size=(300, 257)).astype(np.float32),
            "grp/f": np.asfortranarray(rng.standard_normal((64, 33))),
            "rec": np.zeros(700, dtype=S.STRUCT_DTYPE), "empty": np.zeros((0, 3)),
            "obj": np.array([{"a": 1}, [2, 3], "x"], dtype=object), "ünï": np.arange(9),
            **around}
    return args, kwds


def assert_same_members(ours, theirs):
    """The same member names in the same order, with the same bytes; CRCs check out."""
    with zipfile.ZipFile(ours) as a, zipfile.ZipFile(theirs) as b:
        assert a.namelist() == b.namelist()
        assert a.testzip() is None
        for name in a.namelist():
            assert a.read(name) == b.read(name), name


def assert_same_npz(ours, theirs):
    """ours and theirs: paths or file objects at the start of the archive."""
    assert_same_members(ours, theirs)
    for f in (ours, theirs):
        if hasattr(f, "seek"):
            f.seek(0)  # where np.load looks for the ZIP signature
    with np.load(ours, allow_pickle=True) as a, np.load(theirs, allow_pickle=True) as b:
        assert a.files == b.files
        for key in a.files:
            x, y = a[key], b[key]
            assert x.dtype == y.dtype and x.shape == y.shape, key
            assert x.flags.f_contiguous == y.flags.f_contiguous, key
            if x.dtype.hasobject:
                assert x.tolist() == y.tolist(), key
            else:
                assert x.tobytes(order="A") == y.tobytes(order="A"), key


def test_savez_compressed_equals_numpy_and_is_sozip(tmp_path):
    args, kwds = writer_inputs()
    ours, theirs = tmp_path / "ours", tmp_path / "theirs.npz"
    npzmount.savez_compressed(str(ours), *args, chunk_size=CHUNK, **kwds)
    np.savez_compressed(theirs, *args, **kwds)
    ours = tmp_path / "ours.npz"  # appended, as numpy does
    assert_same_npz(ours, theirs)
    indexed = check_sozip(ours.read_bytes(), CHUNK)
    with zipfile.ZipFile(ours) as zf:
        sizes = {i.filename: i.file_size for i in zf.infolist()}
    assert set(indexed) == {n for n, s in sizes.items() if s > CHUNK}
    assert sizes["n3968.npy"] == CHUNK and sizes["n12160.npy"] == 3 * CHUNK
    assert indexed["big.npy"] == -(-sizes["big.npy"] // CHUNK) > 50
    assert indexed["n12160.npy"] == 3


class WriteOnly:
    """A file object that can only write (a pipe, a socket): no seek, no tell."""

    def __init__(self):
        self.buf = bytearray()

    def write(self, data):
        self.buf += data
        return len(data)


def test_savez_compressed_to_file_objects(tmp_path):
    a, b = np.arange(50_000), np.eye(4)
    buf = io.BytesIO()
    np.savez_compressed(buf, a, b=b)
    theirs = buf.getvalue()
    prefix = b"prepended bytes"
    seekable = io.BytesIO()
    seekable.write(prefix)
    npzmount.savez_compressed(seekable, a, b=b)
    stream = WriteOnly()
    npzmount.savez_compressed(stream, a, b=b)
    # Offsets count from the start of the file, as zipfile's do; np.load wants no prefix.
    assert seekable.getvalue().startswith(prefix)
    assert_same_members(seekable, io.BytesIO(theirs))
    assert_same_npz(io.BytesIO(bytes(stream.buf)), io.BytesIO(theirs))
    check_sozip(bytes(stream.buf), npzmount.DEFAULT_CHUNK_SIZE)
    with pytest.raises(ValueError, match="arr_0"):
        npzmount.savez_compressed(io.BytesIO(), a, arr_0=b)


def test_savez_compressed_zip64_offsets(tmp_path):
    """Members past 2 GiB (a sparse file) need ZIP64 offsets in the central directory and
    the ZIP64 end records, as zipfile writes them."""
    a, b = np.arange(40_000), np.ones(7)
    path = tmp_path / "far.zip"
    start = 3 << 30
    with open(path, "wb") as f:
        f.truncate(start)
        f.seek(start)
        npzmount.savez_compressed(f, a, b=b)
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist() == ["b.npy", "arr_0.npy"]
        assert zf.infolist()[0].header_offset == start
        assert zf.testzip() is None
        assert zf.read("arr_0.npy") == S.npy_bytes(a) and zf.read("b.npy") == S.npy_bytes(b)
    with open(path, "rb") as f:
        f.seek(-S.Z.EOCD.size - S.Z.LOC64.size, os.SEEK_END)
        loc = S.Z.LOC64.unpack(f.read(S.Z.LOC64.size))
        assert loc.sig == S.Z.SIG_LOC64, "no ZIP64 end locator"
        f.seek(loc.offset)
        assert S.Z.EOCD64.unpack(f.read(S.Z.EOCD64.size)).sig == S.Z.SIG_EOCD64, \
            "no ZIP64 end record where the locator says"
    path.unlink()


def test_savez_compressed_output_mounts(tmp_path, mount):
    rng = np.random.default_rng(5)
    want = rng.integers(0, 9, size=(500, 300)).astype(np.float64)
    path = tmp_path / "s.npz"
    npzmount.savez_compressed(path, w=want, v=np.arange(10), chunk_size=64 << 10)
    with mount(path) as mnt:
        assert sorted(os.listdir(mnt)) == ["v.npy", "w.npy"]
        S.run_in_child(S.check_mmap_equal, mnt / "w.npy", want)


# --------------------------------------------------------------------------------------------
# install


def makefile_variable(name):
    text = (S.REPO / "Makefile").read_text()
    return re.search(rf"^{name}\s*:?=\s*(\S+)", text, re.M).group(1)


def test_version_matches_makefile():
    assert npzmount.__version__ == makefile_variable("VERSION")


def test_make_install_and_uninstall(tmp_path):
    dest = tmp_path / "dest"
    run = dict(cwd=S.REPO, capture_output=True, text=True)
    res = subprocess.run(["make", "-s", "install", f"DESTDIR={dest}"], **run)
    assert res.returncode == 0, res.stderr
    inits = list(dest.rglob("npzmount/__init__.py"))
    assert len(inits) == 1, inits
    pkg = inits[0].parent
    site = "/" + str(pkg.parent.relative_to(dest))
    # Where Debian's python3 looks (PREFIX=/usr/local), without help from the environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    path = json.loads(subprocess.run([PYTHON, "-c", "import sys, json; print(json.dumps("
                                      "sys.path))"], env=env, capture_output=True,
                                     text=True, check=True).stdout)
    assert site in path, (site, path)
    sources = sorted(p.name for p in (S.REPO / "python" / "npzmount").glob("*.py"))
    assert sorted(p.name for p in pkg.glob("*.py")) == sources
    probe = subprocess.run([PYTHON, "-c", "import npzmount; print(npzmount.__file__, "
                            "callable(npzmount.mounted), callable(npzmount.info), "
                            "callable(npzmount.savez_compressed))"],
                           env=dict(env, PYTHONPATH=str(pkg.parent)), capture_output=True,
                           text=True)
    assert probe.stdout.split() == [str(pkg / "__init__.py"), "True", "True", "True"], probe
    assert (pkg / "__pycache__").is_dir()  # as an import by root leaves behind
    res = subprocess.run(["make", "-s", "uninstall", f"DESTDIR={dest}"], **run)
    assert res.returncode == 0, res.stderr
    assert not pkg.exists()
    assert not [p for p in dest.rglob("*") if p.is_file()], list(dest.rglob("*"))
