"""``skyhop sync``: keep a destination prefix in step with a source prefix.

Both sides are listed (in parallel over prefixes, see
:mod:`skyhop.controlplane.fanout`) and merged in key order, one object of each
side at a time, so memory stays flat for millions of keys. Every key becomes
one action:

* **copy**: missing at the destination, or differing as ``compare`` says
  (:class:`~skyhop.models.CompareMode`):

  ``size-mtime`` (default)
      the sizes differ, or the source was modified after the destination
      object (by more than ``modify_window``, 1 s by default, since S3 and
      Azure keep whole seconds);
  ``checksum`` (``--checksum``)
      the sizes differ, or both sides have a comparable checksum (CRC32C, else
      MD5) and it differs; with no comparable checksum, as ``size-mtime``;
  ``update`` (``--update``)
      the source is newer; a newer destination object is kept even when the
      sizes differ;
  ``size`` (``--size-only``)
      the sizes differ.

  Comparisons read listings only, never an object's data.
* **skip**: present on both sides and unchanged.
* **delete** (``--delete``): present only at the destination. Deletes run last,
  after the final listing check has verified every copy, and not at all when
  any copy failed. ``--max-delete N`` plans everything before writing
  anything and refuses the whole sync, writing nothing, when more than ``N``
  objects would be deleted.

Filters (:mod:`skyhop.controlplane.filters`) apply to both sides: an object
they leave out is neither copied nor deleted.

A sync is an ordinary job of the control plane whose objects are the copies.
Without ``--max-delete`` copying overlaps the listing: the first copies are
written to the manifest and the gateways started while the merge goes on in a
background thread (the job is ``listing_complete`` only when the merge ends).
Skips are written to the job's CSV report as they are met, planned deletes to
a spool file beside the job, read back by :func:`delete_phase` from
:meth:`ControlPlane.finish`.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, TextIO

from skyhop.config import jobs_dir
from skyhop.controlplane import fanout, listing
from skyhop.controlplane.embedded import EmbeddedRunner, ProgressCallback
from skyhop.controlplane.filters import Filter
from skyhop.controlplane.report import CsvReport, report_paths, write_report
from skyhop.controlplane.service import BATCH, ControlPlane
from skyhop.controlplane.verify import _norm_crc
from skyhop.errors import NotFoundError, SkyhopError, StoreError, UsageError
from skyhop.models import (
    Chunk,
    CompareMode,
    Job,
    JobReport,
    JobState,
    ObjectEntry,
    ObjectReport,
    SyncSummary,
    TransferOptions,
    TransferRequest,
    new_job_id,
    plan_parts,
)
from skyhop.stores.base import ObjectInfo, ObjectStore, capabilities
from skyhop.uri import StoreURI

log = logging.getLogger("skyhop.sync")

Action = Literal["copy", "skip", "delete"]

HIDDEN = ".skyhop-"  # skyhop's own staging objects (multipart parts, markers)
FLUSH_SECONDS = 0.5  # a copy waits at most about this long before the manifest has it


@dataclass(slots=True)
class Planned:
    """One key's fate."""

    action: Action
    rel: str
    src: ObjectInfo | None
    dst: ObjectInfo | None
    reason: str
    method: str | None = None
    checksum: str | None = None

    @property
    def size(self) -> int:
        info = self.src if self.src is not None else self.dst
        return info.size if info is not None else 0


# ---------------------------------------------------------------- comparing


def comparable(src: dict[str, str], dst: dict[str, str]) -> tuple[str, str, str] | None:
    """(method, source value, destination value) of the best checksum both sides
    have, normalised to lowercase hex; None when they share none."""
    for method in ("crc32c", "md5"):
        a, b = src.get(method), dst.get(method)
        if a and b:
            if method == "crc32c":
                return method, _norm_crc(a), _norm_crc(b)
            return method, a.strip().lower(), b.strip().lower()
    return None


def compare(
    src: ObjectInfo, dst: ObjectInfo, mode: CompareMode, window: float
) -> tuple[bool, str, str, str | None]:
    """Whether ``src`` must be copied over ``dst``: (copy, reason, method, checksum)."""
    newer = src.mtime is not None and dst.mtime is not None and src.mtime > dst.mtime + window
    known = src.mtime is not None and dst.mtime is not None
    if mode == CompareMode.SIZE or (mode == CompareMode.UPDATE and not known):
        if src.size != dst.size:
            return True, "size differs", "size", None
        return False, "unchanged", "size", None
    if mode == CompareMode.UPDATE:
        if newer:
            return True, "newer at the source", "mtime", None
        return False, "not newer at the source", "mtime", None
    if src.size != dst.size:
        return True, "size differs", "size", None
    if mode == CompareMode.CHECKSUM:
        found = comparable(src.checksums, dst.checksums)
        if found is not None:
            method, a, b = found
            if a != b:
                return True, f"{method} differs", method, a
            return False, "unchanged", method, a
    if newer:
        return True, "newer at the source", "size+mtime", None
    return False, "unchanged", "size+mtime", None


# ---------------------------------------------------------------- merging


def as_prefix(key: str) -> str:
    """A key naming a directory or prefix, with its trailing slash."""
    return key if not key or key.endswith("/") else key + "/"


def _hidden(rel: str) -> bool:
    return HIDDEN in rel and any(part.startswith(HIDDEN) for part in rel.split("/"))


def relative(
    items: Iterator[ObjectInfo], prefix: str, where: str
) -> Iterator[tuple[bytes, str, ObjectInfo]]:
    """(sort key, relative key, info) of every object under ``prefix``, checking
    that the listing really comes in key order (a merge of unordered listings
    would copy and delete the wrong objects)."""
    last = b""
    for info in items:
        if not info.key.startswith(prefix):
            raise StoreError(f"the listing of {where} returned {info.key!r}, outside {prefix!r}")
        rel = info.key[len(prefix) :]
        if not rel or rel.endswith("/") or _hidden(rel):
            continue
        order = rel.encode("utf-8", "surrogateescape")
        if order <= last:
            raise StoreError(
                f"the listing of {where} is not in key order ({last.decode(errors='replace')!r} "
                f"before {rel!r}); refusing to sync"
            )
        last = order
        yield order, rel, info


def merge(
    src: Iterator[tuple[bytes, str, ObjectInfo]],
    dst: Iterator[tuple[bytes, str, ObjectInfo]],
) -> Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]:
    """Join two key-ordered listings: (relative key, source, destination)."""
    s = next(src, None)
    d = next(dst, None)
    while s is not None or d is not None:
        if d is None or (s is not None and s[0] < d[0]):
            assert s is not None
            yield s[1], s[2], None
            s = next(src, None)
        elif s is None or d[0] < s[0]:
            yield d[1], None, d[2]
            d = next(dst, None)
        else:
            yield s[1], s[2], d[2]
            s = next(src, None)
            d = next(dst, None)


@dataclass(slots=True)
class _Counts:
    """Running totals (plain attributes: updated once per key)."""

    to_copy: int = 0
    bytes_to_copy: int = 0
    skipped: int = 0
    bytes_skipped: int = 0
    excluded: int = 0
    to_delete: int = 0
    bytes_to_delete: int = 0


class SyncPlan:
    """The stream of actions of one sync, with running totals in :attr:`summary`."""

    def __init__(
        self,
        src: ObjectStore,
        dst: ObjectStore,
        request: TransferRequest,
        selected: Filter,
        *,
        list_workers: int = 8,
    ) -> None:
        self.src, self.dst = src, dst
        self.request = request
        self.options = request.options
        self.selected = selected
        self.src_uri, self.dst_uri = request.source_uri, request.destination_uri
        self.src_prefix = as_prefix(self.src_uri.key)
        self.dst_prefix = as_prefix(self.dst_uri.key)
        self.list_workers = list_workers
        self.counts = _Counts()
        self.parts = 0
        self._check_prefixes()
        src_items = fanout.list_parallel(src, self.src_prefix, workers=list_workers)
        first = next(src_items, None)
        while first is not None and (first.key.endswith("/") or _hidden(first.key)):
            first = next(src_items, None)
        if first is None:
            if self.src_uri.key and src.head(self.src_uri.key) is not None:
                raise UsageError(
                    f"{self.src_uri} is one object: `skyhop sync` keeps prefixes and "
                    "directories in step; use `skyhop cp` for one object"
                )
            raise NotFoundError(f"source not found: no objects under {self.src_uri}")
        self._src_items = _chain(first, src_items)

    def _check_prefixes(self) -> None:
        if self.src_uri.store_id != self.dst_uri.store_id:
            return
        a, b = self.src_prefix, self.dst_prefix
        if self.src_uri.scheme == "local":
            # the local store follows symlinks on the way to a key: compare where
            # both lead, or a link would let --delete remove the source's files
            a, b = _real_prefix(a), _real_prefix(b)
        if a.startswith(b) or b.startswith(a):
            raise UsageError(
                f"source {self.src_uri} and destination {self.dst_uri} overlap: "
                "one is inside the other"
            )

    def dst_key(self, rel: str) -> str:
        return self.dst_prefix + rel

    @property
    def summary(self) -> SyncSummary:
        """The totals so far."""
        return SyncSummary(dry_run=self.options.dry_run, **asdict(self.counts))

    def actions(self) -> Iterator[Planned]:
        """Every key's action, in key order, counted into :attr:`summary`."""
        options = self.options
        summary = self.counts
        selected = self.selected
        dst_items = fanout.list_parallel(self.dst, self.dst_prefix, workers=self.list_workers)
        pairs = merge(
            relative(self._src_items, self.src_prefix, str(self.src_uri)),
            relative(dst_items, self.dst_prefix, str(self.dst_uri)),
        )
        for rel, s, d in pairs:
            if s is not None:
                if not selected.accepts(rel, s):
                    summary.excluded += 1
                    continue
                if d is None:
                    planned = Planned("copy", rel, s, None, "missing at the destination")
                else:
                    copy, reason, method, checksum = compare(
                        s, d, options.compare, options.modify_window
                    )
                    planned = Planned(
                        "copy" if copy else "skip", rel, s, d, reason, method, checksum
                    )
            elif not selected.accepts(rel, d):  # type: ignore[arg-type]
                summary.excluded += 1
                continue
            elif options.delete:
                planned = Planned("delete", rel, None, d, "absent at the source")
            else:
                continue
            if planned.action == "copy":
                summary.to_copy += 1
                summary.bytes_to_copy += planned.size
                self.parts += plan_parts(
                    planned.size, options.chunk_size, options.multipart_threshold
                )[1]
            elif planned.action == "skip":
                summary.skipped += 1
                summary.bytes_skipped += planned.size
            else:
                summary.to_delete += 1
                summary.bytes_to_delete += planned.size
            yield planned


def _chain(first: ObjectInfo, rest: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
    yield first
    yield from rest


# ---------------------------------------------------------------- planned deletes


class DeleteSpool:
    """Planned deletes of a job, one JSON line each, beside the job's other files."""

    def __init__(self, job_id: str) -> None:
        self.path: Path = jobs_dir() / f"{job_id}.deletes.jsonl"
        self._fh: TextIO | None = None

    def add(self, key: str, size: int) -> None:
        if self._fh is None:
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._fh.write(json.dumps({"key": key, "size": size}) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def __iter__(self) -> Iterator[tuple[str, int]]:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                item = json.loads(line)
                yield item["key"], int(item["size"])

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def delete_phase(cp: ControlPlane, job: Job, rows: CsvReport, *, copies_ok: bool) -> Job:
    """Delete the job's planned deletes, after every copy was verified.

    Called by :meth:`ControlPlane.finish`. Does nothing (and says why in the
    job's sync summary) when a copy failed or more than ``--max-delete`` objects
    would go."""
    summary = (job.sync or SyncSummary()).model_copy()
    spool = DeleteSpool(job.job_id)
    if summary.to_delete == 0 or not spool.path.exists():
        spool.remove()
        return job
    options = job.request.options
    if not copies_ok:
        summary.deletes_skipped = (
            f"not every copy was verified; none of the {summary.to_delete} planned deletes ran"
        )
    elif options.max_delete is not None and summary.to_delete > options.max_delete:
        summary.deletes_skipped = (
            f"{summary.to_delete} deletes planned, more than --max-delete {options.max_delete}"
        )
    if summary.deletes_skipped:
        spool.remove()
        return cp.manifest.update_job(job.job_id, sync=summary)
    dst = cp.store(job.request.destination_uri)

    def delete(item: tuple[str, int]) -> tuple[str, int, str | None]:
        key, size = item
        try:
            dst.delete(key)
        except SkyhopError as exc:
            return key, size, str(exc)
        return key, size, None

    for key, size, error in fanout.ordered_map(delete, iter(spool), workers=8, window=64):
        if error is None:
            summary.deleted += 1
            rows.write(
                ObjectReport(key=key, size=size, action="deleted", reason="absent at the source")
            )
        else:
            summary.delete_failures += 1
            rows.write(ObjectReport(key=key, size=size, action="failed", error=f"delete: {error}"))
    spool.remove()
    return cp.manifest.update_job(job.job_id, sync=summary)


# ---------------------------------------------------------------- running a sync


_TICK = object()


class SyncJob:
    """One ``skyhop sync``: plan, dry-run or run it with the embedded runner."""

    def __init__(
        self, cp: ControlPlane, request: TransferRequest, *, list_workers: int = 8
    ) -> None:
        self.cp = cp
        self.request = request
        self.options: TransferOptions = request.options
        self.selected = Filter.of(self.options)
        src, dst = cp.preflight(request)
        self._check_destination(dst, request.destination_uri)
        self.plan = SyncPlan(src, dst, request, self.selected, list_workers=list_workers)
        self.job: Job | None = None
        self.feed_error: BaseException | None = None
        self._stop = threading.Event()
        self._entries: Iterator[object] | None = None
        self._csv: CsvReport | None = None
        self._spool: DeleteSpool | None = None
        self._next_object = 0
        self._next_chunk = 0

    @staticmethod
    def _check_destination(dst: ObjectStore, uri: StoreURI) -> None:
        is_dir = getattr(dst, "is_dir", None)
        if callable(is_dir) and uri.key and not is_dir(uri.key) and dst.head(uri.key) is not None:
            raise UsageError(f"destination {uri} is a file, not a directory")

    @property
    def summary(self) -> SyncSummary:
        return self.plan.summary

    # ------------------------------------------------------------ dry run

    def dry_run(self, out: TextIO | None, *, first: int = 20) -> JobReport:
        """Plan everything, move nothing: the CSV report lists every action, ``out``
        the first ``first`` of them and the totals with the cost estimate."""
        started = time.monotonic()
        job_id = new_job_id()
        shown = 0
        dst_prefix = self.plan.dst_prefix
        with CsvReport(job_id) as rows:
            for planned in self.plan.actions():
                rows.write_fields(
                    dst_prefix + planned.rel,
                    planned.size,
                    planned.action,
                    planned.checksum,
                    planned.method,
                    planned.reason,
                )
                if out is not None and shown < first:
                    out.write(_line(planned, self.plan.dst_key(planned.rel)) + "\n")
                    shown += 1
        summary = self.summary
        limit = self.options.max_delete
        if limit is not None and summary.to_delete > limit:
            summary.deletes_skipped = (
                f"{summary.to_delete} deletes planned, more than --max-delete {limit}: "
                "the sync would refuse and change nothing"
            )
        if out is not None and shown < summary.to_copy + summary.skipped + summary.to_delete:
            more = summary.to_copy + summary.skipped + summary.to_delete - shown
            out.write(f"... and {more} more (every action: {report_paths(job_id)[1]})\n")
        estimate = Job(
            job_id=job_id,
            request=self.request,
            objects_total=summary.to_copy,
            bytes_total=summary.bytes_to_copy,
            chunks_total=self.plan.parts,
        )
        plan = self.cp.planner(estimate) if self.cp.planner and summary.to_copy else None
        report = JobReport(
            job_id=job_id,
            state=JobState.SUCCEEDED,
            source=self.request.source,
            destination=self.request.destination,
            objects=0,
            objects_failed=0,
            bytes=0,
            seconds=round(time.monotonic() - started, 3),
            gbps=0.0,
            plan=plan,
            sync=summary,
            csv=str(report_paths(job_id)[1]),
        )
        write_report(report)
        return report

    # ------------------------------------------------------------ the job

    def begin(self) -> Job:
        """Create the job and plan its first copies (with ``--max-delete``, all of
        them, refusing before anything is written when too many deletes would go).
        The job comes back PLANNED; :meth:`run` moves it."""
        cp = self.cp
        job = Job(request=self.request, listing_complete=False, sync=self.summary)
        cp.manifest.create_job(job)
        self.job = job
        self._csv = CsvReport(job.job_id)
        self._spool = DeleteSpool(job.job_id)
        self._entries = self._stream()
        guarded = self.options.max_delete is not None
        try:
            done = self._ingest(until_first=not guarded, uploads=not guarded)
            if guarded:
                self._refuse_too_many_deletes()
                cp.start_uploads(job.job_id)
            if done:
                self._seal()
            job = cp.require(job.job_id)
            plan = cp.planner(job) if cp.planner and job.objects_total else None
            self.job = cp.manifest.update_job(job.job_id, state=JobState.PLANNED, plan=plan)
        except BaseException as exc:
            self._abandon(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            raise
        return self.job

    def _refuse_too_many_deletes(self) -> None:
        limit = self.options.max_delete
        if limit is not None and self.summary.to_delete > limit:
            raise UsageError(
                f"--max-delete {limit}: this sync would delete {self.summary.to_delete} objects "
                f"under {self.request.destination_uri}; refusing, nothing was copied or deleted"
            )

    def _abandon(self, reason: str) -> None:
        """Undo a job that failed while being planned: no uploads, no report, no spool."""
        assert self.job is not None
        if self._csv is not None:
            self._csv.close()
        if self._spool is not None:
            self._spool.remove()
        self.cp.abort_uploads(self.job.job_id)
        for path in report_paths(self.job.job_id):
            path.unlink(missing_ok=True)
        self.cp.manifest.update_job(self.job.job_id, state=JobState.FAILED, error=reason)

    def _stream(self) -> Iterator[object]:
        """Source infos of the copies (with metadata where the listing lacks it),
        and ``_TICK`` now and then while skips and deletes go by; skips go to the
        CSV report and deletes to the spool on the way."""
        assert self._csv is not None and self._spool is not None
        csv, spool = self._csv, self._spool
        dst_prefix = self.plan.dst_prefix

        def planned() -> Iterator[object]:
            last = time.monotonic()
            for n, item in enumerate(self.plan.actions()):
                if self._stop.is_set():
                    raise SkyhopError("sync stopped")
                if item.action == "copy":
                    yield item.src
                    last = time.monotonic()
                    continue
                if item.action == "skip":
                    csv.write_fields(
                        dst_prefix + item.rel,
                        item.size,
                        "skipped",
                        item.checksum,
                        item.method,
                        item.reason,
                    )
                else:
                    assert item.dst is not None
                    spool.add(item.dst.key, item.dst.size)
                if n % 256 == 0 and time.monotonic() - last > FLUSH_SECONDS / 2:
                    last = time.monotonic()
                    yield _TICK

        src = self.plan.src
        if capabilities(src).listing_metadata:
            return planned()

        def head(info: ObjectInfo) -> ObjectInfo:
            found = src.head(info.key)
            if found is None or found.etag != info.etag:
                return info  # gone or rewritten since listed: the pinned read will say so
            return info.model_copy(update={"meta": found.meta})

        return fanout.ordered_map(
            head,  # type: ignore[arg-type]
            planned(),
            needs=lambda i: isinstance(i, ObjectInfo) and i.meta is None,
        )

    def _ingest(self, *, until_first: bool, uploads: bool) -> bool:
        """Write planned copies to the manifest in batches; True when the plan is
        exhausted, False when returning after the first batch."""
        assert self.job is not None and self._entries is not None
        cp, job_id, options = self.cp, self.job.job_id, self.options
        dst = cp.store(self.request.destination_uri)
        objects: list[ObjectEntry] = []
        chunks: list[Chunk] = []
        since = time.monotonic()
        for item in self._entries:
            if isinstance(item, ObjectInfo):
                rel = item.key[len(self.plan.src_prefix) :]
                entry, parts = listing.make_entry(
                    job_id,
                    self._next_object,
                    self._next_chunk,
                    item,
                    self.plan.dst_key(rel),
                    options,
                )
                self._next_object += 1
                self._next_chunk += len(parts)
                if entry.multipart and uploads:
                    entry.upload_id = cp._multipart(dst).create_multipart(
                        entry.dst_key, meta=entry.meta
                    )
                if not objects:
                    since = time.monotonic()
                objects.append(entry)
                chunks.extend(parts)
            if objects and (
                until_first or len(chunks) >= BATCH or time.monotonic() - since >= FLUSH_SECONDS
            ):
                self._flush(objects, chunks)
                if until_first:
                    return False
        self._flush(objects, chunks)
        return True

    def _flush(self, objects: list[ObjectEntry], chunks: list[Chunk]) -> None:
        assert self.job is not None
        if objects:
            self.cp.manifest.put_objects(objects)
        if chunks:
            self.cp.manifest.put_chunks(chunks)
        objects.clear()
        chunks.clear()
        self._totals()

    def _totals(self, **extra: object) -> Job:
        assert self.job is not None
        if self._csv is not None:
            self._csv.flush()
        return self.cp.manifest.update_job(
            self.job.job_id,
            objects_total=self._next_object,
            bytes_total=self.summary.bytes_to_copy,
            chunks_total=self._next_chunk,
            sync=self.summary,
            **extra,
        )

    def _seal(self) -> None:
        """The plan is exhausted: final totals, and the job may finish."""
        if self._csv is not None:
            self._csv.close()
            self._csv = None
        if self._spool is not None:
            self._spool.close()
        self._totals(listing_complete=True)

    def feed(self) -> None:
        """Plan the rest (in a background thread while the gateways copy)."""
        try:
            if not self._ingest(until_first=False, uploads=True):  # pragma: no cover
                raise AssertionError("ingest stopped early")
            self._seal()
        except BaseException as exc:  # noqa: BLE001 - handed to the runner
            self.feed_error = exc

    def run(self, *, on_progress: ProgressCallback | None = None) -> JobReport:
        """Copy (overlapping the rest of the listing), verify, delete, report."""
        job = self.job
        assert job is not None
        if job.listing_complete and job.objects_total == 0:
            self.cp.manifest.update_job(job.job_id, state=JobState.RUNNING)
            return self.cp.finish(job.job_id)
        feeder = None
        if not job.listing_complete:
            feeder = threading.Thread(target=self.feed, name="sync-plan", daemon=True)
            feeder.start()
        runner = _Runner(self.cp, self, on_progress=on_progress)
        try:
            return runner.run(job.job_id)
        except BaseException as exc:
            # A sync is not resumed: running it again skips what was copied. Its
            # unfinished uploads go now, not with some later resume.
            self._stop.set()
            if feeder is not None:
                feeder.join(timeout=30)
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.cp.abort_uploads(job.job_id)
            if self._spool is not None:
                self._spool.remove()
            self.cp.manifest.update_job(
                job.job_id, state=JobState.FAILED, error=f"{reason}; run the same sync again"
            )
            raise
        finally:
            self._stop.set()
            if feeder is not None:
                feeder.join(timeout=30)


class _Runner(EmbeddedRunner):
    """The embedded runner, failing the job when the background planning fails."""

    def __init__(
        self, cp: ControlPlane, sync: SyncJob, *, on_progress: ProgressCallback | None
    ) -> None:
        super().__init__(cp, on_progress=on_progress)
        self.sync = sync

    def _check_alive(self, job: Job, pumps: list) -> None:  # type: ignore[type-arg]
        super()._check_alive(job, pumps)
        if self.sync.feed_error is not None:
            error = self.sync.feed_error
            raise StoreError(
                f"listing failed: {str(error).splitlines()[0] if str(error) else error!r}"
            )


def _real_prefix(prefix: str) -> str:
    """A local key prefix (a directory) with every symlink on its path resolved."""
    real = os.path.realpath("/" + prefix)
    return real if real.endswith("/") else real + "/"


def _line(planned: Planned, key: str) -> str:
    info = planned.src if planned.src is not None else planned.dst
    size = info.size if info is not None else 0
    return f"{planned.action:<6} {key}  ({size} bytes, {planned.reason})"


def cp_dry_run(
    cp: ControlPlane, request: TransferRequest, out: TextIO | None, *, first: int = 20
) -> JobReport:
    """``skyhop cp --dry-run``: what a copy would copy, with totals and the cost estimate."""
    started = time.monotonic()
    src, dst = cp.preflight(request)
    src_uri, dst_uri = request.source_uri, request.destination_uri
    dst_is_dir = bool(getattr(dst, "is_dir", lambda _k: False)(dst_uri.key))
    options = request.options
    selection, objects = listing.select(src, src_uri, dst_uri, options, dst_is_dir)
    selected = Filter.of(options)
    summary = SyncSummary(dry_run=True)
    parts = 0
    job_id = new_job_id()
    with CsvReport(job_id) as rows:
        for info in objects:
            if selection.single:
                if not selected.accepts(posixpath.basename(info.key), info):
                    summary.excluded += 1
                    continue
                key = selection.single_dst_key or ""
            else:
                rel = info.key[len(selection.src_prefix) :]
                if not rel or rel.endswith("/"):
                    continue
                if not selected.accepts(rel, info):
                    summary.excluded += 1
                    continue
                key = selection.dst_prefix + rel
            planned = Planned("copy", posixpath.basename(key), info, None, "selected")
            rows.write(ObjectReport(key=key, size=info.size, action="copy", reason="selected"))
            if out is not None and summary.to_copy < first:
                out.write(_line(planned, key) + "\n")
            summary.to_copy += 1
            summary.bytes_to_copy += info.size
            parts += plan_parts(info.size, options.chunk_size, options.multipart_threshold)[1]
    if out is not None and summary.to_copy > first:
        out.write(
            f"... and {summary.to_copy - first} more (every action: {report_paths(job_id)[1]})\n"
        )
    estimate = Job(
        job_id=job_id,
        request=request,
        objects_total=summary.to_copy,
        bytes_total=summary.bytes_to_copy,
        chunks_total=parts,
    )
    plan = cp.planner(estimate) if cp.planner and summary.to_copy else None
    report = JobReport(
        job_id=job_id,
        state=JobState.SUCCEEDED,
        source=request.source,
        destination=request.destination,
        objects=0,
        objects_failed=0,
        bytes=0,
        seconds=round(time.monotonic() - started, 3),
        gbps=0.0,
        plan=plan,
        sync=summary,
        csv=str(report_paths(job_id)[1]),
    )
    write_report(report)
    return report
