"""The cloud modes of ``skyhop cp`` and ``skyhop sync``: on a deployed control plane
(``--on NAME``), and ``cancel`` / ``status`` / ``--resume`` of such jobs.

The terminal experience is a local job's (:mod:`skyhop.cli` renders the plan,
the progress bar and the report); only where the job runs differs. Jobs sent
elsewhere are remembered in :mod:`skyhop.jobindex`, so ``skyhop status``,
``skyhop cancel`` and ``skyhop cp --resume`` find them again.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Literal

from skyhop import cli_render as cli
from skyhop import jobindex
from skyhop.controlplane.remote import RemoteControlPlane, finished, planned
from skyhop.errors import NotFoundError, SkyhopError, UsageError
from skyhop.jobindex import IndexEntry
from skyhop.models import GatewayMode, Job, JobReport, JobState, TransferOptions, TransferRequest
from skyhop.remotes import control_planes, find_control_plane
from skyhop.terminal import printable
from skyhop.uri import absolute, parse_uri

#: how long the CLI waits for a control plane to make the job of its request
FIND_TIMEOUT = float(os.environ.get("SKYHOP_REMOTE_TIMEOUT", "120"))
#: how long ``cancel`` waits for the control plane's teardown report
CANCEL_TIMEOUT = 120.0
POLL = 0.5


def open_plane(name: str) -> RemoteControlPlane:
    found, profile = find_control_plane(name)
    return RemoteControlPlane(found, profile)


def remote_location(plane: RemoteControlPlane, text: str, what: str) -> str:
    """A location as the control plane must see it: local paths absolute, and only for
    a control plane whose gateways run on this machine."""
    uri = parse_uri(text)
    if uri.remote:
        raise UsageError(
            f"the {what} {text} uses storage remote {uri.remote!r}, defined on this machine: "
            f"control plane {plane.name!r} cannot use its credentials; give the bucket's URI "
            "(the control plane's own access), or copy without --on"
        )
    if uri.scheme != "local":
        return absolute(text)
    if not plane.profile.gateways_here:
        raise UsageError(
            f"the {what} {text} is on this machine: gateways in {plane.profile.cloud} cannot "
            f"read or write it; copy it without --on (or to/from a bucket first)"
        )
    return str(uri)


# ---------------------------------------------------------------- cp --on


def cp_on(args: argparse.Namespace, name: str, options: TransferOptions) -> int:
    """``skyhop cp SRC DST --on NAME``."""
    return submit_and_follow(args, name, options, "copy")


def sync_on(args: argparse.Namespace, name: str, options: TransferOptions) -> int:
    """``skyhop sync SRC DST --on NAME``: the control plane compares both sides and
    copies what differs (deleting, with ``--delete``, what the source lacks)."""
    return submit_and_follow(args, name, options, "sync")


def submit_and_follow(
    args: argparse.Namespace, name: str, options: TransferOptions, mode: Literal["copy", "sync"]
) -> int:
    """Put the request on control plane ``name``'s requests queue, show its plan
    (asking first unless ``-y``), then follow it to its report."""
    plane = open_plane(name)
    if args.dry_run:
        raise UsageError("--dry-run moves nothing: run it without --on (it lists both ends here)")
    if options.gateways == GatewayMode.LOCAL and args.gateways[1] is None:
        raise UsageError("--on runs the job on the control plane's gateways: drop --gateways local")
    if args.control_cidr:
        raise UsageError("--control-cidr is for --gateways cloud, not --on: drop it")
    # the control plane's gateways move the data (its plan says so, not "direct")
    options = options.model_copy(update={"gateways": GatewayMode.CLOUD})
    request = TransferRequest(
        source=remote_location(plane, args.source, "source"),
        destination=remote_location(plane, args.destination, "destination"),
        options=options,
        mode=mode,
    )
    plane.check()
    ask = not args.yes and sys.stdin.isatty() and not args.json
    if ask:
        request = request.model_copy(update={"hold": True})
    jobindex.add(
        IndexEntry(
            kind="remote",
            request_id=request.request_id,
            where=plane.name,
            source=request.source,
            destination=request.destination,
        )
    )
    plane.submit(request)
    cli.say(args, f"submitted to control plane {plane.label()}: request {request.request_id}")
    # from here on the request is the cloud's: Ctrl-C asks (or, held, cancels) as it
    # does while following, never leaves the job going on unannounced
    try:
        job = _planned_job(args, plane, request)
    except KeyboardInterrupt:
        return _interrupted_early(args, plane, request, held=ask)
    if job.state == JobState.FAILED and not job.plan:
        return _finish(args, plane, plane.wait(job.job_id, finished, timeout=30, interval=POLL))
    cli.show_plan(args, job)
    if ask and job.state == JobState.PLANNED:
        try:
            answer = input("Proceed? [y/N] ").strip().lower()
        except EOFError:  # Ctrl-D: not a yes
            print(file=sys.stderr)
            answer = ""
        except KeyboardInterrupt:
            print(file=sys.stderr)
            _decline(args, plane, job)
            return 130
        if answer not in ("y", "yes"):
            _decline(args, plane, job)
            return 1
        plane.start(job.job_id)
    return follow(args, plane, job)


def _planned_job(
    args: argparse.Namespace, plane: RemoteControlPlane, request: TransferRequest
) -> Job:
    """The job the control plane made for ``request``, once listed and planned."""
    job = plane.wait_for_job(request.request_id, timeout=FIND_TIMEOUT)
    if job is None:
        raise SkyhopError(
            f"control plane {plane.name!r} made no job for request {request.request_id} within "
            f"{FIND_TIMEOUT:.0f} s: is its submit function running? The request stays queued; "
            f"`skyhop status {request.request_id}` finds its job once it starts"
        )
    _remember(request.request_id, job)
    cli.say(args, f"job {job.job_id} on {plane.label()}")
    if not planned(job):
        cli.say(args, f"{job.job_id}: listing the source on {plane.name} ...")
        job = plane.wait(job.job_id, planned, interval=POLL)
    return job


def _decline(args: argparse.Namespace, plane: RemoteControlPlane, job: Job) -> None:
    """The user did not say yes to a held job: cancel it before it starts."""
    plane.cancel(job.job_id, "cancelled by the user before it started")
    cli.say(args, "cancelled; nothing was copied")
    _remember(job.request.request_id, plane.wait(job.job_id, finished, timeout=30))


def _interrupted_early(
    args: argparse.Namespace, plane: RemoteControlPlane, request: TransferRequest, *, held: bool
) -> int:
    """Ctrl-C after the request was sent, before its job was planned. A held job
    would never start: it is cancelled. Otherwise the job goes on in the cloud
    unless the user cancels it (once the control plane has made it)."""
    job = plane.find_job(request.request_id)
    if job is not None and not held:
        return _interrupted(args, plane, job)
    if not held and _ask_detach(f"request {request.request_id} is on {plane.name}") == "detach":
        print(
            f"skyhop: detached; request {request.request_id} goes on in {plane.label()}: "
            f"see `skyhop status {request.request_id}`, follow its job with "
            f"`skyhop cp --resume {request.request_id}`",
            file=sys.stderr,
        )
        return 130
    if job is None:
        cli.say(
            args,
            f"waiting for {plane.name} to make the job of request {request.request_id}, to "
            "cancel it ...",
        )
        job = plane.wait_for_job(request.request_id, timeout=FIND_TIMEOUT)
        if job is None:
            raise SkyhopError(
                f"control plane {plane.name!r} made no job for request {request.request_id} "
                f"within {FIND_TIMEOUT:.0f} s: cancel it once it is made, with "
                f"`skyhop cancel {request.request_id}`"
            )
        _remember(request.request_id, job)
    if held:
        print(file=sys.stderr)
        _decline(args, plane, job)
        return 130
    return cancel_remote(args, plane, job.job_id)


def follow(args: argparse.Namespace, plane: RemoteControlPlane, job: Job) -> int:
    """Follow a remote job to its end: progress from its manifest, then its report.
    Ctrl-C asks whether to detach (the job goes on) or to cancel it."""
    progress = cli.Progress(args, job)
    try:
        with progress:
            job = plane.wait(job.job_id, finished, interval=POLL, on_progress=progress.update)
    except KeyboardInterrupt:
        return _interrupted(args, plane, job)
    return _finish(args, plane, job)


def _ask_detach(what: str) -> Literal["detach", "cancel"]:
    """Ask (at a terminal) whether to detach from or cancel what runs in the cloud;
    detach without a terminal, on Ctrl-C or Ctrl-D, and by default."""
    if not sys.stdin.isatty():
        return "detach"
    try:
        answer = input(f"\n{what}: [d]etach (it goes on in the cloud) or [c]ancel it? [D/c] ")
    except (KeyboardInterrupt, EOFError):
        answer = ""
    return "cancel" if answer.strip().lower() in ("c", "cancel") else "detach"


def _interrupted(args: argparse.Namespace, plane: RemoteControlPlane, job: Job) -> int:
    if _ask_detach(f"{job.job_id} runs on {plane.name}") == "cancel":
        return cancel_remote(args, plane, job.job_id)
    print(
        f"skyhop: detached; {job.job_id} goes on in {plane.label()}: follow it with "
        f"`skyhop cp --resume {job.job_id}`, see `skyhop status {job.job_id}`, "
        f"stop it with `skyhop cancel {job.job_id}`",
        file=sys.stderr,
    )
    return 130


def _finish(args: argparse.Namespace, plane: RemoteControlPlane, job: Job) -> int:
    _remember(job.request.request_id, job)
    report = fetch_report(plane, job)
    cli.print_report(args, report)
    return 0 if report.state == JobState.SUCCEEDED else 1


def fetch_report(plane: RemoteControlPlane, job: Job) -> JobReport:
    """The report the control plane kept with the job, written under
    ``$SKYHOP_HOME/reports/`` as a local job's is, with the per-object CSV
    rebuilt from the remote manifest."""
    from skyhop.controlplane.report import (
        CsvReport,
        build_report,
        iter_object_reports,
        report_paths,
        write_report,
    )

    report = job.report or build_report(plane.manifest, job, None)
    _, csv_path = report_paths(job.job_id)
    report = report.model_copy(update={"csv": str(csv_path)})
    write_report(report)
    csv_path.unlink(missing_ok=True)
    with CsvReport(job.job_id) as rows:
        rows.write_all(iter_object_reports(plane.manifest, job))
    return report


def _remember(request_id: str, job: Job) -> None:
    jobindex.set_fields(
        request_id,
        job_id=job.job_id,
        state=job.state.value,
        error=job.error,
        objects=job.objects_total,
        bytes=job.bytes_total,
    )


# ---------------------------------------------------------------- resume, cancel, status


def entry_of(job_id: str) -> IndexEntry | None:
    """Where a job not in this machine's manifest runs: this machine's index of the
    jobs it sent, else the control plane (of the profiles here) whose manifest has
    it (a job sent from another machine; remembered in the index from then on)."""
    entry = jobindex.find(job_id)
    if entry is not None:
        return entry
    for name, profile in sorted(control_planes().items()):
        plane = RemoteControlPlane(name, profile)
        try:
            job = plane.manifest.get_job(job_id)
        except SkyhopError:
            continue  # out of reach: another profile may have it
        if job is not None:
            return jobindex.add(
                IndexEntry(
                    kind="remote",
                    request_id=job.request.request_id,
                    job_id=job.job_id,
                    where=name,
                    source=job.request.source,
                    destination=job.request.destination,
                    state=job.state.value,
                    objects=job.objects_total,
                    bytes=job.bytes_total,
                )
            )
    return None


def resume_remote(args: argparse.Namespace, entry: IndexEntry) -> int:
    """``skyhop cp --resume JOB`` of a remote job: re-attach (starting it again when
    it was interrupted or held) and follow it to its report."""
    from skyhop.controlplane.report import report_paths

    plane = open_plane(entry.where)
    job = _remote_job(plane, entry)
    if job.state.finished and job.report is None:  # it is being finished: its report comes
        job = plane.wait(job.job_id, finished, timeout=30, interval=POLL)
    if job.state.finished:
        if not report_paths(job.job_id)[0].exists() and job.report is not None:
            # it ended while detached: this is the first look at its report here
            cli.say(args, f"{job.job_id} on {plane.label()} ended while detached")
            return _finish(args, plane, job)
        _remember(entry.request_id, job)
        raise UsageError(f"job {job.job_id} already {job.state.value}; nothing to resume")
    cli.say(
        args,
        f"re-attaching to {job.job_id} on {plane.label()}: {job.request.source} -> "
        f"{job.request.destination}",
    )
    if job.state in (JobState.INTERRUPTED, JobState.PLANNED):
        if job.state == JobState.PLANNED:
            cli.show_plan(args, job)
        plane.start(job.job_id)
    return follow(args, plane, job)


def _remote_job(plane: RemoteControlPlane, entry: IndexEntry) -> Job:
    if entry.job_id:
        return plane.job(entry.job_id)
    job = plane.find_job(entry.request_id)
    if job is None:
        raise NotFoundError(
            f"control plane {plane.name!r} has made no job for request {entry.request_id} yet"
        )
    _remember(entry.request_id, job)
    return job


def cancel_remote(args: argparse.Namespace, plane: RemoteControlPlane, job_id: str) -> int:
    job = plane.job(job_id)
    if job.state.finished:
        raise UsageError(f"job {job_id} already {job.state.value}; nothing to cancel")
    plane.cancel(job_id)
    cli.say(args, f"cancelling {job_id} on {plane.label()} ...")
    job = plane.wait(job_id, finished, timeout=CANCEL_TIMEOUT, interval=POLL)
    _remember(job.request.request_id, job)
    if not job.state.finished:
        raise SkyhopError(
            f"control plane {plane.name!r} did not confirm the cancel of {job_id} within "
            f"{CANCEL_TIMEOUT:.0f} s (the message stays queued); see `skyhop status {job_id}`"
        )
    if job.state == JobState.SUCCEEDED:
        cli.say(args, f"job {job_id} had succeeded before the cancel arrived")
        return _finish(args, plane, job)
    fetch_report(plane, job)
    print(
        printable(
            f"job {job_id} cancelled on {plane.label()}: its gateways are terminated and its "
            f"firewall rules revoked ({job.error})"
        )
    )
    return 1 if args.command != "cancel" else 0


def status_remote(args: argparse.Namespace, entry: IndexEntry) -> int:
    import json

    plane = open_plane(entry.where)
    job = _remote_job(plane, entry)
    progress = plane.progress(job.job_id)
    _remember(entry.request_id, job)
    if args.json:
        out = {
            "where": f"{plane.name} ({plane.profile.cloud})",
            "job": job.model_dump(mode="json", exclude={"runtime"}),
            "progress": progress.model_dump(mode="json"),
        }
        print(json.dumps(out, indent=2))
        return 0
    cli.status_one(job, progress, [], place=plane.label())
    return 0


def refreshed_entries() -> list[tuple[IndexEntry, str]]:
    """The remote entries with their current state: unfinished ones are read from
    their control plane (finished ones, and planes out of reach, as last seen)."""
    out: list[tuple[IndexEntry, str]] = []
    planes: dict[str, RemoteControlPlane | None] = {}
    for entry in jobindex.entries():
        if entry.kind != "remote":
            continue
        state = entry.state or "submitted"
        if entry.state not in (JobState.SUCCEEDED.value, JobState.FAILED.value):
            if entry.where not in planes:
                try:
                    planes[entry.where] = open_plane(entry.where)
                except SkyhopError:
                    planes[entry.where] = None
            plane = planes[entry.where]
            try:
                if plane is None:
                    raise NotFoundError("no profile")
                job = _remote_job(plane, entry)
                state = job.state.value
                _remember(entry.request_id, job)
                entry = entry.model_copy(
                    update={
                        "job_id": job.job_id,
                        "state": state,
                        "objects": job.objects_total,
                        "bytes": job.bytes_total,
                    }
                )
            except SkyhopError:
                state = f"{state} (unreachable)"
        out.append((entry, state))
    return out


def cmd_cancel(args: argparse.Namespace) -> int:
    """``skyhop cancel JOB_ID``: a remote job is cancelled in its cloud; a local job
    not running in another process here is failed and its uploads aborted."""
    entry = entry_of(args.job_id)
    from skyhop.controlplane.embedded import embedded

    cp = embedded()
    job = cp.manifest.get_job(args.job_id)
    if job is None and entry is not None and entry.kind == "remote":
        plane = open_plane(entry.where)
        return cancel_remote(args, plane, _remote_job(plane, entry).job_id)
    job = cp.require(args.job_id)
    if job.state.finished:
        raise UsageError(f"job {job.job_id} already {job.state.value}; nothing to cancel")
    pids = cli.live_local_gateways(job)
    if pids:
        raise UsageError(
            f"job {job.job_id} is running in another process on this machine (gateway pid "
            f"{pids[0]}): press Ctrl-C there, then `skyhop cancel {job.job_id}`"
        )
    job = cp.cancel(job.job_id)
    print(printable(f"job {job.job_id} cancelled: {job.error}"))
    return 0
