"""Per-state counters for stores whose service cannot count records by state in
one cheap read (DynamoDB, Firestore, Table Storage).

Every insert and every transition adds its change to one of a job's
:data:`COUNTER_SHARDS` counter records (``record_id % COUNTER_SHARDS``), in the
same atomic write as the record, so :func:`progress` is one read of at most 16
small records however many chunks the job has, and no counter is written by
every chunk of a busy job. The counter names:

    o_total, o_bytes, o_<object state>    objects, their bytes, per state
    c_total, c_<chunk state>              chunks per state
    b_verified                            lengths of verified chunks
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from skyhop.models import Chunk, ChunkState, ObjectEntry, ObjectState
from skyhop.state.base import JobProgress

COUNTER_SHARDS = 16
PREFIXES = ("o_", "c_", "b_")


def shard(record_id: int) -> int:
    """The counter shard a record's changes go to."""
    return record_id % COUNTER_SHARDS


def object_counts(entry: ObjectEntry) -> Counter[str]:
    return Counter({f"o_{entry.state.value}": 1, "o_total": 1, "o_bytes": entry.size})


def chunk_counts(chunk: Chunk) -> Counter[str]:
    verified = chunk.length if chunk.state == ChunkState.VERIFIED else 0
    return Counter({f"c_{chunk.state.value}": 1, "c_total": 1, "b_verified": verified})


def delta(new: Counter[str], old: Counter[str]) -> dict[str, int]:
    """The non-zero changes from ``old`` counts to ``new`` ones."""
    change = Counter(new)
    change.subtract(old)
    return {name: n for name, n in sorted(change.items()) if n}


def is_counter(name: str) -> bool:
    return name.startswith(PREFIXES)


def progress(shards: Iterable[Mapping[str, int]]) -> JobProgress:
    """The job's progress from its counter shards' values."""
    totals: Counter[str] = Counter()
    for values in shards:
        for name, value in values.items():
            if is_counter(name):
                totals[name] += int(value or 0)
    return JobProgress(
        objects_total=totals["o_total"],
        objects_verified=totals[f"o_{ObjectState.VERIFIED.value}"],
        objects_failed=totals[f"o_{ObjectState.FAILED.value}"],
        bytes_total=totals["o_bytes"],
        bytes_verified=totals["b_verified"],
        chunks={s: totals[f"c_{s.value}"] for s in ChunkState if totals[f"c_{s.value}"] > 0},
    )


__all__ = [
    "COUNTER_SHARDS",
    "chunk_counts",
    "delta",
    "is_counter",
    "object_counts",
    "progress",
    "shard",
]
