"""Where skyhop keeps its state. Nothing here runs at import time."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MULTIPART_THRESHOLD = 64 * 1024 * 1024
DEFAULT_CHUNK_SIZE = 64 * 1024 * 1024
SEGMENT_SIZE = 4 * 1024 * 1024


def skyhop_home() -> Path:
    """The state directory: ``$SKYHOP_HOME`` or ``~/.skyhop``; created on first use."""
    home = Path(os.environ.get("SKYHOP_HOME") or Path.home() / ".skyhop")
    home.mkdir(parents=True, exist_ok=True)
    return home


def manifest_path() -> Path:
    """The embedded SQLite manifest."""
    return skyhop_home() / "manifest.db"


def reports_dir() -> Path:
    """Where every job writes its report."""
    path = skyhop_home() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def jobs_dir() -> Path:
    """Per-job working files (gateway configs, certificates), mode 0700."""
    path = skyhop_home() / "jobs"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path
