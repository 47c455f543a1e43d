"""Job reports: a JSON summary and a per-object CSV, written under the state directory."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from skyhop.config import reports_dir
from skyhop.models import (
    ChunkState,
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
    resent = sum(
        max(0, c.attempts - 1)
        for c in manifest.iter_chunks(job.job_id, {ChunkState.VERIFIED, ChunkState.FAILED})
    )
    return JobReport(
        job_id=job.job_id,
        state=job.state,
        source=job.request.source,
        destination=job.request.destination,
        objects=progress.objects_verified,
        objects_failed=progress.objects_failed,
        bytes=progress.bytes_verified,
        seconds=round(seconds, 3),
        gbps=round(progress.bytes_verified * 8 / seconds / 1e9, 4) if seconds > 0 else 0.0,
        chunks_resent=resent,
        verification=summary,
        plan=job.plan,
        failures=failures,
    )


def object_reports(manifest: ManifestStore, job: Job) -> list[ObjectReport]:
    """One row per object."""
    rows = []
    for entry in manifest.iter_objects(job.job_id):
        rows.append(
            ObjectReport(
                key=entry.dst_key,
                size=entry.size,
                action="copied" if entry.state == ObjectState.VERIFIED else "failed",
                checksum=entry.crc32c,
                checksum_method=entry.checksum_method,
                error=entry.error,
            )
        )
    return rows


def report_paths(job_id: str) -> tuple[Path, Path]:
    base = reports_dir()
    return base / f"{job_id}.json", base / f"{job_id}.csv"


def write_report(report: JobReport, rows: list[ObjectReport] | None = None) -> Path:
    """Write the JSON summary (and the per-object CSV when rows are given)."""
    json_path, csv_path = report_paths(report.job_id)
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report.model_dump(mode="json"), indent=2))
    tmp.replace(json_path)
    if rows is not None:
        with open(csv_path, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(
                ["key", "size", "action", "checksum", "checksum_method", "seconds", "error"]
            )
            for row in rows:
                writer.writerow(
                    [
                        row.key,
                        row.size,
                        row.action,
                        row.checksum or "",
                        row.checksum_method or "",
                        row.seconds if row.seconds is not None else "",
                        row.error or "",
                    ]
                )
    return json_path
