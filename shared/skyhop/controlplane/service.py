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
import os
import random
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import islice
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

from skyhop import eventauth
from skyhop.cleanup import Cleanup
from skyhop.compute.base import ComputeProvider
from skyhop.controlplane import fanout, legs, listing, verify
from skyhop.controlplane.deletes import delete_phase
from skyhop.controlplane.report import CsvReport, build_report, iter_object_reports, write_report
from skyhop.errors import (
    AccessError,
    ConflictError,
    GatewayError,
    Interrupted,
    NotFoundError,
    SkyhopError,
    StoreError,
    UsageError,
    first_line,
)
from skyhop.models import (
    DIRECT,
    Chunk,
    ChunkBatch,
    ChunkFailed,
    ChunkState,
    ChunkVerified,
    ChunkWork,
    GatewayConfig,
    GatewayEnrol,
    GatewayErrorEvent,
    GatewayEvent,
    GatewayReady,
    GatewayRole,
    GatewaySpec,
    Job,
    JobReport,
    JobRuntime,
    JobState,
    ObjectEntry,
    ObjectState,
    RoutePlan,
    TransferOptions,
    TransferRequest,
    short_report,
    utcnow,
)
from skyhop.queues.base import ControlQueues, Queue, open_queue
from skyhop.retry import backoff_delay, retry
from skyhop.state.base import JobProgress, ManifestStore, Scrubs, batched
from skyhop.stores.base import (
    MultipartWriter,
    ObjectStore,
    capabilities,
    check_writable,
    is_dir,
    open_store,
    server_side_copier,
    store_cache_key,
)
from skyhop.uri import StoreURI

if TYPE_CHECKING:
    from skyhop import crypto


def _provision() -> ModuleType:
    """The gateway machinery (certificates, keys, the gateway API), imported when a job
    first needs gateways: a direct-path job never does, and loading it (x509 among
    others) costs a fifth of a second at every CLI start."""
    from skyhop.controlplane import provision

    return provision


log = logging.getLogger("skyhop.controlplane")

BATCH = 500  # manifest writes and dispatch batches


class Planner(Protocol):
    """Plans a listed job; ``stores`` is the control plane's own store cache, so that
    looking up a bucket's region costs no second client (nor, for S3, a request:
    the preflight's HeadBucket said it)."""

    def __call__(
        self, job: Job, *, stores: Callable[[StoreURI], ObjectStore] | None = None
    ) -> RoutePlan | None: ...


@dataclass
class Limits:
    """Every limit of the control plane in one place."""

    max_attempts: int = 5  # tries of a chunk failing retryably before the job is interrupted
    #: back-off before the n-th retry: the retry policy's (skyhop.retry.backoff_delay)
    #: capped exponential delay, at least ``retry_floor`` of its ceiling
    retry_base: float = 0.5
    retry_cap: float = 30.0
    retry_floor: float = 0.5
    rng: Callable[[], float] = random.random
    window_chunks: int = 4096  # chunks handed to gateways and not yet verified
    dispatch_batch: int = 256
    stuck_after: timedelta = timedelta(minutes=10)
    ready_within: timedelta = timedelta(minutes=20)  # launch to the last gateway_ready
    max_relays: int = 8  # relays a route may be forced through
    max_gateways_per_job: int = 64
    #: gateways of all live jobs together (a deployment's account); None: no cap
    max_gateways_total: int | None = None


@dataclass(frozen=True)
class Taken:
    """A chunk as :meth:`ControlPlane.take_chunks` dispatched it, and its object."""

    chunk: Chunk
    entry: ObjectEntry


#: the multipart threshold of a job whose objects the store copies whole (no object
#: is above it: each is one chunk)
WHOLE_OBJECTS = 1 << 62


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
    _legs: dict[str, list[str]] = field(default_factory=dict, repr=False)  # job -> its legs
    #: job -> the runtime its events are checked against (re-read when one fails)
    _runtimes: dict[str, JobRuntime] = field(default_factory=dict, repr=False)
    #: job -> whether its multipart uploads carry CRC32Cs (:meth:`checksummed_parts`)
    _checksummed: dict[str, bool] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------ stores

    def store(self, uri: StoreURI) -> ObjectStore:
        """One store object per bucket (per location for local trees), reused across calls."""
        found = self._store_cache.get(store_cache_key(uri))
        if found is None:
            found = self.stores(uri)
            self._store_cache[store_cache_key(uri)] = found
        return found

    # ------------------------------------------------------------ 1-3: request, list, plan

    def preflight(self, request: TransferRequest) -> tuple[ObjectStore, ObjectStore]:
        """Check both ends before anything is written; one-line errors."""
        src_uri, dst_uri = request.source_uri, request.destination_uri
        src, dst = self.store(src_uri), self.store(dst_uri)
        src.check_bucket()
        dst.check_bucket()
        check_writable(dst, dst_uri.key)
        if src_uri == dst_uri:
            raise UsageError(f"source and destination are the same: {src_uri}")
        return src, dst

    def for_destination(self, request: TransferRequest) -> TransferRequest:
        """``request`` with the part size and threshold it leaves open fixed from the
        destination store's defaults (:meth:`TransferOptions.for_store`). On the direct
        path to a store that copies from the source itself but only whole objects
        (GCS rewrite, Azure Copy Blob), every object is one chunk."""
        dst = self.store(request.destination_uri)
        caps = capabilities(dst)
        options = request.options.for_store(caps)
        if (
            options.direct
            and not request.multicast  # a multicast job goes through gateways
            and not caps.copies_ranges
            and server_side_copier(self.store(request.source_uri), dst) is not None
        ):
            options = options.model_copy(update={"multipart_threshold": WHOLE_OBJECTS})
        check_chunk_budget(options)
        return request.model_copy(update={"options": options})

    def create_job(self, request: TransferRequest) -> Job:
        """Validate, list and chunk the source into the manifest, start multipart
        uploads, and plan. Nothing is written anywhere if validation fails. Several
        destinations make a multicast job (:mod:`skyhop.controlplane.legs`)."""
        if request.mode == "sync":
            raise UsageError(
                "a sync request is compared and planned by skyhop.controlplane.sync "
                "(SyncJob, submit_sync), not copied whole"
            )
        if request.multicast:
            return legs.create(self, request)
        src, dst = self.preflight(request)
        request = self.for_destination(request)
        src_uri, dst_uri = request.source_uri, request.destination_uri
        dst_is_dir = is_dir(dst, dst_uri.key)
        if request.keys is not None:
            selection, objects = listing.select_keys(src, src_uri, dst_uri, request.keys)
        else:
            selection, objects = listing.select(src, src_uri, dst_uri, request.options, dst_is_dir)
        if not selection.single and selection.dst_prefix:
            # a tree lands in a directory: an existing file there fails now, in one line
            check_writable(dst, selection.dst_prefix)
        objects = fanout.with_meta(src, objects)
        job = Job(request=request)
        self.manifest.create_job(job)
        totals = {"objects": 0, "bytes": 0, "chunks": 0, "parts": 0}
        pending_objects: list[ObjectEntry] = []
        pending_chunks: list[Chunk] = []
        with Cleanup(f"creating job {job.job_id}") as undo:
            # the job fails (with the reason) after its uploads are aborted
            undo.add(self._fail_job, job.job_id, undo)
            for entry, chunks in listing.entries(job.job_id, selection, objects, request.options):
                if entry.multipart and entry.state == ObjectState.PENDING:
                    upload_id = self.start_upload(dst, entry, chunks)
                    if upload_id is not None:
                        undo.add(self._multipart(dst).abort_multipart, entry.dst_key, upload_id)
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
            plan = self.planner(job, stores=self.store) if self.planner else None
        try:
            return self.manifest.update_job(
                job.job_id, expect={JobState.CREATED}, state=JobState.PLANNED, plan=plan
            )
        except ConflictError:  # cancelled while it was being listed
            self.abort_uploads(job.job_id)
            current = self.require(job.job_id)
            raise UsageError(
                f"job {job.job_id} was {_stopped(current)} while its source was listed"
            ) from None

    def start_upload(self, dst: ObjectStore, entry: ObjectEntry, chunks: list[Chunk]) -> str | None:
        """Start an object's multipart upload and note its id on ``entry``. An upload
        that cannot start (a folder that cannot be written to, a name the store
        refuses) fails that object alone, with the reason; a transient error is
        tried again first (the retry policy's back-off)."""
        writer = self._multipart(dst)
        sums = self.checksummed_parts(entry.job_id)
        try:
            upload_id = retry(
                lambda: writer.create_multipart(entry.dst_key, meta=entry.meta, crc32c=sums)
            )
        except (AccessError, NotFoundError, StoreError) as exc:
            listing.fail_entry(entry, chunks, f"cannot start the upload: {first_line(exc)}")
            log.info("%s: %s", entry.dst_key, entry.error)
            return None
        entry.upload_id = upload_id
        return upload_id

    def _fail_job(self, job_id: str, undo: Cleanup) -> None:
        reason = first_line(undo.error, limit=500) if undo.error is not None else "failed"
        self.manifest.update_job(job_id, state=JobState.FAILED, error=reason)

    def _flush(self, objects: list[ObjectEntry], chunks: list[Chunk]) -> None:
        if objects:
            self.manifest.put_objects(objects)
        if chunks:
            self.manifest.put_chunks(chunks)
        objects.clear()
        chunks.clear()

    def checksummed_parts(self, job_id: str) -> bool:
        """Whether the job's multipart uploads are CRC32C uploads: every part written
        with its CRC32C and completed with the parts' and the object's, for the store
        to check (``create_multipart(crc32c=True)``). So on the direct path when this
        process writes the bytes itself (the CRC32C of every part is computed here
        anyway); not for a copy the store makes itself (UploadPartCopy: no CRC32C
        known here) nor on the gateway path (the destination gateways write parts)."""
        found = self._checksummed.get(job_id)
        if found is None:
            request = self.require(job_id).request
            found = (
                request.options.direct
                and not request.multicast
                and server_side_copier(
                    self.store(request.source_uri), self.store(request.destination_uri)
                )
                is None
            )
            self._checksummed[job_id] = found
        return found

    def _multipart(self, store: ObjectStore) -> MultipartWriter:
        if not isinstance(store, MultipartWriter):
            raise UsageError(f"{store.uri} cannot write multipart objects")
        return store

    # ------------------------------------------------------------ 4: provision

    def start(self, job_id: str) -> Job:
        """Provision gateways for a planned or interrupted job and dispatch work.

        On resume, chunks that were dispatched but never verified go back to
        pending; verified chunks and completed objects are kept."""
        job = self.resumable(job_id)
        self._check_gateway_caps(job)
        attempt = job.runtime.attempt + 1 if job.runtime else 1
        key_wrapper = self.key_wrapper_factory(job) if self.key_wrapper_factory else None
        to_write = self._start_legs(job)
        if self.queued_control:
            return self._start_queued(job, attempt, key_wrapper, to_write)
        runtime = _provision().launch(
            job,
            self.compute,
            self.event_sink,
            attempt=attempt,
            key_wrapper=key_wrapper,
            legs=to_write,
        )
        with Cleanup(f"starting job {job_id}") as undo:
            undo.add(self.compute.terminate, job_id)
            undo.add(self.compute.revoke, job_id)  # newest first: rules, then gateways
            # only from the state it was started in: a job cancelled meanwhile stays so
            job = self.manifest.update_job(
                job_id, expect={job.state}, state=JobState.RUNNING, runtime=runtime, error=None
            )
        self.dispatch(job_id)
        return job

    def _start_legs(self, job: Job) -> list[tuple[int, str]] | None:
        """A multicast job's unfinished destinations, made RUNNING: the ones its
        gateways are launched for (None for a one-destination job)."""
        if not job.legs:
            return None
        out = []
        for leg in legs.leg_jobs(self, job):
            if not leg.state.finished:
                self.manifest.update_job(leg.job_id, state=JobState.RUNNING, error=None)
                out.append((leg.leg, leg.request.destination))
        if not out:
            raise UsageError(f"job {job.job_id}: every destination is finished; nothing to resume")
        return out

    def resumable(self, job_id: str) -> Job:
        """A planned or interrupted job ready to move data again: chunks that were
        dispatched but never verified go back to pending, objects whose chunks all
        verified before a stop are completed. Refuses a finished job, and fails one
        whose listing was cut off."""
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
        for one in self._parts(job):
            if one.state.finished:
                continue  # a multicast destination done already
            for chunk in list(self.manifest.iter_chunks(one.job_id, {ChunkState.DISPATCHED})):
                self.manifest.transition_chunk(
                    one.job_id,
                    chunk.chunk_id,
                    expect={ChunkState.DISPATCHED},
                    to=ChunkState.PENDING,
                )
            if job.runtime is not None:  # a resumed job: it may have stopped mid-completion
                self.complete_ready(one.job_id)
        return job

    def _parts(self, job: Job) -> list[Job]:
        """The jobs holding ``job``'s objects: its legs (multicast), else itself."""
        return legs.leg_jobs(self, job) if job.legs else [job]

    def _running_parts(self, job: Job) -> list[Job]:
        """The jobs still moving ``job``'s data: its running legs, else itself."""
        return legs.running(self, job) if job.legs else [job]

    def progress(self, job_id: str) -> JobProgress:
        """A job's progress; a multicast job's summed over its destinations."""
        job = self.require(job_id)
        if job.legs:
            return legs.progress(self, job)
        return self.manifest.progress(job_id)

    def set_aside(self, job_id: str, destinations: list[int], reason: str) -> list[int]:
        """Multicast: stop moving data to ``destinations`` (their gateways died); the
        others carry on (:func:`skyhop.controlplane.legs.set_aside`)."""
        return legs.set_aside(self, self.require(job_id), destinations, reason)

    def start_direct(self, job_id: str) -> Job:
        """Make a planned or interrupted job RUNNING on the direct path: no gateways
        and no keys; the caller's process moves the data
        (:class:`skyhop.controlplane.direct.DirectRunner`)."""
        job = self.resumable(job_id)
        runtime = JobRuntime(
            compute=DIRECT,
            attempt=job.runtime.attempt + 1 if job.runtime else 1,
            pid=os.getpid(),
            launched_at=utcnow(),
        )
        return self.manifest.update_job(job_id, state=JobState.RUNNING, runtime=runtime, error=None)

    def _check_gateway_caps(self, job: Job) -> None:
        """Fail the job (UsageError) when its route needs more gateways than a job
        may have, or than the live jobs together may have; nothing is launched."""
        wanted = _provision().planned_gateways(job)
        relays = len(job.request.options.relays)
        error = None
        if relays > self.limits.max_relays:
            error = f"{relays} relays, more than the limit of {self.limits.max_relays} per job"
        elif wanted > self.limits.max_gateways_per_job:
            error = (
                f"the route needs {wanted} gateways, more than the limit of "
                f"{self.limits.max_gateways_per_job} per job"
            )
        elif self.limits.max_gateways_total is not None:
            live = sum(
                len(other.runtime.gateways)
                if other.runtime
                else _provision().planned_gateways(other)
                for other in self.manifest.list_jobs(limit=1000)
                if other.job_id != job.job_id
                and other.state in (JobState.PROVISIONING, JobState.RUNNING)
            )
            if live + wanted > self.limits.max_gateways_total:
                error = (
                    f"the route needs {wanted} gateways and {live} run for other jobs: more "
                    f"than the limit of {self.limits.max_gateways_total} in all"
                )
        if error is not None:
            self.abort_uploads(job.job_id)
            self.manifest.update_job(job.job_id, state=JobState.FAILED, error=error)
            raise UsageError(f"job {job.job_id}: {error}")

    @property
    def queued_control(self) -> bool:
        """Whether gateways are launched without waiting and controlled through queues."""
        return self.control_queues is not None or self.compute.ready_via_events

    def _start_queued(
        self,
        job: Job,
        attempt: int,
        key_wrapper: crypto.KeyWrapper | None,
        to_write: list[tuple[int, str]] | None = None,
    ) -> Job:
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
        started: Job = _provision().launch_queued(
            job,
            self.compute,
            self.manifest,
            self.event_sink,
            self.control_queues,
            attempt=attempt,
            key_wrapper=key_wrapper,
            legs=to_write,
        )
        return started

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
        found = _provision().record_ready(self.manifest, event)
        if found is None:
            return
        job, changed = found
        if job.state == JobState.PROVISIONING and _provision().all_ready(job):
            self.connect(job.job_id)
        elif job.state == JobState.RUNNING and changed:
            _provision().connect(job, self.compute, self.control_queue)

    def connect(self, job_id: str) -> bool:
        """Wire a PROVISIONING job whose gateways are all ready and start moving data
        (idempotent: wiring twice changes nothing, one caller makes it RUNNING)."""
        job = self.require(job_id)
        if job.state != JobState.PROVISIONING or not _provision().all_ready(job):
            return False
        _provision().connect(job, self.compute, self.control_queue)
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
        counts = [self.manifest.progress(p.job_id).chunks for p in self._running_parts(job)]
        if not any(c.get(ChunkState.PENDING) for c in counts):
            return 0
        # the window counts chunks in flight at the busiest destination (a multicast
        # chunk in flight to three is one chunk on the source's links)
        room = self.limits.window_chunks - max(c.get(ChunkState.DISPATCHED, 0) for c in counts)
        if room <= 0:
            return 0
        work = self.take_pending(job_id, room)
        size = self.limits.dispatch_batch
        for n, start in enumerate(range(0, len(work), size)):
            gateway = sources[n % len(sources)]
            batch = ChunkBatch(job_id=job_id, chunks=work[start : start + size])
            try:
                _provision().submit(job.runtime, gateway, batch, self.control_queue)
            except SkyhopError as exc:
                # the chunks stay dispatched; a dead gateway is noticed by the
                # runner (or the reaper) and the job resumes from the manifest
                log.warning("dispatch to %s failed: %s", gateway.gateway_id, exc)
        return len(work)

    def take_pending(self, job_id: str, limit: int) -> list[ChunkWork]:
        """Up to ``limit`` pending chunks of objects still pending, each moved to
        DISPATCHED (one more attempt) and returned as the work to do (a multicast
        chunk once, for every destination that needs it)."""
        if job_id in self._legs:
            if self._legs[job_id]:
                return legs.take_pending(self, self.require(job_id), limit)
        else:
            job = self.require(job_id)
            self._legs[job_id] = list(job.legs)
            if job.legs:
                return legs.take_pending(self, job, limit)
        return self.take_chunks(job_id, self.pending_chunks(job_id, limit))

    def pending_chunks(self, job_id: str, limit: int) -> list[Chunk]:
        """Up to ``limit`` pending chunks, in chunk order (nothing is changed)."""
        now = utcnow()
        ready = (
            chunk
            for chunk in self.manifest.iter_chunks(job_id, {ChunkState.PENDING})
            if chunk.retry_at is None or chunk.retry_at <= now  # else backing off
        )
        return list(islice(ready, limit))

    def take_chunks(
        self, job_id: str, picked: Iterable[Chunk], *, taken: dict[int, Taken] | None = None
    ) -> list[ChunkWork]:
        """Move ``picked`` chunks (read as pending) to DISPATCHED, one more attempt each,
        and return them as the work to do; a chunk no longer pending, or whose object
        is no longer pending, is left out (a job of one destination: the direct path
        and the gateway path of a plain job). One manifest transaction for them all.
        ``taken``, when given, receives each chunk taken (as dispatched) and its
        object by chunk id: the direct path hands them back with the result
        (:meth:`chunk_verified`), which then reads neither again."""
        with batched(self.manifest):
            return self._take_chunks(job_id, picked, taken)

    def _take_chunks(
        self, job_id: str, picked: Iterable[Chunk], taken: dict[int, Taken] | None
    ) -> list[ChunkWork]:
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
                retry_at=None,
            ):
                continue
            if taken is not None:
                dispatched = chunk.model_copy(
                    update={
                        "state": ChunkState.DISPATCHED,
                        "dispatched_at": now,
                        "attempts": chunk.attempts + 1,
                        "retry_at": None,
                    }
                )
                taken[chunk.chunk_id] = Taken(dispatched, entry)
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
        return work

    # ------------------------------------------------------------ 6: verify

    def handle_event(self, event: GatewayEvent) -> None:
        """Apply one gateway event from outside this process (a queue, a gateway's
        outbox), once it is authenticated: its MAC is checked first, under the key of
        the gateway it names among the job's current gateways (:mod:`skyhop.eventauth`),
        and only a destination gateway of the job may verify a chunk (of its own
        destination). Anything else is dropped with a warning, changing nothing.

        A ``gateway_enrol`` has no MAC (its gateway has no key yet): its one-time
        token is checked instead, before anything else (:meth:`enrol`)."""
        if isinstance(event, GatewayEnrol):
            self.enrol(event)
            return
        sender = self._sender(event)
        if sender is None:
            log.warning(
                "dropped %s naming gateway %r of job %s: not signed by a gateway of the job",
                event.type,
                event.gateway_id,
                event.job_id,
            )
            return
        if isinstance(event, ChunkVerified) and not _may_verify(sender, event):
            log.warning(
                "dropped chunk_verified from %s (a %s): only the job's destinations verify",
                sender.gateway_id,
                sender.role.value,
            )
            return
        self.apply_event(event)

    def enrol(self, event: GatewayEnrol) -> bool:
        """Enrol a queue-controlled gateway (:func:`provision.enrol_queued`): the token
        is checked and spent, and its secrets go, sealed to the key it made, to its
        own control queue. A wrong, spent or replayed token is dropped with a
        warning; nothing is sent and nothing changes. True when it was enrolled.
        When the message cannot be sent, the token is given back and this raises,
        so the queue delivers the event again."""
        try:
            uri, message, spent = _provision().enrol_queued(self.manifest, event)
        except GatewayError as exc:
            log.warning("dropped gateway_enrol: %s", exc)
            return False
        try:
            self.control_queue(uri).send(message.model_dump_json())
        except BaseException:
            # nobody got the secrets: the token is given back, and the event (raised
            # for) is delivered again
            _provision().unspend(self.manifest, event.job_id, event.gateway_id, spent)
            raise
        log.info("gateway %s enrolled", event.gateway_id)
        return True

    def _sender(self, event: GatewayEvent) -> GatewaySpec | None:
        """The gateway that signed ``event``, when it is one of its job's current ones."""
        for fresh in (False, True):
            runtime = None if fresh else self._runtimes.get(event.job_id)
            if runtime is None:
                job = self.manifest.get_job(event.job_id)
                runtime = job.runtime if job is not None else None
                if runtime is None:
                    return None
                self._runtimes[event.job_id] = runtime
            if eventauth.verified(runtime, event):
                return next(g for g in runtime.gateways if g.gateway_id == event.gateway_id)
        return None

    def apply_event(self, event: GatewayEvent) -> None:
        """Apply one gateway event already authenticated (by :meth:`handle_event`).
        Duplicated, late or reordered events change nothing."""
        if isinstance(event, ChunkVerified):
            self.chunk_verified(event)
        elif isinstance(event, ChunkFailed):
            self.chunk_failed(event)
        elif isinstance(event, GatewayErrorEvent):
            log.warning("gateway %s: %s", event.gateway_id, event.message)
            if event.fatal:
                self.interrupt(event.job_id, f"gateway {event.gateway_id} failed: {event.message}")
        elif isinstance(event, GatewayReady):
            log.info("gateway %s ready at %s", event.gateway_id, event.host)
            self._gateway_ready(event)

    def _for_leg(self, event: ChunkVerified | ChunkFailed) -> ChunkVerified | ChunkFailed:
        """A multicast job's event as its destination's (the leg job holds the chunk)."""
        found = self._legs.get(event.job_id)
        if found is None:
            job = self.manifest.get_job(event.job_id)
            found = self._legs[event.job_id] = list(job.legs) if job is not None else []
        if not found:
            return event
        if event.leg >= len(found):
            log.warning("ignoring %s for unknown destination %d", event.type, event.leg)
            return event.model_copy(update={"job_id": "", "leg": 0})
        return event.model_copy(update={"job_id": found[event.leg]})

    def chunk_verified(self, event: ChunkVerified, *, taken: Taken | None = None) -> None:
        """Record a verified chunk (an event, or the direct path in this process);
        completes its object when it was the last. ``taken``: the chunk and its
        object as :meth:`take_chunks` took them (saves reading them again)."""
        verified = self.record_verified(event, known=taken.chunk if taken else None)
        if verified is not None:
            self.complete_object(
                verified.job_id,
                verified.object_id,
                last=verified,
                entry=taken.entry if taken else None,
            )

    def record_verified(self, event: ChunkVerified, *, known: Chunk | None = None) -> Chunk | None:
        """Record a verified chunk without completing its object: the chunk as
        recorded, or None when the event changed nothing (unknown, mismatched,
        or verified already). The direct path completes multipart objects on its
        own threads (:meth:`complete_object`), so that one object's completion
        never holds up the parts of the others. ``known``: the chunk as it was
        taken (the transition below is conditional: a chunk changed since is
        left alone)."""
        routed = self._for_leg(event)
        assert isinstance(routed, ChunkVerified)
        event = routed
        if known is not None and (known.job_id, known.chunk_id) == (event.job_id, event.chunk_id):
            chunk: Chunk | None = known
        else:
            chunk = self.manifest.get_chunk(event.job_id, event.chunk_id)
        if chunk is None or event.length != chunk.length:
            log.warning(
                "ignoring chunk_verified for unknown or mismatched chunk %s", event.chunk_id
            )
            return None
        # in flight at its current attempt: dispatched, or back to pending since (a
        # deadline passed, a resume) with no later dispatch, when that dispatch's bytes
        # are as good; never a chunk not sent yet (attempt 0), nor another attempt's
        if (
            chunk.state not in (ChunkState.DISPATCHED, ChunkState.PENDING)
            or chunk.attempts < 1
            or event.attempt != chunk.attempts
        ):
            log.info(
                "chunk %s: chunk_verified of attempt %d ignored (the chunk is %s at attempt %d)",
                event.chunk_id,
                event.attempt,
                chunk.state.value,
                chunk.attempts,
            )
            return None
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
        if not applied:
            return None
        return chunk.model_copy(
            update={
                "state": ChunkState.VERIFIED,
                "crc32c": event.crc32c,
                "md5": event.md5,
                "part_etag": event.part_etag,
            }
        )

    def chunk_failed(self, event: ChunkFailed) -> None:
        """Record a failed chunk. A failure that trying again cannot fix fails the
        chunk and its object. A retryable one sends the chunk again after a
        back-off (the retry policy's); after ``max_attempts`` retryable failures
        in a row the job is interrupted with the reason, resumable as it stands
        once the cause is gone (a full disk freed), each resume with as many tries
        again."""
        job_id = event.job_id  # a multicast job's own id: it is the one to interrupt
        routed = self._for_leg(event)
        assert isinstance(routed, ChunkFailed)
        event = routed
        chunk = self.manifest.get_chunk(event.job_id, event.chunk_id)
        if chunk is None or chunk.state != ChunkState.DISPATCHED:
            return
        if event.attempt and event.attempt != chunk.attempts:
            # an earlier dispatch's failure, late or delivered twice: the chunk is on
            # its way again, and this says nothing about that attempt
            log.info("chunk %s: stale failure of attempt %d ignored", event.chunk_id, event.attempt)
            return
        failures = chunk.failures + 1
        if not event.retryable:
            if self.manifest.transition_chunk(
                event.job_id,
                event.chunk_id,
                expect={ChunkState.DISPATCHED},
                to=ChunkState.FAILED,
                error=event.reason,
                failures=failures,
            ):
                self._object_failed(event.job_id, chunk.object_id, event.reason)
            return
        tries = (failures - 1) % self.limits.max_attempts  # this run's retries so far
        exhausted = tries + 1 == self.limits.max_attempts
        delay = 0.0 if exhausted else self._backoff(tries)
        if not self.manifest.transition_chunk(
            event.job_id,
            event.chunk_id,
            expect={ChunkState.DISPATCHED},
            to=ChunkState.PENDING,
            error=event.reason,
            failures=failures,
            retry_at=utcnow() + timedelta(seconds=delay) if delay else None,
        ):
            return
        if exhausted:
            reason = f"{event.reason} (tried {self.limits.max_attempts} times)"
            log.info("job %s: chunk %s: %s; interrupting", job_id, event.chunk_id, reason)
            self.interrupt(job_id, reason)
            return
        log.info(
            "chunk %s failed (%s); sending it again in %.1f s", event.chunk_id, event.reason, delay
        )

    def check_interrupted(self, job_id: str) -> None:
        """Raise :class:`~skyhop.errors.Interrupted` when the job was interrupted
        under a runner's feet (a chunk ran out of tries on a retryable failure)."""
        job = self.require(job_id)
        if job.state == JobState.INTERRUPTED:
            raise Interrupted(f"job {job_id} interrupted: {job.error or 'stopped'}")

    def _backoff(self, retry: int) -> float:
        """Seconds before the ``retry``-th (0-based) retry of a chunk."""
        limits = self.limits
        floor = limits.retry_floor
        return backoff_delay(
            retry,
            base=limits.retry_base,
            cap=limits.retry_cap,
            rng=lambda: floor + (1.0 - floor) * limits.rng(),
        )

    def complete_object(
        self,
        job_id: str,
        object_id: int,
        *,
        last: Chunk | None = None,
        entry: ObjectEntry | None = None,
    ) -> bool:
        """When every chunk of an object is verified: complete its multipart
        upload, record its CRC32C and compare it with the source's checksum.
        ``last`` is the chunk just verified (saves a read for one-chunk objects);
        ``entry`` the object as read when that chunk was taken, used for a whole
        object of one chunk (nothing to complete at the store; a change since is
        caught by the conditional write at the end), read again otherwise."""
        if entry is None or entry.object_id != object_id or entry.n_chunks != 1 or entry.multipart:
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
            checked = self.checksummed_parts(job_id) and bool(sums.crc32c)
            try:
                self._multipart(dst).complete_multipart(
                    entry.dst_key,
                    entry.upload_id,
                    parts,
                    part_crc32c={c.index + 1: c.crc32c or "" for c in chunks} if checked else None,
                    crc32c=sums.crc32c if checked else None,
                )
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
            crc32c=sums.crc32c or None,
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
        job = self.require(job_id)
        if job.legs:
            return sum(self.complete_ready(leg.job_id) for leg in legs.running(self, job))
        completed = 0
        for entry in list(self.manifest.iter_objects(job_id, {ObjectState.PENDING})):
            completed += self.complete_object(job_id, entry.object_id)
        return completed

    def stalled(self, job_id: str) -> bool:
        """Nothing pending or in flight, yet the transfer is not done."""
        for part in self._running_parts(self.require(job_id)):
            counts = self.manifest.progress(part.job_id).chunks
            if counts.get(ChunkState.PENDING) or counts.get(ChunkState.DISPATCHED):
                return False
        return not self.transfer_done(job_id)

    def transfer_done(self, job_id: str) -> bool:
        """True when the listing is complete and every object is verified or failed
        (a multicast job: at every destination still running)."""
        job = self.require(job_id)
        for part in self._running_parts(job):
            if not part.listing_complete:
                return False
            progress = self.manifest.progress(part.job_id)
            if progress.objects_verified + progress.objects_failed < part.objects_total:
                return False
        return True

    def redispatch_stuck(self, job_id: str, older_than: timedelta | None = None) -> int:
        """Chunks dispatched longer ago than ``older_than`` (default: the stuck
        deadline) go back to pending, to be sent again."""
        deadline = utcnow() - (older_than if older_than is not None else self.limits.stuck_after)
        moved = 0
        for part in self._running_parts(self.require(job_id)):
            for chunk in list(self.manifest.iter_chunks(part.job_id, {ChunkState.DISPATCHED})):
                if chunk.dispatched_at is not None and chunk.dispatched_at < deadline:
                    moved += self.manifest.transition_chunk(
                        part.job_id,
                        chunk.chunk_id,
                        expect={ChunkState.DISPATCHED},
                        to=ChunkState.PENDING,
                        error="no verification before the deadline",
                    )
        return moved

    # ------------------------------------------------------------ 6b, 7: final check and teardown

    def finish(self, job_id: str, *, started: float | None = None) -> JobReport:
        """List the destination, check every key and size, tear down, report."""
        if self.require(job_id).legs:
            return legs.finish(self, job_id, started=started)
        # one finisher: a concurrent or repeated call loses this condition
        job = self.manifest.update_job(job_id, expect={JobState.RUNNING}, state=JobState.VERIFYING)
        read = legs.source_bytes_read(job)  # the source gateways' counters, before they go
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
                job = delete_phase(
                    self.manifest, self.store, job, rows, copies_ok=state == JobState.SUCCEEDED
                )
                if job.sync is not None and job.sync.delete_failures:
                    state = JobState.FAILED
                    error = f"{job.sync.delete_failures} delete(s) failed"
        job = self.manifest.update_job(job_id, state=state, error=error)
        report = build_report(self.manifest, job, summary, started=started)
        report.source_bytes_read = read
        write_report(report)
        self._keep_report(report)
        return report

    def _keep_report(self, report: JobReport) -> None:
        """Keep the report with the job, for whoever follows it from elsewhere
        (``skyhop cp --on``): the lists cut short, the CSV rebuilt from the manifest."""
        try:
            self.manifest.update_job(report.job_id, report=short_report(report))
        except SkyhopError as exc:
            log.warning("job %s: could not keep its report in the manifest: %s", report.job_id, exc)

    def cancel(self, job_id: str, reason: str = "cancelled by the user") -> Job:
        """Stop a job for good: it fails with ``reason``, its gateways are terminated,
        its firewall rules revoked (teardown) and its multipart uploads aborted; its
        report is written and kept. A finished job, or one already being verified,
        is returned as it is (too late to cancel). Idempotent."""
        job = self.require(job_id)
        if job.state.finished or job.state == JobState.VERIFYING:
            return job
        try:
            job = self.manifest.update_job(
                job_id, expect=CANCELLABLE, state=JobState.FAILED, error=reason
            )
        except ConflictError:
            return self.require(job_id)  # it finished (or was cancelled) meanwhile
        try:
            self.teardown(job_id)
        finally:
            self.abort_uploads(job_id)
        report = build_report(self.manifest, job, None)
        write_report(report)
        self._keep_report(report)
        log.info("job %s cancelled: %s", job_id, reason)
        return self.require(job_id)

    def teardown(self, job_id: str) -> None:
        """Revoke the job's firewall rules and terminate its gateways (idempotent).
        Queue-controlled gateways are told to shut down first, and their control
        queues are deleted last; gateway VMs controlled over HTTPS are told to shut
        down first too (each exits cleanly and powers its VM off)."""
        job = self.manifest.get_job(job_id)
        has_gateways = job is not None and job.runtime is not None and bool(job.runtime.gateways)
        uris = _provision().shutdown_queued(job, self.control_queue) if has_gateways else []
        if has_gateways:
            _provision().shutdown_https(job, self.compute)
        try:
            self.compute.revoke(job_id)
        finally:
            try:
                self.compute.terminate(job_id)
            finally:
                try:
                    if self.control_queues is not None:
                        self.control_queues.delete_job(job_id, uris)
                    for uri in uris:
                        self._queue_cache.pop(uri, None)
                finally:
                    self.forget_secrets(job_id)

    def forget_secrets(self, job_id: str) -> None:
        """Blank the job's control credentials in the manifest (its gateways are gone)."""
        job = self.manifest.get_job(job_id)
        if job is not None and job.runtime is not None and job.runtime.has_secrets:
            self.manifest.update_job(job_id, runtime=job.runtime.without_secrets())
            if isinstance(self.manifest, Scrubs):
                self.manifest.scrub()  # e.g. SQLite's WAL still holds the old pages

    def sweep_secrets(self, alive: Callable[[Job], bool]) -> int:
        """Blank the credentials of every job that is finished or that no process
        runs any more (``alive`` says whether a job's gateways still run): what a
        killed process left behind. Returns how many jobs were swept."""
        swept = 0
        for job in self.manifest.list_jobs(limit=1000):
            if job.runtime is None or not job.runtime.has_secrets:
                continue
            if job.state.finished or not alive(job):
                self.forget_secrets(job.job_id)
                swept += 1
        return swept

    def interrupt(self, job_id: str, reason: str) -> Job:
        """Tear down and leave the job resumable (``skyhop cp --resume JOB``)."""
        try:
            self.teardown(job_id)
        finally:
            job = self.manifest.get_job(job_id)
            if job is not None and not job.state.finished:
                job = self.manifest.update_job(job_id, state=JobState.INTERRUPTED, error=reason)
            for leg_id in job.legs if job is not None else []:
                leg = self.manifest.get_job(leg_id)
                if leg is not None and leg.state == JobState.RUNNING:
                    self.manifest.update_job(leg_id, state=JobState.INTERRUPTED, error=reason)
        return self.require(job_id)

    def start_uploads(self, job_id: str) -> int:
        """Start the multipart uploads of objects added without one (a sync that
        planned everything before writing anything); returns how many."""
        job = self.require(job_id)
        dst = self.store(job.request.destination_uri)
        started = 0
        for entry in list(self.manifest.iter_objects(job_id, {ObjectState.PENDING})):
            if entry.multipart and not entry.upload_id:
                chunks = list(self.manifest.iter_chunks(job_id, object_id=entry.object_id))
                upload_id = self.start_upload(dst, entry, chunks)
                if upload_id is None:
                    self._object_failed(job_id, entry.object_id, entry.error or "failed")
                    for chunk in chunks:
                        self.manifest.transition_chunk(
                            job_id,
                            chunk.chunk_id,
                            expect={ChunkState.PENDING},
                            to=ChunkState.FAILED,
                            error=entry.error,
                        )
                    continue
                self.manifest.update_object(job_id, entry.object_id, upload_id=upload_id)
                started += 1
        return started

    def abort_uploads(self, job_id: str) -> None:
        """Abort multipart uploads of objects that will not complete."""
        job = self.manifest.get_job(job_id)
        if job is None:
            return
        for leg_id in job.legs:
            self.abort_uploads(leg_id)
        if job.legs:
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


def check_chunk_budget(options: TransferOptions) -> None:
    """Refuse, before anything starts, parts a gateway could not hold: a destination
    gateway keeps a chunk whole until it is verified, within its buffer budget
    (``GatewayConfig.buffer_budget_bytes``). The direct path sizes its pool to the
    chunks instead."""
    if options.direct:
        return  # the direct path sizes its pool to the chunks
    budget = int(GatewayConfig.model_fields["buffer_budget_bytes"].default)
    for flag, value in (
        ("--chunk-size", options.chunk_size),
        ("--multipart-threshold", options.multipart_threshold),
    ):
        if value is not None and value > budget:
            raise UsageError(
                f"{flag} {_mib(value)} is larger than a gateway's chunk buffer ({_mib(budget)}): "
                f"use {_mib(budget)} or less (a chunk is held whole until it is verified)"
            )


def _mib(n: int) -> str:
    return f"{n / 2**20:g} MiB"


#: states a job can be cancelled from (a verifying job is finishing: too late)
CANCELLABLE = {
    JobState.CREATED,
    JobState.PLANNED,
    JobState.PROVISIONING,
    JobState.RUNNING,
    JobState.INTERRUPTED,
}


def _stopped(job: Job) -> str:
    return job.error or job.state.value


def _may_verify(sender: GatewaySpec, event: ChunkVerified) -> bool:
    """Only a destination gateway verifies, and only for the destination it writes."""
    if sender.role != GatewayRole.DESTINATION:
        return False
    return event.leg in sender.legs if sender.legs else event.leg == 0
