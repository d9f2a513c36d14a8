"""Helpers for the npzmount integration tests: ``import npz_support as S`` and use ``S.name``.

Nothing in here knows about pytest fixtures (those live in conftest.py); it is plain code, kept
in one module per concern and gathered here:

* proc_support: the binary (``BIN``), running it, finding and ending its daemons, their
  memory and descriptors (``proc_status``, ``daemon_fds``), ``run_in_child``, ``poll``;
* mount_support: /proc/self/mountinfo (``is_mountpoint``, ``mount_count``, ``mount_options``)
  and mounting/unmounting safely (``mounted``, ``foreground``);
* model_support: a Python model of the naming rule of src/namespace.h (``expected_tree``),
  expected attributes of a member (``expected_mode``, ``expected_mtime``), zipfile's view of
  an archive (``Reference``) and ``check_mount``;
* archive_support: writing archives, the test arrays, and byte patchers used to build broken
  archives (located with the parser of tests/ziptool.py);
* read_support: reading helpers for the mounted files;
* ``Z``: tests/ziptool.py, the one ZIP record writer and parser of the tests (``S.Z.LOCAL``,
  ``S.Z.local_header``, ``S.Z.zip64_extra``, ...), for tests that lay out archives by hand.
"""

from archive_support import *  # noqa: F401,F403
from model_support import *  # noqa: F401,F403
from model_support import _ut_mtime  # noqa: F401
from mount_support import *  # noqa: F401,F403
from mount_support import _ACTIVE_LOCK, _unescape_mountinfo  # noqa: F401
from proc_support import *  # noqa: F401,F403
from proc_support import _pid_state  # noqa: F401
from read_support import *  # noqa: F401,F403
from archive_support import Z  # noqa: F401
