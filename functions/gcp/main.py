"""skyhop on Google Cloud Functions (2nd gen, functions-framework).

Entry points (``skyhop deploy gcp`` wires their triggers):

``on_gcs_object``      Eventarc: ``google.cloud.storage.object.v1.finalized`` /
                       ``.deleted`` / ``.archived`` on a replicated bucket, or a
                       bucket's Pub/Sub notification (``OBJECT_FINALIZE`` /
                       ``OBJECT_DELETE`` / ``OBJECT_ARCHIVE``, JSON_API_V1 payload)
                       pushed to it -> replication by the rules in ``SKYHOP_RULES``
                       (small objects copied here, bulk queued on ``SKYHOP_REQUESTS_QUEUE``)
``on_request``         Eventarc Pub/Sub (the requests topic): a TransferRequest -> a job
``on_gateway_event``   Eventarc Pub/Sub (the events topic): an EventEnvelope -> the manifest
``reaper``             HTTP, called by Cloud Scheduler -> stuck chunks, budgets, orphans

Each function parses its CloudEvent into pydantic models here and hands them to
:mod:`functions.common`, which builds the control plane from the environment.
Returning acks the event; raising answers 500, so Eventarc (retry policy
``RETRY``) delivers it again: only transient errors raise, a bad or hopeless
message is logged as one error line and acked.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any

import flask
import functions_framework
from cloudevents.http import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from functions import common
from skyhop.controlplane.replication import ObjectEvent

common.configure_logging(stdout=True)

GCS_EVENTS = {
    "google.cloud.storage.object.v1.finalized": "created",
    "google.cloud.storage.object.v1.deleted": "deleted",
    # a versioned bucket's live object became noncurrent (deleted or replaced)
    "google.cloud.storage.object.v1.archived": "deleted",
}
PUBSUB_EVENT = "google.cloud.pubsub.topic.v1.messagePublished"
# Pub/Sub notifications for Cloud Storage: the message's eventType attribute
NOTIFICATION_EVENTS = {
    "OBJECT_FINALIZE": "created",
    "OBJECT_DELETE": "deleted",
    "OBJECT_ARCHIVE": "deleted",
}


class StorageObjectData(BaseModel):
    """The data of a Cloud Storage CloudEvent (``google.events.cloud.storage.v1.StorageObjectData``)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    bucket: str
    name: str
    #: int64 fields travel as JSON strings ("1637874272256630") or, as proto3 JSON
    #: allows and google-cloudevents' StorageObjectData-complex.json shows, numbers
    generation: str | None = None
    size: int | None = None

    @field_validator("generation", mode="before")
    @classmethod
    def _int64(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    md5_hash: str | None = Field(None, alias="md5Hash")
    crc32c: str | None = None
    content_type: str | None = Field(None, alias="contentType")


class PubsubMessage(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    data: str = ""
    attributes: dict[str, str] = Field(default_factory=dict)
    message_id: str | None = Field(None, alias="messageId")


class MessagePublishedData(BaseModel):
    """The data of a Pub/Sub CloudEvent, and the body of a Pub/Sub push request."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    message: PubsubMessage
    subscription: str | None = None
    delivery_attempt: int = Field(0, alias="deliveryAttempt")  # 0: no dead-letter policy

    @property
    def delivery(self) -> int | None:
        return self.delivery_attempt or None

    def body(self) -> bytes:
        try:
            return base64.b64decode(self.message.data, validate=True)
        except (binascii.Error, ValueError):
            raise common.BadMessage("Pub/Sub message data is not base64") from None


def _data(event: CloudEvent) -> Any:
    data = event.get_data()
    if isinstance(data, bytes | str):
        try:
            return json.loads(data)
        except ValueError:
            raise common.BadMessage("event data is not JSON") from None
    return data


def object_event(event: CloudEvent) -> ObjectEvent | None:
    """A GCS CloudEvent, or a bucket's Pub/Sub notification, as an ObjectEvent;
    None for event types replication ignores."""
    if event["type"] == PUBSUB_EVENT:
        return notification_event(published(event))
    kind = GCS_EVENTS.get(event["type"])
    if kind is None:
        return None
    try:
        obj = StorageObjectData.model_validate(_data(event))
    except ValidationError as exc:
        raise common.BadMessage(common.validation_message(exc, "storage event")) from None
    return _object_event(kind, obj)


def notification_event(message: MessagePublishedData) -> ObjectEvent | None:
    """A Cloud Storage Pub/Sub notification (attributes ``eventType``, ``bucketId``,
    ``objectId``; data: the object resource, ``payloadFormat`` JSON_API_V1)."""
    attributes = message.message.attributes
    kind = NOTIFICATION_EVENTS.get(attributes.get("eventType", ""))
    if kind is None:
        return None
    if attributes.get("payloadFormat", "JSON_API_V1") != "JSON_API_V1":
        raise common.BadMessage("storage notification without its object (payloadFormat NONE)")
    try:
        obj = StorageObjectData.model_validate_json(message.body())
    except ValidationError as exc:
        raise common.BadMessage(common.validation_message(exc, "storage notification")) from None
    return _object_event(kind, obj)


def _object_event(kind: str, obj: StorageObjectData) -> ObjectEvent:
    return ObjectEvent(
        kind=kind,  # type: ignore[arg-type]
        uri=f"gs://{obj.bucket}/{obj.name}",
        size=obj.size if kind == "created" else None,
        etag=obj.generation if kind == "created" else None,  # GCSStore's etag is the generation
    )


def published(event: CloudEvent) -> MessagePublishedData:
    try:
        return MessagePublishedData.model_validate(_data(event))
    except ValidationError as exc:
        raise common.BadMessage(common.validation_message(exc, "Pub/Sub event")) from None


def _edge(kind: str, event: CloudEvent, fn: Any) -> common.Handled:
    """Payload errors become one error line and an ack."""
    try:
        return fn()
    except common.BadMessage as exc:
        return common.drop(kind, str(exc), event_id=event["id"], event_type=event["type"])


@functions_framework.cloud_event
def on_gcs_object(cloud_event: CloudEvent) -> None:
    def run() -> common.Handled:
        found = object_event(cloud_event)
        if found is None:
            common.log(logging.INFO, "event type ignored", event_type=cloud_event["type"])
            return common.Handled(action="done", detail="ignored")
        return common.handle_object_events([found], message_id=cloud_event["id"])

    _edge("bucket event", cloud_event, run)


@functions_framework.cloud_event
def on_request(cloud_event: CloudEvent) -> None:
    def run() -> common.Handled:
        message = published(cloud_event)
        return common.handle_request(
            message.body(), delivery=message.delivery, message_id=message.message.message_id
        )

    _edge("request", cloud_event, run)


@functions_framework.cloud_event
def on_gateway_event(cloud_event: CloudEvent) -> None:
    def run() -> common.Handled:
        message = published(cloud_event)
        return common.handle_gateway_event(message.body(), delivery=message.delivery)

    _edge("gateway event", cloud_event, run)


@functions_framework.http
def reaper(request: flask.Request) -> tuple[str, int, dict[str, str]]:
    report = common.run_reaper()
    return report.model_dump_json(), 200, {"Content-Type": "application/json"}
