"""Where the daemon's messages go: -o logfile=PATH (daemonised and with -f), and, for a daemon
without a reachable system log, a fallback file named on stderr at mount time (run in a
private mount namespace where /dev/log is hidden and /var/log is a scratch directory)."""

import errno
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

import npz_support as S


@pytest.fixture(scope="module")
def broken_npz(tmp_path_factory):
    """good.npy reads fine; bad.npy has an unsupported method, so its read fails and logs."""
    path = tmp_path_factory.mktemp("logging") / "broken.npz"
    np.savez(path, good=np.arange(10), bad=np.arange(20))
    S.set_flags_and_method(path, "bad.npy", method=1)  # "shrunk": not supported
    return path


def _wait_for_line(path, needle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text(errors="replace") if path.exists() else ""
        if needle in text or time.monotonic() > deadline:
            return text
        time.sleep(0.05)


def _read_fails_eio(path):
    with pytest.raises(OSError) as e:
        path.read_bytes()
    assert e.value.errno == errno.EIO


def test_logfile_daemon(broken_npz, tmp_path, mount):
    log = tmp_path / "logs" / "npz.log"
    log.parent.mkdir()
    with mount(broken_npz, "-o", f"logfile={log}") as mnt:
        np.testing.assert_array_equal(np.load(mnt / "good.npy"), np.arange(10))
        _read_fails_eio(mnt / "bad.npy")
        text = _wait_for_line(log, "bad.npy")
    lines = [l for l in text.splitlines() if "bad.npy" in l]
    assert len(lines) == 1, text  # once per member
    assert "npzmount[" in lines[0]


def test_logfile_foreground(broken_npz, tmp_path):
    log = tmp_path / "fg.log"
    with S.foreground(broken_npz, tmp_path / "mnt", ["-o", f"logfile={log}"]) as fg:
        _read_fails_eio(fg.mp / "bad.npy")
        text = _wait_for_line(log, "bad.npy")
        assert "bad.npy" in text
    assert "bad.npy" not in fg.stderr()


def test_foreground_logs_to_stderr(broken_npz, tmp_path):
    with S.foreground(broken_npz, tmp_path / "mnt") as fg:
        _read_fails_eio(fg.mp / "bad.npy")
        deadline = time.monotonic() + 10
        while "bad.npy" not in fg.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "npzmount: bad.npy: " in fg.stderr()


def test_logfile_unwritable_fails_before_mounting(broken_npz, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = S.run_npzmount(["-o", f"logfile={tmp_path}/no/such/dir/x.log", broken_npz, mp])
    assert r.returncode == 1, r
    assert len(r.stderr.strip().splitlines()) == 1 and "logfile=" in r.stderr, r
    assert not S.is_mountpoint(mp)


# The whole scenario runs inside `unshare -m`: the mount lives and dies there.
NAMESPACE_SCRIPT = r"""
set -e
if [ -e /dev/log ]; then mount --bind /dev/null /dev/log; fi
mount --bind "$VARLOG" /var/log
trap 'fusermount3 -u "$MP" 2>/dev/null || true' EXIT
"$NPZ" "$ARC" "$MP" 2> "$OUT/mount.err"
if cat "$MP/bad.npy" > /dev/null 2> "$OUT/cat.err"; then echo unexpected > "$OUT/cat.ok"; fi
cat "$MP/good.npy" > "$OUT/good.npy"
fusermount3 -u "$MP"
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare(1) to hide /dev/log")
@pytest.mark.parametrize("where", ["xdg_state_home", "root_default"])
def test_fallback_without_syslog(broken_npz, tmp_path, where):
    varlog, state, out, mp = (tmp_path / d for d in ("varlog", "state", "out", "mnt"))
    for d in (varlog, out, mp):
        d.mkdir()
    env = dict(os.environ, VARLOG=str(varlog), NPZ=S.BIN, ARC=str(broken_npz), MP=str(mp),
               OUT=str(out))
    env.pop("XDG_STATE_HOME", None)
    if where == "xdg_state_home":
        env["XDG_STATE_HOME"] = str(state)
        log, shown = state / "npzmount" / "npzmount.log", state / "npzmount" / "npzmount.log"
    else:
        log, shown = varlog / "npzmount.log", "/var/log/npzmount.log"
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        NAMESPACE_SCRIPT], env=env, capture_output=True, timeout=120)
    assert p.returncode == 0, p
    assert not S.is_mountpoint(mp)
    mount_err = (out / "mount.err").read_text()
    assert f"messages go to {shown}" in mount_err, mount_err
    assert not (out / "cat.ok").exists()
    assert "Input/output error" in (out / "cat.err").read_text()
    assert np.array_equal(np.load(out / "good.npy"), np.arange(10))
    text = _wait_for_line(log, "bad.npy")
    assert "bad.npy" in text, text
