"""Azure Storage Queue: ``azq://ACCOUNT/QUEUE`` (azure-storage-queue).

* Credentials: ``AZURE_STORAGE_CONNECTION_STRING`` when it names ACCOUNT (Azurite
  in tests), else azure-identity's ``DefaultAzureCredential`` against
  ``https://ACCOUNT.queue.core.windows.net``.
* Bodies travel base64-encoded, the encoding Azure Functions' queue trigger
  expects by default, so a function bound to the queue sees the same text.
  An encoded message may be at most 64 KiB, so a longer body is parked in the
  blob container ``skyhop-queue-payloads`` of the same account and the message
  carries ``skyhop-payload:v1:BLOB`` instead (the claim-check pattern);
  ``receive`` resolves it (:func:`resolve_body` does the same for a function
  triggered by the queue) and ``ack`` deletes the blob.
* Azure queues have no long polling: ``receive`` with ``wait_seconds`` polls,
  backing off from 0.2 s to 2 s, until a message arrives or the time is up.
* A received message stays invisible for ``visibility_timeout`` seconds; ``ack``
  deletes it, ``nack`` makes it visible again at once.
* The queue is created on first use unless ``create=False``.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, TypeVar

from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

from skyhop.clouds import azure as azure_kit
from skyhop.errors import (
    NotFoundError,
    StoreError,
    UsageError,
    translated,
)
from skyhop.queues.base import Message

MAX_ENCODED_BYTES = 64 * 1024
PAYLOAD_CONTAINER = "skyhop-queue-payloads"
PAYLOAD_PREFIX = "skyhop-payload:v1:"
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
        self._lock = threading.Lock()
        self._payloads: Any = None

    # ------------------------------------------------------------ plumbing

    @property
    def client(self) -> QueueClient:
        if self._client is not None and self._ready:
            return self._client
        with self._lock:
            if self._client is None:
                self._client = self._call(self._connect, "connect")
            if not self._ready:
                try:
                    self._call(self._client.create_queue, "create")
                except StoreError as exc:
                    if not _exists(exc, "QueueAlreadyExists"):
                        raise
                self._ready = True
        return self._client

    @property
    def payloads(self) -> Any:
        """The container that holds bodies too long for a message (created on first use)."""
        with self._lock:
            if self._payloads is None:
                container = self._call(
                    lambda: payload_container(self.account), "connect to blob storage"
                )
                try:
                    self._call(container.create_container, "create payload container")
                except StoreError as exc:
                    if not _exists(exc, "ContainerAlreadyExists"):
                        raise
                self._payloads = container
        return self._payloads

    def _connect(self) -> QueueClient:
        policies: dict[str, Any] = {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
        }
        client: QueueClient = azure_kit.storage_client(
            QueueClient, self.account, "queue", self.name, **policies
        )
        return client

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return translated(fn, f"queue {self.uri}: {what}", azure_kit.translate)

    # ------------------------------------------------------------ Queue

    def send(self, body: str) -> None:
        self.send_batch([body])

    def send_batch(self, bodies: list[str]) -> None:
        for body in bodies:  # Azure queues have no batch send
            text = body
            if _encoded_size(body) > MAX_ENCODED_BYTES or body.startswith(PAYLOAD_PREFIX):
                text = self._park(body)
            self._call(partial(self.client.send_message, text), "send")

    def _park(self, body: str) -> str:
        name = f"{self.name}/{uuid.uuid4().hex}"
        data = body.encode("utf-8")
        self._call(
            lambda: self.payloads.upload_blob(name, data, overwrite=True), "park a long body"
        )
        return PAYLOAD_PREFIX + name

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
            out = []
            for m in got:
                text = m.content if m.content is not None else ""
                parked = text[len(PAYLOAD_PREFIX) :] if text.startswith(PAYLOAD_PREFIX) else ""
                if parked:
                    try:
                        text = self._fetch(parked)
                    except NotFoundError:
                        # its body is gone: an earlier receiver acked it; drop the stray message
                        self._delete(m.id, m.pop_receipt)
                        continue
                out.append(
                    Message(
                        body=text,
                        receipt=json.dumps([m.id, m.pop_receipt, parked]),
                        receive_count=max(1, int(m.dequeue_count or 1)),
                    )
                )
            if out:
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 2.0)

    def _fetch(self, parked: str) -> str:
        raw: bytes = self._call(
            lambda: self.payloads.download_blob(parked).readall(), "fetch a parked body"
        )
        return raw.decode("utf-8")

    def _delete(self, msg_id: str, pop: str | None) -> None:
        try:
            self._call(lambda: self.client.delete_message(msg_id, pop), "ack")
        except NotFoundError:
            pass  # already deleted: acking twice is harmless

    def ack(self, message: Message) -> None:
        msg_id, pop, parked = _receipt(message)
        self._delete(msg_id, pop)
        if parked:
            try:
                self._call(lambda: self.payloads.delete_blob(parked), "delete a parked body")
            except NotFoundError:
                pass

    def nack(self, message: Message) -> None:
        """Make a received message visible again at once."""
        msg_id, pop, _ = _receipt(message)
        try:
            self._call(
                lambda: self.client.update_message(msg_id, pop, visibility_timeout=0), "nack"
            )
        except NotFoundError:
            pass


def _exists(exc: StoreError, code: str) -> bool:
    """Whether ``exc`` says the queue or container exists already (the SDK spells the
    code ``QueueAlreadyExists`` or, as an enum, ``StorageErrorCode.QUEUE_ALREADY_EXISTS``)."""
    text = str(exc).replace("_", "").lower()
    return code.lower() in text


def _encoded_size(body: str) -> int:
    return 4 * -(-len(body.encode("utf-8")) // 3)


def payload_container(account: str) -> Any:
    """The blob container of ``account`` that holds parked bodies."""
    from azure.storage.blob import BlobServiceClient

    service = azure_kit.storage_client(BlobServiceClient, account, "blob")
    return service.get_container_client(PAYLOAD_CONTAINER)


def resolve_body(account: str, text: str) -> str:
    """A queue message's body as sent: fetches a parked one (for queue-triggered functions,
    which receive the message text themselves)."""
    if not text.startswith(PAYLOAD_PREFIX):
        return text
    name = text[len(PAYLOAD_PREFIX) :]
    raw: bytes = translated(
        lambda: payload_container(account).download_blob(name).readall(),
        f"fetch parked body {name}",
        azure_kit.translate,
    )
    return raw.decode("utf-8")


def _receipt(message: Message) -> tuple[str, str, str]:
    try:
        msg_id, pop, parked = json.loads(message.receipt)
        return str(msg_id), str(pop), str(parked)
    except (ValueError, TypeError):
        raise UsageError(f"not an Azure queue receipt: {message.receipt!r}") from None


# ---------------------------------------------------------------- control queues

MAX_PREFIX = 20
_PREFIX = re.compile(r"^[a-z](?!.*--)[a-z0-9\-]*[a-z0-9]$")
JOB_METADATA = "skyhopjob"


def _slug(text: str) -> str:
    """Lowercase letters and digits with single hyphens between runs."""
    return "-".join(p for p in re.split(r"[^a-z0-9]+", text.lower()) if p)


def _token(text: str, limit: int) -> str:
    """``text`` as a queue-name part: itself when it is one already and fits in
    ``limit``; else its slug cut short plus a hash of the original (so two ids
    that slug alike, or share a long head, still differ)."""
    slug = _slug(text)
    if slug == text and 0 < len(slug) <= limit:
        return slug
    import hashlib

    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    head = slug[: max(0, limit - len(digest) - 1)].strip("-")
    return f"{head}-{digest}" if head else digest


def azure_control_queue_name(prefix: str, job_id: str, gateway_id: str) -> str:
    """``PREFIX-JOB-GATEWAY``, a valid Azure queue name (3-63 lowercase letters, digits
    and single hyphens): a part that is not valid as it is, or too long, becomes
    its slug cut short plus a short hash; the gateway id loses the job id it repeats."""
    job = _token(job_id, 24)
    room = 63 - len(prefix) - len(job) - 2
    gateway = _token(gateway_id.removeprefix(f"gw-{job_id}-"), room)
    return f"{prefix}-{job}-{gateway}"


def azure_control_queue_job_prefix(prefix: str, job_id: str) -> str:
    """The name prefix every control queue of the job starts with (queues of another
    job may share it: the ``skyhopjob`` metadata tells them apart)."""
    return f"{prefix}-{_token(job_id, 24)}-"


def _service(account: str) -> Any:
    from azure.storage.queue import QueueServiceClient

    return azure_kit.storage_client(QueueServiceClient, account, "queue")


class AzureControlQueues:
    """``azq://ACCOUNT/PREFIX``: one Azure Storage Queue per gateway in ACCOUNT, named
    by :func:`azure_control_queue_name` and carrying the job id as queue metadata
    (``skyhopjob``), which ``jobs`` and ``delete_job`` go by. ``create`` is
    idempotent; the URIs it returns are ``azq://ACCOUNT/NAME``, which
    :class:`AzureQueue` (and so a gateway's ``open_queue``) opens.

    ``open`` does not create queues: after ``delete_job`` a stale URI fails with
    NotFoundError instead of bringing its queue back."""

    def __init__(self, uri: str = "", *, service: Any | None = None) -> None:
        scheme, sep, rest = uri.partition("://")
        account, _, prefix = rest.strip("/").partition("/")
        if scheme != "azq" or not sep or not account or not prefix or "/" in prefix:
            raise UsageError(f"malformed control queues {uri!r}: expected azq://ACCOUNT/PREFIX")
        if not _ACCOUNT.match(account):
            raise UsageError(
                f"malformed control queues {uri!r}: {account!r} is not a storage account name"
            )
        if len(prefix) > MAX_PREFIX or not _PREFIX.match(prefix):
            raise UsageError(
                f"malformed control queues {uri!r}: prefix {prefix!r} must be 2-{MAX_PREFIX} "
                "lowercase letters, digits and single hyphens, starting with a letter"
            )
        self.uri = uri
        self.account = account
        self.prefix = prefix
        self._service = service
        self._queues: dict[str, AzureQueue] = {}
        self._lock = threading.Lock()

    @property
    def service(self) -> Any:
        with self._lock:
            if self._service is None:
                self._service = self._call(lambda: _service(self.account), "connect")
        return self._service

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return translated(fn, f"control queues {self.uri}: {what}", azure_kit.translate)

    def create(self, job_id: str, gateway_id: str) -> str:
        name = azure_control_queue_name(self.prefix, job_id, gateway_id)
        try:
            self._call(
                lambda: self.service.create_queue(name, metadata={JOB_METADATA: job_id}),
                f"creating control queue {name}",
            )
        except StoreError as exc:
            if not _exists(exc, "QueueAlreadyExists") and "409" not in str(exc):
                raise
        return f"azq://{self.account}/{name}"

    def open(self, uri: str) -> AzureQueue:
        with self._lock:
            found = self._queues.get(uri)
        if found is None:
            account, name = parse_azq(uri)
            client = None
            if account == self.account:
                client = self.service.get_queue_client(
                    name,
                    message_encode_policy=TextBase64EncodePolicy(),
                    message_decode_policy=TextBase64DecodePolicy(),
                )
            found = AzureQueue(uri, create=False, client=client)
            with self._lock:
                found = self._queues.setdefault(uri, found)
        return found

    def delete_job(self, job_id: str, uris: Iterable[str] = ()) -> int:
        names = {
            name
            for name, job in self._listing(azure_control_queue_job_prefix(self.prefix, job_id))
            if job == job_id
        }
        for uri in uris:
            account, name = parse_azq(uri)
            if account != self.account:
                raise UsageError(f"control queue {uri!r} is not in this account ({self.account})")
            names.add(name)
        with self._lock:
            for uri in [u for u in self._queues if parse_azq(u)[1] in names]:
                del self._queues[uri]
        deleted = 0
        for name in sorted(names):
            try:
                self._call(
                    partial(self.service.delete_queue, name),
                    f"deleting control queue {name}",
                )
                deleted += 1
            except NotFoundError:
                pass  # deleted already
        return deleted

    def jobs(self) -> set[str]:
        return {job for _, job in self._listing(f"{self.prefix}-") if job}

    def _listing(self, head: str) -> list[tuple[str, str | None]]:
        """(name, job id from its metadata) of every queue whose name starts with ``head``."""
        return self._call(
            lambda: [
                (q.name, (q.metadata or {}).get(JOB_METADATA))
                for q in self.service.list_queues(name_starts_with=head, include_metadata=True)
            ],
            f"listing control queues {head}*",
        )
