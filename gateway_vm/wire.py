"""The framed stream between gateways: exact reads, size caps, sealed metadata.

A chunk on the wire is ``META`` (sealed :class:`ChunkMeta`, index 0), then
``DATA`` frames (indices 1..n, each a sealed, optionally zstd-compressed
segment), then ``END`` (sealed :class:`ChunkTrailer`, index n+1, FLAG_LAST).
Only headers are readable without the key: relays learn job digest, chunk id,
indices and lengths, nothing about objects.
"""

from __future__ import annotations

import socket
import ssl

from pydantic import BaseModel, ConfigDict, Field

from gateway_vm.runtime import new_buffer
from skyhop.crypto import HEADER_SIZE, MAX_PAYLOAD, FrameHeader, FrameType, parse_header
from skyhop.errors import IntegrityError
from skyhop.models import ChunkTarget
from skyhop.stores.base import ObjectMeta

#: Sealed META / END frames are small; anything bigger is an attack or a bug.
MAX_META = 64 * 1024


class ChunkMeta(BaseModel):
    """What the destination needs to write a chunk (travels sealed)."""

    model_config = ConfigDict(extra="forbid")

    chunk_id: int
    object_id: int
    index: int
    dst_key: str
    object_size: int
    offset: int
    length: int
    multipart: bool
    upload_id: str | None = None
    compression: str
    segment_size: int
    meta: ObjectMeta | None = None  # written with a single-chunk object
    attempt: int = 0  # the dispatch it belongs to, for the destination's chunk_failed
    # multicast: each destination still needing the chunk, with its key, upload and
    # attempt there; a destination writes its own and drops a chunk not for it
    targets: list[ChunkTarget] = Field(default_factory=list)

    def for_leg(self, leg: int) -> ChunkMeta | None:
        """This chunk as destination ``leg`` writes it (None: it is not for ``leg``)."""
        if not self.targets:
            return self if leg == 0 else None
        for t in self.targets:
            if t.leg == leg:
                return self.model_copy(
                    update={
                        "dst_key": t.dst_key,
                        "upload_id": t.upload_id,
                        "meta": t.meta,
                        "attempt": t.attempt,
                    }
                )
        return None


class ChunkTrailer(BaseModel):
    """Sent sealed after the last segment: the plaintext checksum and counts."""

    model_config = ConfigDict(extra="forbid")

    crc32c: str
    segments: int
    length: int


class StreamClosed(Exception):
    """The peer closed the connection in the middle of a frame."""


def recv_exact(sock: socket.socket | ssl.SSLSocket, view: memoryview) -> bool:
    """Fill ``view`` from ``sock``. False on a clean EOF before the first byte;
    StreamClosed on EOF after some bytes."""
    got = 0
    total = len(view)
    while got < total:
        n = sock.recv_into(view[got:], total - got)
        if n == 0:
            if got == 0:
                return False
            raise StreamClosed(f"connection closed after {got} of {total} bytes")
        got += n
    return True


class Frame:
    """One frame read by :class:`FrameReader`; valid until the next read."""

    __slots__ = ("header", "raw", "payload")

    def __init__(self, header: FrameHeader, raw: memoryview, payload: memoryview) -> None:
        self.header = header
        self.raw = raw  # header + payload, for relays that forward as is
        self.payload = payload


class FrameReader:
    """Reads frames from one connection into a reused buffer, never allocating
    more than the cap whatever a header claims."""

    def __init__(
        self,
        sock: socket.socket | ssl.SSLSocket,
        job_digest: bytes,
        *,
        max_payload: int = MAX_PAYLOAD,
        initial: int = 4 * 1024 * 1024 + 4096,
    ) -> None:
        self.sock = sock
        self.job_digest = job_digest
        self.max_payload = max_payload
        self._buf = new_buffer(min(initial, HEADER_SIZE + max_payload))
        self.bytes_read = 0

    def next(self) -> Frame | None:
        """The next frame, or None on a clean EOF between frames."""
        view = memoryview(self._buf)
        if not recv_exact(self.sock, view[:HEADER_SIZE]):
            return None
        header = parse_header(
            view[:HEADER_SIZE], expect_job=self.job_digest, max_payload=self.max_payload
        )
        if header.ftype != FrameType.DATA and header.payload_len > MAX_META:  # META / END are small
            raise IntegrityError(f"chunk {header.chunk_id}: oversized control frame")
        total = HEADER_SIZE + header.payload_len
        if total > len(self._buf):
            grown = new_buffer(total)
            grown[:HEADER_SIZE] = view[:HEADER_SIZE]
            view.release()
            self._buf = grown
            view = memoryview(self._buf)
        if not recv_exact(self.sock, view[HEADER_SIZE:total]):
            raise StreamClosed(f"connection closed before the payload of chunk {header.chunk_id}")
        self.bytes_read += total
        return Frame(header, view[:total], view[HEADER_SIZE:total])
