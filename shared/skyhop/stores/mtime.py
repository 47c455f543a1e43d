"""Modification times kept with objects, in the forms rclone and gsutil write them.

A store keeps the source's modification time at the destination so that
``sync`` can compare it for *equality* (a file edited a moment after the last
sync, or replaced by an older one, differs), as rclone does:

=============  ================================================================
local          the file's own mtime (``os.utime``), nanoseconds
S3             user metadata ``mtime``: Unix seconds with nine decimals
               (``x-amz-meta-mtime: 1700000000.123456789``)
GCS            user metadata ``mtime`` (RFC 3339, nanoseconds) and gsutil's
               ``goog-reserved-file-mtime`` (whole Unix seconds)
Azure Blob     user metadata ``mtime`` (RFC 3339, nanoseconds)
=============  ================================================================

Reading takes either form from either key, so objects written by rclone or
gsutil compare as well. An object without one has only the store's own write
time (Last-Modified), which says when it was written, not when its content
was: ``sync`` then falls back to "the source is newer than the destination".
``ObjectInfo.mtime_precision`` tells which it is: the precision of a kept
time, or None for a write time.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

MTIME_KEY = "mtime"
GSUTIL_MTIME_KEY = "goog-reserved-file-mtime"

#: how closely a kept time survives the trip (seconds as a float: ~0.24 us at today's epoch)
KEPT_PRECISION = 1e-6
#: gsutil keeps whole seconds
GSUTIL_PRECISION = 1.0


def _split(mtime: float) -> tuple[int, int]:
    """Whole seconds and nanoseconds of ``mtime`` (floor, so negative times work)."""
    seconds = math.floor(mtime)
    nanos = round((mtime - seconds) * 1e9)  # the subtraction is exact for a float
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, nanos - 1_000_000_000
    return seconds, nanos


def to_ns(mtime: float) -> int:
    """``mtime`` in whole nanoseconds (for ``os.utime``), rounded as the texts are."""
    seconds, nanos = _split(mtime)
    return seconds * 1_000_000_000 + nanos


def unix_text(mtime: float) -> str:
    """``1700000000.123456789``: the form rclone writes to S3."""
    seconds, nanos = _split(mtime)
    return f"{seconds}.{nanos:09d}"


def rfc3339_text(mtime: float) -> str:
    """``2023-11-14T22:13:20.123456789Z``: the form rclone writes to GCS and Azure."""
    seconds, nanos = _split(mtime)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def parse(value: str | None) -> float | None:
    """A kept time in either form (Unix seconds, or RFC 3339 with any fraction and
    offset); None when it is neither."""
    if not value:
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        return number if math.isfinite(number) else None
    head, dot, rest = text.partition(".")
    fraction = ""
    if dot:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        fraction, rest = rest[:digits], rest[digits:]
        text = head + rest
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp() + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def kept(user: dict[str, str]) -> tuple[float | None, float | None, dict[str, str]]:
    """(kept time, its precision, the rest of the user metadata) of an object's
    user metadata; keys compared case-insensitively (S3 and Azure fold case)."""
    found: float | None = None
    precision: float | None = None
    gsutil: float | None = None
    rest: dict[str, str] = {}
    for key, value in user.items():
        name = key.lower()
        parsed = parse(value) if name in (MTIME_KEY, GSUTIL_MTIME_KEY) else None
        if parsed is None:
            rest[key] = value
        elif name == MTIME_KEY:
            found = parsed
        else:
            gsutil = parsed
    if found is not None:
        precision = KEPT_PRECISION
    elif gsutil is not None:
        found, precision = gsutil, GSUTIL_PRECISION
    return found, precision, rest
