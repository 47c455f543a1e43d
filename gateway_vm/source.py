"""Source role: read a chunk's byte range, checksum it, compress segments when
that pays, seal them and stream the frames to a next hop.

Each sender thread owns one TLS connection and one reusable output buffer, and
sends one chunk at a time: memory per thread is about two segments. In a
multicast tree a thread holds one connection per group of next hops (each group
leads to some of the destinations) and sends each sealed segment, sealed once,
on every connection the chunk is for: the source is read once.
"""

from __future__ import annotations

import queue
import ssl
import time
from collections.abc import Iterator
from typing import cast

import zstandard

from gateway_vm.checksum import crc32c_extend
from gateway_vm.context import PeerLink, WorkerContext
from gateway_vm.runtime import Buffer, new_buffer
from gateway_vm.wire import ChunkMeta, ChunkTrailer
from skyhop import crypto
from skyhop.crypto import FLAG_ZSTD, HEADER_SIZE, TAG_BYTES, FrameType, SegmentSealer
from skyhop.errors import GatewayError, SkyhopError
from skyhop.errors import retryable as is_retryable
from skyhop.models import ChunkWork, Compression, Encryption
from skyhop.plainframes import PlainSealer
from skyhop.stores.base import RangeReaderInto

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


class Fanout:
    """The outbound connections one chunk goes out on: one next hop per group it is
    for (one group of a one-destination job: all next hops alike). A connection
    that fails drops out of the chunk, and its destinations are told the chunk
    failed for them; the others carry on."""

    def __init__(self, ctx: WorkerContext, links: list[PeerLink], work: ChunkWork) -> None:
        self.ctx = ctx
        self.work = work
        self.live = list(links)
        self.failed: list[tuple[PeerLink, str]] = []

    def connect(self) -> None:
        for link in list(self.live):
            try:
                link.connect()
            except (SkyhopError, OSError, ssl.SSLError) as exc:
                self._drop(link, f"sending to {link.name} failed: {exc}")
        self._check()

    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Send ``data`` on every live connection; the bytes put on the wire."""
        sent = 0
        for link in list(self.live):
            assert link.sock is not None
            try:
                link.dirty = True
                link.sock.sendall(data)
                sent += len(data)
            except (OSError, ssl.SSLError) as exc:
                self._drop(link, f"sending to {link.name} failed: {type(exc).__name__}: {exc}")
        self._check()
        return sent

    def done(self) -> None:
        for link in self.live:
            link.dirty = False

    def _drop(self, link: PeerLink, reason: str) -> None:
        link.close()  # its stream is cut mid-chunk (or never started)
        self.live.remove(link)
        self.failed.append((link, reason))

    def _check(self) -> None:
        if not self.live:
            raise _AllFailed(self.failed[0][1] if self.failed else "no next hop configured")

    def report(self) -> None:
        """chunk_failed for the destinations behind each connection that dropped out."""
        for link, reason in self.failed:
            behind = set(link.group or ())
            for target in self.work.targets:
                if target.leg in behind:
                    self.ctx.chunk_failed(
                        self.work.chunk_id,
                        reason,
                        object_id=self.work.object_id,
                        attempt=target.attempt,
                        leg=target.leg,
                    )


class _AllFailed(GatewayError):
    """Every connection of a chunk failed."""


def links_for(
    ctx: WorkerContext, links: dict[tuple[int, ...], PeerLink], slot: int, work: ChunkWork
) -> list[PeerLink]:
    """This thread's connections to the groups of next hops ``work`` is for."""
    groups = ctx.peers.groups()
    if not work.targets or groups == [()]:
        wanted = groups[:1]
    else:
        legs = set(work.legs())
        wanted = [g for g in groups if legs & set(g)]
    out = []
    for group in wanted:
        link = links.get(group)
        if link is None:
            link = links[group] = PeerLink(ctx, slot, group if group else None)
        out.append(link)
    return out


def sender_loop(ctx: WorkerContext, slot: int) -> None:
    """Take chunk work until the gateway stops; one connection per thread (and per
    group of next hops in a multicast tree)."""
    links: dict[tuple[int, ...], PeerLink] = {}
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
        chosen = links_for(ctx, links, slot, work)
        if not chosen:
            ctx.work_failed(work, f"no next hop leads to destination(s) {work.legs()}")
            continue
        fanout = Fanout(ctx, chosen, work)
        try:
            sent = send_chunk(ctx, fanout, compressor, out, work, inbuf)
        except _AllFailed as exc:
            fanout.failed.clear()  # every destination hears it once, below
            ctx.work_failed(work, str(exc))
        except SkyhopError as exc:
            fanout.failed.clear()
            ctx.work_failed(
                work,
                str(exc),
                retryable=is_retryable(exc),
            )
        except Exception as exc:  # noqa: BLE001 - a bad chunk must not stop the sender
            fanout.failed.clear()
            ctx.work_failed(work, f"unexpected {type(exc).__name__}: {exc}")
        else:
            ctx.count("done")
            ctx.count("bytes_sent", sent)
            ctx.count("bytes_read", work.length)
        finally:
            for link in chosen:
                link.close_if_dirty()
            fanout.report()
    for link in links.values():
        link.close()


def send_chunk(
    ctx: WorkerContext,
    fanout: Fanout,
    compressor: Compressor,
    out: Buffer,
    work: ChunkWork,
    inbuf: Buffer | None = None,
) -> int:
    """Read, seal and send one chunk, once, on every connection of ``fanout``;
    returns the wire bytes sent. Stores offering ``iter_range_into`` read each
    segment into ``inbuf``."""
    cfg = ctx.cfg
    sealing = cfg.encryption != Encryption.NONE
    if sealing and ctx.key is None:
        raise GatewayError(f"source gateway {cfg.gateway_id} has no job public key")
    if work.offset < 0 or work.length < 0 or work.offset + work.length > work.object_size:
        raise GatewayError(f"chunk {work.chunk_id}: range outside its object")
    segment = cfg.segment_size
    pause = cfg.test_hooks.get("sleep_per_chunk")
    if pause:  # test hook: slow a transfer down so tests can interrupt it mid-way
        time.sleep(float(pause))
    store = ctx.store()
    blocks: Iterator[bytes | memoryview]
    if ctx.store_capabilities().read_into and inbuf is not None and len(inbuf) == segment:
        blocks = cast(RangeReaderInto, store).iter_range_into(
            work.src_key, work.offset, work.length, inbuf, if_match=work.src_etag
        )
    else:
        blocks = store.iter_range(
            work.src_key, work.offset, work.length, segment, if_match=work.src_etag
        )
    # Read the first block before anything goes on the wire, so a missing or
    # changed source fails the chunk without breaking the connection's stream.
    first = next(blocks, None)
    fanout.connect()
    sealer: SegmentSealer | PlainSealer
    if sealing:
        assert ctx.key is not None
        aead, ephemeral = crypto.sender_chunk_key(ctx.key, cfg.job_id, work.chunk_id)
        sealer = SegmentSealer(aead, cfg.job_id, work.chunk_id)
    else:  # --encryption none: the job's TLS only, CRC32C still checked
        ephemeral = b""
        sealer = PlainSealer(cfg.job_id, work.chunk_id)
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
        targets=work.targets,
    )
    wire = 0
    frame = sealer.seal(meta.model_dump_json().encode(), ftype=FrameType.META, prefix=ephemeral)
    wire += fanout.send(frame)
    # the object key is bound into each segment's associated data: a multicast chunk's
    # frames are sealed once for every destination, under the chunk's first key
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
                flipped = bytearray(block)
                flipped[len(flipped) // 2] ^= 0x01
                block = memoryview(flipped)
            payload, flags = compressor(block)
            n = sealer.seal_into(payload, memoryview(out), flags=flags, plain_len=len(block))
            if ctx.hook("flip_wire"):
                out[HEADER_SIZE + (n - HEADER_SIZE) // 2] ^= 0x01
            if ctx.bwlimit is not None:
                ctx.bwlimit.take(n)
            wire += fanout.send(memoryview(out)[:n])
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
    wire += fanout.send(frame)
    fanout.done()
    return wire
