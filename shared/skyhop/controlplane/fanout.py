"""Listing at scale: many prefixes listed in parallel, streamed back in key order.

A bucket with millions of small objects lists slowly one page after another
(1,000 keys a request). :func:`list_parallel` walks the first levels of the
key space with delimiter listings (``Delimiter='/'``, one level at a time),
going deeper (up to ``depth`` levels) only while a level has fewer prefixes
than workers, and lists every prefix it stops at with its own full listing, up
to ``workers`` at once. The results come back in exactly the order one plain
listing would give (UTF-8 byte order, which is code-point order), so a caller
can merge two listings side by side.

The upper levels are walked on a thread of their own, which hands every object
and prefix over as soon as it is found, so the first objects reach the caller
(and the first copies start) while the rest is still being listed.

Memory stays flat: every prefix listing fills a small bounded queue of
batches, at most ``window`` prefixes are in flight, and objects met on the way
down (those directly under a listed level) wait in a bounded read-ahead. The
consumer always drains the oldest prefix, which was submitted first to a
first-in first-out pool, so it is running or done: nothing can deadlock.

:func:`ordered_map` runs a per-item call (a HEAD for metadata) on a pool while
keeping the input order, with a bounded number of calls in flight.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar, cast

from skyhop.errors import AccessError
from skyhop.stores.base import DelimitedLister, ObjectInfo, ObjectStore, capabilities

T = TypeVar("T")
R = TypeVar("R")


class _End:
    """The end of a queue's entries."""


_END = _End()
#: what a prefix listing hands its consumer: a batch of objects, its error, its end
_Batch = list[ObjectInfo] | BaseException | _End
#: what discovery hands its consumer: an object, a prefix to list, its error, its end
_Entry = ObjectInfo | str | BaseException | _End


class _PrefixListing:
    """One prefix listed in full on a pool thread into a bounded queue of batches."""

    def __init__(self, store: ObjectStore, prefix: str, batch: int, depth: int) -> None:
        self.store = store
        self.prefix = prefix
        self.batch = batch
        self.q: queue.Queue[_Batch] = queue.Queue(maxsize=depth)
        self.cancelled = threading.Event()

    def run(self) -> None:
        buf: list[ObjectInfo] = []
        try:
            for info in self.store.list(self.prefix):
                buf.append(info)
                if len(buf) >= self.batch:
                    if not self._put(buf):
                        return
                    buf = []
        except AccessError as exc:
            # a prefix below the listing's own that cannot be listed fails alone
            buf.append(unlisted(self.prefix, exc))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)
            return
        if buf and not self._put(buf):
            return
        self._put(_END)

    def _put(self, item: _Batch) -> bool:
        while not self.cancelled.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def items(self) -> Iterator[ObjectInfo]:
        while True:
            item = self.q.get()
            if isinstance(item, _End):
                return
            if isinstance(item, BaseException):
                raise item
            yield from item


def unlisted(prefix: str, exc: BaseException) -> ObjectInfo:
    """The listing's entry for a prefix below it that could not be listed: it fails
    alone, with the reason (``ObjectInfo.error``)."""
    return ObjectInfo(key=prefix, size=0, error=str(exc) or type(exc).__name__)


def _segments(
    store: DelimitedLister, prefix: str, depth: int, fanout: int, read_ahead: int
) -> Iterator[ObjectInfo | str]:
    """Objects and prefixes to list in full, in key order.

    A level with at least ``fanout`` prefixes is parallel enough: its prefixes
    are listed in full. A level with fewer (``data/`` holding everything) is
    walked one level deeper, up to ``depth`` levels. Objects before a level's
    first prefix go out at once; from the first prefix on, up to ``read_ahead``
    entries wait until the level shows whether it is parallel enough."""
    held: list[ObjectInfo | str] = []
    prefixes = 0
    descend: bool | None = None if depth > 1 else False

    def release(entries: list[ObjectInfo | str]) -> Iterator[ObjectInfo | str]:
        for entry in entries:
            if isinstance(entry, str) and descend:
                try:
                    yield from _segments(store, entry, depth - 1, fanout, read_ahead)
                except AccessError as exc:  # a prefix below that cannot be listed
                    yield unlisted(entry, exc)
            else:
                yield entry

    for entry in store.list_delimited(prefix):
        if descend is not None:
            yield from release([entry])
            continue
        if isinstance(entry, str):
            prefixes += 1
        elif not held:
            yield entry  # no prefix yet: nothing to decide
            continue
        held.append(entry)
        if prefixes >= fanout or len(held) >= read_ahead:
            descend = False
            yield from release(held)
            held = []
    if descend is None:
        descend = 0 < prefixes < fanout
    yield from release(held)


class _Discovery:
    """Walks the upper levels (delimiter listings) on its own thread, handing
    objects and prefixes over one by one through a bounded queue, so the
    consumer gets each as soon as it is known."""

    def __init__(
        self, store: DelimitedLister, prefix: str, depth: int, fanout: int, read_ahead: int
    ) -> None:
        self.q: queue.Queue[_Entry] = queue.Queue(maxsize=read_ahead)
        self.cancelled = threading.Event()
        self._segments = _segments(store, prefix, depth, fanout, read_ahead)
        self.thread = threading.Thread(target=self._run, name="list-discover", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for entry in self._segments:
                if not self._put(entry):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)

    def _put(self, item: _Entry) -> bool:
        while not self.cancelled.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False


def list_parallel(
    store: ObjectStore,
    prefix: str,
    *,
    workers: int = 8,
    depth: int = 3,
    window: int = 16,
    batch: int = 500,
    queue_batches: int = 2,
    read_ahead: int = 10_000,
) -> Iterator[ObjectInfo]:
    """Every object under ``prefix``, in key order, listed ``workers`` prefixes at a
    time (a plain ``store.list`` when the store cannot list one level at a time)."""
    if workers <= 1 or depth < 1 or not isinstance(store, DelimitedLister):
        yield from store.list(prefix)
        return
    discovery = _Discovery(store, prefix, depth, max(2, workers), read_ahead)
    pending: deque[ObjectInfo | _PrefixListing] = deque()
    fetching = 0
    exhausted = False
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="list")

    def take(entry: _Entry) -> None:
        nonlocal fetching, exhausted
        if isinstance(entry, _End):
            exhausted = True
        elif isinstance(entry, BaseException):
            raise entry
        elif isinstance(entry, str):
            listing = _PrefixListing(store, entry, batch, queue_batches)
            pool.submit(listing.run)
            pending.append(listing)
            fetching += 1
        else:
            pending.append(entry)

    def fill() -> None:
        """Take what discovery has found so far, without waiting for more."""
        while not exhausted and fetching < window and len(pending) < read_ahead:
            try:
                entry = discovery.q.get_nowait()
            except queue.Empty:
                return
            take(entry)

    current: _PrefixListing | None = None
    try:
        while True:
            fill()
            if not pending:
                if exhausted:
                    return
                take(discovery.q.get())
                continue
            head = pending.popleft()
            if isinstance(head, ObjectInfo):
                yield head
                continue
            fetching -= 1
            current = head
            for n, info in enumerate(head.items()):
                yield info
                if n % batch == 0:
                    fill()
            current = None
    finally:
        discovery.cancelled.set()
        for item in (current, *pending):
            if isinstance(item, _PrefixListing):
                item.cancelled.set()
        pool.shutdown(wait=False, cancel_futures=True)


def ordered_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    needs: Callable[[T], bool] = lambda _item: True,
    identity: Callable[[T], R] | None = None,
    workers: int = 16,
    window: int = 256,
) -> Iterator[R]:
    """``fn(item)`` for every item, in input order, ``workers`` calls at a time.

    Items for which ``needs`` is false skip the pool and come out as
    ``identity(item)`` (the item itself by default)."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="map")
    pending: deque[Future[R] | tuple[R]] = deque()
    calls = 0

    def pop() -> R:
        nonlocal calls
        head = pending.popleft()
        if isinstance(head, tuple):
            return head[0]
        calls -= 1
        return head.result()

    try:
        for item in items:
            if needs(item):
                pending.append(pool.submit(fn, item))
                calls += 1
            else:
                # without ``identity`` an item comes out as it is: R is then T
                pending.append((identity(item) if identity else cast(R, item),))
            while calls >= window or len(pending) > 4 * window:
                yield pop()
        while pending:
            yield pop()
    finally:
        for head in pending:
            if isinstance(head, Future):
                head.cancel()
        pool.shutdown(wait=False, cancel_futures=True)


def refreshed(store: ObjectStore, info: ObjectInfo) -> ObjectInfo:
    """``info`` with what only a HEAD tells (metadata, and the modification time kept
    in it) where the store's listing leaves it out (S3); a key gone or rewritten
    since it was listed keeps its listing (the pinned read will say so)."""
    found = store.head(info.key)
    if found is None or found.etag != info.etag:
        return info
    return info.model_copy(
        update={
            "meta": found.meta,
            "mtime": found.mtime,
            "mtime_precision": found.mtime_precision,
        }
    )


def with_meta(
    store: ObjectStore, infos: Iterable[ObjectInfo], *, workers: int = 16
) -> Iterator[ObjectInfo]:
    """``infos`` with their metadata filled in by a HEAD each, in parallel, when the
    store's listing leaves it out (S3); the listing itself otherwise."""
    if capabilities(store).listing_metadata:
        yield from infos
        return

    def head(info: ObjectInfo) -> ObjectInfo:
        return refreshed(store, info)

    yield from ordered_map(head, infos, needs=lambda i: i.meta is None, workers=workers)
