"""Helpers for the npzmount integration tests.

Nothing in here knows about pytest fixtures (those live in conftest.py); it is plain code:

* running the binary and mounting/unmounting it safely (``mounted``),
* reading /proc/self/mountinfo (``is_mountpoint``, ``mount_count``, ``mount_options``),
* a Python model of the naming rule of src/namespace.h (``expected_tree``),
* expected attributes of a member (``expected_mode``, ``expected_mtime``),
* a small ZIP layout parser and byte patchers used to build broken archives,
* reading helpers for the mounted files.
"""

import contextlib
import errno
import io
import os
import signal
import stat
import struct
import subprocess
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("NPZMOUNT") or str(REPO / "npzmount")
FUSERMOUNT = "fusermount3"

MOUNT_TIMEOUT = float(os.environ.get("NPZMOUNT_MOUNT_TIMEOUT", "60"))
UNMOUNT_TIMEOUT = 30.0
DAEMON_EXIT_TIMEOUT = float(os.environ.get("NPZMOUNT_EXIT_TIMEOUT", "20"))

# Mounts made by this test process that are still up: realpath -> daemon pid (or None).
ACTIVE = {}
_ACTIVE_LOCK = threading.Lock()


# --------------------------------------------------------------------------------------------
# /proc/self/mountinfo


def _unescape_mountinfo(field):
    """mountinfo escapes space, tab, newline and backslash as \\ooo (octal)."""
    out = bytearray()
    raw = field.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\" and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "surrogateescape")


def mountinfo():
    """Yields dicts with mount_point, options, fstype, source, super_options, dev."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            pre, _, post = line.rstrip("\n").partition(" - ")
            a = pre.split(" ")
            b = post.split(" ")
            yield {
                "dev": a[2],
                "mount_point": _unescape_mountinfo(a[4]),
                "options": a[5].split(","),
                "fstype": b[0] if b else "",
                "source": _unescape_mountinfo(b[1]) if len(b) > 1 else "",
                "super_options": b[2].split(",") if len(b) > 2 else [],
            }


def mount_entries(path):
    p = os.path.realpath(path)
    return [m for m in mountinfo() if m["mount_point"] == p]


def mount_count(path):
    return len(mount_entries(path))


def is_mountpoint(path):
    return mount_count(path) > 0


def mount_options(path):
    """Per-mount options of the topmost mount at path (e.g. ['ro', 'nosuid', ...])."""
    entries = mount_entries(path)
    assert entries, f"{path} is not a mount point"
    return entries[-1]["options"]


def mounts_under(root):
    root = os.path.realpath(root).rstrip("/") + "/"
    return [m["mount_point"] for m in mountinfo() if m["mount_point"].startswith(root)]


# --------------------------------------------------------------------------------------------
# processes


def _pid_state(pid):
    """The state letter of pid ('R', 'S', 'Z', ...) or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2 : data.rindex(b")") + 3].decode()


def pid_alive(pid):
    state = _pid_state(pid)
    return state is not None and state not in ("Z", "X")


def find_daemons(mountpoint, cwd=None):
    """Live npzmount processes (other than us) with mountpoint among their arguments (not
    the fusermount3 helper that auto_unmount leaves waiting, which names it too)."""
    target = os.path.realpath(mountpoint)
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(os.fsdecode(argv[0])) == FUSERMOUNT:
            continue
        for arg in argv[1:]:
            if not arg:
                continue
            s = os.fsdecode(arg)
            if not os.path.isabs(s):
                s = os.path.join(cwd or "/", s)
            if os.path.normpath(s) == target and pid_alive(int(d)):
                found.append(int(d))
                break
    return found


def wait_exit(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def kill_pid(pid):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# running the binary


class Result:
    def __init__(self, args, returncode, stdout, stderr):
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self):
        return (f"Result(args={self.args!r}, rc={self.returncode}, stdout={self.stdout!r}, "
                f"stderr={self.stderr!r})")


def run_npzmount(args, timeout=MOUNT_TIMEOUT, env=None, cwd=None):
    """Runs the binary with args. Output goes to temporary files, not pipes, so that a daemon
    that (wrongly) keeps the caller's stdout/stderr open cannot make this wait forever."""
    argv = [BIN, *[str(a) for a in args]]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              timeout=timeout, env=env, cwd=cwd)
        out.seek(0)
        err.seek(0)
        return Result(argv, proc.returncode, out.read().decode("utf-8", "replace"),
                      err.read().decode("utf-8", "replace"))


def fusermount_unmount(mountpoint, lazy=False):
    args = [FUSERMOUNT, "-uz" if lazy else "-u", str(mountpoint)]
    try:
        return subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=UNMOUNT_TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        return -1


def force_unmount(mountpoint):
    """Unmounts every stacked mount at mountpoint: -u first, -uz when that fails."""
    for _ in range(8):
        if not is_mountpoint(mountpoint):
            return
        if fusermount_unmount(mountpoint) != 0:
            fusermount_unmount(mountpoint, lazy=True)


class MountError(AssertionError):
    pass


@contextlib.contextmanager
def mounted(archive, mountpoint, options=(), env=None, cwd=None, timeout=MOUNT_TIMEOUT):
    """Mounts archive at mountpoint (created when missing), yields the mountpoint as a Path,
    and always unmounts afterwards, asserting that nothing is left mounted and that the
    daemon exits. archive and mountpoint are passed to the binary exactly as given (so they
    may be relative to cwd)."""
    mp_given = str(mountpoint)
    mp = Path(os.path.realpath(os.path.join(cwd or os.getcwd(), mp_given)))
    mp.mkdir(parents=True, exist_ok=True)
    assert not is_mountpoint(mp), f"{mp} is already a mount point before mounting"
    body_failed = False
    pids = []
    try:
        try:
            res = run_npzmount([*options, archive, mp_given], timeout=timeout, env=env, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise MountError(f"npzmount {list(options)} {archive} {mp_given} did not return "
                             f"within {timeout}s (it must return once the mount is usable)")
        if res.returncode != 0:
            raise MountError(f"npzmount failed (exit {res.returncode}): {res.stderr.strip()!r}")
        if not is_mountpoint(mp):
            raise MountError("npzmount exited 0 but the mount point is not in "
                             f"/proc/self/mountinfo: {res!r}")
        pids = find_daemons(mp, cwd=cwd)
        with _ACTIVE_LOCK:
            ACTIVE[str(mp)] = pids[0] if pids else None
        try:
            yield mp
        except BaseException:
            body_failed = True
            raise
        # The daemon must have survived whatever the test did to it.
        for pid in pids:
            assert pid_alive(pid), f"the npzmount daemon (pid {pid}) died during the test"
        assert is_mountpoint(mp), "the mount disappeared during the test"
    finally:
        with _ACTIVE_LOCK:
            ACTIVE.pop(str(mp), None)
        clean = True
        if is_mountpoint(mp):
            if fusermount_unmount(mp) != 0:
                clean = False
                force_unmount(mp)
        left = is_mountpoint(mp)
        exited = all(wait_exit(pid, DAEMON_EXIT_TIMEOUT if clean else 2) for pid in pids)
        for pid in pids:
            if pid_alive(pid):
                kill_pid(pid)
        if not body_failed:
            assert not left, f"{mp} is still mounted after fusermount3 -u / -uz"
            assert clean, f"fusermount3 -u {mp} failed (busy?); needed a lazy unmount"
            assert exited, f"npzmount daemon {pids} did not exit after the unmount"


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
    i = 0
    while i + 4 <= len(extra):
        hid, n = struct.unpack_from("<HH", extra, i)
        d = extra[i + 4 : i + 4 + n]
        if hid == 0x5455 and n >= 5 and d[0] & 1:
            return struct.unpack_from("<i", d, 1)[0]
        i += 4 + n
    return None


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


# --------------------------------------------------------------------------------------------
# archives


def npy_bytes(arr, allow_pickle=True):
    b = io.BytesIO()
    np.save(b, arr, allow_pickle=allow_pickle)
    return b.getvalue()


def write_zip(path, members, compression=zipfile.ZIP_STORED, comment=b"", compresslevel=None):
    """members: iterable of (name or ZipInfo, bytes). Duplicates allowed."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'Duplicate name'
        with zipfile.ZipFile(path, "w", compression=compression,
                             compresslevel=compresslevel) as zf:
            for name, data in members:
                zf.writestr(name, data)
            if comment:
                zf.comment = comment
    return Path(path)


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


class Entry:
    """One member as laid out in the file (all offsets absolute within the file)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return f"Entry({self.name!r}, local={self.local_off}, data={self.data_off})"


def zip_layout(data):
    """Parses the archive bytes (no prepended data) and returns a list of Entry with cd_off,
    local_off, data_off, name (bytes), flags, method, crc, csize, usize."""
    pos = None
    for i in range(len(data) - 22, max(-1, len(data) - 22 - 65536), -1):
        if data[i : i + 4] == b"PK\x05\x06":
            clen = struct.unpack_from("<H", data, i + 20)[0]
            if i + 22 + clen == len(data):
                pos = i
                break
    assert pos is not None, "no end of central directory record"
    cd_size, cd_off = struct.unpack_from("<II", data, pos + 12)
    if pos >= 20 and data[pos - 20 : pos - 16] == b"PK\x06\x07":
        z64 = struct.unpack_from("<Q", data, pos - 20 + 8)[0]
        assert data[z64 : z64 + 4] == b"PK\x06\x06"
        cd_size, cd_off = struct.unpack_from("<QQ", data, z64 + 40)
    entries = []
    p = cd_off
    while p < cd_off + cd_size:
        assert data[p : p + 4] == b"PK\x01\x02", f"bad central entry at {p}"
        (flags, method, _t, _d, crc, csize, usize, nlen, xlen, clen, _disk, _ia, _ea,
         local) = struct.unpack_from("<HHHHIIIHHHHHII", data, p + 8)
        name = data[p + 46 : p + 46 + nlen]
        extra = data[p + 46 + nlen : p + 46 + nlen + xlen]
        need = [csize == 0xFFFFFFFF, usize == 0xFFFFFFFF, local == 0xFFFFFFFF]
        if any(need):
            i = 0
            while i + 4 <= len(extra):
                hid, n = struct.unpack_from("<HH", extra, i)
                if hid == 1:
                    vals = list(struct.unpack_from("<%dQ" % (n // 8), extra, i + 4))
                    if need[1]:
                        usize = vals.pop(0)
                    if need[0]:
                        csize = vals.pop(0)
                    if need[2]:
                        local = vals.pop(0)
                    break
                i += 4 + n
        assert data[local : local + 4] == b"PK\x03\x04", f"bad local header at {local}"
        lnlen, lxlen = struct.unpack_from("<HH", data, local + 26)
        entries.append(Entry(cd_off=p, local_off=local, data_off=local + 30 + lnlen + lxlen,
                             name=name, flags=flags, method=method, crc=crc, csize=csize,
                             usize=usize))
        p += 46 + nlen + xlen + clen
    return entries


def find_entry(entries, name):
    if isinstance(name, str):
        name = name.encode()
    hits = [e for e in entries if e.name == name]
    assert len(hits) == 1, f"{name!r}: {len(hits)} entries"
    return hits[0]


def patch_file(path, edits):
    """edits: iterable of (offset, bytes)."""
    with open(path, "r+b") as f:
        for off, b in edits:
            f.seek(off)
            f.write(b)


def set_flags_and_method(path, name, flags_or=0, method=None):
    """Sets bits in the general purpose flags and/or the method, in both the local and the
    central header of member name."""
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    edits = []
    lflags, lmethod = struct.unpack_from("<HH", data, e.local_off + 6)
    cflags, cmethod = struct.unpack_from("<HH", data, e.cd_off + 8)
    edits.append((e.local_off + 6, struct.pack("<HH", lflags | flags_or,
                                                lmethod if method is None else method)))
    edits.append((e.cd_off + 8, struct.pack("<HH", cflags | flags_or,
                                             cmethod if method is None else method)))
    patch_file(path, edits)


def set_central_crc(path, name, crc):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    patch_file(path, [(e.cd_off + 16, struct.pack("<I", crc & 0xFFFFFFFF))])
    return e.crc


def set_central_sizes(path, name, csize, usize):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    patch_file(path, [(e.cd_off + 20, struct.pack("<II", csize, usize))])


def set_central_local_offset(path, name, offset):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    patch_file(path, [(e.cd_off + 42, struct.pack("<I", offset))])


def rename_member_bytes(path, old, new):
    """Replaces member name old by new (same length, bytes) in both headers."""
    assert len(old) == len(new)
    data = bytearray(Path(path).read_bytes())
    e = find_entry(zip_layout(bytes(data)), old)
    for off in (e.local_off + 30, e.cd_off + 46):
        assert data[off : off + len(old)] == old
        data[off : off + len(old)] = new
    Path(path).write_bytes(bytes(data))


def corrupt_member_data(path, name, fraction=0.5, count=16):
    """XORs count bytes of member name's stored (compressed) data with 0xFF, starting at
    fraction of the way in. Returns the Entry."""
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    assert e.csize > count * 4, "member too small to corrupt in the middle"
    at = e.data_off + int(e.csize * fraction)
    chunk = bytes(b ^ 0xFF for b in data[at : at + count])
    patch_file(path, [(at, chunk)])
    return e


def member_raw_data(path, name):
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    return data[e.data_off : e.data_off + e.csize], e


# --------------------------------------------------------------------------------------------
# reading


def read_file(path, bufsize=1 << 20):
    out = bytearray()
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(bufsize)
            if not b:
                return bytes(out)
            out += b


def pread_all(fd, size, chunk):
    out = bytearray()
    off = 0
    while True:
        b = os.pread(fd, chunk, off)
        if not b:
            break
        out += b
        off += len(b)
    assert off == size, f"read {off} bytes, expected {size}"
    return bytes(out)


def read_errno(path, bufsize=1 << 20):
    """Reads path to the end; returns None when that works, else the errno of the failure."""
    try:
        read_file(path, bufsize)
    except OSError as e:
        return e.errno
    return None


EIO = errno.EIO
EROFS = errno.EROFS


def mode_bits(st):
    return stat.S_IMODE(st.st_mode)


# --------------------------------------------------------------------------------------------
# test data

STRUCT_DTYPE = np.dtype([("id", "<i4"), ("pos", ">f8", (3,)), ("name", "S7"), ("ok", "?")])


def make_stored_arrays():
    """Arrays covering the layouts np.load(mmap_mode='r') must handle (keys -> arrays)."""
    rng = np.random.default_rng(20240601)
    s = np.zeros(1000, dtype=STRUCT_DTYPE)
    s["id"] = np.arange(1000)
    s["pos"] = rng.standard_normal((1000, 3))
    s["name"] = [b"n%05d" % i for i in range(1000)]
    s["ok"] = rng.integers(0, 2, 1000).astype(bool)
    arrays = {
        "c_order": rng.standard_normal((300, 201)),
        "f_order": np.asfortranarray(rng.standard_normal((123, 457)).astype(np.float32)),
        "f_order_3d": np.asfortranarray(rng.integers(-9, 9, (7, 11, 13)).astype(np.int16)),
        "structured": s,
        "big_endian_i4": np.arange(-5000, 5000, dtype=">i4"),
        "big_endian_f8": rng.standard_normal(777).astype(">f8"),
        "zero_d": np.array(42.5),
        "zero_d_int": np.array(-7, dtype=np.int64),
        "empty": np.zeros((0, 5)),
        "empty_1d_be": np.zeros(0, dtype=">u2"),
        "empty_struct": np.zeros(0, dtype=STRUCT_DTYPE),
        "bool_": rng.integers(0, 2, 4097).astype(bool),
        "int8": rng.integers(-128, 128, 10001, dtype=np.int8),
        "uint16": rng.integers(0, 2**16, (33, 65), dtype=np.uint16),
        "uint64": rng.integers(0, 2**63, 999, dtype=np.uint64),
        "float16": rng.standard_normal(3001).astype(np.float16),
        "complex128": (rng.standard_normal(500) + 1j * rng.standard_normal(500)),
        "datetime64": np.arange("2000-01-01", "2000-03-01", dtype="datetime64[h]"),
        "unicode": np.array(["alpha", "βeta", "γάμμα", "", "delta-long-string"]),
        "bytes_": np.array([b"ab", b"", b"xyz"]),
        # ~3 MiB, not a multiple of the page size: the random pread target.
        "medium": rng.integers(0, 2**31, 786_433, dtype=np.int32),
        "a/b": np.arange(10),
        "a/c/d": np.eye(4),
        "deep/er/still/x": np.arange(6, dtype=np.uint8).reshape(2, 3),
        "with space": np.ones(3),
        "ünïcødé_key": np.full(5, 3, dtype=np.int32),
    }
    objects = np.empty(5, dtype=object)
    objects[:] = ["text", 12345, (1, 2.5, "t"), None, {"k": [1, 2, 3]}]
    arrays["objects"] = objects
    return arrays


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


def set_central_attrs(path, name, create_system=None, external_attr=None):
    """Patches 'version made by' (its high byte: the host system) and/or the external
    attributes of member name in the central directory."""
    data = Path(path).read_bytes()
    e = find_entry(zip_layout(data), name)
    edits = []
    if create_system is not None:
        edits.append((e.cd_off + 5, bytes([create_system])))
    if external_attr is not None:
        edits.append((e.cd_off + 38, struct.pack("<I", external_attr)))
    patch_file(path, edits)


def add_archive_comment(path, comment):
    """Appends comment to the archive's end record (which must have none yet)."""
    data = Path(path).read_bytes()
    pos = data.rindex(b"PK\x05\x06")
    assert pos + 22 == len(data), "the archive already has a comment"
    data = data[: pos + 20] + struct.pack("<H", len(comment)) + comment
    Path(path).write_bytes(data)


def to_zip64_end(src, dst):
    """Rewrites an archive so that it ends with a ZIP64 end record + locator and a classic end
    record whose fields are all saturated (the ZIP64 record holds the real values)."""
    data = Path(src).read_bytes()
    pos = data.rindex(b"PK\x05\x06")
    assert pos + 22 == len(data)
    _sig, _d, _cd, _n, total, cd_size, cd_off, _c = struct.unpack_from("<IHHHHIIH", data, pos)
    body = data[:pos]
    z64_off = len(body)
    z64 = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x031E, 45, 0, 0, total, total,
                      cd_size, cd_off)
    loc = struct.pack("<IIQI", 0x07064B50, 0, z64_off, 1)
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF,
                       0xFFFFFFFF, 0xFFFFFFFF, 0)
    Path(dst).write_bytes(body + z64 + loc + eocd)
    return Path(dst)


INFOZIP_TREE = {
    # path -> (mode, array); directories: path ending in '/' -> mode
    "a.npy": (0o640, lambda: np.arange(1000, dtype=np.int32)),
    "c.npy": (0o444, lambda: np.linspace(0, 1, 333)),
    "sub/": 0o750,
    "sub/b.npy": (0o755, lambda: np.eye(20, dtype=np.float32)),
    "sub/empty/": 0o700,
    "sub/deeper/": 0o755,
    "sub/deeper/d.npy": (0o600, lambda: np.arange(5000, dtype=">i8").reshape(50, 100)),
}
INFOZIP_MTIME = 1622548800  # 2021-06-01 12:00:00 UTC: an even second


def make_infozip_tree(root):
    """Writes INFOZIP_TREE under root with its modes and an even-second mtime everywhere."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for p, spec in INFOZIP_TREE.items():
        if p.endswith("/"):
            (root / p).mkdir(parents=True, exist_ok=True)
    for p, spec in INFOZIP_TREE.items():
        if not p.endswith("/"):
            mode, make = spec
            np.save(root / p, make())
            os.chmod(root / p, mode)
            os.utime(root / p, (INFOZIP_MTIME, INFOZIP_MTIME))
    for p, spec in sorted(INFOZIP_TREE.items(), reverse=True):
        if p.endswith("/"):
            os.chmod(root / p, spec)
            os.utime(root / p, (INFOZIP_MTIME, INFOZIP_MTIME))
    return root


def infozip(tree, out, *flags, pipe=False):
    """Runs Info-ZIP zip -r inside tree. With pipe=True the archive is written to a pipe (so
    zip cannot seek: data descriptors)."""
    out = Path(out).resolve()
    if pipe:
        with open(out, "wb") as f:
            p = subprocess.run(["zip", "-q", "-r", *flags, "-", "."], cwd=tree,
                               stdout=subprocess.PIPE, check=True, timeout=120)
            f.write(p.stdout)
    else:
        subprocess.run(["zip", "-q", "-r", *flags, str(out), "."], cwd=tree, check=True,
                       timeout=120)
    return out


# --------------------------------------------------------------------------------------------
# memory mappings


def run_in_child(fn, *args):
    """Runs fn(*args) in a forked child and fails (AssertionError) when it fails.

    Touching a memory mapping whose FUSE read fails raises SIGBUS, which would kill pytest
    itself (leaving mounts behind); in a child it only fails the test that did it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(r)
            fn(*args)
        except BaseException:
            import traceback

            code = 1
            with contextlib.suppress(Exception):
                os.write(w, traceback.format_exc().encode("utf-8", "replace")[-60000:])
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode("utf-8", "replace")
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        hint = (" (SIGBUS: a read through the memory mapping failed, i.e. the FUSE read "
                "returned an error)" if sig == signal.SIGBUS else "")
        raise AssertionError(f"the checking child died of signal {signal.Signals(sig).name}"
                             f"{hint}")
    if os.WEXITSTATUS(status) != 0:
        raise AssertionError("failed in the checking child:\n" + msg)


def check_mmap_equal(path, want, check_layout=True):
    """np.load(path, mmap_mode='r') equals want (run it through run_in_child)."""
    got = np.load(path, mmap_mode="r")
    try:
        assert isinstance(got, np.memmap), type(got)
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        assert got.shape == want.shape, (got.shape, want.shape)
        if check_layout:
            assert got.flags.f_contiguous == want.flags.f_contiguous
            assert got.flags.c_contiguous == want.flags.c_contiguous
        assert np.array_equal(got, want)
        assert got.tobytes(order="A") == want.tobytes(order="A")
    finally:
        del got


def poll(cond, timeout, what, interval=0.02):
    """Waits until cond() is true, checking every interval seconds; fails after timeout
    seconds with a message naming what was awaited. For conditions no event announces."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# a daemon in the foreground (-f), as a child of the test


class Foreground:
    """A running `npzmount -f`: mp (the mount point), proc (its Popen) and stderr()."""

    def __init__(self, mp, proc, err_path):
        self.mp, self.proc, self._err_path = mp, proc, err_path

    def stderr(self):
        return Path(self._err_path).read_text(errors="replace")


@contextlib.contextmanager
def foreground(archive, mountpoint, options=(), timeout=MOUNT_TIMEOUT):
    """Starts `npzmount -f [options] archive mountpoint`, yields a Foreground once the mount
    is in /proc/self/mountinfo, and always ends it: unmounts what is still mounted and reaps
    the child (killing it if it does not exit). A test may stop it itself (a signal) and
    look at proc.returncode."""
    mp = Path(os.path.realpath(mountpoint))
    mp.mkdir(parents=True, exist_ok=True)
    assert not is_mountpoint(mp), f"{mp} is already a mount point before mounting"
    err_path = mp.parent / f".{mp.name}.stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([BIN, "-f", *[str(o) for o in options], str(archive), str(mp)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    with _ACTIVE_LOCK:
        ACTIVE[str(mp)] = proc.pid
    try:
        deadline = time.monotonic() + timeout
        while not is_mountpoint(mp):
            if proc.poll() is not None:
                raise MountError(f"npzmount -f exited ({proc.returncode}) before mounting: "
                                 f"{err_path.read_text(errors='replace')!r}")
            if time.monotonic() > deadline:
                raise MountError(f"npzmount -f: no mount after {timeout}s")
            time.sleep(0.02)
        yield Foreground(mp, proc, err_path)
    finally:
        with _ACTIVE_LOCK:
            ACTIVE.pop(str(mp), None)
        force_unmount(mp)
        try:
            proc.wait(DAEMON_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
