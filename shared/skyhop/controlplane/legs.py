"""Multicast jobs: one source, several destinations, one set of gateways.

A multicast job (``TransferRequest.destinations``) is a *parent* job and one
*leg* job per destination, ``JOB.d0``, ``JOB.d1``, ... (``Job.legs``,
``Job.leg_of``, ``Job.leg``). The parent holds the request, the plan (a
distribution tree, :mod:`skyhop.planner.multicast`), the gateways' runtime and
the job's state; each leg is an ordinary job of one destination, holding that
destination's objects and chunks, its multipart uploads, its verification and
its own state. So the manifest tracks every chunk per destination with no
change to any store's encoding or to the write rules: a leg's records are a
job's records.

The source is listed once; every leg gets the same objects cut the same way
(the same chunk ids), with its own destination keys. A chunk is read once by a
source gateway and sent along the tree to every destination that still needs
it (:class:`~skyhop.models.ChunkWork` ``targets``); each destination gateway
opens, verifies and writes it and reports for its leg (``ChunkVerified.leg``),
so every leg advances on its own:

* a destination that fails objects (its store refuses them) fails them in its
  leg only; the others verify theirs;
* a destination whose gateway dies is *set aside*: its leg goes INTERRUPTED,
  its chunks in flight back to pending, and the others carry on to their
  verification; the job ends INTERRUPTED, and ``skyhop cp --resume JOB``
  starts gateways for the unfinished legs only, sending only their chunks;
* the job succeeds only when every leg verified every object.
"""

from __future__ import annotations

import heapq
import logging
import posixpath
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from skyhop.cleanup import Cleanup
from skyhop.controlplane import fanout, listing, verify
from skyhop.controlplane.listing import SourceSelection
from skyhop.controlplane.report import CsvReport, build_report, iter_object_reports, write_report
from skyhop.errors import NotFoundError, SkyhopError, UsageError, first_line
from skyhop.models import (
    Chunk,
    ChunkState,
    ChunkTarget,
    ChunkWork,
    GatewayRole,
    Job,
    JobReport,
    JobState,
    ObjectEntry,
    ObjectState,
    TransferRequest,
    utcnow,
)
from skyhop.state.base import JobProgress
from skyhop.stores.base import ObjectStore, capabilities, check_writable, is_dir
from skyhop.uri import StoreURI, parse_uri

if TYPE_CHECKING:
    from skyhop.controlplane.service import ControlPlane

log = logging.getLogger("skyhop.controlplane")

BATCH = 500


def leg_id(job_id: str, leg: int) -> str:
    """The job id of destination ``leg`` of multicast job ``job_id``."""
    return f"{job_id}.d{leg}"


def leg_jobs(cp: ControlPlane, job: Job) -> list[Job]:
    """The legs of a multicast job, in destination order."""
    return [cp.require(i) for i in job.legs]


def running(cp: ControlPlane, job: Job) -> list[Job]:
    """The legs still moving data (not finished, not set aside)."""
    return [leg for leg in leg_jobs(cp, job) if leg.state == JobState.RUNNING]


# ---------------------------------------------------------------- 1-3: create


def check_destinations(src_uri: StoreURI, dsts: list[StoreURI]) -> None:
    """Refuse destinations that are the source, or that lie inside one another
    (two legs would write the same keys)."""
    for i, a in enumerate(dsts):
        if a == src_uri:
            raise UsageError(f"source and destination are the same: {a}")
        for b in dsts[i + 1 :]:
            if a.store_id == b.store_id and (
                _folder(a.key).startswith(_folder(b.key))
                or _folder(b.key).startswith(_folder(a.key))
            ):
                raise UsageError(f"destinations {a} and {b} overlap: each needs its own place")


def _folder(key: str) -> str:
    return key if not key or key.endswith("/") else key + "/"


def _fail(cp: ControlPlane, job_id: str, undo: Cleanup) -> None:
    reason = first_line(undo.error, limit=500) if undo.error is not None else "failed"
    cp.manifest.update_job(job_id, state=JobState.FAILED, error=reason)


def retarget(selection: SourceSelection, dst_uri: StoreURI, dst_is_dir: bool) -> SourceSelection:
    """The first destination's selection as another destination receives it (the
    same objects; the key mapping of ``aws s3 cp`` against that destination)."""
    if selection.single:
        key = dst_uri.key
        if dst_uri.is_dir_like() or dst_is_dir:
            name = posixpath.basename(selection.src_prefix)
            key = name if not key else key + name if key.endswith("/") else key + "/" + name
        return SourceSelection(selection.src_prefix, "", True, key)
    prefix = dst_uri.key if dst_uri.is_dir_like() else dst_uri.key + "/"
    return SourceSelection(selection.src_prefix, prefix, False)


def _leg_key(first: SourceSelection, mine: SourceSelection, entry: ObjectEntry) -> str:
    if mine.single:
        return mine.single_dst_key or ""
    return mine.dst_prefix + entry.dst_key[len(first.dst_prefix) :]


def create(cp: ControlPlane, request: TransferRequest) -> Job:
    """List the source once into a parent job and one leg per destination, start
    every leg's multipart uploads, and plan the tree. Nothing is written anywhere
    if a destination is unusable."""
    options = request.options
    if options.relays:
        raise UsageError("--relay routes one destination; several are planned as one tree")
    if options.delete:
        raise UsageError("sync --delete takes one destination")
    src_uri = request.source_uri
    dst_uris = [parse_uri(d) for d in request.all_destinations]
    check_destinations(src_uri, dst_uris)
    src = cp.store(src_uri)
    src.check_bucket()
    dsts: list[ObjectStore] = []
    for uri in dst_uris:
        store = cp.store(uri)
        store.check_bucket()
        check_writable(store, uri.key)
        dsts.append(store)
    request = cp.for_destination(request)  # the first destination's part sizes ...
    for uri, store in zip(dst_uris[1:], dsts[1:], strict=True):
        caps = capabilities(store)  # ... which every other one must accept
        chunk = request.options.chunk_size or 0
        if chunk < caps.min_part_size:
            raise UsageError(
                f"{uri} needs parts of at least {caps.min_part_size} bytes: pass --chunk-size"
            )
    options = request.options
    if request.keys is not None:
        first, objects = listing.select_keys(src, src_uri, dst_uris[0], request.keys)
    else:
        first, objects = listing.select(
            src, src_uri, dst_uris[0], options, is_dir(dsts[0], dst_uris[0].key)
        )
    selections = [first] + [
        retarget(first, uri, is_dir(store, uri.key))
        for uri, store in zip(dst_uris[1:], dsts[1:], strict=True)
    ]
    for store, sel in zip(dsts, selections, strict=True):
        if not sel.single and sel.dst_prefix:
            check_writable(store, sel.dst_prefix)
    objects = fanout.with_meta(src, objects)
    parent = Job(request=request)
    ids = [leg_id(parent.job_id, i) for i in range(len(dst_uris))]
    parent = parent.model_copy(update={"legs": ids})
    legs = [
        Job(
            job_id=ids[i],
            request=request.model_copy(
                update={
                    "destination": request.all_destinations[i],
                    "destinations": [],
                    "request_id": f"{request.request_id}.d{i}",
                }
            ),
            leg_of=parent.job_id,
            leg=i,
        )
        for i in range(len(dst_uris))
    ]
    cp.manifest.create_job(parent)
    for leg in legs:
        cp.manifest.create_job(leg)
    totals = {"objects": 0, "bytes": 0, "chunks": 0}
    pending: list[tuple[list[ObjectEntry], list[Chunk]]] = [([], []) for _ in legs]
    with Cleanup(f"creating multicast job {parent.job_id}") as undo:
        # undone newest first: every upload is aborted, then every job failed
        for job_id in [parent.job_id, *ids]:
            undo.add(_fail, cp, job_id, undo)
        for entry, chunks in listing.entries(ids[0], first, objects, options):
            for i, (leg, store) in enumerate(zip(legs, dsts, strict=True)):
                mine = (
                    entry
                    if i == 0
                    else entry.model_copy(
                        update={
                            "job_id": leg.job_id,
                            "dst_key": _leg_key(first, selections[i], entry),
                        }
                    )
                )
                if mine.multipart:
                    writer = cp._multipart(store)
                    upload_id = writer.create_multipart(mine.dst_key, meta=mine.meta)
                    undo.add(writer.abort_multipart, mine.dst_key, upload_id)
                    mine = mine.model_copy(update={"upload_id": upload_id})
                pending[i][0].append(mine)
                pending[i][1].extend(
                    chunks
                    if i == 0
                    else [c.model_copy(update={"job_id": leg.job_id}) for c in chunks]
                )
            totals["objects"] += 1
            totals["bytes"] += entry.size
            totals["chunks"] += len(chunks)
            if len(pending[0][1]) >= BATCH:
                for objs, chks in pending:
                    cp._flush(objs, chks)
        for objs, chks in pending:
            cp._flush(objs, chks)
        if totals["objects"] == 0:
            raise NotFoundError(f"nothing to copy: every object under {src_uri} was filtered out")
        for job_id in [*ids, parent.job_id]:
            updated = cp.manifest.update_job(
                job_id,
                objects_total=totals["objects"],
                bytes_total=totals["bytes"],
                chunks_total=totals["chunks"],
            )
            if job_id != parent.job_id:
                cp.manifest.update_job(job_id, state=JobState.PLANNED)
        parent = updated
        plan = cp.planner(parent, stores=cp.store) if cp.planner else None
    return cp.manifest.update_job(parent.job_id, state=JobState.PLANNED, plan=plan)


# ---------------------------------------------------------------- 5: move


def take_pending(cp: ControlPlane, job: Job, limit: int) -> list[ChunkWork]:
    """Up to ``limit`` chunks pending at any running destination, each as one piece
    of work for every destination that needs it (moved to DISPATCHED there)."""
    streams = [_pending(cp, leg) for leg in running(cp, job)]
    by_id: dict[int, list[tuple[int, Chunk]]] = {}
    for chunk_id, leg, chunk in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
        if chunk_id not in by_id and len(by_id) >= limit:
            break
        by_id.setdefault(chunk_id, []).append((leg, chunk))
    objects: dict[tuple[int, int], ObjectEntry | None] = {}
    now = utcnow()
    work: list[ChunkWork] = []
    for chunk_id, found in by_id.items():
        targets: list[ChunkTarget] = []
        base: tuple[Chunk, ObjectEntry] | None = None
        for leg, chunk in found:
            job_id = job.legs[leg]
            key = (leg, chunk.object_id)
            if key not in objects:
                objects[key] = cp.manifest.get_object(job_id, chunk.object_id)
            entry = objects[key]
            if entry is None or entry.state != ObjectState.PENDING:
                continue
            if not cp.manifest.transition_chunk(
                job_id,
                chunk_id,
                expect={ChunkState.PENDING},
                to=ChunkState.DISPATCHED,
                dispatched_at=now,
                attempts=chunk.attempts + 1,
            ):
                continue
            targets.append(
                ChunkTarget(
                    leg=leg,
                    dst_key=entry.dst_key,
                    upload_id=entry.upload_id,
                    meta=None if entry.multipart else entry.meta,
                    attempt=chunk.attempts + 1,
                )
            )
            base = base or (chunk, entry)
        if base is None:
            continue
        chunk, entry = base
        work.append(
            ChunkWork(
                chunk_id=chunk_id,
                object_id=chunk.object_id,
                index=chunk.index,
                src_key=entry.src_key,
                dst_key=targets[0].dst_key,
                offset=chunk.offset,
                length=chunk.length,
                object_size=entry.size,
                multipart=entry.multipart,
                upload_id=targets[0].upload_id,
                src_etag=entry.src_etag,
                meta=targets[0].meta,
                attempt=targets[0].attempt,
                targets=targets,
            )
        )
    return work


def _pending(cp: ControlPlane, leg: Job) -> Iterator[tuple[int, int, Chunk]]:
    """A destination's pending chunks, by id, as (chunk id, destination, chunk)."""
    for chunk in cp.manifest.iter_chunks(leg.job_id, {ChunkState.PENDING}):
        yield chunk.chunk_id, leg.leg, chunk


def progress(cp: ControlPlane, job: Job) -> JobProgress:
    """Every destination's progress summed: bytes and objects delivered over all
    destinations, chunks by state over all destinations."""
    total = JobProgress()
    for leg in leg_jobs(cp, job):
        p = cp.manifest.progress(leg.job_id)
        total.objects_total += p.objects_total
        total.objects_verified += p.objects_verified
        total.objects_failed += p.objects_failed
        total.bytes_total += p.bytes_total
        total.bytes_verified += p.bytes_verified
        for state, n in p.chunks.items():
            total.chunks[state] = total.chunks.get(state, 0) + n
    return total


def set_aside(cp: ControlPlane, job: Job, legs: list[int], reason: str) -> list[int]:
    """Stop moving data to destinations ``legs`` (their gateway died): each goes
    INTERRUPTED with ``reason``, its chunks in flight back to pending, to be sent
    on resume; the other destinations carry on. Returns the legs set aside."""
    done = []
    for n in legs:
        if n >= len(job.legs):
            continue
        leg = cp.require(job.legs[n])
        if leg.state != JobState.RUNNING:
            continue
        cp.manifest.update_job(leg.job_id, state=JobState.INTERRUPTED, error=reason)
        for chunk in list(cp.manifest.iter_chunks(leg.job_id, {ChunkState.DISPATCHED})):
            cp.manifest.transition_chunk(
                leg.job_id, chunk.chunk_id, expect={ChunkState.DISPATCHED}, to=ChunkState.PENDING
            )
        log.warning(
            "job %s: destination %s set aside: %s", job.job_id, leg.request.destination, reason
        )
        done.append(n)
    return done


# ---------------------------------------------------------------- 6b, 7: finish


def finish(cp: ControlPlane, job_id: str, *, started: float | None = None) -> JobReport:
    """Check every running destination's listing (while the gateways go), settle
    each leg, and report: the job succeeds when every destination verified every
    object; a destination set aside leaves it INTERRUPTED (resumable)."""
    job = cp.manifest.update_job(job_id, expect={JobState.RUNNING}, state=JobState.VERIFYING)
    legs = running(cp, job)
    read = source_bytes_read(job)  # before the gateways go
    summaries = {}
    with ThreadPoolExecutor(max_workers=1 + len(legs), thread_name_prefix="finish") as pool:
        teardown = pool.submit(cp.teardown, job_id)
        checks = {
            leg.job_id: pool.submit(
                verify.listing_check, cp.manifest, leg, cp.store(leg.request.destination_uri)
            )
            for leg in legs
        }
        try:
            summaries = {k: f.result() for k, f in checks.items()}
        finally:
            teardown.result()
    for leg in legs:
        summary = summaries[leg.job_id]
        failed = sum(1 for _ in cp.manifest.iter_objects(leg.job_id, {ObjectState.FAILED}))
        ok = not failed and summary.mismatches == 0
        if failed:
            cp.abort_uploads(leg.job_id)
        with CsvReport(leg.job_id) as rows:
            rows.write_all(iter_object_reports(cp.manifest, leg))
        cp.manifest.update_job(
            leg.job_id,
            state=JobState.SUCCEEDED if ok else JobState.FAILED,
            error=None
            if ok
            else f"{failed} object(s) failed, {summary.mismatches} listing mismatch(es)",
        )
    reports = []
    for leg in leg_jobs(cp, job):
        report = build_report(cp.manifest, leg, summaries.get(leg.job_id), started=started)
        write_report(report)
        reports.append(report)
    states = [r.state for r in reports]
    aside = [r for r in reports if r.state == JobState.INTERRUPTED]
    if aside:
        state, error = (
            JobState.INTERRUPTED,
            (
                f"{len(aside)} destination(s) not finished ({aside[0].destination}: "
                f"{cp.require(aside[0].job_id).error}); resume with: skyhop cp --resume {job_id}"
            ),
        )
    elif all(s == JobState.SUCCEEDED for s in states):
        state, error = JobState.SUCCEEDED, None
    else:
        bad = [r for r in reports if r.state != JobState.SUCCEEDED]
        state = JobState.FAILED
        error = f"{len(bad)} of {len(reports)} destination(s) failed ({bad[0].destination})"
    job = cp.manifest.update_job(job_id, state=state, error=error)
    report = summary_report(job, reports, started)
    report.source_bytes_read = read
    write_report(report)
    return report


def source_bytes_read(job: Job) -> int | None:
    """What the job's source gateways read from the source store (their counters,
    over the control API; None where gateways take no calls: queue-controlled)."""
    runtime = job.runtime
    if runtime is None or not runtime.client_cert_pem:
        return None
    from skyhop.controlplane import provision  # the gateway machinery, loaded with it

    total = 0
    for gateway in runtime.gateways:
        if gateway.role != GatewayRole.SOURCE:
            continue
        try:
            total += provision.gateway_client(runtime, gateway).status().bytes_read
        except SkyhopError as exc:
            log.info("no status from %s: %s", gateway.gateway_id, exc)
            return None
    return total


def summary_report(job: Job, legs: list[JobReport], started: float | None) -> JobReport:
    """The parent's report: every destination's, and their sums."""
    seconds = (
        time.monotonic() - started
        if started is not None
        else (utcnow() - job.created_at).total_seconds()
    )
    delivered = sum(r.bytes for r in legs)
    failures = [f"{r.destination}: {f}" for r in legs for f in r.failures]
    failures += [
        f"{r.destination}: not finished (resume with skyhop cp --resume {job.job_id})"
        for r in legs
        if r.state == JobState.INTERRUPTED
    ]
    return JobReport(
        job_id=job.job_id,
        state=job.state,
        source=job.request.source,
        destination=job.request.destination,
        objects=sum(r.objects for r in legs),
        objects_failed=sum(r.objects_failed for r in legs),
        bytes=delivered,
        seconds=round(seconds, 3),
        gbps=round(delivered * 8 / seconds / 1e9, 4) if seconds > 0 else 0.0,
        chunks_resent=sum(r.chunks_resent for r in legs),
        plan=job.plan,
        failures=failures,
        data_path="gateways",
        encryption=job.request.options.encryption,
        destinations=legs,
    )
