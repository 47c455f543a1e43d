"""``bucket_events``: S3 object events replicate objects by the replication rules.

Events arrive on the bucket-events queue either from EventBridge (``Object
Created`` / ``Object Deleted``, the default of ``infra_cdk``) or straight from
S3 notifications (``ObjectCreated:*`` / ``ObjectRemoved:*`` /
``LifecycleExpiration:*``), the latter also wrapped in an SNS notification
(S3 -> SNS -> SQS without raw message delivery); all are parsed here, with
Powertools' event data classes, into cloud-neutral
:class:`~skyhop.controlplane.replication.ObjectEvent` values, and handed to
:func:`functions.common.handle_object_events`: objects up to a rule's
``inline_max_bytes`` are copied by this function, larger ones are queued as one
TransferRequest per rule for the gateways, deletes propagate where a rule says
so.

One rule for deletes on both paths (:func:`s3_kind`): an object gone is
``deleted`` whoever removed it, a request (``ObjectRemoved:*``, EventBridge
reason ``DeleteObject``) or a lifecycle rule expiring it
(``LifecycleExpiration:Delete`` / ``:DeleteMarkerCreated``, EventBridge reason
``Lifecycle Expiration``), and it reaches the destination exactly where the
replication rule says ``propagate_deletes``.

S3 test events and other S3 event types are settled quietly; a message that
is no bucket event at all is logged and counted (``UnrecognizedBucketEvents``),
never retried. A record fails alone (``batchItemFailures``) when a copy failed
for a transient reason.
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
from skyhop.errors import SkyhopError, first_line
from skyhop.stores.s3 import S3Store
from skyhop.uri import parse_uri

processor = BatchProcessor(event_type=EventType.SQS)

EVENTBRIDGE_KINDS = {"Object Created": "created", "Object Deleted": "deleted"}
#: S3 notification event names by family (``ObjectCreated:Put`` is ``ObjectCreated``)
S3_KINDS = {
    "ObjectCreated": "created",
    "ObjectRemoved": "deleted",
    "LifecycleExpiration": "deleted",  # Delete, DeleteMarkerCreated: as EventBridge says
}


class NotABucketEvent(ValueError):
    """A queue message that is no S3 or EventBridge bucket notification."""


def s3_kind(event_name: str) -> str | None:
    """``created`` / ``deleted`` for an S3 notification's ``eventName`` (with or
    without the ``s3:`` prefix); None for the types replication ignores
    (restores, tagging, ACLs, lifecycle transitions, ...)."""
    family = event_name.removeprefix("s3:").partition(":")[0]
    return S3_KINDS.get(family)


def _unwrapped(raw: Any) -> Any:
    """The S3 event inside an SNS notification (S3 -> SNS -> SQS without raw
    message delivery), else ``raw`` itself."""
    if isinstance(raw, dict) and raw.get("Type") == "Notification" and "TopicArn" in raw:
        message = raw.get("Message")
        if not isinstance(message, str):
            raise NotABucketEvent("an SNS notification without a Message")
        try:
            return json.loads(message)
        except ValueError:
            raise NotABucketEvent(
                f"an SNS notification from {raw.get('TopicArn')} whose Message is not JSON"
            ) from None
    return raw


def object_events(body: str, tags: Any = None) -> list[ObjectEvent]:
    """The object events in one SQS body; ``tags(bucket)`` supplies bucket tags
    (needed only by rules that select buckets by tag). Raises NotABucketEvent
    for a message that is no bucket notification."""
    raw = _unwrapped(json.loads(body))
    if not isinstance(raw, dict):
        raise NotABucketEvent(f"a JSON {type(raw).__name__}, not a bucket notification")
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
            kind = s3_kind(record.event_name)
            if kind is None:
                continue
            obj = record.s3.get_object
            found.append(
                (
                    kind,
                    record.s3.bucket.name,
                    unquote_plus(obj["key"]),
                    obj.get("size"),
                    obj.get("eTag"),
                )
            )
    elif raw.get("Event") != "s3:TestEvent":  # sent once when a notification is configured
        raise NotABucketEvent(
            "neither an S3 notification nor an EventBridge S3 event "
            f"(keys: {', '.join(sorted(raw)[:8]) or 'none'})"
        )
    return _events_of(found, tags)


def _events_of(
    found: list[tuple[str, str, str, int | None, str | None]], tags: Any
) -> list[ObjectEvent]:
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
    """A bucket's tags, read once per execution environment through the S3 store
    (none when they cannot be read: a rule selecting by tag then does not match)."""
    try:
        return S3Store(parse_uri(f"s3://{bucket}/")).tags()
    except SkyhopError as exc:
        logger.warning("cannot read the tags of bucket %s: %s", bucket, exc)
        return {}


def _tag_rules() -> bool:
    config = shared.settings().rules
    return config is not None and any(r.bucket_tag for r in config.rules)


def record_handler(record: SQSRecord) -> None:
    with logger.append_context_keys(message_id=record.message_id):
        try:
            events = object_events(record.body, bucket_tags if _tag_rules() else None)
        except NotABucketEvent as exc:
            logger.warning("ignoring a message that is not a bucket event: %s", exc)
            metrics.add_metric(name="UnrecognizedBucketEvents", unit=MetricUnit.Count, value=1)
            return
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("dropping a malformed bucket event: %s", first_line(exc))
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
