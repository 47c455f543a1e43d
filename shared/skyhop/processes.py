"""Whether a process is still there: the one check behind every "its writer or its
owner has died" decision (stale staging files of the local store, gateway configs
of killed processes, cloud jobs whose CLI is gone, a gateway's parent)."""

from __future__ import annotations

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while a process with ``pid`` exists (zombies count as gone on Linux; a
    process of another user, which this one may not signal, counts as there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return True


def process_start_time(pid: int) -> float | None:
    """A process's start time (epoch seconds) from /proc, when there is one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def process_alive(pid: int | None, started: float | None) -> bool:
    """Whether process ``pid`` is still the one that started at ``started`` (a pid
    reused by another process is not); without ``started``, whether it is there."""
    if not pid or not pid_alive(pid):
        return False
    if started is None:
        return True
    now = process_start_time(pid)
    return now is None or abs(now - started) < 2.0
