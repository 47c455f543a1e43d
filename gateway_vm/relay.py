"""Relay role: forward sealed frames to a next hop without opening them (a relay
holds no key). A chunk's frames stay together on one outbound connection,
borrowed from a pool for the length of the chunk; a blocked next hop blocks
the inbound read, so back-pressure passes through the relay."""

from __future__ import annotations

import queue
import ssl

from gateway_vm.wire import Frame, FrameReader, StreamClosed
from gateway_vm.worker import CHUNK_STALL_TIMEOUT, PeerLink, WorkerContext
from skyhop.crypto import FrameType
from skyhop.errors import GatewayError, IntegrityError


class RelayPool:
    """Outbound connections of one relay worker."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._links: queue.Queue[PeerLink] = queue.Queue()
        n = ctx.per_worker_connections
        for i in range(n):
            self._links.put(PeerLink(ctx, ctx.index * n + i))

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

    def _forward_chunk(self, reader: FrameReader, frame: Frame) -> bool:
        ctx = self.ctx
        chunk_id = frame.header.chunk_id
        if not ctx.peers.wait(ctx.stop):
            return False
        link = self._links.get()
        ctx.count("taken")
        reader.sock.settimeout(CHUNK_STALL_TIMEOUT)
        sent = 0
        inbound_ok = True
        try:
            sock = link.connect()
            link.dirty = True
            index = 0
            while True:
                hdr = frame.header
                if hdr.chunk_id != chunk_id or hdr.index != index:
                    inbound_ok = False
                    raise IntegrityError(f"chunk {chunk_id}: frames out of order at the relay")
                sock.sendall(frame.raw)
                sent += len(frame.raw)
                if hdr.last:
                    break
                index += 1
                try:
                    nxt = reader.next()
                except (IntegrityError, StreamClosed, OSError):
                    nxt = None
                if nxt is None:
                    inbound_ok = False
                    raise IntegrityError(f"chunk {chunk_id}: inbound connection closed mid-chunk")
                frame = nxt
            link.dirty = False
            ctx.count("done")
            ctx.count("bytes_sent", sent)
            ctx.count("bytes_received", sent)
            return True
        except (GatewayError, IntegrityError, OSError, ssl.SSLError) as exc:
            link.close_if_dirty()
            ctx.chunk_failed(chunk_id, f"relay {ctx.cfg.gateway_id}: {exc}")
            if not inbound_ok:
                return False
            # The outbound side failed: drop the rest of this chunk and carry on.
            try:
                while not frame.header.last:
                    nxt = reader.next()
                    if nxt is None or nxt.header.chunk_id != chunk_id:
                        return False
                    frame = nxt
            except (IntegrityError, StreamClosed, OSError):
                return False
            return True
        finally:
            self._links.put(link)
            try:
                reader.sock.settimeout(None)
            except OSError:
                pass
