"""A gateway worker process: the data plane of one gateway runs in ``config.workers``
of these, forked at start-up, so that sealing and opening (which hold the GIL)
use every core. Sources run sender threads; destinations and relays accept
connections on the data socket they inherit from the main process. What a role
runs is chosen from :data:`ROLES`; what the roles share is in
:mod:`gateway_vm.context`.

A worker dies with its gateway: PR_SET_PDEATHSIG (SIGKILL) on Linux, and a
watch on its parent pid every 0.5 s everywhere.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from gateway_vm.context import (
    HANDSHAKE_TIMEOUT,
    MAX_HANDSHAKES,
    MAX_INBOUND,
    WRITE_GRACE,
    Shared,
    WorkerContext,
)
from gateway_vm.destination import serve_connection as destination_serve
from gateway_vm.lifetime import set_parent_death_signal
from gateway_vm.relay import RelayPool
from gateway_vm.source import sender_loop
from skyhop.errors import first_line
from skyhop.models import GatewayRole, PeerSpec

log = logging.getLogger("gateway_vm")

__all__ = ["ROLES", "Shared", "WorkerContext", "worker_main"]

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

    def spawn(target: Callable[..., object], *args: Any, name: str) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        threads.append(t)

    spawn(_control_loop, ctx, name="control")
    ROLES[shared.config.role](ctx, spawn)
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
        except Exception:  # noqa: BLE001, S110 - exiting anyway
            pass
        os._exit(0)


def _control_loop(ctx: WorkerContext) -> None:
    q = ctx.shared.ctl_qs[ctx.index]
    while not ctx.stop.is_set():
        try:
            kind, payload = q.get(timeout=0.5)
        except Exception:  # noqa: BLE001, S112 - queue.Empty, or EOF while exiting
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
    """One inbound connection: its mutual-TLS handshake first (with a short deadline,
    holding no serving slot), then a serving slot for the authenticated peer. An
    unauthenticated connection, however many are held open, never keeps a peer of
    the job from being served."""
    assert ctx.server_ctx is not None
    if not ctx.handshakes.acquire(blocking=False):
        ctx.count("errors")
        log.warning("refused data connection from %s: over %d handshakes", addr[0], MAX_HANDSHAKES)
        raw.close()
        return
    try:
        sock = _handshake(ctx, raw, addr)
    finally:
        ctx.handshakes.release()
    if sock is None:
        return
    if not ctx.inbound.acquire(blocking=False):
        ctx.count("errors")
        log.warning("refused data connection from %s: over %d connections", addr[0], MAX_INBOUND)
        _close(sock)
        return
    try:
        _serve_tls(ctx, handler, sock, addr)
    finally:
        ctx.inbound.release()


def _handshake(ctx: WorkerContext, raw: socket.socket, addr: Any) -> ssl.SSLSocket | None:
    """The server side of the mutual-TLS handshake, within HANDSHAKE_TIMEOUT."""
    assert ctx.server_ctx is not None
    try:
        raw.setblocking(True)
        raw.settimeout(HANDSHAKE_TIMEOUT)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return ctx.server_ctx.wrap_socket(raw, server_side=True)
    except (OSError, ssl.SSLError) as exc:
        ctx.count("errors")
        log.warning("refused data connection from %s: %s", addr[0], first_line(exc, limit=500))
        raw.close()
        return None


def _serve_tls(ctx: WorkerContext, handler: Any, sock: ssl.SSLSocket, addr: Any) -> None:
    sock.settimeout(None)
    try:
        handler(ctx, sock)
    except Exception as exc:  # noqa: BLE001 - one connection must never kill the gateway
        ctx.error(f"data connection from {addr[0]} failed: {type(exc).__name__}: {exc}")
    finally:
        _close(sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass


# ---------------------------------------------------------------- the roles

#: starts a thread in the worker: ``spawn(target, *args, name=...)``
Spawn = Callable[..., None]


def _start_source(ctx: WorkerContext, spawn: Spawn) -> None:
    """A source's sender threads, one per outbound connection of this worker."""
    first = ctx.index * ctx.per_worker_connections
    for i in range(ctx.per_worker_connections):
        spawn(sender_loop, ctx, first + i, name=f"send-{i}")


def _start_destination(ctx: WorkerContext, spawn: Spawn) -> None:
    """A destination accepts connections and writes what they carry."""
    spawn(_accept_loop, ctx, destination_serve, name="accept")


def _start_relay(ctx: WorkerContext, spawn: Spawn) -> None:
    """A relay accepts connections and forwards them through its pool of next hops."""
    spawn(_accept_loop, ctx, RelayPool(ctx).serve_connection, name="accept")


#: what a worker runs, by the gateway's role
ROLES: dict[GatewayRole, Callable[[WorkerContext, Spawn], None]] = {
    GatewayRole.SOURCE: _start_source,
    GatewayRole.DESTINATION: _start_destination,
    GatewayRole.RELAY: _start_relay,
}
