"""Process lifetimes on the host: what ends a child process when its parent dies."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

#: prctl option: the signal this process receives when its parent dies (linux/prctl.h).
PR_SET_PDEATHSIG = 1


def end_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Have the kernel send `sig` to this process when its parent process (the launcher) dies:
    prctl(PR_SET_PDEATHSIG) on Linux; False elsewhere. A parent that died before the call (this
    process was reparented to init) triggers `sig` at once."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if os.getppid() == 1:
        os.kill(os.getpid(), sig)
    return True
