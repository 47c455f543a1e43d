"""Amazon SQS: ``sqs://QUEUE_NAME`` or the queue's URL ``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME``.

* ``sqs://NAME`` resolves the URL with GetQueueUrl in the default region
  (``AWS_REGION``), or ``sqs://NAME?region=eu-west-1``; a URL names its region.
  Endpoints (moto in tests) come from ``AWS_ENDPOINT_URL`` as usual for boto3.
* ``receive`` long-polls: ``wait_seconds`` is rounded up to whole seconds, in
  rounds of at most 20 (SQS's limit), and more than 10 messages take several
  calls. ``Message.receive_count`` is SQS's ``ApproximateReceiveCount``.
* ``ack`` deletes; ``nack`` makes the message visible again at once, which
  counts as a receive: after ``maxReceiveCount`` receives SQS moves a message
  that keeps failing (a poison message) to the dead-letter queue named by the
  queue's redrive policy. :func:`create_queue` creates a queue with its DLQ;
  :func:`redrive_policy` is the attribute value, for ``infra_cdk`` too.
* The queue is not created on first use: a typo in a URI would otherwise
  swallow messages. Bodies are at most 256 KiB.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from botocore.exceptions import ClientError

from skyhop.clouds import aws
from skyhop.errors import (
    AccessError,
    NotFoundError,
    SkyhopError,
    StoreError,
    ThrottledError,
    UsageError,
    first_line,
    translated,
)
from skyhop.models import InstanceIdentity
from skyhop.queues.base import (
    CONTROL_QUEUE_PREFIX,
    Message,
    control_queue_job_prefix,
    control_queue_name,
    job_of_control_queue,
)

MAX_BODY_BYTES = 256 * 1024
MAX_PER_CALL = 10
MAX_WAIT_PER_CALL = 20
DEFAULT_MAX_RECEIVE_COUNT = 5
DEFAULT_VISIBILITY_TIMEOUT = 60
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
_NOT_FOUND = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}
_ACCESS = {
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "UnrecognizedClientException",
}
_THROTTLE = {"RequestThrottled", "ThrottlingException", "Throttling", "OverLimit"}
_GONE_RECEIPT = {"ReceiptHandleIsInvalid", "InvalidParameterValue", "MessageNotInflight"}


def parse_sqs(uri: str) -> tuple[str | None, str | None, str | None]:
    """``uri`` -> (queue name, queue URL, region); one of name and URL is None."""
    split = urlsplit(uri)
    if split.scheme == "sqs":
        name = split.netloc
        if not name or split.path.strip("/"):
            raise UsageError(f"malformed queue URI {uri!r}: expected sqs://QUEUE_NAME")
        _check_name(uri, name)
        region = parse_qs(split.query).get("region", [None])[0]
        return name, None, region
    if split.scheme in ("https", "http"):
        parts = [p for p in split.path.split("/") if p]
        if len(parts) != 2 or not split.hostname:
            raise UsageError(
                f"malformed queue URI {uri!r}: expected https://sqs.REGION.amazonaws.com/ACCOUNT/NAME"
            )
        _check_name(uri, parts[1])
        return None, uri, _region_of_host(split.hostname)
    raise UsageError(f"malformed queue URI {uri!r}: expected sqs://QUEUE_NAME or the queue URL")


def redrive_policy(dead_letter_arn: str, max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT) -> str:
    """The ``RedrivePolicy`` attribute: after ``max_receive_count`` receives a
    message moves to the queue ``dead_letter_arn``."""
    if not 1 <= max_receive_count <= 1000:
        raise UsageError(f"max_receive_count {max_receive_count} out of range 1..1000")
    return json.dumps(
        {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(max_receive_count)}
    )


def create_queue(
    name: str,
    *,
    dead_letter: str | None = None,
    max_receive_count: int = DEFAULT_MAX_RECEIVE_COUNT,
    visibility_timeout: int = DEFAULT_VISIBILITY_TIMEOUT,
    region: str | None = None,
) -> str:
    """Create queue ``name`` (and, when given, its dead-letter queue ``dead_letter``
    with a redrive policy of ``max_receive_count``); return ``sqs://name``.
    Idempotent when the attributes match."""
    _check_name(name, name)
    client = _client(region)
    attributes = {"VisibilityTimeout": str(visibility_timeout)}
    what = f"creating SQS queue {name}"
    if dead_letter is not None:
        _check_name(dead_letter, dead_letter)
        dlq_url = _call(lambda: client.create_queue(QueueName=dead_letter), what)["QueueUrl"]
        arn = _call(
            lambda: client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"]),
            what,
        )["Attributes"]["QueueArn"]
        attributes["RedrivePolicy"] = redrive_policy(arn, max_receive_count)
    _call(lambda: client.create_queue(QueueName=name, Attributes=attributes), what)
    return f"sqs://{name}" + (f"?region={region}" if region else "")


class SQSQueue:
    """The Queue protocol over one SQS standard queue."""

    def __init__(self, uri: str, *, client: Any | None = None) -> None:
        self.uri = uri
        self.name, self._url, region = parse_sqs(uri)
        self._client = client if client is not None else _client(region)

    @property
    def url(self) -> str:
        """The queue URL (GetQueueUrl once for ``sqs://NAME``)."""
        if self._url is None:
            name = self.name
            self._url = self._call(lambda: self._client.get_queue_url(QueueName=name), "resolve")[
                "QueueUrl"
            ]
        return self._url

    def send(self, body: str) -> None:
        self._check_size(body)
        self._call(lambda: self._client.send_message(QueueUrl=self.url, MessageBody=body), "send")

    def send_batch(self, bodies: list[str]) -> None:
        for body in bodies:
            self._check_size(body)
        batch: list[str] = []
        size = 0
        for body in bodies:
            n = len(body.encode("utf-8"))
            if batch and (len(batch) == MAX_PER_CALL or size + n > MAX_BODY_BYTES):
                self._send_entries(batch)
                batch, size = [], 0
            batch.append(body)
            size += n
        if batch:
            self._send_entries(batch)

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        wanted = max(1, max_messages)
        deadline = time.monotonic() + max(0.0, wait_seconds)
        out: list[Message] = []
        while len(out) < wanted:
            remaining = deadline - time.monotonic()
            wait = 0 if out else min(MAX_WAIT_PER_CALL, max(0, math.ceil(remaining)))
            response = self._call(
                lambda wait=wait: self._client.receive_message(
                    QueueUrl=self.url,
                    MaxNumberOfMessages=min(MAX_PER_CALL, wanted - len(out)),
                    WaitTimeSeconds=wait,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                ),
                "receive",
            )
            got = response.get("Messages", [])
            out.extend(
                Message(
                    body=m.get("Body", ""),
                    receipt=m["ReceiptHandle"],
                    receive_count=int(m.get("Attributes", {}).get("ApproximateReceiveCount", 1)),
                )
                for m in got
            )
            if not got and (out or deadline - time.monotonic() <= 0):
                break
            if got and len(got) < MAX_PER_CALL:
                break  # the queue has no more right now; do not wait for a full batch
        return out

    def ack(self, message: Message) -> None:
        try:
            self._call(
                lambda: self._client.delete_message(
                    QueueUrl=self.url, ReceiptHandle=message.receipt
                ),
                "ack",
            )
        except _GoneReceipt:
            pass  # deleted already, or its receipt expired: acking twice is harmless

    def nack(self, message: Message) -> None:
        """Make a received message visible again at once (counts toward the DLQ)."""
        try:
            self._call(
                lambda: self._client.change_message_visibility(
                    QueueUrl=self.url, ReceiptHandle=message.receipt, VisibilityTimeout=0
                ),
                "nack",
            )
        except _GoneReceipt:
            pass

    def check(self) -> None:
        """:class:`~skyhop.queues.base.CheckableQueue`: NotFoundError when the queue is gone."""
        self._call(
            lambda: self._client.get_queue_attributes(
                QueueUrl=self.url, AttributeNames=["QueueArn"]
            ),
            "check",
        )

    def set_attributes(self, attributes: dict[str, str]) -> None:
        """Set queue attributes (``Policy``, ``VisibilityTimeout``, ...)."""
        self._call(
            lambda: self._client.set_queue_attributes(QueueUrl=self.url, Attributes=attributes),
            "setting attributes",
        )

    def attributes(self) -> dict[str, str]:
        """The queue's attributes (``QueueArn``, ``RedrivePolicy``, counts, ...)."""
        answer = self._call(
            lambda: self._client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"]),
            "attributes",
        )
        return {str(k): str(v) for k, v in answer.get("Attributes", {}).items()}

    # ------------------------------------------------------------ plumbing

    def _send_entries(self, bodies: list[str]) -> None:
        entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)]
        for attempt in range(5):
            response = self._call(
                lambda entries=entries: self._client.send_message_batch(
                    QueueUrl=self.url, Entries=entries
                ),
                "send",
            )
            failed = response.get("Failed", [])
            if not failed:
                return
            fatal = [f for f in failed if f.get("SenderFault")]
            if fatal:
                raise StoreError(
                    f"queue {self.uri}: send rejected: {fatal[0].get('Code')}: {fatal[0].get('Message')}"
                )
            retry = {f["Id"] for f in failed}
            entries = [e for e in entries if e["Id"] in retry]
            time.sleep(0.05 * 2**attempt)
        raise StoreError(f"queue {self.uri}: send failed after retries", retryable=True)

    def _check_size(self, body: str) -> None:
        n = len(body.encode("utf-8"))
        if n > MAX_BODY_BYTES:
            raise UsageError(
                f"message for {self.uri} is {n} bytes: over SQS's limit of {MAX_BODY_BYTES} bytes"
            )

    def _call(self, fn: Any, what: str) -> Any:
        return _call(fn, f"queue {self.uri}: {what}")


CONTROL_RETENTION_SECONDS = 24 * 3600
CONTROL_VISIBILITY_TIMEOUT = 60
#: what a control queue's policy denies every instance but its gateway's
INSTANCE_SCOPED_ACTIONS = (
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:SendMessage",
)


def instance_only_policy(queue_arn: str, instance_arn: str) -> str:
    """The ``Policy`` of a control queue that only the EC2 instance ``instance_arn``
    (and callers that are no instance) may use: every request signed with an
    instance's role credentials carries ``ec2:SourceInstanceARN``; one whose
    instance is another is denied :data:`INSTANCE_SCOPED_ACTIONS`. The control
    plane's requests (a Lambda role: no such key) and the gateway's own pass on to
    their IAM policies."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "OnlyItsGatewayInstance",
                    "Effect": "Deny",
                    "Principal": "*",
                    "Action": list(INSTANCE_SCOPED_ACTIONS),
                    "Resource": queue_arn,
                    "Condition": {
                        "Null": {"ec2:SourceInstanceARN": "false"},
                        "ArnNotEquals": {"ec2:SourceInstanceARN": instance_arn},
                    },
                }
            ],
        },
        separators=(",", ":"),
    )


def instance_arn(queue_arn: str, instance: InstanceIdentity) -> str:
    """The ARN of an EC2 instance in the partition and account of the queue
    ``queue_arn`` (``arn:PARTITION:sqs:REGION:ACCOUNT:NAME``)."""
    parts = queue_arn.split(":")
    if len(parts) != 6 or parts[0] != "arn" or parts[2] != "sqs" or not parts[4]:
        raise StoreError(f"unexpected SQS queue ARN {queue_arn!r}")
    partition, account = parts[1], parts[4]
    return f"arn:{partition}:ec2:{instance.region}:{account}:instance/{instance.instance_id}"


class SQSControlQueues:
    """``sqs://PREFIX[?region=R]``: one SQS queue per gateway, ``PREFIX-JOB--GATEWAY``,
    tagged ``skyhop=control`` and ``skyhop:job=JOB``, encrypted with SQS-managed keys,
    messages kept a day at most. The URIs handed out name the region
    (``sqs://NAME?region=R``), so a gateway in another region finds its queue.

    ``delete_job`` deletes the URIs it is given and whatever ``ListQueues`` shows
    under the job's prefix (the listing is eventually consistent, so a queue made
    a moment ago may only be found through its URI).

    ``restrict_to_instance`` closes a queue to every EC2 instance but its gateway's
    (:func:`instance_only_policy`): the gateway roles may use every queue under the
    prefix, the queue policy keeps each instance to its own."""

    def __init__(self, uri: str = f"sqs://{CONTROL_QUEUE_PREFIX}", *, client: Any | None = None):
        split = urlsplit(uri)
        prefix = split.netloc
        if split.scheme != "sqs" or not prefix or split.path.strip("/"):
            raise UsageError(f"malformed control queues {uri!r}: expected sqs://PREFIX[?region=R]")
        _check_name(uri, prefix)
        self.uri = uri
        self.prefix = prefix
        region = parse_qs(split.query).get("region", [None])[-1]
        self._client = client if client is not None else _client(region)
        self.region: str = region or self._client.meta.region_name
        self._queues: dict[str, SQSQueue] = {}

    def create(self, job_id: str, gateway_id: str) -> str:
        name = control_queue_name(self.prefix, job_id, gateway_id)
        _check_name(name, name)
        _call(
            lambda: self._client.create_queue(
                QueueName=name,
                Attributes={
                    "VisibilityTimeout": str(CONTROL_VISIBILITY_TIMEOUT),
                    "MessageRetentionPeriod": str(CONTROL_RETENTION_SECONDS),
                    "SqsManagedSseEnabled": "true",
                },
                tags={"skyhop": "control", "skyhop:job": job_id},
            ),
            f"creating control queue {name}",
        )
        return f"sqs://{name}?region={self.region}"

    def restrict_to_instance(self, uri: str, instance: InstanceIdentity) -> None:
        """:class:`~skyhop.queues.base.InstanceScopedControlQueues`: the queue's
        ``Policy`` becomes :func:`instance_only_policy` for ``instance``'s EC2 ARN (in
        the queue's partition and account); an earlier policy is replaced."""
        if instance.cloud != "aws":
            raise UsageError(
                f"control queue {uri}: an SQS queue policy names EC2 instances only, "
                f"not a {instance.cloud} instance ({instance.instance_id})"
            )
        queue = self.open(uri)
        queue_arn = queue.attributes()["QueueArn"]
        policy = instance_only_policy(queue_arn, instance_arn(queue_arn, instance))
        queue.set_attributes({"Policy": policy})

    def open(self, uri: str) -> SQSQueue:
        found = self._queues.get(uri)
        if found is None:
            _, _, region = parse_sqs(uri)
            same = region is None or region == self.region
            found = SQSQueue(uri, client=self._client if same else None)
            self._queues[uri] = found
        return found

    def delete_job(self, job_id: str, uris: Iterable[str] = ()) -> int:
        head = control_queue_job_prefix(self.prefix, job_id)
        urls: set[str] = set(self._urls(head))
        for uri in {*uris, *(u for u in self._queues if u.startswith(f"sqs://{head}"))}:
            queue = self._queues.pop(uri, None) or self.open(uri)
            self._queues.pop(uri, None)
            try:
                urls.add(queue.url)
            except NotFoundError:
                pass  # deleted already
        deleted = 0
        for url in sorted(urls):
            try:
                _call(
                    lambda url=url: self._client.delete_queue(QueueUrl=url),
                    f"deleting control queue {url}",
                )
                deleted += 1
            except NotFoundError:
                pass
        return deleted

    def jobs(self) -> set[str]:
        found = set()
        for url in self._urls(f"{self.prefix}-"):
            job = job_of_control_queue(self.prefix, url.rstrip("/").rsplit("/", 1)[-1])
            if job:
                found.add(job)
        return found

    def _urls(self, prefix: str) -> Iterator[str]:
        kwargs: dict[str, Any] = {"QueueNamePrefix": prefix, "MaxResults": 1000}
        while True:
            page = _call(
                lambda kwargs=kwargs: self._client.list_queues(**kwargs),
                f"listing control queues {prefix}*",
            )
            yield from page.get("QueueUrls", [])
            token = page.get("NextToken")
            if not token:
                return
            kwargs["NextToken"] = token


class _GoneReceipt(StoreError):
    """A receipt handle that no longer names an in-flight message."""


def _call(fn: Any, what: str) -> Any:
    return translated(fn, what, _translate, catch=aws.SDK_ERRORS)


def _classify(exc: ClientError, what: str) -> SkyhopError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    query_code = str(error.get("QueryErrorCode", ""))
    message = first_line(error.get("Message") or code)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in _NOT_FOUND or query_code in _NOT_FOUND:
        return NotFoundError(f"{what}: the queue does not exist")
    if code in _GONE_RECEIPT or query_code in _GONE_RECEIPT:
        return _GoneReceipt(f"{what}: {message}")
    if code in _ACCESS or status in (401, 403):
        return AccessError(f"{what}: access denied ({code})")
    if code in _THROTTLE or status == 429:
        return ThrottledError(f"{what}: throttled ({code})")
    return StoreError(f"{what}: {code}: {message}", retryable=status >= 500)


_translate = aws.translator(
    _classify, no_region="no AWS region: set AWS_REGION or use sqs://NAME?region=R"
)


def _client(region: str | None) -> Any:
    return aws.client(
        "sqs", region, max_attempts=8, no_region="set AWS_REGION or use sqs://NAME?region=R"
    )


def _check_name(uri: str, name: str) -> None:
    base = name[:-5] if name.endswith(".fifo") else name
    if not 1 <= len(name) <= 80 or not set(base) <= _NAME_CHARS:
        raise UsageError(
            f"malformed queue URI {uri!r}: {name!r} is not an SQS queue name "
            "(1-80 letters, digits, hyphens and underscores)"
        )


def _region_of_host(host: str) -> str | None:
    """``sqs.us-east-1.amazonaws.com`` or ``us-east-1.queue.amazonaws.com`` -> region."""
    labels = host.split(".")
    if len(labels) >= 4 and labels[0] == "sqs":
        return labels[1]
    if len(labels) >= 4 and labels[1] == "queue":
        return labels[0]
    return None
