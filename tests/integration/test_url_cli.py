"""ARCHIVE given as a URL, on the command line: the remote options are checked before anything
is opened, the default mount point is named after the URL's last path segment, and an archive
that cannot be opened gives one line and leaves nothing behind. No server is needed: nothing
listens on the discard port of 127.0.0.1."""

import subprocess

import pytest

import npz_support as S

URL = "http://user:pw@127.0.0.1:9/runs/7/data.npz?sig=abc#frag"
SHOWN = "http://127.0.0.1:9/runs/7/data.npz"  # messages carry no credentials: no user info, query


def one_line(res, code):
    assert res.returncode == code, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npzmount: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("opt,word", [("block=1", "block="), ("block=1G", "block="),
                                      ("remote_cache=0", "remote_cache="),
                                      ("timeout=0", "timeout="), ("timeout=x", "timeout="),
                                      ("endpoint=ftp://h", "endpoint=")])
def test_bad_remote_option(opt, word, tmp_path):
    mp = tmp_path / "mp"
    mp.mkdir()
    line = one_line(S.run_npzmount(["-o", opt, URL, mp], timeout=30), 2)
    assert word in line


def test_default_mountpoint_named_after_url(tmp_path):
    """A file already named like the mount point npzmount would make: the complaint names it,
    which shows the name is the last path segment less its extension, without the query."""
    (tmp_path / "data").write_text("in the way")
    line = one_line(S.run_npzmount(["-o", "timeout=2", URL], timeout=60, cwd=tmp_path), 1)
    assert "data: mountpoint is not a directory" in line


def test_unreachable_url_leaves_nothing(tmp_path):
    res = S.run_npzmount(["-o", "timeout=2", URL], timeout=60, cwd=tmp_path)
    line = one_line(res, 1)
    assert SHOWN + ":" in line and "pw" not in line and "sig=" not in line
    assert list(tmp_path.iterdir()) == []  # the mount point it made is gone again


def test_list_url_fails_with_one_line(tmp_path):
    res = subprocess.run([S.BIN, "--list", "-o", "timeout=2", URL], capture_output=True,
                         text=True, timeout=60)
    line = one_line(res, 1)
    assert SHOWN + ":" in line and "pw" not in line and "sig=" not in line
