"""Issue 11, memory: the daemon's peak RSS (VmHWM) stays within the budget the options set,
under archives made to defeat it (see adversarial.py):

(a) the ends of ten members that are each ONE ~250 MiB deflate block, read at once;
(b) one read near the end of a 3 GiB deflate bomb with a block boundary every MiB;
(c) a 256 MiB member with a block boundary every 32 KiB at span=32k, read whole.

Every mount uses -o cache=8M and the new options -o index_mem=16M -o threads=2 (issue 11; see
decode_support). Figures are printed as ``PEAK_RSS ...`` lines (and appended to $NPZ_METRICS).
Bytes read are checked against zlib/zipfile (never against the code under test). Memory
figures of a sanitized daemon mean nothing, so the module is skipped for it.
"""

import os
import time

import pytest

import adversarial as A
import decode_support as D

pytestmark = pytest.mark.skipif(D.SANITIZED, reason="memory figures of a sanitized daemon "
                                                   "mean nothing")

MIB = A.MIB
CACHE = 8 * MIB
INDEX_MEM = 16 * MIB
THREADS = 2
# These archives hold only deflate members: no libarchive decoder state can exist, so its
# share of the budget is 0 here. (With the default 256 MiB it would hide a whole-block buffer.)
DECODER_MEM = 0
BOUND = D.budget_bytes(CACHE, index_mem=INDEX_MEM, decoder_mem=DECODER_MEM, threads=THREADS)
READ_DEADLINE = 150  # seconds; the conftest watchdog ends any test at 180

OPTIONS = ("-o", "cache=8M",
           # new in issue 11:
           *D.new_options("-o", "index_mem=16M", "-o", f"threads={THREADS}"))


# archives (generated once per module; the streams are cached for the session)


@pytest.fixture(scope="module")
def huge_blocks(tmp_path_factory):
    return A.huge_blocks_zip(tmp_path_factory.mktemp("blocks") / "blocks.npz")


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return A.bomb_zip(tmp_path_factory.mktemp("bomb") / "bomb.npz")


@pytest.fixture(scope="module")
def span_archive(tmp_path_factory):
    return A.span_zip(tmp_path_factory.mktemp("span") / "span.npz")


def check_peak(capsys, label, pid, at_mount, elapsed, what):
    st = D.proc_status(pid)
    D.report(capsys, f"PEAK_RSS {label}: {st['VmHWM'] // 1024} KiB (VmRSS {st['VmRSS'] // 1024} "
                     f"KiB, at mount {at_mount['VmHWM'] // 1024} KiB, bound {BOUND // 1024} KiB; "
                     f"{what} in {elapsed:.1f}s)")
    assert st["VmHWM"] <= BOUND, (f"peak RSS {st['VmHWM'] // MIB} MiB over the budget "
                                  f"{BOUND // MIB} MiB ({what})")


# --------------------------------------------------------------------------------------------
# (a) ten members of one huge block each


def test_ends_of_ten_single_block_members(huge_blocks, mount, capsys):
    """Ten readers at once, each at the end of its own 250 MiB block: no decode may hold a
    whole block, and concurrent readers may not multiply the decode memory."""
    path, streams = huge_blocks
    want_len = 256 * 1024
    with D.mount_new(mount, path, *OPTIONS) as mnt:
        pid = D.daemon_of(mnt)
        at_mount = D.proc_status(pid)
        fds = {n: os.open(mnt / n, os.O_RDONLY) for n in streams}
        try:
            assert all(os.fstat(fds[n]).st_size == s.usize for n, s in streams.items())
            # past the end on purpose: the read must stop at the member's end
            reads = {n: D.Timed(lambda n=n: os.pread(fds[n], want_len + 4096,
                                                     streams[n].usize - want_len), n)
                     for n in streams}
            deadline = time.monotonic() + READ_DEADLINE
            if not all(t.wait(deadline) for t in reads.values()):
                D.S.kill_pid(pid)
                pytest.fail(f"reads of the block ends not done in {READ_DEADLINE}s: daemon "
                            "killed")
            for n, t in reads.items():
                assert t.result() == streams[n].tail[-want_len:], f"{n}: wrong bytes at its end"
            elapsed = max(t.elapsed for t in reads.values())
        finally:
            for fd in fds.values():
                os.close(fd)
        check_peak(capsys, "ten_single_blocks", pid, at_mount, elapsed,
                   f"ends of {len(streams)} one-block members of "
                   f"{streams['blk0.npy'].usize // MIB} MiB, read at once")


# --------------------------------------------------------------------------------------------
# (b) a deflate bomb of several GiB


def test_read_near_end_of_bomb(bomb, mount, capsys):
    """The checkpoint index of a 3 GiB member (a checkpoint per MiB: 96 MiB of windows at
    32 KiB each) must stay within index_mem."""
    path, stream, header = bomb
    off = stream.usize - 3 * MIB - 123  # in the zeros, away from any boundary
    with D.mount_new(mount, path, *OPTIONS) as mnt:
        pid = D.daemon_of(mnt)
        at_mount = D.proc_status(pid)
        fd = os.open(mnt / "bomb.npy", os.O_RDONLY)
        try:
            got, elapsed = D.run_with_deadline(lambda: os.pread(fd, 65536, off), READ_DEADLINE,
                                               pid, "one read near the end of the bomb")
        finally:
            os.close(fd)
        # the reference is what was fed to zlib.compressobj: the .npy header, then zeros
        assert off >= len(header) and got == bytes(65536)
        check_peak(capsys, "bomb_end", pid, at_mount, elapsed,
                   f"64 KiB at {off // MIB} MiB of a {stream.usize // MIB} MiB bomb from "
                   f"{len(stream.raw) // 1024} KiB")


# --------------------------------------------------------------------------------------------
# (c) the smallest span over a large member


def test_smallest_span_whole_member(span_archive, mount, capsys):
    """span=32k over 256 MiB whose 32 KiB windows do not compress: a checkpoint at every
    block boundary would be 256 MiB of windows; index_mem=16M must win."""
    path, stream = span_archive

    def read_and_compare(mnt):
        n = 0
        with open(mnt / "period.npy", "rb", buffering=0) as f:
            for want in A.zipfile_pieces(path, "period.npy", MIB):
                got = f.read(len(want))
                assert got == want, f"period.npy differs from zipfile in [{n}, +{len(want)})"
                n += len(got)
            assert f.read(1) == b""
        return n

    with D.mount_new(mount, path, *OPTIONS, "-o", "span=32k") as mnt:
        pid = D.daemon_of(mnt)
        at_mount = D.proc_status(pid)
        n, elapsed = D.run_with_deadline(lambda: read_and_compare(mnt), READ_DEADLINE, pid,
                                         "the whole-member read at span=32k")
        assert n == stream.usize
        check_peak(capsys, "span32k_whole", pid, at_mount, elapsed,
                   f"{n // MIB} MiB read whole at span=32k, compared with zipfile")
