"""Archives that are not plain np.savez output: Info-ZIP, comments, prepended stubs, ZIP64 end
records, odd and duplicate names, 70,000 members, damaged members, recorded modes and times."""

import io
import os
import random
import shutil
import stat
import time
import zipfile
import zlib

import numpy as np
import pytest

import npz_support as S

FIXED = (2019, 5, 17, 8, 30, 42)


def zi(name, date_time=FIXED, **attrs):
    info = zipfile.ZipInfo(name, date_time=date_time)
    for k, v in attrs.items():
        setattr(info, k, v)
    return info


def arr_bytes(i, n=50):
    return S.npy_bytes(np.arange(i, i + n, dtype=np.int64))


def contents_of(mnt):
    return {p: S.read_file(mnt / p) for p, k in S.walk_mount(mnt).items() if k == "file"}


# --------------------------------------------------------------------------------------------
# Info-ZIP


@pytest.fixture(scope="module")
def infozip_tree(tmp_path_factory):
    return S.make_infozip_tree(tmp_path_factory.mktemp("iz") / "tree")


@pytest.mark.parametrize("pipe", [False, True], ids=["seekable", "piped_data_descriptors"])
def test_infozip_stored_with_directory_entries(infozip_tree, tmp_path, mount, pipe):
    arc = S.infozip(infozip_tree, tmp_path / "iz.zip", "-0", pipe=pipe)
    ref = S.Reference(arc)
    assert "sub/empty/" in [i.filename for i in ref.infos]
    if pipe:
        assert any(i.flag_bits & 8 for i in ref.infos), "premise: data descriptors"
    with mount(arc) as mnt:
        S.check_mount(mnt, ref)
        # the same facts, written out by hand
        assert os.listdir(mnt / "sub" / "empty") == []
        want_modes = {"a.npy": 0o440, "c.npy": 0o444, "sub": 0o550, "sub/b.npy": 0o555,
                      "sub/empty": 0o500, "sub/deeper": 0o555, "sub/deeper/d.npy": 0o400}
        for p, m in want_modes.items():
            st = os.stat(mnt / p)
            assert S.mode_bits(st) == m, (p, oct(st.st_mode))
            assert int(st.st_mtime) == S.INFOZIP_MTIME, p
        for p, (_m, make) in ((p, s) for p, s in S.INFOZIP_TREE.items() if not p.endswith("/")):
            S.run_in_child(S.check_mmap_equal, mnt / p, make())


# --------------------------------------------------------------------------------------------
# comments, stubs, ZIP64 end records


def _members_with_comments():
    out = []
    for i in range(5):
        info = zi(f"m{i}.npy", comment=(b"member comment %d " % i) * (i * 7))
        out.append((info, arr_bytes(i * 100, 10 + i * 300)))
    return out


@pytest.mark.parametrize("comment", [
    b"",
    b"a short archive comment",
    # the longest comment possible, with a fake end record signature inside it
    (b"PK\x05\x06" + b"\0" * 18 + b"fake end record; " * 4000)[:65535],
], ids=["member_comments_only", "short", "max_with_fake_signature"])
def test_zipfile_comments(comment, tmp_path, mount):
    plain = S.write_zip(tmp_path / "plain.zip", _members_with_comments())
    ref = S.Reference(plain)
    arc = tmp_path / "commented.zip"
    shutil.copy(plain, arc)
    if comment:
        S.add_archive_comment(arc, comment)
    ref.archive = arc
    with mount(arc) as mnt:
        S.check_mount(mnt, ref)


def _stub(n=4096):
    rng = random.Random(5)
    body = bytes(rng.randrange(256) for _ in range(n)).replace(b"PK", b"pk")
    return b"#!/bin/sh\necho 'self-extracting stub'\nexit 0\n" + body


@pytest.mark.parametrize("kind", ["zipfile", "npz", "infozip", "zip64_end"])
def test_prepended_stub(kind, tmp_path, mount, small_npz, infozip_tree):
    if kind == "zipfile":
        src = S.write_zip(tmp_path / "a.zip", _members_with_comments())
    elif kind == "npz":
        src = small_npz
    elif kind == "infozip":
        src = S.infozip(infozip_tree, tmp_path / "a.zip", "-0")
    else:
        plain = S.write_zip(tmp_path / "p.zip", _members_with_comments())
        src = S.to_zip64_end(plain, tmp_path / "a.zip")
    ref = S.Reference(src)
    arc = tmp_path / "b.zip"
    arc.write_bytes(_stub() + src.read_bytes())  # cat stub.bin a.zip > b.zip
    ref.archive = arc  # implicit directories take the time of the archive mounted
    with mount(arc) as mnt:
        S.check_mount(mnt, ref)


def test_zip64_end_record(tmp_path, mount):
    plain = S.write_zip(tmp_path / "p.zip", _members_with_comments())
    arc = S.to_zip64_end(plain, tmp_path / "z64.zip")
    ref = S.Reference(arc)  # zipfile reads it: the construction is sound
    assert [i.filename for i in ref.infos] == [f"m{i}.npy" for i in range(5)]
    with mount(arc) as mnt:
        S.check_mount(mnt, ref)


def test_empty_archive(tmp_path, mount):
    arc = tmp_path / "empty.npz"
    np.savez(arc)
    assert zipfile.ZipFile(arc).namelist() == []
    with mount(arc) as mnt:
        assert os.listdir(mnt) == []
        assert stat.S_ISDIR(os.stat(mnt).st_mode)


def test_zero_length_and_tiny_members(tmp_path, mount):
    arc = S.write_zip(tmp_path / "t.zip", [(zi("empty.bin"), b""), (zi("one.bin"), b"x"),
                                           (zi("d/empty2.bin"), b"")])
    with mount(arc) as mnt:
        S.check_mount(mnt, S.Reference(arc))
        assert os.stat(mnt / "empty.bin").st_size == 0
        fd = os.open(mnt / "empty.bin", os.O_RDONLY)
        try:
            assert os.pread(fd, 100, 0) == b""
            assert os.pread(fd, 100, 5) == b""
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# names


def test_duplicate_names(tmp_path, mount):
    members = [
        ("x.npy", arr_bytes(1)), ("x.npy", arr_bytes(2)), ("x.npy", arr_bytes(3)),
        ("a", arr_bytes(4)), ("a/b.npy", arr_bytes(5)),
        ("sub/y.npy", arr_bytes(6)), ("sub/y.npy", arr_bytes(7)),
        ("z.npy", arr_bytes(8)), ("z~1.npy", arr_bytes(9)), ("z.npy", arr_bytes(10)),
        ("d", arr_bytes(11)), ("d/", b""),
        # a member literally named w~1 keeps that name; the older w becomes w~2
        ("w~1", arr_bytes(12)), ("w", arr_bytes(13)), ("w", arr_bytes(14)),
        # three files on a directory's path
        ("e/f.npy", arr_bytes(15)), ("e", arr_bytes(16)), ("e", arr_bytes(17)),
        ("e~1", arr_bytes(18)),
    ]
    arc = S.write_zip(tmp_path / "dup.zip", [(zi(n), b) for n, b in members])
    want = {
        "x.npy": arr_bytes(3), "x~1.npy": arr_bytes(2), "x~2.npy": arr_bytes(1),
        "a/b.npy": arr_bytes(5), "a~1": arr_bytes(4),
        "sub/y.npy": arr_bytes(7), "sub/y~1.npy": arr_bytes(6),
        "z.npy": arr_bytes(10), "z~1.npy": arr_bytes(9), "z~2.npy": arr_bytes(8),
        "d~1": arr_bytes(11),
        "w~1": arr_bytes(12), "w": arr_bytes(14), "w~2": arr_bytes(13),
        "e/f.npy": arr_bytes(15), "e~1": arr_bytes(18), "e~2": arr_bytes(17),
        "e~3": arr_bytes(16),
    }
    ref = S.Reference(arc)
    assert {p: ref.data(p) for p in ref.files()} == want  # the model agrees with the rule
    with mount(arc) as mnt:
        assert S.walk_mount(mnt) == {**{p: "file" for p in want},
                                     "a": "dir", "sub": "dir", "d": "dir", "e": "dir"}
        assert contents_of(mnt) == want
        # the plain name is the member numpy reads
        with np.load(arc) as z:
            assert np.array_equal(np.load(mnt / "x.npy"), z["x"])
        S.check_mount(mnt, ref)


def test_hostile_and_odd_paths(tmp_path, mount):
    members = {
        "../up.npy": 1, "../../etc/passwd.npy": 2, "/abs/x.npy": 3, "//double//slash.npy": 4,
        "a/./b/../c.npy": 5, "./dot.npy": 6, "..": 7, "q/..": 8, "back\\slash.npy": 9,
        "sp ace/t ab\t.npy": 10, "...": 11, ".hidden.npy": 12,
    }
    arc = S.write_zip(tmp_path / "odd.zip", [(zi(n), arr_bytes(v)) for n, v in members.items()])
    want = {
        "up.npy": 1, "etc/passwd.npy": 2, "abs/x.npy": 3, "double/slash.npy": 4,
        "a/b/c.npy": 5, "dot.npy": 6, "_": 7, "q": 8, "back\\slash.npy": 9,
        "sp ace/t ab\t.npy": 10, "...": 11, ".hidden.npy": 12,
    }
    ref = S.Reference(arc)
    assert {p: ref.data(p) for p in ref.files()} == {p: arr_bytes(v) for p, v in want.items()}
    with mount(arc) as mnt:
        before = sorted(os.listdir(tmp_path))
        assert contents_of(mnt) == {p: arr_bytes(v) for p, v in want.items()}
        S.check_mount(mnt, ref)
        assert sorted(os.listdir(tmp_path)) == before


def test_nul_cp437_utf8_and_long_names(tmp_path, mount):
    long_ascii = "L" * 300 + ".npy"
    long_utf8 = "é" * 150 + ".npy"
    members = [
        ("nulXbyte.npy", 1),         # X becomes NUL below
        ("cafY.npy", 2),             # Y becomes CP437 0x82 (é)
        ("strasZe_Q.npy", 3),        # Z -> 0xE1 (ß), Q -> 0xB0 (░, three UTF-8 bytes)
        ("naïve_ünï.npy", 4),        # zipfile sets the UTF-8 flag
        (long_ascii, 5),
        (long_utf8, 6),
        ("D" * 250 + "/f.npy", 7),
        ("M" * 300 + "1", 8),
        ("M" * 300 + "2", 9),
    ]
    arc = S.write_zip(tmp_path / "names.zip", [(zi(n), arr_bytes(v)) for n, v in members])
    S.rename_member_bytes(arc, b"nulXbyte.npy", b"nul\0byte.npy")
    S.rename_member_bytes(arc, b"cafY.npy", b"caf\x82.npy")
    S.rename_member_bytes(arc, b"strasZe_Q.npy", b"stras\xe1e_\xb0.npy")
    want = {
        "nul_byte.npy": 1, "café.npy": 2, "strasße_░.npy": 3, "naïve_ünï.npy": 4,
        "L" * 251 + ".npy": 5, "é" * 125 + ".npy": 6, "D" * 250 + "/f.npy": 7, "M" * 255: 9, "M" * 253 + "~1": 8,
    }
    ref = S.Reference(arc)
    assert {p: ref.data(p) for p in ref.files()} == {p: arr_bytes(v) for p, v in want.items()}
    with mount(arc) as mnt:
        assert contents_of(mnt) == {p: arr_bytes(v) for p, v in want.items()}
        assert set(os.listdir(mnt)) == {p.split("/")[0] for p in want}
        for name in os.listdir(mnt):
            assert len(os.fsencode(name)) <= 255
        S.check_mount(mnt, ref)


# --------------------------------------------------------------------------------------------
# 70,000 members

N_FLAT = 60_000
N_TREE = 10_000


@pytest.fixture(scope="module")
def many_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("many") / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(N_FLAT):
            zf.writestr(zi(f"flat/m{i:05d}.npy"), b"%d\n" % i)
        for i in range(N_TREE):
            zf.writestr(zi(f"tree/d{i % 100:02d}/m{i:05d}.npy"), b"t%d\n" % i)
    return path


def test_70000_members(many_zip, mount):
    tail = many_zip.read_bytes()[-200:]
    assert b"PK\x06\x06" in tail, "premise: more than 65,535 entries need a ZIP64 end record"
    with mount(many_zip) as mnt:
        assert sorted(os.listdir(mnt)) == ["flat", "tree"]
        flat = os.listdir(mnt / "flat")
        assert len(flat) == N_FLAT
        assert set(flat) == {f"m{i:05d}.npy" for i in range(N_FLAT)}
        walked = S.walk_mount(mnt)
        assert sum(1 for k in walked.values() if k == "file") == N_FLAT + N_TREE
        assert sum(1 for k in walked.values() if k == "dir") == 2 + 100
        rng = random.Random(70000)
        for i in rng.sample(range(N_FLAT), 40) + [0, N_FLAT - 1]:
            p = mnt / "flat" / f"m{i:05d}.npy"
            assert os.stat(p).st_size == len(b"%d\n" % i)
            assert S.read_file(p) == b"%d\n" % i
        for i in rng.sample(range(N_TREE), 20) + [N_TREE - 1]:
            assert S.read_file(mnt / "tree" / f"d{i % 100:02d}" / f"m{i:05d}.npy") == b"t%d\n" % i
        assert len(os.listdir(mnt / "tree" / "d42")) == N_TREE // 100


# --------------------------------------------------------------------------------------------
# members that cannot be served: listed, EIO on read, everything else keeps working

GOOD = {"good1.npy": 1, "sub/good2.npy": 2, "good3.npy": 3}


def _damage_archive(path, compression):
    members = [(zi("good1.npy"), arr_bytes(0, 2000)), (zi("victim.npy"), arr_bytes(7, 5000)),
               (zi("sub/good2.npy"), arr_bytes(3, 3000)), (zi("good3.npy"), arr_bytes(9, 10))]
    return S.write_zip(path, members, compression=compression)


def _apply_damage(arc, damage):
    data = arc.read_bytes()
    e = S.find_entry(S.zip_layout(data), "victim.npy")
    if damage == "encrypted":  # PKWARE strong encryption (ZipCrypto and AES are decrypted)
        S.set_flags_and_method(arc, "victim.npy", flags_or=0x41)
    elif damage.startswith("method_"):
        S.set_flags_and_method(arc, "victim.npy", method=int(damage.split("_")[1]))
    elif damage == "overlap":
        # the data runs 100 bytes into the next member's local header
        S.set_central_sizes(arc, "victim.npy", e.csize + 100, e.usize + 100)
    elif damage == "bad_local_signature":
        S.patch_file(arc, [(e.local_off, b"PK\x09\x09")])
    elif damage == "local_offset_past_end":
        S.set_central_local_offset(arc, "victim.npy", len(data) + 1000)
    elif damage == "data_past_end":
        S.set_central_sizes(arc, "victim.npy", len(data), len(data))
    else:
        raise AssertionError(damage)


DAMAGES = ["encrypted", "method_1", "method_6", "method_9", "method_12", "method_14",
           "method_93", "method_99", "overlap", "bad_local_signature", "local_offset_past_end",
           "data_past_end"]
DAMAGE_CASES = ([(d, zipfile.ZIP_STORED) for d in DAMAGES]
                + [(d, zipfile.ZIP_DEFLATED) for d in ("encrypted", "method_12", "overlap",
                                                       "data_past_end")])


@pytest.mark.parametrize("damage,compression", DAMAGE_CASES,
                         ids=[f"{d}-{'deflated' if c else 'stored'}" for d, c in DAMAGE_CASES])
def test_damaged_member_reads_eio(damage, compression, tmp_path, mount):
    arc = _damage_archive(tmp_path / "d.zip", compression)
    good = {p: S.Reference(arc).data(p) for p in GOOD}
    _apply_damage(arc, damage)
    with mount(arc) as mnt:
        assert sorted(os.listdir(mnt)) == ["good1.npy", "good3.npy", "sub", "victim.npy"]
        st = os.stat(mnt / "victim.npy")  # listed and stat-able
        assert stat.S_ISREG(st.st_mode)
        for p, b in good.items():
            assert S.read_file(mnt / p) == b, p
        assert S.read_errno(mnt / "victim.npy") == S.EIO
        with pytest.raises(OSError) as ei:
            np.load(mnt / "victim.npy")
        assert ei.value.errno == S.EIO
        # others still fine, and the victim still fails the same way
        for p, b in good.items():
            assert S.read_file(mnt / p) == b, p
        assert S.read_errno(mnt / "victim.npy", bufsize=4096) == S.EIO
        assert os.stat(mnt / "victim.npy").st_ino == st.st_ino


def test_member_errors_logged_once_in_foreground(tmp_path):
    # with -f the reason for a member that cannot be served goes to stderr, once per member
    import subprocess

    arc = _damage_archive(tmp_path / "d.zip", zipfile.ZIP_STORED)
    _apply_damage(arc, "encrypted")
    mp = tmp_path / "mnt"
    mp.mkdir()
    errpath = tmp_path / "stderr"
    with open(errpath, "wb") as err:
        proc = subprocess.Popen([S.BIN, "-f", str(arc), str(mp)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while not S.is_mountpoint(mp):
            assert proc.poll() is None, errpath.read_text()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        for _ in range(3):
            assert S.read_errno(mp / "victim.npy") == S.EIO
        assert S.read_file(mp / "good1.npy")
    finally:
        S.force_unmount(mp)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert not S.is_mountpoint(mp)
    lines = [ln for ln in errpath.read_text().splitlines() if "victim.npy" in ln]
    assert len(lines) == 1, errpath.read_text()
    assert "encrypt" in lines[0].lower(), lines[0]
    assert "good1.npy" not in errpath.read_text()


# --------------------------------------------------------------------------------------------
# recorded modes and times


def test_recorded_unix_modes(tmp_path, mount):
    members = [
        (zi("exec.npy", create_system=3, external_attr=0o100755 << 16), arr_bytes(1)),
        (zi("private.npy", create_system=3, external_attr=0o100600 << 16), arr_bytes(2)),
        (zi("group.npy", create_system=3, external_attr=0o100640 << 16), arr_bytes(3)),
        (zi("world.npy", create_system=3, external_attr=0o100777 << 16), arr_bytes(4)),
        (zi("none.npy", create_system=3, external_attr=0o100600 << 16), arr_bytes(5)),
        (zi("dos.npy", create_system=0, external_attr=0x20), arr_bytes(6)),
        (zi("dos_ro.npy", create_system=0, external_attr=0x01), arr_bytes(7)),
        (zi("ntfs.npy", create_system=11, external_attr=(0o100777 << 16) | 0x20),
         arr_bytes(8)),
        (zi("dpriv/", create_system=3, external_attr=(0o40700 << 16) | 0x10), b""),
        (zi("dpriv/f.npy", create_system=3, external_attr=0o100644 << 16), arr_bytes(9)),
        (zi("ddos/", create_system=0, external_attr=0x10), b""),
        (zi("ddos/f.npy", create_system=0, external_attr=0x20), arr_bytes(10)),
        (zi("imp/f.npy", create_system=3, external_attr=0o100444 << 16), arr_bytes(11)),
    ]
    arc = S.write_zip(tmp_path / "modes.zip", members)
    # zipfile refuses to write a zero mode; a Unix-made entry without one is patched in
    S.set_central_attrs(arc, "none.npy", external_attr=0)
    want = {"exec.npy": 0o555, "private.npy": 0o400, "group.npy": 0o440, "world.npy": 0o555,
            "none.npy": 0o444, "dos.npy": 0o444, "dos_ro.npy": 0o444, "ntfs.npy": 0o444,
            "dpriv": 0o500, "dpriv/f.npy": 0o444, "ddos": 0o555, "ddos/f.npy": 0o444,
            "imp": 0o555, "imp/f.npy": 0o444}
    ref = S.Reference(arc)
    for p, m in want.items():  # the model agrees with the hand-written table
        n = ref.tree[p]
        assert S.expected_mode(n.info, n.kind == "dir") == m, p
    with mount(arc) as mnt:
        got = {p: S.mode_bits(os.stat(mnt / p)) for p in want}
        assert {p: oct(m) for p, m in got.items()} == {p: oct(m) for p, m in want.items()}
        for p in want:
            st = os.stat(mnt / p)
            assert stat.S_ISDIR(st.st_mode) == (p in ("dpriv", "ddos", "imp")), p
            assert stat.S_ISREG(st.st_mode) == p.endswith(".npy"), p
        # whatever the recorded mode, root can read everything and nobody can write
        assert S.read_file(mnt / "none.npy") == arr_bytes(5)
        S.check_mount(mnt, ref)


@pytest.mark.parametrize("tz", [None, "UTC0", "XST-5:30", "YST+9"])
def test_mtimes_from_dos_date_time(tz, tmp_path, mount):
    stamps = [(1980, 1, 1, 0, 0, 0), (1999, 12, 31, 23, 59, 58), (2000, 2, 29, 12, 0, 0),
              (2024, 6, 30, 6, 7, 8), (2037, 12, 31, 23, 59, 58), (2099, 1, 1, 0, 0, 2)]
    members = [(zi(f"t{i}.npy", date_time=dt), arr_bytes(i)) for i, dt in enumerate(stamps)]
    members.append((zi("dir/", date_time=(2010, 10, 10, 10, 10, 10)), b""))
    arc = S.write_zip(tmp_path / "times.zip", members)
    env = None if tz is None else dict(os.environ, TZ=tz)
    saved = os.environ.get("TZ")
    try:
        if tz is not None:
            os.environ["TZ"] = tz
            time.tzset()
        want = {f"t{i}.npy": int(time.mktime(dt + (0, 0, -1))) for i, dt in enumerate(stamps)}
        want["t0.npy"] = int(os.stat(arc).st_mtime)  # numpy's placeholder: the archive's time
        want["dir"] = int(time.mktime((2010, 10, 10, 10, 10, 10, 0, 0, -1)))
    finally:
        if saved is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = saved
        time.tzset()
    with mount(arc, env=env) as mnt:
        got = {p: int(os.stat(mnt / p).st_mtime) for p in want}
        assert got == want


# --------------------------------------------------------------------------------------------
# a member past 4 GiB (sparse file): ZIP64 sizes and offsets in every header

HUGE_N = (1 << 32) + 12345  # uint8 elements
MARK = b"ENDMARK!"


def _write_huge_zip(path):
    """huge.npy: a uint8 array of HUGE_N elements, zeros but for MARK at the end, stored;
    then after.npy, whose local header lies past 4 GiB. Written sparsely, by hand."""
    hdr = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        hdr, {"descr": "|u1", "fortran_order": False, "shape": (HUGE_N,)})
    head = hdr.getvalue()
    size1 = len(head) + HUGE_N
    zeros = bytes(64 << 20)
    crc = zlib.crc32(head)
    left = HUGE_N - len(MARK)
    while left:
        n = min(left, len(zeros))
        crc = zlib.crc32(zeros[:n] if n < len(zeros) else zeros, crc)
        left -= n
    crc1 = zlib.crc32(MARK, crc)
    after = S.npy_bytes(np.arange(10, dtype=np.int16))
    crc2 = zlib.crc32(after)
    Z = S.Z
    t, d = (8 << 11) | (30 << 5), ((2020 - 1980) << 9) | (1 << 5) | 1
    unix = dict(made_by=(3 << 8) | 45, version=45, time=t, date=d, external=0o100644 << 16)
    with open(path, "wb") as f:
        n1 = b"huge.npy"
        f.write(Z.local_header(n1, Z.zip64_extra(size1, size1), version=45, time=t, date=d,
                               crc=crc1, csize=Z.U32, usize=Z.U32))
        f.write(head)
        f.seek(HUGE_N - len(MARK), os.SEEK_CUR)  # the sparse hole
        f.write(MARK)
        off2 = f.tell()
        assert off2 > 0xFFFFFFFF
        n2 = b"after.npy"
        f.write(Z.local_header(n2, time=t, date=d, crc=crc2, csize=len(after),
                               usize=len(after)) + after)
        cd = f.tell()
        f.write(Z.central_header(n1, Z.zip64_extra(size1, size1), crc=crc1, csize=Z.U32,
                                 usize=Z.U32, offset=0, **unix))
        f.write(Z.central_header(n2, Z.zip64_extra(off2), crc=crc2, csize=len(after),
                                 usize=len(after), offset=Z.U32, **unix))
        cd_size = f.tell() - cd
        z64 = f.tell()
        f.write(Z.zip64_end_record(made_by=(3 << 8) | 45, on_disk=2, total=2, cd_size=cd_size,
                                   cd_offset=cd))
        f.write(Z.zip64_locator(z64))
        f.write(Z.end_record(on_disk=2, total=2, cd_size=Z.U32, cd_offset=Z.U32))
    return size1, after


@pytest.fixture(scope="module")
def huge_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "huge.zip"
    size1, after = _write_huge_zip(path)
    st = os.stat(path)
    if st.st_blocks * 512 > (256 << 20):
        path.unlink()
        pytest.skip("the temporary file system does not keep files sparse")
    return path, size1, after


def test_member_past_4gib(huge_zip, mount):
    path, size1, after = huge_zip
    with zipfile.ZipFile(path) as zf:  # the construction is sound
        assert zf.getinfo("huge.npy").file_size == size1
        assert zf.read("after.npy") == after
    with mount(path) as mnt:
        assert sorted(os.listdir(mnt)) == ["after.npy", "huge.npy"]
        assert os.stat(mnt / "huge.npy").st_size == size1
        assert S.read_file(mnt / "after.npy") == after
        fd = os.open(mnt / "huge.npy", os.O_RDONLY)
        try:
            assert os.pread(fd, 6, 0) == b"\x93NUMPY"
            assert os.pread(fd, 100, size1 - len(MARK)) == MARK
            assert os.pread(fd, 4096, (1 << 32) + 7) == bytes(4096)
            assert os.pread(fd, 16, size1 - 16) == bytes(8) + MARK
        finally:
            os.close(fd)

        def check():
            a = np.load(mnt / "huge.npy", mmap_mode="r")
            assert a.shape == (HUGE_N,)
            assert bytes(a[-len(MARK):]) == MARK
            assert a[(1 << 32) + 1] == 0 and a[0] == 0

        S.run_in_child(check)
