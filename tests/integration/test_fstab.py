"""The mount(8) round trip: `mount -t fuse.npzmount` and an fstab line (through `mount -T`,
an alternative fstab), then umount(8). mount.fuse3 finds npzmount on the default PATH, so the
test runs in a private mount namespace with the binary bind-mounted into /usr/local/bin (and
a scratch /var/log for the daemon's log): nothing of the host changes."""

import os
import shutil
import subprocess
import zipfile

import numpy as np
import pytest

import npz_support as S

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount.fuse3"),
    reason="needs root, unshare(1) and mount.fuse3")

SCRIPT = r"""
set -e
mount --bind "$BINDIR" /usr/local/bin
mount --bind "$VARLOG" /var/log
trap 'umount "$MP" 2>/dev/null || true' EXIT
mount -t fuse.npzmount -o ro,noindex "$ARC" "$MP"
grep " $MP " /proc/self/mountinfo > "$OUT/mountinfo1"
cat "$MP/x.npy" > "$OUT/x1.npy"
umount "$MP"
grep -q " $MP " /proc/self/mountinfo && exit 3
mount -T "$FSTAB" "$MP"
stat -c '%a %u %g' "$MP/x.npy" > "$OUT/stat2"
cat "$MP/x.npy" > "$OUT/x2.npy"
umount "$MP"
grep -q " $MP " /proc/self/mountinfo && exit 4
exit 0
"""


def test_mount_t_and_fstab_round_trip(tmp_path):
    bindir, varlog, out, mp = (tmp_path / d for d in ("bin", "varlog", "out", "mnt"))
    for d in (bindir, varlog, out, mp):
        d.mkdir()
    shutil.copy(S.BIN, bindir / "npzmount")
    arc = tmp_path / "data.npz"
    np.savez(arc, x=np.arange(300, dtype=np.float32))
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{arc} {mp} fuse.npzmount ro,noauto,nofail,noindex,uid=123,gid=45,umask=027 0 0\n")
    env = dict(os.environ, BINDIR=str(bindir), VARLOG=str(varlog), ARC=str(arc), MP=str(mp),
               OUT=str(out), FSTAB=str(fstab))
    p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p
    assert not S.is_mountpoint(mp)
    with zipfile.ZipFile(arc) as zf:
        want = zf.read("x.npy")
    info = (out / "mountinfo1").read_text()
    assert " - fuse.npzmount " + str(arc) + " " in info, info
    assert (out / "x1.npy").read_bytes() == want
    assert (out / "stat2").read_text().split() == ["440", "123", "45"]
    assert (out / "x2.npy").read_bytes() == want
