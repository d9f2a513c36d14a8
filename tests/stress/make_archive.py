"""Writes the archive tests/stress/stress.c reads: member mNN.bin holds pattern(NN, j) at
offset j (the same formula as in stress.c), stored, deflated or bzip2 in turn, sizes 0..~3 MiB;
every other deflated member is seek-optimized (SOZip), with chunk sizes that vary."""
import os
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import sozip_writer  # noqa: E402


def pattern(i, n):
    """Runs of 7 that deflate squeezes to a few percent, but noise in members 10, 22, ...
    (SOZip ones, which npzmount then decodes with libdeflate)."""
    j = np.arange(n, dtype=np.uint64)
    if i % 12 == 10:
        v = j * np.uint64(0x9E3779B97F4A7C15) + np.uint64(i)
        v ^= v >> np.uint64(29)
        v *= np.uint64(0xBF58476D1CE4E5B9)
        v ^= v >> np.uint64(32)
        return ((v >> np.uint64(24)) & np.uint64(0xFF)).astype(np.uint8).tobytes()
    v = (j // 7 * np.uint64(2654435761) + np.uint64(i * 97)) >> np.uint64(11)
    return (v & np.uint64(0xFF)).astype(np.uint8).tobytes()


def main(path, count):
    with zipfile.ZipFile(path, "w") as z:
        for i in range(count):
            n = (i * 370_001) % (3 << 20)
            method = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2)[i % 3]
            if method != zipfile.ZIP_DEFLATED or (i // 3) % 2 == 0:
                z.writestr(zipfile.ZipInfo(f"m{i:02d}.bin"), pattern(i, n), compress_type=method)
    # the SOZip members go after the others: appended by hand, with their hidden indexes
    sozip = [sozip_writer.Member(f"m{i:02d}.bin", pattern(i, (i * 370_001) % (3 << 20)),
                                 chunk=(4096, 32768, 262144, 1 << 20)[(i // 6) % 4])
             for i in range(count) if i % 3 == 1 and (i // 3) % 2 == 1]
    sozip_writer.append(path, sozip)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 16)
