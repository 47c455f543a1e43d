"""What cloud functions call: one message in, the job one step further.

Every function (AWS Lambda, GCP Cloud Functions, Azure Functions) is a thin
adapter that parses its trigger's payload and calls one of these with a
:class:`ControlPlane` built from its environment (DynamoDB or another
manifest, a cloud compute provider, and ``event_sink`` set to the gateway
events queue, so gateways post their events there).

    submit_request     TransferRequest -> manifest, plan, gateways, first dispatch
    on_gateway_event   a gateway event -> conditional update, more dispatch, finish
    reap               scheduled: stuck chunks, jobs past their budget, orphans
"""

from __future__ import annotations

import logging
from datetime import timedelta

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
    jobs_failed: list[str] = Field(default_factory=list)
    orphans_terminated: list[str] = Field(default_factory=list)
    jobs_finished: list[str] = Field(default_factory=list)


def reap(cp: ControlPlane, *, budget: timedelta = timedelta(hours=24)) -> ReapReport:
    """Re-dispatch chunks stuck past their deadline, fail jobs past their time
    budget, and terminate gateways (and revoke rules) that no live job owns."""
    report = ReapReport()
    now = utcnow()
    live: set[str] = set()
    for job in cp.jobs(limit=1000):
        if job.state != JobState.RUNNING:
            continue
        if now - job.created_at > budget:
            try:
                cp.teardown(job.job_id)
            finally:
                cp.manifest.update_job(
                    job.job_id, state=JobState.FAILED, error=f"exceeded its time budget of {budget}"
                )
            report.jobs_failed.append(job.job_id)
            continue
        live.add(job.job_id)
        report.redispatched += cp.redispatch_stuck(job.job_id)
        try:
            cp.dispatch(job.job_id)
            if cp.transfer_done(job.job_id):
                cp.finish(job.job_id)
                report.jobs_finished.append(job.job_id)
                live.discard(job.job_id)
        except ConflictError:
            pass
        except SkyhopError as exc:
            log.warning("reaper: job %s: %s", job.job_id, exc)
    orphans = {g.job_id for g in cp.compute.list_gateways() if g.job_id not in live}
    for job_id in sorted(orphans):
        cp.teardown(job_id)
        report.orphans_terminated.append(job_id)
    return report
