"""The direct data path: a job with no hop between machines moves in this process.

When no gateway would run on another machine (local <-> local, local <-> cloud
or cloud <-> cloud from the user's machine, no relay asked for), starting two
gateway processes on one host and sealing, TLS-encrypting, decrypting and
opening every byte between them protects no network hop and competes with the
stores for the same cores. The direct path instead reads each chunk's byte
range from the source store and writes it as a part (or a whole object) to the
destination store, from a bounded pool of threads in the calling process. HTTPS
to the stores stays; sealing and loopback TLS are gone.

It is the same job as on the gateway path, through the same
:class:`~skyhop.controlplane.service.ControlPlane`:

* the manifest is the truth: a chunk goes PENDING -> DISPATCHED (one more
  attempt) when a worker takes it (:meth:`ControlPlane.take_pending`), and
  VERIFIED or back to PENDING / FAILED when the worker's result is applied
  (:meth:`ControlPlane.chunk_verified`, :meth:`ControlPlane.chunk_failed`), on
  this thread only, in the order results arrive;
* a part is recorded as verified only after its bytes were read in full (the
  source pinned by its ETag), their CRC32C (and, where a store reports MD5s,
  MD5) computed, the write acknowledged, and any checksum the store returned
  for the write compared with the one computed from the bytes read; a
  multipart object is completed only when every one of its parts verified,
  and its checksum is then compared with the source's;
* the final listing check, the report, resume (``skyhop cp --resume``: the
  manifest's unverified chunks go again), progress and filters are the
  gateway path's own.

Memory is bounded: at most ``workers`` chunks are in flight, each held once,
and ``workers`` shrinks so that in-flight chunks fit in ``budget_bytes``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

from skyhop import testhooks
from skyhop.checksums import md5_from_etag, md5_hex
from skyhop.controlplane.service import ControlPlane, Taken
from skyhop.errors import (
    IntegrityError,
    Interrupted,
    SkyhopError,
    StoreError,
    first_line,
    retryable,
)
from skyhop.integrity import crc32c, crc_hex
from skyhop.models import (
    Chunk,
    ChunkFailed,
    ChunkState,
    ChunkVerified,
    ChunkWork,
    Job,
    JobReport,
    ObjectState,
)
from skyhop.state.base import JobProgress, batched
from skyhop.stores.base import (
    MultipartWriter,
    ObjectInfo,
    ObjectStore,
    ServerSideCopier,
    capabilities,
    server_side_copier,
)

log = logging.getLogger("skyhop.direct")

#: the gateway id results of the direct path carry (no gateway: this process)
DIRECT_ID = "direct"

ProgressCallback = Callable[[Job, JobProgress], None]

IDLE_WAIT = 0.02  # seconds to wait for a listing that is still adding chunks


def takes_direct_path(job: Job) -> bool:
    """Whether ``job`` moves on the direct path: no relay asked for and gateways
    not forced (``--gateways local|cloud|N``); every store is reached from here."""
    # a multicast job's data path is its distribution tree of gateways
    return job.request.options.direct and not job.request.multicast


@dataclass
class DirectConfig:
    """Every limit of the direct path in one place."""

    workers: int | None = None  # None: the options' connections, else the stores' default
    budget_bytes: int = 512 * 1024 * 1024  # chunks in flight, summed
    tick: float = 0.25  # seconds between progress reports
    stop_grace: float = 30.0  # seconds a stopping job waits for the chunks under way
    backlog: int = 500  # pending chunks read from the manifest at once
    completers: int = 4  # threads completing multipart objects (no bytes held)
    queued: int = 64  # chunks in flight: the workers' and those queued for them


@dataclass
class _Result:
    work: ChunkWork
    event: ChunkVerified | ChunkFailed
    server_side: bool = False  # copied by the store itself


class DirectRunner:
    """Runs one job to completion in this process, without gateways."""

    def __init__(
        self,
        cp: ControlPlane,
        *,
        on_progress: ProgressCallback | None = None,
        config: DirectConfig | None = None,
    ) -> None:
        self.cp = cp
        self.on_progress = on_progress
        self.config = config or DirectConfig()
        self.hooks = TestHooks.from_env()
        self._dry_until = 0.0  # monotonic time before which no pending chunk is read again
        #: chunks in flight as taken, with their objects (their results need no reads)
        self._taken: dict[int, Taken] = {}

    def run(self, job_id: str) -> JobReport:
        """Move, verify and report; leaves the job resumable on Ctrl-C or an
        unexpected error (and re-raises)."""
        started = time.monotonic()
        try:
            job = self.cp.start_direct(job_id)
            self._move(job)
            return self.cp.finish(job_id, started=started)
        except KeyboardInterrupt:
            self.cp.interrupt(job_id, "interrupted by the user")
            raise
        except Interrupted:
            raise  # interrupted already, with its reason
        except BaseException as exc:
            self.cp.interrupt(job_id, first_line(exc, limit=500))
            raise

    # ------------------------------------------------------------ the loop

    def _move(self, job: Job) -> None:
        job_id = job.job_id
        src = self.cp.store(job.request.source_uri)
        dst = self.cp.store(job.request.destination_uri)
        mover = _Mover(src, dst, job, self.hooks)
        workers = self._workers(job, src, dst)
        last_progress = 0.0
        inflight: dict[Future[_Result], ChunkWork] = {}
        backlog: deque[Chunk] = deque()
        done: set[Future[Any]] = set()
        # chunks in flight: every worker busy and more queued behind them (queued
        # ones hold no bytes), so that a round of results is many small files,
        # recorded (with the next chunks taken) in one manifest transaction: a
        # commit per write was most of a small file's cost. Committed before every
        # wait, so other writers of the manifest (the completions) get their turn.
        depth = max(workers, self.config.queued)
        completions = _Completions(self.cp, job_id, self.config.completers)
        with (
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="direct") as pool,
            completions,
        ):
            try:
                while True:
                    with batched(self.cp.manifest):
                        for future in done:
                            if future in inflight:
                                del inflight[future]
                                self._apply(future.result(), completions)
                        done = set()
                        completions.reap()
                        self.check(job)
                        room = depth - len(inflight)
                        if room > 0:
                            for work in self._take(job_id, room, backlog):
                                inflight[pool.submit(mover.move, work)] = work
                    completions.start()  # the round committed: they read what it wrote
                    if not inflight and not completions.running:
                        if self._finished(job_id):
                            return
                        time.sleep(IDLE_WAIT)  # a sync still listing: more will come
                        continue
                    watched: list[Future[Any]] = [*inflight, *completions.running]
                    done, _ = wait(watched, timeout=self.config.tick, return_when=FIRST_COMPLETED)
                    now = time.monotonic()
                    if self.on_progress is not None and now - last_progress >= self.config.tick:
                        last_progress = now
                        self.on_progress(job, self.cp.manifest.progress(job_id))
            except KeyboardInterrupt:
                self._settle(job_id, inflight, completions)
                raise
            finally:
                for future in inflight:
                    future.cancel()

    def _settle(
        self, job_id: str, inflight: dict[Future[_Result], ChunkWork], completions: _Completions
    ) -> None:
        """Stopping (Ctrl-C): chunks not started go back to pending, their attempt
        not counted (a resume sends them as their first); those under way finish,
        and their results are recorded, so a resume sends none of them again;
        objects being completed finish completing. Up to ``stop_grace`` seconds; a
        second Ctrl-C stops at once."""
        self._release(job_id, inflight)
        running = list(inflight)
        done, _ = wait(running, timeout=self.config.stop_grace)
        for future in done:
            del inflight[future]
            if not future.cancelled() and future.exception() is None:
                self._apply(future.result(), completions)
        completions.start()
        wait(completions.running, timeout=self.config.stop_grace)

    def _release(self, job_id: str, inflight: dict[Future[_Result], ChunkWork]) -> None:
        """Cancel the chunks queued but not started, back to pending as they were."""
        with batched(self.cp.manifest):
            for future, work in list(inflight.items()):
                if not future.cancel():
                    continue  # under way, or done
                del inflight[future]
                self._taken.pop(work.chunk_id, None)
                self.cp.manifest.transition_chunk(
                    job_id,
                    work.chunk_id,
                    expect={ChunkState.DISPATCHED},
                    to=ChunkState.PENDING,
                    attempts=work.attempt - 1,
                )

    def _take(self, job_id: str, room: int, backlog: deque[Chunk]) -> list[ChunkWork]:
        """Up to ``room`` chunks dispatched from ``backlog``, the pending chunks read
        ``config.backlog`` at a time (one manifest read per batch, not per round:
        a round frees a few workers). A chunk that failed and went back to pending,
        or one a sync's listing added, is read with the next batch; once a read
        finds fewer than a batch (every pending chunk taken), the next one waits a
        tick (rounds come at every result: re-reading at each would cost a query
        per chunk at the end of a job)."""
        work: list[ChunkWork] = []
        refilled = False
        while len(work) < room:
            if not backlog:
                if refilled or time.monotonic() < self._dry_until:
                    break  # read once a round: what is pending may all be left out
                found = self.cp.pending_chunks(job_id, self.config.backlog)
                backlog.extend(found)
                refilled = True
                if len(found) < self.config.backlog:
                    self._dry_until = time.monotonic() + self.config.tick
                if not backlog:
                    break
            picked = [backlog.popleft() for _ in range(min(room - len(work), len(backlog)))]
            work += self.cp.take_chunks(job_id, picked, taken=self._taken)
        return work

    def check(self, job: Job) -> None:
        """Called between rounds; raises to stop the job (a sync whose listing failed)."""

    def _finished(self, job_id: str) -> bool:
        """Nothing in flight: done when every object is verified or failed; objects
        whose chunks all verified but which never completed are completed now."""
        if self.cp.transfer_done(job_id):
            return True
        job = self.cp.require(job_id)
        if not job.listing_complete:
            return False
        counts = self.cp.manifest.progress(job_id).chunks
        if counts.get(ChunkState.PENDING):
            return False
        self.cp.complete_ready(job_id)
        if self.cp.transfer_done(job_id):
            return True
        # chunks left neither pending nor in flight, objects still pending: a
        # chunk failed for good while its object waits; fail what cannot finish
        for entry in list(self.cp.manifest.iter_objects(job_id, {ObjectState.PENDING})):
            self.cp.manifest.update_object(
                job_id,
                entry.object_id,
                expect={ObjectState.PENDING},
                state=ObjectState.FAILED,
                error=entry.error or "a chunk failed",
            )
        return True

    def _apply(self, result: _Result, completions: _Completions) -> None:
        event = result.event
        taken = self._taken.pop(result.work.chunk_id, None)
        if isinstance(event, ChunkVerified):
            if result.server_side and result.work.index == 0:  # recorded once per object
                self.cp.manifest.update_object(event.job_id, event.object_id, server_side=True)
                taken = None  # its object changed since it was read
            if result.work.multipart:
                verified = self.cp.record_verified(event, known=taken.chunk if taken else None)
                if verified is not None:
                    completions.part_verified(verified)
            else:  # a whole object written: nothing to complete at the store
                self.cp.chunk_verified(event, taken=taken)
        else:
            log.info("chunk %d failed: %s", event.chunk_id, event.reason)
            self.cp.chunk_failed(event)
            self.cp.check_interrupted(event.job_id)  # out of tries: stop here, resumable

    def _workers(self, job: Job, src: ObjectStore, dst: ObjectStore) -> int:
        """Threads: as configured, else ``--connections``, else the larger of the two
        stores' default concurrency; fewer when chunks in flight would not fit in
        the byte budget (a copy the store makes itself holds no bytes here)."""
        wanted = (
            self.config.workers
            or job.request.options.connections
            or max(capabilities(src).concurrency, capabilities(dst).concurrency)
        )
        if server_side_copier(src, dst) is not None:
            return wanted
        largest = max(
            (
                e.chunk_size
                for e in self.cp.manifest.iter_objects(job.job_id, {ObjectState.PENDING})
            ),
            default=1,
        )
        return max(1, min(wanted, self.config.budget_bytes // max(largest, 1)))


class _Completions:
    """Completes multipart objects on threads of their own, as their last part
    verifies: a completion (CompleteMultipartUpload, a HEAD, the checksum
    comparison) takes as long as uploading a part or more, and made on the
    runner's thread it held up the dispatch of every other object's parts.

    Parts left per object are counted here (read from the manifest once per
    object, then counted down), so an object's chunks are read once rather than
    once for each of its parts. A completion that raises re-raises on the
    runner's thread, as it did when it ran there.

    A completion starts only at :meth:`start`, once the round that verified its
    last part is committed: the completing thread reads the manifest through a
    connection of its own, and one started inside the runner's open transaction
    read the last part as not verified, gave up, and left the object to be
    completed when every other object was done."""

    def __init__(self, cp: ControlPlane, job_id: str, threads: int) -> None:
        self.cp = cp
        self.job_id = job_id
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="complete")
        self._left: dict[int, int] = {}
        self._ready: list[tuple[str, int]] = []  # (job, object): last part verified
        self.running: set[Future[bool]] = set()

    def __enter__(self) -> _Completions:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)

    def part_verified(self, chunk: Chunk) -> None:
        """``chunk`` was just recorded verified: its object is to be completed (at
        :meth:`start`) if it was the last."""
        left = self._left.get(chunk.object_id)
        if left is None:
            entry = self.cp.manifest.get_object(chunk.job_id, chunk.object_id)
            if entry is None:
                return
            verified = sum(
                1
                for c in self.cp.manifest.iter_chunks(chunk.job_id, object_id=chunk.object_id)
                if c.state == ChunkState.VERIFIED
            )
            left = entry.n_chunks - verified
        else:
            left -= 1
        if left > 0:
            self._left[chunk.object_id] = left
            return
        self._left.pop(chunk.object_id, None)
        self._ready.append((chunk.job_id, chunk.object_id))

    def start(self) -> None:
        """Start the completions of the objects found ready since the last call
        (their verifications committed)."""
        for job_id, object_id in self._ready:
            self.running.add(self._pool.submit(self.cp.complete_object, job_id, object_id))
        self._ready.clear()

    def reap(self) -> None:
        """Forget finished completions; raise what one raised."""
        for future in [f for f in self.running if f.done()]:
            self.running.discard(future)
            future.result()


class _Mover:
    """Moves one chunk: read, checksum, write, compare; never raises."""

    def __init__(self, src: ObjectStore, dst: ObjectStore, job: Job, hooks: TestHooks) -> None:
        self.src = src
        self.dst = dst
        self.job_id = job.job_id
        self.hooks = hooks
        # MD5s only help where a store reports them (S3 ETags, GCS md5Hash, Azure
        # Content-MD5): to compare with the source's, or with the destination's where
        # it does not check the CRC32C each write carries (S3 does: then the part's
        # CRC32C, checked by S3, replaces its MD5; about 1.5 CPU-s per GB)
        dst_caps = capabilities(dst)
        self.md5 = capabilities(src).reports_md5 or (
            dst_caps.reports_md5 and not dst_caps.verifies_crc32c
        )
        self.copier = server_side_copier(src, dst)

    def move(self, work: ChunkWork) -> _Result:
        started = time.monotonic()
        try:
            pause = self.hooks.get("sleep_per_chunk")
            if pause:  # test hook: slow a job down so tests can interrupt it mid-way
                time.sleep(float(pause))
            if self.copier is not None:
                return self._copy_server_side(self.copier, work, started)
            data = self.src.read_range(
                work.src_key, work.offset, work.length, if_match=work.src_etag
            )
            if len(data) != work.length:
                raise IntegrityError(
                    f"chunk {work.chunk_id}: read {len(data)} of {work.length} bytes"
                )
            crc = crc_hex(crc32c(data))
            md5 = md5_hex(data) if self.md5 else None
            if self.hooks.take("flip_plain") and data:  # test hook: bytes changed after reading
                flipped = bytearray(data)
                flipped[len(flipped) // 2] ^= 0x01
                data = bytes(flipped)
            etag: str | None = None
            if work.multipart:
                # the upload is a CRC32C one (ControlPlane.checksummed_parts): the
                # store checks the part against the CRC32C of the bytes read
                etag = self._writer().upload_part(
                    work.dst_key, work.upload_id or "", work.index + 1, data, crc32c=crc
                )
            else:
                written = self.dst.put(work.dst_key, data, meta=work.meta)
                _compare_written(work, crc, md5, written, self.dst)
            del data
            return _Result(work, self._verified(work, crc, md5, etag, started))
        except SkyhopError as exc:
            return _Result(work, self._failed(work, str(exc), retryable(exc)))
        except Exception as exc:  # noqa: BLE001 - one bad chunk must not stop the job
            return _Result(work, self._failed(work, f"unexpected {type(exc).__name__}: {exc}"))

    def _copy_server_side(
        self, copier: ServerSideCopier, work: ChunkWork, started: float
    ) -> _Result:
        """The store copies the range itself. Its answer carries the copy's MD5 (an S3
        ETag) but no CRC32C: the object's checksum is then compared with the source's
        when it completes, and with the destination listing at the end."""
        if work.multipart:
            etag = copier.copy_part(
                self.src,
                work.src_key,
                work.dst_key,
                work.upload_id or "",
                work.index + 1,
                work.offset,
                work.length,
                if_match=work.src_etag,
            )
            event = self._verified(work, None, md5_from_etag(etag), etag, started)
            return _Result(work, event, server_side=True)
        info = copier.copy_object(
            self.src,
            work.src_key,
            work.dst_key,
            work.length,
            meta=work.meta,
            if_match=work.src_etag,
        )
        event = self._verified(
            work, info.checksums.get("crc32c"), info.checksums.get("md5"), None, started
        )
        return _Result(work, event, server_side=True)

    def _writer(self) -> MultipartWriter:
        if not isinstance(self.dst, MultipartWriter):
            raise StoreError(f"{self.dst.uri} cannot write multipart objects")
        return self.dst

    def _verified(
        self, work: ChunkWork, crc: str | None, md5: str | None, etag: str | None, started: float
    ) -> ChunkVerified:
        return ChunkVerified(
            job_id=self.job_id,
            gateway_id=DIRECT_ID,
            chunk_id=work.chunk_id,
            object_id=work.object_id,
            attempt=work.attempt,
            crc32c=crc or "",
            length=work.length,
            part_etag=etag,
            seconds=time.monotonic() - started,
            md5=md5,
        )

    def _failed(self, work: ChunkWork, reason: str, retryable: bool = True) -> ChunkFailed:
        return ChunkFailed(
            job_id=self.job_id,
            gateway_id=DIRECT_ID,
            chunk_id=work.chunk_id,
            object_id=work.object_id,
            reason=reason,
            retryable=retryable,
            attempt=work.attempt,
        )


def _compare_written(
    work: ChunkWork, crc: str, md5: str | None, written: ObjectInfo, dst: ObjectStore
) -> None:
    """Compare what the store says it wrote with the bytes read, where it says: its
    CRC32C, else its MD5. An S3 ETag is an MD5 only without SSE-KMS or SSE-C, so a
    disagreeing ETag is looked at again with a HEAD, which says."""
    if written.size != work.length:
        raise IntegrityError(f"{work.dst_key}: the store wrote {written.size} of {work.length}")
    theirs = written.checksums.get("crc32c")
    if theirs:
        if theirs.lower().rjust(8, "0") != crc:
            raise IntegrityError(f"{work.dst_key}: CRC32C written {theirs} differs from read {crc}")
        return
    theirs = written.checksums.get("md5")
    if md5 is None or not theirs or theirs.lower() == md5:
        return
    if "etag" in written.checksums:
        fresh = dst.head(work.dst_key)
        theirs = fresh.checksums.get("md5") if fresh is not None else None
        if not theirs or theirs.lower() == md5:
            return
    raise IntegrityError(f"{work.dst_key}: MD5 written {theirs} differs from read {md5}")


class TestHooks:
    """Fault-injection hooks of the direct path from ``SKYHOP_TEST_HOOKS`` (tests only),
    scope ``direct``: ``direct:sleep_per_chunk=0.2`` (seconds before each chunk),
    ``direct:flip_plain=2`` (flip a bit of the first 2 chunks after they were read)."""

    __test__ = False  # not a pytest class

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self._left = {k: int(v) for k, v in values.items() if v.isdigit()}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls) -> TestHooks:
        values: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in testhooks.raw().split(","))):
            scope, _, kv = item.partition(":")
            key, _, value = kv.partition("=")
            if scope == DIRECT_ID and key:
                values[key] = value
        return cls(values)

    def get(self, name: str) -> str | None:
        return self.values.get(name)

    def take(self, name: str) -> bool:
        """True (and one fewer left) while the hook's count lasts."""
        with self._lock:
            left = self._left.get(name, 0)
            if left <= 0:
                return False
            self._left[name] = left - 1
            return True
