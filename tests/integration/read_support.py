"""Reading mounted files, for the npzmount integration tests: whole files, pread loops, the
errno of a failing read, and np.load through a memory mapping. Part of npz_support (import
that)."""

import errno
import os
import stat

import numpy as np

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


