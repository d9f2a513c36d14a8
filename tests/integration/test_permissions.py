"""Ownership and permissions: 0444/0555 by default, a Unix writer's bits only with a file type,
-o uid=,gid=,umask=,fmask=,dmask=, and reads by another user with and without allow_other
(through setpriv, as user nobody)."""

import os
import shutil
import stat
import subprocess
import tempfile
import zipfile

import numpy as np
import pytest

import npz_support as S

NOBODY = 65534

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="reading as another user needs root"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv is not installed"),
]


@pytest.fixture(scope="module")
def public_dir():
    """A directory every user can traverse (pytest's own temporary tree is 0700)."""
    d = tempfile.mkdtemp(prefix="npzmount-perm-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    for m in reversed(S.mounts_under(d)):
        S.fusermount_unmount(m, lazy=True)
    shutil.rmtree(d, ignore_errors=True)


def _add(zf, name, data, unix_mode):
    info = zipfile.ZipInfo(name, date_time=(2020, 5, 6, 7, 8, 10))
    info.create_system = 3
    info.external_attr = unix_mode << 16
    zf.writestr(info, data)


@pytest.fixture(scope="module")
def archive(public_dir):
    """numpy's bare 0600 (no file type), a typed 0100754 file and a typed 040700 directory."""
    path = os.path.join(public_dir, "perm.npz")
    np.savez(path, x=np.arange(1000, dtype=np.int32))
    with zipfile.ZipFile(path, "a") as zf:
        _add(zf, "typed.npy", b"typed bytes\n" * 100, 0o100754)
        _add(zf, "d/", b"", 0o40700)
        _add(zf, "d/in.bin", b"inside\n", 0o100644)
    os.chmod(path, 0o644)
    return path


def _member(archive, name):
    with zipfile.ZipFile(archive) as zf:
        return zf.read(name)


def _mount(mount, archive, public_dir, *options):
    return mount(archive, *options, mountpoint=tempfile.mkdtemp(dir=public_dir))


def _read_as(uid, path):
    """cat path as uid (group uid, no supplementary groups): (returncode, stdout, stderr)."""
    p = subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                        "cat", str(path)], capture_output=True, timeout=60)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_default_modes(mount, archive, public_dir):
    with _mount(mount, archive, public_dir) as mnt:
        assert _mode(mnt / "x.npy") == 0o444    # numpy's bare 0600 is no Unix mode
        assert _mode(mnt / "typed.npy") == 0o554  # 0754 less the write bits
        assert _mode(mnt / "d") == 0o500          # 0700 less the write bit
        assert _mode(mnt / "d" / "in.bin") == 0o444
        assert _mode(mnt) == 0o555                # no entry: the default
        st = os.stat(mnt / "x.npy")
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())


def test_other_user_denied_without_allow_other(mount, archive, public_dir):
    with _mount(mount, archive, public_dir) as mnt:
        rc, out, err = _read_as(NOBODY, mnt / "x.npy")
        assert rc != 0 and out == b"", err
        assert "Permission denied" in err


def test_other_user_reads_with_allow_other(mount, archive, public_dir):
    with _mount(mount, archive, public_dir, "-o", "allow_other") as mnt:
        rc, out, err = _read_as(NOBODY, mnt / "x.npy")
        assert rc == 0, err
        assert out == _member(archive, "x.npy")
        rc, out, err = _read_as(NOBODY, mnt / "typed.npy")  # 0554: others may read
        assert rc == 0 and out == _member(archive, "typed.npy"), err
        rc, out, err = _read_as(NOBODY, mnt / "d" / "in.bin")  # d is 0500, root's
        assert rc != 0 and "Permission denied" in err


def test_uid_gid_umask(mount, archive, public_dir):
    opts = f"allow_other,uid={NOBODY},gid={NOBODY},umask=0227"
    with _mount(mount, archive, public_dir, "-o", opts) as mnt:
        st = os.stat(mnt / "x.npy")
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY)
        assert stat.S_IMODE(st.st_mode) == 0o440  # 0444 & ~0227
        assert _mode(mnt / "d") == 0o500 & ~0o227
        rc, out, err = _read_as(NOBODY, mnt / "x.npy")  # the owner
        assert rc == 0 and out == _member(archive, "x.npy"), err
        rc, out, err = _read_as(NOBODY - 1, mnt / "x.npy")  # neither owner nor group
        assert rc != 0 and "Permission denied" in err


def test_fmask_dmask_override_umask(mount, archive, public_dir):
    with _mount(mount, archive, public_dir, "-o", "umask=0777,fmask=0044,dmask=0022") as mnt:
        assert _mode(mnt / "x.npy") == 0o400
        assert _mode(mnt / "typed.npy") == 0o510
        assert _mode(mnt) == 0o555
        assert _mode(mnt / "d") == 0o500


@pytest.mark.parametrize("opt", ["uid=abc", "gid=-1", "umask=0999", "fmask=", "dmask=1000"])
def test_bad_owner_options(archive, public_dir, opt):
    mp = tempfile.mkdtemp(dir=public_dir)
    r = S.run_npzmount(["-o", opt, archive, mp], timeout=30)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npzmount: ") and opt in lines[0], r
    assert not S.is_mountpoint(mp)
