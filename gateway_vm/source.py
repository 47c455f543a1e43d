"""Source role: read a chunk's byte range, checksum it, compress segments when
that pays, seal them and stream the frames to a next hop.

Each sender thread owns one TLS connection and one reusable output buffer, and
sends one chunk at a time: memory per thread is about two segments.
"""

from __future__ import annotations

import queue
import ssl
import time
from collections.abc import Iterator

import zstandard

from gateway_vm.checksum import crc32c_extend
from gateway_vm.runtime import Buffer, new_buffer
from gateway_vm.wire import ChunkMeta, ChunkTrailer
from gateway_vm.worker import PeerLink, WorkerContext
from skyhop import crypto
from skyhop.crypto import FLAG_ZSTD, HEADER_SIZE, TAG_BYTES, FrameType, SegmentSealer
from skyhop.errors import GatewayError, SkyhopError, StoreError
from skyhop.models import ChunkWork, Compression

SAMPLE_BYTES = 64 * 1024
#: compress a segment only when the sample shrinks to this fraction or less
PAYS = 0.9


class Compressor:
    """Decides per segment whether zstd pays, and compresses when it does."""

    def __init__(self, mode: Compression) -> None:
        self.mode = mode
        self._zstd = zstandard.ZstdCompressor(level=1) if mode != Compression.NONE else None

    def __call__(
        self, block: bytes | bytearray | memoryview
    ) -> tuple[bytes | bytearray | memoryview, int]:
        if self._zstd is None or not block:
            return block, 0
        if self.mode == Compression.AUTO and len(block) > SAMPLE_BYTES:
            mid = len(block) // 2
            sample = bytes(block[mid : mid + SAMPLE_BYTES])
            if len(self._zstd.compress(sample)) > PAYS * len(sample):
                return block, 0
        packed = self._zstd.compress(block)
        if len(packed) >= len(block):
            return block, 0
        return packed, FLAG_ZSTD


def sender_loop(ctx: WorkerContext, slot: int) -> None:
    """Take chunk work until the gateway stops; one connection per thread."""
    link = PeerLink(ctx, slot)
    compressor = Compressor(ctx.cfg.compression)
    # reused for every segment: fresh multi-MiB buffers fault their pages in
    out = new_buffer(HEADER_SIZE + ctx.cfg.segment_size + TAG_BYTES)
    inbuf = new_buffer(ctx.cfg.segment_size)
    work_q = ctx.shared.work_q
    while not ctx.stop.is_set():
        if not ctx.peers.wait(ctx.stop):
            break
        try:
            item = work_q.get(timeout=0.5)
        except queue.Empty:
            continue
        except (EOFError, OSError):
            break
        work = ChunkWork.model_validate_json(item)
        ctx.count("taken")
        if ctx.hook("drop_chunk"):  # test hook: lose a chunk without a word
            ctx.count("done")
            continue
        try:
            sent = send_chunk(ctx, link, compressor, out, work, inbuf)
        except SkyhopError as exc:
            link.close_if_dirty()
            ctx.chunk_failed(
                work.chunk_id,
                str(exc),
                object_id=work.object_id,
                retryable=getattr(exc, "retryable", True) if isinstance(exc, StoreError) else True,
                attempt=work.attempt,
            )
        except (OSError, ssl.SSLError) as exc:
            link.close_if_dirty()
            ctx.chunk_failed(
                work.chunk_id,
                f"sending to {link.name} failed: {type(exc).__name__}: {exc}",
                object_id=work.object_id,
                attempt=work.attempt,
            )
        except Exception as exc:  # noqa: BLE001 - a bad chunk must not stop the sender
            link.close_if_dirty()
            ctx.chunk_failed(
                work.chunk_id,
                f"unexpected {type(exc).__name__}: {exc}",
                object_id=work.object_id,
                attempt=work.attempt,
            )
        else:
            ctx.count("done")
            ctx.count("bytes_sent", sent)
    link.close()


def send_chunk(
    ctx: WorkerContext,
    link: PeerLink,
    compressor: Compressor,
    out: Buffer,
    work: ChunkWork,
    inbuf: Buffer | None = None,
) -> int:
    """Send one chunk; returns the wire bytes sent. Stores offering
    ``iter_range_into`` read each segment into ``inbuf``."""
    cfg = ctx.cfg
    if ctx.key is None:
        raise GatewayError(f"source gateway {cfg.gateway_id} has no job public key")
    if work.offset < 0 or work.length < 0 or work.offset + work.length > work.object_size:
        raise GatewayError(f"chunk {work.chunk_id}: range outside its object")
    segment = cfg.segment_size
    pause = cfg.test_hooks.get("sleep_per_chunk")
    if pause:  # test hook: slow a transfer down so tests can interrupt it mid-way
        time.sleep(float(pause))
    store = ctx.store()
    read_into = getattr(store, "iter_range_into", None)
    blocks: Iterator[bytes | memoryview]
    if read_into is not None and inbuf is not None and len(inbuf) == segment:
        blocks = read_into(work.src_key, work.offset, work.length, inbuf, if_match=work.src_etag)
    else:
        blocks = store.iter_range(
            work.src_key, work.offset, work.length, segment, if_match=work.src_etag
        )
    # Read the first block before anything goes on the wire, so a missing or
    # changed source fails the chunk without breaking the connection's stream.
    first = next(blocks, None)
    sock = link.connect()
    aead, ephemeral = crypto.sender_chunk_key(ctx.key, cfg.job_id, work.chunk_id)
    sealer = SegmentSealer(aead, cfg.job_id, work.chunk_id)
    meta = ChunkMeta(
        chunk_id=work.chunk_id,
        object_id=work.object_id,
        index=work.index,
        dst_key=work.dst_key,
        object_size=work.object_size,
        offset=work.offset,
        length=work.length,
        multipart=work.multipart,
        upload_id=work.upload_id,
        compression=str(cfg.compression),
        segment_size=segment,
        meta=work.meta,
        attempt=work.attempt,
    )
    wire = 0
    frame = sealer.seal(meta.model_dump_json().encode(), ftype=FrameType.META, prefix=ephemeral)
    link.dirty = True
    sock.sendall(frame)
    wire += len(frame)
    sealer.object_key = work.dst_key
    crc = 0
    segments = 0
    length = 0
    block = first
    try:
        while block is not None:
            crc = crc32c_extend(crc, block)
            length += len(block)
            if ctx.hook("flip_plain") and block:
                block = bytearray(block)
                block[len(block) // 2] ^= 0x01
            payload, flags = compressor(block)
            n = sealer.seal_into(payload, out, flags=flags, plain_len=len(block))
            if ctx.hook("flip_wire"):
                out[HEADER_SIZE + (n - HEADER_SIZE) // 2] ^= 0x01
            if ctx.bwlimit is not None:
                ctx.bwlimit.take(n)
            sock.sendall(memoryview(out)[:n])
            wire += n
            segments += 1
            block = next(blocks, None)
    finally:
        close = getattr(blocks, "close", None)
        if close is not None:
            close()
    if length != work.length:
        raise GatewayError(f"chunk {work.chunk_id}: read {length} of {work.length} bytes")
    trailer = ChunkTrailer(crc32c=f"{crc:08x}", segments=segments, length=length)
    frame = sealer.seal(trailer.model_dump_json().encode(), ftype=FrameType.END, last=True)
    sock.sendall(frame)
    wire += len(frame)
    link.dirty = False
    return wire
