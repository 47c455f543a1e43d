"""AES-256-GCM segment sealing and the frame header.

A chunk travels as a sequence of frames. Each frame is a fixed-size,
versioned, big-endian :class:`FrameHeader` followed by an AES-256-GCM
ciphertext (tag included). Every frame has a fresh random 96-bit nonce; its
associated data is the packed header itself (magic, version, frame type,
flags including the last-segment flag, a digest of the job id, chunk id,
segment index, lengths, nonce) followed by the job id and the object key. A
:class:`SegmentOpener` insists on consecutive indices from 0 and on a final
frame carrying ``FLAG_LAST``, so a frame swapped in from another chunk, job or
object, a replayed or reordered frame, and a truncated chunk all fail with
:class:`~skyhop.errors.IntegrityError`. (With random nonces a key is good for
2**32 frames, i.e. 16 PiB of 4 MiB segments per job.)

Keys are never logged: nothing in this module formats a key into a message.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from skyhop.errors import IntegrityError, UsageError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

# ---------------------------------------------------------------- frame header

MAGIC = b"SKYH"
WIRE_VERSION = 1
#: magic, version, frame type, flags, job digest, chunk id, segment index,
#: payload length (ciphertext + tag), plain length (after opening and
#: decompression), nonce.
HEADER = struct.Struct(">4sBBH16sQIII12s")
HEADER_SIZE = HEADER.size  # 56 bytes

#: Caps a receiver enforces before allocating anything a peer claims.
MAX_SEGMENT = 64 * 1024 * 1024
MAX_PAYLOAD = MAX_SEGMENT + 1024 + TAG_BYTES

FLAG_LAST = 0x1
FLAG_ZSTD = 0x2
FLAG_PLAIN = 0x4  # not sealed (--encryption none): skyhop.plainframes
_KNOWN_FLAGS = FLAG_LAST | FLAG_ZSTD | FLAG_PLAIN


class FrameType(IntEnum):
    META = 1  # sealed chunk metadata (destination key, sizes, upload id, ...)
    DATA = 2  # a sealed segment of the chunk's bytes
    END = 3  # sealed trailer (checksum, segment count); carries FLAG_LAST


@dataclass(frozen=True, slots=True)
class FrameHeader:
    ftype: int
    flags: int
    job_digest: bytes
    chunk_id: int
    index: int
    payload_len: int
    plain_len: int
    nonce: bytes

    @property
    def last(self) -> bool:
        return bool(self.flags & FLAG_LAST)

    def pack(self) -> bytes:
        return HEADER.pack(
            MAGIC,
            WIRE_VERSION,
            self.ftype,
            self.flags,
            self.job_digest,
            self.chunk_id,
            self.index,
            self.payload_len,
            self.plain_len,
            self.nonce,
        )


def job_digest(job_id: str) -> bytes:
    """The 16-byte digest of a job id carried in every frame header."""
    return hashlib.blake2b(job_id.encode(), digest_size=16).digest()


def parse_header(
    data: bytes | bytearray | memoryview,
    *,
    expect_job: bytes | None = None,
    max_payload: int = MAX_PAYLOAD,
) -> FrameHeader:
    """Unpack and check a frame header: magic, version, type, flags and length caps
    (and the job digest when ``expect_job`` is given). Raises IntegrityError."""
    if len(data) != HEADER_SIZE:
        raise IntegrityError(f"frame header is {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, ftype, flags, digest, chunk_id, index, payload_len, plain_len, nonce = (
        HEADER.unpack(data)
    )
    if magic != MAGIC:
        raise IntegrityError("bad frame magic: not a skyhop stream")
    if version != WIRE_VERSION:
        raise IntegrityError(
            f"unsupported wire version {version} (this gateway speaks {WIRE_VERSION})"
        )
    if ftype not in (FrameType.META, FrameType.DATA, FrameType.END):
        raise IntegrityError(f"unknown frame type {ftype}")
    if flags & ~_KNOWN_FLAGS:
        raise IntegrityError(f"unknown frame flags {flags:#x}")
    if expect_job is not None and digest != expect_job:
        raise IntegrityError(f"frame of another job (chunk {chunk_id})")
    if payload_len < TAG_BYTES or payload_len > max_payload:
        raise IntegrityError(f"frame payload of {payload_len} bytes is out of bounds")
    if plain_len > MAX_SEGMENT:
        raise IntegrityError(f"frame plain length of {plain_len} bytes is out of bounds")
    return FrameHeader(ftype, flags, digest, chunk_id, index, payload_len, plain_len, nonce)


# ---------------------------------------------------------------- sealing


def generate_data_key() -> bytes:
    """A fresh 256-bit data key for one job."""
    return AESGCM.generate_key(bit_length=256)


def _aad(header: bytes | bytearray | memoryview, job: bytes, object_key: bytes) -> bytes:
    return bytes(header) + job + b"\x00" + object_key


class FrameWriter:
    """The order of one chunk's frames, sealed or plain: index 0, 1, 2, ..., and
    nothing after the frame flagged last. A subclass fills in each frame's payload
    and 16-byte tag (:meth:`_fill`) and names the flags all its frames carry."""

    #: flags every frame this writer makes carries
    kind_flags = 0

    def __init__(self, job_id: str, chunk_id: int, object_key: str = "") -> None:
        self._job = job_id.encode()
        self._digest = job_digest(job_id)
        self.chunk_id = chunk_id
        self.object_key = object_key
        self.index = 0
        self._closed = False

    def header(
        self,
        length: int,
        *,
        ftype: int = FrameType.DATA,
        flags: int = 0,
        plain_len: int | None = None,
    ) -> FrameHeader:
        """The header the next frame of ``length`` plaintext bytes will carry."""
        return FrameHeader(
            int(ftype),
            flags,
            self._digest,
            self.chunk_id,
            self.index,
            length + TAG_BYTES,
            length if plain_len is None else plain_len,
            os.urandom(NONCE_BYTES),
        )

    def _fill(
        self,
        header: FrameHeader,
        packed: bytes,
        data: bytes | bytearray | memoryview,
        out: memoryview,
    ) -> None:
        """Write the payload of ``data`` and its tag into ``out`` (exactly their size)."""
        raise NotImplementedError

    def seal_into(
        self,
        data: bytes | bytearray | memoryview,
        out: bytearray | memoryview,
        *,
        ftype: int = FrameType.DATA,
        last: bool = False,
        flags: int = 0,
        plain_len: int | None = None,
        prefix: bytes = b"",
    ) -> int:
        """Write header + ``prefix`` + payload of the next frame into ``out``; returns
        its length. ``prefix`` travels in the clear ahead of the payload (the META
        frame's ephemeral public key) and is counted in the header's payload length."""
        if self._closed:
            raise IntegrityError(f"chunk {self.chunk_id}: frame after the last one")
        hdr = self.header(
            len(data) + len(prefix),
            ftype=ftype,
            flags=flags | self.kind_flags | (FLAG_LAST if last else 0),
            plain_len=len(data) if plain_len is None else plain_len,
        )
        packed = hdr.pack()
        total = HEADER_SIZE + hdr.payload_len
        view = memoryview(out)
        view[:HEADER_SIZE] = packed
        start = HEADER_SIZE + len(prefix)
        view[HEADER_SIZE:start] = prefix
        self._fill(hdr, packed, data, view[start:total])
        self.index += 1
        self._closed = last
        return total

    def seal(
        self,
        data: bytes | bytearray | memoryview,
        *,
        ftype: int = FrameType.DATA,
        last: bool = False,
        flags: int = 0,
        plain_len: int | None = None,
        prefix: bytes = b"",
    ) -> bytearray:
        """The next frame (header + prefix + payload) as a new buffer."""
        out = bytearray(HEADER_SIZE + len(prefix) + len(data) + TAG_BYTES)
        self.seal_into(
            data, out, ftype=ftype, last=last, flags=flags, plain_len=plain_len, prefix=prefix
        )
        return out


class FrameChecker:
    """What every chunk's reader checks of each frame, sealed or plain, before its
    payload: this job, this chunk, the next index, the length the header says; and
    at the end that the last frame came (truncation)."""

    def __init__(self, job_id: str, chunk_id: int, object_key: str = "") -> None:
        self._job = job_id.encode()
        self.digest = job_digest(job_id)
        self.chunk_id = chunk_id
        self.object_key = object_key
        self.index = 0
        self.done = False

    def _check(self, header: FrameHeader, payload_len: int) -> None:
        if self.done:
            raise IntegrityError(f"chunk {self.chunk_id}: frame after the last segment")
        if header.job_digest != self.digest:
            raise IntegrityError(f"chunk {self.chunk_id}: frame of another job")
        if header.chunk_id != self.chunk_id:
            raise IntegrityError(
                f"chunk {self.chunk_id}: frame of chunk {header.chunk_id} swapped in"
            )
        if header.index != self.index:
            raise IntegrityError(
                f"chunk {self.chunk_id}: segment {header.index} where {self.index} was expected "
                "(reordered, replayed or missing)"
            )
        if payload_len != header.payload_len:
            raise IntegrityError(f"chunk {self.chunk_id}: segment {header.index} length mismatch")

    def _advance(self, header: FrameHeader) -> None:
        self.index += 1
        self.done = header.last

    def finish(self) -> None:
        """Raise IntegrityError unless the last segment was opened (truncation)."""
        if not self.done:
            raise IntegrityError(
                f"chunk {self.chunk_id}: truncated after {self.index} segments (no last segment)"
            )


class SegmentSealer(FrameWriter):
    """Seals the frames of one chunk in order (index 0, 1, 2, ...).

    ``object_key`` is bound into the associated data of every frame sealed
    while it is set; the gateway seals its META frame (which carries the key)
    with ``object_key=""`` and sets the key for the frames after it.
    """

    def __init__(
        self, key: bytes | AESGCM, job_id: str, chunk_id: int, object_key: str = ""
    ) -> None:
        super().__init__(job_id, chunk_id, object_key)
        self._aead = key if isinstance(key, AESGCM) else AESGCM(_check_key(key))

    def _fill(
        self,
        header: FrameHeader,
        packed: bytes,
        data: bytes | bytearray | memoryview,
        out: memoryview,
    ) -> None:
        self._aead.encrypt_into(
            header.nonce, data, _aad(packed, self._job, self.object_key.encode()), out
        )


class SegmentOpener(FrameChecker):
    """Opens the frames of one chunk, enforcing order and completeness."""

    def __init__(
        self, key: bytes | AESGCM, job_id: str, chunk_id: int, object_key: str = ""
    ) -> None:
        super().__init__(job_id, chunk_id, object_key)
        self._aead = key if isinstance(key, AESGCM) else AESGCM(_check_key(key))

    def open_into(
        self,
        header: FrameHeader,
        payload: bytes | bytearray | memoryview,
        out: bytearray | memoryview,
    ) -> int:
        """Authenticate and decrypt one frame's payload into ``out``; returns its length."""
        self._check(header, len(payload))
        n = header.payload_len - TAG_BYTES
        try:
            self._aead.decrypt_into(
                header.nonce,
                payload,
                _aad(header.pack(), self._job, self.object_key.encode()),
                memoryview(out)[:n],
            )
        except InvalidTag:
            raise IntegrityError(
                f"chunk {self.chunk_id}: segment {header.index} failed authentication"
            ) from None
        self._advance(header)
        return n

    def open(
        self, header: FrameHeader, payload: bytes | bytearray | memoryview, prefix_len: int = 0
    ) -> bytes:
        """Authenticate and decrypt one frame's payload (after ``prefix_len`` clear bytes)."""
        self._check(header, len(payload))
        if len(payload) < prefix_len + TAG_BYTES:
            raise IntegrityError(f"chunk {self.chunk_id}: frame too short for its prefix")
        try:
            plain = self._aead.decrypt(
                header.nonce,
                bytes(payload[prefix_len:]),
                _aad(header.pack(), self._job, self.object_key.encode()),
            )
        except InvalidTag:
            raise IntegrityError(
                f"chunk {self.chunk_id}: segment {header.index} failed authentication"
            ) from None
        self._advance(header)
        return plain


def seal_chunk(
    key: bytes,
    job_id: str,
    object_key: str,
    chunk_id: int,
    data: bytes,
    segment_size: int,
) -> list[bytes]:
    """Seal ``data`` as DATA frames of ``segment_size`` bytes, the last one flagged."""
    if segment_size <= 0 or segment_size > MAX_SEGMENT:
        raise UsageError(f"segment size {segment_size} is out of bounds (1..{MAX_SEGMENT})")
    sealer = SegmentSealer(key, job_id, chunk_id, object_key)
    view = memoryview(data)
    starts = list(range(0, len(data), segment_size)) or [0]
    return [
        bytes(sealer.seal(view[s : s + segment_size], last=(i == len(starts) - 1)))
        for i, s in enumerate(starts)
    ]


def open_chunk(
    key: bytes, job_id: str, object_key: str, chunk_id: int, frames: Iterable[bytes]
) -> bytes:
    """Open frames made by :func:`seal_chunk`; IntegrityError on any tampering."""
    opener = SegmentOpener(key, job_id, chunk_id, object_key)
    parts: list[bytes] = []
    for frame in frames:
        header = parse_header(frame[:HEADER_SIZE], expect_job=opener.digest)
        if header.ftype != FrameType.DATA:
            raise IntegrityError(f"chunk {chunk_id}: unexpected frame type {header.ftype}")
        parts.append(opener.open(header, frame[HEADER_SIZE:]))
    opener.finish()
    return b"".join(parts)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise UsageError(f"a data key is {KEY_BYTES} bytes")
    return bytes(key)
