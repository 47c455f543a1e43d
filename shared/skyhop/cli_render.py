"""What ``skyhop`` prints: plans, progress bars, reports and job tables, shared by
the local commands (:mod:`skyhop.cli`) and the cloud ones (:mod:`skyhop.cli_cloud`).

Rich is imported when something is drawn, not at start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING

from skyhop.models import Encryption, Job, JobReport
from skyhop.state.base import JobProgress
from skyhop.terminal import printable

if TYPE_CHECKING:
    from rich.text import Text


def where(job: Job) -> str:
    """Where a job of the local manifest runs: here (gateway processes or this
    process), or on cloud gateways."""
    runtime = job.runtime
    if runtime is None or runtime.compute in ("local", "direct"):
        return "local"
    return f"cloud gateways ({runtime.compute})"


def status_one(
    job: Job,
    progress: JobProgress,
    legs: list[tuple[Job, JobProgress]],
    *,
    place: str | None = None,
) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"job {job.job_id}", show_header=False)
    state = shown_state(job)
    table.add_row("where", place or where(job))
    table.add_row("state", state)
    table.add_row("source", cell(job.request.source))
    if not legs:
        table.add_row("destination", cell(job.request.destination))
    for leg, p in legs:
        table.add_row(
            f"destination {leg.leg + 1}",
            cell(
                f"{leg.request.destination}: {leg.state.value}, {p.objects_verified} verified, "
                f"{p.objects_failed} failed, of {p.objects_total}"
                + (f" ({leg.error})" if leg.error else "")
            ),
        )
    table.add_row(
        "objects",
        f"{progress.objects_verified} verified, "
        f"{progress.objects_failed} failed, of {progress.objects_total}",
    )
    table.add_row("bytes", f"{human(progress.bytes_verified)} of {human(progress.bytes_total)}")
    table.add_row("chunks", ", ".join(f"{k.value} {v}" for k, v in progress.chunks.items()))
    table.add_row("created", job.created_at.isoformat())
    table.add_row("updated", job.updated_at.isoformat())
    if job.error:
        table.add_row("error", cell(job.error))
    if job.state.value == "interrupted" or state.endswith(GONE):
        table.add_row("resume", f"skyhop cp --resume {job.job_id}")
    Console().print(table)


GONE = "(stopped: its process is gone)"


def live_local_gateways(job: Job) -> list[int] | None:
    """Pids of the job's local gateways still alive in any process; None when the
    job has no local gateways to look for."""
    runtime = job.runtime
    if runtime is None or runtime.compute != "local" or not runtime.gateways:
        return None
    from skyhop.compute.local import live_gateway_pids

    return live_gateway_pids(runtime.gateways)


def live_direct(job: Job) -> int | None:
    """The pid of the other process moving a direct job, when it is still alive;
    None for a gateway job, or when that process is gone (or is this one)."""
    runtime = job.runtime
    if runtime is None or runtime.compute != "direct" or not runtime.pid:
        return None
    if runtime.pid == os.getpid():
        return None
    try:
        os.kill(runtime.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return runtime.pid
    return runtime.pid


def shown_state(job: Job) -> str:
    """The job's state, and whether a job this machine runs is really still running
    (a CLI killed with SIGKILL leaves it 'running' in the manifest; its gateways
    die with it)."""
    if job.state.value in ("provisioning", "running", "verifying") and (
        live_local_gateways(job) == []
        or (job.runtime is not None and job.runtime.compute == "direct" and not live_direct(job))
    ):
        return f"{job.state.value} {GONE}"
    return job.state.value


def say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(printable(text), file=sys.stderr)


def cell(text: str) -> Text:
    """A table cell shown as it is: escaped controls, no rich markup."""
    from rich.text import Text

    return Text(printable(text))


def show_plan(args: argparse.Namespace, job: Job) -> None:
    if job.plan is None or args.quiet:
        return
    try:
        from rich.console import Console

        from skyhop.planner import render_plan

        Console(stderr=True).print(render_plan(job.plan))
    except ImportError:
        say(args, f"plan: {' -> '.join(job.plan.path)}")


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """A rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, args: argparse.Namespace, job: Job) -> None:
        self.quiet = args.quiet or args.json
        self.job = job
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._last_line = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> Progress:
        if self.quiet or not self.tty:
            return self
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("{task.fields[objects]}"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._bar.__enter__()
        self._task = self._bar.add_task(
            self.job.job_id, total=self.job.bytes_total or 1, objects="0 objects"
        )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)

    def update(self, job: Job, progress: JobProgress) -> None:
        if self.quiet:
            return
        objects = f"{progress.objects_verified}/{progress.objects_total} objects"
        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                completed=progress.bytes_verified,
                total=max(progress.bytes_total, 1),  # grows while a sync is still listing
                objects=objects,
            )
            return
        now = time.monotonic()
        if now - self._last_line < 2.0:
            return
        self._last_line = now
        elapsed = max(now - self._started, 1e-6)
        rate = progress.bytes_verified / elapsed
        print(
            f"{job.job_id}: {human(progress.bytes_verified)} / {human(progress.bytes_total)}, "
            f"{objects}, {human(rate)}/s",
            file=sys.stderr,
            flush=True,
        )


def print_report(args: argparse.Namespace, report: JobReport) -> None:
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    v = report.verification
    lines = [
        f"job {report.job_id}: {report.state.value}",
        f"  copied   {report.objects} objects, {human(report.bytes)} in {report.seconds:.1f} s "
        f"({report.gbps:.3f} Gbit/s)",
    ]
    if report.data_path == "direct" and report.server_side_copies:
        lines.append(
            f"  path     direct: {report.server_side_copies} object(s) copied by the store "
            "itself (server-side copy), the rest moved by this process"
        )
    elif report.data_path == "direct":
        lines.append("  path     direct: moved by this process, no gateways")
    elif report.encryption == Encryption.NONE:
        lines.append("  path     gateways: chunks not sealed (--encryption none), inside TLS")
    else:
        lines.append(f"  path     gateways: chunks sealed ({report.encryption.value}) inside TLS")
    if report.chunks_resent:
        lines.append(f"  resent   {_resent(report)}")
    if report.destinations:
        lines[1] = (
            f"  copied   {report.objects} objects, {human(report.bytes)} to "
            f"{len(report.destinations)} destinations in {report.seconds:.1f} s "
            f"({report.gbps:.3f} Gbit/s delivered)"
        )
        for leg in report.destinations:
            lv = leg.verification
            checked = (
                f"verified {lv.checked} objects, {lv.mismatches} mismatches"
                if lv is not None
                else "not verified"
            )
            lines.append(
                f"  {leg.state.value:<11}{leg.destination}: {leg.objects} objects, "
                f"{human(leg.bytes)}, {checked}"
                + (f", {leg.objects_failed} failed" if leg.objects_failed else "")
            )
        if report.source_bytes_read is not None:
            lines.append(f"  read     {human(report.source_bytes_read)} at the source, once")
    if v is not None:
        methods = ", ".join(f"{k}: {n}" for k, n in sorted(v.checksum_methods.items())) or "-"
        lines.append(
            f"  verified {v.checked} objects at the destination: {v.mismatches} mismatches "
            f"({len(v.missing)} missing, {len(v.size_mismatches)} size, "
            f"{len(v.checksum_mismatches)} checksum); checksums by {methods}"
        )
    s = report.sync
    if s is not None:
        lines.append(f"  skipped  {s.skipped} unchanged objects, {human(s.bytes_skipped)}")
        if s.to_delete or s.deleted:
            lines.append(
                f"  deleted  {s.deleted} of {s.to_delete} objects absent at the source"
                + (f" ({s.delete_failures} failed)" if s.delete_failures else "")
            )
        if s.excluded:
            lines.append(f"  excluded {s.excluded} objects by the filters")
    for failure in report.failures[:20]:
        lines.append(f"  FAILED   {failure}")
    from skyhop.controlplane.report import report_paths

    json_path, csv_path = report_paths(report.job_id)
    lines.append(f"  report   {json_path}")
    for path in [leg.csv for leg in report.destinations if leg.csv] or [csv_path]:
        lines.append(f"           {path}")
    print("\n".join(printable(line) for line in lines))


def _resent(report: JobReport) -> str:
    """Why chunks went more than once: failures, and sends a stop cut short."""
    failed = report.chunks_resent_after_failure
    other = report.chunks_resent - failed
    why = []
    if failed:
        why.append(f"{failed} after a failed attempt")
    if other:
        why.append(f"{other} in flight when the job stopped or a gateway was lost")
    return f"{report.chunks_resent} chunk(s): " + ", ".join(why)


def print_dry_run(args: argparse.Namespace, report: JobReport) -> None:
    """Totals and the cost estimate of a dry run (the first actions are printed already)."""
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    s = report.sync
    assert s is not None
    lines = [
        f"dry run {report.job_id}: nothing was copied or deleted",
        f"  would copy   {s.to_copy} objects, {human(s.bytes_to_copy)}",
        f"  would skip   {s.skipped} unchanged objects, {human(s.bytes_skipped)}",
        f"  would delete {s.to_delete} objects, {human(s.bytes_to_delete)}",
    ]
    if s.excluded:
        lines.append(f"  excluded     {s.excluded} objects by the filters")
    if s.deletes_skipped:
        lines.append(f"  refused      {s.deletes_skipped}")
    plan = report.plan
    cost = plan.cost if plan is not None else None
    if plan is not None and cost is not None:
        lines.append(
            f"  estimated cost ${cost.total_usd:.4f} (egress ${cost.egress_usd:.4f}, "
            f"gateways ${cost.vm_usd:.4f}, requests ${cost.requests_usd:.4f}); "
            f"route {' -> '.join(plan.path)}"
        )
    else:
        lines.append("  estimated cost $0.0000 (nothing to copy)")
    lines.append(f"  report       {report.csv}")
    print("\n".join(printable(line) for line in lines))
