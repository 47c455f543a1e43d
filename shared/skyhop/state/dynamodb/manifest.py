"""The ManifestStore protocol on one DynamoDB table (the serverless control plane's truth).

The table's layout is :mod:`skyhop.state.dynamodb.table`'s, the items'
encoding :mod:`skyhop.state.dynamodb.codec`'s, and what a write may change
:mod:`skyhop.state.rules`'; this module holds the conditional writes.

Conditional writes
------------------
Objects, chunks and jobs carry a revision ``rev``. A state transition reads the
record (strongly consistent), checks it against the write rules and the
caller's ``expect`` states, and writes the new record in a transaction whose
``ConditionExpression`` requires the state and revision it read; a lost race
re-reads and decides again. A duplicated or reordered event therefore writes
nothing at all. A ``ConditionalCheckFailedException`` never leaves this
module: it becomes ``False`` (``transition_chunk``, ``update_object``) or
:class:`~skyhop.errors.ConflictError` (``create_job``, ``update_job``).
Transactions carry a ``ClientRequestToken``, so an SDK retry after a lost
response does not apply twice. Round trips: a transition is one GetItem and
one TransactWriteItems.

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
A job gets ``expires_at`` when it reaches a finished state (``retention``
later, default 14 days) and loses it again if it leaves that state. Objects,
chunks and counters carry ``max_age`` from their insert (default 30 days) as
a safety net, so nothing of an abandoned job outlives that;
:meth:`DynamoDBManifest.delete_job` removes a job at once.
"""

from __future__ import annotations

import heapq
import os
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from skyhop import retry
from skyhop.errors import ConflictError, NotFoundError, StoreError, ThrottledError
from skyhop.models import Chunk, ChunkState, Job, JobState, ObjectEntry, ObjectState, utcnow
from skyhop.state import counters, rules
from skyhop.state.base import JobProgress
from skyhop.state.dynamodb.codec import (
    INTERNAL,
    JOB_SK,
    JOBS,
    REV,
    chk_sk,
    decode,
    encode,
    obj_parent,
    obj_sk,
    pk,
    revision,
    unchanged,
)
from skyhop.state.dynamodb.table import (
    COUNTER_SHARDS,
    DEFAULT_MAX_AGE,
    DEFAULT_RETENTION,
    GSI_BY_PARENT,
    GSI_BY_PARENT_PK,
    GSI_BY_PARENT_SK,
    GSI_BY_STATE,
    GSI_BY_STATE_PK,
    GSI_BY_STATE_SK,
    PARTITION_KEY,
    SORT_KEY,
    TABLE_ENV,
    TABLE_NAME,
    TTL_ATTRIBUTE,
    client_for,
    error_code,
    translate,
)

_TX_ROWS = 80  # records per insert transaction; + up to 16 counter updates <= 100 actions
_RETRIES = 8
_FATAL_REASONS = {"ValidationError", "ItemCollectionSizeLimitExceeded"}

#: a record whose writes are decided by its state (a chunk or an object)
R = TypeVar("R", Chunk, ObjectEntry)


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
        self._client = client if client is not None else client_for(region)

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
        item = self._get(pk(job_id), JOB_SK, f"reading job {job_id}")
        return decode(Job, item) if item else None

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
            ExpressionAttributeValues={":p": {"S": JOBS}},
            ScanIndexForward=False,
            Limit=limit,
        ):
            keys.extend(
                {PARTITION_KEY: i[PARTITION_KEY], SORT_KEY: i[SORT_KEY]} for i in page["Items"]
            )
            if len(keys) >= limit:
                break
        items = self._batch_get(keys[:limit], "listing jobs")
        return [decode(Job, item) for item in items if item is not None]

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
                ExpressionAttributeValues={":p": {"S": f"{JOBS}#{state.value}"}},
            ):
                for item in page["Items"]:
                    job = decode(Job, item)
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
            item = self._get(pk(job_id), JOB_SK, f"reading job {job_id}")
            if item is None:
                raise NotFoundError(f"unknown job {job_id!r}")
            new = rules.job_update(
                job_id,
                decode(Job, item),
                expect=expect,
                expect_updated_at=expect_updated_at,
                fields=fields,
                now=utcnow(),
            )
            new_item = self._job_item(new, rev=revision(item) + 1)
            if new.state.finished:
                new_item[TTL_ATTRIBUTE] = {"N": str(self._epoch(self.retention))}
            reasons = self._transact(
                [{"Put": self._put(new_item, *unchanged(item))}], f"updating job {job_id}"
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
                ExpressionAttributeValues={":p": {"S": pk(job_id)}},
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
                (e.job_id, self._object_item(e, rev=1), e.object_id, counters.object_counts(e))
                for e in entries
            ),
            "objects",
        )

    def put_chunks(self, chunks: Iterable[Chunk]) -> None:
        self._insert_all(
            (
                (c.job_id, self._chunk_item(c, rev=1), c.chunk_id, counters.chunk_counts(c))
                for c in chunks
            ),
            "chunks",
        )

    def get_object(self, job_id: str, object_id: int) -> ObjectEntry | None:
        item = self._get(pk(job_id), obj_sk(object_id), f"reading object {object_id}")
        return decode(ObjectEntry, item) if item else None

    def get_chunk(self, job_id: str, chunk_id: int) -> Chunk | None:
        item = self._get(pk(job_id), chk_sk(chunk_id), f"reading chunk {chunk_id}")
        return decode(Chunk, item) if item else None

    def iter_objects(
        self, job_id: str, states: set[ObjectState] | None = None
    ) -> Iterator[ObjectEntry]:
        if states is None:
            for item in self._partition(job_id, "OBJ#"):
                yield decode(ObjectEntry, item)
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
                yield decode(Chunk, item)
            return
        yield from self._by_state(Chunk, job_id, "CHK", "c", states)

    def update_object(
        self, job_id: str, object_id: int, *, expect: set[ObjectState] | None = None, **fields: Any
    ) -> bool:
        return self._transition(
            rules.OBJECT,
            job_id,
            obj_sk(object_id),
            object_id,
            rules.object_update(expect, fields),
            item_of=self._object_item,
            counts=counters.object_counts,
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
            chk_sk(chunk_id),
            chunk_id,
            rules.chunk_transition(expect, to, fields),
            item_of=self._chunk_item,
            counts=counters.chunk_counts,
        )

    def progress(self, job_id: str) -> JobProgress:
        return counters.progress([self._counters(job_id)])

    # ------------------------------------------------------------ the conditional transition

    def _transition(
        self,
        kind: rules.RecordRules[R],
        job_id: str,
        sk: str,
        record_id: int,
        write: rules.Write,
        *,
        item_of: Callable[..., dict[str, Any]],
        counts: Callable[[Any], Counter[str]],
    ) -> bool:
        """Read, check the write against the record's state, write the new record
        conditioned on the state and revision read, and move the counters in the
        same transaction."""
        partition = pk(job_id)
        for attempt in range(_RETRIES):
            item = self._get(partition, sk, f"reading {sk} of job {job_id}")
            if item is None:
                return False
            old = decode(kind.model, item)
            if not write.applies(old.state):
                return False
            new = kind.merged(old, write.fields)
            new_item = item_of(new, rev=revision(item) + 1)
            new_item[TTL_ATTRIBUTE] = item.get(TTL_ATTRIBUTE) or {
                "N": str(self._epoch(self.max_age))
            }
            actions: list[dict[str, Any]] = [{"Put": self._put(new_item, *unchanged(item))}]
            delta = counts(new)
            delta.subtract(counts(old))
            counter = self._counter_update(partition, record_id, delta)
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
        retry.pause(attempt, base=0.02, cap=1.0)

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
                update = self._counter_update(pk(job_id), shard, delta)
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
            ExpressionAttributeValues={":p": {"S": pk(job_id)}, ":s": {"S": prefix}},
            ConsistentRead=True,
        ):
            yield from page["Items"]

    def _by_state(
        self, cls: type[R], job_id: str, kind: str, counter: str, states: set[Any]
    ) -> Iterator[R]:
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
            record = decode(cls, item)
            seen.add(item[SORT_KEY]["S"])
            found[record.state] += 1
            yield record
        lagging = {s for s, n in expected.items() if found[s] < n}
        if not lagging:
            return
        for item in self._partition(job_id, f"{kind}#"):
            if item[SORT_KEY]["S"] in seen:
                continue
            record = decode(cls, item)
            if record.state in lagging:
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
            ExpressionAttributeValues={":p": {"S": f"{pk(job_id)}#{kind}#{state.value}"}},
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
                ExpressionAttributeValues={":p": {"S": obj_parent(job_id, object_id)}},
            )
            for i in page["Items"]
        ]
        chunks = [decode(Chunk, i) for i in self._batch_get(keys, "reading chunks") if i]
        return sorted(chunks, key=lambda c: c.chunk_id)

    def _counters(self, job_id: str) -> Counter[str]:
        totals: Counter[str] = Counter()
        for item in self._partition(job_id, "CNT#"):
            for name, value in item.items():
                if name not in INTERNAL and "N" in value:
                    totals[name] += int(value["N"])
        return totals

    # ------------------------------------------------------------ encoding

    def _job_item(self, job: Job, *, rev: int) -> dict[str, Any]:
        order = f"{job.created_at.astimezone(UTC).isoformat()}#{job.job_id}"
        return encode(
            job,
            {
                PARTITION_KEY: pk(job.job_id),
                SORT_KEY: JOB_SK,
                GSI_BY_STATE_PK: f"{JOBS}#{job.state.value}",
                GSI_BY_STATE_SK: order,
                GSI_BY_PARENT_PK: JOBS,
                GSI_BY_PARENT_SK: order,
                REV: rev,
            },
        )

    def _object_item(self, entry: ObjectEntry, *, rev: int) -> dict[str, Any]:
        sk = obj_sk(entry.object_id)
        return encode(
            entry,
            {
                PARTITION_KEY: pk(entry.job_id),
                SORT_KEY: sk,
                GSI_BY_STATE_PK: f"{pk(entry.job_id)}#OBJ#{entry.state.value}",
                GSI_BY_STATE_SK: sk,
                TTL_ATTRIBUTE: self._epoch(self.max_age),
                REV: rev,
            },
        )

    def _chunk_item(self, chunk: Chunk, *, rev: int) -> dict[str, Any]:
        sk = chk_sk(chunk.chunk_id)
        return encode(
            chunk,
            {
                PARTITION_KEY: pk(chunk.job_id),
                SORT_KEY: sk,
                GSI_BY_STATE_PK: f"{pk(chunk.job_id)}#CHK#{chunk.state.value}",
                GSI_BY_STATE_SK: sk,
                GSI_BY_PARENT_PK: obj_parent(chunk.job_id, chunk.object_id),
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
            code = error_code(exc)
            if code == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                return [str(r.get("Code") or "None") for r in reasons] or ["TransactionConflict"]
            if code == "TransactionConflictException":
                return ["TransactionConflict"]
            raise translate(exc, f"{what} in {self.table_name}") from None
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
                    retry.pause(attempt, base=0.02, cap=1.0)
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
                retry.pause(attempt, base=0.02, cap=1.0)
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
            answer: dict[str, Any] = getattr(self._client, operation)(**kwargs)
            return answer
        except ClientError as exc:
            raise translate(exc, what) from None
        except BotoCoreError as exc:
            raise StoreError(f"{what}: {exc}", retryable=True) from None
