"""Encrypted members (ZipCrypto and WinZip AES, decrypted by libarchive) with the right, a wrong
and no password; the password's ways in (-o password_file=, -o askpass on a terminal) and that
it shows nowhere else: not in /proc/PID/cmdline or environ, not on stderr, not in the log."""

import errno
import os
import pty
import select
import subprocess
import time
import zipfile

import numpy as np
import pytest

import encrypted_support as E
import npz_support as S


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("enc-src")
    return d, E.write_sources(d, E.plaintext(np.random.default_rng(7)))


@pytest.fixture(scope="module")
def archives(sources, tmp_path_factory):
    src, data = sources
    out = tmp_path_factory.mktemp("enc-zip")
    made = {}
    for kind in E.KINDS:
        if E.tool_for(kind):
            made[kind] = E.make_archive(kind, src, out / f"{kind}.zip", sorted(data))
    return made


def archive_of(archives, kind):
    if kind not in archives:
        pytest.skip(f"no tool to make {kind} archives (scripts/install-deps installs zip, 7zip)")
    return archives[kind]


@pytest.fixture
def pwfile(tmp_path):
    p = tmp_path / "pw"
    p.write_text(E.PASSWORD + "\n")  # the trailing newline is not part of the password
    return p


def one_line(res):
    lines = res.stderr.strip().splitlines()
    assert res.returncode != 0 and len(lines) == 1, res
    return lines[0]


@pytest.mark.parametrize("kind", E.KINDS)
def test_right_password(kind, archives, sources, pwfile, mount):
    arc = archive_of(archives, kind)
    data = sources[1]
    if kind != "7z-aes":  # an independent decryption agrees with the sources
        with zipfile.ZipFile(arc) as z:
            assert z.read("big.npy", pwd=E.PASSWORD.encode()) == data["big.npy"]
    with mount(arc, "-o", f"password_file={pwfile}") as mnt:
        assert sorted(os.listdir(mnt)) == sorted(data)
        for name, want in data.items():
            assert os.stat(mnt / name).st_size == len(want), name
            assert S.read_file(mnt / name) == want, name
        np.testing.assert_array_equal(np.load(mnt / "big.npy", mmap_mode="r"),
                                      np.load(sources[0] / "big.npy"))
        # random access, backwards across pieces: the cursor restarts and still agrees
        want = data["big.npy"]
        with open(mnt / "big.npy", "rb", buffering=0) as f:
            for off in (len(want) - 5000, 1_000_000, 300_000, 7):
                assert os.pread(f.fileno(), 5000, off) == want[off:off + 5000], off
        with pytest.raises(OSError) as ei:
            os.getxattr(mnt / "big.npy", "user.npzmount.error")
        assert ei.value.errno == errno.ENODATA


def _mount_refused(arc, password, tmp_path):
    """Mounts arc with a wrong password, which must fail with one line that says so; returns
    that result and the log's text."""
    pw = tmp_path / "bad"
    pw.write_text(password + "\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "log"
    res = S.run_npzmount(["-o", f"password_file={pw},logfile={log}", arc, mp])
    try:
        line = one_line(res)
        assert "wrong password" in line, line
        assert not S.is_mountpoint(mp)
    finally:
        S.force_unmount(mp)
    return res, log.read_text() if log.exists() else ""


@pytest.mark.parametrize("kind", E.KINDS)
def test_wrong_password_fails_the_mount(kind, archives, tmp_path):
    res, log = _mount_refused(archive_of(archives, kind), "not-" + E.PASSWORD, tmp_path)
    assert E.PASSWORD not in res.stderr + log


def _passes_zipcrypto_check(arc, name, pw):
    """Whether pw gets past the one check byte of a ZipCrypto member (zipfile tells)."""
    with zipfile.ZipFile(arc) as z:
        try:
            z.open(name, pwd=pw.encode()).close()
        except RuntimeError:  # "Bad password"
            return False
    return True


def test_wrong_zipcrypto_password_past_the_check_byte_fails_the_mount(archives, tmp_path):
    """1 wrong password in 256 passes ZipCrypto's check byte: then the CRC of the checked
    member (the smallest encrypted one, within one piece) fails the mount."""
    arc = archive_of(archives, "7z-zipcrypto")
    with zipfile.ZipFile(arc) as z:
        secret = [i for i in z.infolist() if i.flag_bits & 1]
    small = min(secret, key=lambda i: i.file_size)
    assert small.file_size <= 64 * 1024, "the checked member must fit one piece"
    pw = next(p for p in (f"wrong-{i}" for i in range(20000))
              if _passes_zipcrypto_check(arc, small.filename, p))
    _mount_refused(arc, pw, tmp_path)


@pytest.mark.parametrize("kind", E.KINDS)
def test_no_password_reads_eacces(kind, archives, sources, tmp_path, mount):
    arc = archive_of(archives, kind)
    data = sources[1]
    log = tmp_path / "log"
    with mount(arc, "-o", f"logfile={log}") as mnt:
        assert sorted(os.listdir(mnt)) == sorted(data)
        assert S.read_file(mnt / E.PLAIN_NAME) == data[E.PLAIN_NAME]
        for name in data:
            if name == E.PLAIN_NAME:
                continue
            assert os.stat(mnt / name).st_size == len(data[name]), name
            for _ in range(2):
                assert S.read_errno(mnt / name) == errno.EACCES, name
            why = os.getxattr(mnt / name, "user.npzmount.error").decode()
            assert "no password" in why, why
        text = log.read_text()
    for name in data:
        lines = [ln for ln in text.splitlines() if f" {name}: " in ln]
        assert len(lines) == (0 if name == E.PLAIN_NAME else 1), text  # once per member
        assert name == E.PLAIN_NAME or "no password" in lines[0], text


def test_password_shows_nowhere(archives, sources, pwfile, tmp_path, mount):
    arc = archive_of(archives, "7z-aes" if "7z-aes" in archives else "infozip")
    log = tmp_path / "log"
    with mount(arc, "-o", f"password_file={pwfile},logfile={log}") as mnt:
        assert S.read_file(mnt / "small.npy") == sources[1]["small.npy"]
        pids = S.find_daemons(mnt)
        assert pids
        for pid in pids:
            cmdline, environ = E.daemon_text(pid)
            assert str(pwfile).encode() in cmdline  # the path, as given
            assert E.PASSWORD.encode() not in cmdline + environ
    assert E.PASSWORD not in log.read_text()


def test_password_file_problems(archives, tmp_path):
    arc = archive_of(archives, "infozip" if "infozip" in archives else "7z-aes")
    mp = tmp_path / "mnt"
    mp.mkdir()
    empty = tmp_path / "empty"
    empty.write_text("\n")
    two = tmp_path / "two"
    two.write_text(E.PASSWORD + "\nmore\n")
    cases = {"missing": (tmp_path / "nope", "No such file"),
             "unreadable": (tmp_path, "Is a directory"),  # root reads any file: a directory
             "empty": (empty, "empty password"), "two lines": (two, "one line")}
    try:
        for what, (path, words) in cases.items():
            line = one_line(S.run_npzmount(["-o", f"password_file={path}", arc, mp]))
            assert words in line and "password_file" in line, (what, line)
            assert not S.is_mountpoint(mp), what
        both = one_line(S.run_npzmount(["-o", f"password_file={two},askpass", arc, mp]))
        assert "give one" in both, both
    finally:
        S.force_unmount(mp)


@pytest.mark.parametrize("ending", ["", "\r\n"])
def test_password_file_line_endings(ending, archives, sources, tmp_path, mount):
    arc = archive_of(archives, "infozip" if "infozip" in archives else "7z-aes")
    pw = tmp_path / "pw"
    pw.write_bytes((E.PASSWORD + ending).encode())
    with mount(arc, "-o", f"password_file={pw}") as mnt:
        assert S.read_file(mnt / "small.npy") == sources[1]["small.npy"]


def test_askpass_without_a_terminal(archives, tmp_path):
    arc = archive_of(archives, "infozip" if "infozip" in archives else "7z-aes")
    mp = tmp_path / "mnt"
    mp.mkdir()
    # a new session has no controlling terminal: /dev/tty cannot be opened
    proc = subprocess.run([S.BIN, "-o", "askpass", str(arc), str(mp)], start_new_session=True,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=S.MOUNT_TIMEOUT)
    try:
        line = one_line(proc)
        assert "askpass" in line and "password_file" in line, line
    finally:
        S.force_unmount(mp)


def _talk(fd, proc_pid, answer, timeout):
    """Reads the pty until the prompt, types answer, then reads until the child exits.
    Returns (everything the terminal showed, exit status)."""
    shown, sent, status = b"", False, None
    deadline = time.monotonic() + timeout
    while status is None:
        assert time.monotonic() < deadline, shown
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed its side
                chunk = b""
            shown += chunk
        if not sent and b"Password for" in shown:
            os.write(fd, answer)
            sent = True
        pid, st = os.waitpid(proc_pid, os.WNOHANG)
        if pid:
            status = os.waitstatus_to_exitcode(st)
    return shown, status


@pytest.mark.parametrize("right", [True, False])
def test_askpass_on_a_pty(right, archives, sources, tmp_path):
    arc = archive_of(archives, "7z-aes" if "7z-aes" in archives else "infozip")
    mp = tmp_path / "mnt"
    mp.mkdir()
    answer = (E.PASSWORD if right else "nope") + "\n"
    pid, fd = pty.fork()  # the child's controlling terminal is the pty
    if pid == 0:
        try:
            os.execv(S.BIN, [S.BIN, "-o", "askpass", str(arc), str(mp)])
        finally:
            os._exit(127)
    try:
        shown, status = _talk(fd, pid, answer.encode(), S.MOUNT_TIMEOUT)
        assert E.PASSWORD.encode() not in shown and b"nope" not in shown, shown  # echo off
        if right:
            assert status == 0, shown
            assert S.read_file(mp / "small.npy") == sources[1]["small.npy"]
            for daemon in S.find_daemons(mp):
                cmdline, environ = E.daemon_text(daemon)
                assert E.PASSWORD.encode() not in cmdline + environ
        else:
            assert status == 1 and b"wrong password" in shown, shown
            assert not S.is_mountpoint(mp)
    finally:
        S.force_unmount(mp)
        os.close(fd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
