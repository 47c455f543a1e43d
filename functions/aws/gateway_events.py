"""``gateway_events``: gateway events on the events queue update the manifest.

Each record is one :class:`~skyhop.models.EventEnvelope`, handed to
:func:`functions.common.handle_gateway_event` (shared with the other clouds):
the control plane applies it with conditional writes, so duplicated, late or
reordered events change nothing; it dispatches more chunks, and when the last
object is settled it verifies the destination, tears the gateways down and
sends the report to the request's ``reply_to`` (else the results queue). A
malformed record is logged and dropped; a transient failure fails only its own
record (``batchItemFailures``), which SQS delivers again.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import common as shared
from functions.aws.common import configure, logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)

METRICS = {
    "chunk_verified": "ChunksVerified",
    "chunk_failed": "ChunksFailed",
    "gateway_error": "GatewayErrors",
    "gateway_ready": "GatewaysReady",
    "gateway_enrol": "GatewaysEnrolling",
}


def record_handler(record: SQSRecord) -> None:
    with logger.append_context_keys(message_id=record.message_id):
        handled = shared.handle_gateway_event(record.body)
        with logger.append_context_keys(job_id=handled.job_id):
            if handled.action == "dropped":
                metrics.add_metric(name="EventsDropped", unit=MetricUnit.Count, value=1)
                return
            name = METRICS.get(handled.detail, "GatewayEvents")
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
            if handled.report is not None:
                state = handled.report.state.value
                logger.info("job %s", state)
                metrics.add_metric(name=f"Jobs{state.capitalize()}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    configure()
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
