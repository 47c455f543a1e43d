"""Destination role: open each chunk's frames, decompress, verify the CRC32C of
the plaintext, and only then write it to the destination store.

Memory: a chunk's buffer is taken from the worker's byte budget before any of
its data is read; while the budget is exhausted the connection is not read, so
TCP back-pressure reaches the sender. Writes run on a small thread pool, so a
connection reads the next chunk while the previous one is being stored.
"""

from __future__ import annotations

import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zstandard
from pydantic import ValidationError

from gateway_vm import scope
from gateway_vm.checksum import crc32c_extend
from gateway_vm.context import CHUNK_STALL_TIMEOUT, WorkerContext
from gateway_vm.runtime import Buffer
from gateway_vm.wire import ChunkMeta, ChunkTrailer, Frame, FrameReader, StreamClosed
from skyhop import crypto
from skyhop.checksums import md5_hex
from skyhop.crypto import FLAG_ZSTD, TAG_BYTES, FrameType, SegmentOpener
from skyhop.errors import IntegrityError, SkyhopError, StoreError
from skyhop.errors import retryable as is_retryable
from skyhop.models import ChunkVerified, Encryption
from skyhop.plainframes import PlainOpener
from skyhop.stores.base import MultipartWriter

_writers: dict[int, ThreadPoolExecutor] = {}


def _writer_pool(ctx: WorkerContext) -> ThreadPoolExecutor:
    pool = _writers.get(id(ctx))
    if pool is None:
        pool = ThreadPoolExecutor(
            max_workers=ctx.per_worker_connections, thread_name_prefix="write"
        )
        _writers[id(ctx)] = pool
    return pool


def serve_connection(ctx: WorkerContext, sock: ssl.SSLSocket) -> None:
    """Receive chunks from one inbound connection until it closes."""
    if ctx.key is None and ctx.cfg.encryption != Encryption.NONE:
        ctx.error("destination gateway has no job key; closing data connection", fatal=True)
        return
    reader = FrameReader(sock, ctx.digest, max_payload=ctx.max_payload)
    decompressor = zstandard.ZstdDecompressor()
    while not ctx.stop.is_set():
        try:
            frame = reader.next()
        except (IntegrityError, StreamClosed, OSError) as exc:
            ctx.error(f"data stream broken: {exc}")
            return
        if frame is None:
            return
        if frame.header.ftype != FrameType.META:
            ctx.error(f"data stream out of sync: frame type {frame.header.ftype} outside a chunk")
            return
        if not _receive_chunk(ctx, reader, frame, decompressor):
            return


def _skip_chunk(reader: FrameReader, chunk_id: int, frame: Frame | None) -> bool:
    """Read and drop the rest of a failed chunk's frames; False if the stream broke."""
    try:
        while frame is None or not frame.header.last:
            frame = reader.next()
            if frame is None or frame.header.chunk_id != chunk_id:
                return False
        return True
    except (IntegrityError, StreamClosed, OSError):
        return False


def _receive_chunk(
    ctx: WorkerContext, reader: FrameReader, first: Frame, decompressor: zstandard.ZstdDecompressor
) -> bool:
    """Receive one chunk whose META frame is ``first``. Returns False when the
    connection can no longer be used."""
    chunk_id = first.header.chunk_id
    ctx.count("taken")
    opener: SegmentOpener | PlainOpener
    try:
        if ctx.cfg.encryption == Encryption.NONE:  # the configuration decides, not the frame
            opener = PlainOpener(ctx.cfg.job_id, chunk_id)
            prefix = 0
        elif ctx.key is None:
            return False
        else:
            ephemeral = bytes(first.payload[: crypto.EPHEMERAL_BYTES])
            aead = crypto.receiver_chunk_key(ctx.key, ephemeral, ctx.cfg.job_id, chunk_id)
            opener = SegmentOpener(aead, ctx.cfg.job_id, chunk_id)
            prefix = crypto.EPHEMERAL_BYTES
        meta = ChunkMeta.model_validate_json(
            opener.open(first.header, first.payload, prefix_len=prefix)
        )
        if meta.chunk_id != chunk_id or meta.length < 0:
            raise IntegrityError(f"chunk {chunk_id}: metadata does not match its frame")
    except (IntegrityError, ValidationError) as exc:
        ctx.chunk_failed(
            chunk_id, f"metadata of chunk {chunk_id} rejected: {_short(exc)}", leg=ctx.cfg.leg
        )
        return _skip_chunk(reader, chunk_id, first)
    started = time.monotonic()
    # the frames are sealed under the chunk's first key (once for every destination)
    opener.object_key = meta.dst_key
    mine = meta.for_leg(ctx.cfg.leg)
    if mine is None:
        # multicast: a relay sends each chunk down every subtree; this one is for
        # other destinations (sent again to them alone), so it is read and dropped
        ctx.count("done")
        return _skip_chunk(reader, chunk_id, first)
    meta = mine
    try:
        scope.check_key(ctx.cfg.destination_uri, meta.dst_key, f"chunk {chunk_id}")
    except scope.OutOfScope as exc:
        _meta_failed(ctx, meta, f"{exc}: not written", retryable=False)
        return _skip_chunk(reader, chunk_id, first)
    need = meta.length
    if need > ctx.pool.budget.capacity:
        # Held whole until verified, it would break the gateway's memory bound.
        _meta_failed(
            ctx,
            meta,
            f"chunk {chunk_id} of {need} bytes exceeds this gateway's chunk buffer budget "
            f"({ctx.pool.budget.capacity} bytes): use smaller chunks or a larger "
            "buffer_budget_bytes",
            retryable=False,
        )
        return _skip_chunk(reader, chunk_id, first)
    buf = ctx.pool.get(need, ctx.stop)
    if buf is None:
        return False
    handed_off = False
    frame: Frame | None = first
    view = memoryview(buf)[:need]
    reader.sock.settimeout(CHUNK_STALL_TIMEOUT)
    try:
        pos = 0
        crc = 0
        segments = 0
        trailer: ChunkTrailer | None = None
        while trailer is None:
            frame = reader.next()
            if frame is None:
                raise StreamClosed(f"connection closed in the middle of chunk {chunk_id}")
            hdr = frame.header
            if hdr.chunk_id != chunk_id:
                raise IntegrityError(f"chunk {chunk_id}: frame of chunk {hdr.chunk_id} interleaved")
            if hdr.ftype == FrameType.DATA:
                n = hdr.plain_len
                if pos + n > need:
                    raise IntegrityError(f"chunk {chunk_id}: more data than its length {need}")
                if hdr.flags & FLAG_ZSTD:
                    packed = opener.open(hdr, frame.payload)
                    try:
                        plain = decompressor.decompress(packed, max_output_size=n)
                    except zstandard.ZstdError as exc:
                        raise IntegrityError(
                            f"chunk {chunk_id}: bad compressed segment: {exc}"
                        ) from None
                    if len(plain) != n:
                        raise IntegrityError(
                            f"chunk {chunk_id}: segment decompressed to a wrong size"
                        )
                    view[pos : pos + n] = plain
                    del plain, packed
                else:
                    if hdr.payload_len - TAG_BYTES != n:
                        raise IntegrityError(f"chunk {chunk_id}: segment length mismatch")
                    opener.open_into(hdr, frame.payload, view[pos : pos + n])
                crc = crc32c_extend(crc, view[pos : pos + n])
                pos += n
                segments += 1
            elif hdr.ftype == FrameType.END:
                trailer = ChunkTrailer.model_validate_json(opener.open(hdr, frame.payload))
                opener.finish()
            else:
                raise IntegrityError(f"chunk {chunk_id}: metadata frame inside the chunk")
        ctx.count("bytes_received", reader.bytes_read)
        reader.bytes_read = 0
        if trailer.length != need or pos != need or segments != trailer.segments:
            raise IntegrityError(
                f"chunk {chunk_id}: got {pos} bytes in {segments} segments, "
                f"sender sent {trailer.length} in {trailer.segments}, expected {need}"
            )
        got = f"{crc:08x}"
        if got != trailer.crc32c:
            raise IntegrityError(
                f"chunk {chunk_id}: CRC32C mismatch (computed {got}, sender {trailer.crc32c})"
            )
        _writer_pool(ctx).submit(_write, ctx, meta, buf, view, got, started)
        handed_off = True
        return True
    except ValidationError as exc:
        _meta_failed(ctx, meta, f"trailer of chunk {chunk_id} rejected: {_short(exc)}")
        return False
    except IntegrityError as exc:
        _meta_failed(ctx, meta, str(exc))
        return _skip_chunk(reader, chunk_id, frame)
    except (StreamClosed, OSError) as exc:
        _meta_failed(ctx, meta, f"chunk {chunk_id} cut off: {exc}")
        return False
    finally:
        _idle(reader)
        if not handed_off:
            _recycle(ctx, buf, view)


def _write(
    ctx: WorkerContext,
    meta: ChunkMeta,
    buf: Buffer,
    view: memoryview,
    crc: str,
    started: float,
) -> None:
    """Write a verified chunk. Stores whose capabilities say ``accepts_buffers`` get a
    memoryview of the pooled buffer (and must not keep it after returning);
    others get a copy as ``bytes``."""
    with ctx.writing():  # the worker does not exit under a write
        _write_verified(ctx, meta, buf, view, crc, started)


def _write_verified(
    ctx: WorkerContext,
    meta: ChunkMeta,
    buf: Buffer,
    view: memoryview,
    crc: str,
    started: float,
) -> None:
    try:
        pause = ctx.cfg.test_hooks.get("sleep_per_write")
        if pause:  # test hook: hold a write so tests can stop a job with writes under way
            time.sleep(float(pause))
        store = ctx.store()
        # the part's MD5, for checking S3 ETags (single-part and multipart) and
        # Content-MD5 / md5Hash after the transfer; hashlib releases the GIL
        md5 = md5_hex(view) if ctx.cfg.part_md5 else None
        if ctx.hook("fail_write"):  # test hook: the store refuses a write (retryable)
            raise StoreError(f"test hook: writing chunk {meta.chunk_id} refused", retryable=True)
        data: Any = view if ctx.store_capabilities().accepts_buffers else view.tobytes()
        if meta.multipart:
            if not isinstance(store, MultipartWriter) or not meta.upload_id:
                raise StoreError(f"chunk {meta.chunk_id}: multipart write without an upload id")
            etag: str | None = store.upload_part(meta.dst_key, meta.upload_id, meta.index + 1, data)
        else:
            if meta.index != 0 or meta.length != meta.object_size:
                raise StoreError(
                    f"chunk {meta.chunk_id}: a single-chunk object must be one whole chunk"
                )
            store.put(meta.dst_key, data, meta=meta.meta)
            etag = None
        del data
        ctx.count("done")
        ctx.emit(
            ChunkVerified(
                job_id=ctx.cfg.job_id,
                gateway_id=ctx.cfg.gateway_id,
                chunk_id=meta.chunk_id,
                object_id=meta.object_id,
                attempt=meta.attempt,
                crc32c=crc,
                length=meta.length,
                part_etag=etag,
                seconds=time.monotonic() - started,
                md5=md5,
                leg=ctx.cfg.leg,
            )
        )
    except SkyhopError as exc:
        _meta_failed(
            ctx,
            meta,
            f"writing chunk {meta.chunk_id} to {meta.dst_key} failed: {exc}",
            retryable=is_retryable(exc),
        )
    except Exception as exc:  # noqa: BLE001 - never crash the gateway on a store's bug
        _meta_failed(
            ctx, meta, f"writing chunk {meta.chunk_id} failed: {type(exc).__name__}: {exc}"
        )
    finally:
        _recycle(ctx, buf, view)


def _meta_failed(
    ctx: WorkerContext, meta: ChunkMeta, reason: str, *, retryable: bool = True
) -> None:
    """A chunk whose metadata was opened failed: its object and attempt are known."""
    ctx.chunk_failed(
        meta.chunk_id,
        reason,
        object_id=meta.object_id,
        retryable=retryable,
        attempt=meta.attempt,
        leg=ctx.cfg.leg,
    )


def _idle(reader: FrameReader) -> None:
    """Between chunks a connection may stay quiet for as long as it likes."""
    try:
        reader.sock.settimeout(None)
    except OSError:
        pass


def _recycle(ctx: WorkerContext, buf: Buffer, view: memoryview) -> None:
    """Return a chunk buffer to the pool, unless something still holds a view of it."""
    try:
        view.release()
    except BufferError:
        ctx.pool.forget(buf)
        return
    ctx.pool.put(buf)


def _short(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return f"{exc.error_count()} invalid field(s)"
    return str(exc)
