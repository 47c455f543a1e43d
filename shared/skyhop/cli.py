"""The ``skyhop`` command: parses, calls the control plane, renders.

Every error a user can cause ends as one line on stderr and a non-zero exit,
never a traceback (``SKYHOP_DEBUG=1`` shows it).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError

from skyhop.cli_render import Progress as _Progress
from skyhop.cli_render import cell as _cell
from skyhop.cli_render import human as _human
from skyhop.cli_render import live_direct as _live_direct
from skyhop.cli_render import live_local_gateways as _live_local_gateways
from skyhop.cli_render import print_dry_run as _print_dry_run
from skyhop.cli_render import print_report as _print_report
from skyhop.cli_render import say as _say
from skyhop.cli_render import show_plan as _show_plan
from skyhop.cli_render import shown_state as _shown_state
from skyhop.cli_render import status_one as _status_one
from skyhop.cli_render import where as _where
from skyhop.errors import Interrupted, SkyhopError, UsageError, first_line
from skyhop.models import (
    Compression,
    Encryption,
    GatewayMode,
    TransferOptions,
    TransferRequest,
)
from skyhop.terminal import printable

if TYPE_CHECKING:
    from skyhop.cloud_gateways import CloudSetup
    from skyhop.models import Job

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


def parse_gateways(text: str) -> tuple[GatewayMode, int | None]:
    """``--gateways local|cloud|N`` -> (mode, gateways per region or None)."""
    value = text.strip().lower()
    if value.isdigit():
        count = int(value)
        if not 1 <= count <= 64:
            raise argparse.ArgumentTypeError(f"--gateways N must be 1..64, got {count}")
        return GatewayMode.LOCAL, count
    try:
        mode = GatewayMode(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--gateways takes local, cloud or a number, not {text!r}"
        ) from None
    if mode == GatewayMode.AUTO:
        raise argparse.ArgumentTypeError("--gateways takes local, cloud or a number")
    return mode, None


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``skyhop`` parser; with ``command`` (the one about to run), the other
    mounted subcommands are listed but their modules not imported."""
    parser = _Parser(prog="skyhop", description="Move bulk data between object stores.")
    parser.add_argument("--version", action="version", version="skyhop 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cp = sub.add_parser(
        "cp", help="copy objects, verified end to end (in this process, or through gateways)"
    )
    cp.add_argument("source", nargs="?", help="path, file://, s3://, gs:// or az:// URI")
    cp.add_argument("destination", nargs="?")
    cp.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="DST",
        help="another destination (repeatable): the source is read once and sent along one "
        "distribution tree to every destination, each verified on its own",
    )
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

    status = sub.add_parser("status", help="list jobs (local and remote), or show one job")
    status.add_argument("job_id", nargs="?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    cancel = sub.add_parser(
        "cancel", help="cancel a job: its gateways are terminated, its firewall rules revoked"
    )
    cancel.add_argument("job_id")
    cancel.set_defaults(func=cmd_cancel)

    cleanup = sub.add_parser(
        "cleanup",
        help="remove cloud gateways and firewall rules left by --gateways cloud jobs whose "
        "CLI process died (found by their tags; each is named)",
    )
    cleanup.set_defaults(func=cmd_cleanup)

    for name, (module, help_text) in _MOUNTED.items():
        if command == name:
            importlib.import_module(module).add_parser(sub)
        else:  # listed in --help without importing what it needs (numpy, yaml, ...)
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


#: subcommands whose modules are imported only when they run (or for their own --help)
_MOUNTED: dict[str, tuple[str, str]] = {
    "plan": (
        "skyhop.planner.cli",
        "show the route, gateways, expected time and cost; no data moves",
    ),
    "deploy": (
        "skyhop.deploy.cli",
        "deploy the serverless control plane (AWS, GCP or Azure) and write its profile",
    ),
    "remote": (
        "skyhop.remotes_cli",
        "manage named remotes (deployed control planes) in $SKYHOP_HOME/remotes.toml",
    ),
}


def _command(argv: Sequence[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is no option), if any."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


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
    p.add_argument(
        "--gateways",
        type=parse_gateways,
        default=None,
        metavar="local|cloud|N",
        help="where the data moves: without this flag, in this process when no hop crosses "
        "machines (local, or a cloud store from here; no --relay); 'local': gateway "
        "processes on this machine; N: N local gateway processes per region; 'cloud': "
        "gateway VMs in the planned regions, launched and torn down by this machine",
    )
    p.add_argument(
        "--encryption",
        choices=[e.value for e in Encryption],
        default=None,
        help="gateways seal every chunk end to end (aes-256-gcm, the default); 'none' for "
        "data the application already encrypted: TLS only, CRC32C still checked",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--on",
        metavar="aws|gcp|azure|NAME",
        default=None,
        help="run the job on a deployed control plane (a profile of `skyhop remote list`)",
    )
    where.add_argument(
        "--local",
        action="store_true",
        help="run here even when a control plane is configured for cloud-to-cloud copies",
    )
    p.add_argument(
        "--control-cidr",
        action="append",
        default=[],
        metavar="CIDR",
        help="with --gateways cloud: this machine's address as the gateways see it "
        "(default: discovered); the control port opens to it only",
    )
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
    if args.gateways is not None:
        fields["gateways"], count = args.gateways
        if count is not None:
            fields["gateways_per_region"] = count
    for name, attr in [
        ("chunk_size", "chunk_size"),
        ("multipart_threshold", "multipart_threshold"),
        ("connections", "connections"),
        ("encryption", "encryption"),
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


def _location(text: str) -> str:
    """A location as the request records it: a local path made absolute (a job
    means the same from any directory); one that does not parse is left for the
    request's validation to name."""
    from skyhop.uri import absolute

    try:
        return absolute(text)
    except UsageError:
        return text


def _request(args: argparse.Namespace) -> TransferRequest:
    also = [_location(d) for d in getattr(args, "also", None) or []]
    destination = _location(args.destination)
    return TransferRequest(
        source=_location(args.source),
        destination=destination,
        destinations=[destination, *also] if also else [],
        options=_options(args),
    )


# ---------------------------------------------------------------- commands


def _control_plane_for(args: argparse.Namespace) -> str | None:
    """The control plane to run on: ``--on``; else, for a cloud-to-cloud copy with
    exactly one control-plane profile and no ``--local``/``--gateways``, that one
    when the user says so (``-y``: without asking)."""
    if args.on:
        return str(args.on)
    if args.local or args.gateways is not None or args.dry_run or getattr(args, "resume", None):
        return None
    if not args.source or not args.destination:
        return None
    from skyhop.uri import parse_uri

    try:
        ends = [parse_uri(args.source), parse_uri(args.destination)]
    except UsageError:
        return None
    if any(u.scheme == "local" for u in ends):
        return None
    from skyhop.remotes import control_planes

    planes = control_planes()
    if len(planes) != 1:
        return None
    name, profile = next(iter(planes.items()))
    what = "sync" if args.command == "sync" else "copy"
    if args.yes:
        _say(args, f"running on control plane {name} ({profile.cloud}); --local runs it here")
        return name
    if not sys.stdin.isatty() or args.json:
        _say(args, f"note: --on {name} runs this {what} on control plane {name} ({profile.cloud})")
        return None
    answer = _ask(f"Run this {what} on control plane {name} ({profile.cloud})? [Y/n] ")
    return None if answer is None or answer in ("n", "no") else name


def _ask(question: str) -> str | None:
    """The answer typed at the terminal, lowercased; None at the end of input (Ctrl-D)."""
    try:
        return input(question).strip().lower()
    except EOFError:
        print(file=sys.stderr)
        return None


def cmd_cp(args: argparse.Namespace) -> int:
    if args.resume and (args.source or args.destination):
        raise UsageError("--resume takes a job id only, not SOURCE and DESTINATION")
    remote = _control_plane_for(args)
    if remote is not None:
        if args.resume:
            raise UsageError("--resume finds the job's control plane itself: drop --on")
        if not args.source or not args.destination:
            raise UsageError("skyhop cp: give SOURCE and DESTINATION (or --resume JOB_ID)")
        from skyhop import cli_cloud

        return cli_cloud.cp_on(args, remote, _options(args))
    from skyhop.controlplane.direct import DirectRunner, takes_direct_path
    from skyhop.controlplane.embedded import EmbeddedRunner, embedded

    _clean_up_after_crashes()
    cp = embedded()
    cloud = None
    if args.resume:
        if cp.manifest.get_job(args.resume) is None:
            from skyhop import cli_cloud

            entry = cli_cloud.entry_of(args.resume)
            if entry is not None and entry.kind == "remote":
                return cli_cloud.resume_remote(args, entry)
        job = cp.require(args.resume)
        if job.state.finished:
            raise UsageError(f"job {job.job_id} already {job.state.value}; nothing to resume")
        pids = _live_local_gateways(job)
        if pids:
            raise UsageError(
                f"job {job.job_id} is still running in another process (gateway pid "
                f"{pids[0]}): wait for it, or stop it with Ctrl-C, then resume"
            )
        pid = _live_direct(job)
        if pid:
            raise UsageError(
                f"job {job.job_id} is still running in another process (pid {pid}): "
                "wait for it, or stop it with Ctrl-C, then resume"
            )
        _say(
            args,
            f"resuming {job.job_id}: {job.request.source} -> "
            + ", ".join(job.request.all_destinations),
        )
        cloud = _cloud_setup(args, job.request, resume=job)
        if cloud is not None:
            cp = cloud.cp
    else:
        if not args.source or not args.destination:
            raise UsageError("skyhop cp: give SOURCE and DESTINATION (or --resume JOB_ID)")
        request = _request(args)
        if args.dry_run and request.multicast:
            raise UsageError(
                "--dry-run lists one destination: for the tree's cost against separate "
                "copies, see `skyhop plan SRC DST --also DST2 ...`"
            )
        if args.dry_run:
            from skyhop.controlplane.dryrun import cp_dry_run

            report = cp_dry_run(cp, request, None if args.json else sys.stdout, first=args.show)
            _print_dry_run(args, report)
            return 0
        cloud = _cloud_setup(args, request)
        if cloud is not None:
            cp = cloud.cp
        job = cp.create_job(request)
        _show_plan(args, job)
        asked = not args.yes and sys.stdin.isatty() and not args.json
        if asked and _ask("Proceed? [y/N] ") not in ("y", "yes"):
            for job_id in [job.job_id, *job.legs]:
                cp.manifest.update_job(job_id, state="failed", error="cancelled by the user")
            cp.abort_uploads(job.job_id)
            _say(args, "cancelled; nothing was copied")
            return 1
    progress = _Progress(args, job)
    runner: EmbeddedRunner | DirectRunner = (
        DirectRunner(cp, on_progress=progress.update)
        if takes_direct_path(job)
        else EmbeddedRunner(cp, on_progress=progress.update)
    )
    entry = _open_cloud_entry(cloud, job)
    # This process runs one job and exits: what exists now (modules, the SDKs'
    # service models, the job) lives until then. Frozen, the cyclic collector
    # stops walking it again on every full collection (5% of the CPU of a
    # 1,000-file copy to S3 went to gc_collect_main).
    gc.freeze()
    try:
        with progress:
            report = runner.run(job.job_id)
    except KeyboardInterrupt:
        _close_cloud_entry(entry, job)  # the runner tore the gateways down
        print(
            f"skyhop: interrupted; resume with: skyhop cp --resume {job.job_id}",
            file=sys.stderr,
        )
        return 130
    except Interrupted as exc:
        _close_cloud_entry(entry, job)  # the runner tore the gateways down
        print(
            f"skyhop: {exc}; once that is fixed, resume with: skyhop cp --resume {job.job_id}",
            file=sys.stderr,
        )
        return exc.exit_code
    _close_cloud_entry(entry, job, report.state.value)
    _print_report(args, report)
    return 0 if report.state.value == "succeeded" else 1


def _clean_up_after_crashes() -> None:
    """Before a new job: remove what --gateways cloud jobs of a CLI that died left in
    the clouds (only when local records say such a job did not finish)."""
    from skyhop import jobindex

    if any(e.kind == "cloud" and e.open for e in jobindex.entries()):
        from skyhop import cloud_gateways

        if cloud_gateways.orphaned():
            cloud_gateways.clean_up()


def _cloud_setup(
    args: argparse.Namespace, request: TransferRequest, *, resume: Job | None = None
) -> CloudSetup | None:
    """The control plane of a --gateways cloud job (new, or resumed), else None."""
    from skyhop.models import GatewayMode

    if resume is not None:
        from skyhop.cloud_gateways import is_cloud_job

        if not is_cloud_job(resume):
            return None
    elif request.options.gateways != GatewayMode.CLOUD:
        return None
    from skyhop import cloud_gateways

    return cloud_gateways.control_plane(request, args.control_cidr)


def _open_cloud_entry(cloud: CloudSetup | None, job: Job) -> object | None:
    if cloud is None:
        return None
    from skyhop import cloud_gateways

    return cloud_gateways.open_entry(job, cloud.clouds)


def _close_cloud_entry(entry: object | None, job: Job, state: str | None = None) -> None:
    if entry is not None:
        from skyhop import cloud_gateways

        cloud_gateways.close_entry(job, state)


def cmd_cleanup(args: argparse.Namespace) -> int:
    from skyhop import cloud_gateways

    orphans = cloud_gateways.orphaned()
    if not orphans:
        print("skyhop: cleanup: no --gateways cloud job was left behind by a CLI that died")
        return 0
    removed = cloud_gateways.clean_up(orphans, say=print)
    print(f"skyhop: cleanup: {len(orphans)} job(s), {len(removed)} resource(s) removed")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from skyhop.controlplane.embedded import embedded
    from skyhop.controlplane.sync import SyncJob

    remote = _control_plane_for(args)
    if remote is not None:
        from skyhop import cli_cloud

        return cli_cloud.sync_on(args, remote, _options(args))
    _clean_up_after_crashes()
    cp = embedded()
    request = _request(args).model_copy(update={"mode": "sync"})
    cloud = None if args.dry_run else _cloud_setup(args, request)
    if cloud is not None:
        cp = cloud.cp
    sync = SyncJob(cp, request)
    if args.dry_run:
        report = sync.dry_run(None if args.json else sys.stdout, first=args.show)
        _print_dry_run(args, report)
        return 0
    job = sync.begin()
    entry = _open_cloud_entry(cloud, job)
    _show_plan(args, job)
    progress = _Progress(args, job)
    try:
        with progress:
            report = sync.run(on_progress=progress.update)
    except KeyboardInterrupt:
        _close_cloud_entry(entry, job)
        print(
            f"skyhop: interrupted; run the same `skyhop sync` again to continue ({job.job_id})",
            file=sys.stderr,
        )
        return 130
    except Interrupted as exc:
        _close_cloud_entry(entry, job)  # the runner tore the gateways down
        print(
            f"skyhop: {exc}; once that is fixed, run the same `skyhop sync` again",
            file=sys.stderr,
        )
        return exc.exit_code
    _close_cloud_entry(entry, job, report.state.value)
    _print_report(args, report)
    return 0 if report.state.value == "succeeded" else 1


def cmd_cancel(args: argparse.Namespace) -> int:
    from skyhop import cli_cloud

    return cli_cloud.cmd_cancel(args)


def cmd_status(args: argparse.Namespace) -> int:
    from skyhop import jobindex
    from skyhop.controlplane.embedded import embedded

    cp = embedded()
    if args.job_id:
        if cp.manifest.get_job(args.job_id) is None:
            from skyhop import cli_cloud

            entry = cli_cloud.entry_of(args.job_id)
            if entry is not None and entry.kind == "remote":
                return cli_cloud.status_remote(args, entry)
        job = cp.require(args.job_id)
        progress = cp.progress(job.job_id)
        legs = [(cp.require(i), cp.manifest.progress(i)) for i in job.legs]
        if args.json:
            out: dict[str, object] = {
                "job": job.model_dump(mode="json", exclude={"runtime"}),
                "progress": progress.model_dump(mode="json"),
            }
            if legs:
                out["destinations"] = [
                    {
                        "job": leg.model_dump(mode="json", exclude={"runtime"}),
                        "progress": p.model_dump(mode="json"),
                    }
                    for leg, p in legs
                ]
            print(json.dumps(out, indent=2))
            return 0
        _status_one(job, progress, legs)
        return 0
    # a multicast job's destinations show under it, not as jobs of their own
    jobs = [j for j in cp.jobs() if j.leg_of is None]
    remote = []
    if any(e.kind == "remote" for e in jobindex.entries()):
        from skyhop import cli_cloud

        remote = cli_cloud.refreshed_entries()
    if args.json:
        out = [
            {"where": "local", **j.model_dump(mode="json", exclude={"runtime", "report"})}
            for j in jobs
        ]
        out += [
            {"where": e.where, "state": state, **e.model_dump(mode="json", exclude={"state"})}
            for e, state in remote
        ]
        print(json.dumps(out, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    rows = [
        (
            job.created_at,
            job.job_id,
            _where(job),
            _shown_state(job),
            str(job.objects_total),
            _human(job.bytes_total),
            f"{job.request.source} -> {', '.join(job.request.all_destinations)}",
        )
        for job in jobs
    ]
    rows += [
        (
            e.created_at,
            e.key,
            e.where,
            state,
            "" if e.objects is None else str(e.objects),
            "" if e.bytes is None else _human(e.bytes),
            f"{e.source} -> {e.destination}",
        )
        for e, state in remote
    ]
    table = Table(title="skyhop jobs")
    # ids and places whole (a user copies them into the next command); routes wrap
    table.add_column("job", no_wrap=True, min_width=max((len(r[1]) for r in rows), default=3))
    table.add_column("where", no_wrap=True)
    for col in ("state", "objects", "bytes", "created", "source -> destination"):
        table.add_column(col)
    for created, job_id, where, state, objects, size, route in sorted(rows, reverse=True):
        table.add_row(
            _cell(job_id),
            where,
            state,
            objects,
            size,
            created.strftime("%Y-%m-%d %H:%M:%S"),
            _cell(route),
        )
    Console().print(table)
    return 0


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
        words = list(sys.argv[1:] if argv is None else argv)
        args = build_parser(_command(words)).parse_args(words)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except SkyhopError as exc:
        if debug:
            traceback.print_exc()
        print(
            f"skyhop: error: {printable(first_line(exc, limit=2000))}",
            file=sys.stderr,
        )
        return exc.exit_code
    except ValidationError as exc:
        print(f"skyhop: error: {printable(_validation_message(exc))}", file=sys.stderr)
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
            printable(f"skyhop: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")),
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
