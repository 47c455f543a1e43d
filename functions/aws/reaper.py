"""``reaper``: every few minutes (EventBridge schedule), clean up after crashes.

First :func:`functions.common.run_reaper`, shared with the other clouds:
chunks dispatched too long ago go back to pending and more work is dispatched,
jobs whose transfer is done but never finished are finished, jobs past their
time budget fail, and gateways that no running job owns are torn down (rules
and KMS grants revoked, instances terminated). Then what needs EC2's view:

* a running job whose gateways are gone is interrupted;
* an interrupted job is resumed on fresh gateways while it has attempts left
  (``Limits.max_attempts``); after that it fails, naming its last error.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from functions import common as shared
from functions.aws.common import configure, logger, metrics, tracer
from skyhop.controlplane import ControlPlane
from skyhop.controlplane.serverless import ReapReport
from skyhop.errors import SkyhopError
from skyhop.models import Job, JobState


class Sweep(BaseModel):
    """What one run did (the handler's return value, also logged)."""

    reap: ReapReport = Field(default_factory=ReapReport)
    interrupted: list[str] = Field(default_factory=list)
    resumed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


def jobs_in(cp: ControlPlane, state: JobState) -> list[Job]:
    """Jobs in ``state``: from the manifest's state index when it has one."""
    iter_jobs = getattr(cp.manifest, "iter_jobs", None)
    if iter_jobs is not None:
        return list(iter_jobs({state}))
    return [j for j in cp.jobs(limit=1000) if j.state == state]


def sweep() -> Sweep:
    out = Sweep(reap=shared.run_reaper())
    cp = shared.control_plane()
    for job in jobs_in(cp, JobState.RUNNING):
        expected = {g.gateway_id for g in job.runtime.gateways} if job.runtime else set()
        try:
            alive = {g.gateway_id for g in cp.compute.list_gateways(job.job_id)}
            lost = sorted(expected - alive)
            if lost:
                cp.interrupt(job.job_id, f"gateway(s) gone: {', '.join(lost)}")
                out.interrupted.append(job.job_id)
        except SkyhopError as exc:
            out.errors.append(f"{job.job_id}: {shared.one_line(exc)}")
    for job in jobs_in(cp, JobState.INTERRUPTED):
        attempts = job.runtime.attempt if job.runtime else 0
        with logger.append_context_keys(job_id=job.job_id):
            try:
                if attempts >= cp.limits.max_attempts:
                    cp.manifest.update_job(
                        job.job_id,
                        expect={JobState.INTERRUPTED},
                        state=JobState.FAILED,
                        error=f"gave up after {attempts} attempts: {job.error}",
                    )
                    out.failed.append(job.job_id)
                else:
                    cp.start(job.job_id)
                    out.resumed.append(job.job_id)
            except SkyhopError as exc:
                logger.warning("could not settle the job: %s", exc)
                out.errors.append(f"{job.job_id}: {shared.one_line(exc)}")
    return out


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    configure()
    result = sweep()
    for name, value in (
        ("OrphansTornDown", len(result.reap.orphans_terminated)),
        ("ChunksRedispatched", result.reap.redispatched),
        ("JobsFinishedByReaper", len(result.reap.jobs_finished)),
        ("JobsPastBudget", len(result.reap.jobs_failed)),
        ("JobsInterrupted", len(result.interrupted)),
        ("JobsResumed", len(result.resumed)),
        ("ReaperErrors", len(result.errors)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    logger.info("reaper sweep", extra=result.model_dump())
    return result.model_dump(mode="json")
