"""Member times: numpy's 1980-01-01 placeholder and invalid DOS times take the archive's mtime,
a real DOS time is local time, and the UT extended timestamp (0x5455) wins over both."""

import os
import struct
import subprocess
import time
import zipfile

import numpy as np

import npz_support as S

ARCHIVE_TIME = 1_700_000_000  # 2023-11-14, set on the archive file
UT_TIME = 1_234_567_890


def _ut(t):
    return S.Z.ut_extra(t)


def _info(name, date_time=(1980, 1, 1, 0, 0, 0), extra=b""):
    zi = zipfile.ZipInfo(name, date_time=date_time)
    zi.extra = extra
    return zi


def _set_dos_time(path, name, dos_time, dos_date):
    """Writes raw DOS time and date (which zipfile would refuse) into both headers."""
    data = open(path, "rb").read()
    e = S.find_entry(S.zip_layout(data), name)
    raw = struct.pack("<HH", dos_time, dos_date)
    S.patch_file(path, [(e.local_off + S.Z.LOCAL.offset("time"), raw),
                        (e.cd_off + S.Z.CENTRAL.offset("time"), raw)])


def _stamp(path):
    os.utime(path, (ARCHIVE_TIME, ARCHIVE_TIME))


def test_numpy_placeholder_takes_archive_mtime(tmp_path, mount):
    arc = tmp_path / "np.npz"
    np.savez(arc, a=np.arange(5), b=np.ones(3))
    with zipfile.ZipFile(arc) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    _stamp(arc)
    with mount(arc) as mnt:
        for p in ("a.npy", "b.npy", ""):
            assert int(os.stat(mnt / p).st_mtime) == ARCHIVE_TIME, p
        # ls -t and find -newer now say something sensible
        older = tmp_path / "older"
        older.touch()
        os.utime(older, (ARCHIVE_TIME - 10, ARCHIVE_TIME - 10))
        out = subprocess.run(["find", str(mnt), "-type", "f", "-newer", str(older)],
                             capture_output=True, text=True, timeout=30).stdout.split()
        assert sorted(os.path.basename(p) for p in out) == ["a.npy", "b.npy"]


def test_invalid_dos_times_take_archive_mtime(tmp_path, mount):
    arc = tmp_path / "bad.zip"
    names = ["zero.npy", "month13.npy", "day0.npy", "hour24.npy", "sec60.npy", "good.npy"]
    S.write_zip(arc, [(_info(n, (2001, 2, 3, 4, 5, 6)), b"x") for n in names])
    d = lambda y, m, day: (y - 1980) << 9 | m << 5 | day
    t = lambda h, mi, s2: h << 11 | mi << 5 | s2
    _set_dos_time(arc, "zero.npy", 0, 0)
    _set_dos_time(arc, "month13.npy", t(1, 2, 3), d(2001, 13, 1))
    _set_dos_time(arc, "day0.npy", t(1, 2, 3), d(2001, 5, 0))
    _set_dos_time(arc, "hour24.npy", t(24, 0, 0), d(2001, 5, 5))
    _set_dos_time(arc, "sec60.npy", t(1, 1, 30), d(2001, 5, 5))
    _stamp(arc)
    with zipfile.ZipFile(arc) as zf:
        good = int(time.mktime(zf.getinfo("good.npy").date_time + (0, 0, -1)))
    with mount(arc) as mnt:
        got = {n: int(os.stat(mnt / n).st_mtime) for n in names}
    assert got == {**{n: ARCHIVE_TIME for n in names[:-1]}, "good.npy": good}


def test_extended_timestamp_wins(tmp_path, mount):
    arc = tmp_path / "ut.zip"
    S.write_zip(arc, [
        (_info("placeholder_ut.npy", extra=_ut(UT_TIME)), b"a"),
        (_info("dos_ut.npy", (2010, 1, 2, 3, 4, 6), extra=_ut(UT_TIME + 7)), b"b"),
        (_info("negative_ut.npy", extra=_ut(-86400)), b"c"),
        (_info("dir/", (2015, 5, 5, 5, 5, 4), extra=_ut(UT_TIME + 9)), b""),
    ])
    _stamp(arc)
    with zipfile.ZipFile(arc) as zf:  # the field as Python reads it, not as we wrote it
        want = {i.filename.rstrip("/"): S._ut_mtime(i.extra) for i in zf.infolist()}
    assert want["placeholder_ut.npy"] == UT_TIME
    with mount(arc) as mnt:
        got = {p: int(os.stat(mnt / p).st_mtime) for p in want}
    assert got == want
