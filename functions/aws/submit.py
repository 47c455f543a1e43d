"""``submit``: TransferRequest messages on the requests queue become running jobs.

Each SQS record is one request; failures are reported per record
(``batchItemFailures``). The work is :func:`functions.common.handle_request`,
shared with the other clouds: a request that does not validate, or names a
source or destination that cannot be used, is rejected at once (a
``request_rejected`` message with a one-line reason goes to its ``reply_to``,
else the results queue) and not retried. A transient failure (throttling,
gateways that did not come up) fails the record, so SQS delivers it again and,
after the queue's ``maxReceiveCount``, moves it to the dead-letter queue.

Requests are idempotent on ``request_id`` (Powertools Idempotency on DynamoDB):
a redelivered request that was already settled returns its recorded outcome
without touching the job again.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import idempotent_function
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import common as shared
from functions.aws.common import configure, idempotency, logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)


def _settle(request: dict[str, Any], body: str, message_id: str | None) -> dict[str, Any]:
    # delivery=None: a transient error always raises; the queue's redrive policy,
    # not a count of ours, decides when a message stops coming back
    return shared.handle_request(body, message_id=message_id).model_dump(mode="json")


def settle_once(body: str, message_id: str | None = None) -> dict[str, Any]:
    """The request's outcome, computed on its first settled delivery only."""
    layer, config = idempotency()
    once = idempotent_function(
        data_keyword_argument="request", persistence_store=layer, config=config
    )(_settle)
    return once(request=_fields(body, message_id), body=body, message_id=message_id)


def _fields(body: str, message_id: str | None = None) -> dict[str, Any]:
    """The body as a dict for the idempotency key (``{}`` when it is not one:
    such a body is rejected without an idempotency record). A request without
    a ``request_id`` is keyed by its SQS message id, as the job will be."""
    try:
        raw = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    if message_id and "request_id" not in raw:
        raw["request_id"] = shared.message_request_id(message_id)
    return raw


def record_handler(record: SQSRecord) -> None:
    request_id = _fields(record.body, record.message_id).get("request_id")
    with logger.append_context_keys(request_id=request_id, message_id=record.message_id):
        outcome = settle_once(record.body, record.message_id)
        with logger.append_context_keys(job_id=outcome.get("job_id")):
            logger.info("request %s: %s", outcome["action"], outcome["detail"])
        name = "JobsStarted" if outcome["action"] == "done" else "RequestsRejected"
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    configure()
    idempotency()[1].register_lambda_context(context)
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
