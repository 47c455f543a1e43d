"""Key-ordered listings of a sync's two sides, joined one key at a time.

Shared by the sync planner (:mod:`skyhop.controlplane.sync`) and the delete
phase (:mod:`skyhop.controlplane.deletes`), which plans the deletes again where
the planner's spool is not on this machine.
"""

from __future__ import annotations

from collections.abc import Iterator

from skyhop.errors import StoreError
from skyhop.stores.base import ObjectInfo

HIDDEN = ".skyhop-"  # skyhop's own staging objects (multipart parts, markers)


def as_prefix(key: str) -> str:
    """A key naming a directory or prefix, with its trailing slash."""
    return key if not key or key.endswith("/") else key + "/"


def hidden(rel: str) -> bool:
    return HIDDEN in rel and any(part.startswith(HIDDEN) for part in rel.split("/"))


def relative(
    items: Iterator[ObjectInfo], prefix: str, where: str
) -> Iterator[tuple[bytes, str, ObjectInfo]]:
    """(sort key, relative key, info) of every object under ``prefix``, checking
    that the listing really comes in key order (a merge of unordered listings
    would copy and delete the wrong objects)."""
    last = b""
    for info in items:
        if not info.key.startswith(prefix):
            raise StoreError(f"the listing of {where} returned {info.key!r}, outside {prefix!r}")
        rel = info.key[len(prefix) :]
        if info.error is not None and rel:
            pass  # a folder or file that could not be read: it goes on to fail alone
        elif not rel or rel.endswith("/") or hidden(rel):
            continue
        order = rel.encode("utf-8", "surrogateescape")
        if order <= last:
            raise StoreError(
                f"the listing of {where} is not in key order ({last.decode(errors='replace')!r} "
                f"before {rel!r}); refusing to sync"
            )
        last = order
        yield order, rel, info


def merge(
    src: Iterator[tuple[bytes, str, ObjectInfo]],
    dst: Iterator[tuple[bytes, str, ObjectInfo]],
) -> Iterator[tuple[str, ObjectInfo | None, ObjectInfo | None]]:
    """Join two key-ordered listings: (relative key, source, destination)."""
    s = next(src, None)
    d = next(dst, None)
    while s is not None or d is not None:
        if d is None or (s is not None and s[0] < d[0]):
            assert s is not None
            yield s[1], s[2], None
            s = next(src, None)
        elif s is None or d[0] < s[0]:
            yield d[1], None, d[2]
            d = next(dst, None)
        else:
            yield s[1], s[2], d[2]
            s = next(src, None)
            d = next(dst, None)
