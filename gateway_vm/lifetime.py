"""No gateway process outlives its job: the parent-death signal (the parent watch
asks :func:`skyhop.processes.pid_alive`)."""

from __future__ import annotations

import ctypes
import sys

PR_SET_PDEATHSIG = 1


def set_parent_death_signal(sig: int) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent thread exits."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        # the symbols already loaded into this process (Python links libc). Never
        # ctypes.util.find_library: it runs `/sbin/ldconfig -p`, a child process of
        # every gateway worker for a moment (seen by a process count under load)
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False
