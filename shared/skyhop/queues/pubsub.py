"""Google Cloud Pub/Sub: ``pubsub://PROJECT/TOPIC[?subscription=NAME]`` (google-cloud-pubsub).

``send`` publishes to TOPIC; ``receive`` pulls from a pull subscription on it,
``NAME`` or by default ``TOPIC-skyhop``. Messages published before the
subscription exists are not delivered to it, so with ``create=True`` (the
default) the first call makes sure both the topic and the subscription exist.

* Credentials: Application Default Credentials; with ``PUBSUB_EMULATOR_HOST``
  set, the client talks to that emulator (insecure, anonymous). Tests run against
  the Google Cloud CLI's Pub/Sub emulator.
* ``receive`` pulls synchronously: with ``wait_seconds`` 0 it asks the server to
  return at once, else it waits up to ``wait_seconds`` for the first message.
* A received message must be acked within ``ack_deadline`` seconds or it is
  redelivered; ``nack`` redelivers it at once. ``receive_count`` is Pub/Sub's
  delivery attempt where the subscription counts them (dead-letter policy), else 1.
"""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import pubsub_v1

from skyhop.errors import AccessError, NotFoundError, SkyhopError, StoreError, UsageError
from skyhop.queues.base import Message

MAX_MESSAGE_BYTES = 10 * 1000 * 1000
_PROJECT = re.compile(r"^[a-z][a-z0-9\-]{4,28}[a-z0-9]$|^[a-z0-9.\-:]+$")
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$")

T = TypeVar("T")


def parse_pubsub(uri: str) -> tuple[str, str, str]:
    """``pubsub://PROJECT/TOPIC[?subscription=NAME]`` -> (project, topic, subscription)."""
    split = urlsplit(uri)
    project = split.netloc
    topic = split.path.strip("/")
    if split.scheme != "pubsub" or not project or not topic or "/" in topic:
        raise UsageError(f"malformed queue URI {uri!r}: expected pubsub://PROJECT/TOPIC")
    if not _PROJECT.match(project):
        raise UsageError(f"malformed queue URI {uri!r}: {project!r} is not a project id")
    if not _NAME.match(topic) or topic.lower().startswith("goog"):
        raise UsageError(f"malformed queue URI {uri!r}: {topic!r} is not a topic name")
    query = parse_qs(split.query)
    unknown = sorted(set(query) - {"subscription"})
    if unknown:
        raise UsageError(f"malformed queue URI {uri!r}: unknown parameter {unknown[0]!r}")
    subscription = query.get("subscription", [f"{topic}-skyhop"])[-1]
    if not _NAME.match(subscription) or subscription.lower().startswith("goog"):
        raise UsageError(
            f"malformed queue URI {uri!r}: {subscription!r} is not a subscription name"
        )
    return project, topic, subscription


class PubSubQueue:
    """The Queue protocol over one Pub/Sub topic and one pull subscription."""

    def __init__(
        self,
        uri: str,
        *,
        ack_deadline: int = 60,
        create: bool = True,
        publisher: pubsub_v1.PublisherClient | None = None,
        subscriber: pubsub_v1.SubscriberClient | None = None,
    ) -> None:
        self.uri = uri
        self.project, self.topic, self.subscription = parse_pubsub(uri)
        if not 10 <= ack_deadline <= 600:
            raise UsageError(f"ack_deadline {ack_deadline} out of range 10..600")
        self.ack_deadline = ack_deadline
        self._publisher = publisher
        self._subscriber = subscriber
        self._ready = not create
        self._ready_lock = threading.Lock()
        self.topic_path = f"projects/{self.project}/topics/{self.topic}"
        self.subscription_path = f"projects/{self.project}/subscriptions/{self.subscription}"

    # ------------------------------------------------------------ plumbing

    def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except SkyhopError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, never leaked
            raise _classify(exc, f"queue {self.uri}: {what}") from None

    @property
    def publisher(self) -> pubsub_v1.PublisherClient:
        if self._publisher is None:
            self._publisher = self._call(pubsub_v1.PublisherClient, "connect")
        self._ensure()
        return self._publisher

    @property
    def subscriber(self) -> pubsub_v1.SubscriberClient:
        if self._subscriber is None:
            self._subscriber = self._call(pubsub_v1.SubscriberClient, "connect")
        self._ensure()
        return self._subscriber

    def _ensure(self) -> None:
        """Create the topic and the subscription once, if asked to; other threads
        wait until both exist (publishing earlier would lose their messages)."""
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                self._create()
                self._ready = True

    def _create(self) -> None:
        if self._publisher is None:
            self._publisher = self._call(pubsub_v1.PublisherClient, "connect")
        if self._subscriber is None:
            self._subscriber = self._call(pubsub_v1.SubscriberClient, "connect")
        publisher, subscriber = self._publisher, self._subscriber
        try:
            self._call(
                lambda: publisher.create_topic(request={"name": self.topic_path}),
                "create topic",
            )
        except _Exists:
            pass
        try:
            self._call(
                lambda: subscriber.create_subscription(
                    request={
                        "name": self.subscription_path,
                        "topic": self.topic_path,
                        "ack_deadline_seconds": self.ack_deadline,
                    }
                ),
                "create subscription",
            )
        except _Exists:
            pass

    # ------------------------------------------------------------ Queue

    def send(self, body: str) -> None:
        self.send_batch([body])

    def send_batch(self, bodies: list[str]) -> None:
        data = [body.encode("utf-8") for body in bodies]
        for item in data:
            if len(item) > MAX_MESSAGE_BYTES:
                raise UsageError(
                    f"message for {self.uri} is {len(item)} bytes: over Pub/Sub's 10 MB limit"
                )
        publisher = self.publisher
        futures = [
            self._call(lambda item=item: publisher.publish(self.topic_path, item), "publish")
            for item in data
        ]
        for future in futures:
            self._call(lambda future=future: future.result(timeout=60), "publish")

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        subscriber = self.subscriber
        count = max(1, min(max_messages, 1000))
        deadline = time.monotonic() + max(0.0, wait_seconds)
        while True:
            remaining = deadline - time.monotonic()
            immediate = remaining <= 0
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    response = self._call(
                        lambda immediate=immediate, remaining=remaining: subscriber.pull(
                            request={
                                "subscription": self.subscription_path,
                                "max_messages": count,
                                "return_immediately": immediate,
                            },
                            timeout=30.0 if immediate else max(remaining, 0.5),
                            retry=None,
                        ),
                        "receive",
                    )
            except _Timeout:
                return []
            if response.received_messages:
                return [
                    Message(
                        body=item.message.data.decode("utf-8"),
                        receipt=item.ack_id,
                        receive_count=max(1, int(item.delivery_attempt or 1)),
                    )
                    for item in response.received_messages
                ]
            if immediate:
                return []

    def ack(self, message: Message) -> None:
        subscriber = self.subscriber
        try:
            self._call(
                lambda: subscriber.acknowledge(
                    request={"subscription": self.subscription_path, "ack_ids": [message.receipt]}
                ),
                "ack",
            )
        except UsageError:
            pass  # an expired ack id: the message will come again, as with any late ack

    def nack(self, message: Message) -> None:
        """Make a received message deliverable again at once."""
        subscriber = self.subscriber
        try:
            self._call(
                lambda: subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription_path,
                        "ack_ids": [message.receipt],
                        "ack_deadline_seconds": 0,
                    }
                ),
                "nack",
            )
        except UsageError:
            pass


class _Exists(StoreError):
    """Internal: the topic or subscription is already there."""


class _Timeout(StoreError):
    """Internal: a pull found nothing before its deadline."""


def _classify(exc: Exception, what: str) -> SkyhopError:
    detail = _short(exc)
    if isinstance(exc, gexc.AlreadyExists):
        return _Exists(f"{what}: already exists")
    if isinstance(exc, gexc.DeadlineExceeded):
        return _Timeout(f"{what}: timed out", retryable=True)
    if isinstance(exc, gexc.NotFound):
        return NotFoundError(f"{what}: not found ({detail})")
    if isinstance(exc, gexc.Unauthenticated | gexc.PermissionDenied | gexc.Forbidden):
        return AccessError(f"{what}: access denied ({detail})")
    if isinstance(exc, auth_exc.GoogleAuthError):
        return AccessError(f"{what}: no usable Google credentials ({detail})")
    if isinstance(exc, gexc.InvalidArgument):
        return UsageError(f"{what}: {detail}")
    if isinstance(
        exc,
        gexc.ServiceUnavailable
        | gexc.TooManyRequests
        | gexc.ResourceExhausted
        | gexc.InternalServerError
        | gexc.Aborted
        | gexc.RetryError,
    ):
        return StoreError(f"{what}: {detail}", retryable=True)
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return StoreError(f"{what}: connection failed ({detail})", retryable=True)
    return StoreError(f"{what}: {detail}")


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = str(message).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
