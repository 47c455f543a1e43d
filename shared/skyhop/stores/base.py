"""The ObjectStore protocol, its optional capabilities and the scheme registry.

A store is bound to one bucket (or container, or the local filesystem root)
and speaks of keys within it. The required surface is small: list, head,
ranged read, put, delete. Multipart writing is an optional protocol
(:class:`MultipartWriter`); generic code asks :func:`capabilities` once and
chooses a path. Each store classifies its SDK's errors into
:mod:`skyhop.errors` (NotFoundError, AccessError, StoreError(retryable=...),
PreconditionFailed); no SDK exception escapes a store.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, Field

from skyhop.errors import UsageError
from skyhop.uri import StoreURI


class ObjectMeta(BaseModel):
    """Metadata carried across clouds where the destination supports it."""

    content_type: str | None = None
    content_encoding: str | None = None
    cache_control: str | None = None
    user: dict[str, str] = Field(default_factory=dict)
    storage_class: str | None = None


class ObjectInfo(BaseModel):
    """One listed object. ``checksums`` maps a method to its value as the store
    reports it, e.g. ``{"md5": hex, "crc32c": hex, "etag": raw}``."""

    key: str
    size: int
    etag: str | None = None
    version: str | None = None
    mtime: float | None = None
    checksums: dict[str, str] = Field(default_factory=dict)
    meta: ObjectMeta | None = None


class Capabilities(BaseModel):
    multipart: bool = False
    server_side_copy: bool = False
    conditional_read: bool = False
    max_parts: int = 10_000
    min_part_size: int = 5 * 1024 * 1024
    #: False when ``list`` leaves out metadata that ``head`` has (S3's ListObjectsV2
    #: has no content type or user metadata): copying metadata then costs a HEAD.
    listing_metadata: bool = True


@runtime_checkable
class ObjectStore(Protocol):
    """The required surface of every store."""

    uri: StoreURI

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

    def create_multipart(self, key: str, *, meta: ObjectMeta | None = None) -> str:
        """Start an upload; returns its id."""
        ...

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        """Write part ``part_number`` (1-based); returns the part's tag for completion."""
        ...

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        """Assemble the parts (part number, tag) in order into the object."""
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


def capabilities(store: ObjectStore) -> Capabilities:
    """What ``store`` can do, probed once (a store may also expose ``capabilities``)."""
    declared = getattr(store, "capabilities", None)
    if isinstance(declared, Capabilities):
        return declared
    return Capabilities(multipart=isinstance(store, MultipartWriter))


class BaseStore:
    """Shared helpers for implementations; not part of the protocol."""

    uri: StoreURI

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


def open_store(uri: StoreURI) -> ObjectStore:
    """The store for ``uri`` (bucket level); the key part of ``uri`` is ignored."""
    target = _REGISTRY.get(uri.scheme)
    if target is None:
        raise UsageError(f"no store for scheme {uri.scheme!r}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"{uri.scheme}:// needs an optional dependency that is not installed ({exc.name}); "
            f"install skyhop with its extra"
        ) from None
    return getattr(module, cls_name)(uri.with_key(""))
