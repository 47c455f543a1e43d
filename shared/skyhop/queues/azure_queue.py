"""Azure Storage Queue: ``azq://ACCOUNT/QUEUE`` (azure-storage-queue).

* Credentials: ``AZURE_STORAGE_CONNECTION_STRING`` when it names ACCOUNT (Azurite
  in tests), else azure-identity's ``DefaultAzureCredential`` against
  ``https://ACCOUNT.queue.core.windows.net``.
* Bodies travel base64-encoded, the encoding Azure Functions' queue trigger
  expects by default, so a function bound to the queue sees the same text.
  An encoded message may be at most 64 KiB (about 48 KiB of body).
* Azure queues have no long polling: ``receive`` with ``wait_seconds`` polls,
  backing off from 0.2 s to 2 s, until a message arrives or the time is up.
* A received message stays invisible for ``visibility_timeout`` seconds; ``ack``
  deletes it, ``nack`` makes it visible again at once.
* The queue is created on first use unless ``create=False``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from azure.core import exceptions as aexc
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from skyhop.errors import AccessError, NotFoundError, SkyhopError, StoreError, UsageError
from skyhop.queues.base import Message

MAX_ENCODED_BYTES = 64 * 1024
MAX_PER_RECEIVE = 32
_QUEUE_NAME = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")

T = TypeVar("T")


def parse_azq(uri: str) -> tuple[str, str]:
    """``azq://ACCOUNT/QUEUE`` -> (account, queue); UsageError naming what is wrong."""
    scheme, sep, rest = uri.partition("://")
    account, _, queue = rest.strip("/").partition("/")
    if scheme != "azq" or not sep or not account or not queue or "/" in queue:
        raise UsageError(f"malformed queue URI {uri!r}: expected azq://ACCOUNT/QUEUE")
    if not _ACCOUNT.match(account):
        raise UsageError(f"malformed queue URI {uri!r}: {account!r} is not a storage account name")
    if not _QUEUE_NAME.match(queue):
        raise UsageError(
            f"malformed queue URI {uri!r}: {queue!r} is not a queue name "
            "(3-63 lowercase letters, digits and single hyphens)"
        )
    return account, queue


def _connection_string_account(conn: str) -> str | None:
    fields = {}
    for part in conn.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if fields.get("accountname"):
        return fields["accountname"]
    endpoint = fields.get("queueendpoint")
    if not endpoint:
        return None
    split = urlsplit(endpoint)
    host = split.hostname or ""
    if host.endswith(".core.windows.net"):
        return host.split(".")[0]
    return split.path.strip("/").split("/")[0] or None


class AzureQueue:
    """The Queue protocol over one Azure Storage Queue."""

    def __init__(
        self,
        uri: str,
        *,
        visibility_timeout: int = 60,
        create: bool = True,
        client: QueueClient | None = None,
    ) -> None:
        self.uri = uri
        self.account, self.name = parse_azq(uri)
        if not 1 <= visibility_timeout <= 7 * 24 * 3600:
            raise UsageError(f"visibility_timeout {visibility_timeout} out of range 1..604800")
        self.visibility_timeout = visibility_timeout
        self._create = create
        self._client = client
        self._ready = client is not None or not create

    # ------------------------------------------------------------ plumbing

    @property
    def client(self) -> QueueClient:
        if self._client is None:
            self._client = self._call(self._connect, "connect")
        if not self._ready:
            self._ready = True
            try:
                self._call(self._client.create_queue, "create")
            except StoreError as exc:
                if "QueueAlreadyExists" not in str(exc):
                    self._ready = False
                    raise
        return self._client

    def _connect(self) -> QueueClient:
        policies: dict[str, Any] = {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
        }
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        if conn and _connection_string_account(conn) == self.account:
            return QueueClient.from_connection_string(conn, self.name, **policies)
        from azure.identity import DefaultAzureCredential

        return QueueClient(
            f"https://{self.account}.queue.core.windows.net",
            self.name,
            credential=DefaultAzureCredential(),
            **policies,
        )

    def _call(self, fn: Callable[[], T], what: str) -> T:
        try:
            return fn()
        except SkyhopError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, never leaked
            raise _classify(exc, f"queue {self.uri}: {what}") from None

    # ------------------------------------------------------------ Queue

    def send(self, body: str) -> None:
        self._check_size(body)
        self._call(lambda: self.client.send_message(body), "send")

    def send_batch(self, bodies: list[str]) -> None:
        for body in bodies:
            self._check_size(body)
        for body in bodies:  # Azure queues have no batch send
            self._call(lambda body=body: self.client.send_message(body), "send")

    def receive(self, max_messages: int = 10, wait_seconds: float = 0.0) -> list[Message]:
        count = max(1, min(max_messages, MAX_PER_RECEIVE))
        deadline = time.monotonic() + max(0.0, wait_seconds)
        pause = 0.2
        while True:
            got = self._call(
                lambda: list(
                    self.client.receive_messages(
                        messages_per_page=count,
                        max_messages=count,
                        visibility_timeout=self.visibility_timeout,
                    )
                ),
                "receive",
            )
            if got:
                return [
                    Message(
                        body=m.content if m.content is not None else "",
                        receipt=json.dumps([m.id, m.pop_receipt]),
                        receive_count=max(1, int(m.dequeue_count or 1)),
                    )
                    for m in got
                ]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 2.0)

    def ack(self, message: Message) -> None:
        msg_id, pop = _receipt(message)
        try:
            self._call(lambda: self.client.delete_message(msg_id, pop), "ack")
        except NotFoundError:
            pass  # already deleted: acking twice is harmless

    def nack(self, message: Message) -> None:
        """Make a received message visible again at once."""
        msg_id, pop = _receipt(message)
        try:
            self._call(
                lambda: self.client.update_message(msg_id, pop, visibility_timeout=0), "nack"
            )
        except NotFoundError:
            pass

    def _check_size(self, body: str) -> None:
        encoded = len(base64.b64encode(body.encode("utf-8")))
        if encoded > MAX_ENCODED_BYTES:
            raise UsageError(
                f"message for {self.uri} is {len(body.encode('utf-8'))} bytes: over Azure "
                f"Queue's limit of 64 KiB encoded (about 48 KiB of text)"
            )


def _receipt(message: Message) -> tuple[str, str]:
    try:
        msg_id, pop = json.loads(message.receipt)
        return str(msg_id), str(pop)
    except (ValueError, TypeError):
        raise UsageError(f"not an Azure queue receipt: {message.receipt!r}") from None


def _classify(exc: Exception, what: str) -> SkyhopError:
    detail = _short(exc)
    if isinstance(exc, aexc.ResourceNotFoundError):
        return NotFoundError(f"{what}: not found ({detail})")
    if isinstance(exc, aexc.ClientAuthenticationError):
        return AccessError(f"{what}: access denied ({detail})")
    if isinstance(exc, aexc.ServiceRequestError | aexc.ServiceResponseError):
        return StoreError(f"{what}: connection failed ({detail})", retryable=True)
    if isinstance(exc, aexc.HttpResponseError):
        status = exc.status_code or 0
        if status in (401, 403):
            return AccessError(f"{what}: access denied ({detail})")
        if status == 404:
            return NotFoundError(f"{what}: not found ({detail})")
        return StoreError(f"{what}: {detail}", retryable=status in (408, 429) or status >= 500)
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return StoreError(f"{what}: connection failed ({detail})", retryable=True)
    return StoreError(f"{what}: {detail}")


def _short(exc: BaseException) -> str:
    if isinstance(exc, aexc.HttpResponseError):
        code = getattr(exc, "error_code", None) or exc.reason or ""
        return f"{exc.status_code} {code}".strip()
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]
