"""Undo registered where a resource is made (s3transfer's ``add_failure_cleanup``).

A step that creates something (a multipart upload, a VM, a firewall rule, a KMS
grant, a control queue) registers its undo on a :class:`Cleanup` the moment it
succeeds. When the block fails, the undos run newest first; each one runs even
when an earlier one failed (that failure is logged and the next undo still
runs), and the block's own exception is what the caller sees. When the block
succeeds, nothing is undone::

    with Cleanup("launching job j-1") as undo:
        upload_id = store.create_multipart(key)
        undo.add(store.abort_multipart, key, upload_id)
        ...

:func:`each` is the same rule for a teardown loop (every region, every rule):
one failure does not stop the rest, and it is raised once all were tried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from skyhop.errors import first_line

log = logging.getLogger("skyhop.cleanup")

T = TypeVar("T")


class Cleanup:
    """A stack of undo steps, run (newest first) when the ``with`` block fails."""

    def __init__(self, what: str = "") -> None:
        self.what = what
        self._steps: list[tuple[Callable[..., object], tuple[Any, ...], dict[str, Any]]] = []
        #: the exception that made the block fail, for undo steps that record it
        self.error: BaseException | None = None

    def add(self, fn: Callable[..., object], *args: Any, **kwargs: Any) -> None:
        """Register ``fn(*args, **kwargs)`` to undo what was just made."""
        self._steps.append((fn, args, kwargs))

    def __len__(self) -> int:
        return len(self._steps)

    def run(self) -> list[Exception]:
        """Run every undo, newest first, whatever each one raises; the failures."""
        failures: list[Exception] = []
        while self._steps:
            fn, args, kwargs = self._steps.pop()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - a failing undo must not skip the next
                failures.append(exc)
                where = f" ({self.what})" if self.what else ""
                log.warning("cleanup%s: %s failed: %s", where, _name(fn), first_line(exc))
        return failures

    def discard(self) -> None:
        """Forget every undo (what was made is kept)."""
        self._steps.clear()

    def __enter__(self) -> Cleanup:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.discard()
            return
        self.error = exc
        self.run()


def _name(fn: Callable[..., object]) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def each(items: Iterable[T], fn: Callable[[T], object], what: str) -> None:
    """``fn(item)`` for every item, even after one fails (a teardown loop: one
    region's or rule's error must not leave the rest in place); the first failure
    is raised once all were tried, the others are logged."""
    failures: list[Exception] = []
    for item in items:
        try:
            fn(item)
        except Exception as exc:  # noqa: BLE001 - every item is tried; the first is raised
            failures.append(exc)
            log.warning("%s: %r failed: %s", what, item, first_line(exc))
    if failures:
        raise failures[0]
