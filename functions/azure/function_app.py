"""skyhop on Azure Functions (Python v2 programming model).

Functions (``skyhop deploy azure`` sets the app settings they name):

``on_request``        queue trigger on ``%SKYHOP_REQUESTS_QUEUE_NAME%``: a TransferRequest -> a job
``on_gateway_event``  queue trigger on ``%SKYHOP_EVENTS_QUEUE_NAME%``: an EventEnvelope -> the manifest
``on_blob_event``     Event Grid trigger: ``Microsoft.Storage.BlobCreated`` / ``BlobDeleted``,
                      in the Event Grid schema or the CloudEvents 1.0 schema (both
                      are subscription options) -> replication by the rules in
                      ``SKYHOP_RULES``
``reaper``            timer, every five minutes -> stuck chunks, budgets, orphans

Both queues live in the account of the ``AzureWebJobsStorage`` connection; the
host decodes the base64 message text (how :class:`skyhop.queues.azure_queue.AzureQueue`
sends it) before the function sees it, and a body parked in blob storage (over
64 KiB) is fetched here. Each decorated function calls a plain ``process_*``
function, which tests call with real ``azure.functions`` objects.

Returning deletes the message; raising leaves it to come back after the
visibility timeout. Only transient errors raise (see :mod:`functions.common`);
a bad or hopeless message is logged as one error line and deleted, at the
latest on its ``SKYHOP_MAX_DELIVERIES``-th delivery (``host.json`` sets the
host's ``maxDequeueCount`` to the same 5, so nothing reaches the poison queue
unlogged).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from urllib.parse import unquote, urlsplit

import azure.functions as func
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from functions import common
from skyhop.controlplane.replication import ObjectEvent
from skyhop.controlplane.serverless import ReapReport
from skyhop.errors import first_line
from skyhop.queues.azure_queue import PAYLOAD_PREFIX, parse_azq, payload_container, resolve_body

common.configure_logging()

app = func.FunctionApp()

BLOB_EVENTS = {
    "Microsoft.Storage.BlobCreated": "created",
    "Microsoft.Storage.BlobDeleted": "deleted",
}
# Data Lake (hierarchical namespace) accounts send BlobCreated for an empty
# CreateFile, then again when the data is flushed: only the latter has the bytes
SKIPPED_APIS = {"CreateFile"}


class BlobEventData(BaseModel):
    """The data of ``Microsoft.Storage.BlobCreated`` / ``BlobDeleted`` (Event Grid schema)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api: str | None = None
    url: str
    e_tag: str | None = Field(None, alias="eTag")
    content_length: int | None = Field(None, alias="contentLength")
    blob_type: str | None = Field(None, alias="blobType")


def blob_uri(topic: str | None, subject: str | None, url: str) -> str:
    """``az://ACCOUNT/CONTAINER/BLOB`` of an event: the account from the topic
    (``.../storageAccounts/NAME``), container and blob from the subject
    (``/blobServices/default/containers/C/blobs/B``); the URL when they are missing."""
    account = None
    if topic and "/storageAccounts/" in topic:
        account = topic.rsplit("/storageAccounts/", 1)[1].split("/")[0]
    if subject and "/containers/" in subject and "/blobs/" in subject:
        container, _, blob = subject.split("/containers/", 1)[1].partition("/blobs/")
    else:
        split = urlsplit(url)
        parts = unquote(split.path).lstrip("/").split("/", 2)
        host = split.hostname or ""
        if host.endswith(".blob.core.windows.net"):
            account = account or host.split(".")[0]
            container, blob = parts[0], "/".join(parts[1:])
        else:  # path style (emulators): /ACCOUNT/CONTAINER/BLOB
            account = account or parts[0]
            container, blob = (parts + ["", ""])[1], (parts + ["", ""])[2]
    if not account or not container or not blob:
        raise common.BadMessage(f"blob event names no account/container/blob: {subject or url}")
    return f"az://{account}/{container}/{blob}"


BlobEvent = func.EventGridEvent | func.CloudEvent


def envelope(event: BlobEvent) -> tuple[str, str | None, str | None, str]:
    """(type, topic, subject, id) of an event in either schema: Event Grid's
    ``eventType``/``topic``, or CloudEvents' ``type``/``source``."""
    if isinstance(event, func.CloudEvent):
        return event.type, event.source, event.subject, event.id
    if isinstance(event, func.EventGridEvent):
        return event.event_type, event.topic, event.subject, event.id
    raise common.BadMessage(f"not an Event Grid or CloudEvents event: {type(event).__name__}")


def object_event(event: BlobEvent) -> ObjectEvent | None:
    """A blob event (either schema) as an ObjectEvent; None for events replication ignores."""
    event_type, topic, subject, _ = envelope(event)
    kind = BLOB_EVENTS.get(event_type)
    if kind is None:
        return None
    try:
        data = BlobEventData.model_validate(event.get_json())
    except (ValidationError, ValueError) as exc:
        detail = (
            common.validation_message(exc, "blob event")
            if isinstance(exc, ValidationError)
            else f"blob event data is not JSON: {first_line(exc, limit=500)}"
        )
        raise common.BadMessage(detail) from None
    if data.api in SKIPPED_APIS:
        return None
    return ObjectEvent(
        kind=kind,  # type: ignore[arg-type]
        uri=blob_uri(topic, subject, data.url),
        size=data.content_length if kind == "created" else None,
        etag=data.e_tag if kind == "created" else None,
    )


def _body(msg: func.QueueMessage, queue_uri: str | None) -> tuple[str, str | None]:
    """The message text as sent, and the parked blob to delete once handled."""
    try:
        text = msg.get_body().decode("utf-8")
    except UnicodeDecodeError:
        raise common.BadMessage("queue message is not UTF-8 text") from None
    if not text.startswith(PAYLOAD_PREFIX):
        return text, None
    if not queue_uri:
        raise common.ConfigError("a parked message body, but no azq:// queue URI to find it by")
    account, _ = parse_azq(queue_uri)
    return resolve_body(account, text), f"{account}\0{text[len(PAYLOAD_PREFIX) :]}"


def _forget(parked: str | None) -> None:
    if parked is None:
        return
    account, _, name = parked.partition("\0")
    try:
        payload_container(account).delete_blob(name)
    except Exception as exc:  # noqa: BLE001 - a leftover payload blob is harmless
        common.log(
            logging.WARNING, f"could not delete parked body {name}: {first_line(exc, limit=500)}"
        )


def _queue_message(
    kind: str,
    msg: func.QueueMessage,
    queue_uri: str | None,
    handler: Callable[..., common.Handled],
) -> common.Handled:
    try:
        text, parked = _body(msg, queue_uri)
    except common.BadMessage as exc:
        return common.drop(kind, str(exc), msg.dequeue_count, message_id=msg.id)
    result = handler(text, delivery=msg.dequeue_count)
    _forget(parked)
    return result


def _settings_queue(name: str) -> str | None:
    try:
        return getattr(common.settings(), name)
    except common.ConfigError:
        return None


def process_request(msg: func.QueueMessage) -> common.Handled:
    """A TransferRequest from the requests queue."""
    return _queue_message(
        "request",
        msg,
        _settings_queue("requests_queue"),
        functools.partial(common.handle_request, message_id=msg.id),
    )


def process_gateway_event(msg: func.QueueMessage) -> common.Handled:
    """A gateway event (EventEnvelope) from the events queue."""
    return _queue_message(
        "gateway event", msg, _settings_queue("events_queue"), common.handle_gateway_event
    )


def process_blob_event(event: BlobEvent) -> common.Handled:
    """A storage account's blob event (Event Grid or CloudEvents schema) through
    the replication rules; anything else is dropped with one error line."""
    try:
        event_type, _, _, event_id = envelope(event)
        found = object_event(event)
    except common.BadMessage as exc:
        event_id = str(getattr(event, "id", "") or "") or None
        return common.drop("bucket event", str(exc), event_id=event_id)
    if found is None:
        common.log(logging.INFO, "event ignored", event_type=event_type, event_id=event_id)
        return common.Handled(action="done", detail="ignored")
    return common.handle_object_events([found], message_id=event_id)


def process_reaper() -> ReapReport:
    return common.run_reaper()


@app.queue_trigger(
    arg_name="msg", queue_name="%SKYHOP_REQUESTS_QUEUE_NAME%", connection="AzureWebJobsStorage"
)
def on_request(msg: func.QueueMessage) -> None:
    process_request(msg)


@app.queue_trigger(
    arg_name="msg", queue_name="%SKYHOP_EVENTS_QUEUE_NAME%", connection="AzureWebJobsStorage"
)
def on_gateway_event(msg: func.QueueMessage) -> None:
    process_gateway_event(msg)


@app.event_grid_trigger(arg_name="event")
def on_blob_event(event: func.EventGridEvent) -> None:  # or a func.CloudEvent (same converter)
    process_blob_event(event)


@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
def reaper(timer: func.TimerRequest) -> None:
    process_reaper()
