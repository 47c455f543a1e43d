"""What cloud functions call: one message in, the job one step further.

Every function (AWS Lambda, GCP Cloud Functions, Azure Functions) is a thin
adapter that parses its trigger's payload and calls one of these with a
:class:`ControlPlane` built from its environment (DynamoDB or another
manifest, a cloud compute provider, and ``event_sink`` set to the gateway
events queue, so gateways post their events there).

    submit_request     TransferRequest -> manifest, plan, gateways, first dispatch
    on_gateway_event   a gateway event -> conditional update, more dispatch, finish
    reap               scheduled: stuck chunks, unready or lost gateways, jobs past
                       their budget, orphans, resuming interrupted jobs
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from skyhop.controlplane.service import ControlPlane
from skyhop.errors import ConflictError, SkyhopError
from skyhop.models import GatewayEvent, Job, JobReport, JobState, TransferRequest, utcnow

log = logging.getLogger("skyhop.serverless")


def submit_request(cp: ControlPlane, request: TransferRequest) -> Job:
    """Validate, list, plan, provision and dispatch. A bad request raises before
    anything is provisioned; a failure after provisioning tears it down."""
    job = cp.create_job(request)
    return cp.start(job.job_id)


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
    queues_deleted: list[str] = Field(
        default_factory=list, description="jobs whose leftover control queues were deleted"
    )
    errors: list[str] = Field(default_factory=list)


def jobs_in(cp: ControlPlane, states: set[JobState], limit: int = 1000) -> list[Job]:
    """Jobs in ``states``: from the manifest's state index when it has one
    (``iter_jobs``), else among the ``limit`` most recent jobs."""
    iter_jobs = getattr(cp.manifest, "iter_jobs", None)
    if iter_jobs is not None:
        return list(iter_jobs(states))
    return [j for j in cp.jobs(limit=limit) if j.state in states]


def reap(
    cp: ControlPlane, *, budget: timedelta = timedelta(hours=24), resume: bool = True
) -> ReapReport:
    """One sweep of the scheduled reaper, for every cloud:

    * provisioning jobs: wired when every gateway is ready (a lost gateway_ready
      handler), interrupted when not all were ready within ``Limits.ready_within``;
    * running jobs: interrupted when a gateway is gone, else stuck chunks go back
      to pending, more is dispatched, and a job whose transfer is done is finished;
    * jobs (provisioning or running) past their time ``budget`` fail;
    * gateways (and firewall rules) that no live job owns are torn down, and so
      are control queues left behind by finished or unknown jobs;
    * with ``resume``, interrupted jobs start again on fresh gateways while they
      have attempts left (``Limits.max_attempts``), else they fail naming their
      last error.
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
            report.errors.append(f"{job_id}: {_one_line(exc)}")
    for job_id in report.jobs_finished:
        live.discard(job_id)
    orphans = {g.job_id for g in cp.compute.list_gateways() if g.job_id not in live}
    for job_id in sorted(orphans):
        cp.teardown(job_id)
        report.orphans_terminated.append(job_id)
    _leftover_queues(cp, live, report)
    if resume:
        for job in jobs_in(cp, {JobState.INTERRUPTED}):
            _interrupted(cp, job, report)
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
        report.errors.append(f"{job.job_id}: {_one_line(exc)}")


def _leftover_queues(cp: ControlPlane, live: set[str], report: ReapReport) -> None:
    """Delete the control queues of jobs that are finished or unknown (a crash
    between creating queues and recording them; a teardown that failed)."""
    if cp.control_queues is None:
        return
    try:
        owners = cp.control_queues.jobs() - live
    except SkyhopError as exc:
        report.errors.append(f"listing control queues: {_one_line(exc)}")
        return
    for job_id in sorted(owners):
        job = cp.manifest.get_job(job_id)
        if job is not None and not job.state.finished:
            continue  # being started, or interrupted: its queues may still be in use
        try:
            cp.control_queues.delete_job(job_id)
            report.queues_deleted.append(job_id)
        except SkyhopError as exc:
            report.errors.append(f"{job_id}: deleting control queues: {_one_line(exc)}")


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:500] if text else type(exc).__name__
