"""The ManifestStore protocol: the truth about every job, object and chunk.

Every state transition is a conditional write: ``transition_chunk`` applies
only when the chunk is in one of the ``expect`` states and reports whether it
did, so a duplicated or late event changes nothing. Backends (SQLite,
DynamoDB) never leak their own exceptions: a lost condition is ``False`` or a
:class:`skyhop.errors.ConflictError`, a missing record ``None`` or a
:class:`skyhop.errors.NotFoundError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, Field

from skyhop.models import Chunk, ChunkState, Job, JobState, ObjectEntry, ObjectState


def next_updated_at(now: datetime, previous: datetime | None) -> datetime:
    """``now``, or one microsecond after ``previous`` when the clock has not moved past
    it (a compare-and-swap must leave a different ``updated_at`` behind)."""
    if previous is not None and now <= previous:
        return previous + timedelta(microseconds=1)
    return now


class JobProgress(BaseModel):
    """Counters for progress bars and ``skyhop status``."""

    objects_total: int = 0
    objects_verified: int = 0
    objects_failed: int = 0
    bytes_total: int = 0
    bytes_verified: int = 0
    chunks: dict[ChunkState, int] = Field(default_factory=dict)


@runtime_checkable
class ManifestStore(Protocol):
    def create_job(self, job: Job) -> None:
        """Insert a new job; ConflictError if the id exists."""
        ...

    def get_job(self, job_id: str) -> Job | None: ...

    def list_jobs(self, limit: int = 50) -> list[Job]:
        """Most recent first."""
        ...

    def update_job(
        self,
        job_id: str,
        *,
        expect: set[JobState] | None = None,
        expect_updated_at: datetime | None = None,
        **fields: Any,
    ) -> Job:
        """Set ``fields`` (and ``updated_at``) if the job's state is in ``expect``
        (any state when None); ConflictError otherwise, NotFoundError if missing.

        With ``expect_updated_at`` it is a compare-and-swap: it applies only if the
        job's ``updated_at`` is still that value (the job as the caller read it),
        else ConflictError; the new ``updated_at`` is then later than the old one,
        so two read-modify-write cycles of the same job can never both apply."""
        ...

    def put_objects(self, entries: Iterable[ObjectEntry]) -> None:
        """Insert objects in batches (idempotent: an existing object is kept)."""
        ...

    def put_chunks(self, chunks: Iterable[Chunk]) -> None:
        """Insert chunks in batches (idempotent: an existing chunk is kept)."""
        ...

    def get_object(self, job_id: str, object_id: int) -> ObjectEntry | None: ...

    def iter_objects(
        self, job_id: str, states: set[ObjectState] | None = None
    ) -> Iterator[ObjectEntry]:
        """Objects by id order, optionally only those in ``states``; paged."""
        ...

    def update_object(
        self, job_id: str, object_id: int, *, expect: set[ObjectState] | None = None, **fields: Any
    ) -> bool:
        """Conditional update; True if applied."""
        ...

    def get_chunk(self, job_id: str, chunk_id: int) -> Chunk | None: ...

    def iter_chunks(
        self,
        job_id: str,
        states: set[ChunkState] | None = None,
        object_id: int | None = None,
    ) -> Iterator[Chunk]:
        """Chunks by id order, filtered by state and/or object; paged, no full scans
        of other jobs."""
        ...

    def transition_chunk(
        self,
        job_id: str,
        chunk_id: int,
        *,
        expect: set[ChunkState],
        to: ChunkState,
        **fields: Any,
    ) -> bool:
        """Move a chunk to ``to`` (setting ``fields``) only if it is in ``expect``.
        Returns True if applied, False if the condition failed (never raises for that)."""
        ...

    def progress(self, job_id: str) -> JobProgress: ...

    def delete_job(self, job_id: str) -> None:
        """Remove a job and all its records (idempotent)."""
        ...


@runtime_checkable
class JobsByState(Protocol):
    """Optional: a manifest that finds jobs by state through an index (DynamoDB's
    by-state GSI, a Firestore or Table Storage query), for the reaper."""

    def iter_jobs(self, states: set[JobState]) -> Iterator[Job]:
        """Every job whose state is one of ``states``."""
        ...


@runtime_checkable
class PurgesExpired(Protocol):
    """Optional: a manifest whose service has no TTL (Table Storage) deletes the
    finished jobs past their retention itself, when the reaper asks."""

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Delete finished jobs whose retention has passed; their ids."""
        ...


@runtime_checkable
class Batches(Protocol):
    """Optional: a manifest whose writes cost a commit each (SQLite: a WAL append, and a
    checkpoint every thousand pages) groups the writes one thread makes inside
    ``batch()`` into one transaction. Every write keeps its own condition and result
    (a transition inside sees the writes before it); they become durable together when
    the block ends, also when it ends by an exception, so what was applied stays
    applied (a result recorded before Ctrl-C is not sent again). Nested blocks join
    the outer one."""

    def batch(self) -> AbstractContextManager[None]: ...


@runtime_checkable
class Scrubs(Protocol):
    """Optional: a manifest that keeps copies of overwritten rows (SQLite's WAL holds
    the old pages until a checkpoint) erases them when asked, as after a job's
    credentials are blanked. Stores without such copies do not declare it."""

    def scrub(self) -> None:
        """Leave no copy of overwritten data behind (now, or when this thread's
        open batch commits); best effort: a busy store does it at close."""
        ...


def batched(manifest: ManifestStore) -> AbstractContextManager[None]:
    """``manifest.batch()`` where the manifest :class:`Batches`, else nothing."""
    return manifest.batch() if isinstance(manifest, Batches) else nullcontext()


# ---------------------------------------------------------------- opening a manifest by URI

#: scheme -> ``module:function`` taking the URI and returning the store; a new
#: backend registers here (or with :func:`register_manifest`).
_REGISTRY: dict[str, str] = {
    "sqlite": "skyhop.state.openers:open_sqlite",
    "dynamodb": "skyhop.state.openers:open_dynamodb",
    "firestore": "skyhop.state.firestore:open_uri",
    "aztable": "skyhop.state.azure_tables:open_uri",
}


def register_manifest(scheme: str, target: str) -> None:
    """Register ``module:function`` (called with the whole URI) for ``scheme://``."""
    _REGISTRY[scheme] = target


def manifest_schemes() -> list[str]:
    return sorted(_REGISTRY)


def open_manifest(uri: str) -> ManifestStore:
    """The manifest behind ``uri``: ``sqlite:///ABSOLUTE/PATH``,
    ``dynamodb://TABLE[?region=R]``, or a registered scheme. A malformed or
    unknown URI is a :class:`~skyhop.errors.UsageError` naming it."""
    from skyhop.errors import UsageError
    from skyhop.registry import resolve

    scheme, sep, _ = uri.partition("://")
    target = _REGISTRY.get(scheme)
    if target is None or not sep:
        raise UsageError(
            f"unknown manifest {uri!r}: use " + ", ".join(f"{s}://" for s in manifest_schemes())
        )
    store: ManifestStore = resolve(target, f"manifest {uri!r}")(uri)
    return store
