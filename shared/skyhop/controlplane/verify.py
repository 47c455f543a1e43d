"""Verification: per-object checksum comparison and the final listing check.

Every chunk's CRC32C is computed by the source gateway from the bytes it read
and checked by the destination gateway before writing, so the transfer itself
is verified end to end. On top of that, an object's combined CRC32C is
compared with the source store's own checksum where the source has a
comparable one, and after the transfer the destination is listed and every
key and size (and checksum, where both stores expose a comparable one)
checked.
"""

from __future__ import annotations

import base64
import posixpath

from skyhop.models import Job, ObjectEntry, ObjectState, VerificationSummary
from skyhop.state.base import ManifestStore
from skyhop.stores.base import ObjectStore


def source_checksum(entry: ObjectEntry, crc_hex: str) -> tuple[str, bool]:
    """Compare the object's combined CRC32C with the source's; (method, ok)."""
    src = entry.src_checksums.get("crc32c")
    if src:
        return "crc32c", _norm_crc(src) == crc_hex
    return "crc32c-transfer", True


def _norm_crc(value: str) -> str:
    value = value.strip()
    if len(value) == 8:
        try:
            int(value, 16)
            return value.lower()
        except ValueError:
            pass
    try:
        return base64.b64decode(value).hex()
    except ValueError:
        return value.lower()


def _common_prefix(keys: list[str]) -> str:
    prefix = posixpath.commonprefix(keys)
    return prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""


def listing_check(manifest: ManifestStore, job: Job, dst: ObjectStore) -> VerificationSummary:
    """List the destination once and check every verified object's key and size.

    Expected sizes are gathered from the manifest (one entry per object), then
    the destination is listed under the objects' common prefix.
    """
    expected: dict[str, ObjectEntry] = {}
    for entry in manifest.iter_objects(job.job_id, {ObjectState.VERIFIED}):
        expected[entry.dst_key] = entry
    summary = VerificationSummary(checked=0)
    if not expected:
        return summary
    methods: dict[str, int] = {}
    if len(expected) == 1:
        (key,) = expected
        info = dst.head(key)
        found = {key: info} if info is not None else {}
    else:
        found = {}
        for info in dst.list(_common_prefix(list(expected))):
            if info.key in expected:
                found[info.key] = info
    for key, entry in expected.items():
        summary.checked += 1
        info = found.get(key)
        if info is None:
            summary.missing.append(key)
            continue
        if info.size != entry.size:
            summary.size_mismatches.append(f"{key}: expected {entry.size} bytes, found {info.size}")
            continue
        method = _compare(entry, info.checksums)
        if method is None:
            summary.checksum_mismatches.append(key)
            continue
        methods[method] = methods.get(method, 0) + 1
    summary.checksum_methods = methods
    return summary


def _compare(entry: ObjectEntry, dst_checksums: dict[str, str]) -> str | None:
    """The method used to compare source and destination, or None on a mismatch."""
    dst_crc = dst_checksums.get("crc32c")
    if dst_crc and entry.crc32c:
        return "crc32c" if _norm_crc(dst_crc) == entry.crc32c else None
    src_md5, dst_md5 = entry.src_checksums.get("md5"), dst_checksums.get("md5")
    if src_md5 and dst_md5:
        return "md5" if src_md5.lower() == dst_md5.lower() else None
    return "size+crc32c-transfer"
