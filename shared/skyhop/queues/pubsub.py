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
from collections.abc import Callable, Iterable
from functools import partial
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

from skyhop.clouds import gcp
from skyhop.errors import (
    NotFoundError,
    SkyhopError,
    StoreError,
    UsageError,
    translated,
)
from skyhop.queues.base import (
    Message,
    control_queue_job_prefix,
    control_queue_name,
    job_of_control_queue,
)

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
        publisher: PublisherClient | None = None,
        subscriber: SubscriberClient | None = None,
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
        return translated(fn, f"queue {self.uri}: {what}", _classify)

    @property
    def publisher(self) -> PublisherClient:
        if self._publisher is None:
            self._publisher = self._call(PublisherClient, "connect")
        self._ensure()
        return self._publisher

    @property
    def subscriber(self) -> SubscriberClient:
        if self._subscriber is None:
            self._subscriber = self._call(SubscriberClient, "connect")
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
            self._publisher = self._call(PublisherClient, "connect")
        if self._subscriber is None:
            self._subscriber = self._call(SubscriberClient, "connect")
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
            self._call(partial(publisher.publish, self.topic_path, item), "publish")
            for item in data
        ]
        for future in futures:
            self._call(partial(future.result, timeout=60), "publish")

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
                        partial(
                            subscriber.pull,
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
    detail = gcp.short(exc)
    if isinstance(exc, gexc.AlreadyExists):
        return _Exists(f"{what}: already exists")
    if isinstance(exc, gexc.DeadlineExceeded):
        return _Timeout(f"{what}: timed out", retryable=True)
    found = gcp.known(exc, what)
    if found is not None:
        return found
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


# ---------------------------------------------------------------- control queues

SUBSCRIPTION_SUFFIX = "-skyhop"
CONTROL_RETENTION_SECONDS = 24 * 3600
CONTROL_ACK_DEADLINE = 60


def pubsub_control_queue_name(prefix: str, job_id: str, gateway_id: str) -> str:
    """The topic of a gateway's control queue: :func:`control_queue_name` when that is a
    valid Pub/Sub name, else the job's prefix plus a hash of the gateway id."""
    name = control_queue_name(prefix, job_id, gateway_id)
    if _NAME.match(name):
        return name
    import hashlib

    digest = hashlib.sha256(gateway_id.encode()).hexdigest()[:12]
    name = f"{control_queue_job_prefix(prefix, job_id)}{digest}"
    if not _NAME.match(name):
        raise UsageError(f"job id {job_id!r} cannot be part of a Pub/Sub topic name")
    return name


class PubSubControlQueues:
    """``pubsub://PROJECT/PREFIX``: per gateway a topic ``PREFIX-JOB--GATEWAY`` and its
    pull subscription ``TOPIC-skyhop`` (messages kept a day), both made by ``create``
    (a message published before its subscription exists would be lost) and both
    deleted by ``delete_job``. The URIs handed out are ``pubsub://PROJECT/TOPIC``,
    which :class:`PubSubQueue` (and so a gateway's ``open_queue``) opens.

    ``open`` does not create anything: after ``delete_job`` a stale URI fails with
    NotFoundError instead of bringing its topic back."""

    def __init__(
        self,
        uri: str = "",
        *,
        publisher: PublisherClient | None = None,
        subscriber: SubscriberClient | None = None,
    ) -> None:
        split = urlsplit(uri)
        project = split.netloc
        prefix = split.path.strip("/")
        if split.scheme != "pubsub" or not project or not prefix or "/" in prefix or split.query:
            raise UsageError(f"malformed control queues {uri!r}: expected pubsub://PROJECT/PREFIX")
        if not _PROJECT.match(project):
            raise UsageError(f"malformed control queues {uri!r}: {project!r} is not a project id")
        if "--" in prefix or len(prefix) > 40 or not _NAME.match(prefix):
            raise UsageError(
                f"malformed control queues {uri!r}: prefix {prefix!r} must be 3-40 characters "
                "of a topic name (a letter first, no '--')"
            )
        self.uri = uri
        self.project = project
        self.prefix = prefix
        self._publisher = publisher
        self._subscriber = subscriber
        self._queues: dict[str, PubSubQueue] = {}
        self._lock = threading.Lock()

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return translated(fn, f"control queues {self.uri}: {what}", _classify)

    @property
    def publisher(self) -> PublisherClient:
        with self._lock:
            if self._publisher is None:
                self._publisher = self._call(PublisherClient, "connect")
        return self._publisher

    @property
    def subscriber(self) -> SubscriberClient:
        with self._lock:
            if self._subscriber is None:
                self._subscriber = self._call(SubscriberClient, "connect")
        return self._subscriber

    def _topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def _subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    def create(self, job_id: str, gateway_id: str) -> str:
        name = pubsub_control_queue_name(self.prefix, job_id, gateway_id)
        topic = self._topic_path(name)
        try:
            self._call(
                lambda: self.publisher.create_topic(request={"name": topic}),
                f"creating control topic {name}",
            )
        except _Exists:
            pass
        try:
            self._call(
                lambda: self.subscriber.create_subscription(
                    request={
                        "name": self._subscription_path(name + SUBSCRIPTION_SUFFIX),
                        "topic": topic,
                        "ack_deadline_seconds": CONTROL_ACK_DEADLINE,
                        "message_retention_duration": {"seconds": CONTROL_RETENTION_SECONDS},
                    }
                ),
                f"creating control subscription {name}{SUBSCRIPTION_SUFFIX}",
            )
        except _Exists:
            pass
        return f"pubsub://{self.project}/{name}"

    def open(self, uri: str) -> PubSubQueue:
        with self._lock:
            found = self._queues.get(uri)
        if found is None:
            project, _, _ = parse_pubsub(uri)
            same = project == self.project
            found = PubSubQueue(
                uri,
                ack_deadline=CONTROL_ACK_DEADLINE,
                create=False,
                publisher=self.publisher if same else None,
                subscriber=self.subscriber if same else None,
            )
            with self._lock:
                found = self._queues.setdefault(uri, found)
        return found

    def delete_job(self, job_id: str, uris: Iterable[str] = ()) -> int:
        head = control_queue_job_prefix(self.prefix, job_id)
        topics = {t for t in self._topics() if t.startswith(head)}
        subscriptions = {s for s in self._subscriptions() if s.startswith(head)}
        for uri in uris:
            project, topic, subscription = parse_pubsub(uri)
            if project != self.project:
                raise UsageError(f"control queue {uri!r} is not in project {self.project}")
            topics.add(topic)
            subscriptions.add(subscription)
        subscriptions |= {t + SUBSCRIPTION_SUFFIX for t in topics}
        with self._lock:
            for uri in [u for u in self._queues if parse_pubsub(u)[1] in topics]:
                del self._queues[uri]
        for name in sorted(subscriptions):
            try:
                self._call(
                    partial(
                        self.subscriber.delete_subscription,
                        request={"subscription": self._subscription_path(name)},
                    ),
                    f"deleting control subscription {name}",
                )
            except NotFoundError:
                pass
        deleted = 0
        for name in sorted(topics):
            try:
                self._call(
                    partial(self.publisher.delete_topic, request={"topic": self._topic_path(name)}),
                    f"deleting control topic {name}",
                )
                deleted += 1
            except NotFoundError:
                pass  # deleted already
        return deleted

    def jobs(self) -> set[str]:
        names = [*self._topics(), *self._subscriptions()]
        found = {job_of_control_queue(self.prefix, n) for n in names}
        return {j for j in found if j}

    def _topics(self) -> list[str]:
        return self._call(
            lambda: [
                t.name.rsplit("/", 1)[-1]
                for t in self.publisher.list_topics(request={"project": f"projects/{self.project}"})
                if t.name.rsplit("/", 1)[-1].startswith(f"{self.prefix}-")
            ],
            "listing control topics",
        )

    def _subscriptions(self) -> list[str]:
        return self._call(
            lambda: [
                s.name.rsplit("/", 1)[-1]
                for s in self.subscriber.list_subscriptions(
                    request={"project": f"projects/{self.project}"}
                )
                if s.name.rsplit("/", 1)[-1].startswith(f"{self.prefix}-")
            ],
            "listing control subscriptions",
        )
