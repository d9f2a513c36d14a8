"""Real servers on 127.0.0.1 for the remote-archive tests: nginx serving a directory (with an
access log to count requests and bytes), s3rver (npm) as an S3 store, and a fault-injecting
TCP proxy that goes between a client and either. Each is a context manager that always stops
what it started; readiness is polled with a deadline, never slept for."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REMOTE_CAT = Path(os.environ.get("REMOTE_CAT", REPO / "build" / "remote_cat"))
REMOTE_CAT_TSAN = REPO / "build-tsan" / "remote_cat"
NGINX = "/usr/sbin/nginx"
S3RVER_VERSION = "3.7"
S3RVER_DIR = Path(os.environ.get("NPZMOUNT_S3RVER_DIR",
                                 Path.home() / ".cache" / "npzmount-tests" / "s3rver-3.7"))
STARTUP_S = 20.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what):
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)  # polling interval, not synchronisation
    raise RuntimeError(f"{what} did not listen on port {port} within {STARTUP_S} s")


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------------
# nginx

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    log_format counted escape=json '{{"uri":"$uri","conn":$connection,"status":$status,"bytes":$body_bytes_sent,'
                       '"range":"$http_range","if_match":"$http_if_match",'
                       '"etag":"$sent_http_etag"}}';
    access_log {d}/access.log counted;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    server {{
        listen 127.0.0.1:{port}{tls};
        root {root};
        location /forbidden/ {{ return 403; }}
        location /moved/ {{ rewrite ^/moved/(.*)$ /$1 redirect; }}
    }}
}}
"""


class Nginx:
    """nginx serving root on a loopback port; url(name) and the parsed access log. With tls,
    it serves HTTPS with a fresh self-signed certificate for 127.0.0.1 (self.cert, the file a
    client must trust)."""

    def __init__(self, root, workdir, tls=False):
        self.root, self.dir, self.tls = Path(root), Path(workdir), tls

    def _certificate(self):
        self.cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(self.cert)],
                       check=True, capture_output=True)
        return (f" ssl;\n        ssl_certificate {self.cert};\n"
                f"        ssl_certificate_key {key}")

    def __enter__(self):
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        tls = self._certificate() if self.tls else ""
        for _ in range(5):
            self.port = free_port()
            conf = self.dir / "nginx.conf"
            conf.write_text(NGINX_CONF.format(d=self.dir, port=self.port, root=self.root,
                                              tls=tls))
            self.proc = subprocess.Popen([NGINX, "-c", str(conf), "-p", str(self.dir)],
                                         stderr=subprocess.DEVNULL)
            try:
                wait_listening(self.port, self.proc, "nginx")
                return self
            except RuntimeError:
                stop(self.proc)  # most likely the port was taken meanwhile: another one
        raise RuntimeError("nginx did not start: " + (self.dir / "error.log").read_text())

    def __exit__(self, *exc):
        stop(self.proc)

    def url(self, name):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{name}"

    def log(self):
        """The requests served so far (nginx writes each line when the request ends)."""
        path = self.dir / "access.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]


def replace_file(path, data):
    """Writes data over path so that its ETag (mtime and size for nginx) changes."""
    st = os.stat(path) if os.path.exists(path) else None
    tmp = Path(str(path) + ".new")
    tmp.write_bytes(data)
    if st:
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------
# a fault-injecting proxy


class FaultProxy:
    """A TCP proxy on a loopback port in front of 127.0.0.1:upstream, one upstream
    connection per request. faults is a list of what to do to the next requests, in order:
    "drop" (forward part of the reply, then close), "stall" (answer nothing), "500", or "pass";
    when it runs out, `always` says what to do (default "pass"). heads keeps every request's
    header block."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.faults, self.always, self.heads = [], "pass", []
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self.socks = []

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.closing.set()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        self.sock.close()
        with self.lock:
            for s in self.socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()
        self.thread.join(10)

    def url(self, name):
        return f"http://127.0.0.1:{self.port}/{name}"

    def _accept(self):
        while not self.closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _next_fault(self, head):
        with self.lock:
            self.heads.append(head)
            return self.faults.pop(0) if self.faults else self.always

    def _serve(self, conn):
        buf = b""
        with contextlib.suppress(OSError):
            while not self.closing.is_set():
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                fault = self._next_fault(head.decode("latin-1"))
                if fault == "stall":
                    self.closing.wait()
                    return
                if fault == "500":
                    conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\n"
                                 b"Content-Length: 0\r\n\r\n")
                    continue
                self._forward(conn, head, drop=fault == "drop")
                if fault == "drop":
                    return

    def _forward(self, conn, head, drop):
        lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
        request = b"\r\n".join(lines + [b"Connection: close"]) + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", self.upstream), 10) as up:
            with self.lock:
                self.socks.append(up)
            up.sendall(request)
            sent = 0
            while True:
                data = up.recv(65536)
                if not data:
                    break
                if drop:  # the headers and a little of the body, then the line goes dead
                    conn.sendall(data[:max(1, min(len(data), 600 - sent))])
                    sent += len(data)
                    if sent >= 600:
                        conn.close()
                        return
                    continue
                conn.sendall(data)
        if drop:
            conn.close()


# ------------------------------------------------------------------------------------------
# s3rver


def s3rver_bin():
    """s3rver's command, installed from npm into a cache directory on first use."""
    js = S3RVER_DIR / "node_modules" / "s3rver" / "bin" / "s3rver.js"
    if js.exists():
        return js
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.fail("node and npm are needed for the S3 tests (scripts/install-deps)",
                    pytrace=False)
    S3RVER_DIR.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix",
                        str(S3RVER_DIR), f"s3rver@{S3RVER_VERSION}"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0 or not js.exists():
        pytest.fail(f"npm install s3rver@{S3RVER_VERSION} failed: {r.stderr[-2000:]}",
                    pytrace=False)
    return js


class S3rver:
    """s3rver on a loopback port with data in workdir; put() stores objects unsigned (s3rver
    takes anonymous writes), so the code under test is the only signer."""

    def __init__(self, workdir):
        self.dir = Path(workdir)

    def __enter__(self):
        js = s3rver_bin()
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        for _ in range(5):
            self.port = free_port()
            self.proc = subprocess.Popen(["node", str(js), "-d", str(self.dir / "data"),
                                          "-a", "127.0.0.1", "-p", str(self.port), "-s"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                wait_listening(self.port, self.proc, "s3rver")
                return self
            except RuntimeError:
                stop(self.proc)
        raise RuntimeError("s3rver did not start")

    def __exit__(self, *exc):
        stop(self.proc)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def _put(self, path, data):
        req = urllib.request.Request(f"{self.endpoint}/{path}", data=data, method="PUT")
        with urllib.request.urlopen(req, timeout=20) as r:
            assert r.status == 200, r.status

    def make_bucket(self, bucket):
        self._put(bucket, b"")

    def put(self, bucket, key, data):
        self._put(f"{bucket}/{urllib.parse.quote(key)}", data)


# ------------------------------------------------------------------------------------------
# the reader under test


def remote_cat(url, *ranges, options=(), env=None, timeout=60, stdin=None, tool=REMOTE_CAT):
    """Runs build/remote_cat (or tool); returns the CompletedProcess (stdout bytes, stderr
    text)."""
    if not tool.exists():
        pytest.fail(f"{tool} is missing (make {tool.relative_to(REPO)})", pytrace=False)
    full_env = dict(os.environ, **(env or {}))
    r = subprocess.run([str(tool), *options, url, *ranges], capture_output=True,
                       env=full_env, timeout=timeout, input=stdin)
    r.stderr = r.stderr.decode(errors="replace")
    return r


class LineReader:
    """remote_cat URL - : reads one range at a time, so that a test can act between reads."""

    def __init__(self, url, options=(), env=None):
        self.proc = subprocess.Popen([str(REMOTE_CAT), *options, url, "-"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, **(env or {})))

    def read(self, off, length):
        """(bytes, None) or (None, errno)."""
        self.proc.stdin.write(f"{off} {length}\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline().split()
        if not line:
            raise RuntimeError("remote_cat ended: " + self.proc.stderr.read())
        return (bytes.fromhex(line[1]) if len(line) > 1 else b"", None) \
            if line[0] == "OK" else (None, int(line[1]))

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(20)
        finally:
            stop(self.proc)
        return self.proc.stderr.read()
