"""End-to-end keys: only the holder of the job's private key (a destination) opens
a chunk; the public half a source holds cannot, and nothing a relay sees helps."""

from __future__ import annotations

import pytest

from skyhop import crypto
from skyhop.crypto import FrameType, SegmentOpener, SegmentSealer, parse_header
from skyhop.errors import IntegrityError

JOB = "j-envelope"


def _seal(public: bytes, chunk_id: int = 7) -> tuple[bytearray, bytearray]:
    aead, eph = crypto.sender_chunk_key(public, JOB, chunk_id)
    sealer = SegmentSealer(aead, JOB, chunk_id)
    meta = sealer.seal(b'{"dst_key": "a/b"}', ftype=FrameType.META, prefix=eph)
    sealer.object_key = "a/b"
    data = sealer.seal(b"payload bytes", last=True)
    return meta, data


def _open(private: bytes, meta: bytearray, data: bytearray, chunk_id: int = 7) -> bytes:
    hdr = parse_header(meta[: crypto.HEADER_SIZE])
    payload = meta[crypto.HEADER_SIZE :]
    aead = crypto.receiver_chunk_key(
        private, bytes(payload[: crypto.EPHEMERAL_BYTES]), JOB, chunk_id
    )
    opener = SegmentOpener(aead, JOB, chunk_id)
    assert opener.open(hdr, payload, prefix_len=crypto.EPHEMERAL_BYTES) == b'{"dst_key": "a/b"}'
    opener.object_key = "a/b"
    out = opener.open(parse_header(data[: crypto.HEADER_SIZE]), data[crypto.HEADER_SIZE :])
    opener.finish()
    return out


def test_destination_opens_what_a_source_sealed_with_the_public_key():
    private = crypto.generate_job_key()
    meta, data = _seal(crypto.job_public_key(private))
    assert _open(private, meta, data) == b"payload bytes"


def test_every_chunk_gets_its_own_key():
    public = crypto.job_public_key(crypto.generate_job_key())
    (a, eph_a), (b, eph_b) = (crypto.sender_chunk_key(public, JOB, 1) for _ in range(2))
    assert eph_a != eph_b
    sealed = SegmentSealer(a, JOB, 1).seal(b"x")
    with pytest.raises(IntegrityError):
        SegmentOpener(b, JOB, 1).open(
            parse_header(sealed[: crypto.HEADER_SIZE]), sealed[crypto.HEADER_SIZE :]
        )


def test_another_private_key_cannot_open():
    meta, data = _seal(crypto.job_public_key(crypto.generate_job_key()))
    with pytest.raises(IntegrityError, match="failed authentication"):
        _open(crypto.generate_job_key(), meta, data)


def test_the_public_key_is_no_key_to_open():
    private = crypto.generate_job_key()
    public = crypto.job_public_key(private)
    meta, data = _seal(public)
    with pytest.raises(IntegrityError):
        _open(public, meta, data)  # using the public half as if it were the private one


def test_tampered_ephemeral_key_fails():
    private = crypto.generate_job_key()
    meta, data = _seal(crypto.job_public_key(private))
    meta[crypto.HEADER_SIZE] ^= 0x01
    with pytest.raises(IntegrityError):
        _open(private, meta, data)


def test_chunk_key_is_bound_to_its_chunk():
    private = crypto.generate_job_key()
    meta, data = _seal(crypto.job_public_key(private), chunk_id=7)
    with pytest.raises(IntegrityError):
        _open(private, meta, data, chunk_id=8)


def test_role_key_fields():
    private = crypto.generate_job_key()
    assert set(crypto.role_key_fields("destination", private)) == {"data_key_b64"}
    source = crypto.role_key_fields("source", private)
    assert set(source) == {"recipient_key_b64"}
    assert crypto.decode_key(source["recipient_key_b64"]) == crypto.job_public_key(private)
    assert crypto.role_key_fields("relay", private) == {}
