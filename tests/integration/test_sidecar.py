"""Sidecar indexes: `npzmount --index --sidecar ARCHIVE` writes every member's index into
ARCHIVE.npzidx, and a mount uses a valid sidecar before its own index dir (checked like any
saved index; a damaged one is ignored with one log line). Bytes are compared with zipfile; how
much was decoded is read from the member's user.npzmount.decoded attribute."""

import os
import subprocess

import numpy as np
import pytest

import npz_support as S
from index_check import decoded, tail_read

SPAN = 256 << 10
MEMBERS = ("f.npy", "i.npy")
SIDECAR_HEADER = 64  # then the table: 24 bytes per member and a CRC-32


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    path = tmp_path_factory.mktemp("sidecar") / "c.npz"
    rng = np.random.default_rng(11)
    np.savez_compressed(path, f=rng.standard_normal(1_500_000).astype(np.float32),
                        i=np.arange(1_000_000, dtype=np.int64))
    return path


@pytest.fixture(scope="module")
def sidecar(archive, tmp_path_factory):
    """The sidecar's bytes, written once by --index --sidecar (which must succeed quietly)."""
    idx = tmp_path_factory.mktemp("sidecar_idx")
    res = subprocess.run([S.BIN, "--index", "--sidecar", "-o",
                          f"index_dir={idx},span={SPAN // 1024}k", str(archive)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    path = archive.parent / (archive.name + ".npzidx")
    assert path.is_file()
    data = path.read_bytes()
    path.unlink()  # each test places its own copy
    return data


def place(archive, tmp_path, data):
    """A copy of archive in tmp_path with data as its sidecar; returns the copy's path."""
    arc = tmp_path / archive.name
    arc.write_bytes(archive.read_bytes())
    (tmp_path / (archive.name + ".npzidx")).write_bytes(data)
    return arc


def opts(index_dir, log):
    return ["-o", f"index_dir={index_dir},span={SPAN // 1024}k,noprefetch,logfile={log}"]


def ignored_lines(log):
    return [ln for ln in log.read_text().splitlines() if "shared index ignored" in ln] \
        if log.exists() else []


def test_mount_uses_sidecar_before_empty_index_dir(archive, sidecar, tmp_path, mount):
    ref = S.Reference(archive)
    arc = place(archive, tmp_path, sidecar)
    idx = tmp_path / "empty_idx"
    idx.mkdir()
    log = tmp_path / "log"
    with mount(arc, *opts(idx, log)) as mnt:
        for name in MEMBERS:
            data = ref.data(name)
            assert tail_read(mnt / name, len(data)) == data[-4096:]
            assert decoded(mnt / name) <= 2 * SPAN + (256 << 10), name
            assert os.getxattr(mnt / name, "user.npzmount.complete") == b"1"
            assert S.read_file(mnt / name) == data, name
    assert ignored_lines(log) == []


def flip(data, at):
    b = bytearray(data)
    b[at] ^= 0x10
    return bytes(b)


DAMAGE = {
    "truncated": lambda d: d[:len(d) // 2],
    "header_only": lambda d: d[:SIDECAR_HEADER],
    "flip_header": lambda d: flip(d, 33),  # the entry count, under the header's CRC
    "flip_table": lambda d: flip(d, SIDECAR_HEADER + 5),
    "flip_member_index": lambda d: flip(d, SIDECAR_HEADER + 24 * len(MEMBERS) + 4 + 41),
    "zeroed": lambda d: bytes(len(d)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_sidecar_is_ignored(damage, archive, sidecar, tmp_path, mount):
    ref = S.Reference(archive)
    arc = place(archive, tmp_path, DAMAGE[damage](sidecar))
    idx = tmp_path / "empty_idx"
    idx.mkdir()
    log = tmp_path / "log"
    with mount(arc, *opts(idx, log)) as mnt:
        for name in MEMBERS:
            assert S.read_file(mnt / name) == ref.data(name), name
    assert len(ignored_lines(log)) == 1, log.read_text()


def test_sidecar_of_another_archive_is_ignored(archive, sidecar, tmp_path, mount):
    other = tmp_path / "other.npz"
    rng = np.random.default_rng(12)
    np.savez_compressed(other, f=rng.standard_normal(1_500_000).astype(np.float32),
                        i=np.arange(1_000_000, dtype=np.int64))
    (tmp_path / "other.npz.npzidx").write_bytes(sidecar)
    log = tmp_path / "log"
    with mount(other, *opts(tmp_path / "idx", log)) as mnt:
        assert S.read_file(mnt / "f.npy") == S.Reference(other).data("f.npy")
    lines = ignored_lines(log)
    assert len(lines) == 1 and "another archive" in lines[0], lines


def test_sidecar_on_bad_archive(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all" * 10)
    res = subprocess.run([S.BIN, "--index", "--sidecar", "-o", f"index_dir={tmp_path / 'idx'}",
                          str(bad)], capture_output=True, text=True, timeout=60)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npzmount: ") and "bad.npz" in lines[0]
    assert not (tmp_path / "bad.npz.npzidx").exists()


def test_sidecar_without_index_is_refused(archive):
    res = subprocess.run([S.BIN, "--sidecar", str(archive)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["npzmount: --sidecar goes with --index"]
