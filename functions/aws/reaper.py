"""``reaper``: every few minutes (EventBridge schedule), clean up after crashes.

The sweep is :func:`functions.common.run_reaper`, shared with the other clouds
(:func:`skyhop.controlplane.serverless.reap`): provisioning jobs are wired
once every gateway is ready or interrupted when one never reports; chunks
dispatched too long ago go back to pending and more work is dispatched; jobs
whose transfer is done but never finished are finished; running jobs whose
gateways are gone are interrupted; jobs past their time budget fail; gateways,
rules, KMS grants and control queues that no live job owns are torn down; and
interrupted jobs are resumed on fresh gateways while they have attempts left
(``Limits.max_attempts``), after which they fail, naming their last error.
This function only adds the metrics.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, Field

from functions import common as shared
from functions.aws.common import configure, logger, metrics, tracer
from skyhop.controlplane.serverless import ReapReport


class Sweep(BaseModel):
    """What one run did (the handler's return value, also logged)."""

    reap: ReapReport = Field(default_factory=ReapReport)
    interrupted: list[str] = Field(default_factory=list)
    resumed: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list, description="gave up after max attempts")
    errors: list[str] = Field(default_factory=list)


def sweep() -> Sweep:
    report = shared.run_reaper()
    return Sweep(
        reap=report,
        interrupted=report.interrupted,
        resumed=report.resumed,
        failed=report.gave_up,
        errors=report.errors,
    )


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
        ("JobsConnectedByReaper", len(result.reap.connected)),
        ("JobsInterrupted", len(result.interrupted)),
        ("JobsResumed", len(result.resumed)),
        ("ControlQueuesReaped", len(result.reap.queues_deleted)),
        ("ReaperErrors", len(result.errors)),
    ):
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
    logger.info("reaper sweep", extra=result.model_dump())
    return result.model_dump(mode="json")
