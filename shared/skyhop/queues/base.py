"""The control-plane Queue protocol and the URI registry of implementations.

URIs: ``memory://NAME`` (in-process), ``https://sqs.REGION.amazonaws.com/...``
or ``sqs://QUEUE_NAME`` (SQS), ``azq://ACCOUNT/QUEUE`` (Azure Storage Queue),
``pubsub://PROJECT/TOPIC`` (Pub/Sub).

:class:`ControlQueues` makes and removes the per-gateway control queues of
queue-controlled gateways (one queue per gateway, named from the job and
gateway ids, deleted at teardown); :func:`open_control_queues` finds its
implementation by the same kind of URI: ``sqs://PREFIX[?region=R]``,
``memory://PREFIX``, ``azq://ACCOUNT/PREFIX``, ``pubsub://PROJECT/PREFIX``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from skyhop.errors import UsageError
from skyhop.models import InstanceIdentity
from skyhop.registry import resolve


class Message(BaseModel):
    body: str
    receipt: str = Field(description="opaque handle for ack")
    receive_count: int = 1


@runtime_checkable
class Queue(Protocol):
    uri: str

    def send(self, body: str) -> None: ...

    def send_batch(self, bodies: list[str]) -> None: ...

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        """Up to ``max_messages``; waits up to ``wait_seconds`` for the first one."""
        ...

    def ack(self, message: Message) -> None:
        """Delete a received message so it is not delivered again."""
        ...


@runtime_checkable
class CheckableQueue(Protocol):
    """Optional: a queue that can tell, without taking a message, that it exists."""

    def check(self) -> None:
        """Raise NotFoundError when the queue does not exist (AccessError when it may
        not be used); return when messages can be sent to it."""
        ...


_REGISTRY: dict[str, str] = {
    "memory": "skyhop.queues.memory:MemoryQueue",
    "sqs": "skyhop.queues.sqs:SQSQueue",
    "https": "skyhop.queues.sqs:SQSQueue",
    "azq": "skyhop.queues.azure_queue:AzureQueue",
    "pubsub": "skyhop.queues.pubsub:PubSubQueue",
}


@runtime_checkable
class ControlQueues(Protocol):
    """Per-gateway control queues: created before a job's gateways launch, deleted
    at its teardown. Queue names are derived from the job and gateway ids, so
    ``create`` is idempotent and ``delete_job`` needs nothing but the job id."""

    uri: str

    def create(self, job_id: str, gateway_id: str) -> str:
        """Create (or find) the gateway's control queue; return its queue URI."""
        ...

    def open(self, uri: str) -> Queue:
        """The queue behind a URI ``create`` returned (clients shared and reused)."""
        ...

    def delete_job(self, job_id: str, uris: Iterable[str] = ()) -> int:
        """Delete every control queue of the job: ``uris`` (what the job recorded) and
        any other the listing shows (idempotent); how many were deleted."""
        ...

    def jobs(self) -> set[str]:
        """Ids of the jobs that have control queues now (for the reaper)."""
        ...


@runtime_checkable
class InstanceScopedControlQueues(Protocol):
    """Optional: control queues that can be closed to every cloud instance but the
    gateway's own. Gateway roles may take messages from every control queue (no static
    policy names "this job's queues"); this keeps a gateway of one job from reading or
    draining another gateway's orders. Applied by
    :func:`skyhop.controlplane.provision.launch_queued` once the launch names the
    instances (:class:`~skyhop.compute.base.InstanceIdentities`)."""

    def restrict_to_instance(self, uri: str, instance: InstanceIdentity) -> None:
        """Deny receiving, deleting, changing the visibility of and sending messages on
        the queue ``uri`` to every request made with the credentials of an instance other
        than ``instance``; requests that carry no instance identity (the control plane's)
        are unaffected. Replaces an earlier restriction (a new attempt's instance).
        UsageError for an instance of a cloud these queues cannot name."""
        ...


_CONTROL_REGISTRY: dict[str, str] = {
    "memory": "skyhop.queues.memory:MemoryControlQueues",
    "sqs": "skyhop.queues.sqs:SQSControlQueues",
    "azq": "skyhop.queues.azure_queue:AzureControlQueues",
    "pubsub": "skyhop.queues.pubsub:PubSubControlQueues",
}

CONTROL_QUEUE_PREFIX = "skyhop-ctl"


def control_queue_name(prefix: str, job_id: str, gateway_id: str) -> str:
    """``PREFIX-JOB--GATEWAY`` with the job id dropped from the gateway id when it
    repeats it; at most 80 characters (a hash keeps long names unique)."""
    suffix = gateway_id.removeprefix(f"gw-{job_id}-")
    name = f"{control_queue_job_prefix(prefix, job_id)}{suffix}"
    if len(name) > 80:
        import hashlib

        digest = hashlib.sha256(name.encode()).hexdigest()[:10]
        name = f"{control_queue_job_prefix(prefix, job_id)}{digest}"
    return name


def control_queue_job_prefix(prefix: str, job_id: str) -> str:
    """The name prefix shared by every control queue of one job."""
    return f"{prefix}-{job_id}--"


def job_of_control_queue(prefix: str, name: str) -> str | None:
    """The job id inside a control queue name, or None if it is not one."""
    head = f"{prefix}-"
    if not name.startswith(head) or "--" not in name[len(head) :]:
        return None
    return name[len(head) :].split("--", 1)[0] or None


def open_control_queues(uri: str) -> ControlQueues:
    """The control-queue factory behind ``uri`` (``sqs://PREFIX``, ``memory://PREFIX``,
    ``azq://ACCOUNT/PREFIX``, ``pubsub://PROJECT/PREFIX``)."""
    scheme = uri.partition("://")[0]
    target = _CONTROL_REGISTRY.get(scheme)
    if target is None or "://" not in uri:
        raise UsageError(
            f"unknown control queues {uri!r}: use sqs://PREFIX, azq://ACCOUNT/PREFIX, "
            "pubsub://PROJECT/PREFIX or memory://PREFIX"
        )
    queues: ControlQueues = resolve(target, f"control queues {uri!r}")(uri)
    return queues


def open_queue(uri: str) -> Queue:
    """The queue behind ``uri``."""
    scheme = uri.partition("://")[0]
    target = _REGISTRY.get(scheme)
    if target is None or "://" not in uri:
        raise UsageError(f"unknown queue URI {uri!r}: use memory://, sqs://, azq:// or pubsub://")
    queue: Queue = resolve(target, f"queue {uri!r}")(uri)
    return queue
