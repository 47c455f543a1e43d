"""A queue-controlled gateway's orders: its own queue, ``GatewayConfig.control_queue``.

Cloud gateways have no control port open to the control plane (the cloud
functions have no fixed egress address to admit), so the control plane sends
them :data:`~skyhop.models.ControlMessage` JSON on a queue of their own:
``peers``, ``chunks``, ``drain`` and ``shutdown``. The poller long-polls that
queue, applies each message through the same action as the HTTPS control API's
route (:func:`gateway_vm.control_api.apply_chunks` and its siblings), and acks
it once applied. A message that does not parse, or one the gateway refuses (a
batch for another job, chunks for a relay, chunks while draining), is logged
and acked: delivering it again would fail the same way. Queue errors are
retried with backoff; a queue that no longer exists (deleted at teardown)
stops the gateway.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from gateway_vm.control_api import (
    ApiError,
    apply_chunks,
    apply_drain,
    apply_peers,
    apply_shutdown,
)
from skyhop.errors import NotFoundError, SkyhopError, first_line
from skyhop.models import (
    ChunksMessage,
    ControlMessage,
    DrainMessage,
    PeersMessage,
    ShutdownMessage,
)
from skyhop.queues.base import Queue, open_queue

if TYPE_CHECKING:
    from gateway_vm.daemon import Gateway

log = logging.getLogger("gateway_vm")

_MESSAGE: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)
WAIT_SECONDS = 20.0  # SQS's longest long poll
MAX_BACKOFF = 30.0


class ControlQueuePoller:
    """Takes the gateway's control messages from its queue until the gateway stops."""

    def __init__(
        self,
        gateway: Gateway,
        uri: str,
        *,
        queue: Queue | None = None,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.gateway = gateway
        self.uri = uri
        self.queue = queue if queue is not None else open_queue(uri)
        self.wait_seconds = wait_seconds
        self.applied = 0
        self.rejected = 0
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="control-queue", daemon=True)
        self._thread.start()
        return self._thread

    def run(self) -> None:
        stop = self.gateway.stop_event
        backoff = 0.0
        while not stop.is_set():
            try:
                messages = self.queue.receive(max_messages=10, wait_seconds=self.wait_seconds)
                backoff = 0.0
            except NotFoundError:
                self.gateway.request_stop(f"control queue {self.uri} is gone")
                return
            except Exception as exc:  # noqa: BLE001 - the poller must outlive a bad call
                backoff = min(max(backoff * 2, 0.5), MAX_BACKOFF)
                log.warning(
                    "control queue %s: %s; again in %.1f s",
                    self.uri,
                    first_line(exc, limit=500),
                    backoff,
                )
                stop.wait(backoff * random.uniform(0.5, 1.0))  # noqa: S311 - jitter
                continue
            for message in messages:
                if stop.is_set():
                    return  # unacked: visible again after its timeout, for nobody
                done = self.handle(message.body)
                try:
                    self.queue.ack(message)
                except SkyhopError as exc:
                    log.warning("control queue %s: ack failed: %s", self.uri, exc)
                if done:
                    return

    def handle(self, body: str) -> bool:
        """Apply one message; True when it was ``shutdown`` (nothing more to take)."""
        try:
            message = _MESSAGE.validate_json(body)
        except ValidationError as exc:
            self.rejected += 1
            errors = exc.errors()
            first: dict[str, Any] = dict(errors[0]) if errors else {}
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            log.warning(
                "control queue %s: dropped a malformed message: %s: %s",
                self.uri,
                where,
                first.get("msg", "invalid"),
            )
            return False
        gw = self.gateway
        gw.touch()
        try:
            if isinstance(message, PeersMessage):
                apply_peers(gw, message.peers)
            elif isinstance(message, ChunksMessage):
                apply_chunks(gw, message.batch)
            elif isinstance(message, DrainMessage):
                apply_drain(gw, 0.0, discard=message.discard)
            elif isinstance(message, ShutdownMessage):
                apply_shutdown(gw)
                self.applied += 1
                return True
        except (ApiError, SkyhopError) as exc:
            self.rejected += 1
            log.warning("control queue %s: refused %s: %s", self.uri, message.type, exc)
            return False
        self.applied += 1
        return False
