"""A directory tree of many small archives (stored, deflated, broken), plain files, nested
subdirectories and a symbolic link, written with numpy and zipfile, and what a mount of it
must show: the reference is zipfile's reading of each archive and the files' own bytes."""

import io
import os
import zipfile
from pathlib import Path

import numpy as np


def _good_archive(path, i, rng):
    """Archive number i: np.savez (stored), np.savez_compressed (deflated) or a zip of
    non-npy members with a subdirectory, by turns."""
    arrays = {f"a{k}": rng.standard_normal(int(rng.integers(1, 600))).astype(
        [np.float64, np.float32, np.int16][k % 3]) for k in range(1 + i % 3)}
    kind = i % 3
    if kind < 2:
        with open(path, "wb") as f:  # a file object: numpy names a path *.npz
            (np.savez if kind == 0 else np.savez_compressed)(f, **arrays)
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("notes.txt", f"archive {i}\n" * (i + 1), zipfile.ZIP_DEFLATED)
            z.writestr("data/raw.bin", rng.bytes(int(rng.integers(0, 5000))),
                       zipfile.ZIP_STORED)
            buf = io.BytesIO()
            np.save(buf, arrays["a0"])
            z.writestr("data/a0.npy", buf.getvalue(), zipfile.ZIP_DEFLATED)


def _broken_archive(path, i, rng):
    """Not readable as an archive: garbage, or a good archive cut short."""
    if i % 2:
        path.write_bytes(rng.bytes(300))
    else:
        _good_archive(path, i, rng)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])


def make_tree(root, n_archives=200, broken_every=23, seed=9):
    """Writes the tree under root. Returns (archives, broken, plain): paths relative to root
    of the good archives, the broken ones and the plain files."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    archives, broken, plain = [], [], []
    for i in range(n_archives):
        sub = Path(f"g{i % 7}") / ("deep/er" if i % 5 == 0 else "deep" if i % 5 == 1 else "")
        (root / sub).mkdir(parents=True, exist_ok=True)
        rel = sub / f"r{i:03d}.{'zip' if i % 11 == 0 else 'npz'}"
        if i % broken_every == 5:
            _broken_archive(root / rel, i, rng)
            broken.append(rel)
        else:
            _good_archive(root / rel, i, rng)
            archives.append(rel)
    for rel, data in [("README.txt", b"a run directory\n"), ("g0/log.bin", rng.bytes(70000)),
                      ("g3/deep/empty.dat", b""), ("g5/params.json", b'{"lr": 0.1}\n')]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        plain.append(Path(rel))
    (root / "link.npz").symlink_to(root / archives[0])  # left out of the mount
    os.mkfifo(root / "g1" / "fifo")                      # so is this
    return archives, broken, plain


def members(archive):
    """{member path: bytes} of an archive as zipfile reads it (directories left out)."""
    with zipfile.ZipFile(archive) as z:
        return {i.filename: z.read(i) for i in z.infolist() if not i.is_dir()}


def expected_listing(rel_dir, paths):
    """The names a mount must show in directory rel_dir of the tree (outside archives), given
    every file's path relative to the tree's root."""
    d = Path(rel_dir).parts
    return sorted({p.parts[len(d)] for p in paths
                   if p.parts[:len(d)] == d and len(p.parts) > len(d)})
