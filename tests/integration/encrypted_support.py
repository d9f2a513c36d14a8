"""Encrypted archives for test_encrypted.py, made by the tools users make them with: Info-ZIP
`zip -P` (ZipCrypto, flag bit 3: the password check byte is the time's) and 7-Zip
(`-mem=ZipCrypto`: the check byte is the CRC's; `-mem=AES256`: WinZip AES, AE-2). The
reference is the plaintext written before zipping, never what the mount gives."""

import os
import shutil
import subprocess
import zipfile

import numpy as np

PASSWORD = "Pw-7f3a9c-enc"  # distinctive: the leak checks search for it
ZIP = shutil.which("zip")
SEVEN_ZIP = shutil.which("7zz") or shutil.which("7z")
KINDS = ("infozip", "7z-zipcrypto", "7z-aes")
PLAIN_NAME = "plain.npy"  # the one member left in the clear


def tool_for(kind):
    """The program that makes archives of kind, or None when it is not installed."""
    return ZIP if kind == "infozip" else SEVEN_ZIP


def plaintext(rng):
    """Members: a deflate-friendly array of several pieces, a small one, random bytes (which
    zip stores) and one in the clear."""
    big = np.arange(300_000, dtype=np.int64).reshape(1000, 300)
    return {"big.npy": big, "small.npy": np.linspace(0, 1, 50),
            "noise.bin": rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(),
            PLAIN_NAME: np.arange(1000, dtype=np.int32)}


def write_sources(directory, members):
    """Writes each member as a file; returns name -> bytes."""
    out = {}
    for name, value in members.items():
        path = directory / name
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            np.save(path, value)
        out[name] = path.read_bytes()
    return out


def _run(argv, cwd):
    subprocess.run(argv, cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def make_archive(kind, src, out, names):
    """Zips the files names of directory src into out: PLAIN_NAME in the clear, the others
    encrypted with PASSWORD (the password is on these tools' command lines: fine in a test)."""
    secret = [n for n in names if n != PLAIN_NAME]
    if kind == "infozip":
        _run([ZIP, "-q", str(out), PLAIN_NAME], src)
        _run([ZIP, "-q", "-P", PASSWORD, str(out), *secret], src)
    else:
        em = "ZipCrypto" if kind == "7z-zipcrypto" else "AES256"
        _run([SEVEN_ZIP, "a", "-bd", "-tzip", str(out), PLAIN_NAME], src)
        _run([SEVEN_ZIP, "a", "-bd", "-tzip", f"-mem={em}", f"-p{PASSWORD}", str(out),
              *secret], src)
    with zipfile.ZipFile(out) as z:
        flags = {i.filename: i.flag_bits for i in z.infolist()}
    assert all(flags[n] & 1 for n in secret) and not flags[PLAIN_NAME] & 1, flags
    return out


def daemon_text(pid):
    """What /proc shows of a process to others: its command line and its environment."""
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    with open(f"/proc/{pid}/environ", "rb") as f:
        environ = f.read()
    return cmdline, environ
