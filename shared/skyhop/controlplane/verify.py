"""Verification: per-object checksum comparison and the final listing check.

Every chunk's CRC32C is computed by the source gateway from the bytes it read
and checked by the destination gateway before writing, so the transfer itself
is verified end to end. The destination gateway also computes each part's MD5
as it writes it. From these the control plane knows, for every object, the
CRC32C of its bytes, their MD5 when the object travelled as one chunk, and
the S3-style multipart ETag (MD5 of the part MD5s, ``-N``) when it went in
parts. Those are compared twice, each time with whatever checksum the store
on the other side has:

* when an object completes, with the SOURCE store's own checksum
  (:func:`source_checksum`);
* after the transfer, with what the DESTINATION listing reports
  (:func:`listing_check`).

What each cloud reports:

=============  ==============================================================
S3             ETag: the MD5 of a single-request upload, MD5 of part MD5s with
               ``-N`` for a multipart one (not an MD5 under SSE-KMS or SSE-C)
GCS            ``crc32c`` always; ``md5Hash`` only for single-request uploads
Azure Blob     Content-MD5 only where the writer set it (skyhop sets it on
               every single put)
local          nothing: size only
=============  ==============================================================

Method names (per object in the manifest and the CSV report, counted in
:class:`~skyhop.models.VerificationSummary.checksum_methods`):

``crc32c``
    the store's CRC32C equals the CRC32C combined from the chunks.
``md5``
    the store's MD5 (S3 single-part ETag, GCS md5Hash, Azure Content-MD5)
    equals the MD5 of the bytes (objects that travelled as one chunk).
``s3-multipart-etag``
    the store's multipart ETag ``<md5>-N`` equals the one recomputed from the
    MD5s of the parts skyhop wrote (same part size, same N).
``crc32c-transfer`` (source side) / ``size+crc32c-transfer`` (destination side)
    the store has nothing comparable (a local file, a composed or block-list
    object without an MD5): the bytes were verified chunk by chunk in transit,
    and after the transfer the size is checked.

An S3 ETag is an MD5 only when the object is not encrypted with SSE-KMS or
SSE-C, and a listing does not say which: when a comparison against an ETag
fails, the object is looked at once more with a HEAD (which does say, and
then reports no MD5 for such an object). A mismatch that HEAD confirms is a
mismatch; an ETag that is not a checksum falls back to the transfer method.
A multipart ETag of the source that does not match may simply have been
written with other part sizes, so it is never taken as evidence of a
mismatch.
"""

from __future__ import annotations

import base64
import logging
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from skyhop.checksums import etag_part_count, md5_from_etag, normalize_etag, s3_multipart_etag
from skyhop.errors import SkyhopError
from skyhop.integrity import combine_chunks
from skyhop.models import Chunk, Job, ObjectEntry, ObjectState, VerificationSummary
from skyhop.state.base import ManifestStore
from skyhop.stores.base import ObjectStore

log = logging.getLogger("skyhop.verify")

CRC32C = "crc32c"
MD5 = "md5"
MULTIPART_ETAG = "s3-multipart-etag"
TRANSFER = "crc32c-transfer"
SIZE_TRANSFER = "size+crc32c-transfer"

#: Fresh checksums of a key (a HEAD), or None when it cannot be looked at.
Confirm = Callable[[str], "dict[str, str] | None"]


@dataclass(frozen=True)
class ObjectChecksums:
    """What skyhop knows about an object's bytes once all its chunks are verified."""

    crc32c: str
    md5: str | None = None  # objects that travelled as one chunk
    part_md5s: tuple[str, ...] | None = None  # every chunk's MD5, in order, when all are known
    multipart_etag: str | None = None  # multipart objects: S3's ETag of these parts

    @property
    def recomputed_etag(self) -> str | None:
        """The multipart ETag of ``part_md5s`` (for any object whose part MD5s are known)."""
        if self.multipart_etag:
            return self.multipart_etag
        return s3_multipart_etag(self.part_md5s) if self.part_md5s else None


def object_checksums(entry: ObjectEntry, chunks: Iterable[Chunk]) -> ObjectChecksums:
    """The object's CRC32C (combined from its chunks), MD5 and multipart ETag.

    ``chunks`` are all of the object's chunks, verified; the MD5s are those the
    destination gateway computed over the bytes it wrote (absent from older
    gateways, and then nothing MD5-based is claimed)."""
    ordered = sorted(chunks, key=lambda c: c.index)
    # a chunk the store copied itself (server-side) has no CRC32C: then neither has
    # the object, and its MD5s (the store's own) are what is compared
    known = all(c.crc32c for c in ordered)
    crc = combine_chunks([(c.crc32c or "00000000", c.length) for c in ordered]) if known else ""
    md5s = [(c.md5 or "").lower() for c in ordered]
    if not ordered or not all(md5s):
        return ObjectChecksums(crc32c=crc)
    md5 = md5s[0] if entry.n_chunks == 1 and len(md5s) == 1 else None
    etag = s3_multipart_etag(md5s) if entry.multipart else None
    return ObjectChecksums(crc32c=crc, md5=md5, part_md5s=tuple(md5s), multipart_etag=etag)


# ---------------------------------------------------------------- the source side


def source_checksum(
    entry: ObjectEntry,
    sums: ObjectChecksums | str,
    *,
    confirm: Confirm | None = None,
) -> tuple[str, bool]:
    """Compare what skyhop read with the source store's own checksum: (method, ok).

    ``sums`` may be just the combined CRC32C (hex). ``confirm`` looks at the
    source object again (a HEAD) when an ETag-based MD5 disagrees."""
    if isinstance(sums, str):
        sums = ObjectChecksums(crc32c=sums)
    src = entry.src_checksums
    if src.get("crc32c") and sums.crc32c:
        return CRC32C, _norm_crc(src["crc32c"]) == sums.crc32c
    src_md5 = _md5(src.get("md5"))
    if src_md5 and sums.md5:
        if src_md5 == sums.md5:
            return MD5, True
        if "etag" not in src:  # a real MD5 (GCS md5Hash, Azure Content-MD5)
            return MD5, False
        fresh = _fresh(confirm, entry.src_key)
        if fresh is None:  # cannot look again: the mismatch stands
            return MD5, False
        if _md5(fresh.get("md5")):
            return MD5, _md5(fresh.get("md5")) == sums.md5
        log.info("%s: source ETag is not an MD5 (SSE-KMS or SSE-C?)", entry.src_key)
        return TRANSFER, True
    etag = normalize_etag(src.get("etag"))
    count = etag_part_count(etag)
    if count is not None and sums.part_md5s and len(sums.part_md5s) == count:
        if (etag or "").lower() == sums.recomputed_etag:
            return MULTIPART_ETAG, True
        # other part sizes (or SSE-KMS): not evidence either way
        log.info("%s: source multipart ETag has other parts; not compared", entry.src_key)
    return TRANSFER, True


# ---------------------------------------------------------------- the destination side


def compare_destination(
    entry: ObjectEntry, dst_checksums: dict[str, str], *, confirm: Confirm | None = None
) -> str | None:
    """The method that checked the destination's copy, or None on a mismatch.

    Uses the first checksum both sides have: CRC32C, then MD5, then the S3
    multipart ETag; with none, the size (already checked by the caller) and
    the transfer's chunk CRC32Cs."""
    dst_crc = dst_checksums.get("crc32c")
    if dst_crc and entry.crc32c:
        return CRC32C if _norm_crc(dst_crc) == entry.crc32c else None
    dst_md5 = _md5(dst_checksums.get("md5"))
    if dst_md5 and entry.md5:
        if dst_md5 == entry.md5.lower():
            return MD5
        return _confirmed(entry, dst_checksums, confirm)
    dst_etag = normalize_etag(dst_checksums.get("etag"))
    if entry.multipart_etag and etag_part_count(dst_etag) is not None:
        if (dst_etag or "").lower() == entry.multipart_etag.lower():
            return MULTIPART_ETAG
        return _confirmed(entry, dst_checksums, confirm)
    return SIZE_TRANSFER


def _confirmed(entry: ObjectEntry, listed: dict[str, str], confirm: Confirm | None) -> str | None:
    """A listed checksum disagreed. A real MD5 is a mismatch; an S3 ETag is looked
    at again, since under SSE-KMS or SSE-C it is not a checksum at all."""
    if "etag" not in listed:
        return None
    fresh = _fresh(confirm, entry.dst_key)
    if fresh is None:
        return None
    if fresh.get("md5") or etag_part_count(fresh.get("etag")) is not None:
        return compare_destination(entry, fresh)  # still a checksum: its verdict stands
    log.info("%s: destination ETag is not a checksum (SSE-KMS or SSE-C?)", entry.dst_key)
    return SIZE_TRANSFER


def _common_prefix(keys: list[str]) -> str:
    prefix = posixpath.commonprefix(keys)
    return prefix[: prefix.rfind("/") + 1] if "/" in prefix else ""


def listing_check(manifest: ManifestStore, job: Job, dst: ObjectStore) -> VerificationSummary:
    """List the destination once and check every verified object's key, size and
    checksum (see :func:`compare_destination`).

    Expected objects are gathered from the manifest (one entry per object), then
    the destination is listed under the objects' common prefix."""
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

    def confirm(key: str) -> dict[str, str] | None:
        info = dst.head(key)
        return None if info is None else dict(info.checksums)

    for key, entry in expected.items():
        summary.checked += 1
        info = found.get(key)
        if info is None:
            summary.missing.append(key)
            continue
        if info.size != entry.size:
            summary.size_mismatches.append(f"{key}: expected {entry.size} bytes, found {info.size}")
            continue
        method = compare_destination(entry, info.checksums, confirm=confirm)
        if method is None:
            summary.checksum_mismatches.append(key)
            continue
        methods[method] = methods.get(method, 0) + 1
    summary.checksum_methods = methods
    return summary


# ---------------------------------------------------------------- helpers


def _fresh(confirm: Confirm | None, key: str) -> dict[str, str] | None:
    if confirm is None:
        return None
    try:
        return confirm(key)
    except SkyhopError as exc:
        log.warning("could not look at %s again: %s", key, exc)
        return None


def _md5(value: str | None) -> str | None:
    """An MD5 in lower-case hex, from hex, a plain ETag or base64 (Content-MD5)."""
    if not value:
        return None
    found = md5_from_etag(value)
    if found:
        return found
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 16 else None


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
