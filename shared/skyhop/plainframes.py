"""Frames without sealing, for ``--encryption none``.

Data the application already encrypted at rest need not be sealed again: the
gateways then carry each chunk's frames in the clear inside the job's mutual
TLS, and the destination still checks the CRC32C of every chunk before writing
it. The frames keep the sealed stream's shape (header, payload, 16-byte tag),
so framing, caps and ordering are the same code; only the payload is clear and
the tag is a BLAKE2b digest of the frame's identity (header, job, object key)
rather than an AEAD tag: it binds a frame to its place in the stream (no swap,
replay or reorder goes unnoticed), while TLS protects the bytes in transit and
CRC32C verifies them end to end.

A frame says what it is (``FLAG_PLAIN``), but the gateway's configuration, not
the frame, decides what is accepted: a sealing destination cannot open a plain
frame (its AEAD tag fails) and a plain destination refuses a frame without the
flag, so neither side can be talked into the other mode.
"""

from __future__ import annotations

import hashlib

from skyhop.crypto.sealing import (
    FLAG_PLAIN,
    TAG_BYTES,
    FrameChecker,
    FrameHeader,
    FrameWriter,
)
from skyhop.errors import IntegrityError


def _tag(packed_header: bytes, job: bytes, object_key: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=TAG_BYTES, person=b"skyhop-plain-v1")
    for part in (packed_header, job, object_key):
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return h.digest()


class PlainSealer(FrameWriter):
    """Frames one chunk without sealing: the interface of
    :class:`skyhop.crypto.SegmentSealer`."""

    kind_flags = FLAG_PLAIN

    def _fill(
        self,
        header: FrameHeader,
        packed: bytes,
        data: bytes | bytearray | memoryview,
        out: memoryview,
    ) -> None:
        n = len(data)
        out[:n] = data
        out[n : n + TAG_BYTES] = _tag(packed, self._job, self.object_key.encode())


class PlainOpener(FrameChecker):
    """Checks and unpacks the frames of one plain chunk: the interface of
    :class:`skyhop.crypto.SegmentOpener`, enforcing the same order and completeness."""

    def _check_plain(self, header: FrameHeader, payload: bytes | bytearray | memoryview) -> int:
        self._check(header, len(payload))
        if not header.flags & FLAG_PLAIN:
            raise IntegrityError(
                f"chunk {self.chunk_id}: a sealed frame where this job sends plain ones"
            )
        if len(payload) < TAG_BYTES:
            raise IntegrityError(f"chunk {self.chunk_id}: segment {header.index} length mismatch")
        n = len(payload) - TAG_BYTES
        want = _tag(header.pack(), self._job, self.object_key.encode())
        if bytes(payload[n:]) != want:
            raise IntegrityError(
                f"chunk {self.chunk_id}: segment {header.index} does not belong here"
            )
        self._advance(header)
        return n

    def open_into(
        self,
        header: FrameHeader,
        payload: bytes | bytearray | memoryview,
        out: bytearray | memoryview,
    ) -> int:
        n = self._check_plain(header, payload)
        memoryview(out)[:n] = memoryview(payload)[:n]
        return n

    def open(
        self, header: FrameHeader, payload: bytes | bytearray | memoryview, prefix_len: int = 0
    ) -> bytes:
        n = self._check_plain(header, payload)
        if n < prefix_len:
            raise IntegrityError(f"chunk {self.chunk_id}: frame too short for its prefix")
        return bytes(payload[prefix_len:n])
