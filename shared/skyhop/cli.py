"""The ``skyhop`` command: parses, calls the control plane, renders.

Every error a user can cause ends as one line on stderr and a non-zero exit,
never a traceback (``SKYHOP_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence

from pydantic import ValidationError

from skyhop.errors import SkyhopError, UsageError
from skyhop.models import Compression, Job, JobReport, TransferOptions, TransferRequest
from skyhop.state.base import JobProgress

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``64MiB``, ``1G``, ``4096`` -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 64MiB, 1G, 4096)")
    number, unit, binary = match.groups()
    base = 1024 if binary or unit else 1
    power = " kmgt".index(unit.lower() or " ")
    return int(float(number) * base**power)


def parse_duration_arg(text: str) -> float:
    """``90s``, ``15m``, ``2h``, ``7d``, ``1h30m`` -> seconds (for argparse)."""
    from skyhop.controlplane.filters import parse_duration

    try:
        return parse_duration(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="skyhop", description="Move bulk data between object stores.")
    parser.add_argument("--version", action="version", version="skyhop 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cp = sub.add_parser("cp", help="copy objects through gateways, verified end to end")
    cp.add_argument("source", nargs="?", help="path, file://, s3://, gs:// or az:// URI")
    cp.add_argument("destination", nargs="?")
    cp.add_argument("-r", "--recursive", action="store_true", help="copy a prefix or directory")
    cp.add_argument("--resume", metavar="JOB_ID", help="continue an interrupted job")
    _transfer_options(cp)
    cp.set_defaults(func=cmd_cp)

    sync = sub.add_parser(
        "sync",
        help="make DST like SRC: copy what is missing or changed, optionally delete the rest",
        description=(
            "Copy objects missing at the destination or differing from the source "
            "(by size, then by checksum with --checksum or modification time), skip the "
            "rest without reading them, and with --delete remove destination objects "
            "absent at the source once every copy is verified."
        ),
    )
    sync.add_argument("source", help="a prefix or directory: path, file://, s3://, gs:// or az://")
    sync.add_argument("destination")
    how = sync.add_mutually_exclusive_group()
    how.add_argument(
        "--checksum",
        dest="compare",
        action="store_const",
        const="checksum",
        help="compare checksums where both sides have a comparable one (else size and time)",
    )
    how.add_argument(
        "--update",
        dest="compare",
        action="store_const",
        const="update",
        help="copy only when the source is newer; keep newer destination objects",
    )
    how.add_argument(
        "--size-only", dest="compare", action="store_const", const="size", help="compare sizes only"
    )
    sync.add_argument(
        "--delete",
        action="store_true",
        help="delete destination objects absent at the source, after every copy is verified",
    )
    sync.add_argument(
        "--max-delete",
        type=int,
        default=None,
        metavar="N",
        help="refuse the whole sync (nothing copied or deleted) when more than N would be deleted",
    )
    _transfer_options(sync)
    sync.set_defaults(func=cmd_sync, recursive=True)

    status = sub.add_parser("status", help="list jobs, or show one job")
    status.add_argument("job_id", nargs="?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    try:
        from skyhop.planner import cli as planner_cli
    except ImportError:
        planner_cli = None  # type: ignore[assignment]
    if planner_cli is not None and hasattr(planner_cli, "add_parser"):
        planner_cli.add_parser(sub)
    from skyhop.deploy import cli as deploy_cli

    deploy_cli.add_parser(sub)
    return parser


def _transfer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--relay",
        action="append",
        default=[],
        metavar="REGION",
        help="relay through REGION (repeatable, in order)",
    )
    p.add_argument("--src-region")
    p.add_argument("--dst-region")
    p.add_argument("--chunk-size", type=parse_size, default=None, metavar="SIZE")
    p.add_argument("--multipart-threshold", type=parse_size, default=None, metavar="SIZE")
    p.add_argument("--connections", type=int, default=None, metavar="N")
    p.add_argument("--gateways", type=int, default=None, metavar="N", help="gateways per region")
    p.add_argument("--compression", choices=[c.value for c in Compression], default=None)
    p.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="copy only matching keys (repeatable; excludes first, then includes: first match wins)",
    )
    p.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip matching keys"
    )
    p.add_argument("--min-size", type=parse_size, default=None, metavar="SIZE")
    p.add_argument("--max-size", type=parse_size, default=None, metavar="SIZE")
    p.add_argument(
        "--min-age", type=parse_duration_arg, default=None, metavar="AGE", help="e.g. 7d, 12h"
    )
    p.add_argument("--max-age", type=parse_duration_arg, default=None, metavar="AGE")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print what would be copied, skipped and deleted, with the cost estimate; move nothing",
    )
    p.add_argument(
        "--show",
        type=int,
        default=20,
        metavar="N",
        help="with --dry-run, print the first N actions (all are in the report CSV)",
    )
    p.add_argument(
        "--bwlimit", type=parse_size, default=None, metavar="SIZE", help="bytes/s per job"
    )
    p.add_argument(
        "--storage-class",
        default=None,
        metavar="CLASS",
        help="storage class / access tier to write",
    )
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress output")


def _options(args: argparse.Namespace) -> TransferOptions:
    fields: dict[str, object] = {
        "recursive": args.recursive,
        "relays": args.relay,
        "src_region": args.src_region,
        "dst_region": args.dst_region,
        "include": args.include,
        "exclude": args.exclude,
        "dry_run": args.dry_run,
        "delete": getattr(args, "delete", False),
    }
    if getattr(args, "max_delete", None) is not None and not args.delete:
        raise UsageError("--max-delete only makes sense with --delete")
    for name, attr in [
        ("chunk_size", "chunk_size"),
        ("multipart_threshold", "multipart_threshold"),
        ("connections", "connections"),
        ("gateways_per_region", "gateways"),
        ("compression", "compression"),
        ("min_size", "min_size"),
        ("max_size", "max_size"),
        ("min_age", "min_age"),
        ("max_age", "max_age"),
        ("bwlimit", "bwlimit"),
        ("storage_class", "storage_class"),
        ("compare", "compare"),
        ("max_delete", "max_delete"),
    ]:
        value = getattr(args, attr, None)
        if value is not None:
            fields[name] = value
    return TransferOptions.model_validate(fields)


# ---------------------------------------------------------------- commands


def cmd_cp(args: argparse.Namespace) -> int:
    from skyhop.controlplane import embedded
    from skyhop.controlplane.embedded import EmbeddedRunner

    cp = embedded()
    if args.resume:
        job = cp.require(args.resume)
        if args.source or args.destination:
            raise UsageError("--resume takes a job id only, not SOURCE and DESTINATION")
        if job.state.finished:
            raise UsageError(f"job {job.job_id} already {job.state.value}; nothing to resume")
        pids = _live_local_gateways(job)
        if pids:
            raise UsageError(
                f"job {job.job_id} is still running in another process (gateway pid "
                f"{pids[0]}): wait for it, or stop it with Ctrl-C, then resume"
            )
        _say(args, f"resuming {job.job_id}: {job.request.source} -> {job.request.destination}")
    else:
        if not args.source or not args.destination:
            raise UsageError("skyhop cp: give SOURCE and DESTINATION (or --resume JOB_ID)")
        request = TransferRequest(
            source=args.source, destination=args.destination, options=_options(args)
        )
        if args.dry_run:
            from skyhop.controlplane.sync import cp_dry_run

            report = cp_dry_run(cp, request, None if args.json else sys.stdout, first=args.show)
            _print_dry_run(args, report)
            return 0
        job = cp.create_job(request)
        _show_plan(args, job)
        if not args.yes and sys.stdin.isatty() and not args.json:
            answer = input("Proceed? [y/N] ").strip().lower()
            if answer not in ("y", "yes"):
                cp.manifest.update_job(job.job_id, state="failed", error="cancelled by the user")
                cp.abort_uploads(job.job_id)
                _say(args, "cancelled; nothing was copied")
                return 1
    progress = _Progress(args, job)
    runner = EmbeddedRunner(cp, on_progress=progress.update)
    try:
        with progress:
            report = runner.run(job.job_id)
    except KeyboardInterrupt:
        print(
            f"skyhop: interrupted; resume with: skyhop cp --resume {job.job_id}",
            file=sys.stderr,
        )
        return 130
    _print_report(args, report)
    return 0 if report.state.value == "succeeded" else 1


def cmd_sync(args: argparse.Namespace) -> int:
    from skyhop.controlplane import embedded
    from skyhop.controlplane.sync import SyncJob

    cp = embedded()
    request = TransferRequest(
        source=args.source, destination=args.destination, options=_options(args)
    )
    sync = SyncJob(cp, request)
    if args.dry_run:
        report = sync.dry_run(None if args.json else sys.stdout, first=args.show)
        _print_dry_run(args, report)
        return 0
    job = sync.begin()
    _show_plan(args, job)
    progress = _Progress(args, job)
    try:
        with progress:
            report = sync.run(on_progress=progress.update)
    except KeyboardInterrupt:
        print(
            f"skyhop: interrupted; run the same `skyhop sync` again to continue ({job.job_id})",
            file=sys.stderr,
        )
        return 130
    _print_report(args, report)
    return 0 if report.state.value == "succeeded" else 1


def cmd_status(args: argparse.Namespace) -> int:
    from skyhop.controlplane import embedded

    cp = embedded()
    if args.job_id:
        job = cp.require(args.job_id)
        progress = cp.manifest.progress(job.job_id)
        if args.json:
            out = {
                "job": job.model_dump(mode="json", exclude={"runtime"}),
                "progress": progress.model_dump(mode="json"),
            }
            print(json.dumps(out, indent=2))
            return 0
        _status_one(job, progress)
        return 0
    jobs = cp.jobs()
    if args.json:
        print(json.dumps([j.model_dump(mode="json", exclude={"runtime"}) for j in jobs], indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="skyhop jobs")
    for col in ("job", "state", "objects", "bytes", "created", "source -> destination"):
        table.add_column(col)
    for job in jobs:
        table.add_row(
            job.job_id,
            _shown_state(job),
            str(job.objects_total),
            _human(job.bytes_total),
            job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            f"{job.request.source} -> {job.request.destination}",
        )
    Console().print(table)
    return 0


def _status_one(job: Job, progress: JobProgress) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"job {job.job_id}", show_header=False)
    state = _shown_state(job)
    table.add_row("state", state)
    table.add_row("source", job.request.source)
    table.add_row("destination", job.request.destination)
    table.add_row(
        "objects",
        f"{progress.objects_verified} verified, "
        f"{progress.objects_failed} failed, of {progress.objects_total}",
    )
    table.add_row("bytes", f"{_human(progress.bytes_verified)} of {_human(progress.bytes_total)}")
    table.add_row("chunks", ", ".join(f"{k.value} {v}" for k, v in progress.chunks.items()))
    table.add_row("created", job.created_at.isoformat())
    table.add_row("updated", job.updated_at.isoformat())
    if job.error:
        table.add_row("error", job.error)
    if job.state.value == "interrupted" or state.endswith(_GONE):
        table.add_row("resume", f"skyhop cp --resume {job.job_id}")
    Console().print(table)


_GONE = "(stopped: its process is gone)"


def _live_local_gateways(job: Job) -> list[int] | None:
    """Pids of the job's local gateways still alive in any process; None when the
    job has no local gateways to look for."""
    runtime = job.runtime
    if runtime is None or runtime.compute != "local" or not runtime.gateways:
        return None
    from skyhop.compute.local import live_gateway_pids

    return live_gateway_pids(runtime.gateways)


def _shown_state(job: Job) -> str:
    """The job's state, and whether a job this machine runs is really still running
    (a CLI killed with SIGKILL leaves it 'running' in the manifest; its gateways
    die with it)."""
    if job.state.value in ("provisioning", "running", "verifying") and (
        _live_local_gateways(job) == []
    ):
        return f"{job.state.value} {_GONE}"
    return job.state.value


# ---------------------------------------------------------------- rendering


def _say(args: argparse.Namespace, text: str) -> None:
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def _show_plan(args: argparse.Namespace, job: Job) -> None:
    if job.plan is None or args.quiet:
        return
    try:
        from rich.console import Console

        from skyhop.planner import render_plan

        Console(stderr=True).print(render_plan(job.plan))
    except ImportError:
        _say(args, f"plan: {' -> '.join(job.plan.path)}")


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


class _Progress:
    """A rich progress bar on a terminal, plain lines otherwise."""

    def __init__(self, args: argparse.Namespace, job: Job) -> None:
        self.quiet = args.quiet or args.json
        self.job = job
        self.tty = sys.stderr.isatty()
        self._bar = None
        self._task = None
        self._last_line = 0.0
        self._started = time.monotonic()

    def __enter__(self) -> _Progress:
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
            f"{job.job_id}: {_human(progress.bytes_verified)} / {_human(progress.bytes_total)}, "
            f"{objects}, {_human(rate)}/s",
            file=sys.stderr,
            flush=True,
        )


def _print_report(args: argparse.Namespace, report: JobReport) -> None:
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    v = report.verification
    lines = [
        f"job {report.job_id}: {report.state.value}",
        f"  copied   {report.objects} objects, {_human(report.bytes)} in {report.seconds:.1f} s "
        f"({report.gbps:.3f} Gbit/s)",
    ]
    if report.chunks_resent:
        lines.append(f"  resent   {report.chunks_resent} chunk(s) after failed verification")
    if v is not None:
        methods = ", ".join(f"{k}: {n}" for k, n in sorted(v.checksum_methods.items())) or "-"
        lines.append(
            f"  verified {v.checked} objects at the destination: {v.mismatches} mismatches "
            f"({len(v.missing)} missing, {len(v.size_mismatches)} size, "
            f"{len(v.checksum_mismatches)} checksum); checksums by {methods}"
        )
    s = report.sync
    if s is not None:
        lines.append(f"  skipped  {s.skipped} unchanged objects, {_human(s.bytes_skipped)}")
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
    lines.append(f"           {csv_path}")
    print("\n".join(lines))


def _print_dry_run(args: argparse.Namespace, report: JobReport) -> None:
    """Totals and the cost estimate of a dry run (the first actions are printed already)."""
    if args.json:
        print(json.dumps(report.model_dump(mode="json"), indent=2))
        return
    s = report.sync
    assert s is not None
    lines = [
        f"dry run {report.job_id}: nothing was copied or deleted",
        f"  would copy   {s.to_copy} objects, {_human(s.bytes_to_copy)}",
        f"  would skip   {s.skipped} unchanged objects, {_human(s.bytes_skipped)}",
        f"  would delete {s.to_delete} objects, {_human(s.bytes_to_delete)}",
    ]
    if s.excluded:
        lines.append(f"  excluded     {s.excluded} objects by the filters")
    if s.deletes_skipped:
        lines.append(f"  refused      {s.deletes_skipped}")
    cost = report.plan.cost if report.plan is not None else None
    if cost is not None:
        lines.append(
            f"  estimated cost ${cost.total_usd:.4f} (egress ${cost.egress_usd:.4f}, "
            f"gateways ${cost.vm_usd:.4f}, requests ${cost.requests_usd:.4f}); "
            f"route {' -> '.join(report.plan.path)}"  # type: ignore[union-attr]
        )
    else:
        lines.append("  estimated cost $0.0000 (nothing to copy)")
    lines.append(f"  report       {report.csv}")
    print("\n".join(lines))


# ---------------------------------------------------------------- entry point


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    msg = err.get("msg", "invalid value").removeprefix("Value error, ")
    return f"invalid {where}: {msg}" if where else msg


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    debug = os.environ.get("SKYHOP_DEBUG") == "1"
    try:
        args = build_parser().parse_args(argv)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SkyhopError as exc:
        if debug:
            traceback.print_exc()
        print(
            f"skyhop: error: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            file=sys.stderr,
        )
        return exc.exit_code
    except ValidationError as exc:
        print(f"skyhop: error: {_validation_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("skyhop: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 0
    except BrokenPipeError:
        return 1
    except OSError as exc:
        if debug:
            traceback.print_exc()
        print(
            f"skyhop: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
