"""The job state machine: pure logic over the ManifestStore, ObjectStore,
ComputeProvider and gateway control API.

The same methods serve the embedded runner (one process, SQLite) and the cloud
functions (one call per message, DynamoDB). Every step is idempotent: the
manifest is the truth, transitions are conditional, and a job whose gateways
died continues from the chunks not yet verified.

    create_job   validate, list the source, write the manifest, start multipart uploads, plan
    start        provision gateways (fresh or on resume), then dispatch; with control
                 queues: launch and return PROVISIONING (gateway_ready events finish it)
    dispatch     hand pending chunks to source gateways, within a window
    handle_event chunk_verified / chunk_failed / gateway_error -> conditional updates,
                 completes objects as their last chunk verifies
    finish       list the destination and check every key and size, tear down, then (a
                 sync with --delete, every copy verified) delete, report
    interrupt    tear down, leave the job resumable
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from skyhop import crypto
from skyhop.compute.base import ComputeProvider
from skyhop.controlplane import fanout, listing, provision, verify
from skyhop.controlplane.report import CsvReport, build_report, iter_object_reports, write_report
from skyhop.errors import ConflictError, NotFoundError, SkyhopError, StoreError, UsageError
from skyhop.models import (
    Chunk,
    ChunkBatch,
    ChunkFailed,
    ChunkState,
    ChunkVerified,
    ChunkWork,
    GatewayErrorEvent,
    GatewayEvent,
    GatewayReady,
    GatewayRole,
    Job,
    JobReport,
    JobState,
    ObjectEntry,
    ObjectState,
    RoutePlan,
    TransferRequest,
    utcnow,
)
from skyhop.queues.base import ControlQueues, Queue, open_queue
from skyhop.state.base import ManifestStore
from skyhop.stores.base import MultipartWriter, ObjectStore, open_store
from skyhop.uri import StoreURI

log = logging.getLogger("skyhop.controlplane")

BATCH = 500  # manifest writes and dispatch batches

Planner = Callable[[Job], RoutePlan]


@dataclass
class Limits:
    """Every limit of the control plane in one place."""

    max_attempts: int = 5
    window_chunks: int = 4096  # chunks handed to gateways and not yet verified
    dispatch_batch: int = 256
    stuck_after: timedelta = timedelta(minutes=10)
    ready_within: timedelta = timedelta(minutes=20)  # launch to the last gateway_ready


@dataclass
class ControlPlane:
    manifest: ManifestStore
    compute: ComputeProvider
    event_sink: str = "pull"
    planner: Planner | None = None
    limits: Limits = field(default_factory=Limits)
    stores: Callable[[StoreURI], ObjectStore] = open_store
    #: per-gateway control queues: set, or a provider with ``ready_via_events``, makes
    #: start() launch without waiting and control gateways through their queues
    control_queues: ControlQueues | None = None
    #: wraps the data key of each job for its gateways (KMS in the cloud)
    key_wrapper_factory: Callable[[Job], crypto.KeyWrapper] | None = None
    _store_cache: dict[str, ObjectStore] = field(default_factory=dict, repr=False)
    _queue_cache: dict[str, Queue] = field(default_factory=dict, repr=False)
    _destinations: dict[str, StoreURI] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ stores

    def store(self, uri: StoreURI) -> ObjectStore:
        """One store object per bucket, reused across calls."""
        found = self._store_cache.get(uri.store_id)
        if found is None:
            found = self.stores(uri)
            self._store_cache[uri.store_id] = found
        return found

    # ------------------------------------------------------------ 1-3: request, list, plan

    def preflight(self, request: TransferRequest) -> tuple[ObjectStore, ObjectStore]:
        """Check both ends before anything is written; one-line errors."""
        src_uri, dst_uri = request.source_uri, request.destination_uri
        src, dst = self.store(src_uri), self.store(dst_uri)
        src.check_bucket()
        dst.check_bucket()
        check_writable = getattr(dst, "check_writable", None)
        if callable(check_writable):
            check_writable(dst_uri.key)
        if src_uri == dst_uri:
            raise UsageError(f"source and destination are the same: {src_uri}")
        return src, dst

    def create_job(self, request: TransferRequest) -> Job:
        """Validate, list and chunk the source into the manifest, start multipart
        uploads, and plan. Nothing is written anywhere if validation fails."""
        src, dst = self.preflight(request)
        src_uri, dst_uri = request.source_uri, request.destination_uri
        dst_is_dir = bool(getattr(dst, "is_dir", lambda _k: False)(dst_uri.key))
        if request.keys is not None:
            selection, objects = listing.select_keys(src, src_uri, dst_uri, request.keys)
        else:
            selection, objects = listing.select(src, src_uri, dst_uri, request.options, dst_is_dir)
        check_writable = getattr(dst, "check_writable", None)
        if not selection.single and selection.dst_prefix and callable(check_writable):
            # a tree lands in a directory: an existing file there fails now, in one line
            check_writable(selection.dst_prefix)
        objects = fanout.with_meta(src, objects)
        job = Job(request=request)
        self.manifest.create_job(job)
        totals = {"objects": 0, "bytes": 0, "chunks": 0, "parts": 0}
        pending_objects: list[ObjectEntry] = []
        pending_chunks: list[Chunk] = []
        try:
            for entry, chunks in listing.entries(job.job_id, selection, objects, request.options):
                if entry.multipart:
                    entry.upload_id = self._multipart(dst).create_multipart(
                        entry.dst_key, meta=entry.meta
                    )
                    totals["parts"] += entry.n_chunks
                pending_objects.append(entry)
                pending_chunks.extend(chunks)
                totals["objects"] += 1
                totals["bytes"] += entry.size
                totals["chunks"] += len(chunks)
                if len(pending_chunks) >= BATCH:
                    self._flush(pending_objects, pending_chunks)
            self._flush(pending_objects, pending_chunks)
            if totals["objects"] == 0:
                raise NotFoundError(
                    f"nothing to copy: every object under {src_uri} was filtered out"
                )
            job = self.manifest.update_job(
                job.job_id,
                objects_total=totals["objects"],
                bytes_total=totals["bytes"],
                chunks_total=totals["chunks"],
            )
            # a plan that cannot be made (an unknown --relay region, say) fails the
            # job here, before anything is sent, with its multipart uploads aborted
            plan = self.planner(job) if self.planner else None
        except BaseException as exc:
            self.abort_uploads(job.job_id)
            self.manifest.update_job(job.job_id, state=JobState.FAILED, error=_one_line(exc))
            raise
        return self.manifest.update_job(job.job_id, state=JobState.PLANNED, plan=plan)

    def _flush(self, objects: list[ObjectEntry], chunks: list[Chunk]) -> None:
        if objects:
            self.manifest.put_objects(objects)
        if chunks:
            self.manifest.put_chunks(chunks)
        objects.clear()
        chunks.clear()

    def _multipart(self, store: ObjectStore) -> MultipartWriter:
        if not isinstance(store, MultipartWriter):
            raise UsageError(f"{store.uri} cannot write multipart objects")
        return store

    # ------------------------------------------------------------ 4: provision

    def start(self, job_id: str) -> Job:
        """Provision gateways for a planned or interrupted job and dispatch work.

        On resume, chunks that were dispatched but never verified go back to
        pending; verified chunks and completed objects are kept."""
        job = self.require(job_id)
        if job.state.finished:
            raise UsageError(f"job {job_id} already {job.state.value}; nothing to resume")
        # A job still 'created' lost the process listing it: the manifest holds part
        # of the source at most and its totals none of it (it would "succeed"). A
        # sync interrupted mid-listing cannot go on either.
        if job.state == JobState.CREATED or (
            not job.listing_complete and job.state != JobState.PLANNED
        ):
            self.abort_uploads(job_id)
            self.manifest.update_job(job_id, state=JobState.FAILED, error="listing interrupted")
            advice = (
                " and copied nothing: run the same copy again"
                if job.state == JobState.CREATED
                else "; run the same `skyhop sync` again (it skips what was already copied)"
            )
            raise UsageError(f"job {job_id} was interrupted before its listing finished{advice}")
        for chunk in list(self.manifest.iter_chunks(job_id, {ChunkState.DISPATCHED})):
            self.manifest.transition_chunk(
                job_id, chunk.chunk_id, expect={ChunkState.DISPATCHED}, to=ChunkState.PENDING
            )
        if job.runtime is not None:  # a resumed job: it may have stopped mid-completion
            self.complete_ready(job_id)
        attempt = job.runtime.attempt + 1 if job.runtime else 1
        key_wrapper = self.key_wrapper_factory(job) if self.key_wrapper_factory else None
        if self.queued_control:
            return self._start_queued(job, attempt, key_wrapper)
        runtime = provision.launch(
            job, self.compute, self.event_sink, attempt=attempt, key_wrapper=key_wrapper
        )
        try:
            job = self.manifest.update_job(
                job_id, state=JobState.RUNNING, runtime=runtime, error=None
            )
        except BaseException:
            self.compute.revoke(job_id)
            self.compute.terminate(job_id)
            raise
        self.dispatch(job_id)
        return job

    @property
    def queued_control(self) -> bool:
        """Whether gateways are launched without waiting and controlled through queues."""
        return self.control_queues is not None or bool(
            getattr(self.compute, "ready_via_events", False)
        )

    def _start_queued(self, job: Job, attempt: int, key_wrapper: crypto.KeyWrapper | None) -> Job:
        if self.control_queues is None:
            raise UsageError(
                f"compute provider {self.compute.name!r} reports gateways ready through events: "
                "the control plane needs control queues (SKYHOP_CONTROL_QUEUES=sqs://PREFIX, azq://ACCOUNT/PREFIX or pubsub://PROJECT/PREFIX)"
            )
        if self.event_sink == "pull":
            raise UsageError(
                "queue-controlled gateways report through an events queue: set the event sink "
                "(SKYHOP_EVENTS_QUEUE) to a queue URI"
            )
        return provision.launch_queued(
            job,
            self.compute,
            self.manifest,
            self.event_sink,
            self.control_queues,
            attempt=attempt,
            key_wrapper=key_wrapper,
        )

    def control_queue(self, uri: str) -> Queue:
        """A gateway's control queue (opened once, then reused)."""
        found = self._queue_cache.get(uri)
        if found is None:
            found = self.control_queues.open(uri) if self.control_queues else open_queue(uri)
            self._queue_cache[uri] = found
        return found

    def _gateway_ready(self, event: GatewayReady) -> None:
        """Record a queue-controlled gateway's readiness; the event that completes the
        set opens the firewall, sends next hops, makes the job RUNNING and dispatches.
        A gateway that comes back (a newer gateway_ready) while running is rewired."""
        found = provision.record_ready(self.manifest, event)
        if found is None:
            return
        job, changed = found
        if job.state == JobState.PROVISIONING and provision.all_ready(job):
            self.connect(job.job_id)
        elif job.state == JobState.RUNNING and changed:
            provision.connect(job, self.compute, self.control_queue)

    def connect(self, job_id: str) -> bool:
        """Wire a PROVISIONING job whose gateways are all ready and start moving data
        (idempotent: wiring twice changes nothing, one caller makes it RUNNING)."""
        job = self.require(job_id)
        if job.state != JobState.PROVISIONING or not provision.all_ready(job):
            return False
        provision.connect(job, self.compute, self.control_queue)
        try:
            self.manifest.update_job(job_id, expect={JobState.PROVISIONING}, state=JobState.RUNNING)
        except ConflictError:
            return False  # connected by another caller, or interrupted meanwhile
        log.info("job %s: every gateway ready; running", job_id)
        self.dispatch(job_id)
        return True

    # ------------------------------------------------------------ 5: move

    def dispatch(self, job_id: str) -> int:
        """Hand pending chunks to source gateways until the window is full."""
        job = self.require(job_id)
        if job.state != JobState.RUNNING or job.runtime is None:
            return 0
        sources = [g for g in job.runtime.gateways if g.role == GatewayRole.SOURCE]
        if not sources:
            return 0
        counts = self.manifest.progress(job_id).chunks
        if not counts.get(ChunkState.PENDING):
            return 0
        room = self.limits.window_chunks - counts.get(ChunkState.DISPATCHED, 0)
        if room <= 0:
            return 0
        picked: list[Chunk] = []
        for chunk in self.manifest.iter_chunks(job_id, {ChunkState.PENDING}):
            if len(picked) >= room:
                break
            picked.append(chunk)
        objects: dict[int, ObjectEntry] = {}
        work: list[ChunkWork] = []
        now = utcnow()
        for chunk in picked:
            entry = objects.get(chunk.object_id) or self.manifest.get_object(
                job_id, chunk.object_id
            )
            if entry is None or entry.state != ObjectState.PENDING:
                continue
            objects[chunk.object_id] = entry
            if not self.manifest.transition_chunk(
                job_id,
                chunk.chunk_id,
                expect={ChunkState.PENDING},
                to=ChunkState.DISPATCHED,
                dispatched_at=now,
                attempts=chunk.attempts + 1,
            ):
                continue
            work.append(
                ChunkWork(
                    chunk_id=chunk.chunk_id,
                    object_id=chunk.object_id,
                    index=chunk.index,
                    src_key=entry.src_key,
                    dst_key=entry.dst_key,
                    offset=chunk.offset,
                    length=chunk.length,
                    object_size=entry.size,
                    multipart=entry.multipart,
                    upload_id=entry.upload_id,
                    src_etag=entry.src_etag,
                    meta=None if entry.multipart else entry.meta,
                    attempt=chunk.attempts + 1,
                )
            )
        size = self.limits.dispatch_batch
        for n, start in enumerate(range(0, len(work), size)):
            gateway = sources[n % len(sources)]
            batch = ChunkBatch(job_id=job_id, chunks=work[start : start + size])
            try:
                provision.submit(job.runtime, gateway, batch, self.control_queue)
            except SkyhopError as exc:
                # the chunks stay dispatched; a dead gateway is noticed by the
                # runner (or the reaper) and the job resumes from the manifest
                log.warning("dispatch to %s failed: %s", gateway.gateway_id, exc)
        return len(work)

    # ------------------------------------------------------------ 6: verify

    def handle_event(self, event: GatewayEvent) -> None:
        """Apply one gateway event. Duplicated, late or reordered events change nothing."""
        if isinstance(event, ChunkVerified):
            self._chunk_verified(event)
        elif isinstance(event, ChunkFailed):
            self._chunk_failed(event)
        elif isinstance(event, GatewayErrorEvent):
            log.warning("gateway %s: %s", event.gateway_id, event.message)
            if event.fatal:
                self.interrupt(event.job_id, f"gateway {event.gateway_id} failed: {event.message}")
        elif isinstance(event, GatewayReady):
            log.info("gateway %s ready at %s", event.gateway_id, event.host)
            self._gateway_ready(event)

    def _chunk_verified(self, event: ChunkVerified) -> None:
        chunk = self.manifest.get_chunk(event.job_id, event.chunk_id)
        if chunk is None or event.length != chunk.length:
            log.warning(
                "ignoring chunk_verified for unknown or mismatched chunk %s", event.chunk_id
            )
            return
        applied = self.manifest.transition_chunk(
            event.job_id,
            event.chunk_id,
            expect={ChunkState.DISPATCHED, ChunkState.PENDING},
            to=ChunkState.VERIFIED,
            crc32c=event.crc32c,
            md5=event.md5,
            part_etag=event.part_etag,
            error=None,
        )
        if applied:
            verified = chunk.model_copy(
                update={
                    "state": ChunkState.VERIFIED,
                    "crc32c": event.crc32c,
                    "md5": event.md5,
                    "part_etag": event.part_etag,
                }
            )
            self.complete_object(event.job_id, chunk.object_id, last=verified)

    def _chunk_failed(self, event: ChunkFailed) -> None:
        chunk = self.manifest.get_chunk(event.job_id, event.chunk_id)
        if chunk is None or chunk.state != ChunkState.DISPATCHED:
            return
        if event.attempt and event.attempt != chunk.attempts:
            # an earlier dispatch's failure, late or delivered twice: the chunk is on
            # its way again, and this says nothing about that attempt
            log.info("chunk %s: stale failure of attempt %d ignored", event.chunk_id, event.attempt)
            return
        if not event.retryable or chunk.attempts >= self.limits.max_attempts:
            if self.manifest.transition_chunk(
                event.job_id,
                event.chunk_id,
                expect={ChunkState.DISPATCHED},
                to=ChunkState.FAILED,
                error=event.reason,
            ):
                self._object_failed(event.job_id, chunk.object_id, event.reason)
            return
        log.info("chunk %s failed (%s); re-sending", event.chunk_id, event.reason)
        self.manifest.transition_chunk(
            event.job_id,
            event.chunk_id,
            expect={ChunkState.DISPATCHED},
            to=ChunkState.PENDING,
            error=event.reason,
        )

    def complete_object(self, job_id: str, object_id: int, *, last: Chunk | None = None) -> bool:
        """When every chunk of an object is verified: complete its multipart
        upload, record its CRC32C and compare it with the source's checksum.
        ``last`` is the chunk just verified (saves a read for one-chunk objects)."""
        entry = self.manifest.get_object(job_id, object_id)
        if entry is None or entry.state != ObjectState.PENDING:
            return False
        if entry.n_chunks == 1 and last is not None and last.object_id == object_id:
            chunks = [last]
        else:
            chunks = list(self.manifest.iter_chunks(job_id, object_id=object_id))
        if len(chunks) != entry.n_chunks or any(c.state != ChunkState.VERIFIED for c in chunks):
            return False
        chunks.sort(key=lambda c: c.index)
        sums = verify.object_checksums(entry, chunks)
        dst = self.store(self._destination(job_id))
        if entry.multipart and entry.upload_id:
            parts = [(c.index + 1, c.part_etag or "") for c in chunks]
            try:
                self._multipart(dst).complete_multipart(entry.dst_key, entry.upload_id, parts)
            except StoreError as exc:
                current = self.manifest.get_object(job_id, object_id)
                if current is not None and current.state == ObjectState.VERIFIED:
                    return False  # completed concurrently by another handler
                self._object_failed(job_id, object_id, f"completing multipart upload: {exc}")
                return False
        method, ok = verify.source_checksum(entry, sums, confirm=self._source_head(job_id))
        if not ok:
            self._object_failed(job_id, object_id, f"{method} differs from the source's")
            return False
        started = [c.dispatched_at for c in chunks if c.dispatched_at is not None]
        seconds = (utcnow() - min(started)).total_seconds() if started else None
        return self.manifest.update_object(
            job_id,
            object_id,
            expect={ObjectState.PENDING},
            state=ObjectState.VERIFIED,
            crc32c=sums.crc32c,
            md5=sums.md5,
            multipart_etag=sums.multipart_etag,
            checksum_method=method,
            seconds=seconds,
        )

    def _source_head(self, job_id: str) -> Callable[[str], dict[str, str] | None]:
        """Fresh checksums of a source key (a HEAD), for confirming a mismatch."""

        def head(key: str) -> dict[str, str] | None:
            info = self.store(self.require(job_id).request.source_uri).head(key)
            return None if info is None else dict(info.checksums)

        return head

    def _object_failed(self, job_id: str, object_id: int, reason: str) -> None:
        self.manifest.update_object(
            job_id, object_id, expect={ObjectState.PENDING}, state=ObjectState.FAILED, error=reason
        )

    def complete_ready(self, job_id: str) -> int:
        """Complete objects whose chunks are all verified but that were never
        completed (the process stopped between the two steps: Ctrl-C, a killed
        function). Without this such an object would wait forever with nothing
        left to send. Returns how many were completed."""
        completed = 0
        for entry in list(self.manifest.iter_objects(job_id, {ObjectState.PENDING})):
            completed += self.complete_object(job_id, entry.object_id)
        return completed

    def stalled(self, job_id: str) -> bool:
        """Nothing pending or in flight, yet the transfer is not done."""
        counts = self.manifest.progress(job_id).chunks
        if counts.get(ChunkState.PENDING) or counts.get(ChunkState.DISPATCHED):
            return False
        return not self.transfer_done(job_id)

    def transfer_done(self, job_id: str) -> bool:
        """True when the listing is complete and every object is verified or failed."""
        job = self.require(job_id)
        if not job.listing_complete:
            return False
        progress = self.manifest.progress(job_id)
        return progress.objects_verified + progress.objects_failed >= job.objects_total

    def redispatch_stuck(self, job_id: str, older_than: timedelta | None = None) -> int:
        """Chunks dispatched longer ago than ``older_than`` (default: the stuck
        deadline) go back to pending, to be sent again."""
        deadline = utcnow() - (older_than if older_than is not None else self.limits.stuck_after)
        moved = 0
        for chunk in list(self.manifest.iter_chunks(job_id, {ChunkState.DISPATCHED})):
            if chunk.dispatched_at is not None and chunk.dispatched_at < deadline:
                moved += self.manifest.transition_chunk(
                    job_id,
                    chunk.chunk_id,
                    expect={ChunkState.DISPATCHED},
                    to=ChunkState.PENDING,
                    error="no verification before the deadline",
                )
        return moved

    # ------------------------------------------------------------ 6b, 7: final check and teardown

    def finish(self, job_id: str, *, started: float | None = None) -> JobReport:
        """List the destination, check every key and size, tear down, report."""
        # one finisher: a concurrent or repeated call loses this condition
        job = self.manifest.update_job(job_id, expect={JobState.RUNNING}, state=JobState.VERIFYING)
        # every chunk is written: the gateways go while the destination is listed
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="teardown") as pool:
            teardown = pool.submit(self.teardown, job_id)
            try:
                summary = verify.listing_check(
                    self.manifest, job, self.store(job.request.destination_uri)
                )
            finally:
                teardown.result()
        failed = [o for o in self.manifest.iter_objects(job_id, {ObjectState.FAILED})]
        state = JobState.SUCCEEDED if not failed and summary.mismatches == 0 else JobState.FAILED
        if failed:
            self.abort_uploads(job_id)
        error = None
        if state == JobState.FAILED:
            error = f"{len(failed)} object(s) failed, {summary.mismatches} listing mismatch(es)"
        with CsvReport(job_id) as rows:
            rows.write_all(iter_object_reports(self.manifest, job))
            if job.request.options.delete:
                from skyhop.controlplane.sync import delete_phase  # sync builds on this module

                job = delete_phase(self, job, rows, copies_ok=state == JobState.SUCCEEDED)
                if job.sync is not None and job.sync.delete_failures:
                    state = JobState.FAILED
                    error = f"{job.sync.delete_failures} delete(s) failed"
        job = self.manifest.update_job(job_id, state=state, error=error)
        report = build_report(self.manifest, job, summary, started=started)
        write_report(report)
        return report

    def teardown(self, job_id: str) -> None:
        """Revoke the job's firewall rules and terminate its gateways (idempotent).
        Queue-controlled gateways are told to shut down first, and their control
        queues are deleted last."""
        uris = provision.shutdown_queued(self.manifest.get_job(job_id), self.control_queue)
        try:
            self.compute.revoke(job_id)
        finally:
            try:
                self.compute.terminate(job_id)
            finally:
                if self.control_queues is not None:
                    self.control_queues.delete_job(job_id, uris)
                for uri in uris:
                    self._queue_cache.pop(uri, None)

    def interrupt(self, job_id: str, reason: str) -> Job:
        """Tear down and leave the job resumable (``skyhop cp --resume JOB``)."""
        try:
            self.teardown(job_id)
        finally:
            job = self.manifest.get_job(job_id)
            if job is not None and not job.state.finished:
                job = self.manifest.update_job(job_id, state=JobState.INTERRUPTED, error=reason)
        return self.require(job_id)

    def start_uploads(self, job_id: str) -> int:
        """Start the multipart uploads of objects added without one (a sync that
        planned everything before writing anything); returns how many."""
        job = self.require(job_id)
        dst = self.store(job.request.destination_uri)
        started = 0
        for entry in self.manifest.iter_objects(job_id, {ObjectState.PENDING}):
            if entry.multipart and not entry.upload_id:
                upload_id = self._multipart(dst).create_multipart(entry.dst_key, meta=entry.meta)
                self.manifest.update_object(job_id, entry.object_id, upload_id=upload_id)
                started += 1
        return started

    def abort_uploads(self, job_id: str) -> None:
        """Abort multipart uploads of objects that will not complete."""
        job = self.manifest.get_job(job_id)
        if job is None:
            return
        dst = self.store(job.request.destination_uri)
        if not isinstance(dst, MultipartWriter):
            return
        for entry in self.manifest.iter_objects(job_id, {ObjectState.FAILED, ObjectState.PENDING}):
            if entry.multipart and entry.upload_id:
                try:
                    dst.abort_multipart(entry.dst_key, entry.upload_id)
                except SkyhopError as exc:
                    log.warning("abort of %s failed: %s", entry.dst_key, exc)

    # ------------------------------------------------------------ helpers

    def _destination(self, job_id: str) -> StoreURI:
        """A job's destination (immutable, so cached)."""
        found = self._destinations.get(job_id)
        if found is None:
            found = self.require(job_id).request.destination_uri
            self._destinations[job_id] = found
        return found

    def require(self, job_id: str) -> Job:
        job = self.manifest.get_job(job_id)
        if job is None:
            raise NotFoundError(f"unknown job {job_id!r}: see `skyhop status` for known jobs")
        return job

    def jobs(self, limit: int = 50) -> list[Job]:
        return self.manifest.list_jobs(limit)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
