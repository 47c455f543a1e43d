"""Job reports: a JSON summary and a per-object CSV, written under the state directory.

Every job writes ``$SKYHOP_HOME/reports/JOB_ID.json`` and ``JOB_ID.csv``.

The JSON file is a :class:`~skyhop.models.JobReport` (its JSON Schema is
``schemas/job_report.v1.schema.json``): state, objects and bytes copied and
verified, seconds, Gbit/s, chunks re-sent, the destination listing check, the
route plan with its cost estimate, one line per failure naming the object and
the reason, and for a sync the ``sync`` block (planned and done copies, skips,
deletes, and why planned deletes did not run if they did not).

The CSV file has one row per object, with the header::

    key,size,action,checksum,checksum_method,seconds,error,reason

``key``
    the destination key (for a skipped object, the key it already has there).
``action``
    ``copied``, ``skipped``, ``deleted`` or ``failed``; a dry run writes what
    would happen: ``copy``, ``skip``, ``delete``.
``checksum``, ``checksum_method``
    for a copy, the object's CRC32C (hex, combined from its chunks) and how it
    was checked against the source store's own checksum (``crc32c``, ``md5``,
    ``s3-multipart-etag``; ``crc32c-transfer`` when the source has none, end to
    end through the gateways; see :mod:`skyhop.controlplane.verify`; the
    destination listing check's methods are counted in the JSON report's
    ``verification.checksum_methods``); for a skip, how the
    two sides were compared (``md5``, ``crc32c``, ``size+mtime``, ``mtime``,
    ``size``) and the source's checksum, if one was compared.
``seconds``
    from the object's first dispatch to its verification.
``error``
    for ``failed`` rows, what went wrong, e.g. that the source changed during the copy.
``reason``
    why the object was (or would be) copied, skipped or deleted: ``missing at
    the destination``, ``size differs``, ``newer at the source``, ``md5 differs``,
    ``unchanged``, ``absent at the source``.

Rows are written as each phase runs (skips while the listings are merged,
copies when the job is verified, deletes last), so the file is streamed, never
held in memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from skyhop.config import private_opener, reports_dir
from skyhop.models import (
    DIRECT,
    ChunkState,
    Encryption,
    Job,
    JobReport,
    ObjectReport,
    ObjectState,
    VerificationSummary,
    utcnow,
)
from skyhop.state.base import ManifestStore


def build_report(
    manifest: ManifestStore,
    job: Job,
    summary: VerificationSummary | None,
    *,
    started: float | None = None,
) -> JobReport:
    """Summarise a job from the manifest."""
    progress = manifest.progress(job.job_id)
    seconds = (utcnow() - job.created_at).total_seconds()
    if started is not None:
        import time

        seconds = time.monotonic() - started
    failures = [
        f"{o.src_key}: {o.error or 'failed'}"
        for o in manifest.iter_objects(job.job_id, {ObjectState.FAILED})
    ]
    if summary is not None:
        failures += [f"missing at destination: {k}" for k in summary.missing]
        failures += [f"size mismatch: {k}" for k in summary.size_mismatches]
        failures += [f"checksum mismatch: {k}" for k in summary.checksum_mismatches]
    resent = after_failure = 0
    for c in manifest.iter_chunks(job.job_id, {ChunkState.VERIFIED, ChunkState.FAILED}):
        extra = max(0, c.attempts - 1)
        resent += extra
        after_failure += min(c.failures, extra)
    if job.sync is not None and job.sync.deletes_skipped:
        failures.append(f"deletes not run: {job.sync.deletes_skipped}")
    direct = job.runtime is not None and job.runtime.compute == DIRECT
    src_scheme, dst_scheme = job.request.source_uri.scheme, job.request.destination_uri.scheme
    # only a direct copy between buckets of one cloud may have been done by the store
    same_cloud = direct and src_scheme == dst_scheme != "local"
    server_side = copied = 0
    for o in manifest.iter_objects(job.job_id, {ObjectState.VERIFIED}):
        copied += o.size  # parts of an object that did not complete are not "copied"
        server_side += bool(same_cloud and o.server_side)
    return JobReport(
        job_id=job.job_id,
        state=job.state,
        source=job.request.source,
        destination=job.request.destination,
        objects=progress.objects_verified,
        objects_failed=progress.objects_failed,
        bytes=copied,
        seconds=round(seconds, 3),
        gbps=round(progress.bytes_verified * 8 / seconds / 1e9, 4) if seconds > 0 else 0.0,
        chunks_resent=resent,
        chunks_resent_after_failure=after_failure,
        verification=summary,
        plan=job.plan,
        failures=failures,
        sync=job.sync,
        csv=str(report_paths(job.job_id)[1]),
        data_path="direct" if direct else "gateways",
        # the direct path has no hop between machines: nothing to seal
        encryption=Encryption.NONE if direct else job.request.options.encryption,
        server_side_copies=server_side,
    )


def iter_object_reports(manifest: ManifestStore, job: Job) -> Iterator[ObjectReport]:
    """One row per object of the manifest, streamed."""
    for entry in manifest.iter_objects(job.job_id):
        verified = entry.state == ObjectState.VERIFIED
        yield ObjectReport(
            key=entry.dst_key,
            size=entry.size,
            action="copied" if verified else "failed",
            checksum=entry.crc32c,
            checksum_method=entry.checksum_method,
            seconds=round(entry.seconds, 3) if entry.seconds is not None else None,
            error=None if verified else (entry.error or "not verified"),
        )


CSV_COLUMNS = (
    "key",
    "size",
    "action",
    "checksum",
    "checksum_method",
    "seconds",
    "error",
    "reason",
)


class CsvReport:
    """Appends rows to a job's CSV report (writing the header into a new file)."""

    def __init__(self, job_id: str) -> None:
        self.path = report_paths(job_id)[1]
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(  # noqa: SIM115 - held open across calls, closed by close()
            self.path, "a", newline="", encoding="utf-8", opener=private_opener
        )
        self._writer = csv.writer(self._fh)
        self.rows = 0
        if new:
            self._writer.writerow(CSV_COLUMNS)

    def write(self, row: ObjectReport) -> None:
        self._writer.writerow(
            [
                row.key,
                row.size,
                row.action,
                row.checksum or "",
                row.checksum_method or "",
                row.seconds if row.seconds is not None else "",
                row.error or "",
                row.reason or "",
            ]
        )
        self.rows += 1

    def write_fields(
        self,
        key: str,
        size: int,
        action: str,
        checksum: str | None = None,
        checksum_method: str | None = None,
        reason: str | None = None,
    ) -> None:
        """A row without building an :class:`ObjectReport` (the planner's hot path)."""
        self._writer.writerow(
            [key, size, action, checksum or "", checksum_method or "", "", "", reason or ""]
        )
        self.rows += 1

    def write_all(self, rows: Iterable[ObjectReport]) -> int:
        n = 0
        for row in rows:
            self.write(row)
            n += 1
        return n

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> CsvReport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def report_paths(job_id: str) -> tuple[Path, Path]:
    base = reports_dir()
    return base / f"{job_id}.json", base / f"{job_id}.csv"


def write_report(report: JobReport, rows: list[ObjectReport] | None = None) -> Path:
    """Write the JSON summary (and the per-object CSV when rows are given)."""
    json_path, csv_path = report_paths(report.job_id)
    tmp = json_path.with_suffix(".json.tmp")
    with open(tmp, "w", encoding="utf-8", opener=private_opener) as fh:
        fh.write(json.dumps(report.model_dump(mode="json"), indent=2))
    tmp.replace(json_path)
    if rows is not None:
        csv_path.unlink(missing_ok=True)
        with CsvReport(report.job_id) as out:
            out.write_all(rows)
    return json_path
