"""This machine's index of jobs that do not live in its own manifest, or whose
gateways it started in a cloud: ``$SKYHOP_HOME/jobs-index.json`` (mode 0600).

Two kinds of entries:

``remote``
    a job submitted to a deployed control plane (``skyhop cp --on NAME``): the
    job lives in that control plane's manifest; the entry names the profile, the
    request id (the job id is filled in once the control plane made the job, so
    a CLI stopped before that still finds its job) and the last state seen.
``cloud``
    a job of the local manifest whose gateways run on cloud VMs
    (``--gateways cloud``): the entry names the clouds and regions, and the pid
    of the CLI running it. While the entry is open and that process is gone,
    the job's gateways and firewall rules may be left behind: ``skyhop
    cleanup`` (and the next ``cp``/``sync``) find them by their tags and remove
    them. An entry is closed when its job tore down normally.

Reading the index never calls a cloud; callers decide when an open entry is
worth a look. Concurrent CLIs serialise their updates with ``flock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skyhop.config import skyhop_home
from skyhop.models import utcnow

FILE_NAME = "jobs-index.json"


class IndexEntry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    kind: Literal["remote", "cloud"]
    request_id: str
    job_id: str | None = None
    where: str = Field(description="remote: the profile's name; cloud: the clouds, e.g. 'aws'")
    source: str
    destination: str
    created_at: datetime = Field(default_factory=utcnow)
    state: str | None = Field(None, description="the last state seen")
    error: str | None = None
    objects: int | None = Field(None, description="remote: the job's objects, as last seen")
    bytes: int | None = Field(None, description="remote: the job's bytes, as last seen")
    pid: int | None = Field(None, description="cloud: the CLI process running the job")
    pid_started: float | None = Field(None, description="that process's start time (epoch s)")
    regions: list[str] = Field(default_factory=list, description="cloud: where gateways ran")
    open: bool = Field(True, description="cloud: until its teardown completed")

    @property
    def key(self) -> str:
        return self.job_id or f"request {self.request_id}"


def index_path() -> Path:
    return skyhop_home() / FILE_NAME


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    lock = skyhop_home() / f".{FILE_NAME}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def entries() -> list[IndexEntry]:
    """Every entry, oldest first (an unreadable file reads as empty, never fails a command)."""
    path = index_path()
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        return []
    out = []
    for item in raw if isinstance(raw, list) else []:
        try:
            out.append(IndexEntry.model_validate(item))
        except ValidationError:
            continue
    return out


def _write(items: list[IndexEntry]) -> None:
    path = index_path()
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump([e.model_dump(mode="json") for e in items], out, indent=1)
    tmp.replace(path)


def add(entry: IndexEntry) -> IndexEntry:
    with _locked():
        items = [e for e in entries() if e.request_id != entry.request_id]
        items.append(entry)
        _write(items)
    return entry


def update(request_id: str, change: Callable[[IndexEntry], IndexEntry]) -> IndexEntry | None:
    """Apply ``change`` to the entry of ``request_id``; None when there is none."""
    with _locked():
        items = entries()
        for n, item in enumerate(items):
            if item.request_id == request_id:
                items[n] = change(item)
                _write(items)
                return items[n]
    return None


def set_fields(request_id: str, **fields: object) -> IndexEntry | None:
    return update(request_id, lambda e: e.model_copy(update=fields))


def find(job_id: str) -> IndexEntry | None:
    """The entry of a job id (or of a request id, for a job not made yet)."""
    for item in reversed(entries()):
        if item.job_id == job_id or item.request_id == job_id:
            return item
    return None
