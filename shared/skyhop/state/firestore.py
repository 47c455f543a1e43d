"""The ManifestStore protocol on Cloud Firestore (native mode): the GCP control plane's truth.

URI ``firestore://PROJECT/DATABASE/COLLECTION`` (``(default)`` is the
project's default database); :func:`parse_firestore` reads it.

Layout
------
One document per job in ``COLLECTION``, its objects and chunks in two
subcollections of it, each document id zero-padded so that id order is
document-name order::

    COLLECTION/<job_id>                               job
    COLLECTION/<job_id>/objects/<object_id, 12 digits> object
    COLLECTION/<job_id>/chunks/<chunk_id, 12 digits>   chunk
    COLLECTION/<job_id>/counters/<n, 2 digits>        counter shard (:mod:`skyhop.state.counters`)

Every document holds the record as the pydantic model's JSON in ``data``
(read back with ``model_validate_json``: exact, whatever the model nests) and
beside it the fields queries filter, order or sum on: ``state`` on all three;
``created_us`` (microseconds since the epoch) on jobs; ``size`` on objects;
``object_id`` and ``length`` on chunks; and ``expires_at`` for TTL.

Conditional writes
------------------
What a write may change is :mod:`skyhop.state.rules`'. A transition reads the
document, then commits it back with the precondition that its ``update_time``
is still the one read, together with ``Increment`` transforms of its counter
shard (``chunk_id % 16``) in the same atomic commit (optimistic concurrency:
two round trips, a GET and a COMMIT, no transaction). A lost race
(``FAILED_PRECONDITION``) reads again and decides again, so a duplicated or
late event writes nothing, counters included. ``create`` fails on an existing
document: a job id is never taken twice; inserts of objects and chunks commit
up to 480 records with their shards' increments, and a commit that met an
existing record looks them up (one batch read) and commits the others, so
records that exist are kept as they are.

Reading
-------
Queries are strongly consistent. Iterators page by document name
(``order_by(__name__).start_after(last)``), one range per state merged in
id order; an object's chunks are an equality query on ``object_id``; no
query needs a composite index. :meth:`FirestoreManifest.progress` reads the
job's 16 counter shards (one query): aggregation queries would read index
entries in proportion to the job's chunks on every call, and the control
plane asks for progress on every gateway event.

TTL
---
Firestore TTL policies on ``expires_at`` of the job collection and the
:data:`SUBCOLLECTIONS` groups (:data:`TTL_FIELD`; ``skyhop deploy gcp`` sets
them): a job gets it when it finishes (``retention`` later, default 14 days)
and loses it if it leaves that state; objects, chunks and counters get
``max_age`` (30 days) at insert as a safety net. ``delete_job`` removes a job
at once.

Errors: every ``google.api_core`` exception becomes a :mod:`skyhop.errors`
error (:func:`translate`).
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.bulk_batch import BulkWriteBatch

from skyhop import retry
from skyhop.clouds import gcp
from skyhop.errors import (
    AccessError,
    ConflictError,
    NotFoundError,
    SkyhopError,
    StoreError,
    ThrottledError,
    UsageError,
    translated,
)
from skyhop.models import Chunk, ChunkState, Job, JobState, ObjectEntry, ObjectState, utcnow
from skyhop.state import counters, rules
from skyhop.state.base import JobProgress

SCHEME = "firestore"
DEFAULT_DATABASE = "(default)"
DEFAULT_COLLECTION = "skyhop-manifest"
OBJECTS = "objects"
CHUNKS = "chunks"
TTL_FIELD = "expires_at"
DEFAULT_RETENTION = timedelta(days=14)
DEFAULT_MAX_AGE = timedelta(days=30)


COUNTERS = "counters"
SUBCOLLECTIONS = (OBJECTS, CHUNKS, COUNTERS)


_BATCH = 500  # writes per commit or BatchWrite (Firestore's limit)
_COMMIT_ROWS = _BATCH - counters.COUNTER_SHARDS  # records per insert commit, with their shards
_RETRIES = 8
_RETRYABLE_CODES = {4, 8, 10, 13, 14}  # deadline, exhausted, aborted, internal, unavailable
_PROJECT = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$|^[a-z0-9.:-]{1,100}$")
_DATABASE = re.compile(r"^\(default\)$|^[a-z][a-z0-9-]{2,61}[a-z0-9]$")
_COLLECTION = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")

#: a record whose writes are decided by its state (a chunk or an object)
R = TypeVar("R", Chunk, ObjectEntry)
T = TypeVar("T")
#: an insert: job id, document, its fields, record id, its counts
_Row = tuple[str, Any, dict[str, Any], int, Counter[str]]


def parse_firestore(uri: str) -> tuple[str, str, str]:
    """``firestore://PROJECT/DATABASE/COLLECTION`` as (project, database, collection)."""
    scheme, sep, rest = uri.partition("://")
    parts = rest.split("/") if sep else []
    if scheme != SCHEME or len(parts) != 3 or not all(parts) or "?" in rest:
        raise UsageError(f"{uri!r}: expected firestore://PROJECT/DATABASE/COLLECTION")
    project, database, collection = parts
    if not _PROJECT.match(project):
        raise UsageError(f"{uri!r}: {project!r} is not a Google Cloud project id")
    if not _DATABASE.match(database):
        raise UsageError(f"{uri!r}: {database!r} is not a Firestore database id")
    if not _COLLECTION.match(collection) or collection.startswith("__"):
        raise UsageError(f"{uri!r}: {collection!r} is not a collection id")
    return project, database, collection


def open_uri(uri: str) -> FirestoreManifest:
    """The manifest behind ``firestore://PROJECT/DATABASE/COLLECTION`` (the
    :func:`skyhop.state.open_manifest` registry's entry)."""
    return FirestoreManifest.from_uri(uri)


def translate(exc: Exception, what: str) -> SkyhopError:
    """A google.api_core error as one line of the skyhop error family: what the GCP
    kit knows (not found, access denied, no credentials), then Firestore's own."""
    detail = gcp.short(exc)
    if isinstance(exc, gexc.NotFound):
        return NotFoundError(f"{what}: not found (does the Firestore database exist?): {detail}")
    if isinstance(exc, gexc.PermissionDenied):
        return AccessError(f"{what}: access denied: {detail}")
    known = gcp.known(exc, what)
    if known is not None:
        return known
    if isinstance(exc, gexc.ResourceExhausted | gexc.TooManyRequests):
        return ThrottledError(f"{what}: throttled: {detail}")
    if isinstance(
        exc,
        gexc.ServiceUnavailable
        | gexc.DeadlineExceeded
        | gexc.Aborted
        | gexc.InternalServerError
        | gexc.RetryError,
    ):
        return StoreError(f"{what}: {detail}", retryable=True)
    if isinstance(exc, gexc.FailedPrecondition) and "index" in detail.lower():
        return StoreError(f"{what}: a Firestore index is missing: {detail}")
    return StoreError(f"{what}: {detail}")


def _stream(query: Any) -> list[Any]:
    return list(query.stream())


def _doc_id(record_id: int) -> str:
    return f"{record_id:012d}"


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp()) * 1_000_000 + value.microsecond


class FirestoreManifest:
    """:class:`~skyhop.state.base.ManifestStore` on Firestore, laid out as above.

    ``page_size``: documents per query page; ``retention``/``max_age``: TTLs.
    ``client``: a ready ``google.cloud.firestore.Client`` (else one is made for
    ``project``/``database``; ``FIRESTORE_EMULATOR_HOST`` points it at the emulator).
    """

    def __init__(
        self,
        project: str,
        database: str = DEFAULT_DATABASE,
        collection: str = DEFAULT_COLLECTION,
        *,
        page_size: int = 500,
        retention: timedelta = DEFAULT_RETENTION,
        max_age: timedelta = DEFAULT_MAX_AGE,
        client: Any | None = None,
    ) -> None:
        if page_size < 1:
            raise ValueError("page_size must be positive")
        self.project, self.database, self.collection = project, database, collection
        self.page_size = page_size
        self.retention = retention
        self.max_age = max_age
        self._client = client or firestore.Client(project=project, database=database)
        self._jobs = self._client.collection(collection)

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> FirestoreManifest:
        project, database, collection = parse_firestore(uri)
        return cls(project, database, collection, **kwargs)

    @property
    def uri(self) -> str:
        return f"{SCHEME}://{self.project}/{self.database}/{self.collection}"

    def __repr__(self) -> str:
        return f"FirestoreManifest({self.uri!r})"

    # ------------------------------------------------------------ calls

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return translated(
            fn, f"{what} in {self.uri}", translate, catch=(gexc.GoogleAPICallError, gexc.RetryError)
        )

    def _job_ref(self, job_id: str) -> Any:
        return self._jobs.document(job_id)

    def _ref(self, job_id: str, kind: str, record_id: int) -> Any:
        return self._jobs.document(job_id).collection(kind).document(_doc_id(record_id))

    def _expiry(self, after: timedelta) -> datetime:
        return utcnow() + after

    # ------------------------------------------------------------ jobs

    def _job_fields(self, job: Job) -> dict[str, Any]:
        return {
            "data": job.model_dump_json(),
            "state": job.state.value,
            "created_us": _micros(job.created_at),
            TTL_FIELD: self._expiry(self.retention) if job.state.finished else None,
        }

    def create_job(self, job: Job) -> None:
        ref = self._job_ref(job.job_id)
        try:
            ref.create(self._job_fields(job))
        except gexc.AlreadyExists:
            raise ConflictError(f"job {job.job_id} already exists") from None
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise translate(exc, f"creating job {job.job_id} in {self.uri}") from None

    def get_job(self, job_id: str) -> Job | None:
        snap = self._call(f"reading job {job_id}", lambda: self._job_ref(job_id).get())
        return Job.model_validate_json(snap.get("data")) if snap.exists else None

    def list_jobs(self, limit: int = 50) -> list[Job]:
        if limit <= 0:
            return []
        query = self._jobs.order_by("created_us", direction=firestore.Query.DESCENDING).limit(limit)
        snaps = self._call("listing jobs", lambda: list(query.stream()))
        return [Job.model_validate_json(s.get("data")) for s in snaps]

    def iter_jobs(self, states: set[JobState]) -> Iterator[Job]:
        """Jobs in ``states`` (for the reaper; not part of the protocol)."""
        for state in sorted(states, key=lambda s: s.value):
            query = self._jobs.where(filter=FieldFilter("state", "==", state.value))
            for snap in self._paged(query, f"listing {state.value} jobs"):
                yield Job.model_validate_json(snap.get("data"))

    def update_job(
        self,
        job_id: str,
        *,
        expect: set[JobState] | None = None,
        expect_updated_at: datetime | None = None,
        **fields: Any,
    ) -> Job:
        ref = self._job_ref(job_id)
        rules.JOB.fields(fields)  # a bad field fails before anything is read
        for attempt in range(_RETRIES):
            snap = self._call(f"reading job {job_id}", ref.get)
            if not snap.exists:
                raise NotFoundError(f"unknown job {job_id!r}")
            new = rules.job_update(
                job_id,
                Job.model_validate_json(snap.get("data")),
                expect=expect,
                expect_updated_at=expect_updated_at,
                fields=fields,
                now=utcnow(),
            )
            if self._commit_if_unchanged(
                ref, snap, self._job_fields(new), f"updating job {job_id}"
            ):
                return new
            self._pause(attempt)
        raise ThrottledError(f"job {job_id}: too many concurrent updates, try again")

    def delete_job(self, job_id: str) -> None:
        job = self._job_ref(job_id)
        for kind in (CHUNKS, OBJECTS, COUNTERS):
            query = job.collection(kind).select([])
            refs = (snap.reference for snap in self._paged(query, f"deleting job {job_id}"))
            while batch := list(itertools.islice(refs, _BATCH)):
                self._delete(f"deleting job {job_id}", batch)
        self._call(f"deleting job {job_id}", job.delete)

    # ------------------------------------------------------------ objects and chunks

    def put_objects(self, entries: Iterable[ObjectEntry]) -> None:
        self._insert_all(
            (
                (
                    e.job_id,
                    self._ref(e.job_id, OBJECTS, e.object_id),
                    {
                        "data": e.model_dump_json(),
                        "state": e.state.value,
                        "size": e.size,
                        TTL_FIELD: self._expiry(self.max_age),
                    },
                    e.object_id,
                    counters.object_counts(e),
                )
                for e in entries
            ),
            "objects",
        )

    def put_chunks(self, chunks: Iterable[Chunk]) -> None:
        self._insert_all(
            (
                (
                    c.job_id,
                    self._ref(c.job_id, CHUNKS, c.chunk_id),
                    {
                        "data": c.model_dump_json(),
                        "state": c.state.value,
                        "object_id": c.object_id,
                        "length": c.length,
                        TTL_FIELD: self._expiry(self.max_age),
                    },
                    c.chunk_id,
                    counters.chunk_counts(c),
                )
                for c in chunks
            ),
            "chunks",
        )

    def _insert_all(self, rows: Iterator[_Row], what: str) -> None:
        while True:
            batch: dict[str, _Row] = {}
            for row in itertools.islice(rows, _COMMIT_ROWS):
                batch.setdefault(row[1].path, row)  # the first of duplicates wins
            if not batch:
                return
            self._insert(list(batch.values()), what)

    def _insert(self, rows: list[_Row], what: str) -> None:
        """Create the records that do not exist yet and add their counts to their
        shards, in one atomic commit; records that exist are kept as they are."""
        for attempt in range(_RETRIES):
            if not rows:
                return
            deltas: dict[tuple[str, int], Counter[str]] = {}
            for job_id, _, _, record_id, counts in rows:
                deltas.setdefault((job_id, counters.shard(record_id)), Counter()).update(counts)
            batch = self._client.batch()
            for _, ref, data, _, _ in rows:
                batch.create(ref, data)
            for (job_id, shard), delta in deltas.items():
                self._add_counts(batch, job_id, shard, dict(delta))
            try:
                batch.commit()
                return
            except (gexc.AlreadyExists, gexc.Conflict):
                refs = [ref for _, ref, _, _, _ in rows]
                found = self._call(f"writing {what}", partial(self._client.get_all, refs))
                existing = {snap.reference.path for snap in found if snap.exists}
                rows = [row for row in rows if row[1].path not in existing]
            except (gexc.Aborted, gexc.ServiceUnavailable, gexc.DeadlineExceeded):
                self._pause(attempt)
            except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
                raise translate(exc, f"writing {what} in {self.uri}") from None
        raise ThrottledError(
            f"writing {what} in {self.uri}: too many concurrent writers, try again"
        )

    def _add_counts(self, batch: Any, job_id: str, shard: int, delta: dict[str, int]) -> None:
        changes: dict[str, Any] = {n: firestore.Increment(v) for n, v in delta.items() if v}
        if changes:
            ref = self._jobs.document(job_id).collection(COUNTERS).document(f"{shard:02d}")
            changes[TTL_FIELD] = self._expiry(self.max_age)
            batch.set(ref, changes, merge=True)

    def _delete(self, what: str, refs: list[Any]) -> None:
        """One BatchWrite of deletes (each applied on its own; a missing document is
        no error); retryable failures are deleted again."""
        for attempt in range(_RETRIES * 2):
            if not refs:
                return
            batch = BulkWriteBatch(self._client)
            for ref in refs:
                batch.delete(ref)
            response = self._call(what, batch.commit)
            again = []
            for ref, status in zip(refs, response.status, strict=True):
                if status.code == 0:
                    continue
                if status.code in _RETRYABLE_CODES:
                    again.append(ref)
                    continue
                raise StoreError(f"{what} in {self.uri}: {status.message or status.code}")
            refs = again
            if refs:
                self._pause(attempt)
        raise ThrottledError(f"{what} in {self.uri}: throttled, try again")

    def get_object(self, job_id: str, object_id: int) -> ObjectEntry | None:
        ref = self._ref(job_id, OBJECTS, object_id)
        snap = self._call(f"reading object {object_id}", ref.get)
        return ObjectEntry.model_validate_json(snap.get("data")) if snap.exists else None

    def get_chunk(self, job_id: str, chunk_id: int) -> Chunk | None:
        ref = self._ref(job_id, CHUNKS, chunk_id)
        snap = self._call(f"reading chunk {chunk_id}", ref.get)
        return Chunk.model_validate_json(snap.get("data")) if snap.exists else None

    def iter_objects(
        self, job_id: str, states: set[ObjectState] | None = None
    ) -> Iterator[ObjectEntry]:
        for snap in self._by_states(job_id, OBJECTS, states):
            yield ObjectEntry.model_validate_json(snap.get("data"))

    def iter_chunks(
        self,
        job_id: str,
        states: set[ChunkState] | None = None,
        object_id: int | None = None,
    ) -> Iterator[Chunk]:
        if object_id is not None:
            # an object's chunks are few: one equality query, state filtered here
            query = (
                self._jobs.document(job_id)
                .collection(CHUNKS)
                .where(filter=FieldFilter("object_id", "==", object_id))
            )
            wanted = {s.value for s in states} if states is not None else None
            for snap in self._paged(query, f"reading chunks of object {object_id}"):
                if wanted is None or snap.get("state") in wanted:
                    yield Chunk.model_validate_json(snap.get("data"))
            return
        for snap in self._by_states(job_id, CHUNKS, states):
            yield Chunk.model_validate_json(snap.get("data"))

    def _by_states(self, job_id: str, kind: str, states: Iterable[Any] | None) -> Iterator[Any]:
        collection = self._jobs.document(job_id).collection(kind)
        what = f"reading {kind} of job {job_id}"
        if states is None:
            return self._paged(collection, what)
        ranges = [
            self._paged(collection.where(filter=FieldFilter("state", "==", value)), what)
            for value in rules.state_values(states)
        ]
        if len(ranges) == 1:
            return ranges[0]
        return heapq.merge(*ranges, key=lambda snap: snap.id)

    def _paged(self, query: Any, what: str) -> Iterator[Any]:
        """Keyset pages in document-name order (a page never skips or repeats a
        document that changes state meanwhile)."""
        ordered = query.order_by("__name__").limit(self.page_size)
        last = None
        while True:
            page_query = ordered.start_after(last) if last is not None else ordered
            page: list[Any] = self._call(what, partial(_stream, page_query))
            yield from page
            if len(page) < self.page_size:
                return
            last = page[-1]

    def update_object(
        self, job_id: str, object_id: int, *, expect: set[ObjectState] | None = None, **fields: Any
    ) -> bool:
        return self._transition(
            rules.OBJECT,
            job_id,
            self._ref(job_id, OBJECTS, object_id),
            object_id,
            rules.object_update(expect, fields),
            lambda e: {"data": e.model_dump_json(), "state": e.state.value, "size": e.size},
            counters.object_counts,
            f"updating object {object_id} of job {job_id}",
        )

    def transition_chunk(
        self,
        job_id: str,
        chunk_id: int,
        *,
        expect: set[ChunkState],
        to: ChunkState,
        **fields: Any,
    ) -> bool:
        return self._transition(
            rules.CHUNK,
            job_id,
            self._ref(job_id, CHUNKS, chunk_id),
            chunk_id,
            rules.chunk_transition(expect, to, fields),
            lambda c: {"data": c.model_dump_json(), "state": c.state.value},
            counters.chunk_counts,
            f"updating chunk {chunk_id} of job {job_id}",
        )

    def _transition(
        self,
        kind: rules.RecordRules[R],
        job_id: str,
        ref: Any,
        record_id: int,
        write: rules.Write,
        encode: Callable[[Any], dict[str, Any]],
        counts: Callable[[Any], Counter[str]],
        what: str,
    ) -> bool:
        """Read, decide by the rules, commit the record back if it is unchanged,
        with its shard's increments in the same commit."""
        for attempt in range(_RETRIES):
            snap = self._call(what, ref.get)
            if not snap.exists:
                return False
            old = kind.model.model_validate_json(snap.get("data"))
            if not write.applies(old.state):
                return False
            new = kind.merged(old, write.fields)
            delta = counters.delta(counts(new), counts(old))
            try:
                if self._commit_if_unchanged(
                    ref, snap, encode(new), what, (job_id, counters.shard(record_id), delta)
                ):
                    return True
            except NotFoundError:
                return False  # deleted meanwhile
            self._pause(attempt)
        raise ThrottledError(f"{what}: too many concurrent updates, try again")

    def _commit_if_unchanged(
        self,
        ref: Any,
        snap: Any,
        fields: dict[str, Any],
        what: str,
        shard_delta: tuple[str, int, dict[str, int]] | None = None,
    ) -> bool:
        """Commit ``fields`` if the document's update_time is still ``snap``'s (and
        the shard's increments with them); False when another write came first,
        NotFoundError when the document was deleted."""
        batch = self._client.batch()
        batch.update(
            ref, fields, option=self._client.write_option(last_update_time=snap.update_time)
        )
        if shard_delta is not None:
            self._add_counts(batch, *shard_delta)
        try:
            batch.commit()
        except gexc.FailedPrecondition as exc:
            if "index" in str(exc).lower():
                raise translate(exc, f"{what} in {self.uri}") from None
            return False
        except gexc.NotFound:
            raise NotFoundError(f"{what}: the record was deleted") from None
        except (gexc.GoogleAPICallError, gexc.RetryError) as exc:
            raise translate(exc, f"{what} in {self.uri}") from None
        return True

    def _pause(self, attempt: int) -> None:
        retry.pause(attempt, base=0.005, cap=0.5)

    # ------------------------------------------------------------ progress

    def progress(self, job_id: str) -> JobProgress:
        query = self._jobs.document(job_id).collection(COUNTERS)
        shards = self._call(f"counting job {job_id}", partial(_stream, query))
        return counters.progress(snap.to_dict() or {} for snap in shards)


__all__ = [
    "COUNTERS",
    "SUBCOLLECTIONS",
    "DEFAULT_COLLECTION",
    "DEFAULT_DATABASE",
    "TTL_FIELD",
    "FirestoreManifest",
    "open_uri",
    "parse_firestore",
    "translate",
]
