"""The ManifestStore protocol on one DynamoDB table (the serverless control plane's truth).

Single-table design
-------------------
Every record of a job lives in the partition ``pk = "JOB#<job_id>"``; the sort
key tells the kinds apart and keeps objects and chunks in id order::

    record          sk                       attributes
    job             JOB                      the Job model's fields
    object          OBJ#<object_id, 12 digits> the ObjectEntry's fields
    chunk           CHK#<chunk_id, 12 digits>  the Chunk's fields
    counter shard   CNT#<n, 2 digits>        per-state counts (see "Progress")

Two global secondary indexes answer the other queries; none of them scans::

    GSI by_state  (gsi1pk, gsi1sk; projection ALL)
      job           JOBS#<state>               <created_at>#<job_id>
      object        JOB#<job_id>#OBJ#<state>   OBJ#<object_id>
      chunk         JOB#<job_id>#CHK#<state>   CHK#<chunk_id>
    GSI by_parent (gsi2pk, gsi2sk; projection KEYS_ONLY)
      job           JOBS                       <created_at>#<job_id>   list_jobs, newest first
      chunk         JOB#<job_id>#OBJ#<object>  CHK#<chunk_id>          chunks of one object

``by_parent`` is keys-only and its memberships never change after insert, so
the chunks of an object are read back with strongly consistent BatchGetItem:
``complete_object`` must see a chunk verified a moment ago by another function.

Conditional writes
------------------
Objects, chunks and jobs carry a revision ``rev``. A state transition reads the
record (strongly consistent), checks the caller's ``expect`` states, and writes
the new record in a transaction whose ``ConditionExpression`` requires the
state and revision it read; a lost race re-reads and decides again. A
duplicated or reordered event therefore writes nothing at all. A
``ConditionalCheckFailedException`` never leaves this module: it becomes
``False`` (``transition_chunk``, ``update_object``) or
:class:`~skyhop.errors.ConflictError` (``create_job``, ``update_job``).
Transactions carry a ``ClientRequestToken``, so an SDK retry after a lost
response does not apply twice.

Progress
--------
The same transaction adds the change to one of 16 counter shards of the job
(``chunk_id % 16`` or ``object_id % 16``), so :meth:`DynamoDBManifest.progress`
is one strongly consistent query of at most 16 small items, however many
chunks the job has. ``bytes_verified`` counts the lengths of verified chunks.

Reading by state
----------------
``iter_objects``/``iter_chunks`` with ``states`` query ``by_state``; a state
whose counter is zero costs no query. GSIs are eventually consistent: when the
index returned fewer records of a state than its (consistent) counter says, a
consistent query of the job's partition supplies the missing ones at the end.

TTL
---
The TTL attribute is ``expires_at`` (epoch seconds). A job gets it when it
reaches a finished state (``retention`` later, default 14 days) and loses it
again if it leaves that state. Objects, chunks and counters carry
``max_age`` from their insert (default 30 days) as a safety net, so nothing of
an abandoned job outlives that; :meth:`DynamoDBManifest.delete_job` removes a
job at once.

The table's names (:data:`TABLE_NAME`, :data:`PARTITION_KEY`, :data:`SORT_KEY`,
:data:`GSI_BY_STATE`, :data:`GSI_BY_PARENT` and their key attributes,
:data:`TTL_ATTRIBUTE`) are module constants for ``infra_cdk``;
:func:`create_table` creates the same table for tests and manual setups.
"""

from __future__ import annotations

import heapq
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

import boto3
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError
from pydantic import BaseModel, ValidationError

from skyhop.errors import (
    AccessError,
    ConflictError,
    NotFoundError,
    SkyhopError,
    StoreError,
    ThrottledError,
    UsageError,
)
from skyhop.models import Chunk, ChunkState, Job, JobState, ObjectEntry, ObjectState, utcnow
from skyhop.state.base import JobProgress, next_updated_at

# ---------------------------------------------------------------- the table (for infra_cdk)

TABLE_NAME = "skyhop-manifest"
"""Default table name; ``$SKYHOP_TABLE`` overrides it in :meth:`DynamoDBManifest.from_env`."""
TABLE_ENV = "SKYHOP_TABLE"
PARTITION_KEY = "pk"
SORT_KEY = "sk"
GSI_BY_STATE = "by_state"
GSI_BY_STATE_PK = "gsi1pk"
GSI_BY_STATE_SK = "gsi1sk"
GSI_BY_STATE_PROJECTION = "ALL"
GSI_BY_PARENT = "by_parent"
GSI_BY_PARENT_PK = "gsi2pk"
GSI_BY_PARENT_SK = "gsi2sk"
GSI_BY_PARENT_PROJECTION = "KEYS_ONLY"
TTL_ATTRIBUTE = "expires_at"


class IndexSpec(NamedTuple):
    """One global secondary index, as ``infra_cdk`` declares it (all keys are strings)."""

    name: str
    partition_key: str
    sort_key: str
    projection: str  # "ALL" or "KEYS_ONLY"


GLOBAL_SECONDARY_INDEXES: tuple[IndexSpec, ...] = (
    IndexSpec(GSI_BY_STATE, GSI_BY_STATE_PK, GSI_BY_STATE_SK, GSI_BY_STATE_PROJECTION),
    IndexSpec(GSI_BY_PARENT, GSI_BY_PARENT_PK, GSI_BY_PARENT_SK, GSI_BY_PARENT_PROJECTION),
)
COUNTER_SHARDS = 16
DEFAULT_RETENTION = timedelta(days=14)
DEFAULT_MAX_AGE = timedelta(days=30)

REV = "rev"
_INTERNAL = frozenset(
    {
        PARTITION_KEY,
        SORT_KEY,
        GSI_BY_STATE_PK,
        GSI_BY_STATE_SK,
        GSI_BY_PARENT_PK,
        GSI_BY_PARENT_SK,
        TTL_ATTRIBUTE,
        REV,
    }
)
_JOB_SK = "JOB"
_JOBS = "JOBS"
_TX_ROWS = 80  # records per insert transaction; + up to 16 counter updates <= 100 actions
_RETRIES = 8
_THROTTLE_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
}
_TRANSIENT_CODES = {"InternalServerError", "ServiceUnavailable", "TransactionInProgressException"}
_ACCESS_CODES = {
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "MissingAuthenticationTokenException",
}

_FATAL_REASONS = {"ValidationError", "ItemCollectionSizeLimitExceeded"}

_SER = TypeSerializer()
_DES = TypeDeserializer()

M = TypeVar("M", bound=BaseModel)


def create_table(
    table_name: str = TABLE_NAME, *, region: str | None = None, wait: bool = True
) -> None:
    """Create the manifest table with its GSIs and TTL (idempotent: an existing
    table only gets its TTL switched on). ``infra_cdk`` declares the same."""
    client = _client(region)
    spec: dict[str, Any] = {
        "TableName": table_name,
        "AttributeDefinitions": [
            {"AttributeName": name, "AttributeType": "S"}
            for name in (
                PARTITION_KEY,
                SORT_KEY,
                *(key for gsi in GLOBAL_SECONDARY_INDEXES for key in gsi[1:3]),
            )
        ],
        "KeySchema": [
            {"AttributeName": PARTITION_KEY, "KeyType": "HASH"},
            {"AttributeName": SORT_KEY, "KeyType": "RANGE"},
        ],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": gsi.name,
                "KeySchema": [
                    {"AttributeName": gsi.partition_key, "KeyType": "HASH"},
                    {"AttributeName": gsi.sort_key, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": gsi.projection},
            }
            for gsi in GLOBAL_SECONDARY_INDEXES
        ],
        "BillingMode": "PAY_PER_REQUEST",
        "SSESpecification": {"Enabled": True},
    }
    try:
        client.create_table(**spec)
    except ClientError as exc:
        if _code(exc) != "ResourceInUseException":
            raise _error(exc, f"creating DynamoDB table {table_name}") from None
    try:
        if wait:
            client.get_waiter("table_exists").wait(
                TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
            )
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except ClientError as exc:
        if "already enabled" not in str(exc):
            raise _error(exc, f"enabling TTL on {table_name}") from None
    except BotoCoreError as exc:
        raise StoreError(f"DynamoDB table {table_name} did not become active: {exc}") from None


class DynamoDBManifest:
    """:class:`~skyhop.state.base.ManifestStore` on the single table described above.

    ``retention``: how long a finished job stays; ``max_age``: the safety-net TTL
    of objects, chunks and counters; ``page_size``: items per Query page (DynamoDB's
    1 MB page when None; tests set it small to exercise paging).
    """

    def __init__(
        self,
        table_name: str = TABLE_NAME,
        *,
        region: str | None = None,
        retention: timedelta = DEFAULT_RETENTION,
        max_age: timedelta = DEFAULT_MAX_AGE,
        page_size: int | None = None,
        client: Any | None = None,
    ) -> None:
        self.table_name = table_name
        self.retention = retention
        self.max_age = max_age
        self.page_size = page_size
        self._client = client if client is not None else _client(region)

    @classmethod
    def from_env(cls) -> DynamoDBManifest:
        """The table named by ``$SKYHOP_TABLE`` (set by ``infra_cdk`` on every function)."""
        return cls(os.environ.get(TABLE_ENV) or TABLE_NAME)

    # ------------------------------------------------------------ jobs

    def create_job(self, job: Job) -> None:
        item = self._job_item(job, rev=1)
        for attempt in range(_RETRIES):
            reasons = self._transact(
                [{"Put": self._put(item, f"attribute_not_exists({PARTITION_KEY})")}],
                f"creating job {job.job_id}",
            )
            if reasons is None:
                return
            if "ConditionalCheckFailed" in reasons:
                raise ConflictError(f"job {job.job_id} already exists")
            self._backoff(reasons, attempt)
        raise ThrottledError(f"creating job {job.job_id}: too many concurrent writes, try again")

    def get_job(self, job_id: str) -> Job | None:
        item = self._get(_pk(job_id), _JOB_SK, f"reading job {job_id}")
        return _decode(Job, item) if item else None

    def list_jobs(self, limit: int = 50) -> list[Job]:
        if limit <= 0:
            return []
        keys: list[dict[str, Any]] = []
        for page in self._pages(
            "query",
            f"listing jobs in {self.table_name}",
            IndexName=GSI_BY_PARENT,
            KeyConditionExpression="#p = :p",
            ExpressionAttributeNames={"#p": GSI_BY_PARENT_PK},
            ExpressionAttributeValues={":p": {"S": _JOBS}},
            ScanIndexForward=False,
            Limit=limit,
        ):
            keys.extend(
                {PARTITION_KEY: i[PARTITION_KEY], SORT_KEY: i[SORT_KEY]} for i in page["Items"]
            )
            if len(keys) >= limit:
                break
        items = self._batch_get(keys[:limit], "listing jobs")
        return [_decode(Job, item) for item in items if item is not None]

    def iter_jobs(self, states: set[JobState]) -> Iterator[Job]:
        """Jobs in ``states``, oldest first, from the by_state index (for the reaper;
        not part of the protocol). Eventually consistent."""
        for state in sorted(states, key=lambda s: s.value):
            for page in self._pages(
                "query",
                f"listing {state.value} jobs",
                IndexName=GSI_BY_STATE,
                KeyConditionExpression="#p = :p",
                ExpressionAttributeNames={"#p": GSI_BY_STATE_PK},
                ExpressionAttributeValues={":p": {"S": f"{_JOBS}#{state.value}"}},
            ):
                for item in page["Items"]:
                    job = _decode(Job, item)
                    if job.state in states:
                        yield job

    def update_job(
        self,
        job_id: str,
        *,
        expect: set[JobState] | None = None,
        expect_updated_at: datetime | None = None,
        **fields: Any,
    ) -> Job:
        for attempt in range(_RETRIES):
            item = self._get(_pk(job_id), _JOB_SK, f"reading job {job_id}")
            if item is None:
                raise NotFoundError(f"unknown job {job_id!r}")
            old = _decode(Job, item)
            if expect is not None and old.state not in expect:
                wanted = ", ".join(sorted(s.value for s in expect))
                raise ConflictError(f"job {job_id} is {old.state.value}, not {wanted}")
            if expect_updated_at is not None and old.updated_at != expect_updated_at:
                raise ConflictError(f"job {job_id} changed since it was read")
            updated_at = next_updated_at(utcnow(), old.updated_at)
            new = _merge(Job, old, {**fields, "updated_at": updated_at}, frozen={"job_id"})
            new_item = self._job_item(new, rev=_rev(item) + 1)
            if new.state.finished:
                new_item[TTL_ATTRIBUTE] = {"N": str(self._epoch(self.retention))}
            reasons = self._transact(
                [{"Put": self._put(new_item, *_unchanged(item))}], f"updating job {job_id}"
            )
            if reasons is None:
                return new
            self._backoff(reasons, attempt)
        raise ThrottledError(f"job {job_id}: too many concurrent updates, try again")

    def delete_job(self, job_id: str) -> None:
        keys = [
            {PARTITION_KEY: i[PARTITION_KEY], SORT_KEY: i[SORT_KEY]}
            for page in self._pages(
                "query",
                f"deleting job {job_id}",
                KeyConditionExpression="#p = :p",
                ExpressionAttributeNames={"#p": PARTITION_KEY, "#s": SORT_KEY},
                ExpressionAttributeValues={":p": {"S": _pk(job_id)}},
                ProjectionExpression="#p, #s",
            )
            for i in page["Items"]
        ]
        for start in range(0, len(keys), 25):
            requests: list[dict[str, Any]] = [
                {"DeleteRequest": {"Key": key}} for key in keys[start : start + 25]
            ]
            self._batch_write(requests, f"deleting job {job_id}")

    # ------------------------------------------------------------ objects and chunks

    def put_objects(self, entries: Iterable[ObjectEntry]) -> None:
        self._insert_all(
            (
                (e.job_id, self._object_item(e, rev=1), e.object_id, _object_counts(e))
                for e in entries
            ),
            "objects",
        )

    def put_chunks(self, chunks: Iterable[Chunk]) -> None:
        self._insert_all(
            ((c.job_id, self._chunk_item(c, rev=1), c.chunk_id, _chunk_counts(c)) for c in chunks),
            "chunks",
        )

    def get_object(self, job_id: str, object_id: int) -> ObjectEntry | None:
        item = self._get(_pk(job_id), _obj_sk(object_id), f"reading object {object_id}")
        return _decode(ObjectEntry, item) if item else None

    def get_chunk(self, job_id: str, chunk_id: int) -> Chunk | None:
        item = self._get(_pk(job_id), _chk_sk(chunk_id), f"reading chunk {chunk_id}")
        return _decode(Chunk, item) if item else None

    def iter_objects(
        self, job_id: str, states: set[ObjectState] | None = None
    ) -> Iterator[ObjectEntry]:
        if states is None:
            for item in self._partition(job_id, "OBJ#"):
                yield _decode(ObjectEntry, item)
            return
        yield from self._by_state(ObjectEntry, job_id, "OBJ", "o", states)

    def iter_chunks(
        self,
        job_id: str,
        states: set[ChunkState] | None = None,
        object_id: int | None = None,
    ) -> Iterator[Chunk]:
        if object_id is not None:
            for chunk in self._object_chunks(job_id, object_id):
                if states is None or chunk.state in states:
                    yield chunk
            return
        if states is None:
            for item in self._partition(job_id, "CHK#"):
                yield _decode(Chunk, item)
            return
        yield from self._by_state(Chunk, job_id, "CHK", "c", states)

    def update_object(
        self, job_id: str, object_id: int, *, expect: set[ObjectState] | None = None, **fields: Any
    ) -> bool:
        return self._transition(
            ObjectEntry,
            job_id,
            _obj_sk(object_id),
            object_id,
            expect,
            fields,
            frozen={"job_id", "object_id"},
            encode=self._object_item,
            counts=_object_counts,
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
        if "state" in fields:
            raise UsageError("transition_chunk sets the state through `to`, not a field")
        return self._transition(
            Chunk,
            job_id,
            _chk_sk(chunk_id),
            chunk_id,
            expect,
            {**fields, "state": to},
            frozen={"job_id", "chunk_id", "object_id"},
            encode=self._chunk_item,
            counts=_chunk_counts,
        )

    def progress(self, job_id: str) -> JobProgress:
        totals = self._counters(job_id)
        return JobProgress(
            objects_total=totals["o_total"],
            objects_verified=totals[f"o_{ObjectState.VERIFIED.value}"],
            objects_failed=totals[f"o_{ObjectState.FAILED.value}"],
            bytes_total=totals["o_bytes"],
            bytes_verified=totals["b_verified"],
            chunks={s: totals[f"c_{s.value}"] for s in ChunkState if totals[f"c_{s.value}"] > 0},
        )

    # ------------------------------------------------------------ the conditional transition

    def _transition(
        self,
        cls: type[M],
        job_id: str,
        sk: str,
        record_id: int,
        expect: set[Any] | None,
        fields: dict[str, Any],
        *,
        frozen: set[str],
        encode: Any,
        counts: Any,
    ) -> bool:
        """Read, check ``expect``, write the new record conditioned on the state and
        revision read, and move the counters in the same transaction."""
        pk = _pk(job_id)
        for attempt in range(_RETRIES):
            item = self._get(pk, sk, f"reading {sk} of job {job_id}")
            if item is None:
                return False
            old = _decode(cls, item)
            if expect is not None and old.state not in expect:  # type: ignore[attr-defined]
                return False
            new = _merge(cls, old, fields, frozen=frozen)
            new_item = encode(new, rev=_rev(item) + 1)
            new_item[TTL_ATTRIBUTE] = item.get(TTL_ATTRIBUTE) or {
                "N": str(self._epoch(self.max_age))
            }
            actions: list[dict[str, Any]] = [{"Put": self._put(new_item, *_unchanged(item))}]
            delta = counts(new)
            delta.subtract(counts(old))
            counter = self._counter_update(pk, record_id, delta)
            if counter is not None:
                actions.append(counter)
            reasons = self._transact(actions, f"updating {sk} of job {job_id}")
            if reasons is None:
                return True
            self._backoff(reasons, attempt)
        raise ThrottledError(f"job {job_id} {sk}: too many concurrent updates, try again")

    def _backoff(self, reasons: list[str], attempt: int) -> None:
        """After a cancelled transaction: re-read at once when the condition lost,
        give up on a request DynamoDB will never accept, else wait a little (full
        jitter; another transaction held the item, or throttling) and try again."""
        if "ConditionalCheckFailed" in reasons:
            return
        fatal = [r for r in reasons if r in _FATAL_REASONS]
        if fatal:
            raise StoreError(f"DynamoDB transaction rejected: {', '.join(fatal)}")
        time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))  # noqa: S311

    # ------------------------------------------------------------ inserts

    def _insert_all(
        self, rows: Iterable[tuple[str, dict[str, Any], int, Counter[str]]], what: str
    ) -> None:
        batch: dict[tuple[str, str], tuple[str, dict[str, Any], int, Counter[str]]] = {}
        for row in rows:
            key = (row[1][PARTITION_KEY]["S"], row[1][SORT_KEY]["S"])
            batch.setdefault(key, row)  # the first of duplicates wins, like an existing record
            if len(batch) >= _TX_ROWS:
                self._insert(list(batch.values()), what)
                batch.clear()
        if batch:
            self._insert(list(batch.values()), what)

    def _insert(self, rows: list[tuple[str, dict[str, Any], int, Counter[str]]], what: str) -> None:
        """Insert records that do not exist yet, with their counters, in one
        transaction; records that exist are left as they are."""
        for attempt in range(_RETRIES * 2):
            if not rows:
                return
            actions: list[dict[str, Any]] = [
                {"Put": self._put(item, f"attribute_not_exists({PARTITION_KEY})")}
                for _, item, _, _ in rows
            ]
            shards: dict[tuple[str, int], Counter[str]] = {}
            for job_id, _, record_id, counts in rows:
                shards.setdefault((job_id, record_id % COUNTER_SHARDS), Counter()).update(counts)
            for (job_id, shard), delta in shards.items():
                update = self._counter_update(_pk(job_id), shard, delta)
                if update is not None:
                    actions.append(update)
            reasons = self._transact(actions, f"writing {what}")
            if reasons is None:
                return
            if "ConditionalCheckFailed" in reasons:
                rows = [
                    row
                    for row, reason in zip(rows, reasons[: len(rows)], strict=False)
                    if reason != "ConditionalCheckFailed"
                ]
                continue
            self._backoff(reasons, attempt)
        raise ThrottledError(f"writing {what}: too many concurrent updates, try again")

    # ------------------------------------------------------------ reads

    def _partition(self, job_id: str, prefix: str) -> Iterator[dict[str, Any]]:
        for page in self._pages(
            "query",
            f"reading job {job_id}",
            KeyConditionExpression="#p = :p AND begins_with(#s, :s)",
            ExpressionAttributeNames={"#p": PARTITION_KEY, "#s": SORT_KEY},
            ExpressionAttributeValues={":p": {"S": _pk(job_id)}, ":s": {"S": prefix}},
            ConsistentRead=True,
        ):
            yield from page["Items"]

    def _by_state(
        self, cls: type[M], job_id: str, kind: str, counter: str, states: set[Any]
    ) -> Iterator[M]:
        """Records in ``states`` in id order from the by_state index; records the
        index has not caught up with yet (per the consistent counters) follow."""
        totals = self._counters(job_id)
        expected = {s: totals[f"{counter}_{s.value}"] for s in states}
        streams = [self._index_state(job_id, kind, state) for state, n in expected.items() if n > 0]
        if not streams:
            return
        seen: set[str] = set()
        found: Counter[Any] = Counter()
        for _, item in heapq.merge(*streams, key=lambda pair: pair[0]):
            record = _decode(cls, item)
            seen.add(item[SORT_KEY]["S"])
            found[record.state] += 1  # type: ignore[attr-defined]
            yield record
        lagging = {s for s, n in expected.items() if found[s] < n}
        if not lagging:
            return
        for item in self._partition(job_id, f"{kind}#"):
            if item[SORT_KEY]["S"] in seen:
                continue
            record = _decode(cls, item)
            if record.state in lagging:  # type: ignore[attr-defined]
                yield record

    def _index_state(
        self, job_id: str, kind: str, state: Any
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        for page in self._pages(
            "query",
            f"reading job {job_id} by state",
            IndexName=GSI_BY_STATE,
            KeyConditionExpression="#p = :p",
            ExpressionAttributeNames={"#p": GSI_BY_STATE_PK},
            ExpressionAttributeValues={":p": {"S": f"{_pk(job_id)}#{kind}#{state.value}"}},
        ):
            for item in page["Items"]:
                yield item[SORT_KEY]["S"], item

    def _object_chunks(self, job_id: str, object_id: int) -> list[Chunk]:
        keys = [
            {PARTITION_KEY: i[PARTITION_KEY], SORT_KEY: i[SORT_KEY]}
            for page in self._pages(
                "query",
                f"reading chunks of object {object_id}",
                IndexName=GSI_BY_PARENT,
                KeyConditionExpression="#p = :p",
                ExpressionAttributeNames={"#p": GSI_BY_PARENT_PK},
                ExpressionAttributeValues={":p": {"S": _obj_parent(job_id, object_id)}},
            )
            for i in page["Items"]
        ]
        chunks = [_decode(Chunk, i) for i in self._batch_get(keys, "reading chunks") if i]
        return sorted(chunks, key=lambda c: c.chunk_id)

    def _counters(self, job_id: str) -> Counter[str]:
        totals: Counter[str] = Counter()
        for item in self._partition(job_id, "CNT#"):
            for name, value in item.items():
                if name not in _INTERNAL and "N" in value:
                    totals[name] += int(value["N"])
        return totals

    # ------------------------------------------------------------ encoding

    def _job_item(self, job: Job, *, rev: int) -> dict[str, Any]:
        order = f"{job.created_at.astimezone(UTC).isoformat()}#{job.job_id}"
        return _encode(
            job,
            {
                PARTITION_KEY: _pk(job.job_id),
                SORT_KEY: _JOB_SK,
                GSI_BY_STATE_PK: f"{_JOBS}#{job.state.value}",
                GSI_BY_STATE_SK: order,
                GSI_BY_PARENT_PK: _JOBS,
                GSI_BY_PARENT_SK: order,
                REV: rev,
            },
        )

    def _object_item(self, entry: ObjectEntry, *, rev: int) -> dict[str, Any]:
        sk = _obj_sk(entry.object_id)
        return _encode(
            entry,
            {
                PARTITION_KEY: _pk(entry.job_id),
                SORT_KEY: sk,
                GSI_BY_STATE_PK: f"{_pk(entry.job_id)}#OBJ#{entry.state.value}",
                GSI_BY_STATE_SK: sk,
                TTL_ATTRIBUTE: self._epoch(self.max_age),
                REV: rev,
            },
        )

    def _chunk_item(self, chunk: Chunk, *, rev: int) -> dict[str, Any]:
        sk = _chk_sk(chunk.chunk_id)
        return _encode(
            chunk,
            {
                PARTITION_KEY: _pk(chunk.job_id),
                SORT_KEY: sk,
                GSI_BY_STATE_PK: f"{_pk(chunk.job_id)}#CHK#{chunk.state.value}",
                GSI_BY_STATE_SK: sk,
                GSI_BY_PARENT_PK: _obj_parent(chunk.job_id, chunk.object_id),
                GSI_BY_PARENT_SK: sk,
                TTL_ATTRIBUTE: self._epoch(self.max_age),
                REV: rev,
            },
        )

    def _epoch(self, after: timedelta) -> int:
        return int((utcnow() + after).timestamp())

    # ------------------------------------------------------------ requests

    def _put(
        self, item: dict[str, Any], condition: str, values: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        put: dict[str, Any] = {
            "TableName": self.table_name,
            "Item": item,
            "ConditionExpression": condition,
        }
        if values:
            put["ExpressionAttributeNames"] = {"#rev": REV, "#state": "state"}
            put["ExpressionAttributeValues"] = values
        return put

    def _counter_update(
        self, pk: str, record_id: int, delta: Counter[str]
    ) -> dict[str, Any] | None:
        changes = {name: n for name, n in sorted(delta.items()) if n != 0}
        if not changes:
            return None
        names = {f"#c{i}": name for i, name in enumerate(changes)}
        values = {f":c{i}": {"N": str(n)} for i, n in enumerate(changes.values())}
        names["#exp"] = TTL_ATTRIBUTE
        values[":exp"] = {"N": str(self._epoch(self.max_age))}
        adds = ", ".join(f"#c{i} :c{i}" for i in range(len(changes)))
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": {
                    PARTITION_KEY: {"S": pk},
                    SORT_KEY: {"S": f"CNT#{record_id % COUNTER_SHARDS:02d}"},
                },
                "UpdateExpression": f"ADD {adds} SET #exp = if_not_exists(#exp, :exp)",
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }

    def _transact(self, actions: list[dict[str, Any]], what: str) -> list[str] | None:
        """Run one transaction: None when applied, else the cancellation reasons
        (one per action, ``"None"`` for those that were fine)."""
        try:
            self._client.transact_write_items(
                TransactItems=actions, ClientRequestToken=uuid.uuid4().hex
            )
        except ClientError as exc:
            code = _code(exc)
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                return [str(r.get("Code") or "None") for r in reasons] or ["TransactionConflict"]
            if code == "TransactionConflictException":
                return ["TransactionConflict"]
            raise _error(exc, f"{what} in {self.table_name}") from None
        except BotoCoreError as exc:
            raise StoreError(f"{what} in {self.table_name}: {exc}", retryable=True) from None
        return None

    def _get(self, pk: str, sk: str, what: str) -> dict[str, Any] | None:
        response = self._call(
            "get_item",
            f"{what} in {self.table_name}",
            TableName=self.table_name,
            Key={PARTITION_KEY: {"S": pk}, SORT_KEY: {"S": sk}},
            ConsistentRead=True,
        )
        return response.get("Item")

    def _batch_get(self, keys: list[dict[str, Any]], what: str) -> list[dict[str, Any] | None]:
        """Items for ``keys`` (strongly consistent), in the order of ``keys``."""
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(keys), 100):
            pending: list[dict[str, Any]] = keys[start : start + 100]
            for attempt in range(_RETRIES * 2):
                if not pending:
                    break
                response = self._call(
                    "batch_get_item",
                    f"{what} in {self.table_name}",
                    RequestItems={self.table_name: {"Keys": pending, "ConsistentRead": True}},
                )
                for item in response.get("Responses", {}).get(self.table_name, []):
                    found[(item[PARTITION_KEY]["S"], item[SORT_KEY]["S"])] = item
                pending = (
                    response.get("UnprocessedKeys", {}).get(self.table_name, {}).get("Keys", [])
                )
                if pending:
                    time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))  # noqa: S311
            if pending:
                raise ThrottledError(f"{what} in {self.table_name}: throttled, try again")
        return [found.get((k[PARTITION_KEY]["S"], k[SORT_KEY]["S"])) for k in keys]

    def _batch_write(self, requests: list[dict[str, Any]], what: str) -> None:
        for attempt in range(_RETRIES * 2):
            if not requests:
                return
            response = self._call(
                "batch_write_item",
                f"{what} in {self.table_name}",
                RequestItems={self.table_name: requests},
            )
            requests = response.get("UnprocessedItems", {}).get(self.table_name, [])
            if requests:
                time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))  # noqa: S311
        if requests:
            raise ThrottledError(f"{what} in {self.table_name}: throttled, try again")

    def _pages(self, operation: str, what: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        kwargs["TableName"] = self.table_name
        if self.page_size and "Limit" not in kwargs:
            kwargs["Limit"] = self.page_size
        while True:
            page = self._call(operation, f"{what} in {self.table_name}", **kwargs)
            yield page
            last = page.get("LastEvaluatedKey")
            if not last:
                return
            kwargs["ExclusiveStartKey"] = last

    def _call(self, operation: str, what: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self._client, operation)(**kwargs)
        except ClientError as exc:
            raise _error(exc, what) from None
        except BotoCoreError as exc:
            raise StoreError(f"{what}: {exc}", retryable=True) from None


# ---------------------------------------------------------------- helpers


def _client(region: str | None) -> Any:
    try:
        return boto3.session.Session().client(
            "dynamodb",
            region_name=region,
            config=Config(retries={"mode": "standard", "max_attempts": 8}),
        )
    except NoRegionError:
        raise UsageError("no AWS region for DynamoDB: set AWS_REGION or pass region=") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _error(exc: ClientError, what: str) -> SkyhopError:
    """A botocore error as one line of the skyhop error family."""
    code = _code(exc)
    message = exc.response.get("Error", {}).get("Message") or code
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "ResourceNotFoundException":
        return NotFoundError(
            f"{what}: table not found (create it with skyhop.state.dynamodb.create_table "
            "or deploy infra_cdk)"
        )
    if code in _ACCESS_CODES or status == 403:
        return AccessError(f"{what}: access denied ({code}): {message}")
    if code in _THROTTLE_CODES:
        return ThrottledError(f"{what}: throttled ({code})")
    if code in _TRANSIENT_CODES or (isinstance(status, int) and status >= 500):
        return StoreError(f"{what}: {code}: {message}", retryable=True)
    if code == "ValidationException":
        return StoreError(f"{what}: rejected by DynamoDB: {message}")
    return StoreError(f"{what}: {code}: {message}")


def _pk(job_id: str) -> str:
    return f"JOB#{job_id}"


def _obj_sk(object_id: int) -> str:
    return f"OBJ#{object_id:012d}"


def _chk_sk(chunk_id: int) -> str:
    return f"CHK#{chunk_id:012d}"


def _obj_parent(job_id: str, object_id: int) -> str:
    return f"{_pk(job_id)}#OBJ#{object_id:012d}"


def _rev(item: dict[str, Any]) -> int:
    return int(item.get(REV, {}).get("N", "0"))


def _unchanged(item: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The condition that the record is still the one read: same revision and state."""
    values: dict[str, Any] = {":rev": item.get(REV, {"N": "0"}), ":state": item["state"]}
    if REV in item:
        return "#rev = :rev AND #state = :state", values
    values.pop(":rev")
    return "attribute_not_exists(#rev) AND #state = :state", values


def _object_counts(entry: ObjectEntry) -> Counter[str]:
    return Counter({f"o_{entry.state.value}": 1, "o_total": 1, "o_bytes": entry.size})


def _chunk_counts(chunk: Chunk) -> Counter[str]:
    verified = chunk.length if chunk.state == ChunkState.VERIFIED else 0
    return Counter({f"c_{chunk.state.value}": 1, "c_total": 1, "b_verified": verified})


def _merge(cls: type[M], old: M, fields: dict[str, Any], *, frozen: set[str]) -> M:
    """``old`` with ``fields`` set, validated by the model; identity fields stay."""
    fixed = frozen & fields.keys()
    if fixed:
        raise UsageError(f"cannot change {', '.join(sorted(fixed))} of a {cls.__name__}")
    unknown = fields.keys() - cls.model_fields.keys()
    if unknown:
        raise UsageError(f"unknown {cls.__name__} field(s): {', '.join(sorted(unknown))}")
    data = old.model_dump()
    data.update(fields)
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"invalid {cls.__name__} field {where}: {first['msg']}") from None


def _encode(model: BaseModel, extra: dict[str, Any]) -> dict[str, Any]:
    data = model.model_dump(mode="json")
    data.update(extra)
    return {name: _SER.serialize(_to_dynamo(value)) for name, value in data.items()}


def _decode(cls: type[M], item: dict[str, Any]) -> M:
    data = {
        name: _from_dynamo(_DES.deserialize(value))
        for name, value in item.items()
        if name not in _INTERNAL
    }
    return cls.model_validate(data)


def _to_dynamo(value: Any) -> Any:
    """JSON-mode values with floats as Decimal (DynamoDB numbers)."""
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    return value


__all__ = [
    "COUNTER_SHARDS",
    "DEFAULT_MAX_AGE",
    "DEFAULT_RETENTION",
    "GLOBAL_SECONDARY_INDEXES",
    "GSI_BY_PARENT",
    "GSI_BY_PARENT_PK",
    "GSI_BY_PARENT_SK",
    "GSI_BY_STATE",
    "GSI_BY_STATE_PK",
    "GSI_BY_STATE_SK",
    "PARTITION_KEY",
    "SORT_KEY",
    "TABLE_ENV",
    "TABLE_NAME",
    "TTL_ATTRIBUTE",
    "DynamoDBManifest",
    "IndexSpec",
    "create_table",
]
