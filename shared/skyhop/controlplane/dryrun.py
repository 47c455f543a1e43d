"""Dry runs: what ``skyhop cp --dry-run`` and ``skyhop sync --dry-run`` would do.

Nothing is written but the job's CSV report (every action) and its JSON report
(the totals, with the planner's cost estimate); :meth:`SyncJob.dry_run
<skyhop.controlplane.sync.SyncJob.dry_run>` plans a sync's actions and
:func:`cp_dry_run` a copy's, and both end in :func:`report`.
"""

from __future__ import annotations

import posixpath
import time
from typing import TextIO

from skyhop.controlplane import listing
from skyhop.controlplane.filters import Filter
from skyhop.controlplane.report import CsvReport, report_paths, write_report
from skyhop.controlplane.service import ControlPlane
from skyhop.models import (
    Job,
    JobReport,
    JobState,
    ObjectReport,
    SyncSummary,
    TransferRequest,
    new_job_id,
    plan_parts,
)
from skyhop.stores.base import is_dir
from skyhop.terminal import printable


def line(action: str, key: str, size: int, reason: str) -> str:
    """One action as the dry run prints it (``key`` as the user reads it: relative
    to the destination named, see :func:`shown`; unprintable characters escaped)."""
    return printable(f"{action:<6} {key}  ({size} bytes, {reason})")


def heading(request: TransferRequest) -> str:
    """The line above a dry run's actions, naming what their keys are relative to."""
    return f"dry run: {request.source} -> {request.destination} (keys below it)"


def shown(key: str, dst_prefix: str) -> str:
    """A destination key relative to the destination prefix (``tmp/x/d/f23`` under
    ``tmp/x/`` is ``d/f23``); a key elsewhere (one object copied to a name) as is."""
    if dst_prefix and key.startswith(dst_prefix) and len(key) > len(dst_prefix):
        return key[len(dst_prefix) :]
    return key


def report(
    cp: ControlPlane,
    request: TransferRequest,
    job_id: str,
    summary: SyncSummary,
    *,
    parts: int,
    started: float,
) -> JobReport:
    """The dry run's report, with the planner's estimate of the copies, written
    beside the job's CSV report."""
    estimate = Job(
        job_id=job_id,
        request=request,
        objects_total=summary.to_copy,
        bytes_total=summary.bytes_to_copy,
        chunks_total=parts,
    )
    plan = cp.planner(estimate) if cp.planner and summary.to_copy else None
    result = JobReport(
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
    write_report(result)
    return result


def cp_dry_run(
    cp: ControlPlane, request: TransferRequest, out: TextIO | None, *, first: int = 20
) -> JobReport:
    """``skyhop cp --dry-run``: what a copy would copy, with totals and the cost estimate."""
    started = time.monotonic()
    src, dst = cp.preflight(request)
    request = cp.for_destination(request)
    src_uri, dst_uri = request.source_uri, request.destination_uri
    dst_is_dir = is_dir(dst, dst_uri.key)
    options = request.options
    selection, objects = listing.select(src, src_uri, dst_uri, options, dst_is_dir)
    selected = Filter.of(options)
    summary = SyncSummary(dry_run=True)
    parts = 0
    job_id = new_job_id()
    base = dst_uri.key if dst_uri.is_dir_like() or dst_is_dir else posixpath.dirname(dst_uri.key)
    base = base if not base or base.endswith("/") else base + "/"
    if out is not None:
        out.write(heading(request) + "\n")
    with CsvReport(job_id) as rows:
        for info in objects:
            if selection.single:
                if not selected.accepts(posixpath.basename(info.key), info):
                    summary.excluded += 1
                    continue
                key = selection.single_dst_key or ""
            else:
                rel = info.key[len(selection.src_prefix) :]
                if info.error is not None and rel:
                    # it would fail alone: said here, not counted as a copy
                    if out is not None:
                        out.write(line("error", rel, 0, info.error) + "\n")
                    continue
                if not rel or rel.endswith("/"):
                    continue
                if not selected.accepts(rel, info):
                    summary.excluded += 1
                    continue
                key = selection.dst_prefix + rel
            rows.write(ObjectReport(key=key, size=info.size, action="copy", reason="selected"))
            if out is not None and summary.to_copy < first:
                out.write(line("copy", shown(key, base), info.size, "selected") + "\n")
            summary.to_copy += 1
            summary.bytes_to_copy += info.size
            parts += plan_parts(info.size, options.chunk_size, options.multipart_threshold)[1]
    if out is not None and summary.to_copy > first:
        out.write(
            f"... and {summary.to_copy - first} more (every action: {report_paths(job_id)[1]})\n"
        )
    return report(cp, request, job_id, summary, parts=parts, started=started)
