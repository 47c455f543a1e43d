"""MD5 and S3 ETag helpers for verifying objects against what a store reports.

An S3 ETag is the object's MD5 (hex) when it was written in one request
without SSE-KMS; a multipart upload's ETag is the MD5 of the concatenated
binary MD5s of its parts, followed by ``-N`` (the number of parts). Knowing
the part size, a reader can therefore recompute it. CRC32C (the checksum
skyhop carries end to end) lives in :mod:`skyhop.integrity`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
_MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-([1-9][0-9]*)$")


def md5_hex(data: bytes | memoryview) -> str:
    """MD5 of ``data``, lower-case hex."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def normalize_etag(etag: str | None) -> str | None:
    """An ETag without surrounding quotes (and without a weak ``W/`` prefix)."""
    if etag is None:
        return None
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def md5_from_etag(etag: str | None) -> str | None:
    """The object's MD5 (hex) when ``etag`` has the single-part form, else None.

    Note: objects encrypted with SSE-KMS or SSE-C have single-part-looking ETags
    that are not their MD5; callers that know the encryption must not trust it.
    """
    etag = normalize_etag(etag)
    if etag is None:
        return None
    etag = etag.lower()
    return etag if _MD5_HEX.match(etag) else None


def etag_part_count(etag: str | None) -> int | None:
    """N for a multipart ETag ``<md5>-N``; None for any other form."""
    etag = normalize_etag(etag)
    match = _MULTIPART_ETAG.match(etag.lower()) if etag else None
    return int(match.group(1)) if match else None


def s3_multipart_etag(part_md5s: Iterable[bytes | str]) -> str:
    """The ETag S3 gives a multipart object, from its parts' MD5s (raw 16 bytes or hex)."""
    digest = hashlib.md5(usedforsecurity=False)
    count = 0
    for part in part_md5s:
        raw = bytes.fromhex(part) if isinstance(part, str) else part
        if len(raw) != 16:
            raise ValueError("a part MD5 has 16 bytes (32 hex digits)")
        digest.update(raw)
        count += 1
    if count == 0:
        raise ValueError("a multipart upload has at least one part")
    return f"{digest.hexdigest()}-{count}"


def s3_etag(data: bytes | memoryview, part_size: int | None = None) -> str:
    """The ETag S3 reports for ``data`` written in one request (``part_size`` None)
    or as a multipart upload with parts of ``part_size`` bytes (the last shorter)."""
    if part_size is None:
        return md5_hex(data)
    if part_size <= 0:
        raise ValueError("part_size must be positive")
    view = memoryview(data)
    parts = [
        hashlib.md5(view[i : i + part_size], usedforsecurity=False).digest()
        for i in range(0, max(len(view), 1), part_size)
    ]
    return s3_multipart_etag(parts)
