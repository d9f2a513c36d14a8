"""What a mount should show, for the npzmount integration tests: a Python model of the naming
rule of src/namespace.h, expected modes and mtimes, zipfile's view of an archive (Reference)
and the check of a whole mount against it. Part of npz_support (import that)."""

import os
import stat
import sys
import time
import zipfile
from pathlib import Path

from read_support import mode_bits, read_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import ziptool as Z  # noqa: E402  (tests/ziptool.py)

# --------------------------------------------------------------------------------------------
# the naming rule (src/namespace.h) as a model

NAME_MAX_BYTES = 255
EXT_MAX = 16  # a final ".xyz" up to this long is an extension, which cuts and suffixes keep


def name_components(raw):
    """raw: the member name as UTF-8 bytes. Returns its usable components (bytes, uncut)."""
    return [c for c in raw.split(b"/") if c not in (b"", b".", b"..")]


def make_name(c, suffix=0):
    """The name component c gets: itself when it fits and needs no suffix, else its stem cut
    (at a UTF-8 boundary when there is one) so that stem + "~N" + extension fits 255 bytes."""
    c = c or b"_"
    suf = b"~%d" % suffix if suffix else b""
    if suffix or len(c) > NAME_MAX_BYTES:
        dot = c.rfind(b".")
        ext = c[dot:] if dot > 0 and len(c) - dot <= EXT_MAX else b""
        stem = c[:len(c) - len(ext)]
        if len(stem) + len(suf) + len(ext) > NAME_MAX_BYTES:
            n = cut = NAME_MAX_BYTES - len(suf) - len(ext)
            while cut > 0 and (c[cut] & 0xC0) == 0x80:
                cut -= 1
            stem = c[:cut or n]
        c = stem + suf + ext
    c = c.replace(b"\0", b"_")
    return b"_" if c in (b"", b".", b"..") else c


def raw_name(info):
    """The member name as the product sees it: decoded (CP437 or UTF-8) then UTF-8 encoded,
    NUL bytes included (zipfile cuts ZipInfo.filename at a NUL; orig_filename keeps it)."""
    return info.orig_filename.encode("utf-8", "surrogateescape")


def is_dir_entry(info):
    """A name ending in '/' makes a directory entry unless the member holds data (then
    zipfile reads those bytes, and the mount shows a file)."""
    return raw_name(info).endswith(b"/") and info.file_size == 0


class Node:
    __slots__ = ("kind", "info", "index", "next_suffix")

    def __init__(self, kind, info=None, index=None):
        self.kind = kind  # 'dir' or 'file'
        self.info = info  # the ZipInfo behind it (for dirs: the last directory entry, or None)
        self.index = index
        self.next_suffix = 1

    def __repr__(self):
        return f"Node({self.kind}, {self.info.orig_filename if self.info else None!r})"


def expected_tree(infos):
    """Maps every path of the mount (relative, str, '/'-separated) to a Node, following the
    rule of src/namespace.h: directories first; then every file that can keep its own path,
    latest first (the last duplicate wins); then the others, latest first, get the first free
    ~N suffix, counted by the holder of the plain name, so a suffix never takes a path that
    some member has by its own name. A name too long to keep is cut in that last pass: it
    takes its cut name when free, else a suffix too."""
    nodes = {(): Node("dir")}

    def ensure_dirs(comps):
        for i in range(1, len(comps) + 1):
            key = tuple(comps[:i])
            if key not in nodes:
                nodes[key] = Node("dir")
        return tuple(comps)

    for i, info in enumerate(infos):
        raw = raw_name(info)
        comps = [make_name(c) for c in name_components(raw)]
        if is_dir_entry(info):
            d = ensure_dirs(comps)
            if d:
                nodes[d].info = info
                nodes[d].index = i
        else:
            ensure_dirs(comps[:-1])

    def leaf_key(info):
        comps = name_components(raw_name(info))
        return tuple(make_name(c) for c in comps[:-1]), (comps[-1] if comps else b"")

    renamed = []
    for i in range(len(infos) - 1, -1, -1):
        info = infos[i]
        if is_dir_entry(info):
            continue
        parent, leaf = leaf_key(info)
        if len(leaf) > NAME_MAX_BYTES or parent + (make_name(leaf),) in nodes:
            renamed.append(i)
        else:
            nodes[parent + (make_name(leaf),)] = Node("file", info, i)
    for i in renamed:
        info = infos[i]
        parent, leaf = leaf_key(info)
        cand = parent + (make_name(leaf),)
        owner = nodes.get(cand)
        while owner is not None:
            cand = parent + (make_name(leaf, owner.next_suffix),)
            owner.next_suffix += 1
            if cand not in nodes:
                break
        nodes[cand] = Node("file", info, i)
    return {"/".join(os.fsdecode(c) for c in k): v for k, v in nodes.items() if k}


def expected_children(tree, directory=""):
    prefix = directory + "/" if directory else ""
    out = set()
    for p in tree:
        if p.startswith(prefix) and "/" not in p[len(prefix):]:
            out.add(p[len(prefix):])
    return out


def walk_mount(root):
    """Maps every path under root (relative, str) to 'dir' or 'file' (by d_type)."""
    out = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for e in it:
                p = f"{rel}/{e.name}" if rel else e.name
                if e.is_dir(follow_symlinks=False):
                    out[p] = "dir"
                    stack.append(p)
                elif e.is_file(follow_symlinks=False):
                    out[p] = "file"
                else:
                    out[p] = "other"
    return out


def _ut_mtime(extra):
    """The modification time from a UT (0x5455) extended timestamp extra field, or None."""
    return Z.ut_mtime(extra)


def dos_time_known(date_time):
    """False for numpy's placeholder (1980-01-01 00:00:00) and for out-of-range DOS fields."""
    y, mo, d, h, mi, s = date_time
    if tuple(date_time) == (1980, 1, 1, 0, 0, 0):
        return False
    return 1 <= mo <= 12 and d >= 1 and h <= 23 and mi <= 59 and s <= 58


def expected_mtime(info, archive):
    """The UT extra field's time, else the DOS time as local time, unless that is a
    placeholder or invalid: then the archive file's own mtime."""
    ut = _ut_mtime(info.extra)
    if ut is not None:
        return ut
    if not dos_time_known(info.date_time):
        return int(os.stat(archive).st_mtime)
    return int(time.mktime(tuple(info.date_time) + (0, 0, -1)))


def recorded_mode(info):
    if info.create_system == 3:
        return info.external_attr >> 16
    return 0


def expected_mode(info, is_dir):
    """Permission bits: those a Unix writer recorded with the write bits cleared, else 0444
    for files and 0555 for directories. Recorded bits count only when they come with a file
    type (numpy records a bare 0600). A directory that is readable is also searchable (r
    implies x), or its recorded 0500 would make it unusable."""
    recorded = recorded_mode(info) if info is not None else 0
    if not stat.S_IFMT(recorded):
        return 0o555 if is_dir else 0o444
    mode = recorded & 0o555
    if is_dir:
        mode |= (mode & 0o444) >> 2
    return mode


def zip_infos(path):
    with zipfile.ZipFile(path) as zf:
        return zf.infolist()


def zip_reference(path):
    """(infolist, {id(info) -> bytes}) read with zipfile, every member by its own ZipInfo."""
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
        data = {}
        for info in infos:
            if not is_dir_entry(info):
                data[id(info)] = zf.read(info)
        return infos, data



# --------------------------------------------------------------------------------------------
# what a mount of an archive should show


class Reference:
    """What zipfile says about an archive, arranged as the mount should show it."""

    def __init__(self, archive, infos=None, data=None):
        if infos is None:
            infos, data = zip_reference(archive)
        self.archive = Path(archive)
        self.infos = infos
        self._data = data  # id(info) -> bytes
        self.tree = expected_tree(infos)

    def files(self):
        return sorted(p for p, n in self.tree.items() if n.kind == "file")

    def dirs(self):
        return sorted(p for p, n in self.tree.items() if n.kind == "dir")

    def kinds(self):
        return {p: n.kind for p, n in self.tree.items()}

    def data(self, path):
        return self._data[id(self.tree[path].info)]

    def info(self, path):
        return self.tree[path].info


def check_mount(mnt, ref, contents=True, modes=True, mtimes=True, skip=()):
    """Asserts that the mount shows exactly ref: paths, kinds, sizes, bytes, modes, mtimes.
    Paths in skip are listed and sized but not read."""
    assert walk_mount(mnt) == ref.kinds()
    for p in ref.files():
        info = ref.info(p)
        st = os.stat(os.path.join(mnt, p))
        assert stat.S_ISREG(st.st_mode), p
        assert st.st_size == info.file_size, p
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid()), p
        if modes:
            assert mode_bits(st) == expected_mode(info, False), (p, oct(st.st_mode))
        if mtimes:
            assert int(st.st_mtime) == expected_mtime(info, ref.archive), p
        if contents and p not in skip:
            assert read_file(os.path.join(mnt, p)) == ref.data(p), p
    for p in ref.dirs():
        st = os.stat(os.path.join(mnt, p))
        assert stat.S_ISDIR(st.st_mode), p
        node = ref.tree[p]
        if modes:
            assert mode_bits(st) == expected_mode(node.info, True), (p, oct(st.st_mode))
        if mtimes:
            # directories without an entry of their own take the archive's time
            want = (expected_mtime(node.info, ref.archive) if node.info is not None
                    else int(os.stat(ref.archive).st_mtime))
            assert int(st.st_mtime) == want, p


