"""The remote source (src/source_http.c) read through build/remote_cat, against real servers on
loopback: nginx (bytes, requests and bytes per read from its access log, 403/404), a fault
proxy between the two (dropped connections, stalls, 500s; a rewritten file for a changed
object), and s3rver for s3:// URLs (bytes, missing key and bucket, the SigV4 signature checked
by an independent Python computation, since s3rver accepts any secret)."""

import errno
import hashlib
import hmac
import random
import time

import pytest

import remote_support as R

BLOCK = 65536
SIZE = 1_500_000
ESTALE = errno.ESTALE
EIO = errno.EIO


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    d = tmp_path_factory.mktemp("remote")
    root = d / "root"
    (root / "forbidden").mkdir(parents=True)
    data = random.Random(9).randbytes(SIZE)
    (root / "x.npz").write_bytes(data)
    (root / "small.npz").write_bytes(data[:1000])
    (root / "forbidden" / "x.npz").write_bytes(data[:1000])
    with R.Nginx(root, d / "nginx") as nginx:
        yield nginx, root, data


def new_entries(nginx, before):
    return nginx.log()[before:]


def random_ranges(rng, size, n, longest):
    out = []
    for _ in range(n):
        off = rng.randrange(size)
        out.append((off, min(rng.randrange(1, longest), size - off)))
    return out


def one_line(stderr):
    assert stderr.count("\n") == 1 and stderr.endswith("\n"), stderr
    return stderr


# ------------------------------------------------------------------------------------------
# HTTP through nginx


def test_whole_object_each_block_fetched_once(served):
    nginx, _, data = served
    before = len(nginx.log())
    r = R.remote_cat(nginx.url("x.npz"), options=["-b", str(BLOCK)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    entries = new_entries(nginx, before)
    ranges = [e["range"] for e in entries[1:]]
    assert entries[0]["range"] == "bytes=-65536"
    assert len(ranges) == len(set(ranges)) == -(-SIZE // BLOCK)
    assert sum(e["bytes"] for e in entries) <= SIZE + 65536


def test_redirect_is_followed(served):
    nginx, _, data = served
    r = R.remote_cat(nginx.url("moved/x.npz"), f"{SIZE // 2}:1000", options=["-b", str(BLOCK)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == data[SIZE // 2:SIZE // 2 + 1000]


def test_small_object_is_one_request(served):
    nginx, _, data = served
    before = len(nginx.log())
    r = R.remote_cat(nginx.url("small.npz"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == data[:1000]
    assert len(new_entries(nginx, before)) == 1


def test_random_ranges_from_many_threads(served):
    nginx, _, data = served
    rng = random.Random(1)
    ranges = random_ranges(rng, SIZE, 80, 200_000)
    ranges += [(k * BLOCK - 10, 20) for k in range(1, 5)]  # across block boundaries
    before = len(nginx.log())
    r = R.remote_cat(nginx.url("x.npz"), *[f"{o}:{n}" for o, n in ranges],
                     options=["-b", str(BLOCK), "-j", "8", "-c", str(64 * BLOCK)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(data[o:o + n] for o, n in ranges)
    # The cache holds every block here, so no block is fetched twice however many threads
    # want it at once.
    ranges_fetched = [e["range"] for e in new_entries(nginx, before)]
    assert len(ranges_fetched) == len(set(ranges_fetched))


def test_threads_evictions_and_faults_under_tsan(served):
    """Many readers over a cache of 8 blocks (so blocks are evicted while others load) through
    dropped connections and 500s, with ThreadSanitizer watching the source's locking."""
    nginx, _, data = served
    ranges = random_ranges(random.Random(2), SIZE, 150, 300_000)
    with R.FaultProxy(nginx.port) as proxy:
        proxy.faults = ["pass", "drop", "500"] * 8
        r = R.remote_cat(proxy.url("x.npz"), *[f"{o}:{n}" for o, n in ranges],
                         options=["-b", str(BLOCK), "-c", str(8 * BLOCK), "-j", "8", "-t", "20"],
                         env={"TSAN_OPTIONS": "halt_on_error=1"}, tool=R.REMOTE_CAT_TSAN)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(data[o:o + n] for o, n in ranges)


def test_one_small_read_costs_one_block_and_carries_if_match(served):
    nginx, _, data = served
    before = len(nginx.log())
    off = 10 * BLOCK + 1234
    r = R.remote_cat(nginx.url("x.npz"), f"{off}:100", options=["-b", str(BLOCK)])
    assert r.returncode == 0, r.stderr
    assert r.stdout == data[off:off + 100]
    tail, block = new_entries(nginx, before)
    assert tail["if_match"] == "" and tail["etag"]
    assert block["range"] == f"bytes={10 * BLOCK}-{11 * BLOCK - 1}"
    assert block["if_match"] == tail["etag"] and block["bytes"] == BLOCK


@pytest.mark.parametrize("path, status", [("nope.npz", "HTTP 404 Not Found"),
                                          ("forbidden/x.npz", "HTTP 403 Forbidden")])
def test_open_fails_with_one_line(served, path, status):
    nginx, _, _ = served
    url = nginx.url(path).replace("http://", "http://user:secretpw@")
    r = R.remote_cat(url + "?sig=secretq")
    assert r.returncode == 3
    line = one_line(r.stderr)
    assert status in line and "secret" not in line and line.startswith("remote_cat: open: ")


def test_unreachable_fails_at_once_with_one_line():
    port = R.free_port()  # nothing listens there
    start = time.monotonic()
    r = R.remote_cat(f"http://127.0.0.1:{port}/x.npz", options=["-t", "20"])
    assert r.returncode == 3
    assert "connect" in one_line(r.stderr).lower()
    assert time.monotonic() - start < 10  # a refused connection is not retried for 20 s


# ------------------------------------------------------------------------------------------
# faults


def test_dropped_connections_and_500s_are_retried(served):
    nginx, _, data = served
    with R.FaultProxy(nginx.port) as proxy:
        proxy.faults = ["500", "drop", "drop", "500", "pass", "drop", "500", "drop"]
        r = R.remote_cat(proxy.url("x.npz"), options=["-b", str(BLOCK), "-t", "20"])
        assert r.returncode == 0, r.stderr
        assert r.stdout == data
        assert not proxy.faults and len(proxy.heads) >= 1 + -(-SIZE // BLOCK) + 7


@pytest.mark.parametrize("fault", ["500", "stall", "drop"])
def test_persistent_fault_is_eio_within_the_timeout(served, fault):
    nginx, _, data = served
    with R.FaultProxy(nginx.port) as proxy:
        reader = R.LineReader(proxy.url("x.npz"), options=["-b", str(BLOCK), "-t", "2"])
        try:
            assert reader.read(SIZE - 10, 10) == (data[-10:], None)  # from the open's tail
            proxy.always = fault
            start = time.monotonic()
            assert reader.read(3 * BLOCK, 100) == (None, EIO)
            assert time.monotonic() - start < 2 + 3  # the timeout, and generous slack
            proxy.always = "pass"
            assert reader.read(3 * BLOCK, 100) == (data[3 * BLOCK:3 * BLOCK + 100], None)
        finally:
            reader.close()


def test_persistent_500_fails_the_open_after_the_timeout(served):
    nginx, _, _ = served
    with R.FaultProxy(nginx.port) as proxy:
        proxy.always = "500"
        start = time.monotonic()
        r = R.remote_cat(proxy.url("x.npz"), options=["-t", "2"])
        assert r.returncode == 3
        assert "HTTP 500" in one_line(r.stderr)
        assert 1 < time.monotonic() - start < 2 + 3 and len(proxy.heads) > 1


def test_changed_object_is_estale_for_every_later_read(served):
    nginx, root, data = served
    path = root / "changing.npz"
    R.replace_file(path, data)
    reader = R.LineReader(nginx.url("changing.npz"), options=["-b", str(BLOCK)])
    try:
        assert reader.read(BLOCK + 5, 50) == (data[BLOCK + 5:BLOCK + 55], None)
        R.replace_file(path, bytes(reversed(data)))
        before = len(nginx.log())
        assert reader.read(5 * BLOCK, 50) == (None, ESTALE)
        assert new_entries(nginx, before)[0]["status"] == 412
        # Never the old bytes again either, even those already cached.
        assert reader.read(BLOCK + 5, 50) == (None, ESTALE)
        assert reader.read(SIZE - 10, 10) == (None, ESTALE)
    finally:
        reader.close()


# ------------------------------------------------------------------------------------------
# S3 through s3rver


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    d = tmp_path_factory.mktemp("s3")
    data = random.Random(3).randbytes(400_000)
    with R.S3rver(d) as store:
        store.make_bucket("bkt")
        store.put("bkt", "runs/a b+c.npz", data)
        with R.FaultProxy(store.port) as proxy:  # records the requests' headers
            yield store, proxy, data


S3_ENV = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
          "AWS_REGION": "eu-west-3"}


def s3_env(proxy, **extra):
    env = dict(S3_ENV, AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", HOME="/nonexistent")
    env.update(extra)
    return env


def parse_head(head):
    request, *lines = head.split("\r\n")
    method, target, _ = request.split(" ")
    headers = {}
    for line in lines:
        name, value = line.split(":", 1)
        headers[name.strip().lower()] = value.strip()
    return method, target, headers


def expected_signature(head, secret, region):
    """AWS Signature V4 of a recorded GET, computed here from the AWS documentation."""
    method, target, h = parse_head(head)
    fields = dict(p.strip().split("=", 1)
                  for p in h["authorization"].split(" ", 1)[1].split(","))
    signed = fields["SignedHeaders"].split(";")
    canonical = "\n".join([method, target, ""] + [f"{n}:{h[n]}" for n in signed] +
                          ["", ";".join(signed), h["x-amz-content-sha256"]])
    date = h["x-amz-date"][:8]
    scope = f"{date}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", h["x-amz-date"], scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return fields, hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_s3_bytes_and_signature(s3):
    _, proxy, data = s3
    first = len(proxy.heads)
    rng = random.Random(4)
    ranges = random_ranges(rng, len(data), 30, 50_000)
    r = R.remote_cat("s3://bkt/runs/a b+c.npz", *[f"{o}:{n}" for o, n in ranges],
                     options=["-b", str(BLOCK), "-j", "4"], env=s3_env(proxy))
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"".join(data[o:o + n] for o, n in ranges)
    heads = proxy.heads[first:]
    assert heads
    for head in heads:
        _, target, h = parse_head(head)
        assert target == "/bkt/runs/a%20b%2Bc.npz"
        fields, want = expected_signature(head, "S3RVER", "eu-west-3")
        assert fields["Credential"].startswith("S3RVER/") and \
            fields["Credential"].endswith("/eu-west-3/s3/aws4_request")
        assert {"host", "x-amz-date", "x-amz-content-sha256"} <= set(
            fields["SignedHeaders"].split(";"))
        assert h["x-amz-content-sha256"] == hashlib.sha256(b"").hexdigest()
        assert fields["Signature"] == want


@pytest.mark.parametrize("url, words", [
    ("s3://bkt/runs/missing.npz", ["HTTP 404", "NoSuchKey"]),
    ("s3://nobucket/runs/a b+c.npz", ["HTTP 404", "NoSuchBucket"]),
    ("s3://bkt", ["no key"]),
    ("s3:///key.npz", ["no bucket"]),
])
def test_s3_open_fails_with_one_line(s3, url, words):
    _, proxy, _ = s3
    r = R.remote_cat(url, env=s3_env(proxy))
    assert r.returncode == 3
    line = one_line(r.stderr)
    assert all(w in line for w in words), line


def test_s3_credentials_file_profile_and_session_token(s3, tmp_path):
    _, proxy, data = s3
    creds = tmp_path / "credentials"
    creds.write_text("[default]\naws_access_key_id = NOSUCHKEY\n"
                     "aws_secret_access_key = wrongsecret\n\n"
                     "[ci]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n"
                     "aws_session_token = tok123\n")
    env = s3_env(proxy, AWS_SHARED_CREDENTIALS_FILE=str(creds), AWS_ACCESS_KEY_ID="",
                 AWS_SECRET_ACCESS_KEY="")
    r = R.remote_cat("s3://bkt/runs/a b+c.npz", env=env)  # profile default: unknown key
    assert r.returncode == 3
    line = one_line(r.stderr)
    assert "HTTP 403" in line and "InvalidAccessKeyId" in line and "wrongsecret" not in line
    first = len(proxy.heads)
    r = R.remote_cat("s3://bkt/runs/a b+c.npz", env=dict(env, AWS_PROFILE="ci"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == data
    _, _, h = parse_head(proxy.heads[first])
    fields, want = expected_signature(proxy.heads[first], "S3RVER", "eu-west-3")
    assert h["x-amz-security-token"] == "tok123"
    assert "x-amz-security-token" in fields["SignedHeaders"].split(";")
    assert fields["Signature"] == want
