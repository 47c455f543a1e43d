"""Which objects a transfer, a sync or a replication rule covers.

The pattern syntax, first-match-wins order and the size and age limits are
described in :mod:`skyhop.patterns`, which checks them; :class:`Filter` applies
them to listed objects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from skyhop.patterns import check_limits, check_patterns, compile_glob, matches, parse_duration

__all__ = [
    "Filter",
    "check_limits",
    "check_patterns",
    "compile_glob",
    "matches",
    "parse_duration",
]


class _Sized(Protocol):
    size: int
    mtime: float | None


# ---------------------------------------------------------------- the filter


@dataclass(frozen=True)
class Filter:
    """Patterns plus size and age limits, checked once at construction."""

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_size: int | None = None
    max_size: int | None = None
    min_age: float | None = None
    max_age: float | None = None
    now: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        check_patterns(self.include, "--include")
        check_patterns(self.exclude, "--exclude")
        check_limits(self.min_size, self.max_size, self.min_age, self.max_age)

    @classmethod
    def of(cls, options: object, *, now: float | None = None) -> Filter:
        """The filter of anything with include/exclude (and optionally the limits):
        TransferOptions, ReplicationRule."""
        return cls(
            include=tuple(getattr(options, "include", ()) or ()),
            exclude=tuple(getattr(options, "exclude", ()) or ()),
            min_size=getattr(options, "min_size", None),
            max_size=getattr(options, "max_size", None),
            min_age=getattr(options, "min_age", None),
            max_age=getattr(options, "max_age", None),
            now=time.time() if now is None else now,
        )

    @property
    def empty(self) -> bool:
        """True when the filter selects every object."""
        return not (
            self.include
            or self.exclude
            or self.min_size is not None
            or self.max_size is not None
            or self.min_age is not None
            or self.max_age is not None
        )

    def key_ok(self, rel_key: str) -> bool:
        """Whether the patterns select ``rel_key``."""
        return matches(rel_key, self.include, self.exclude)

    def size_ok(self, size: int | None) -> bool:
        if size is None:
            return True
        if self.min_size is not None and size < self.min_size:
            return False
        return self.max_size is None or size <= self.max_size

    def age_ok(self, mtime: float | None) -> bool:
        if mtime is None or (self.min_age is None and self.max_age is None):
            return True
        age = self.now - mtime
        if self.min_age is not None and age < self.min_age:
            return False
        return self.max_age is None or age <= self.max_age

    def accepts(self, rel_key: str, info: _Sized) -> bool:
        """Whether the object ``info`` at ``rel_key`` is selected."""
        return self.key_ok(rel_key) and self.size_ok(info.size) and self.age_ok(info.mtime)
