"""``bucket_events``: S3 object events replicate objects by the replication rules.

Events arrive on the bucket-events queue either from EventBridge (``Object
Created`` / ``Object Deleted``, the default of ``infra_cdk``) or straight from
S3 notifications (``ObjectCreated:*`` / ``ObjectRemoved:*``); both are parsed
here, with Powertools' event data classes, into cloud-neutral
:class:`~skyhop.controlplane.replication.ObjectEvent` values, and handed to
:func:`functions.common.handle_object_events`: objects up to a rule's
``inline_max_bytes`` are copied by this function, larger ones are queued as one
TransferRequest per rule for the gateways, deletes propagate where a rule says
so. S3 test events and other event types are ignored. A record fails alone
(``batchItemFailures``) when a copy failed for a transient reason.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes import S3Event, S3EventBridgeNotificationEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from functions import common as shared
from functions.aws.common import configure, logger, metrics, tracer
from skyhop.controlplane.replication import ObjectEvent

processor = BatchProcessor(event_type=EventType.SQS)

EVENTBRIDGE_KINDS = {"Object Created": "created", "Object Deleted": "deleted"}


def object_events(body: str, tags: Any = None) -> list[ObjectEvent]:
    """The object events in one SQS body; ``tags(bucket)`` supplies bucket tags
    (needed only by rules that select buckets by tag)."""
    raw = json.loads(body)
    if not isinstance(raw, dict):
        return []
    found: list[tuple[str, str, str, int | None, str | None]] = []
    if raw.get("source") == "aws.s3" and "detail" in raw:
        event = S3EventBridgeNotificationEvent(raw)
        kind = EVENTBRIDGE_KINDS.get(event.detail_type)
        if kind is not None:
            obj = event.detail.object
            found.append(
                (kind, event.detail.bucket.name, obj["key"], obj.get("size"), obj.get("etag"))
            )
    elif isinstance(raw.get("Records"), list):
        for record in S3Event(raw).records:
            name = record.event_name
            if not name.startswith(("ObjectCreated:", "ObjectRemoved:")):
                continue
            obj = record.s3.get_object
            kind = "created" if name.startswith("ObjectCreated:") else "deleted"
            found.append(
                (
                    kind,
                    record.s3.bucket.name,
                    unquote_plus(obj["key"]),
                    obj.get("size"),
                    obj.get("eTag"),
                )
            )
    return [
        ObjectEvent(
            kind=kind,  # type: ignore[arg-type]
            uri=f"s3://{bucket}/{key}",
            size=size if kind == "created" else None,
            etag=etag or None,
            bucket_tags=tags(bucket) if tags is not None else {},
        )
        for kind, bucket, key, size, etag in found
    ]


@cache
def bucket_tags(bucket: str) -> dict[str, str]:
    """A bucket's tags, read once per execution environment."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        tags = boto3.client("s3").get_bucket_tagging(Bucket=bucket)["TagSet"]
    except (ClientError, BotoCoreError):
        return {}
    return {t["Key"]: t["Value"] for t in tags}


def _tag_rules() -> bool:
    config = shared.settings().rules
    return config is not None and any(r.bucket_tag for r in config.rules)


def record_handler(record: SQSRecord) -> None:
    with logger.append_context_keys(message_id=record.message_id):
        try:
            events = object_events(record.body, bucket_tags if _tag_rules() else None)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("dropping a malformed bucket event: %s", str(exc).splitlines()[0])
            metrics.add_metric(name="MalformedBucketEvents", unit=MetricUnit.Count, value=1)
            return
        if not events:
            return
        handled = shared.handle_object_events(events, message_id=record.message_id)
        for outcome in handled.outcomes:
            metrics.add_metric(
                name=f"Objects{outcome.action.capitalize()}", unit=MetricUnit.Count, value=1
            )


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    configure()
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )


def reset() -> None:
    """Forget cached bucket tags (tests)."""
    bucket_tags.cache_clear()
