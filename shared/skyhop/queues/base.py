"""The control-plane Queue protocol and the URI registry of implementations.

URIs: ``memory://NAME`` (in-process), ``https://sqs.REGION.amazonaws.com/...``
or ``sqs://QUEUE_NAME`` (SQS), ``azq://ACCOUNT/QUEUE`` (Azure Storage Queue),
``pubsub://PROJECT/TOPIC`` (Pub/Sub).
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from skyhop.errors import UsageError


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


_REGISTRY: dict[str, str] = {
    "memory": "skyhop.queues.memory:MemoryQueue",
    "sqs": "skyhop.queues.sqs:SQSQueue",
    "https": "skyhop.queues.sqs:SQSQueue",
    "azq": "skyhop.queues.azure_queue:AzureQueue",
    "pubsub": "skyhop.queues.pubsub:PubSubQueue",
}


def open_queue(uri: str) -> Queue:
    """The queue behind ``uri``."""
    scheme = uri.partition("://")[0]
    target = _REGISTRY.get(scheme)
    if target is None or "://" not in uri:
        raise UsageError(f"unknown queue URI {uri!r}: use memory://, sqs://, azq:// or pubsub://")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"queue {uri!r} needs an optional dependency ({exc.name})") from None
    return getattr(module, cls_name)(uri)
