"""Checksum verification: per-object comparison with the source store's checksum
and the post-transfer listing check against each cloud's own checksums.

The pure comparison rules are tested directly; the listing check runs against
real stores (moto, the GCS emulator, Azurite) written through skyhop's stores,
and the control plane records the MD5s the gateways send.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import boto3
import pytest

from skyhop.checksums import md5_hex, s3_etag
from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane import verify
from skyhop.controlplane.service import ControlPlane
from skyhop.integrity import crc32c, crc_hex
from skyhop.models import (
    Chunk,
    ChunkState,
    ChunkVerified,
    Job,
    ObjectEntry,
    ObjectState,
    TransferOptions,
    TransferRequest,
)
from skyhop.state.sqlite import SQLiteManifest
from skyhop.stores.base import MultipartWriter, ObjectStore, open_store
from skyhop.uri import parse_uri

MIB = 1024 * 1024
PART = 5 * MIB


def _entry(size: int, *, n_chunks: int = 1, **fields: object) -> ObjectEntry:
    data = {
        "job_id": "j",
        "object_id": 0,
        "src_key": "src/a",
        "dst_key": "dst/a",
        "size": size,
        "chunk_size": PART if n_chunks > 1 else max(size, 1),
        "n_chunks": n_chunks,
        "multipart": n_chunks > 1,
    }
    data.update(fields)
    return ObjectEntry.model_validate(data)


def _chunks(body: bytes, part: int | None, *, md5: bool = True) -> list[Chunk]:
    """Verified chunks of ``body`` as the gateways report them (shuffled order)."""
    pieces = [body] if part is None else [body[i : i + part] for i in range(0, len(body), part)]
    chunks = [
        Chunk(
            job_id="j",
            chunk_id=i,
            object_id=0,
            index=i,
            offset=i * (part or 0),
            length=len(p),
            state=ChunkState.VERIFIED,
            crc32c=crc_hex(crc32c(p)),
            md5=md5_hex(p) if md5 else None,
        )
        for i, p in enumerate(pieces)
    ]
    return list(reversed(chunks))


def _sums(body: bytes, part: int | None = None) -> verify.ObjectChecksums:
    n = 1 if part is None else -(-len(body) // part)
    return verify.object_checksums(_entry(len(body), n_chunks=n), _chunks(body, part))


# ---------------------------------------------------------------- what skyhop knows


def test_single_chunk_object_has_its_md5_and_crc():
    body = os.urandom(1000)
    sums = _sums(body)
    assert sums.crc32c == crc_hex(crc32c(body))
    assert sums.md5 == hashlib.md5(body).hexdigest()
    assert sums.multipart_etag is None


def test_zero_byte_object():
    sums = _sums(b"")
    assert sums.crc32c == "00000000"
    assert sums.md5 == "d41d8cd98f00b204e9800998ecf8427e"


def test_multipart_object_recomputes_the_s3_etag():
    body = os.urandom(2 * PART + 12345)
    sums = _sums(body, PART)
    assert sums.md5 is None  # an object MD5 cannot be combined from part MD5s
    assert sums.multipart_etag == s3_etag(body, PART)
    assert sums.multipart_etag.endswith("-3")
    assert sums.crc32c == crc_hex(crc32c(body))


def test_chunks_without_md5_claim_nothing():
    body = os.urandom(2 * PART + 1)
    entry = _entry(len(body), n_chunks=3)
    sums = verify.object_checksums(entry, _chunks(body, PART, md5=False))
    assert sums.md5 is None and sums.multipart_etag is None and sums.part_md5s is None
    assert sums.crc32c == crc_hex(crc32c(body))


# ---------------------------------------------------------------- the source side


def test_source_crc32c_compared_first():
    body = b"abc" * 100
    sums = _sums(body)
    good = _entry(len(body), src_checksums={"crc32c": sums.crc32c, "md5": "0" * 32})
    assert verify.source_checksum(good, sums) == ("crc32c", True)
    bad = _entry(len(body), src_checksums={"crc32c": "00000001"})
    assert verify.source_checksum(bad, sums) == ("crc32c", False)
    # the old call with just the CRC32C still works
    assert verify.source_checksum(good, sums.crc32c) == ("crc32c", True)


def test_source_md5_of_gcs_or_azure_is_trusted():
    body = os.urandom(500)
    sums = _sums(body)
    assert verify.source_checksum(_entry(500, src_checksums={"md5": sums.md5}), sums) == (
        "md5",
        True,
    )
    wrong = _entry(500, src_checksums={"md5": "f" * 32})
    assert verify.source_checksum(wrong, sums) == ("md5", False)


def test_source_s3_etag_mismatch_is_confirmed_by_a_head():
    body = os.urandom(500)
    sums = _sums(body)
    listed = {"etag": "f" * 32, "md5": "f" * 32}
    entry = _entry(500, src_checksums=listed)
    # HEAD still reports an MD5 ETag: a real mismatch
    assert verify.source_checksum(entry, sums, confirm=lambda key: dict(listed)) == ("md5", False)
    # HEAD says it is no checksum (SSE-KMS): the transfer's CRC32Cs stand
    assert verify.source_checksum(entry, sums, confirm=lambda key: {}) == (
        "crc32c-transfer",
        True,
    )
    # nobody to ask: the mismatch stands
    assert verify.source_checksum(entry, sums) == ("md5", False)


def test_source_multipart_etag():
    body = os.urandom(2 * PART + 7)
    sums = _sums(body, PART)
    entry = _entry(len(body), n_chunks=3, src_checksums={"etag": s3_etag(body, PART)})
    assert verify.source_checksum(entry, sums) == ("s3-multipart-etag", True)
    # written with other parts (same count): not evidence either way
    other = _entry(len(body), n_chunks=3, src_checksums={"etag": md5_hex(b"other parts") + "-3"})
    assert verify.source_checksum(other, sums) == ("crc32c-transfer", True)
    # a whole-object MD5 of a multi-chunk object cannot be compared
    whole = _entry(len(body), n_chunks=3, src_checksums={"md5": md5_hex(body)})
    assert verify.source_checksum(whole, sums) == ("crc32c-transfer", True)


def test_source_without_checksum():
    body = b"x"
    assert verify.source_checksum(_entry(1), _sums(body)) == ("crc32c-transfer", True)


# ---------------------------------------------------------------- the destination side


def _recorded(body: bytes, part: int | None = None) -> ObjectEntry:
    """A verified entry as complete_object records it."""
    sums = _sums(body, part)
    n = 1 if part is None else -(-len(body) // part)
    return _entry(
        len(body),
        n_chunks=n,
        state=ObjectState.VERIFIED,
        crc32c=sums.crc32c,
        md5=sums.md5,
        multipart_etag=sums.multipart_etag,
    )


def test_destination_methods():
    small, big = os.urandom(300), os.urandom(2 * PART + 3)
    one, multi = _recorded(small), _recorded(big, PART)
    crc_b64 = base64.b64encode(bytes.fromhex(one.crc32c or "")).decode()
    assert verify.compare_destination(one, {"crc32c": crc_b64, "md5": md5_hex(small)}) == "crc32c"
    assert verify.compare_destination(one, {"md5": md5_hex(small)}) == "md5"
    assert verify.compare_destination(one, {"etag": md5_hex(small), "md5": md5_hex(small)}) == "md5"
    assert verify.compare_destination(multi, {"etag": s3_etag(big, PART)}) == "s3-multipart-etag"
    assert verify.compare_destination(one, {}) == "size+crc32c-transfer"
    # an Azure block-list blob without Content-MD5, a GCS composite without md5Hash
    assert verify.compare_destination(multi, {}) == "size+crc32c-transfer"
    # a multi-chunk object cannot be compared with a whole-object MD5
    assert verify.compare_destination(multi, {"md5": md5_hex(big)}) == "size+crc32c-transfer"


def test_destination_mismatches():
    small, big = os.urandom(300), os.urandom(2 * PART + 3)
    one, multi = _recorded(small), _recorded(big, PART)
    assert verify.compare_destination(one, {"crc32c": "00000001"}) is None
    assert verify.compare_destination(one, {"md5": "0" * 32}) is None
    etag = s3_etag(big, 6 * MIB)
    assert verify.compare_destination(multi, {"etag": etag}) is None
    # an ETag confirmed by a HEAD is still a mismatch; one that HEAD says is no
    # checksum (SSE-KMS) falls back to the size and the transfer's CRC32Cs
    assert (
        verify.compare_destination(multi, {"etag": etag}, confirm=lambda k: {"etag": etag}) is None
    )
    assert (
        verify.compare_destination(multi, {"etag": etag}, confirm=lambda k: {})
        == "size+crc32c-transfer"
    )
    listed = {"etag": "0" * 32, "md5": "0" * 32}
    assert verify.compare_destination(one, listed, confirm=lambda k: listed) is None
    assert verify.compare_destination(one, listed, confirm=lambda k: {}) == "size+crc32c-transfer"


# ---------------------------------------------------------------- the listing check on real stores


def _write(store: ObjectStore, key: str, body: bytes, part: int | None) -> None:
    if part is None:
        store.put(key, body)
        return
    assert isinstance(store, MultipartWriter)
    upload = store.create_multipart(key)
    tags = [
        (n + 1, store.upload_part(key, upload, n + 1, body[i : i + part]))
        for n, i in enumerate(range(0, len(body), part))
    ]
    store.complete_multipart(key, upload, tags)


def _check(tmp_path: Path, uri: str, objects: dict[str, tuple[bytes, int | None]], corrupt=None):
    """Write ``objects`` at ``uri``, record them as a verified job, list-check."""
    store = open_store(parse_uri(uri))
    base = parse_uri(uri).key
    for rel, (body, part) in objects.items():
        _write(store, base + rel, body, part)
    if corrupt:
        corrupt(store, base)
    manifest = SQLiteManifest(tmp_path / "m.db")
    job = Job(request=TransferRequest(source=str(tmp_path), destination=uri))
    manifest.create_job(job)
    entries = []
    for n, (rel, (body, part)) in enumerate(objects.items()):
        entry = _recorded(body, part).model_copy(
            update={"job_id": job.job_id, "object_id": n, "dst_key": base + rel}
        )
        entries.append(entry)
    manifest.put_objects(entries)
    return verify.listing_check(manifest, job, store)


def _tree() -> dict[str, tuple[bytes, int | None]]:
    return {
        "with space/ünïcødé ファイル.txt": (os.urandom(700), None),
        "empty": (b"", None),
        "multi/part.bin": (os.urandom(2 * PART + 12345), PART),
    }


def test_listing_check_s3(moto, tmp_path: Path):
    boto3.client("s3").create_bucket(Bucket="verify-s3")
    summary = _check(tmp_path, "s3://verify-s3/x/", _tree())
    assert summary.mismatches == 0
    assert summary.checksum_methods == {"md5": 2, "s3-multipart-etag": 1}


def test_listing_check_s3_detects_a_changed_object(moto, tmp_path: Path):
    boto3.client("s3").create_bucket(Bucket="verify-s3b")

    def corrupt(store: ObjectStore, base: str) -> None:  # same size, other bytes
        store.put(base + "a.bin", b"B" * 100)

    summary = _check(tmp_path, "s3://verify-s3b/", {"a.bin": (b"A" * 100, None)}, corrupt)
    assert summary.checksum_mismatches == ["a.bin"]


def test_listing_check_s3_kms_etag_is_not_a_checksum(moto, tmp_path: Path):
    """Under SSE-KMS an S3 ETag is no MD5: a disagreeing one is looked at with a
    HEAD, which says so, and the object falls back to size + transfer CRC32C."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="verify-kms")

    def reencrypt(store: ObjectStore, base: str) -> None:
        s3.put_object(
            Bucket="verify-kms", Key=base + "k.bin", Body=b"K" * 64, ServerSideEncryption="aws:kms"
        )

    entry_body = b"k" * 64  # what skyhop "wrote": the listed ETag cannot match it
    summary = _check(tmp_path, "s3://verify-kms/", {"k.bin": (entry_body, None)}, reencrypt)
    assert summary.mismatches == 0
    assert summary.checksum_methods == {"size+crc32c-transfer": 1}


def test_listing_check_gcs(gcs_bucket: str, tmp_path: Path):
    summary = _check(tmp_path, gcs_bucket + "x/", _tree())
    assert summary.mismatches == 0
    assert summary.checksum_methods == {"crc32c": 3}


def test_listing_check_gcs_detects_a_changed_object(gcs_bucket: str, tmp_path: Path):
    def corrupt(store: ObjectStore, base: str) -> None:
        store.put(base + "a.bin", b"B" * 100)

    summary = _check(tmp_path, gcs_bucket, {"a.bin": (b"A" * 100, None)}, corrupt)
    assert summary.checksum_mismatches == ["a.bin"]


def test_listing_check_azure(azure_container: str, tmp_path: Path):
    summary = _check(tmp_path, azure_container + "x/", _tree())
    assert summary.mismatches == 0
    # Content-MD5 on single puts; a multi-part object has no whole MD5 skyhop knows
    assert summary.checksum_methods == {"md5": 2, "size+crc32c-transfer": 1}


def test_listing_check_azure_detects_a_changed_object(azure_container: str, tmp_path: Path):
    def corrupt(store: ObjectStore, base: str) -> None:
        store.put(base + "a.bin", b"B" * 100)

    summary = _check(tmp_path, azure_container, {"a.bin": (b"A" * 100, None)}, corrupt)
    assert summary.checksum_mismatches == ["a.bin"]


def test_listing_check_local(tmp_path: Path):
    """#21 item 6: the local store keeps the CRC32C it computed while writing with
    the file (an extended attribute, written before the file appears), so a local
    destination is checked by content, not size only."""
    summary = _check(tmp_path, str(tmp_path / "dst") + "/", _tree())
    assert summary.mismatches == 0
    assert summary.checksum_methods == {"crc32c": 3}


def test_listing_check_local_detects_a_changed_object(tmp_path: Path):
    """Another job wrote the same key with other bytes of the same size: the first
    job's check says so instead of reporting it verified."""

    def corrupt(store: ObjectStore, base: str) -> None:
        store.put(base + "a.bin", b"B" * 100)  # as the other job's gateway writes it

    dst = str(tmp_path / "dst") + "/"
    summary = _check(tmp_path, dst, {"a.bin": (b"A" * 100, None)}, corrupt)
    assert summary.checksum_mismatches == [dst.lstrip("/") + "a.bin"]


def test_local_crc_is_only_trusted_for_the_bytes_it_was_computed_over(tmp_path: Path):
    store = open_store(parse_uri(str(tmp_path)))
    key = str(tmp_path / "f.bin").lstrip("/")
    store.put(key, b"x" * 10)
    info = store.head(key)
    assert info is not None and info.checksums == {"crc32c": crc_hex(crc32c(b"x" * 10))}
    with open(tmp_path / "f.bin", "r+b") as fh:  # rewritten in place: the mtime moves
        fh.write(b"y")
    info = store.head(key)
    assert info is not None and "crc32c" not in info.checksums
    os.replace(tmp_path / "f.bin", tmp_path / "g.bin")  # the attribute travels with the inode
    (tmp_path / "plain").write_bytes(b"no attribute")
    listed = {i.key.rsplit("/", 1)[-1]: i.checksums for i in store.list(str(tmp_path).lstrip("/"))}
    assert listed == {"g.bin": {}, "plain": {}}


# ---------------------------------------------------------------- the control plane records MD5s


@pytest.fixture
def cp(tmp_path: Path) -> ControlPlane:
    return ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())


def _verified_event(
    job_id: str, chunk: Chunk, body: bytes, part_etag: str | None = None
) -> ChunkVerified:
    part = body[chunk.offset : chunk.offset + chunk.length]
    return ChunkVerified(
        job_id=job_id,
        gateway_id="gw-test",
        chunk_id=chunk.chunk_id,
        object_id=chunk.object_id,
        crc32c=crc_hex(crc32c(part)),
        length=len(part),
        md5=md5_hex(part),
        part_etag=part_etag,
        attempt=1,  # the dispatch _run_events records
    )


def _run_events(
    cp: ControlPlane, job_id: str, body: bytes, tags: dict[int, str] | None = None
) -> ObjectEntry:
    chunks = list(cp.manifest.iter_chunks(job_id))
    for chunk in chunks:
        assert cp.manifest.transition_chunk(  # dispatched, as take_chunks does: attempt 1
            job_id,
            chunk.chunk_id,
            expect={ChunkState.PENDING},
            to=ChunkState.DISPATCHED,
            attempts=1,
        )
    for chunk in reversed(chunks):
        cp.apply_event(_verified_event(job_id, chunk, body, (tags or {}).get(chunk.index)))
    entry = cp.manifest.get_object(job_id, 0)
    assert entry is not None
    return entry


def test_control_plane_records_md5_of_a_one_chunk_object(cp: ControlPlane, tmp_path: Path):
    body = os.urandom(4000)
    (tmp_path / "a.bin").write_bytes(body)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "a.bin"), destination=str(tmp_path / "b"))
    )
    entry = _run_events(cp, job.job_id, body)
    assert entry.state == ObjectState.VERIFIED
    assert entry.md5 == md5_hex(body) and entry.multipart_etag is None
    assert cp.manifest.get_chunk(job.job_id, 0).md5 == md5_hex(body)
    assert entry.checksum_method == "crc32c-transfer"  # a local file has no checksum


def test_control_plane_records_multipart_etag(cp: ControlPlane, tmp_path: Path):
    body = os.urandom(2 * PART + 99)
    (tmp_path / "big.bin").write_bytes(body)
    options = TransferOptions(multipart_threshold=PART, chunk_size=PART)
    job = cp.create_job(
        TransferRequest(
            source=str(tmp_path / "big.bin"), destination=str(tmp_path / "out.bin"), options=options
        )
    )
    chunks = list(cp.manifest.iter_chunks(job.job_id))
    entry = cp.manifest.get_object(job.job_id, 0)
    store = cp.store(parse_uri(str(tmp_path / "out.bin")))
    tags = {}
    for chunk in chunks:  # the parts as a destination gateway writes them
        part = body[chunk.offset : chunk.offset + chunk.length]
        tags[chunk.index] = store.upload_part(entry.dst_key, entry.upload_id, chunk.index + 1, part)
    entry = _run_events(cp, job.job_id, body, tags)
    assert entry.state == ObjectState.VERIFIED, entry.error
    assert entry.multipart_etag == s3_etag(body, PART) and entry.md5 is None
    assert (tmp_path / "out.bin").read_bytes() == body


def test_control_plane_fails_an_object_whose_source_md5_differs(cp: ControlPlane, tmp_path: Path):
    body = os.urandom(100)
    (tmp_path / "a.bin").write_bytes(body)
    job = cp.create_job(
        TransferRequest(source=str(tmp_path / "a.bin"), destination=str(tmp_path / "b"))
    )
    # pretend the source store reported an MD5 (as GCS md5Hash or Azure Content-MD5 do)
    cp.manifest.update_object(job.job_id, 0, src_checksums={"md5": md5_hex(b"other")})
    entry = _run_events(cp, job.job_id, body)
    assert entry.state == ObjectState.FAILED
    assert "md5 differs" in (entry.error or "")
