"""What a gateway worker's threads share, whatever the gateway's role: the
:class:`Shared` state the main process hands each worker, the worker's
:class:`WorkerContext` (its store, TLS contexts, buffer pool, events), the
:class:`PeerTable` of next hops, one outbound :class:`PeerLink`, and the data
plane's timeouts. :mod:`gateway_vm.source`, :mod:`gateway_vm.destination` and
:mod:`gateway_vm.relay` build on it; :mod:`gateway_vm.worker` runs them.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as MPQueue
from typing import Any

from gateway_vm.runtime import BufferPool, Counters, HookBudget, SharedBudget, TokenBucket
from skyhop import crypto
from skyhop.errors import GatewayError, first_line
from skyhop.models import (
    ChunkFailed,
    ChunkWork,
    GatewayConfig,
    GatewayErrorEvent,
    GatewayRole,
    PeerSpec,
)
from skyhop.stores.base import Capabilities, ObjectStore, capabilities, open_store
from skyhop.uri import parse_uri

log = logging.getLogger("gateway_vm")

CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 300.0
#: an inbound connection completes its mutual-TLS handshake within this, or is closed
HANDSHAKE_TIMEOUT = 5.0
#: a peer that goes quiet this long in the middle of a chunk is cut off (its
#: buffer goes back to the pool); between chunks a connection may idle
CHUNK_STALL_TIMEOUT = 300.0
#: inbound data connections (handshake done: an authenticated peer) one worker
#: serves at a time; more are refused
MAX_INBOUND = 64
#: inbound connections one worker holds in their handshake at a time (not yet
#: authenticated: they take no serving slot, and each is cut off after
#: HANDSHAKE_TIMEOUT); more are closed at once
MAX_HANDSHAKES = 1024


@dataclass
class Shared:
    """What the main process hands every worker (inherited through fork)."""

    config: GatewayConfig
    data_key: bytes | None  # source: job public key; destination: job private key
    listener: socket.socket | None
    work_q: MPQueue[str]  # ChunkWork JSON (sources)
    ctl_qs: list[MPQueue[tuple[str, Any]]]  # per worker: ("peers", [json]) | ("stop", None)
    evt_q: MPQueue[str]  # event JSON to the main process
    counters: Counters
    budget: SharedBudget  # chunk buffers of all workers together
    hooks: dict[str, HookBudget] = field(default_factory=dict)


class PeerTable:
    """The next hops, replaced as a whole by POST /v1/peers."""

    def __init__(self, peers: list[PeerSpec]) -> None:
        self._cond = threading.Condition()
        self.peers = list(peers)
        self.generation = 0

    def set(self, peers: list[PeerSpec]) -> None:
        with self._cond:
            self.peers = list(peers)
            self.generation += 1
            self._cond.notify_all()

    def wait(self, stop: threading.Event) -> bool:
        """Wait until there is at least one peer (False when stopping)."""
        with self._cond:
            while not self.peers:
                if stop.is_set():
                    return False
                self._cond.wait(0.5)
            return True

    def pick(self, slot: int, group: tuple[int, ...] | None = None) -> tuple[PeerSpec | None, int]:
        """The next hop for ``slot``; in a multicast tree, among those of ``group``
        (the destinations behind them)."""
        with self._cond:
            peers = self.peers if group is None else [p for p in self.peers if _group(p) == group]
            if not peers:
                return None, self.generation
            return peers[slot % len(peers)], self.generation

    def groups(self) -> list[tuple[int, ...]]:
        """The next hops' groups, each the destinations behind it (``()`` for a
        one-destination job, whose next hops are all alike)."""
        with self._cond:
            return list(dict.fromkeys(_group(p) for p in self.peers))


def _group(peer: PeerSpec) -> tuple[int, ...]:
    return tuple(sorted(peer.legs))


WRITE_GRACE = 30.0  # seconds a stopping worker waits for a store write under way


class WorkerContext:
    """Everything a worker's threads share."""

    def __init__(self, shared: Shared, index: int) -> None:
        cfg = shared.config
        self.cfg = cfg
        self.shared = shared
        self.index = index
        self.stop = threading.Event()
        self._writes = 0
        self._writes_cv = threading.Condition()
        self.peers = PeerTable(cfg.next_hops)
        # a source holds the job's public key, a destination its private key
        self.key = shared.data_key
        self.digest = crypto.job_digest(cfg.job_id)
        self.per_worker_connections = max(1, -(-cfg.connections // cfg.workers))
        # the largest frame a peer of this job may send: one sealed segment
        self.max_payload = min(crypto.MAX_PAYLOAD, cfg.segment_size + crypto.TAG_BYTES + 1024)
        self.inbound = threading.BoundedSemaphore(MAX_INBOUND)
        self.handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self.pool = BufferPool(shared.budget)
        # --bwlimit: this gateway's share, split evenly over its worker processes
        self.bwlimit = TokenBucket(cfg.bwlimit / cfg.workers) if cfg.bwlimit else None
        self._store: ObjectStore | None = None
        self._caps: Capabilities | None = None
        self._store_lock = threading.Lock()
        self.client_ctx: ssl.SSLContext | None = None
        self.server_ctx: ssl.SSLContext | None = None
        if cfg.role in (GatewayRole.SOURCE, GatewayRole.RELAY):
            self.client_ctx = crypto.client_context(cfg.ca_cert_pem, cfg.cert_pem, cfg.key_pem)
        if cfg.role in (GatewayRole.DESTINATION, GatewayRole.RELAY):
            self.server_ctx = crypto.server_context(cfg.ca_cert_pem, cfg.cert_pem, cfg.key_pem)

    # ------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Mark a store write in progress: the worker does not exit under it."""
        with self._writes_cv:
            self._writes += 1
        try:
            yield
        finally:
            with self._writes_cv:
                self._writes -= 1
                self._writes_cv.notify_all()

    def wait_writes(self, timeout: float) -> bool:
        """Wait until no store write is in progress; False if one still is."""
        with self._writes_cv:
            return self._writes_cv.wait_for(lambda: self._writes == 0, timeout=timeout)

    def store(self) -> ObjectStore:
        with self._store_lock:
            if self._store is None:
                uri = (
                    self.cfg.source_uri
                    if self.cfg.role == GatewayRole.SOURCE
                    else self.cfg.destination_uri
                )
                if not uri:
                    raise GatewayError(f"gateway {self.cfg.gateway_id} has no store configured")
                self._store = open_store(parse_uri(uri))
                self._caps = capabilities(self._store)
            return self._store

    def store_capabilities(self) -> Capabilities:
        """The features table of :meth:`store`, read once when it was opened."""
        self.store()
        assert self._caps is not None
        return self._caps

    def count(self, name: str, n: int = 1) -> None:
        self.shared.counters.add(self.index, name, n)

    def hook(self, name: str) -> bool:
        budget = self.shared.hooks.get(name)
        return budget is not None and budget.take()

    def emit(self, event: Any) -> None:
        self.shared.evt_q.put(event.model_dump_json())

    def chunk_failed(
        self,
        chunk_id: int,
        reason: str,
        *,
        object_id: int | None = None,
        retryable: bool = True,
        attempt: int = 0,
        leg: int = 0,
    ) -> None:
        self.count("failed")
        self.emit(
            ChunkFailed(
                job_id=self.cfg.job_id,
                gateway_id=self.cfg.gateway_id,
                chunk_id=chunk_id,
                object_id=object_id,
                reason=first_line(reason, limit=500),
                retryable=retryable,
                attempt=attempt,
                leg=leg,
            )
        )

    def work_failed(self, work: ChunkWork, reason: str, *, retryable: bool = True) -> None:
        """A chunk of work failed for every destination it was for."""
        if not work.targets:
            self.chunk_failed(
                work.chunk_id,
                reason,
                object_id=work.object_id,
                retryable=retryable,
                attempt=work.attempt,
            )
            return
        for target in work.targets:
            self.chunk_failed(
                work.chunk_id,
                reason,
                object_id=work.object_id,
                retryable=retryable,
                attempt=target.attempt,
                leg=target.leg,
            )

    def error(self, message: str, *, fatal: bool = False) -> None:
        self.count("errors")
        self.emit(
            GatewayErrorEvent(
                job_id=self.cfg.job_id,
                gateway_id=self.cfg.gateway_id,
                message=first_line(message, limit=500),
                fatal=fatal,
            )
        )


class PeerLink:
    """One outbound TLS connection to a next hop, (re)connected on demand."""

    def __init__(self, ctx: WorkerContext, slot: int, group: tuple[int, ...] | None = None) -> None:
        self.ctx = ctx
        self.slot = slot
        self.group = group  # multicast: the next hops it picks among
        self.sock: ssl.SSLSocket | None = None
        self.peer: PeerSpec | None = None
        self.generation = -1
        self.dirty = False  # a chunk was started on this connection and not finished
        self._backoff = 0.0

    def connect(self) -> ssl.SSLSocket:
        peer, generation = self.ctx.peers.pick(self.slot, self.group)
        if (
            self.sock is not None
            and generation == self.generation
            and not _closed_by_peer(self.sock)
        ):
            return self.sock
        self.close()
        if peer is None:
            raise GatewayError("no next hop configured")
        if self._backoff:
            time.sleep(self._backoff)
        assert self.ctx.client_ctx is not None
        try:
            raw = socket.create_connection((peer.host, peer.data_port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            self._backoff = min(max(self._backoff * 2, 0.1), 2.0)
            raise GatewayError(
                f"cannot connect to {peer.gateway_id} at {peer.host}:{peer.data_port}: {exc.strerror or exc}"
            ) from None
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock = self.ctx.client_ctx.wrap_socket(raw, server_hostname=peer.gateway_id)
        except (OSError, ssl.SSLError) as exc:
            raw.close()
            self._backoff = min(max(self._backoff * 2, 0.1), 2.0)
            raise GatewayError(f"TLS to {peer.gateway_id} failed: {exc}") from None
        sock.settimeout(SEND_TIMEOUT)
        self._backoff = 0.0
        self.sock, self.peer, self.generation = sock, peer, generation
        return sock

    def close_if_dirty(self) -> None:
        """Close the connection when a chunk was cut off mid-stream on it."""
        if self.dirty:
            self.close()

    def close(self) -> None:
        self.dirty = False
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    @property
    def name(self) -> str:
        return self.peer.gateway_id if self.peer else "next hop"


def _closed_by_peer(sock: ssl.SSLSocket) -> bool:
    """True when an idle outbound connection was closed by its peer. Next hops
    send no application data, so a readable socket means EOF or a reset, unless
    it was only TLS housekeeping (which a non-blocking read consumes)."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    if not readable:
        return False
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        sock.recv(1)  # EOF (b""), or bytes a next hop never sends: either way, done
        return True
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except (OSError, ssl.SSLError):
        return True
    finally:
        try:
            sock.settimeout(timeout)
        except OSError:
            pass
