"""Gateway events are signed by their gateway and checked before they count.

Each gateway signs every event it sends with its own event key
(:func:`skyhop.crypto.gateway_event_key`, derived from the job's master token,
which only the control plane keeps): an HMAC-SHA256 over the event's canonical
JSON without its ``mac`` field. The control plane derives the key of the
gateway the event names, among the job's current gateways, and drops an event
whose MAC does not check before anything else looks at it. A sender of queue
messages, or one gateway speaking for another, therefore changes nothing.
"""

from __future__ import annotations

from typing import TypeVar, cast

from skyhop import crypto
from skyhop.models import (
    ChunkFailed,
    ChunkVerified,
    GatewayEnrol,
    GatewayErrorEvent,
    GatewayReady,
    JobRuntime,
)

AnyEvent = GatewayReady | ChunkVerified | ChunkFailed | GatewayErrorEvent | GatewayEnrol
E = TypeVar("E", bound=AnyEvent)


def body(event: AnyEvent) -> str:
    """The canonical JSON an event's MAC covers."""
    return event.model_dump_json(exclude={"mac"})


def sign(event: E, key: bytes) -> E:
    """``event`` with its MAC under ``key``."""
    return cast(E, event.model_copy(update={"mac": crypto.event_mac(key, body(event))}))


def verified(runtime: JobRuntime | None, event: AnyEvent) -> bool:
    """True when ``event`` names one of the runtime's gateways and carries that
    gateway's MAC."""
    if runtime is None or not runtime.control_token or not event.mac:
        return False
    if not any(g.gateway_id == event.gateway_id for g in runtime.gateways):
        return False
    key = crypto.gateway_event_key(runtime.control_token, event.gateway_id)
    return crypto.event_mac_matches(key, body(event), event.mac)
