"""Mounting remote archives: `npzmount http://127.0.0.1:PORT/x.npz MP` against a real nginx and
`npzmount s3://bkt/x.npz MP` against s3rver. Members equal zipfile, np.load(mmap_mode='r')
random reads equal numpy's, and with a saved index (a sidecar next to the object) one random
read fetches about one span of compressed data, counted from nginx's access log. (A changed
object, and local indexes serving remote mounts: test_remote_index.py.)"""

import errno
import os
import random
import subprocess
import time
import zipfile

import numpy as np
import pytest

import npz_support as S
import remote_support as R

BLOCK = 64 << 10
SPAN = 256 << 10


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.default_rng(21)
    return {"f": rng.standard_normal(1_500_000).astype(np.float32),
            "i": np.arange(1_000_000, dtype=np.int64),
            "s": rng.integers(0, 255, 300_000, dtype=np.uint8)}


@pytest.fixture(scope="module")
def served(tmp_path_factory, arrays):
    """nginx serving x.npz (two deflated members and a stored one) and its sidecar index."""
    d = tmp_path_factory.mktemp("remote_mount")
    root = d / "root"
    root.mkdir()
    path = root / "x.npz"
    np.savez_compressed(path, f=arrays["f"], i=arrays["i"])
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as z, z.open("s.npy", "w") as out:
        np.lib.format.write_array(out, arrays["s"])
    res = subprocess.run([S.BIN, "--index", "--sidecar", "-o",
                          f"index_dir={d / 'idx'},span={SPAN // 1024}k", str(path)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and (root / "x.npz.npzidx").is_file(), res.stderr
    with R.Nginx(root, d / "nginx") as nginx:
        yield nginx, path


def remote_opts(tmp_path, *extra):
    return ["-o", ",".join([f"block={BLOCK // 1024}k", "timeout=20",
                            f"index_dir={tmp_path / 'idx'}", *extra])]


def test_http_mount_equals_zipfile(served, mount, tmp_path):
    nginx, path = served
    with mount(nginx.url("x.npz"), *remote_opts(tmp_path)) as mnt:
        S.check_mount(mnt, S.Reference(path), mtimes=False)  # an object has no mtime


def test_stored_remote_archive_reads_synchronously(served, tmp_path, arrays):
    """A read may wait for the server: it must stay interruptible (test_lifecycle)."""
    nginx, path = served
    np.savez(path.parent / "stored.npz", s=arrays["s"])
    assert not S.async_read_granted(nginx.url("stored.npz"), tmp_path / "mnt",
                                  remote_opts(tmp_path))


def test_https_with_a_trusted_certificate(served, mount, tmp_path):
    """HTTPS: nginx with a self-signed certificate. Trusted through $CURL_CA_BUNDLE (as curl
    reads it) the mount equals zipfile; untrusted, the mount fails with one line that says so."""
    _, path = served
    with R.Nginx(path.parent, tmp_path / "tls", tls=True) as nginx:
        env = {k: v for k, v in os.environ.items() if k not in ("CURL_CA_BUNDLE", "SSL_CERT_FILE")}
        mp = tmp_path / "mp"
        mp.mkdir()
        res = S.run_npzmount(["-o", "timeout=5", nginx.url("x.npz"), mp], env=env, timeout=60)
        lines = res.stderr.strip().splitlines()
        assert res.returncode != 0 and len(lines) == 1 and "certificate" in lines[0], res
        assert not S.is_mountpoint(mp)
        env["CURL_CA_BUNDLE"] = str(nginx.cert)
        with mount(nginx.url("x.npz"), *remote_opts(tmp_path), env=env) as mnt:
            S.check_mount(mnt, S.Reference(path), mtimes=False)
    assert any(e["uri"] == "/x.npz" and e["status"] == 206 for e in nginx.log())


def test_http_mmap_random_reads_equal_numpy(served, mount, tmp_path, arrays):
    nginx, _ = served
    rng = random.Random(5)
    with mount(nginx.url("x.npz"), *remote_opts(tmp_path)) as mnt:
        for name, ref in arrays.items():
            a = np.load(mnt / f"{name}.npy", mmap_mode="r")
            idx = [rng.randrange(len(ref)) for _ in range(200)]
            assert np.array_equal(a[idx], ref[idx]), name
            del a


def test_saved_index_random_read_fetches_about_one_span(served, mount, tmp_path, arrays):
    nginx, path = served
    with zipfile.ZipFile(path) as z:
        csize = z.getinfo("f.npy").compress_size
    ref = arrays["f"].tobytes()
    at = len(ref) * 3 // 5 + 12345
    with mount(nginx.url("x.npz"), *remote_opts(tmp_path, "noprefetch")) as mnt:
        fd = os.open(mnt / "f.npy", os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            before = len(nginx.log())
            got = os.pread(fd, 4096, size - len(ref) + at)
        finally:
            os.close(fd)
    assert got == ref[at:at + 4096]
    # Counted once the daemon is gone: requests loaded ahead have ended by then too.
    fetched = [e for e in nginx.log()[before:] if e["uri"] == "/x.npz"]
    total = sum(e["bytes"] for e in fetched)
    # One span of compressed data, rounded out to blocks, plus a few blocks loaded ahead.
    assert total <= SPAN + 6 * BLOCK < csize // 4, (total, csize)
    assert len(fetched) <= SPAN // BLOCK + 6


@pytest.mark.parametrize("fault", ["500", "drop", "stall"])
def test_faults_between_daemon_and_server(served, mount, tmp_path, arrays, fault):
    """Faults injected between the mounted daemon and nginx (a Python proxy): one fault is
    retried cleanly; a lasting one reads EIO within the timeout; and the deflated member reads
    right again once the server answers (a failed read is not a failed member). The kernel
    sends up to three FUSE requests for one failing pread (readahead, then the page alone):
    after the first has run out the timeout, the others only probe the server (a tenth of
    the timeout, at least 250 ms: source_http.c), so the pread as a whole ends within the
    timeout and a little."""
    nginx, _ = served
    ref = arrays["f"].tobytes()
    # A stall is cut after timeout/3 s, at least 1 s; curl notices it up to a second late, so a
    # retry needs a timeout of 4 s to fit. (With less, one stall reads EIO: the man page.)
    timeout = 4 if fault == "stall" else 2
    with R.FaultProxy(nginx.port) as proxy, \
            mount(proxy.url("x.npz"), *remote_opts(tmp_path, "noindex", "noprefetch",
                                                   f"timeout={timeout}")) as mnt:
        fd = os.open(mnt / "f.npy", os.O_RDONLY)
        try:
            head = os.fstat(fd).st_size - len(ref)
            proxy.faults = [fault]  # the next request fails once, then all pass again
            at = len(ref) // 5 + 777
            assert os.pread(fd, 4096, head + at) == ref[at:at + 4096]
            proxy.always = fault
            at = len(ref) * 3 // 4 + 333  # not decoded yet: needs the server
            start = time.monotonic()
            with pytest.raises(OSError) as e:
                os.pread(fd, 4096, head + at)
            assert e.value.errno == errno.EIO
            probe = max(0.25, timeout / 10)  # source_http.c: a probe's deadline
            assert time.monotonic() - start < timeout + 2 * probe + 1.0  # and slack
            proxy.always = "pass"
            assert os.pread(fd, 4096, head + at) == ref[at:at + 4096]
        finally:
            os.close(fd)


def test_s3_mount_equals_zipfile(served, mount, tmp_path):
    _, path = served
    with R.S3rver(tmp_path / "s3") as store:
        store.make_bucket("bkt")
        store.put("bkt", "data/x.npz", path.read_bytes())
        env = dict(os.environ, AWS_ACCESS_KEY_ID="S3RVER", AWS_SECRET_ACCESS_KEY="S3RVER",
                   AWS_ENDPOINT_URL=store.endpoint)
        with mount("s3://bkt/data/x.npz", *remote_opts(tmp_path), env=env) as mnt:
            S.check_mount(mnt, S.Reference(path), mtimes=False)  # an object has no mtime
        for url, word in [("s3://bkt/data/missing.npz", "NoSuchKey"),
                          ("s3://nobucket/data/x.npz", "NoSuchBucket")]:
            (tmp_path / "mp").mkdir(exist_ok=True)
            res = S.run_npzmount(["-o", "timeout=5", url, tmp_path / "mp"], env=env,
                                 timeout=60)
            lines = res.stderr.strip().splitlines()
            assert res.returncode != 0 and len(lines) == 1 and word in lines[0], res
            assert "S3RVER" not in res.stderr
            assert not S.is_mountpoint(tmp_path / "mp")


def test_s3_forbidden_fails_the_mount_with_one_line(served, tmp_path):
    """A store that answers 403 (nginx, standing in as the endpoint, for /forbidden/) fails the
    mount with one line that carries the status and none of the credentials."""
    nginx, _ = served
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDEXAMPLE", AWS_SECRET_ACCESS_KEY="topsecret",
               AWS_ENDPOINT_URL=nginx.url("").rstrip("/"))
    mp = tmp_path / "mp"
    mp.mkdir()
    res = S.run_npzmount(["-o", "timeout=5", "s3://forbidden/x.npz", mp], env=env, timeout=60)
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1 and "403" in lines[0], res
    assert "topsecret" not in res.stderr and "AKIDEXAMPLE" not in res.stderr
    assert not S.is_mountpoint(mp)
