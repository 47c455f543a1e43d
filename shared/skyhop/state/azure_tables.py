"""The ManifestStore protocol on Azure Table Storage: the Azure control plane's truth.

URI ``aztable://ACCOUNT/TABLE`` (:func:`parse_aztable`). Credentials:
``AZURE_STORAGE_CONNECTION_STRING`` when it names ACCOUNT (Azurite in tests,
the function app's storage account), else azure-identity's
``DefaultAzureCredential`` against ``https://ACCOUNT.table.core.windows.net``.

Layout
------
Table Storage has one index, (PartitionKey, RowKey), and transactions only
within a partition, so a job's objects, chunks and counters share the
partition ``job-<job_id>`` and jobs share the partition ``jobs``::

    PartitionKey     RowKey                              record
    jobs             <job_id>                            job
    job-<job_id>     obj-<object_id, 12 digits>          object
    job-<job_id>     chk-<chunk_id, 12 digits>           chunk
    job-<job_id>     idx-<object_id>-<chunk_id>          a chunk's object (keys only)
    job-<job_id>     cnt-<n, 2 digits>                   counter shard (per-state counts)

Each record holds the pydantic model's JSON in ``d0``, ``d1``, ... (a string
property holds 64 KiB) and beside it the properties queries filter on:
``state`` on all, ``created_us`` on jobs, ``size`` on objects, ``object_id``
and ``length`` on chunks. The ``idx-`` rows never change after insert: an
object's chunks are one range query of them and one range query of the
chunks between their first and last id.

Conditional writes
------------------
What a write may change is :mod:`skyhop.state.rules`'. A transition reads the
record and its counter shard (``chunk_id % 16``), two point reads (a query
naming both keys would scan the partition), then submits one entity-group
transaction: the record replaced ``If-Match`` its ETag and the shard merged
``If-Match`` its ETag (three round trips; a duplicate event costs one). A lost race (412)
reads again and decides again, so a duplicated or late event writes nothing.
Inserts are transactions of up to 100 operations (records plus the shards'
deltas); a record that exists already is kept as it is. A job is created
with ``create`` (409: :class:`~skyhop.errors.ConflictError`) and updated
``If-Match`` its ETag.

Reading
-------
Queries are strongly consistent and page by continuation token (keyset: a
record changing state behind the cursor is neither skipped nor repeated).
``iter_chunks`` by state filters the job's ``chk-`` range on ``state``
server side. :meth:`AzureTableManifest.progress` is one query of the 16
counter shards. ``list_jobs`` reads the ``jobs`` partition (Table Storage has
no secondary index to sort by time) and keeps the newest ``limit``.

Retention
---------
Table Storage has no TTL: a finished job carries ``expires_at`` and
:meth:`AzureTableManifest.purge_expired` (run by the reaper) deletes jobs past
it; ``delete_job`` removes a job at once.
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

from azure.core import MatchConditions
from azure.core import exceptions as aexc
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)
from pydantic import BaseModel

from skyhop import retry
from skyhop.clouds import azure
from skyhop.errors import (
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

SCHEME = "aztable"
DEFAULT_TABLE = "skyhopmanifest"
COUNTER_SHARDS = counters.COUNTER_SHARDS
DEFAULT_RETENTION = timedelta(days=14)
JOBS_PARTITION = "jobs"

_PIECE = 30_000  # characters per string property (64 KiB of UTF-16)
_MAX_PIECES = 15  # an entity holds 1 MiB
_TX_OPS = 100  # operations per entity-group transaction
_RETRIES = 30  # optimistic writes lost to other writers of the same record or shard
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_TABLE = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,62}$")
_BAD_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")

M = TypeVar("M", bound=BaseModel)
#: a record whose writes are decided by its state (a chunk or an object)
R = TypeVar("R", Chunk, ObjectEntry)
T = TypeVar("T")


def parse_aztable(uri: str) -> tuple[str, str]:
    """``aztable://ACCOUNT/TABLE`` as (account, table)."""
    scheme, sep, rest = uri.partition("://")
    parts = rest.split("/") if sep else []
    if scheme != SCHEME or len(parts) != 2 or not all(parts) or "?" in rest:
        raise UsageError(f"{uri!r}: expected aztable://ACCOUNT/TABLE")
    account, table = parts
    if not _ACCOUNT.match(account):
        raise UsageError(f"{uri!r}: {account!r} is not a storage account name")
    if not _TABLE.match(table) or table.lower() == "tables":
        raise UsageError(
            f"{uri!r}: {table!r} is not a table name (3-63 letters and digits, a letter first)"
        )
    return account, table


def open_uri(uri: str) -> AzureTableManifest:
    """The manifest behind ``aztable://ACCOUNT/TABLE`` (the
    :func:`skyhop.state.open_manifest` registry's entry)."""
    return AzureTableManifest.from_uri(uri)


def translate(exc: Exception, what: str) -> SkyhopError:
    """An azure-core error as one line of the skyhop error family: the Azure kit's
    translation, with Table Storage's throttling (429, 503 ServerBusy) said so."""
    if isinstance(exc, aexc.HttpResponseError) and not isinstance(exc, aexc.ResourceNotFoundError):
        detail = azure.short(exc)
        if exc.status_code == 429 or (exc.status_code == 503 and "ServerBusy" in detail):
            return ThrottledError(f"{what}: throttled ({detail})")
    return azure.translate(exc, what)


def _table_client(account: str, table: str) -> TableClient:
    service = azure.storage_client(TableServiceClient, account, "table")
    client: TableClient = service.get_table_client(table)
    return client


# ---------------------------------------------------------------- encoding


def _pk(job_id: str) -> str:
    if _BAD_KEY.search(job_id) or not job_id:
        raise UsageError(f"job id {job_id!r} cannot be a Table Storage key")
    return f"job-{job_id}"


def _obj_rk(object_id: int) -> str:
    return f"obj-{object_id:012d}"


def _chk_rk(chunk_id: int) -> str:
    return f"chk-{chunk_id:012d}"


def _idx_rk(object_id: int, chunk_id: int | None = None) -> str:
    tail = "" if chunk_id is None else f"{chunk_id:012d}"
    return f"idx-{object_id:012d}-{tail}"


def _shard_rk(record_id: int) -> str:
    return f"cnt-{counters.shard(record_id):02d}"


def _int64(value: int) -> EntityProperty:
    return EntityProperty(value, EdmType.INT64)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, EntityProperty) else value


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp()) * 1_000_000 + value.microsecond


def _pieces(model: BaseModel) -> dict[str, Any]:
    text = model.model_dump_json()
    pieces = [text[i : i + _PIECE] for i in range(0, len(text), _PIECE)] or [""]
    if len(pieces) > _MAX_PIECES:
        raise StoreError(
            f"{type(model).__name__} of {len(text)} characters is too large for Table Storage"
        )
    return {f"d{i}": piece for i, piece in enumerate(pieces)}


def _decode(cls: type[M], entity: dict[str, Any]) -> M:
    text = "".join(entity[f"d{i}"] for i in range(_MAX_PIECES) if f"d{i}" in entity)
    return cls.model_validate_json(text)


def _etag(entity: Any) -> str:
    return str(entity.metadata["etag"])


class AzureTableManifest:
    """:class:`~skyhop.state.base.ManifestStore` on one table, laid out as above.

    ``page_size``: entities per query page (Table Storage returns at most
    1,000); ``retention``: how long a finished job stays before
    :meth:`purge_expired` deletes it; ``create``: create the table if missing.
    """

    def __init__(
        self,
        account: str,
        table: str = DEFAULT_TABLE,
        *,
        page_size: int = 1000,
        retention: timedelta = DEFAULT_RETENTION,
        create: bool = True,
        client: TableClient | None = None,
    ) -> None:
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        self.account, self.table = account, table
        self.page_size = page_size
        self.retention = retention
        self._client = client or _table_client(account, table)
        if create:
            self._create_table()

    @classmethod
    def from_uri(cls, uri: str, **kwargs: Any) -> AzureTableManifest:
        account, table = parse_aztable(uri)
        return cls(account, table, **kwargs)

    @property
    def uri(self) -> str:
        return f"{SCHEME}://{self.account}/{self.table}"

    def __repr__(self) -> str:
        return f"AzureTableManifest({self.uri!r})"

    def _create_table(self) -> None:
        try:
            self._client.create_table()
        except aexc.ResourceExistsError:
            pass
        except aexc.AzureError as exc:
            raise translate(exc, f"creating table {self.uri}") from None

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return translated(fn, f"{what} in {self.uri}", translate, catch=(aexc.AzureError,))

    def _get(self, pk: str, rk: str, what: str) -> Any | None:
        try:
            return self._client.get_entity(pk, rk)
        except aexc.ResourceNotFoundError:
            return None
        except aexc.AzureError as exc:
            raise translate(exc, f"{what} in {self.uri}") from None

    def _query(self, what: str, flt: str, params: dict[str, Any], **kwargs: Any) -> Iterator[Any]:
        """Entities matching ``flt``, page by page (continuation tokens)."""
        pages = self._call(
            what,
            lambda: self._client.query_entities(
                flt, parameters=params, results_per_page=self.page_size, **kwargs
            ).by_page(),
        )
        while True:
            try:
                page = next(pages)
                entities = list(page)
            except StopIteration:
                return
            except aexc.AzureError as exc:
                raise translate(exc, f"{what} in {self.uri}") from None
            yield from entities

    def _range(
        self, what: str, pk: str, lo: str, hi: str, extra: str = "", **params: Any
    ) -> Iterator[Any]:
        flt = "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi" + extra
        return self._query(what, flt, {"pk": pk, "lo": lo, "hi": hi, **params})

    def _pause(self, attempt: int) -> None:
        retry.pause(attempt, base=0.005, cap=0.5)

    # ------------------------------------------------------------ jobs

    def _job_entity(self, job: Job) -> dict[str, Any]:
        expires = utcnow() + self.retention if job.state.finished else None
        return {
            "PartitionKey": JOBS_PARTITION,
            "RowKey": job.job_id,
            "state": job.state.value,
            "created_us": _int64(_micros(job.created_at)),
            "expires_at": expires,
            **_pieces(job),
        }

    def create_job(self, job: Job) -> None:
        _pk(job.job_id)  # a job id the keys can hold
        try:
            self._client.create_entity(self._job_entity(job))
        except aexc.ResourceExistsError:
            raise ConflictError(f"job {job.job_id} already exists") from None
        except aexc.AzureError as exc:
            raise translate(exc, f"creating job {job.job_id} in {self.uri}") from None

    def get_job(self, job_id: str) -> Job | None:
        entity = self._get(JOBS_PARTITION, job_id, f"reading job {job_id}")
        return _decode(Job, entity) if entity is not None else None

    def list_jobs(self, limit: int = 50) -> list[Job]:
        if limit <= 0:
            return []
        entities = self._query("listing jobs", "PartitionKey eq @pk", {"pk": JOBS_PARTITION})
        newest = heapq.nlargest(
            limit,
            entities,
            key=lambda e: (_plain(e["created_us"]), e["RowKey"]),
        )
        return [_decode(Job, e) for e in newest]

    def iter_jobs(self, states: set[JobState]) -> Iterator[Job]:
        """Jobs in ``states`` (for the reaper; not part of the protocol)."""
        extra, params = self._state_filter(states)
        flt = "PartitionKey eq @pk" + extra
        params["pk"] = JOBS_PARTITION
        for entity in self._query("listing jobs by state", flt, params):
            yield _decode(Job, entity)

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Delete finished jobs whose retention has passed (Table Storage has no
        TTL); returns their ids."""
        flt = "PartitionKey eq @pk and expires_at lt @now"
        params = {"pk": JOBS_PARTITION, "now": now or utcnow()}
        gone = [
            e["RowKey"] for e in self._query("finding expired jobs", flt, params, select=["RowKey"])
        ]
        for job_id in gone:
            self.delete_job(job_id)
        return gone

    def update_job(
        self,
        job_id: str,
        *,
        expect: set[JobState] | None = None,
        expect_updated_at: datetime | None = None,
        **fields: Any,
    ) -> Job:
        rules.JOB.fields(fields)  # a bad field fails before anything is read
        for attempt in range(_RETRIES):
            entity = self._get(JOBS_PARTITION, job_id, f"reading job {job_id}")
            if entity is None:
                raise NotFoundError(f"unknown job {job_id!r}")
            new = rules.job_update(
                job_id,
                _decode(Job, entity),
                expect=expect,
                expect_updated_at=expect_updated_at,
                fields=fields,
                now=utcnow(),
            )
            try:
                self._client.update_entity(
                    self._job_entity(new),
                    mode=UpdateMode.REPLACE,
                    etag=_etag(entity),
                    match_condition=MatchConditions.IfNotModified,
                )
                return new
            except aexc.ResourceModifiedError:
                self._pause(attempt)
            except aexc.ResourceNotFoundError:
                raise NotFoundError(f"unknown job {job_id!r}") from None
            except aexc.AzureError as exc:
                raise translate(exc, f"updating job {job_id} in {self.uri}") from None
        raise ThrottledError(f"job {job_id}: too many concurrent updates, try again")

    def delete_job(self, job_id: str) -> None:
        pk = _pk(job_id)
        rows = (
            e["RowKey"]
            for e in self._query(
                f"deleting job {job_id}", "PartitionKey eq @pk", {"pk": pk}, select=["RowKey"]
            )
        )
        while batch := list(itertools.islice(rows, _TX_OPS)):
            ops = [("delete", {"PartitionKey": pk, "RowKey": rk}) for rk in batch]
            self._call(f"deleting job {job_id}", partial(self._client.submit_transaction, ops))
        try:
            self._client.delete_entity(JOBS_PARTITION, job_id)
        except aexc.ResourceNotFoundError:
            pass
        except aexc.AzureError as exc:
            raise translate(exc, f"deleting job {job_id} in {self.uri}") from None

    # ------------------------------------------------------------ inserts

    def put_objects(self, entries: Iterable[ObjectEntry]) -> None:
        def rows() -> Iterator[tuple[str, list[dict[str, Any]], int, Counter[str]]]:
            for e in entries:
                entity = {
                    "PartitionKey": _pk(e.job_id),
                    "RowKey": _obj_rk(e.object_id),
                    "state": e.state.value,
                    "size": _int64(e.size),
                    **_pieces(e),
                }
                yield e.job_id, [entity], e.object_id, counters.object_counts(e)

        self._insert_all(rows(), "objects")

    def put_chunks(self, chunks: Iterable[Chunk]) -> None:
        def rows() -> Iterator[tuple[str, list[dict[str, Any]], int, Counter[str]]]:
            for c in chunks:
                pk = _pk(c.job_id)
                entity = {
                    "PartitionKey": pk,
                    "RowKey": _chk_rk(c.chunk_id),
                    "state": c.state.value,
                    "object_id": _int64(c.object_id),
                    "length": _int64(c.length),
                    **_pieces(c),
                }
                index = {"PartitionKey": pk, "RowKey": _idx_rk(c.object_id, c.chunk_id)}
                yield c.job_id, [entity, index], c.chunk_id, counters.chunk_counts(c)

        self._insert_all(rows(), "chunks")

    def _insert_all(
        self, rows: Iterator[tuple[str, list[dict[str, Any]], int, Counter[str]]], what: str
    ) -> None:
        """Group rows by job and fill transactions of at most 100 operations,
        the shards' deltas included."""
        batch: dict[str, tuple[str, list[dict[str, Any]], int, Counter[str]]] = {}
        job = ""  # the job of the rows in ``batch``, set with its first row
        ops = 0
        for row in rows:
            per = len(row[1])
            if batch and (row[0] != job or ops + per + COUNTER_SHARDS > _TX_OPS):
                self._insert(job, list(batch.values()), what)
                batch, ops = {}, 0
            job = row[0]
            key = row[1][0]["RowKey"]
            if key not in batch:  # the first of duplicates wins, like an existing record
                batch[key] = row
                ops += per
        if batch:
            self._insert(job, list(batch.values()), what)

    def _insert(
        self,
        job_id: str,
        rows: list[tuple[str, list[dict[str, Any]], int, Counter[str]]],
        what: str,
    ) -> None:
        """Insert the records that do not exist yet with their counter deltas, in
        one transaction; records that exist are kept as they are."""
        pk = _pk(job_id)
        look = False  # look for existing records only after a transaction found one
        for attempt in range(_RETRIES * 2):
            if look:
                keys = sorted(r[1][0]["RowKey"] for r in rows)
                existing = {
                    e["RowKey"]
                    for e in self._range(
                        f"writing {what}", pk, keys[0], keys[-1] + "\0", select=["RowKey"]
                    )
                }
                rows = [r for r in rows if r[1][0]["RowKey"] not in existing]
            if not rows:
                return
            deltas: dict[str, Counter[str]] = {}
            for _, _, record_id, counts in rows:
                deltas.setdefault(_shard_rk(record_id), Counter()).update(counts)
            ops: list[Any] = [("create", entity) for r in rows for entity in r[1]]
            ops += self._shard_ops(pk, deltas, f"writing {what}")
            try:
                self._client.submit_transaction(ops)
                return
            except TableTransactionError as exc:
                if exc.status_code not in (409, 412):  # another writer came first: look again
                    raise translate(exc, f"writing {what} in {self.uri}") from None
            except aexc.AzureError as exc:
                raise translate(exc, f"writing {what} in {self.uri}") from None
            look = True
            self._pause(attempt)
        raise ThrottledError(f"writing {what}: too many concurrent writers, try again")

    def _shards(self, pk: str, what: str) -> dict[str, Any]:
        return {e["RowKey"]: e for e in self._range(what, pk, "cnt-", "cnt.")}

    def _shard_ops(self, pk: str, deltas: dict[str, Counter[str]], what: str) -> list[Any]:
        """Transaction operations adding ``deltas`` to their shards, each
        conditioned on the shard's ETag (created when missing)."""
        shards = self._shards(pk, what)
        ops: list[Any] = []
        for rk, delta in sorted(deltas.items()):
            ops.extend(self._shard_op(pk, rk, shards.get(rk), delta))
        return ops

    def _shard_op(self, pk: str, rk: str, shard: Any | None, delta: Counter[str]) -> list[Any]:
        changes = {k: n for k, n in delta.items() if n}
        if not changes:
            return []
        if shard is None:
            entity: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk}
            entity.update({k: _int64(n) for k, n in changes.items()})
            return [("create", entity)]
        merged: dict[str, Any] = {"PartitionKey": pk, "RowKey": rk}
        for name, n in changes.items():
            merged[name] = _int64(int(_plain(shard.get(name, 0)) or 0) + n)
        return [
            (
                "update",
                merged,
                {
                    "mode": UpdateMode.MERGE,
                    "etag": _etag(shard),
                    "match_condition": MatchConditions.IfNotModified,
                },
            )
        ]

    # ------------------------------------------------------------ reads

    def get_object(self, job_id: str, object_id: int) -> ObjectEntry | None:
        entity = self._get(_pk(job_id), _obj_rk(object_id), f"reading object {object_id}")
        return _decode(ObjectEntry, entity) if entity is not None else None

    def get_chunk(self, job_id: str, chunk_id: int) -> Chunk | None:
        entity = self._get(_pk(job_id), _chk_rk(chunk_id), f"reading chunk {chunk_id}")
        return _decode(Chunk, entity) if entity is not None else None

    def _state_filter(self, states: Iterable[Any] | None) -> tuple[str, dict[str, str]]:
        if states is None:
            return "", {}
        values = rules.state_values(states)
        if not values:
            return " and state eq ''", {}
        clause = " or ".join(f"state eq @s{i}" for i in range(len(values)))
        return f" and ( {clause} )", {f"s{i}": v for i, v in enumerate(values)}

    def iter_objects(
        self, job_id: str, states: set[ObjectState] | None = None
    ) -> Iterator[ObjectEntry]:
        extra, params = self._state_filter(states)
        what = f"reading objects of job {job_id}"
        for entity in self._range(what, _pk(job_id), "obj-", "obj.", extra, **params):
            yield _decode(ObjectEntry, entity)

    def iter_chunks(
        self,
        job_id: str,
        states: set[ChunkState] | None = None,
        object_id: int | None = None,
    ) -> Iterator[Chunk]:
        pk = _pk(job_id)
        extra, params = self._state_filter(states)
        if object_id is None:
            what = f"reading chunks of job {job_id}"
            for entity in self._range(what, pk, "chk-", "chk.", extra, **params):
                yield _decode(Chunk, entity)
            return
        what = f"reading chunks of object {object_id}"
        lo = _idx_rk(object_id)
        ids = [
            int(e["RowKey"].rsplit("-", 1)[1])
            for e in self._range(what, pk, lo, lo[:-1] + ".", select=["RowKey"])
        ]
        if not ids:
            return
        extra += f" and object_id eq {int(object_id)}L"  # an Int64 literal
        first, last = _chk_rk(min(ids)), _chk_rk(max(ids)) + "\0"
        for entity in self._range(what, pk, first, last, extra, **params):
            yield _decode(Chunk, entity)

    # ------------------------------------------------------------ transitions

    def update_object(
        self, job_id: str, object_id: int, *, expect: set[ObjectState] | None = None, **fields: Any
    ) -> bool:
        return self._transition(
            rules.OBJECT,
            job_id,
            _obj_rk(object_id),
            object_id,
            rules.object_update(expect, fields),
            lambda e: {"state": e.state.value, "size": _int64(e.size), **_pieces(e)},
            counters.object_counts,
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
            _chk_rk(chunk_id),
            chunk_id,
            rules.chunk_transition(expect, to, fields),
            lambda c: {
                "state": c.state.value,
                "object_id": _int64(c.object_id),
                "length": _int64(c.length),
                **_pieces(c),
            },
            counters.chunk_counts,
        )

    def _transition(
        self,
        kind: rules.RecordRules[R],
        job_id: str,
        rk: str,
        record_id: int,
        write: rules.Write,
        encode: Callable[[Any], dict[str, Any]],
        counts: Callable[[Any], Counter[str]],
    ) -> bool:
        """Read the record, decide by the rules, read its shard, and replace the
        record and merge the shard if neither changed (one transaction)."""
        pk = _pk(job_id)
        shard_rk = _shard_rk(record_id)
        what = f"updating {rk} of job {job_id}"
        for attempt in range(_RETRIES):
            # two point reads: a query naming both keys would scan the whole partition
            entity = self._get(pk, rk, what)
            if entity is None:
                return False
            old = _decode(kind.model, entity)
            if not write.applies(old.state):
                return False
            new = kind.merged(old, write.fields)
            delta = counts(new)
            delta.subtract(counts(old))
            shard = self._get(pk, shard_rk, what) if any(delta.values()) else None
            ops: list[Any] = [
                (
                    "update",
                    {"PartitionKey": pk, "RowKey": rk, **encode(new)},
                    {
                        "mode": UpdateMode.REPLACE,
                        "etag": _etag(entity),
                        "match_condition": MatchConditions.IfNotModified,
                    },
                )
            ]
            ops += self._shard_op(pk, shard_rk, shard, delta)
            try:
                self._client.submit_transaction(ops)
                return True
            except TableTransactionError as exc:
                if exc.status_code not in (404, 409, 412):
                    raise translate(exc, f"{what} in {self.uri}") from None
            except aexc.AzureError as exc:
                raise translate(exc, f"{what} in {self.uri}") from None
            self._pause(attempt)
        raise ThrottledError(f"{what}: too many concurrent updates, try again")

    # ------------------------------------------------------------ progress

    def progress(self, job_id: str) -> JobProgress:
        shards = self._shards(_pk(job_id), f"counting job {job_id}").values()
        return counters.progress(
            {name: _plain(value) for name, value in shard.items() if counters.is_counter(name)}
            for shard in shards
        )


__all__ = [
    "COUNTER_SHARDS",
    "DEFAULT_TABLE",
    "AzureTableManifest",
    "open_uri",
    "parse_aztable",
    "translate",
]
