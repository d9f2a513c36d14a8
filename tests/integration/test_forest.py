"""A directory of archives mounted as one tree (npzmount DIR MP, or several archives before
MP): every member of every good archive equals zipfile's reading, plain files equal their
bytes, broken archives are empty directories logged once, and with -o max_open=N the
daemon's descriptors and memory stay bounded while inode numbers survive an archive being
closed and opened again."""

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import forest_support as F
import npz_support as S

MAX_OPEN = 8
CACHE = 8 << 20
MIB = 1 << 20


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("forest") / "runs"
    root.mkdir()
    archives, broken, plain = F.make_tree(root)
    ref = {rel: F.members(root / rel) for rel in archives}
    return root, archives, broken, plain, ref


def _daemon(mnt):
    pids = S.find_daemons(mnt)
    assert len(pids) == 1, pids
    return pids[0]


def _open_archives(pid, root):
    """The archives of the tree the daemon has open now."""
    return {t for t in S.daemon_fds(pid).values() if t.startswith(str(root) + "/") and
            t.endswith((".npz", ".zip"))}


def test_tree_equals_zipfile_with_bounded_fds_and_memory(tree, mount, tmp_path):
    root, archives, broken, plain, ref = tree
    log = tmp_path / "npzmount.log"
    with mount(root, "-o", f"max_open={MAX_OPEN},cache=8M,noindex,logfile={log}") as mnt:
        pid = _daemon(mnt)
        every = [*archives, *broken, *plain]
        # the tree's own directories, links and FIFOs left out
        dirs = {Path(*p.parts[:k]) for p in every for k in range(len(p.parts))}
        for d in dirs:
            assert sorted(os.listdir(mnt / d)) == F.expected_listing(d, every), d
        for rel in plain:
            assert (mnt / rel).read_bytes() == (root / rel).read_bytes(), rel
            assert os.stat(mnt / rel).st_size == os.stat(root / rel).st_size
        for rel in archives:
            assert (mnt / rel).is_dir(), rel
            for name, data in ref[rel].items():
                assert (mnt / rel / name).read_bytes() == data, (rel, name)
            assert len(_open_archives(pid, root)) <= MAX_OPEN
        for rel in broken:  # twice: one log line each all the same
            for _ in range(2):
                assert (mnt / rel).is_dir() and os.listdir(mnt / rel) == [], rel
                assert not (mnt / rel / "a0.npy").exists()
        # numpy through the mount, on a deflated member
        rel = next(r for r in archives if any(n.endswith(".npy") for n in ref[r]) and
                   "r001" in str(r))
        assert np.array_equal(np.load(mnt / rel / "a0.npy"),
                              np.load(root / rel)["a0"])
        # bounded: open archives and descriptors by max_open, memory by the cache
        fds = S.daemon_fds(pid)
        assert len(_open_archives(pid, root)) <= MAX_OPEN
        assert len(fds) <= 3 * MAX_OPEN + 16, fds
        rss = S.proc_status(pid)["VmRSS"]
        assert rss < CACHE + 96 * MIB, f"daemon RSS {rss // MIB} MiB"
        # the tree was read at mount time: files added later do not appear
        np.savez(root / "late.npz", x=np.arange(3))
        (root / "g0" / "late.txt").write_bytes(b"late\n")
        try:
            assert not (mnt / "late.npz").exists()
            assert not (mnt / "g0" / "late.txt").exists()
        finally:
            os.unlink(root / "late.npz")
            os.unlink(root / "g0" / "late.txt")
    lines = log.read_text().splitlines()
    for rel in broken:
        said = [l for l in lines if str(root / rel) in l]
        assert len(said) == 1, (rel, said)
        assert "empty directory" in said[0]
    assert len(lines) == len(broken), lines


def test_concurrent_readers_across_archives(tree, mount):
    root, archives, broken, plain, ref = tree
    with mount(root, "-o", "max_open=4,noindex") as mnt:
        errors = []

        def reader(k):
            try:
                for rel in archives[k::6]:
                    for name, data in ref[rel].items():
                        got = (mnt / rel / name).read_bytes()
                        if got != data:
                            errors.append((rel, name))
            except Exception as e:  # reported below, not lost in the thread
                errors.append(repr(e))

        threads = [threading.Thread(target=reader, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []


def test_inode_numbers_survive_close_and_reopen(tree, mount):
    root, archives, broken, plain, ref = tree
    first = archives[1]  # np.savez_compressed of a0 and a1: names without directories
    names = sorted(ref[first])
    assert len(names) == 2 and not any("/" in n for n in names)
    with mount(root, "-o", "max_open=2,noindex") as mnt:
        pid = _daemon(mnt)
        before = os.stat(mnt / first / names[0]).st_ino
        assert str(root / first) in _open_archives(pid, root)
        for rel in archives[10:15]:  # more than max_open others: the first is closed
            for name in ref[rel]:
                (mnt / rel / name).read_bytes()
        assert str(root / first) not in _open_archives(pid, root)
        # a listing never made before comes from the daemon, which opens it again
        again = {e.name: e.inode() for e in os.scandir(mnt / first)}
        assert str(root / first) in _open_archives(pid, root)
        assert again[names[0]] == before
        assert os.stat(mnt / first / names[1]).st_ino == again[names[1]]
        # and every number is one no other file of the mount has
        seen = {}
        for rel in archives[:12]:
            for name in ref[rel]:
                ino = os.stat(mnt / rel / name).st_ino
                assert seen.setdefault(ino, (rel, name)) == (rel, name)


def test_several_archives_named_before_the_mount_point(tree, tmp_path):
    root, archives, broken, plain, ref = tree
    a, b = archives[0], archives[1]
    mp = tmp_path / "mnt"
    # a directory named with a trailing slash is still named after its last component
    with S.mounted(root / b, mp, ("-o", "noindex", str(root / a), str(root / "g2") + "/")) \
            as mnt:
        assert sorted(os.listdir(mnt)) == sorted([a.name, b.name, "g2"])
        for rel in (a, b):
            for name, data in ref[rel].items():
                assert (mnt / rel.name / name).read_bytes() == data
        inside = sorted(os.listdir(mnt / "g2"))
        assert inside == F.expected_listing("g2", [*archives, *broken, *plain])


def test_a_source_inside_the_mount_point_is_refused(tree, tmp_path):
    root = tree[0]
    r = S.run_npzmount([root / tree[1][0], root / tree[1][1], root.parent], timeout=30)
    assert r.returncode == 2, r
    assert r.stderr.startswith("npzmount: ") and len(r.stderr.splitlines()) == 1, r
    assert S.mount_count(root.parent) == 0
