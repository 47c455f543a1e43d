"""What cloud functions call: one message in, the job one step further.

Every function (AWS Lambda, GCP Cloud Functions, Azure Functions) is a thin
adapter that parses its trigger's payload and calls one of these with a
:class:`ControlPlane` built from its environment (DynamoDB or another
manifest, a cloud compute provider, and ``event_sink`` set to the gateway
events queue, so gateways post their events there).

    submit_request     TransferRequest -> manifest, plan, gateways, first dispatch
                       (a sync request: compared and planned whole, then the same)
    on_gateway_event   a gateway event -> conditional update, more dispatch, finish
    reap               scheduled: stuck chunks, unready or lost gateways, jobs past
                       their budget, orphans, resuming interrupted jobs
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pydantic import BaseModel, Field, TypeAdapter

from skyhop.compute.base import FirewallRules
from skyhop.controlplane.service import ControlPlane
from skyhop.controlplane.sync import submit_sync
from skyhop.errors import ConflictError, SkyhopError, first_line
from skyhop.models import (
    EventEnvelope,
    GatewayEvent,
    Job,
    JobReport,
    JobState,
    TransferRequest,
    parse_message,
    utcnow,
)
from skyhop.state.base import JobsByState, PurgesExpired

log = logging.getLogger("skyhop.serverless")


def submit_request(cp: ControlPlane, request: TransferRequest) -> Job:
    """Validate, list, plan, provision and dispatch. A bad request raises before
    anything is provisioned; a failure after provisioning tears it down. A sync
    request (``mode='sync'``) is compared and planned whole here
    (:func:`~skyhop.controlplane.sync.submit_sync`)."""
    job = submit_sync(cp, request) if request.mode == "sync" else cp.create_job(request)
    if request.hold:  # the sender shows the plan first and sends start_job (or cancel_job)
        return job
    return start_job(cp, job.job_id)


def start_job(cp: ControlPlane, job_id: str) -> Job:
    """Start a planned (or interrupted) job. A sync that has nothing to copy
    launches no gateway: it is verified, its deletes run and it is reported now."""
    job = cp.require(job_id)
    if job.state == JobState.PLANNED and job.sync is not None and job.objects_total == 0:
        cp.manifest.update_job(job_id, expect={JobState.PLANNED}, state=JobState.RUNNING)
        cp.finish(job_id)
        return cp.require(job_id)
    return cp.start(job_id)


def on_gateway_event(cp: ControlPlane, event: GatewayEvent) -> JobReport | None:
    """Apply one event; when the last object is done, verify and tear down.
    Returns the final report when this call finished the job."""
    cp.handle_event(event)
    job = cp.manifest.get_job(event.job_id)
    if job is None or job.state != JobState.RUNNING:
        return None
    cp.dispatch(job.job_id)
    if not cp.transfer_done(job.job_id):
        return None
    try:
        return cp.finish(job.job_id)
    except ConflictError:
        return None  # another invocation is finishing it


class ReapReport(BaseModel):
    redispatched: int = 0
    jobs_failed: list[str] = Field(default_factory=list, description="past their time budget")
    orphans_terminated: list[str] = Field(default_factory=list)
    jobs_finished: list[str] = Field(default_factory=list)
    connected: list[str] = Field(
        default_factory=list, description="provisioning jobs wired by the reaper"
    )
    interrupted: list[str] = Field(
        default_factory=list, description="gateways gone, or not ready in time"
    )
    resumed: list[str] = Field(default_factory=list)
    gave_up: list[str] = Field(default_factory=list, description="interrupted too often")
    holds_expired: list[str] = Field(
        default_factory=list, description="held jobs nobody started within the hold window"
    )
    rules_revoked: list[str] = Field(
        default_factory=list,
        description="finished or unknown jobs whose leftover firewall rules were revoked",
    )
    queues_deleted: list[str] = Field(
        default_factory=list, description="jobs whose leftover control queues were deleted"
    )
    jobs_purged: list[str] = Field(
        default_factory=list, description="finished jobs past their retention, deleted"
    )
    errors: list[str] = Field(default_factory=list)


def jobs_in(cp: ControlPlane, states: set[JobState], limit: int = 1000) -> list[Job]:
    """Jobs in ``states``: from the manifest's state index when it has one
    (:class:`~skyhop.state.base.JobsByState`), else among the ``limit`` most recent jobs.
    A multicast job's destination legs are not jobs of their own here: their job
    runs, resumes and finishes them."""
    if isinstance(cp.manifest, JobsByState):
        return [j for j in cp.manifest.iter_jobs(states) if j.leg_of is None]
    return [j for j in cp.jobs(limit=limit) if j.state in states and j.leg_of is None]


HOLD_WINDOW = timedelta(hours=1)


def reap(
    cp: ControlPlane,
    *,
    budget: timedelta = timedelta(hours=24),
    resume: bool = True,
    hold_window: timedelta = HOLD_WINDOW,
) -> ReapReport:
    """One sweep of the scheduled reaper, for every cloud:

    * provisioning jobs: wired when every gateway is ready (a lost gateway_ready
      handler), interrupted when not all were ready within ``Limits.ready_within``;
    * running jobs: interrupted when a gateway is gone, else stuck chunks go back
      to pending, more is dispatched, and a job whose transfer is done is finished;
    * jobs (provisioning or running) past their time ``budget`` fail;
    * gateways (and firewall rules) that no live job owns are torn down; firewall
      rules that finished or unknown jobs left (a revoke that failed), found by
      their job tag, are revoked; and control queues left behind by finished or
      unknown jobs are deleted;
    * with ``resume``, interrupted jobs start again on fresh gateways while they
      have attempts left (``Limits.max_attempts``), else they fail naming their
      last error;
    * a manifest whose service has no TTL (:class:`~skyhop.state.base.PurgesExpired`,
      Table Storage) deletes the finished jobs past their retention;
    * held jobs (``TransferRequest.hold``) nobody started within ``hold_window``
      fail, their multipart uploads aborted (the sender was gone before it answered).
    """
    report = ReapReport()
    now = utcnow()
    live: set[str] = set()
    for job in jobs_in(cp, {JobState.PROVISIONING, JobState.RUNNING}):
        job_id = job.job_id
        try:
            if now - job.created_at > budget:
                try:
                    cp.teardown(job_id)
                finally:
                    cp.manifest.update_job(
                        job_id, state=JobState.FAILED, error=f"exceeded its time budget of {budget}"
                    )
                report.jobs_failed.append(job_id)
                continue
            live.add(job_id)
            if job.state == JobState.PROVISIONING:
                _provisioning(cp, job, now, report)
            else:
                _running(cp, job, report)
            if job_id in report.interrupted:
                live.discard(job_id)  # torn down already
        except ConflictError:
            pass  # another invocation moved the job on
        except SkyhopError as exc:
            log.warning("reaper: job %s: %s", job_id, exc)
            report.errors.append(f"{job_id}: {first_line(exc, limit=500)}")
    for job_id in report.jobs_finished:
        live.discard(job_id)
    orphans = {g.job_id for g in cp.compute.list_gateways() if g.job_id not in live}
    for job_id in sorted(orphans):
        try:
            cp.teardown(job_id)
            report.orphans_terminated.append(job_id)
        except SkyhopError as exc:  # the next orphan is torn down all the same
            report.errors.append(f"{job_id}: tearing down: {first_line(exc, limit=500)}")
    _leftover_rules(cp, live | orphans, report)
    _leftover_queues(cp, live, report)
    if resume:
        for job in jobs_in(cp, {JobState.INTERRUPTED}):
            _interrupted(cp, job, report)
    if isinstance(cp.manifest, PurgesExpired):  # a service without TTL
        try:
            report.jobs_purged = cp.manifest.purge_expired()
        except SkyhopError as exc:
            report.errors.append(f"purging expired jobs: {first_line(exc, limit=500)}")
    for job in jobs_in(cp, {JobState.PLANNED}):
        if job.request.hold and now - job.updated_at > hold_window:
            cp.cancel(job.job_id, f"held for its start for more than {hold_window}; never started")
            report.holds_expired.append(job.job_id)
    return report


def _provisioning(cp: ControlPlane, job: Job, now: datetime, report: ReapReport) -> None:
    if cp.connect(job.job_id):
        report.connected.append(job.job_id)
        return
    runtime = job.runtime
    launched = (runtime.launched_at if runtime else None) or job.updated_at
    if now - launched <= cp.limits.ready_within:
        return
    waiting = sorted(g.gateway_id for g in runtime.gateways if not g.ready) if runtime else []
    cp.interrupt(
        job.job_id,
        f"gateway(s) not ready within {cp.limits.ready_within}: {', '.join(waiting) or '?'}",
    )
    report.interrupted.append(job.job_id)


def _running(cp: ControlPlane, job: Job, report: ReapReport) -> None:
    job_id = job.job_id
    expected = {g.gateway_id for g in job.runtime.gateways} if job.runtime else set()
    alive = {g.gateway_id for g in cp.compute.list_gateways(job_id)}
    lost = sorted(expected - alive)
    if lost:
        cp.interrupt(job_id, f"gateway(s) gone: {', '.join(lost)}")
        report.interrupted.append(job_id)
        return
    report.redispatched += cp.redispatch_stuck(job_id)
    cp.dispatch(job_id)
    if cp.stalled(job_id):
        cp.complete_ready(job_id)
    if cp.transfer_done(job_id):
        cp.finish(job_id)
        report.jobs_finished.append(job_id)


def _interrupted(cp: ControlPlane, job: Job, report: ReapReport) -> None:
    attempts = job.runtime.attempt if job.runtime else 0
    try:
        if attempts >= cp.limits.max_attempts:
            cp.manifest.update_job(
                job.job_id,
                expect={JobState.INTERRUPTED},
                state=JobState.FAILED,
                error=f"gave up after {attempts} attempts: {job.error}",
            )
            report.gave_up.append(job.job_id)
        else:
            cp.start(job.job_id)
            report.resumed.append(job.job_id)
    except ConflictError:
        pass
    except SkyhopError as exc:
        log.warning("reaper: could not resume job %s: %s", job.job_id, exc)
        report.errors.append(f"{job.job_id}: {first_line(exc, limit=500)}")


def _leftover_rules(cp: ControlPlane, seen: set[str], report: ReapReport) -> None:
    """Revoke the firewall rules of jobs that are finished or unknown: what a revoke
    that failed left behind, found by the rules' job tags (no gateway is left to find
    them by)."""
    if not isinstance(cp.compute, FirewallRules):
        return
    try:
        owners = cp.compute.firewall_jobs() - seen
    except SkyhopError as exc:
        report.errors.append(f"listing firewall rules: {first_line(exc, limit=500)}")
        return
    for job_id in sorted(owners):
        job = cp.manifest.get_job(job_id)
        if job is not None and not job.state.finished:
            continue  # being started, or interrupted and about to resume
        try:
            cp.compute.revoke(job_id)
            report.rules_revoked.append(job_id)
        except SkyhopError as exc:
            report.errors.append(f"{job_id}: revoking rules: {first_line(exc, limit=500)}")


def _leftover_queues(cp: ControlPlane, live: set[str], report: ReapReport) -> None:
    """Delete the control queues of jobs that are finished or unknown (a crash
    between creating queues and recording them; a teardown that failed)."""
    if cp.control_queues is None:
        return
    try:
        owners = cp.control_queues.jobs() - live
    except SkyhopError as exc:
        report.errors.append(f"listing control queues: {first_line(exc, limit=500)}")
        return
    for job_id in sorted(owners):
        job = cp.manifest.get_job(job_id)
        if job is not None and not job.state.finished:
            continue  # being started, or interrupted: its queues may still be in use
        try:
            cp.control_queues.delete_job(job_id)
            report.queues_deleted.append(job_id)
        except SkyhopError as exc:
            report.errors.append(f"{job_id}: deleting control queues: {first_line(exc, limit=500)}")


_EVENT = TypeAdapter(GatewayEvent)


def parse_event(body: str) -> GatewayEvent:
    """A queue message body (an EventEnvelope or a bare event) as a typed event,
    read strictly (as the published gateway_event schema says)."""
    try:
        return parse_message(EventEnvelope, body).event
    except ValueError:
        return _EVENT.validate_json(body, strict=True)
