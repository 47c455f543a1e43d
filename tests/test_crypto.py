"""Segment sealing refuses every tampering; the job CA and TLS contexts admit
only the job's certificates; tokens and key wrapping."""

from __future__ import annotations

import os
import socket
import ssl
import threading

import pytest
from cryptography import x509

from skyhop import crypto
from skyhop.crypto import (
    FLAG_LAST,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    FrameType,
    SegmentOpener,
    SegmentSealer,
    open_chunk,
    parse_header,
    seal_chunk,
)
from skyhop.errors import IntegrityError, UsageError

KEY = crypto.generate_data_key()
JOB = "j-0123456789abcdef"
DATA = os.urandom(10_000)


def _frames(
    data: bytes = DATA, chunk_id: int = 7, key: bytes = KEY, job: str = JOB, obj: str = "a/b"
) -> list[bytes]:
    return seal_chunk(key, job, obj, chunk_id, data, 4096)


def test_round_trip_in_segments() -> None:
    frames = _frames()
    assert len(frames) == 3
    assert all(
        len(f) == HEADER_SIZE + min(4096, len(DATA) - i * 4096) + 16 for i, f in enumerate(frames)
    )
    assert open_chunk(KEY, JOB, "a/b", 7, frames) == DATA
    # every frame has its own nonce
    assert len({parse_header(f[:HEADER_SIZE]).nonce for f in frames}) == 3


def test_empty_chunk_is_one_sealed_segment() -> None:
    frames = _frames(b"")
    assert len(frames) == 1 and parse_header(frames[0][:HEADER_SIZE]).last
    assert open_chunk(KEY, JOB, "a/b", 7, frames) == b""


def test_wrong_key_fails() -> None:
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_chunk(crypto.generate_data_key(), JOB, "a/b", 7, _frames())


def test_segment_swapped_from_another_chunk_fails() -> None:
    ours, theirs = _frames(chunk_id=7), _frames(chunk_id=8)
    with pytest.raises(IntegrityError, match="swapped in"):
        open_chunk(KEY, JOB, "a/b", 7, [ours[0], theirs[1], ours[2]])


def test_chunk_of_another_object_or_job_fails() -> None:
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_chunk(KEY, JOB, "a/OTHER", 7, _frames())
    with pytest.raises(IntegrityError, match="another job"):
        open_chunk(KEY, JOB, "a/b", 7, _frames(job="j-other"))


def test_replayed_segment_fails() -> None:
    f = _frames()
    with pytest.raises(IntegrityError, match="reordered, replayed or missing"):
        open_chunk(KEY, JOB, "a/b", 7, [f[0], f[0], f[1], f[2]])
    with pytest.raises(IntegrityError, match="after the last segment"):
        open_chunk(KEY, JOB, "a/b", 7, [*f, f[2]])


def test_reordered_segments_fail() -> None:
    f = _frames()
    with pytest.raises(IntegrityError, match="segment 1 where 0 was expected"):
        open_chunk(KEY, JOB, "a/b", 7, [f[1], f[0], f[2]])


def test_truncated_chunk_fails() -> None:
    f = _frames()
    with pytest.raises(IntegrityError, match="truncated after 2 segments"):
        open_chunk(KEY, JOB, "a/b", 7, f[:2])
    with pytest.raises(IntegrityError, match="truncated"):
        open_chunk(KEY, JOB, "a/b", 7, [])


def test_forged_last_flag_fails() -> None:
    """Claiming an early end (truncation by header edit) breaks authentication."""
    f = _frames()
    hdr = bytearray(f[1][:HEADER_SIZE])
    flags = int.from_bytes(hdr[6:8], "big") | FLAG_LAST
    hdr[6:8] = flags.to_bytes(2, "big")
    with pytest.raises(IntegrityError, match="failed authentication"):
        open_chunk(KEY, JOB, "a/b", 7, [f[0], bytes(hdr) + f[1][HEADER_SIZE:]])


@pytest.mark.parametrize("where", [HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 100, -1])
def test_any_flipped_bit_fails(where: int) -> None:
    f = _frames()
    frame = bytearray(f[1])
    frame[where] ^= 0x01
    with pytest.raises(IntegrityError):
        open_chunk(KEY, JOB, "a/b", 7, [f[0], bytes(frame), f[2]])


def test_header_checks() -> None:
    good = HEADER.pack(b"SKYH", 1, FrameType.DATA, 0, b"\x00" * 16, 1, 0, 100, 84, b"\x00" * 12)
    assert parse_header(good).payload_len == 100
    cases = {
        "bad frame magic": HEADER.pack(b"HTTP", 1, 2, 0, b"\x00" * 16, 1, 0, 100, 84, b"\x00" * 12),
        "unsupported wire version 9": HEADER.pack(
            b"SKYH", 9, 2, 0, b"\x00" * 16, 1, 0, 100, 84, b"\x00" * 12
        ),
        "unknown frame type": HEADER.pack(
            b"SKYH", 1, 9, 0, b"\x00" * 16, 1, 0, 100, 84, b"\x00" * 12
        ),
        "unknown frame flags": HEADER.pack(
            b"SKYH", 1, 2, 0x80, b"\x00" * 16, 1, 0, 100, 84, b"\x00" * 12
        ),
        "out of bounds": HEADER.pack(
            b"SKYH", 1, 2, 0, b"\x00" * 16, 1, 0, MAX_PAYLOAD + 1, 0, b"\x00" * 12
        ),
    }
    for message, header in cases.items():
        with pytest.raises(IntegrityError, match=message):
            parse_header(header)
    with pytest.raises(IntegrityError, match="frame header is 10 bytes"):
        parse_header(good[:10])
    with pytest.raises(IntegrityError, match="another job"):
        parse_header(good, expect_job=crypto.job_digest(JOB))


def test_sealer_refuses_frames_after_the_last_one() -> None:
    sealer = SegmentSealer(KEY, JOB, 1)
    sealer.seal(b"x", last=True)
    with pytest.raises(IntegrityError):
        sealer.seal(b"y")


def test_metadata_frame_then_keyed_frames() -> None:
    """The gateway's pattern: META sealed without the object key, then keyed frames."""
    sealer = SegmentSealer(KEY, JOB, 3)
    meta = sealer.seal(b'{"dst_key": "k"}', ftype=FrameType.META)
    sealer.object_key = "k"
    data = sealer.seal(b"payload", last=True)
    opener = SegmentOpener(KEY, JOB, 3)
    assert opener.open(parse_header(meta[:HEADER_SIZE]), meta[HEADER_SIZE:]) == b'{"dst_key": "k"}'
    opener.object_key = "k"
    out = bytearray(7)
    assert opener.open_into(parse_header(data[:HEADER_SIZE]), data[HEADER_SIZE:], out) == 7
    assert out == b"payload"
    opener.finish()


def test_bad_keys_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        SegmentSealer(b"short", JOB, 0)
    with pytest.raises(UsageError, match="not valid base64"):
        crypto.decode_key("***")
    assert crypto.decode_key(crypto.encode_key(KEY)) == KEY


def test_key_wrappers() -> None:
    wrapper = crypto.open_key_wrapper("none")
    assert isinstance(wrapper, crypto.KeyWrapper)
    assert wrapper.unwrap(wrapper.wrap(KEY)) == KEY
    with pytest.raises(UsageError, match="unknown key wrap 'rot13'"):
        crypto.open_key_wrapper("rot13")


def test_tokens() -> None:
    a, b = crypto.new_control_token(), crypto.new_control_token()
    assert a != b and len(a) >= 40
    assert crypto.token_matches(a, a)
    assert not crypto.token_matches(b, a)
    assert not crypto.token_matches(None, a)
    assert not crypto.token_matches("", a)


def test_gateway_certificate_names() -> None:
    ca = crypto.JobCA.create(JOB)
    issued = ca.issue_gateway_cert("dst-0", ["127.0.0.1", "::1"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["dst-0"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    with pytest.raises(UsageError, match="invalid IP address"):
        ca.issue_gateway_cert("dst-0", ["not-an-ip"])
    # the CA survives a round trip through PEM
    again = crypto.JobCA(ca.cert_pem, ca.key_pem)
    assert again.issue_client_cert().cert_pem.startswith("-----BEGIN CERTIFICATE-----")


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> bytes:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    result: dict[str, object] = {}

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(5))
        except (ssl.SSLError, OSError) as exc:
            result["server"] = exc
            conn.close()

    t = threading.Thread(target=serve)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=name) as tls:
                tls.sendall(b"hello")
                return tls.recv(5)
    finally:
        t.join(10)
        listener.close()


def test_mutual_tls_between_job_certificates() -> None:
    ca = crypto.JobCA.create(JOB)
    server = ca.issue_gateway_cert("dst-0")
    client = ca.issue_gateway_cert("src-0")
    sctx = crypto.server_context(ca.cert_pem, server.cert_pem, server.key_pem)
    cctx = crypto.client_context(ca.cert_pem, client.cert_pem, client.key_pem)
    assert _handshake(sctx, cctx, "dst-0") == b"hello"
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(sctx, cctx, "dst-1")  # the name must match the gateway id
    forged = crypto.JobCA.create("j-evil").issue_gateway_cert("src-0")
    evil = crypto.client_context(ca.cert_pem, forged.cert_pem, forged.key_pem)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        if _handshake(sctx, evil, "dst-0") == b"":
            raise ConnectionError("closed")
    stranger = crypto.JobCA.create("j-evil")
    trusting_other = crypto.client_context(stranger.cert_pem, client.cert_pem, client.key_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(sctx, trusting_other, "dst-0")
