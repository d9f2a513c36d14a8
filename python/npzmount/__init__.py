"""npzmount from Python: mount a .npz for the length of a with-block, list its members, and
write .npz files whose compressed members are seek-optimized (SOZip).

    import numpy as np, npzmount
    with npzmount.mounted('data.npz', cache='64M') as d:
        a = np.load(d / 'x.npy', mmap_mode='r')
    npzmount.info('data.npz')                    # one dict per member (npzmount --list --json)
    npzmount.savez_compressed('data.npz', x=a)   # np.savez_compressed, fast to mount

The npzmount program is $NPZMOUNT, else the first on PATH. Standard library only; numpy is
imported by savez_compressed, whose callers have it.
"""

from ._mount import NpzmountError, info, mounted
from ._sozip import DEFAULT_CHUNK_SIZE, savez_compressed

__version__ = "0.1.0"
__all__ = ["mounted", "info", "savez_compressed", "NpzmountError", "DEFAULT_CHUNK_SIZE",
           "__version__"]
