"""``--encryption none``: frames travel unsealed inside TLS, with the sealed stream's
order and identity checks; neither mode's receiver accepts the other's frames."""

from __future__ import annotations

import pytest

from skyhop import crypto
from skyhop.crypto import FLAG_PLAIN, FrameType, SegmentOpener, SegmentSealer, parse_header
from skyhop.errors import IntegrityError
from skyhop.plainframes import PlainOpener, PlainSealer

JOB = "j-plain"


def _frames(chunk_id: int = 3) -> list[bytearray]:
    sealer = PlainSealer(JOB, chunk_id)
    frames = [sealer.seal(b'{"dst_key": "a/b"}', ftype=FrameType.META)]
    sealer.object_key = "a/b"
    frames.append(sealer.seal(b"first segment"))
    frames.append(sealer.seal(b"second", last=True))
    return frames


def _open(frames: list[bytearray], chunk_id: int = 3, key: str = "a/b") -> list[bytes]:
    opener = PlainOpener(JOB, chunk_id)
    out = []
    for n, frame in enumerate(frames):
        hdr = parse_header(frame[: crypto.HEADER_SIZE], expect_job=crypto.job_digest(JOB))
        out.append(opener.open(hdr, frame[crypto.HEADER_SIZE :]))
        if n == 0:
            opener.object_key = key
    opener.finish()
    return out


def test_round_trip_carries_the_bytes_in_the_clear():
    frames = _frames()
    assert _open(frames) == [b'{"dst_key": "a/b"}', b"first segment", b"second"]
    assert b"first segment" in frames[1]  # not sealed: TLS protects it in transit
    assert parse_header(frames[1][: crypto.HEADER_SIZE]).flags & FLAG_PLAIN


def test_open_into_fills_the_buffer():
    frames = _frames()
    opener = PlainOpener(JOB, 3)
    opener.open(parse_header(frames[0][: crypto.HEADER_SIZE]), frames[0][crypto.HEADER_SIZE :])
    opener.object_key = "a/b"
    out = bytearray(32)
    hdr = parse_header(frames[1][: crypto.HEADER_SIZE])
    assert opener.open_into(hdr, frames[1][crypto.HEADER_SIZE :], out) == 13
    assert bytes(out[:13]) == b"first segment"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda f: [f[0], f[2], f[1]],  # reordered
        lambda f: [f[0], f[1], f[1], f[2]],  # replayed
        lambda f: [f[0], f[1]],  # truncated
        lambda f: [f[0], _frames(chunk_id=4)[1], f[2]],  # another chunk's segment
    ],
    ids=["reordered", "replayed", "truncated", "swapped"],
)
def test_order_and_identity_still_enforced(tamper):
    with pytest.raises(IntegrityError):
        _open(tamper(_frames()))


def test_a_frame_is_bound_to_its_object_key():
    with pytest.raises(IntegrityError, match="does not belong"):
        _open(_frames(), key="other/key")


def test_neither_mode_accepts_the_other():
    private = crypto.generate_job_key()
    aead, eph = crypto.sender_chunk_key(crypto.job_public_key(private), JOB, 3)
    sealed = SegmentSealer(aead, JOB, 3).seal(b"x", prefix=eph)
    with pytest.raises(IntegrityError, match="sealed frame"):
        PlainOpener(JOB, 3).open(
            parse_header(sealed[: crypto.HEADER_SIZE]), sealed[crypto.HEADER_SIZE :]
        )
    plain = _frames()[0]
    opener = SegmentOpener(crypto.receiver_chunk_key(private, eph, JOB, 3), JOB, 3)
    with pytest.raises(IntegrityError, match="failed authentication"):
        opener.open(parse_header(plain[: crypto.HEADER_SIZE]), plain[crypto.HEADER_SIZE :])


def test_a_gateway_of_an_unsealed_job_holds_no_key():
    from gateway_vm.daemon import resolve_data_key
    from skyhop.errors import UsageError
    from skyhop.models import Encryption, GatewayConfig, GatewayRole

    base = {"job_id": JOB, "ca_cert_pem": "", "cert_pem": "", "key_pem": "", "control_token": "t"}
    for role in GatewayRole:
        cfg = GatewayConfig(gateway_id="g", role=role, encryption=Encryption.NONE, **base)
        assert resolve_data_key(cfg) is None
    public = crypto.encode_key(crypto.job_public_key(crypto.generate_job_key()))
    cfg = GatewayConfig(
        gateway_id="g",
        role=GatewayRole.SOURCE,
        encryption=Encryption.NONE,
        recipient_key_b64=public,
        **base,
    )
    with pytest.raises(UsageError, match="must not be given a key"):
        resolve_data_key(cfg)
