"""The manifest's cost at scale: chunk transitions per second for one job of
10,000 chunks, and round trips per transition, for every ManifestStore, each on
the local stand-in of its service started here:

    sqlite     a file in a temporary directory (round trips: SQL statements, in process)
    dynamodb   moto in server mode, one request at a time (HTTP requests, counted by
               botocore's before-send); moto backs up the whole table for every
               TransactWriteItems (a deep copy: O(table) per transition, 130 s to
               insert 1,000 chunks), so this process serves moto with a backup of the
               table's item map instead: the same rollback for skyhop's transactions,
               whose only in-place update (a counter ADD) comes after every condition
    firestore  the Firestore emulator (gRPC calls, counted on the client's API object)
    aztable    Azurite's table endpoint (HTTP requests, counted by azure-core's request hook)

For each store: insert the job's objects and chunks; move a sample of chunks
pending -> dispatched -> verified one at a time (transitions/s with one worker,
round trips per transition), again with ``--workers`` threads on other chunks;
deliver a duplicate ``chunk_verified`` (what a late event costs: the read that
finds it verified); and read ``progress`` once. Emulators run on this machine,
so the absolute rates say how many round trips a store needs, not how fast the
cloud service is: a reader multiplies the round trips by the region's latency.

    python -m benchmarks.manifest_throughput [--chunks 10000] [--sample 500] [--workers 8]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skyhop.models import Chunk, ChunkState, Job, ObjectEntry, TransferRequest
from skyhop.state.base import ManifestStore
from tests.fixtures.emulators import running_azurite, running_firestore
from tests.fixtures.services import AWS_TEST_ENV, free_port, wait_http

PENDING, DISPATCHED, VERIFIED = ChunkState.PENDING, ChunkState.DISPATCHED, ChunkState.VERIFIED
CHUNKS_PER_OBJECT = 100


class Counter:
    """Round trips seen by a store's client (thread-safe)."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        with self._lock:
            self.n += 1


@dataclass
class Result:
    store: str
    unit: str
    insert_s: float
    rate_1: float
    rate_n: float
    trips: float
    duplicate_trips: int
    progress_ms: float
    progress_trips: int


# ---------------------------------------------------------------- the stores


@contextlib.contextmanager
def sqlite_store(work: Path) -> Iterator[tuple[ManifestStore, Counter, str]]:
    from skyhop.state.sqlite import SQLiteManifest

    counter = Counter()
    store = SQLiteManifest(work / "manifest.db")
    original = store._connection

    def traced() -> Any:
        conn = original()
        conn.set_trace_callback(counter)
        return conn

    store._connection = traced  # type: ignore[method-assign]
    yield store, counter, "statements"
    store.close()


@contextlib.contextmanager
def serial_moto() -> Iterator[str]:
    """moto's server in this process, one request at a time, with the cheap table
    backup described at the top; yields its endpoint and points boto3 at it."""
    import copy
    import os
    import types
    from collections import defaultdict

    from moto.dynamodb import models
    from moto.dynamodb.models.table import Table
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    def deepcopy(obj: Any, memo: Any = None) -> Any:
        if isinstance(obj, Table):
            snap = copy.copy(obj)
            snap.items = defaultdict(dict, {h: dict(r) for h, r in obj.items.items()})
            return snap
        return copy.deepcopy(obj, memo)

    saved_copy, saved_env = models.copy, dict(os.environ)
    models.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=copy.copy)  # type: ignore[assignment]
    port = free_port()
    server = make_server(
        "127.0.0.1",
        port,
        DomainDispatcherApplication(create_backend_app),
        threaded=False,
        request_handler=MotoRequestHandler,
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/")
        os.environ.update(AWS_TEST_ENV)
        os.environ["AWS_ENDPOINT_URL"] = endpoint
        yield endpoint
    finally:
        server.shutdown()
        models.copy = saved_copy
        os.environ.clear()
        os.environ.update(saved_env)


@contextlib.contextmanager
def dynamodb_store(work: Path) -> Iterator[tuple[ManifestStore, Counter, str]]:
    from skyhop.state.dynamodb import DynamoDBManifest, create_table

    with serial_moto():
        create_table("bench-manifest")
        store = DynamoDBManifest("bench-manifest")
        counter = Counter()
        store._client.meta.events.register("before-send.dynamodb", counter)
        yield store, counter, "HTTP requests"


@contextlib.contextmanager
def firestore_store(work: Path) -> Iterator[tuple[ManifestStore, Counter, str]]:
    from skyhop.state.firestore import FirestoreManifest

    with running_firestore(work):
        store = FirestoreManifest("skyhop-bench", collection="bench")
        counter = Counter()
        api = store._client._firestore_api
        for name in dir(api):
            method = getattr(api, name)
            if name.startswith("_") or not callable(method) or name.endswith("_path"):
                continue

            def counted(*a: Any, _m: Callable[..., Any] = method, **k: Any) -> Any:
                counter()
                return _m(*a, **k)

            setattr(api, name, counted)
        yield store, counter, "gRPC calls"


@contextlib.contextmanager
def aztable_store(work: Path) -> Iterator[tuple[ManifestStore, Counter, str]]:
    from azure.data.tables import TableClient

    from skyhop.state.azure_tables import AzureTableManifest

    with running_azurite(work) as azurite:
        counter = Counter()
        table = "bench" + uuid.uuid4().hex[:8]
        client = TableClient.from_connection_string(
            azurite.connection_string, table_name=table, raw_request_hook=counter
        )
        yield AzureTableManifest(azurite.account, table, client=client), counter, "HTTP requests"


STORES: dict[str, Callable[[Path], contextlib.AbstractContextManager[Any]]] = {
    "sqlite": sqlite_store,
    "dynamodb": dynamodb_store,
    "firestore": firestore_store,
    "aztable": aztable_store,
}


# ---------------------------------------------------------------- the measurement


def job_records(job_id: str, chunks: int) -> tuple[list[ObjectEntry], list[Chunk]]:
    entries, out = [], []
    for o in range(chunks // CHUNKS_PER_OBJECT):
        entries.append(
            ObjectEntry(
                job_id=job_id,
                object_id=o,
                src_key=f"data/{o:06d}",
                dst_key=f"copy/{o:06d}",
                size=CHUNKS_PER_OBJECT * 8 << 20,
                chunk_size=8 << 20,
                n_chunks=CHUNKS_PER_OBJECT,
                multipart=True,
            )
        )
        for i in range(CHUNKS_PER_OBJECT):
            cid = o * CHUNKS_PER_OBJECT + i
            out.append(
                Chunk(
                    job_id=job_id,
                    chunk_id=cid,
                    object_id=o,
                    index=i,
                    offset=i * (8 << 20),
                    length=8 << 20,
                )
            )
    return entries, out


def move(store: ManifestStore, job_id: str, chunk_id: int) -> None:
    assert store.transition_chunk(job_id, chunk_id, expect={PENDING}, to=DISPATCHED, attempts=1)
    assert store.transition_chunk(
        job_id, chunk_id, expect={DISPATCHED, PENDING}, to=VERIFIED, crc32c="0a1b2c3d"
    )


def measure(name: str, chunks: int, sample: int, workers: int) -> Result:
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
        STORES[name](Path(tmp)) as (store, counter, unit),
    ):
        job = Job(request=TransferRequest(source="s3://src/data/", destination="gs://dst/copy/"))
        store.create_job(job)
        entries, records = job_records(job.job_id, chunks)
        start = time.perf_counter()
        store.put_objects(entries)
        store.put_chunks(records)
        insert_s = time.perf_counter() - start

        step = max(1, chunks // (2 * sample))
        ids = list(range(0, chunks, step))
        first, second = ids[0::2][:sample], ids[1::2][:sample]

        counter.n = 0
        start = time.perf_counter()
        for cid in first:
            move(store, job.job_id, cid)
        elapsed = time.perf_counter() - start
        trips = counter.n / (2 * len(first))
        rate_1 = 2 * len(first) / elapsed

        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda cid: move(store, job.job_id, cid), second))
        rate_n = 2 * len(second) / (time.perf_counter() - start)

        counter.n = 0
        assert not store.transition_chunk(
            job.job_id, first[0], expect={DISPATCHED}, to=VERIFIED, crc32c="ffffffff"
        )
        duplicate = counter.n

        counter.n = 0
        start = time.perf_counter()
        progress = store.progress(job.job_id)
        progress_ms = (time.perf_counter() - start) * 1000
        assert progress.chunks.get(VERIFIED) == len(first) + len(second), progress
        return Result(
            name, unit, insert_s, rate_1, rate_n, trips, duplicate, progress_ms, counter.n
        )


def table(results: list[Result], chunks: int, workers: int) -> str:
    head = (
        f"{'store':<10} {'insert ' + str(chunks):>13} {'transitions/s':>14} "
        f"{'with ' + str(workers) + ' workers':>15} {'round trips':>12} "
        f"{'duplicate':>10} {'progress':>10} {'':>3}  unit"
    )
    sub = (
        f"{'':<10} {'chunks (s)':>13} {'(1 worker)':>14} {'':>15} {'/transition':>12} "
        f"{'event':>10} {'(ms, trips)':>14}"
    )
    lines = [head, sub, "-" * len(head)]
    for r in results:
        lines.append(
            f"{r.store:<10} {r.insert_s:>13.2f} {r.rate_1:>14.0f} {r.rate_n:>15.0f} "
            f"{r.trips:>12.2f} {r.duplicate_trips:>10d} {r.progress_ms:>9.1f}, {r.progress_trips:<3d}"
            f"  {r.unit}"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000, help="chunks in the job")
    parser.add_argument("--sample", type=int, default=500, help="chunks moved per phase")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--stores", default=",".join(STORES), help="comma-separated")
    args = parser.parse_args()
    results = []
    for name in args.stores.split(","):
        results.append(measure(name.strip(), args.chunks, args.sample, args.workers))
        print(table(results[-1:], args.chunks, args.workers).splitlines()[-1], flush=True)
    print(
        f"\nOne job of {args.chunks} chunks ({args.chunks // CHUNKS_PER_OBJECT} objects); "
        f"{2 * args.sample} transitions per phase (pending -> dispatched -> verified)\n"
    )
    print(table(results, args.chunks, args.workers))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
