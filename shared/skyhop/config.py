"""Where skyhop keeps its state. Nothing here runs at import time.

``SKYHOP_HOME`` is private to its user: created 0700 (a looser home this user
owns is tightened; one that is not theirs is refused), and every file skyhop
writes there is 0600 (:func:`private_opener`). ``jobs/JOB/`` holds a running
job's gateway configurations, i.e. its key material; they are removed when
the job's gateways stop, and whatever a killed process left is swept by the
next run (:func:`skyhop.compute.local.sweep_stale_secrets`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from skyhop.errors import UsageError

DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 64 * 1024 * 1024
SEGMENT_SIZE = 4 * 1024 * 1024


def private_dir(path: Path) -> Path:
    """``path`` as a directory only its owner can enter: created 0700 (with its
    parents), tightened to 0700 when this user owns it. A directory of someone
    else's that others may read is refused (skyhop's keys would be theirs)."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    st = path.stat()
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is not a directory")
    if st.st_mode & 0o077:
        if st.st_uid != os.geteuid() or st.st_mode & stat.S_ISVTX:
            raise UsageError(
                f"{path} is open to other users and not this user's own private directory: "
                "point SKYHOP_HOME at a directory of yours"
            )
        path.chmod(0o700)
    return path


def private_opener(path: str, flags: int) -> int:
    """An ``opener`` for :func:`open` that creates files 0600 and makes an existing
    one 0600 too (``open(path, "a", opener=private_opener)``)."""
    fd = os.open(path, flags | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def skyhop_home() -> Path:
    """The state directory: ``$SKYHOP_HOME`` or ``~/.skyhop``; created 0700 on first use."""
    return private_dir(Path(os.environ.get("SKYHOP_HOME") or Path.home() / ".skyhop"))


def manifest_path() -> Path:
    """The embedded SQLite manifest (0600, see :class:`SQLiteManifest`)."""
    return skyhop_home() / "manifest.db"


def reports_dir() -> Path:
    """Where every job writes its report (each file 0600)."""
    return private_dir(skyhop_home() / "reports")


def jobs_dir() -> Path:
    """Per-job working files (gateway configs, certificates), mode 0700."""
    return private_dir(skyhop_home() / "jobs")
