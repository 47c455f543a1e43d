"""The ManifestStore protocol on SQLite: the embedded default (``~/.skyhop/manifest.db``).

Schema (version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``)::

    jobs    (job_id PK, state, created_us, updated_us, data)
    objects (job_id, object_id, state, size, data)     PK (job_id, object_id)
    chunks  (job_id, chunk_id, object_id, state, length, data)  PK (job_id, chunk_id)

``data`` is the whole record as the pydantic model's JSON (``model_dump_json``,
read back with ``model_validate_json``), so a model's nested parts (a job's
request, plan and runtime) need no columns of their own. The other columns
mirror the fields that queries filter, order or sum on, and are written in
the same statement as ``data``. Indexes ``(job_id, state, id, size|length)``
let every state-filtered iterator and :meth:`SQLiteManifest.progress` read
only the job's own rows in that state.

Every transition is one conditional statement::

    UPDATE chunks SET state = ?, data = json_set(data, '$.state', json(?), ...)
     WHERE job_id = ? AND chunk_id = ? AND state IN (...)

and applied exactly when it changed a row, so a duplicated or late event
changes nothing. A runner records a round of results (and the chunks it takes
next) inside :meth:`SQLiteManifest.batch`: one transaction, one commit, each
write still conditional on what the writes before it left. Iterators page by key (``id > last ORDER BY id LIMIT n``),
never by OFFSET. The database runs in WAL mode; each thread gets its own
connection (an in-memory database, ``":memory:"``, shares one behind a lock).
Every :mod:`sqlite3` error becomes a :mod:`skyhop.errors` error.
"""

from __future__ import annotations

import heapq
import itertools
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from skyhop.errors import ConflictError, NotFoundError, StoreError
from skyhop.models import Chunk, ChunkState, Job, JobState, ObjectEntry, ObjectState, utcnow
from skyhop.state import rules
from skyhop.state.base import JobProgress

SCHEMA_VERSION = 1

#: DDL per schema version; a database at version N runs the scripts after N.
_MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE jobs (
            job_id     TEXT PRIMARY KEY,
            state      TEXT NOT NULL,
            created_us INTEGER NOT NULL,
            updated_us INTEGER NOT NULL,
            data       TEXT NOT NULL
        )""",
        "CREATE INDEX jobs_created ON jobs (created_us)",
        """CREATE TABLE objects (
            job_id    TEXT NOT NULL,
            object_id INTEGER NOT NULL,
            state     TEXT NOT NULL,
            size      INTEGER NOT NULL,
            data      TEXT NOT NULL,
            PRIMARY KEY (job_id, object_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX objects_state ON objects (job_id, state, object_id, size)",
        """CREATE TABLE chunks (
            job_id    TEXT NOT NULL,
            chunk_id  INTEGER NOT NULL,
            object_id INTEGER NOT NULL,
            state     TEXT NOT NULL,
            length    INTEGER NOT NULL,
            data      TEXT NOT NULL,
            PRIMARY KEY (job_id, chunk_id)
        ) WITHOUT ROWID""",
        "CREATE INDEX chunks_state ON chunks (job_id, state, chunk_id, length)",
        "CREATE INDEX chunks_object ON chunks (job_id, object_id, chunk_id)",
    ],
}

M = TypeVar("M", bound=BaseModel)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class _Table:
    """How one record kind maps onto its table."""

    def __init__(
        self,
        name: str,
        model: type[BaseModel],
        id_column: str,
        mirrored: dict[str, str],
        state_index: str | None = None,
    ) -> None:
        self.name = name
        self.state_index = state_index  # (job_id, state, id) index
        self.model = model
        self.id_column = id_column
        self.mirrored = mirrored  # model field -> column written alongside data


_JOBS = _Table(
    "jobs",
    Job,
    "job_id",
    {"state": "state", "created_at": "created_us", "updated_at": "updated_us"},
)
_OBJECTS = _Table(
    "objects",
    ObjectEntry,
    "object_id",
    {"state": "state", "size": "size"},
    "objects_state",
)
_CHUNKS = _Table(
    "chunks",
    Chunk,
    "chunk_id",
    {"state": "state", "length": "length"},
    "chunks_state",
)


def _micros(value: datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _MICROSECOND


def _column_value(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return _micros(value)
    return value


def _assignments(table: _Table, fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``SET`` clause and parameters writing validated ``fields`` into the mirrored
    columns and into ``data`` with one ``json_set``."""
    sets: list[str] = []
    params: list[Any] = []
    for name, value in fields.items():
        column = table.mirrored.get(name)
        if column is not None:
            sets.append(f"{column} = ?")
            params.append(_column_value(value))
    paths: list[str] = []
    for name, value in fields.items():
        paths.append(f"'$.{name}', json(?)")
        params.append(rules.field_adapter(table.model, name).dump_json(value).decode())
    sets.append(f"data = json_set(data, {', '.join(paths)})")
    return ", ".join(sets), params


def _in(values: Iterable[Enum]) -> tuple[str, list[str]]:
    items = sorted({v.value for v in values})
    return ", ".join("?" * len(items)), items


@cache
def _in_values(values: frozenset[Enum]) -> tuple[str, ...]:
    return tuple(sorted({v.value for v in values}))


@cache
def _update_sql(table: _Table, names: tuple[str, ...], n_states: int | None) -> str:
    """The conditional ``UPDATE`` writing fields ``names`` (the statement text depends
    on the names only; made once per shape of write, values bound)."""
    sets = [f"{table.mirrored[n]} = ?" for n in names if n in table.mirrored]
    paths = ", ".join(f"'$.{n}', json(?)" for n in names)
    sets.append(f"data = json_set(data, {paths})")
    sql = f"UPDATE {table.name} SET {', '.join(sets)} WHERE job_id = ? AND {table.id_column} = ?"  # noqa: S608 - names from the schema, values bound
    if n_states is not None:
        sql += f" AND state IN ({', '.join('?' * n_states)})"
    return sql


def _assignment_params(table: _Table, fields: dict[str, Any]) -> tuple[Any, ...]:
    """The values :func:`_update_sql` binds, in its order: mirrored columns, then
    every field's JSON."""
    mirrored = [_column_value(v) for n, v in fields.items() if n in table.mirrored]
    dumped = [rules.field_adapter(table.model, n).dump_json(v).decode() for n, v in fields.items()]
    return (*mirrored, *dumped)


class SQLiteManifest:
    """The manifest in one SQLite file (``path``; default :func:`skyhop.config.manifest_path`).

    ``page_size`` is the number of rows an iterator fetches per query,
    ``batch_size`` the number of rows inserted per transaction. A new database
    file is created with mode 0600: it holds job secrets (control tokens).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        page_size: int = 500,
        batch_size: int = 1000,
        timeout: float = 30.0,
    ) -> None:
        if page_size < 1 or batch_size < 1:
            raise ValueError("page_size and batch_size must be positive")
        if path is None:
            from skyhop.config import manifest_path

            path = manifest_path()
        self.path = str(path)
        self.page_size = page_size
        self.batch_size = batch_size
        self._timeout = timeout
        self._memory = self.path == ":memory:"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._registry_lock = threading.Lock()
        self._shared_lock = threading.RLock()
        if not self._memory:
            self._create_file()
        with self._db() as conn:
            self._migrate(conn)

    def __repr__(self) -> str:
        return f"SQLiteManifest({self.path!r})"

    def __enter__(self) -> SQLiteManifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ connections

    def _create_file(self) -> None:
        path = Path(self.path)
        if path.exists():
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        except OSError as exc:
            raise StoreError(f"cannot create manifest {self.path}: {exc.strerror}") from None

    def _connection(self) -> sqlite3.Connection:
        if self._memory:
            conn = self._connections[0] if self._connections else None
        else:
            conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            if not self._memory:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                # a job's credentials, blanked when it ends, leave no copy in freed pages
                conn.execute("PRAGMA secure_delete = ON")
        except sqlite3.Error as exc:
            raise self._error(exc) from None
        with self._registry_lock:
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        lock: AbstractContextManager[Any] = self._shared_lock if self._memory else nullcontext()
        with lock:
            conn = self._connection()
            try:
                yield conn
            except sqlite3.Error as exc:
                raise self._error(exc) from None

    def _one(self, sql: str, params: Iterable[Any]) -> Any:
        """The first row of one statement (the hot path of reads: no context manager)."""
        if self._memory:
            with self._shared_lock:
                return self._run(sql, params).fetchone()
        return self._run(sql, params).fetchone()

    def _changed(self, sql: str, params: Iterable[Any]) -> bool:
        """Whether one write statement changed a row (the hot path of writes)."""
        if self._memory:
            with self._shared_lock:
                return bool(self._run(sql, params).rowcount == 1)
        return bool(self._run(sql, params).rowcount == 1)

    def _run(self, sql: str, params: Iterable[Any]) -> sqlite3.Cursor:
        conn = self._connection()
        try:
            return conn.execute(sql, tuple(params))
        except sqlite3.Error as exc:
            raise self._error(exc) from None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: writers queue on the busy timeout);
        inside this thread's :meth:`batch`, part of the batch's."""
        with self._db() as conn:
            if conn.in_transaction:  # a batch's: all or nothing within it, committed with it
                conn.execute("SAVEPOINT tx")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK TO tx")
                    conn.execute("RELEASE tx")
                    raise
                conn.execute("RELEASE tx")
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """This thread's writes inside the block in one transaction (:class:`Batches`):
        one commit for a round of results instead of one per write. Committed also
        when the block raises (each write was a valid transition on its own); a
        nested block joins the outer one. Other writers wait on the busy timeout
        while it lasts, as for any write."""
        with self._db() as conn:
            if conn.in_transaction:
                yield
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield
            finally:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                finally:
                    if getattr(self._local, "scrub_pending", False):
                        self._local.scrub_pending = False
                        self._checkpoint(conn)

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = " ".join(str(exc).split())
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return StoreError(f"manifest {self.path} is busy: {text}", retryable=True)
        return StoreError(f"manifest {self.path}: {text}")

    def scrub(self) -> None:
        """Copy the WAL back into the database and empty it: the pages of blanked
        credentials leave no copy behind (secure_delete zeroes the freed ones).

        A checkpoint cannot run inside a transaction (SQLite answers "database table
        is locked"): inside this thread's :meth:`batch` it runs when the batch has
        committed. Best effort: when another process holds the database, the WAL is
        emptied at :meth:`close` instead of failing the write that asked."""
        if self._memory:
            return
        conn = self._connection()
        if conn.in_transaction:
            self._local.scrub_pending = True
            return
        self._checkpoint(conn)

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            pass  # busy or locked: close() checkpoints again

    def close(self) -> None:
        """Close every connection (the manifest reopens them if used again)."""
        with self._registry_lock:
            connections, self._connections = self._connections, []
        self._local = threading.local()
        if connections and not self._memory:
            # the WAL still holds the pages of blanked credentials until a checkpoint
            # copies them back (secure_delete then zeroes the freed ones): end it empty
            self._checkpoint(connections[0])
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"manifest {self.path} has schema version {version}; this skyhop "
                    f"understands up to {SCHEMA_VERSION}: upgrade skyhop"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
            if version < SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        with self._db() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------ jobs

    def create_job(self, job: Job) -> None:
        row = (
            job.job_id,
            job.state.value,
            _micros(job.created_at),
            _micros(job.updated_at),
            job.model_dump_json(),
        )
        with self._db() as conn:
            try:
                conn.execute(
                    "INSERT INTO jobs (job_id, state, created_us, updated_us, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    row,
                )
            except sqlite3.IntegrityError:
                raise ConflictError(f"job {job.job_id} already exists") from None

    def get_job(self, job_id: str) -> Job | None:
        with self._db() as conn:
            row = conn.execute("SELECT data FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return Job.model_validate_json(row[0]) if row else None

    def list_jobs(self, limit: int = 50) -> list[Job]:
        if limit <= 0:
            return []
        with self._db() as conn:
            rows = conn.execute(
                "SELECT data FROM jobs ORDER BY created_us DESC, rowid DESC LIMIT ?", (limit,)
            ).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]

    def update_job(
        self,
        job_id: str,
        *,
        expect: set[JobState] | None = None,
        expect_updated_at: datetime | None = None,
        **fields: Any,
    ) -> Job:
        values = rules.JOB.fields(fields)
        values["updated_at"] = rules.job_updated_at(values, utcnow(), expect_updated_at)
        assignments, params = _assignments(_JOBS, values)
        sql = f"UPDATE jobs SET {assignments} WHERE job_id = ?"  # noqa: S608 - names from the schema, values bound
        params.append(job_id)
        if expect is not None:
            marks, states = _in(expect)
            sql += f" AND state IN ({marks})"
            params.extend(states)
        if expect_updated_at is not None:
            sql += " AND updated_us = ?"
            params.append(_micros(expect_updated_at))
        with self._db() as conn:
            row = conn.execute(sql + " RETURNING data", params).fetchone()
            if row is None:
                current = conn.execute(
                    "SELECT state, updated_us FROM jobs WHERE job_id = ?", (job_id,)
                ).fetchone()
        if row is not None:
            return Job.model_validate_json(row[0])
        if current is None:
            raise NotFoundError(f"unknown job {job_id!r}")
        raise rules.job_conflict(job_id, current[0], expect)

    def delete_job(self, job_id: str) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM chunks WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM objects WHERE job_id = ?", (job_id,))
            conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    # ------------------------------------------------------------ objects and chunks

    def put_objects(self, entries: Iterable[ObjectEntry]) -> None:
        self._insert(
            "INSERT OR IGNORE INTO objects (job_id, object_id, state, size, data)"
            " VALUES (?, ?, ?, ?, ?)",
            ((e.job_id, e.object_id, e.state.value, e.size, e.model_dump_json()) for e in entries),
        )

    def put_chunks(self, chunks: Iterable[Chunk]) -> None:
        self._insert(
            "INSERT OR IGNORE INTO chunks (job_id, chunk_id, object_id, state, length, data)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                (c.job_id, c.chunk_id, c.object_id, c.state.value, c.length, c.model_dump_json())
                for c in chunks
            ),
        )

    def _insert(self, sql: str, rows: Iterator[tuple[Any, ...]]) -> None:
        while batch := list(itertools.islice(rows, self.batch_size)):
            with self._tx() as conn:
                conn.executemany(sql, batch)

    def get_object(self, job_id: str, object_id: int) -> ObjectEntry | None:
        row = self._one(
            "SELECT data FROM objects WHERE job_id = ? AND object_id = ?", (job_id, object_id)
        )
        return ObjectEntry.model_validate_json(row[0]) if row else None

    def get_chunk(self, job_id: str, chunk_id: int) -> Chunk | None:
        row = self._one(
            "SELECT data FROM chunks WHERE job_id = ? AND chunk_id = ?", (job_id, chunk_id)
        )
        return Chunk.model_validate_json(row[0]) if row else None

    def iter_objects(
        self, job_id: str, states: set[ObjectState] | None = None
    ) -> Iterator[ObjectEntry]:
        for _, data in self._by_states(_OBJECTS, "job_id = ?", [job_id], states):
            yield ObjectEntry.model_validate_json(data)

    def iter_chunks(
        self,
        job_id: str,
        states: set[ChunkState] | None = None,
        object_id: int | None = None,
    ) -> Iterator[Chunk]:
        if object_id is None:
            rows = self._by_states(_CHUNKS, "job_id = ?", [job_id], states)
        else:
            # an object's chunks are few: one index range, state filtered in place
            where, params = "job_id = ? AND object_id = ?", [job_id, object_id]
            if states is not None:
                marks, values = _in(states)
                where += f" AND state IN ({marks})"
                params.extend(values)
            rows = self._pages(_CHUNKS, where, params, index="chunks_object")
        for _, data in rows:
            yield Chunk.model_validate_json(data)

    def _by_states(
        self, table: _Table, where: str, params: list[Any], states: Iterable[Enum] | None
    ) -> Iterator[tuple[int, str]]:
        """Rows in id order; with ``states``, one ordered index range per state, merged."""
        if states is None:
            return self._pages(table, where, params)
        ranges = [
            self._pages(table, f"{where} AND state = ?", [*params, value], index=table.state_index)
            for value in sorted({s.value for s in states})
        ]
        return ranges[0] if len(ranges) == 1 else heapq.merge(*ranges, key=lambda r: r[0])

    def _pages(
        self, table: _Table, where: str, params: list[Any], *, index: str | None = None
    ) -> Iterator[tuple[int, str]]:
        """Keyset pagination: ``id > last ORDER BY id LIMIT page_size``.

        ``index`` pins the index to range over (SQLite has no statistics to tell
        that a job's pending chunks are few among its verified ones)."""
        column = table.id_column
        source = f"{table.name} INDEXED BY {index}" if index else table.name
        sql = (
            f"SELECT {column}, data FROM {source} WHERE {where} AND {column} > ?"  # noqa: S608 - names from the schema, values bound
            f" ORDER BY {column} LIMIT ?"
        )
        last = -1
        while True:
            with self._db() as conn:
                rows = conn.execute(sql, [*params, last, self.page_size]).fetchall()
            yield from rows
            if len(rows) < self.page_size:
                return
            last = rows[-1][0]

    def update_object(
        self, job_id: str, object_id: int, *, expect: set[ObjectState] | None = None, **fields: Any
    ) -> bool:
        write = rules.object_update(expect, fields)
        return self._conditional(_OBJECTS, job_id, object_id, write.sources, write.fields)

    def transition_chunk(
        self,
        job_id: str,
        chunk_id: int,
        *,
        expect: set[ChunkState],
        to: ChunkState,
        **fields: Any,
    ) -> bool:
        write = rules.chunk_transition(expect, to, fields)
        return self._conditional(_CHUNKS, job_id, chunk_id, write.sources, write.fields)

    def _conditional(
        self,
        table: _Table,
        job_id: str,
        record_id: int,
        expect: Iterable[Enum] | None,
        values: dict[str, Any],
    ) -> bool:
        if not values:
            return self._exists(table, job_id, record_id, expect)
        states = _in_values(frozenset(expect)) if expect is not None else None
        sql = _update_sql(table, tuple(values), len(states) if states is not None else None)
        params = _assignment_params(table, values)
        params += (job_id, record_id)
        if states is not None:
            params += states
        return self._changed(sql, params)

    def _exists(
        self, table: _Table, job_id: str, record_id: int, expect: Iterable[Enum] | None
    ) -> bool:
        sql = f"SELECT 1 FROM {table.name} WHERE job_id = ? AND {table.id_column} = ?"  # noqa: S608 - names from the schema, values bound
        params: list[Any] = [job_id, record_id]
        if expect is not None:
            marks, states = _in(expect)
            sql += f" AND state IN ({marks})"
            params.extend(states)
        with self._db() as conn:
            return conn.execute(sql, params).fetchone() is not None

    # ------------------------------------------------------------ progress

    def progress(self, job_id: str) -> JobProgress:
        with self._db() as conn:
            objects = conn.execute(
                "SELECT state, COUNT(*), TOTAL(size) FROM objects INDEXED BY objects_state"
                " WHERE job_id = ? GROUP BY state",
                (job_id,),
            ).fetchall()
            chunks = conn.execute(
                "SELECT state, COUNT(*), TOTAL(length) FROM chunks INDEXED BY chunks_state"
                " WHERE job_id = ? GROUP BY state",
                (job_id,),
            ).fetchall()
        by_object_state = {state: (count, int(size)) for state, count, size in objects}
        by_chunk_state = {state: (count, int(length)) for state, count, length in chunks}
        return JobProgress(
            objects_total=sum(c for c, _ in by_object_state.values()),
            objects_verified=by_object_state.get(ObjectState.VERIFIED.value, (0, 0))[0],
            objects_failed=by_object_state.get(ObjectState.FAILED.value, (0, 0))[0],
            bytes_total=sum(s for _, s in by_object_state.values()),
            bytes_verified=by_chunk_state.get(ChunkState.VERIFIED.value, (0, 0))[1],
            chunks={ChunkState(s): c for s, (c, _) in by_chunk_state.items() if c},
        )
