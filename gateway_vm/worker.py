"""A gateway worker process: the data plane of one gateway runs in ``config.workers``
of these, forked at start-up, so that sealing and opening (which hold the GIL)
use every core. Sources run sender threads; destinations and relays accept
connections on the data socket they inherit from the main process.

A worker dies with its gateway: PR_SET_PDEATHSIG (SIGKILL) on Linux, and a
watch on its parent pid every 0.5 s everywhere.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing.queues import Queue as MPQueue
from typing import Any

from gateway_vm.lifetime import set_parent_death_signal
from gateway_vm.runtime import BufferPool, Counters, HookBudget, SharedBudget, TokenBucket
from skyhop import crypto
from skyhop.errors import GatewayError
from skyhop.models import (
    ChunkFailed,
    GatewayConfig,
    GatewayErrorEvent,
    GatewayRole,
    PeerSpec,
)
from skyhop.stores.base import ObjectStore, open_store
from skyhop.uri import parse_uri

log = logging.getLogger("gateway_vm")

CONNECT_TIMEOUT = 10.0
SEND_TIMEOUT = 300.0
HANDSHAKE_TIMEOUT = 30.0
#: a peer that goes quiet this long in the middle of a chunk is cut off (its
#: buffer goes back to the pool); between chunks a connection may idle
CHUNK_STALL_TIMEOUT = 300.0
#: inbound data connections one worker serves at a time; more are refused
MAX_INBOUND = 64


@dataclass
class Shared:
    """What the main process hands every worker (inherited through fork)."""

    config: GatewayConfig
    data_key: bytes | None  # source: job public key; destination: job private key
    listener: socket.socket | None
    work_q: MPQueue  # ChunkWork JSON (sources)
    ctl_qs: list[MPQueue]  # per worker: ("peers", [json]) | ("stop", None)
    evt_q: MPQueue  # event JSON to the main process
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

    def pick(self, slot: int) -> tuple[PeerSpec | None, int]:
        with self._cond:
            if not self.peers:
                return None, self.generation
            return self.peers[slot % len(self.peers)], self.generation


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
        self.pool = BufferPool(shared.budget)
        # --bwlimit: this gateway's share, split evenly over its worker processes
        self.bwlimit = TokenBucket(cfg.bwlimit / cfg.workers) if cfg.bwlimit else None
        self._store: ObjectStore | None = None
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
            return self._store

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
    ) -> None:
        self.count("failed")
        self.emit(
            ChunkFailed(
                job_id=self.cfg.job_id,
                gateway_id=self.cfg.gateway_id,
                chunk_id=chunk_id,
                object_id=object_id,
                reason=_one_line(reason),
                retryable=retryable,
                attempt=attempt,
            )
        )

    def error(self, message: str, *, fatal: bool = False) -> None:
        self.count("errors")
        self.emit(
            GatewayErrorEvent(
                job_id=self.cfg.job_id,
                gateway_id=self.cfg.gateway_id,
                message=_one_line(message),
                fatal=fatal,
            )
        )


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


class PeerLink:
    """One outbound TLS connection to a next hop, (re)connected on demand."""

    def __init__(self, ctx: WorkerContext, slot: int) -> None:
        self.ctx = ctx
        self.slot = slot
        self.sock: ssl.SSLSocket | None = None
        self.peer: PeerSpec | None = None
        self.generation = -1
        self.dirty = False  # a chunk was started on this connection and not finished
        self._backoff = 0.0

    def connect(self) -> ssl.SSLSocket:
        peer, generation = self.ctx.peers.pick(self.slot)
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


# ---------------------------------------------------------------- process entry


def worker_main(shared: Shared, index: int) -> None:
    """Entry point of worker ``index`` (runs in the forked child)."""
    parent = os.getppid()
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() != parent:  # the gateway died before the line above
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles ^C
    ctx = WorkerContext(shared, index)
    signal.signal(signal.SIGTERM, lambda *_: ctx.stop.set())
    threads: list[threading.Thread] = []

    def spawn(target: Any, *args: Any, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        threads.append(t)

    spawn(_control_loop, ctx, name="control")
    role = shared.config.role
    if role == GatewayRole.SOURCE:
        from gateway_vm.source import sender_loop

        for i in range(ctx.per_worker_connections):
            spawn(sender_loop, ctx, index * ctx.per_worker_connections + i, name=f"send-{i}")
    else:
        from gateway_vm.destination import serve_connection as dest_serve
        from gateway_vm.relay import RelayPool

        if role == GatewayRole.RELAY:
            pool = RelayPool(ctx)
            handler: Any = pool.serve_connection
        else:
            handler = dest_serve
        spawn(_accept_loop, ctx, handler, name="accept")
    try:
        while not ctx.stop.is_set():
            if os.getppid() != parent:
                break
            ctx.pool.trim()  # idle buffers go back while another worker waits
            ctx.stop.wait(0.25)
    finally:
        ctx.stop.set()
        # a write under way finishes (or cleans up after itself) before the
        # process goes: never leave a half-written temporary file behind
        ctx.wait_writes(WRITE_GRACE)
        try:
            shared.evt_q.close()
            shared.evt_q.join_thread()
        except Exception:  # noqa: BLE001 - exiting anyway
            pass
        os._exit(0)


def _control_loop(ctx: WorkerContext) -> None:
    q = ctx.shared.ctl_qs[ctx.index]
    while not ctx.stop.is_set():
        try:
            kind, payload = q.get(timeout=0.5)
        except Exception:  # noqa: BLE001 - queue.Empty, or EOF while exiting
            continue
        if kind == "peers":
            ctx.peers.set([PeerSpec.model_validate_json(p) for p in payload])
        elif kind == "stop":
            ctx.stop.set()


def _accept_loop(ctx: WorkerContext, handler: Any) -> None:
    listener = ctx.shared.listener
    assert listener is not None and ctx.server_ctx is not None
    listener.settimeout(0.5)
    while not ctx.stop.is_set():
        try:
            raw, addr = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            if ctx.stop.is_set():
                return
            time.sleep(0.1)
            continue
        threading.Thread(
            target=_serve, args=(ctx, handler, raw, addr), name=f"conn-{addr[1]}", daemon=True
        ).start()


def _serve(ctx: WorkerContext, handler: Any, raw: socket.socket, addr: Any) -> None:
    assert ctx.server_ctx is not None
    if not ctx.inbound.acquire(blocking=False):
        ctx.count("errors")
        log.warning("refused data connection from %s: over %d connections", addr[0], MAX_INBOUND)
        raw.close()
        return
    try:
        _serve_tls(ctx, handler, raw, addr)
    finally:
        ctx.inbound.release()


def _serve_tls(ctx: WorkerContext, handler: Any, raw: socket.socket, addr: Any) -> None:
    assert ctx.server_ctx is not None
    try:
        raw.setblocking(True)
        raw.settimeout(HANDSHAKE_TIMEOUT)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock = ctx.server_ctx.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError) as exc:
        ctx.count("errors")
        log.warning("refused data connection from %s: %s", addr[0], _one_line(str(exc)))
        raw.close()
        return
    sock.settimeout(None)
    try:
        handler(ctx, sock)
    except Exception as exc:  # noqa: BLE001 - one connection must never kill the gateway
        ctx.error(f"data connection from {addr[0]} failed: {type(exc).__name__}: {exc}")
    finally:
        try:
            sock.close()
        except OSError:
            pass
