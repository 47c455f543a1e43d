"""Resolve a request's source into objects and cut them into chunks.

Key mapping follows ``aws s3 cp``: a single object copied to a destination
ending in ``/`` (or to an existing directory) keeps its base name; with
``-r`` every object under ``SRC/`` arrives at ``DST/`` + its path relative to
``SRC/``. Listing is streamed: objects flow to the manifest in batches and
are never all held in memory.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass

from skyhop.controlplane.filters import Filter, matches
from skyhop.errors import NotFoundError, UsageError
from skyhop.models import (
    Chunk,
    ChunkState,
    ObjectEntry,
    ObjectState,
    ReplicationRule,
    TransferOptions,
    plan_parts,
)
from skyhop.stores.base import ObjectInfo, ObjectMeta, ObjectStore
from skyhop.uri import StoreURI

__all__ = [
    "SourceSelection",
    "carried_meta",
    "entries",
    "fail_entry",
    "failed_entry",
    "make_entry",
    "matches",
    "select",
    "select_keys",
]


@dataclass(frozen=True)
class SourceSelection:
    """What a request selects at the source and where it lands."""

    src_prefix: str  # listing prefix ("" for a bucket root); for one object, its key
    dst_prefix: str  # prepended to relative keys
    single: bool  # one object, not a tree
    single_dst_key: str | None = None


def select(
    src: ObjectStore,
    src_uri: StoreURI,
    dst_uri: StoreURI,
    options: TransferOptions,
    dst_is_dir: bool,
) -> tuple[SourceSelection, Iterator[ObjectInfo]]:
    """Decide what to copy and return the selection with a stream of source objects.

    Raises NotFoundError when nothing matches and UsageError for a prefix copied
    without ``-r``; both before anything is written.
    """
    key = src_uri.key
    if not options.recursive:
        if key and not key.endswith("/"):
            info = src.head(key)
            if info is not None:
                dst_key = dst_uri.key
                if dst_uri.is_dir_like() or dst_is_dir:
                    dst_key = _join(dst_uri.key, posixpath.basename(key))
                return SourceSelection(key, "", True, dst_key), iter([info])
        prefix = key if key.endswith("/") or not key else key + "/"
        if _first(src.list(prefix)) is not None:
            raise UsageError(f"{src_uri} is a prefix or directory: use -r to copy it recursively")
        raise NotFoundError(f"source not found: {src_uri}")

    prefix = key if key.endswith("/") or not key else key + "/"
    dst_prefix = dst_uri.key if dst_uri.is_dir_like() else dst_uri.key + "/"
    listing = src.list(prefix)
    first = _first(listing)
    if first is None:
        if key and not key.endswith("/"):
            info = src.head(key)
            if info is not None:  # `cp -r FILE DST` copies the file
                dst_key = dst_uri.key
                if dst_uri.is_dir_like() or dst_is_dir:
                    dst_key = _join(dst_uri.key, posixpath.basename(key))
                return SourceSelection(key, "", True, dst_key), iter([info])
        raise NotFoundError(f"source not found: no objects under {src_uri}")
    selection = SourceSelection(prefix, dst_prefix, False)
    return selection, _chain(first, listing)


def select_keys(
    src: ObjectStore, src_uri: StoreURI, dst_uri: StoreURI, keys: list[str]
) -> tuple[SourceSelection, Iterator[ObjectInfo]]:
    """An explicit list of keys relative to the source prefix (replication batches).
    Keys that vanished since they were named are skipped; none left is NotFoundError."""
    prefix = src_uri.key if src_uri.key.endswith("/") or not src_uri.key else src_uri.key + "/"
    dst_prefix = dst_uri.key if dst_uri.is_dir_like() else dst_uri.key + "/"

    def heads() -> Iterator[ObjectInfo]:
        for key in sorted(set(keys)):
            info = src.head(prefix + key)
            if info is not None:
                yield info

    stream = heads()
    first = _first(stream)
    if first is None:
        raise NotFoundError(f"source not found: none of the {len(keys)} keys exist under {src_uri}")
    return SourceSelection(prefix, dst_prefix, False), _chain(first, stream)


def entries(
    job_id: str,
    selection: SourceSelection,
    listing: Iterator[ObjectInfo],
    options: TransferOptions,
    *,
    selected: Filter | None = None,
) -> Iterator[tuple[ObjectEntry, list[Chunk]]]:
    """Objects with their chunks, numbered densely in listing order."""
    object_id = 0
    chunk_id = 0
    selected = selected or Filter.of(options)
    for info in listing:
        if selection.single:
            # filters apply to one object too, by its name
            if not selected.accepts(posixpath.basename(info.key), info):
                continue
            dst_key = selection.single_dst_key or ""
        else:
            rel = info.key[len(selection.src_prefix) :]
            if info.error is not None and rel:
                pass  # a folder or file that could not be read: it fails, filters or not
            elif not rel or rel.endswith("/"):
                continue  # directory markers
            elif not selected.accepts(rel, info):
                continue
            dst_key = selection.dst_prefix + rel
        entry, chunks = make_entry(job_id, object_id, chunk_id, info, dst_key, options)
        yield entry, chunks
        object_id += 1
        chunk_id += len(chunks)


def make_entry(
    job_id: str,
    object_id: int,
    first_chunk_id: int,
    info: ObjectInfo,
    dst_key: str,
    options: TransferOptions,
) -> tuple[ObjectEntry, list[Chunk]]:
    """One object of a job and its chunks, numbered from ``first_chunk_id``. A part
    of the listing that could not be read (``info.error``) is an object failed at
    once, with the reason, so the rest of the job goes on."""
    if info.error is not None:
        return failed_entry(job_id, object_id, first_chunk_id, info.key, dst_key, info.error)
    part, n_chunks, multipart = plan_parts(
        info.size, options.chunk_size, options.multipart_threshold
    )
    entry = ObjectEntry(
        job_id=job_id,
        object_id=object_id,
        src_key=info.key,
        dst_key=dst_key,
        size=info.size,
        src_etag=info.etag,
        src_version=info.version,
        mtime=info.mtime,
        chunk_size=part,
        n_chunks=n_chunks,
        multipart=multipart,
        src_checksums=dict(info.checksums),
        meta=carried_meta(info.meta, options, info.mtime),
    )
    chunks = [
        Chunk(
            job_id=job_id,
            chunk_id=first_chunk_id + index,
            object_id=object_id,
            index=index,
            offset=index * part,
            length=max(0, min(part, info.size - index * part)),
        )
        for index in range(n_chunks)
    ]
    return entry, chunks


def failed_entry(
    job_id: str, object_id: int, chunk_id: int, src_key: str, dst_key: str, reason: str
) -> tuple[ObjectEntry, list[Chunk]]:
    """An object that fails before anything is sent (its folder cannot be listed, its
    upload cannot start): one empty chunk, failed too, so the job's counts add up."""
    entry = ObjectEntry(
        job_id=job_id,
        object_id=object_id,
        src_key=src_key,
        dst_key=dst_key,
        size=0,
        chunk_size=1,
        n_chunks=1,
        state=ObjectState.FAILED,
        error=reason,
    )
    chunk = Chunk(
        job_id=job_id,
        chunk_id=chunk_id,
        object_id=object_id,
        index=0,
        offset=0,
        length=0,
        state=ChunkState.FAILED,
        error=reason,
    )
    return entry, [chunk]


def fail_entry(entry: ObjectEntry, chunks: list[Chunk], reason: str) -> None:
    """Fail an object (and its chunks) still being listed, with ``reason``."""
    entry.state = ObjectState.FAILED
    entry.error = reason
    entry.upload_id = None
    for chunk in chunks:
        chunk.state = ChunkState.FAILED
        chunk.error = reason


def carried_meta(
    meta: ObjectMeta | None,
    options: TransferOptions | ReplicationRule,
    mtime: float | None = None,
) -> ObjectMeta | None:
    """The metadata written at the destination: content type and encoding, cache
    control and user metadata as the source has them, the source's modification
    time (``mtime``, kept so that ``sync`` can compare it for equality); the
    storage class only when the request sets one (a class of one cloud means
    nothing in another)."""
    storage_class = options.storage_class
    if meta is None:
        if storage_class is None and mtime is None:
            return None
        return ObjectMeta(storage_class=storage_class, mtime=mtime)
    return meta.model_copy(update={"storage_class": storage_class, "mtime": mtime})


def _join(prefix: str, name: str) -> str:
    if not prefix or prefix.endswith("/"):
        return prefix + name
    return prefix + "/" + name


def _first(it: Iterator[ObjectInfo]) -> ObjectInfo | None:
    for item in it:
        if item.key.endswith("/") and item.size == 0 and item.error is None:
            continue  # directory marker objects
        return item
    return None


def _chain(first: ObjectInfo, rest: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
    yield first
    yield from rest
