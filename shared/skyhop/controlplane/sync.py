"""``skyhop sync``: keep a destination prefix in step with a source prefix.

Both sides are listed (in parallel over prefixes, see
:mod:`skyhop.controlplane.fanout`) and merged in key order, one object of each
side at a time, so memory stays flat for millions of keys. Every key becomes
one action:

* **copy**: missing at the destination, or differing as ``compare`` says
  (:class:`~skyhop.models.CompareMode`):

  ``size-mtime`` (default)
      the sizes differ, or the modification times differ. Every store keeps
      the source's modification time with the copy (a file's own mtime; user
      metadata ``mtime`` on S3, GCS and Azure, as rclone writes it; see
      :mod:`skyhop.stores.mtime`), so the two are compared for *equality*
      within the precision kept: an edit a moment after the last sync, or a
      file replaced by an older one (``cp -p``, ``tar x``), is copied; a file
      dated in the future is copied once. Only a destination object without a
      kept time (written by something else) falls back to "the source is
      newer than the destination's write time", by more than 1 s.
      ``modify_window`` overrides either tolerance. On S3 the kept time is in
      metadata a listing does not carry: objects of the same size on both
      sides cost a HEAD each (as with rclone);
  ``checksum`` (``--checksum``)
      the sizes differ, or both sides have a comparable checksum (CRC32C, else
      MD5) and it differs; with no comparable checksum, as ``size-mtime``;
  ``update`` (``--update``)
      the source is newer (than the kept time, else the write time); a newer
      destination object is kept even when the sizes differ;
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
a spool file beside the job, read back by
:func:`~skyhop.controlplane.deletes.delete_phase` from :meth:`ControlPlane.finish`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal, TextIO

from skyhop.controlplane import dryrun, fanout, listing
from skyhop.controlplane.deletes import DeleteSpool
from skyhop.controlplane.direct import DirectRunner, takes_direct_path
from skyhop.controlplane.embedded import EmbeddedRunner, ProgressCallback, _Pump
from skyhop.controlplane.filters import Filter
from skyhop.controlplane.keyorder import as_prefix, merge, relative
from skyhop.controlplane.keyorder import hidden as _hidden
from skyhop.controlplane.report import CsvReport, build_report, report_paths
from skyhop.controlplane.service import BATCH, ControlPlane
from skyhop.controlplane.verify import _norm_crc
from skyhop.errors import NotFoundError, SkyhopError, StoreError, UsageError, first_line
from skyhop.models import (
    Chunk,
    CompareMode,
    Job,
    JobReport,
    JobState,
    ObjectEntry,
    ObjectState,
    SyncSummary,
    TransferOptions,
    TransferRequest,
    new_job_id,
    plan_parts,
    short_report,
)
from skyhop.stores.base import ObjectInfo, ObjectStore, capabilities, is_dir
from skyhop.uri import StoreURI

log = logging.getLogger("skyhop.sync")

Action = Literal["copy", "skip", "delete"]

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


#: the tolerance against a destination's write time (S3 and Azure keep whole seconds)
WRITE_TIME_WINDOW = 1.0


def compare(
    src: ObjectInfo, dst: ObjectInfo, mode: CompareMode, window: float | None = None
) -> tuple[bool, str, str, str | None]:
    """Whether ``src`` must be copied over ``dst``: (copy, reason, method, checksum).

    ``dst.mtime_precision`` says whether the destination kept a modification
    time (then times are compared for equality within the coarser precision of
    the two, or ``window``) or has only its write time (then the source must be
    newer than it by ``window``, 1 s by default)."""
    src_mtime, dst_mtime = src.mtime, dst.mtime
    known = src_mtime is not None and dst_mtime is not None
    kept = dst.mtime_precision is not None
    if window is None:
        window = (
            max(dst.mtime_precision or 0.0, src.mtime_precision or 0.0)
            if kept
            else WRITE_TIME_WINDOW
        )
    newer = differs = False
    if src_mtime is not None and dst_mtime is not None:
        newer = src_mtime > dst_mtime + window
        differs = abs(src_mtime - dst_mtime) > window
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
    if kept and differs:
        return True, "modification time differs", "size+mtime", None
    if not kept and newer:
        return True, "newer at the source", "size+mtime", None
    return False, "unchanged", "size+mtime", None


def needs_head(src: ObjectInfo, dst: ObjectInfo, mode: CompareMode) -> bool:
    """Whether comparing ``src`` with ``dst`` needs the modification times a HEAD
    tells (same size, compared by time)."""
    if mode == CompareMode.SIZE:
        return False
    if mode != CompareMode.UPDATE and src.size != dst.size:
        return False
    return not (mode == CompareMode.CHECKSUM and comparable(src.checksums, dst.checksums))


# ---------------------------------------------------------------- merging


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
        pairs: Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]] = merge(
            relative(self._src_items, self.src_prefix, str(self.src_uri)),
            relative(dst_items, self.dst_prefix, str(self.dst_uri)),
        )
        pairs = self._with_kept_times(pairs)
        for rel, s, d in pairs:
            if s is not None and s.error is not None:
                # what could not be read fails alone (filters cannot tell); with it in
                # the job, no delete runs, so nothing below it is taken for gone
                planned = Planned("copy", rel, s, d, f"cannot be read: {s.error}")
            elif s is not None:
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
            else:
                assert d is not None  # merge yields each key from one side at least
                if not selected.accepts(rel, d):
                    summary.excluded += 1
                    continue
                if not options.delete:
                    continue
                planned = Planned("delete", rel, None, d, "absent at the source")
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

    def _with_kept_times(
        self, pairs: Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]
    ) -> Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]:
        """The merged pairs, with a HEAD (in parallel, order kept) of each side whose
        listing does not carry the modification time kept in metadata (S3), for
        the pairs a comparison by time will decide."""
        heads = [
            store if not capabilities(store).listing_metadata else None
            for store in (self.src, self.dst)
        ]
        if heads == [None, None]:
            yield from pairs
            return
        mode = self.options.compare

        def needed(pair: tuple[str, ObjectInfo | None, ObjectInfo | None]) -> bool:
            _, s, d = pair
            return s is not None and d is not None and needs_head(s, d, mode)

        def head(
            pair: tuple[str, ObjectInfo | None, ObjectInfo | None],
        ) -> tuple[str, ObjectInfo | None, ObjectInfo | None]:
            rel, s, d = pair
            assert s is not None and d is not None
            src_store, dst_store = heads
            if src_store is not None:
                s = fanout.refreshed(src_store, s)
            if dst_store is not None:
                d = fanout.refreshed(dst_store, d)
            return rel, s, d

        yield from fanout.ordered_map(head, pairs, needs=needed)


def _chain(first: ObjectInfo, rest: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
    yield first
    yield from rest


# ---------------------------------------------------------------- running a sync


_TICK = object()


class SyncJob:
    """One ``skyhop sync``: plan, dry-run or run it with the embedded runner."""

    def __init__(
        self,
        cp: ControlPlane,
        request: TransferRequest,
        *,
        list_workers: int = 8,
        spool_deletes: bool = True,
    ) -> None:
        self.cp = cp
        self.spool_deletes = spool_deletes
        src, dst = cp.preflight(request)
        request = cp.for_destination(request)
        self.request = request
        self.options: TransferOptions = request.options
        self.selected = Filter.of(self.options)
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
        self._unflushed: list[ObjectEntry] = []  # uploads started, not in the manifest yet

    def _abort_unflushed(self) -> None:
        """Abort the uploads of objects planned but not yet written to the manifest
        (``abort_uploads`` only knows those it has): no staging is left behind."""
        dst = self.cp.store(self.request.destination_uri)
        for entry in self._unflushed:
            if entry.upload_id:
                try:
                    self.cp._multipart(dst).abort_multipart(entry.dst_key, entry.upload_id)
                except SkyhopError as exc:
                    log.warning("abort of %s failed: %s", entry.dst_key, exc)
        self._unflushed.clear()

    @staticmethod
    def _check_destination(dst: ObjectStore, uri: StoreURI) -> None:
        directories = capabilities(dst).directories
        if directories and uri.key and not is_dir(dst, uri.key) and dst.head(uri.key) is not None:
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
        if out is not None:
            out.write(dryrun.heading(self.request) + "\n")
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
                    out.write(
                        dryrun.line(
                            "error"
                            if planned.src is not None and planned.src.error
                            else planned.action,
                            planned.rel,
                            planned.size,
                            planned.reason,
                        )
                        + "\n"
                    )
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
        return dryrun.report(
            self.cp, self.request, job_id, summary, parts=self.plan.parts, started=started
        )

    # ------------------------------------------------------------ the job

    def begin(self, *, whole: bool = False) -> Job:
        """Create the job and plan its first copies (with ``--max-delete``, or
        ``whole``, all of them; with ``--max-delete`` refusing before anything is
        written when too many deletes would go). The job comes back PLANNED;
        :meth:`run` moves it (or, ``whole``, any control plane's ``start``)."""
        cp = self.cp
        job = Job(request=self.request, listing_complete=False, sync=self.summary)
        cp.manifest.create_job(job)
        self.job = job
        self._csv = CsvReport(job.job_id)
        self._spool = DeleteSpool(job.job_id) if self.spool_deletes else None
        self._entries = self._stream()
        guarded = self.options.max_delete is not None
        try:
            done = self._ingest(until_first=not (guarded or whole), uploads=not guarded)
            if guarded:
                self._refuse_too_many_deletes()
                cp.start_uploads(job.job_id)
            if done:
                self._seal()
            job = cp.require(job.job_id)
            plan = cp.planner(job) if cp.planner and job.objects_total else None
            if plan is not None and not job.listing_complete:
                plan.notes.append(
                    f"estimated for the first {job.objects_total} object(s) listed: the "
                    "listing goes on while they are copied; the report has the whole sync's"
                )
            self.job = cp.manifest.update_job(job.job_id, state=JobState.PLANNED, plan=plan)
        except BaseException as exc:
            self._abandon(first_line(exc, limit=500))
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
        self._abort_unflushed()
        for path in report_paths(self.job.job_id):
            path.unlink(missing_ok=True)
        self.cp.manifest.update_job(self.job.job_id, state=JobState.FAILED, error=reason)

    def _stream(self) -> Iterator[object]:
        """Source infos of the copies (with metadata where the listing lacks it),
        and ``_TICK`` now and then while skips and deletes go by; skips go to the
        CSV report and deletes to the spool on the way."""
        assert self._csv is not None
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
                elif spool is not None:  # else the delete phase plans them again
                    assert item.dst is not None
                    spool.add(item.dst.key, item.dst.size)
                if n % 256 == 0 and time.monotonic() - last > FLUSH_SECONDS / 2:
                    last = time.monotonic()
                    yield _TICK

        src = self.plan.src
        if capabilities(src).listing_metadata:
            return planned()

        def head(item: object) -> object:
            # ``needs`` sends only infos without metadata here; a tick stays a tick
            return fanout.refreshed(src, item) if isinstance(item, ObjectInfo) else item

        return fanout.ordered_map(
            head,
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
                started = (
                    entry.multipart
                    and uploads
                    and entry.state == ObjectState.PENDING
                    and cp.start_upload(dst, entry, parts) is not None
                )
                if started:
                    self._unflushed.append(entry)  # aborted if the sync is abandoned
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
        self._unflushed.clear()  # in the manifest now: abort_uploads finds them
        self._totals()

    def _totals(self, **extra: Any) -> Job:
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
        job = self._totals(listing_complete=True)
        if self.cp.planner is not None and job.objects_total and job.plan is not None:
            # the estimate shown at the start covered the first batch: redo it whole
            plan = self.cp.planner(job)
            self.cp.manifest.update_job(job.job_id, plan=plan)

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
        runner: EmbeddedRunner | DirectRunner = (
            _DirectRunner(self.cp, self, on_progress=on_progress)
            if takes_direct_path(job)
            else _Runner(self.cp, self, on_progress=on_progress)
        )
        try:
            return runner.run(job.job_id)
        except BaseException as exc:
            # A sync is not resumed: running it again skips what was copied. Its
            # unfinished uploads go now, not with some later resume.
            self._stop.set()
            if feeder is not None:
                feeder.join(timeout=30)
            reason = first_line(exc, limit=500)
            self.cp.abort_uploads(job.job_id)
            self._abort_unflushed()
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

    def _check_alive(self, job: Job, pumps: list[_Pump]) -> None:
        super()._check_alive(job, pumps)
        if self.sync.feed_error is not None:
            error = self.sync.feed_error
            raise StoreError(f"listing failed: {first_line(error, limit=500)}")


class _DirectRunner(DirectRunner):
    """The direct runner, failing the job when the background planning fails."""

    def __init__(
        self, cp: ControlPlane, sync: SyncJob, *, on_progress: ProgressCallback | None
    ) -> None:
        super().__init__(cp, on_progress=on_progress)
        self.sync = sync

    def check(self, job: Job) -> None:
        error = self.sync.feed_error
        if error is not None:
            raise StoreError(f"listing failed: {first_line(error, limit=500)}")


def submit_sync(cp: ControlPlane, request: TransferRequest) -> Job:
    """A sync request from a queue (``skyhop sync --on NAME``): listed, compared and
    planned whole in this call, and returned PLANNED for :meth:`ControlPlane.start`,
    which any later invocation may call. Its deletes are not spooled here (the
    function that finishes the job may run elsewhere): the delete phase plans them
    again from fresh listings, after every copy is verified."""
    sync = SyncJob(cp, request, spool_deletes=False)
    try:
        return sync.begin(whole=True)
    except SkyhopError as exc:
        if sync.job is not None:  # refused while planned (--max-delete): its sender learns why
            failed = cp.require(sync.job.job_id)
            report = build_report(cp.manifest, failed, None)
            report.failures.insert(0, f"refused: {first_line(exc, limit=500)}")
            cp.manifest.update_job(failed.job_id, report=short_report(report))
        raise


def _real_prefix(prefix: str) -> str:
    """A local key prefix (a directory) with every symlink on its path resolved."""
    real = os.path.realpath("/" + prefix)
    return real if real.endswith("/") else real + "/"
