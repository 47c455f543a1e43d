"""Relay role: forward sealed frames to a next hop without opening them (a relay
holds no key). A chunk's frames stay together on one outbound connection,
borrowed from a pool for the length of the chunk; a blocked next hop blocks
the inbound read, so back-pressure passes through the relay. In a multicast
tree a relay forwards each chunk to one next hop of every group (subtree)."""

from __future__ import annotations

import queue
import ssl
import threading

from gateway_vm.context import CHUNK_STALL_TIMEOUT, PeerLink, WorkerContext
from gateway_vm.wire import Frame, FrameReader, StreamClosed
from skyhop.crypto import FrameType
from skyhop.errors import GatewayError, IntegrityError


class RelayPool:
    """Outbound connections of one relay worker: a pool per group of next hops (one
    group for a one-destination job; in a multicast tree, one per subtree)."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._pools: dict[tuple[int, ...], queue.Queue[PeerLink]] = {}
        self._lock = threading.Lock()

    def _pool(self, group: tuple[int, ...]) -> queue.Queue[PeerLink]:
        with self._lock:
            pool = self._pools.get(group)
            if pool is None:
                pool = self._pools[group] = queue.Queue()
                n = self.ctx.per_worker_connections
                for i in range(n):
                    pool.put(PeerLink(self.ctx, self.ctx.index * n + i, group if group else None))
            return pool

    def serve_connection(self, ctx: WorkerContext, sock: ssl.SSLSocket) -> None:
        reader = FrameReader(sock, ctx.digest, max_payload=ctx.max_payload)
        while not ctx.stop.is_set():
            try:
                frame = reader.next()
            except (IntegrityError, StreamClosed, OSError) as exc:
                ctx.error(f"relay: inbound stream broken: {exc}")
                return
            if frame is None:
                return
            if frame.header.ftype != FrameType.META:
                ctx.error("relay: inbound stream out of sync")
                return
            if not self._forward_chunk(reader, frame):
                return

    def _failed(self, chunk_id: int, group: tuple[int, ...], reason: str) -> None:
        """The chunk did not get through to the destinations behind ``group``. The
        relay cannot read the chunk's metadata, so it names no attempt (0)."""
        for leg in group or (0,):
            self.ctx.chunk_failed(chunk_id, f"relay {self.ctx.cfg.gateway_id}: {reason}", leg=leg)

    def _forward_chunk(self, reader: FrameReader, frame: Frame) -> bool:
        """Forward one chunk's frames, as they come, to one next hop of every group
        (a relay cannot tell which destinations a chunk is for: each subtree gets it,
        and a destination drops a chunk that is not for it). A next hop that fails
        drops out of the chunk; the others carry on."""
        ctx = self.ctx
        chunk_id = frame.header.chunk_id
        if not ctx.peers.wait(ctx.stop):
            return False
        groups = ctx.peers.groups()
        taken = [(group, self._pool(group).get()) for group in groups]
        live: list[tuple[tuple[int, ...], PeerLink]] = []
        ctx.count("taken")
        reader.sock.settimeout(CHUNK_STALL_TIMEOUT)
        sent = 0
        try:
            for group, link in taken:
                try:
                    link.connect()
                    live.append((group, link))
                except (GatewayError, OSError, ssl.SSLError) as exc:
                    self._failed(chunk_id, group, str(exc))
            index = 0
            while True:
                hdr = frame.header
                if hdr.chunk_id != chunk_id or hdr.index != index:
                    for group, link in live:
                        link.close_if_dirty()
                        self._failed(chunk_id, group, "frames out of order at the relay")
                    return False
                for group, link in list(live):
                    assert link.sock is not None
                    try:
                        link.dirty = True
                        link.sock.sendall(frame.raw)
                        sent += len(frame.raw)
                    except (OSError, ssl.SSLError) as exc:
                        link.close()
                        live.remove((group, link))
                        self._failed(chunk_id, group, f"sending to {link.name} failed: {exc}")
                if hdr.last:
                    break
                index += 1
                try:
                    nxt = reader.next()
                except (IntegrityError, StreamClosed, OSError):
                    nxt = None
                if nxt is None:
                    for group, link in live:
                        link.close_if_dirty()
                        self._failed(chunk_id, group, "inbound connection closed mid-chunk")
                    return False
                frame = nxt
            for _, link in live:
                link.dirty = False
            if live:
                ctx.count("done")
            ctx.count("bytes_sent", sent)
            ctx.count("bytes_received", reader.bytes_read)
            reader.bytes_read = 0
            return True
        finally:
            for group, link in taken:
                self._pool(group).put(link)
            try:
                reader.sock.settimeout(None)
            except OSError:
                pass
