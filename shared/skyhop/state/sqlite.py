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
changes nothing. Iterators page by key (``id > last ORDER BY id LIMIT n``),
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
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from skyhop.errors import ConflictError, NotFoundError, StoreError, UsageError
from skyhop.models import Chunk, ChunkState, Job, JobState, ObjectEntry, ObjectState, utcnow
from skyhop.state.base import JobProgress, next_updated_at

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
        frozen: set[str],
        state_index: str | None = None,
    ) -> None:
        self.name = name
        self.state_index = state_index  # (job_id, state, id) index
        self.model = model
        self.id_column = id_column
        self.mirrored = mirrored  # model field -> column written alongside data
        self.frozen = frozen  # fields an update may not change


_JOBS = _Table(
    "jobs",
    Job,
    "job_id",
    {"state": "state", "created_at": "created_us", "updated_at": "updated_us"},
    {"job_id"},
)
_OBJECTS = _Table(
    "objects",
    ObjectEntry,
    "object_id",
    {"state": "state", "size": "size"},
    {"job_id", "object_id"},
    "objects_state",
)
_CHUNKS = _Table(
    "chunks",
    Chunk,
    "chunk_id",
    {"state": "state", "length": "length"},
    {"job_id", "chunk_id", "object_id"},
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


@cache
def _adapter(model: type[BaseModel], name: str) -> TypeAdapter[Any]:
    field = model.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field])


def _validated(table: _Table, fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` checked against the model, as validated Python values."""
    model = table.model
    fixed = table.frozen & fields.keys()
    if fixed:
        raise UsageError(f"cannot change {', '.join(sorted(fixed))} of a {model.__name__}")
    unknown = fields.keys() - model.model_fields.keys()
    if unknown:
        raise UsageError(f"unknown {model.__name__} field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for name, value in fields.items():
        try:
            out[name] = _adapter(model, name).validate_python(value)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(f"invalid {model.__name__} field {name}: {first['msg']}") from None
    return out


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
        params.append(_adapter(table.model, name).dump_json(value).decode())
    sets.append(f"data = json_set(data, {', '.join(paths)})")
    return ", ".join(sets), params


def _in(values: Iterable[Enum]) -> tuple[str, list[str]]:
    items = sorted({v.value for v in values})
    return ", ".join("?" * len(items)), items


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

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (BEGIN IMMEDIATE: writers queue on the busy timeout)."""
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _error(self, exc: sqlite3.Error) -> StoreError:
        text = " ".join(str(exc).split())
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return StoreError(f"manifest {self.path} is busy: {text}", retryable=True)
        return StoreError(f"manifest {self.path}: {text}")

    def close(self) -> None:
        """Close every connection (the manifest reopens them if used again)."""
        with self._registry_lock:
            connections, self._connections = self._connections, []
        self._local = threading.local()
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
        updated_at = fields.get("updated_at", utcnow())
        if expect_updated_at is not None:
            updated_at = next_updated_at(updated_at, expect_updated_at)
        values = _validated(_JOBS, {**fields, "updated_at": updated_at})
        assignments, params = _assignments(_JOBS, values)
        sql = f"UPDATE jobs SET {assignments} WHERE job_id = ?"
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
        if expect is None or current[0] in {s.value for s in expect}:
            raise ConflictError(f"job {job_id} changed since it was read")
        wanted = ", ".join(sorted(s.value for s in expect or ())) or "nothing"
        raise ConflictError(f"job {job_id} is {current[0]}, not {wanted}")

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
        with self._db() as conn:
            row = conn.execute(
                "SELECT data FROM objects WHERE job_id = ? AND object_id = ?", (job_id, object_id)
            ).fetchone()
        return ObjectEntry.model_validate_json(row[0]) if row else None

    def get_chunk(self, job_id: str, chunk_id: int) -> Chunk | None:
        with self._db() as conn:
            row = conn.execute(
                "SELECT data FROM chunks WHERE job_id = ? AND chunk_id = ?", (job_id, chunk_id)
            ).fetchone()
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
            f"SELECT {column}, data FROM {source} WHERE {where} AND {column} > ?"
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
        return self._conditional(_OBJECTS, job_id, object_id, expect, _validated(_OBJECTS, fields))

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
        values = _validated(_CHUNKS, {**fields, "state": to})
        return self._conditional(_CHUNKS, job_id, chunk_id, expect, values)

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
        assignments, params = _assignments(table, values)
        sql = f"UPDATE {table.name} SET {assignments} WHERE job_id = ? AND {table.id_column} = ?"
        params.extend([job_id, record_id])
        if expect is not None:
            marks, states = _in(expect)
            sql += f" AND state IN ({marks})"
            params.extend(states)
        with self._db() as conn:
            return conn.execute(sql, params).rowcount == 1

    def _exists(
        self, table: _Table, job_id: str, record_id: int, expect: Iterable[Enum] | None
    ) -> bool:
        sql = f"SELECT 1 FROM {table.name} WHERE job_id = ? AND {table.id_column} = ?"
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
