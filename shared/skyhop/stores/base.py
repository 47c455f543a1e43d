"""The ObjectStore protocol, its optional capabilities and the scheme registry.

A store is bound to one bucket (or container, or the local filesystem root)
and speaks of keys within it. The required surface is small: list, head,
ranged read, put, delete. Everything else is an optional protocol
(:class:`MultipartWriter`, :class:`ServerSideCopier`, :class:`Directories`,
:class:`RangeReaderInto`, :class:`DelimitedLister`) or a declared fact of the
store, both in its :class:`Capabilities`; generic code asks :func:`capabilities`
once and chooses a path. Each store classifies its SDK's errors into
:mod:`skyhop.errors` (NotFoundError, AccessError, StoreError(retryable=...),
PreconditionFailed); no SDK exception escapes a store.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from skyhop.errors import UsageError
from skyhop.registry import resolve
from skyhop.uri import StoreURI


class ObjectMeta(BaseModel):
    """Metadata carried across clouds where the destination supports it."""

    content_type: str | None = None
    content_encoding: str | None = None
    cache_control: str | None = None
    user: dict[str, str] = Field(default_factory=dict)
    storage_class: str | None = None
    mtime: float | None = Field(
        None,
        description="the source's modification time (s since the epoch), kept at the "
        "destination: a local file's mtime, user metadata 'mtime' on the clouds",
    )
    #: POSIX permission bits of a local source file; a local destination applies
    #: them (other stores ignore them; without them a local file gets 0666 - umask)
    mode: int | None = Field(None, ge=0, le=0o777)


class ObjectInfo(BaseModel):
    """One listed object. ``checksums`` maps a method to its value as the store
    reports it, e.g. ``{"md5": hex, "crc32c": hex, "etag": raw}``."""

    key: str
    size: int
    etag: str | None = None
    version: str | None = None
    mtime: float | None = None
    #: how precisely ``mtime`` is the modification time kept with the object (a
    #: file's own, or one a writer kept in its metadata, see :mod:`skyhop.stores.mtime`):
    #: equal within it means unchanged. None: ``mtime`` is only the store's write
    #: time (Last-Modified), good for "newer than" and nothing finer.
    mtime_precision: float | None = None
    checksums: dict[str, str] = Field(default_factory=dict)
    meta: ObjectMeta | None = None
    #: set on a part of the listing that could not be read (a folder ``key/`` that
    #: cannot be listed, a file that cannot be looked at): it fails alone, with this
    #: reason, and the rest of the listing goes on
    error: str | None = None


class Capabilities(BaseModel):
    """What a store can do beyond the required :class:`ObjectStore` surface: its
    features table, as rclone's ``fs.Features``. Generic code asks
    :func:`capabilities` once and chooses a path; nothing probes a store for
    hidden methods.

    Two kinds of entry. The facts of a store's service are declared by the store
    (its ``capabilities`` class attribute). The optional protocols it implements
    are filled in by :func:`capabilities` from the methods the store has, so an
    entry can never claim a method the store lacks (nor hide one it has)."""

    # ---- filled in from the optional protocols the store implements
    #: :class:`MultipartWriter`: an object written as numbered parts
    multipart: bool = False
    #: :class:`ServerSideCopier`: an object copied by the service itself, the data
    #: never passing through skyhop (S3)
    server_side_copy: bool = False
    #: :class:`Directories`: keys are paths in a tree (``is_dir``, ``check_writable``)
    directories: bool = False
    #: :class:`RangeReaderInto`: ranged reads into a caller's buffer (no copy)
    read_into: bool = False
    #: :class:`DelimitedLister`: one level of a listing at a time
    delimited_listing: bool = False

    # ---- declared by the store
    #: ``read_range(..., if_match=etag)`` fails when the object changed
    conditional_read: bool = False
    #: ``put`` / ``upload_part`` take any bytes-like object (bytes, bytearray,
    #: memoryview) and keep no reference to it after returning
    accepts_buffers: bool = False
    max_parts: int = 10_000
    min_part_size: int = 5 * 1024 * 1024
    #: False when ``list`` leaves out metadata that ``head`` has (S3's ListObjectsV2
    #: has no content type or user metadata): copying metadata then costs a HEAD.
    listing_metadata: bool = True
    #: with :class:`ServerSideCopier`: whether the service copies byte ranges of an
    #: object as parts (S3 UploadPartCopy); False where it copies whole objects only
    #: (GCS rewrite, Azure Copy Blob), and an object it copies is then one chunk
    copies_ranges: bool = False
    #: whether the store reports MD5s (S3 ETags, GCS md5Hash, Azure Content-MD5):
    #: only then is computing the MD5 of every part worth its CPU
    reports_md5: bool = False
    #: whether the store checks the CRC32C a write carries against the bytes it
    #: received and refuses a write that differs (S3's x-amz-checksum-crc32c, on
    #: single puts, parts and the whole object of a CRC32C multipart upload): a
    #: writer then need not compute the MD5s the store reports to verify the copy
    verifies_crc32c: bool = False
    #: the defaults of a job writing here, from what the peers use against this
    #: store (aws-cli: 8 MiB parts, 10 requests at once; rclone: 5 MiB x 4 per
    #: file; s5cmd: 50 MiB x 5): objects above ``multipart_threshold`` go as parts
    #: of ``part_size``, ``concurrency`` chunks in flight on the direct path
    part_size: int = 8 * 1024 * 1024
    multipart_threshold: int = 8 * 1024 * 1024
    concurrency: int = 10


@runtime_checkable
class ObjectStore(Protocol):
    """The required surface of every store."""

    uri: StoreURI
    #: the store's declared facts; see :func:`capabilities` for the whole table
    capabilities: Capabilities

    def region(self) -> str | None:
        """The store's region as ``cloud:region`` (``aws:us-east-1``), if it can tell."""
        ...

    def check_bucket(self) -> None:
        """Raise NotFoundError / AccessError if the bucket cannot be used."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order, paged (never all in memory)."""
        ...

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None when it does not exist."""
        ...

    def read_range(
        self, key: str, offset: int, length: int, *, if_match: str | None = None
    ) -> bytes:
        """Exactly ``length`` bytes from ``offset``; PreconditionFailed if the ETag moved."""
        ...

    def iter_range(
        self, key: str, offset: int, length: int, block: int, *, if_match: str | None = None
    ) -> Iterator[bytes]:
        """The same range as a stream of blocks of ``block`` bytes (the last may be shorter)."""
        ...

    def put(self, key: str, data: bytes, *, meta: ObjectMeta | None = None) -> ObjectInfo:
        """Write a whole object (atomically: readers see old or new, never a mix)."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""
        ...


@runtime_checkable
class MultipartWriter(Protocol):
    """Optional: writing one object as numbered parts, completed at the end."""

    def create_multipart(
        self, key: str, *, meta: ObjectMeta | None = None, crc32c: bool = False
    ) -> str:
        """Start an upload; returns its id. ``crc32c``: every part will be given with
        its CRC32C (``upload_part(crc32c=)``) and the completion with the parts' and
        the object's (a store that checks them, S3, creates a CRC32C upload)."""
        ...

    def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: bytes,
        *,
        crc32c: str | None = None,
    ) -> str:
        """Write part ``part_number`` (1-based); returns the part's tag for completion.
        ``crc32c`` (hex) is the CRC32C of ``data``, given exactly when the upload was
        created with ``crc32c=True``; a store that checks it (:attr:`Capabilities.
        verifies_crc32c`) raises IntegrityError when what it received differs."""
        ...

    def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: list[tuple[int, str]],
        *,
        part_crc32c: Mapping[int, str] | None = None,
        crc32c: str | None = None,
    ) -> ObjectInfo:
        """Assemble the parts (part number, tag) in order into the object. For an
        upload created with ``crc32c=True``: ``part_crc32c`` (part number -> hex) and
        the whole object's ``crc32c`` (hex), which a store that checks them compares
        with what it assembled."""
        ...

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Discard an upload and its parts."""
        ...


@runtime_checkable
class DelimitedLister(Protocol):
    """Optional: one level of a listing, for listing many prefixes in parallel."""

    def list_delimited(self, prefix: str) -> Iterator[ObjectInfo | str]:
        """Objects directly under ``prefix`` and, as strings ending in ``/``, the
        prefixes one level deeper (S3 ``Delimiter='/'`` common prefixes, GCS
        ``prefixes``, Azure ``BlobPrefix``, local directories), all in key order."""
        ...


@runtime_checkable
class Directories(Protocol):
    """Optional: keys are paths in a directory tree (the local filesystem), so a key
    can name a directory and a destination can be checked for writability."""

    def is_dir(self, key: str) -> bool:
        """True when ``key`` names an existing directory (a copy into it keeps names)."""
        ...

    def check_writable(self, key: str) -> None:
        """Raise AccessError unless objects can be created at ``key`` (or under it)."""
        ...


@runtime_checkable
class RangeReaderInto(Protocol):
    """Optional: a ranged read into the caller's buffer, block by block, with no copy."""

    def iter_range_into(
        self,
        key: str,
        offset: int,
        length: int,
        buffer: bytearray | mmap.mmap,
        *,
        if_match: str | None = None,
    ) -> Iterator[memoryview]:
        """The range as views of ``buffer`` (each valid until the next is asked for),
        ``len(buffer)`` bytes at a time (the last may be shorter)."""
        ...


@runtime_checkable
class ServerSideCopier(Protocol):
    """Optional: the service copies an object itself (S3 CopyObject / UploadPartCopy,
    GCS rewrite, Azure Copy Blob), the data never passing through skyhop. A store
    implementing it shows ``server_side_copy`` in :func:`capabilities`; the direct
    path takes it when :meth:`can_copy_from` says the source is of the same service
    and account. A store that copies whole objects only (``copies_ranges`` False)
    gets every object as one chunk and never sees :meth:`copy_part`."""

    def can_copy_from(self, src: ObjectStore) -> bool:
        """Whether this store can copy from ``src`` itself (same service, same account)."""
        ...

    def copy_object(
        self,
        src: ObjectStore,
        src_key: str,
        key: str,
        size: int,
        *,
        meta: ObjectMeta | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        """Copy the whole object ``src_key`` of ``src`` to ``key``; PreconditionFailed if
        its ETag is no longer ``if_match``. Returns what the store reports of the copy."""
        ...

    def copy_part(
        self,
        src: ObjectStore,
        src_key: str,
        key: str,
        upload_id: str,
        part_number: int,
        offset: int,
        length: int,
        *,
        if_match: str | None = None,
    ) -> str:
        """Copy a byte range of ``src_key`` as part ``part_number`` of an upload; returns
        the part's tag (its MD5 where the store's tags are MD5s)."""
        ...


class CopiesWholeObjects:
    """The :meth:`ServerSideCopier.copy_part` of a service that copies whole objects
    only (GCS rewrite, Azure Copy Blob; ``copies_ranges`` False): such a store gets
    every object as one chunk, so this is never called."""

    def copy_part(
        self,
        src: ObjectStore,
        src_key: str,
        key: str,
        upload_id: str,
        part_number: int,
        offset: int,
        length: int,
        *,
        if_match: str | None = None,
    ) -> str:
        raise UsageError(
            f"{type(self).__name__} copies whole objects only, "
            f"not a byte range of {src_key} as a part of {key}"
        )


def server_side_copier(src: ObjectStore, dst: ObjectStore) -> ServerSideCopier | None:
    """``dst`` when it copies objects itself and can copy from ``src`` (same service,
    same account), else None."""
    if isinstance(dst, ServerSideCopier) and dst.can_copy_from(src):
        return dst
    return None


#: optional protocol -> the capability it fills in
_OPTIONAL: dict[str, type] = {
    "multipart": MultipartWriter,
    "server_side_copy": ServerSideCopier,
    "directories": Directories,
    "read_into": RangeReaderInto,
    "delimited_listing": DelimitedLister,
}


def capabilities(store: ObjectStore) -> Capabilities:
    """The whole features table of ``store``: its declared facts, and the optional
    protocols it implements (see :class:`Capabilities`)."""
    found = {name: isinstance(store, proto) for name, proto in _OPTIONAL.items()}
    return store.capabilities.model_copy(update=found)


def is_dir(store: ObjectStore, key: str) -> bool:
    """Whether ``key`` names a directory of ``store`` (never, for an object store)."""
    return isinstance(store, Directories) and store.is_dir(key)


def check_writable(store: ObjectStore, key: str) -> None:
    """Raise AccessError when ``store`` has directories and ``key`` cannot be written."""
    if isinstance(store, Directories):
        store.check_writable(key)


class BaseStore:
    """Shared helpers for implementations; not part of the protocol."""

    uri: StoreURI
    capabilities = Capabilities()

    def read_range(
        self, key: str, offset: int, length: int, *, if_match: str | None = None
    ) -> bytes:
        raise NotImplementedError

    def iter_range(
        self, key: str, offset: int, length: int, block: int, *, if_match: str | None = None
    ) -> Iterator[bytes]:
        end = offset + length
        pos = offset
        while pos < end:
            n = min(block, end - pos)
            yield self.read_range(key, pos, n, if_match=if_match)
            pos += n


# ---------------------------------------------------------------- registry

StoreFactory = Callable[[StoreURI], ObjectStore]

# scheme -> "module:Class"; modules are imported lazily so a cloud's SDK is only
# needed when that cloud is used.
_REGISTRY: dict[str, str] = {
    "local": "skyhop.stores.local:LocalStore",
    "s3": "skyhop.stores.s3:S3Store",
    "gs": "skyhop.stores.gcs:GCSStore",
    "az": "skyhop.stores.azure:AzureStore",
}


def register_store(scheme: str, target: str) -> None:
    """Register ``module:Class`` as the store for ``scheme``."""
    _REGISTRY[scheme] = target


def store_cache_key(uri: StoreURI) -> str:
    """The key under which an opened store may be reused for ``uri``: its bucket, or
    for the local filesystem the location itself (a local store's root, below which
    it follows no link when writing, is where it was opened)."""
    return f"local:{uri.key}" if uri.scheme == "local" else uri.store_id


def open_store(uri: StoreURI) -> ObjectStore:
    """The store for ``uri`` (bucket level). The key part of ``uri`` names no
    objects; a local store takes it as its root (see :class:`LocalStore`)."""
    target = _REGISTRY.get(uri.scheme)
    if target is None:
        raise UsageError(f"no store for scheme {uri.scheme!r}")
    store: ObjectStore = resolve(target, f"{uri.scheme}://")(
        uri if uri.scheme == "local" else uri.with_key("")
    )
    return store
