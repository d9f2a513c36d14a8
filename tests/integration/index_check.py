"""Helpers for the tests of saved and shared indexes: how much a member's reads decoded, and
the read that shows whether an index was there."""

import os


def decoded(path):
    """Output bytes the daemon decoded for this member so far."""
    return int(os.getxattr(path, "user.npzmount.decoded"))


def tail_read(path, length):
    """The last 4 KiB of a file of `length` bytes, read first: without an index this decodes
    the whole member."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, 4096, length - 4096)
    finally:
        os.close(fd)
