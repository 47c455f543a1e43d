"""AES-256-GCM segment sealing, the per-job CA and its certificates, TLS contexts,
control tokens and data-key wrapping.

Sealing. A chunk travels as a sequence of frames. Each frame is a fixed-size,
versioned, big-endian :class:`FrameHeader` followed by an AES-256-GCM
ciphertext (tag included). Every frame has a fresh random 96-bit nonce; its
associated data is the packed header itself (magic, version, frame type,
flags including the last-segment flag, a digest of the job id, chunk id,
segment index, lengths, nonce) followed by the job id and the object key. A
:class:`SegmentOpener` insists on consecutive indices from 0 and on a final
frame carrying ``FLAG_LAST``, so a frame swapped in from another chunk, job or
object, a replayed or reordered frame, and a truncated chunk all fail with
:class:`~skyhop.errors.IntegrityError`. (With random nonces a key is good for
2**32 frames, i.e. 16 PiB of 4 MiB segments per job.)

Certificates. :class:`JobCA` is a per-job EC P-256 CA. Gateways get a
certificate whose SAN is ``DNS:<gateway_id>`` (plus the host's IP addresses
when known), usable for both TLS server and client authentication, because a
gateway is a server to its upstream and a client of its next hop. The control
plane gets a client certificate. :func:`server_context` and
:func:`client_context` build mutual-TLS contexts that trust the job CA only;
clients check the peer's name against its gateway id via ``server_hostname``.

Keys are never logged: nothing in this module formats a key into a message.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import importlib
import ipaddress
import os
import secrets
import ssl
import struct
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol, runtime_checkable

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skyhop.errors import IntegrityError, UsageError

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

# ---------------------------------------------------------------- frame header

MAGIC = b"SKYH"
WIRE_VERSION = 1
#: magic, version, frame type, flags, job digest, chunk id, segment index,
#: payload length (ciphertext + tag), plain length (after opening and
#: decompression), nonce.
HEADER = struct.Struct(">4sBBH16sQIII12s")
HEADER_SIZE = HEADER.size  # 56 bytes

#: Caps a receiver enforces before allocating anything a peer claims.
MAX_SEGMENT = 64 * 1024 * 1024
MAX_PAYLOAD = MAX_SEGMENT + 1024 + TAG_BYTES

FLAG_LAST = 0x1
FLAG_ZSTD = 0x2
_KNOWN_FLAGS = FLAG_LAST | FLAG_ZSTD


class FrameType(IntEnum):
    META = 1  # sealed chunk metadata (destination key, sizes, upload id, ...)
    DATA = 2  # a sealed segment of the chunk's bytes
    END = 3  # sealed trailer (checksum, segment count); carries FLAG_LAST


class FrameHeader(NamedTuple):
    ftype: int
    flags: int
    job_digest: bytes
    chunk_id: int
    index: int
    payload_len: int
    plain_len: int
    nonce: bytes

    @property
    def last(self) -> bool:
        return bool(self.flags & FLAG_LAST)

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, WIRE_VERSION, *self)


def job_digest(job_id: str) -> bytes:
    """The 16-byte digest of a job id carried in every frame header."""
    return hashlib.blake2b(job_id.encode(), digest_size=16).digest()


def parse_header(
    data: bytes | bytearray | memoryview,
    *,
    expect_job: bytes | None = None,
    max_payload: int = MAX_PAYLOAD,
) -> FrameHeader:
    """Unpack and check a frame header: magic, version, type, flags and length caps
    (and the job digest when ``expect_job`` is given). Raises IntegrityError."""
    if len(data) != HEADER_SIZE:
        raise IntegrityError(f"frame header is {len(data)} bytes, expected {HEADER_SIZE}")
    magic, version, ftype, flags, digest, chunk_id, index, payload_len, plain_len, nonce = (
        HEADER.unpack(data)
    )
    if magic != MAGIC:
        raise IntegrityError("bad frame magic: not a skyhop stream")
    if version != WIRE_VERSION:
        raise IntegrityError(
            f"unsupported wire version {version} (this gateway speaks {WIRE_VERSION})"
        )
    if ftype not in (FrameType.META, FrameType.DATA, FrameType.END):
        raise IntegrityError(f"unknown frame type {ftype}")
    if flags & ~_KNOWN_FLAGS:
        raise IntegrityError(f"unknown frame flags {flags:#x}")
    if expect_job is not None and digest != expect_job:
        raise IntegrityError(f"frame of another job (chunk {chunk_id})")
    if payload_len < TAG_BYTES or payload_len > max_payload:
        raise IntegrityError(f"frame payload of {payload_len} bytes is out of bounds")
    if plain_len > MAX_SEGMENT:
        raise IntegrityError(f"frame plain length of {plain_len} bytes is out of bounds")
    return FrameHeader(ftype, flags, digest, chunk_id, index, payload_len, plain_len, nonce)


# ---------------------------------------------------------------- sealing


def generate_data_key() -> bytes:
    """A fresh 256-bit data key for one job."""
    return AESGCM.generate_key(bit_length=256)


# ---------------------------------------------------------------- per-chunk keys
#
# End to end, only destinations can open: the job's key is an X25519 key pair
# whose private half reaches destination gateways only (wrapped, in the cloud).
# A source knows the public half; for every chunk it makes an ephemeral key
# pair, derives the chunk's AES-256-GCM key from the ECDH secret with HKDF
# (bound to the job, the chunk id and both public keys) and sends the ephemeral
# public key in the clear ahead of the sealed META frame. A changed ephemeral
# key derives another key, so the META frame fails to open. Relays hold nothing.

EPHEMERAL_BYTES = 32


def generate_job_key() -> bytes:
    """The private half of a job's key pair (32 raw bytes, X25519)."""
    return X25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def job_public_key(private: bytes) -> bytes:
    """The public half (32 raw bytes) of a job key from :func:`generate_job_key`."""
    return (
        X25519PrivateKey.from_private_bytes(_check_key(private))
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )


def role_key_fields(role: str, private: bytes) -> dict[str, str]:
    """The clear key fields of a gateway configuration for ``role``: the private key
    for a destination, the public key for a source, nothing for a relay."""
    if role == "destination":
        return {"data_key_b64": encode_key(private)}
    if role == "source":
        return {"recipient_key_b64": encode_key(job_public_key(private))}
    return {}


def _chunk_key(secret: bytes, eph: bytes, recipient: bytes, job_id: str, chunk_id: int) -> AESGCM:
    info = b"skyhop chunk key v1" + job_digest(job_id) + chunk_id.to_bytes(8, "big")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + recipient, info=info).derive(secret)
    return AESGCM(key)


def sender_chunk_key(recipient: bytes, job_id: str, chunk_id: int) -> tuple[AESGCM, bytes]:
    """A fresh chunk key for the holder of ``recipient``'s private half, and the
    ephemeral public key to send ahead of the chunk's META frame."""
    if len(recipient) != 32:
        raise IntegrityError("the job's public key must be 32 bytes")
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    secret = eph.exchange(X25519PublicKey.from_public_bytes(recipient))
    return _chunk_key(secret, eph_pub, recipient, job_id, chunk_id), eph_pub


def receiver_chunk_key(private: bytes, eph_pub: bytes, job_id: str, chunk_id: int) -> AESGCM:
    """The chunk key on the destination, from the job's private key and the sender's
    ephemeral public key."""
    if len(eph_pub) != EPHEMERAL_BYTES:
        raise IntegrityError(f"chunk {chunk_id}: ephemeral key of {len(eph_pub)} bytes")
    priv = X25519PrivateKey.from_private_bytes(_check_key(private))
    recipient = priv.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    try:
        secret = priv.exchange(X25519PublicKey.from_public_bytes(bytes(eph_pub)))
    except ValueError:
        raise IntegrityError(f"chunk {chunk_id}: invalid ephemeral key") from None
    return _chunk_key(secret, bytes(eph_pub), recipient, job_id, chunk_id)


def _aad(header: bytes | bytearray | memoryview, job: bytes, object_key: bytes) -> bytes:
    return bytes(header) + job + b"\x00" + object_key


class SegmentSealer:
    """Seals the frames of one chunk in order (index 0, 1, 2, ...).

    ``object_key`` is bound into the associated data of every frame sealed
    while it is set; the gateway seals its META frame (which carries the key)
    with ``object_key=""`` and sets the key for the frames after it.
    """

    def __init__(
        self, key: bytes | AESGCM, job_id: str, chunk_id: int, object_key: str = ""
    ) -> None:
        self._aead = key if isinstance(key, AESGCM) else AESGCM(_check_key(key))
        self._job = job_id.encode()
        self._digest = job_digest(job_id)
        self.chunk_id = chunk_id
        self.object_key = object_key
        self.index = 0
        self._closed = False

    def header(
        self,
        length: int,
        *,
        ftype: int = FrameType.DATA,
        flags: int = 0,
        plain_len: int | None = None,
    ) -> FrameHeader:
        """The header the next frame of ``length`` plaintext bytes will carry."""
        return FrameHeader(
            int(ftype),
            flags,
            self._digest,
            self.chunk_id,
            self.index,
            length + TAG_BYTES,
            length if plain_len is None else plain_len,
            os.urandom(NONCE_BYTES),
        )

    def seal_into(
        self,
        data: bytes | bytearray | memoryview,
        out: bytearray | memoryview,
        *,
        ftype: int = FrameType.DATA,
        last: bool = False,
        flags: int = 0,
        plain_len: int | None = None,
        prefix: bytes = b"",
    ) -> int:
        """Write header + ``prefix`` + ciphertext of the next frame into ``out``; returns
        its length. ``prefix`` travels in the clear ahead of the ciphertext (the META
        frame's ephemeral public key) and is counted in the header's payload length."""
        if self._closed:
            raise IntegrityError(f"chunk {self.chunk_id}: frame sealed after the last one")
        hdr = self.header(
            len(data) + len(prefix),
            ftype=ftype,
            flags=flags | (FLAG_LAST if last else 0),
            plain_len=len(data) if plain_len is None else plain_len,
        )
        packed = hdr.pack()
        total = HEADER_SIZE + hdr.payload_len
        view = memoryview(out)
        view[:HEADER_SIZE] = packed
        start = HEADER_SIZE + len(prefix)
        view[HEADER_SIZE:start] = prefix
        self._aead.encrypt_into(
            hdr.nonce,
            data,
            _aad(packed, self._job, self.object_key.encode()),
            view[start:total],
        )
        self.index += 1
        self._closed = last
        return total

    def seal(
        self,
        data: bytes | bytearray | memoryview,
        *,
        ftype: int = FrameType.DATA,
        last: bool = False,
        flags: int = 0,
        plain_len: int | None = None,
        prefix: bytes = b"",
    ) -> bytearray:
        """The next frame (header + prefix + ciphertext) as a new buffer."""
        out = bytearray(HEADER_SIZE + len(prefix) + len(data) + TAG_BYTES)
        self.seal_into(
            data, out, ftype=ftype, last=last, flags=flags, plain_len=plain_len, prefix=prefix
        )
        return out


class SegmentOpener:
    """Opens the frames of one chunk, enforcing order and completeness."""

    def __init__(
        self, key: bytes | AESGCM, job_id: str, chunk_id: int, object_key: str = ""
    ) -> None:
        self._aead = key if isinstance(key, AESGCM) else AESGCM(_check_key(key))
        self._job = job_id.encode()
        self.digest = job_digest(job_id)
        self.chunk_id = chunk_id
        self.object_key = object_key
        self.index = 0
        self.done = False

    def _check(self, header: FrameHeader, payload_len: int) -> None:
        if self.done:
            raise IntegrityError(f"chunk {self.chunk_id}: frame after the last segment")
        if header.job_digest != self.digest:
            raise IntegrityError(f"chunk {self.chunk_id}: frame of another job")
        if header.chunk_id != self.chunk_id:
            raise IntegrityError(
                f"chunk {self.chunk_id}: frame of chunk {header.chunk_id} swapped in"
            )
        if header.index != self.index:
            raise IntegrityError(
                f"chunk {self.chunk_id}: segment {header.index} where {self.index} was expected "
                "(reordered, replayed or missing)"
            )
        if payload_len != header.payload_len:
            raise IntegrityError(f"chunk {self.chunk_id}: segment {header.index} length mismatch")

    def open_into(
        self,
        header: FrameHeader,
        payload: bytes | bytearray | memoryview,
        out: bytearray | memoryview,
    ) -> int:
        """Authenticate and decrypt one frame's payload into ``out``; returns its length."""
        self._check(header, len(payload))
        n = header.payload_len - TAG_BYTES
        try:
            self._aead.decrypt_into(
                header.nonce,
                payload,
                _aad(header.pack(), self._job, self.object_key.encode()),
                memoryview(out)[:n],
            )
        except InvalidTag:
            raise IntegrityError(
                f"chunk {self.chunk_id}: segment {header.index} failed authentication"
            ) from None
        self.index += 1
        self.done = header.last
        return n

    def open(
        self, header: FrameHeader, payload: bytes | bytearray | memoryview, prefix_len: int = 0
    ) -> bytes:
        """Authenticate and decrypt one frame's payload (after ``prefix_len`` clear bytes)."""
        self._check(header, len(payload))
        if len(payload) < prefix_len + TAG_BYTES:
            raise IntegrityError(f"chunk {self.chunk_id}: frame too short for its prefix")
        try:
            plain = self._aead.decrypt(
                header.nonce,
                bytes(payload[prefix_len:]),
                _aad(header.pack(), self._job, self.object_key.encode()),
            )
        except InvalidTag:
            raise IntegrityError(
                f"chunk {self.chunk_id}: segment {header.index} failed authentication"
            ) from None
        self.index += 1
        self.done = header.last
        return plain

    def finish(self) -> None:
        """Raise IntegrityError unless the last segment was opened (truncation)."""
        if not self.done:
            raise IntegrityError(
                f"chunk {self.chunk_id}: truncated after {self.index} segments (no last segment)"
            )


def seal_chunk(
    key: bytes,
    job_id: str,
    object_key: str,
    chunk_id: int,
    data: bytes,
    segment_size: int,
) -> list[bytes]:
    """Seal ``data`` as DATA frames of ``segment_size`` bytes, the last one flagged."""
    if segment_size <= 0 or segment_size > MAX_SEGMENT:
        raise UsageError(f"segment size {segment_size} is out of bounds (1..{MAX_SEGMENT})")
    sealer = SegmentSealer(key, job_id, chunk_id, object_key)
    view = memoryview(data)
    starts = list(range(0, len(data), segment_size)) or [0]
    return [
        bytes(sealer.seal(view[s : s + segment_size], last=(i == len(starts) - 1)))
        for i, s in enumerate(starts)
    ]


def open_chunk(
    key: bytes, job_id: str, object_key: str, chunk_id: int, frames: Iterable[bytes]
) -> bytes:
    """Open frames made by :func:`seal_chunk`; IntegrityError on any tampering."""
    opener = SegmentOpener(key, job_id, chunk_id, object_key)
    parts: list[bytes] = []
    for frame in frames:
        header = parse_header(frame[:HEADER_SIZE], expect_job=opener.digest)
        if header.ftype != FrameType.DATA:
            raise IntegrityError(f"chunk {chunk_id}: unexpected frame type {header.ftype}")
        parts.append(opener.open(header, frame[HEADER_SIZE:]))
    opener.finish()
    return b"".join(parts)


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
        raise UsageError(f"a data key is {KEY_BYTES} bytes")
    return bytes(key)


# ---------------------------------------------------------------- key wrapping


@runtime_checkable
class KeyWrapper(Protocol):
    """Wraps a data key for transport to a gateway (KMS or an equivalent)."""

    def wrap(self, key: bytes) -> str: ...

    def unwrap(self, wrapped: str) -> bytes: ...


class LocalKeyWrapper:
    """The no-op wrapper for local processes: base64, no protection beyond the
    0600 config file it travels in."""

    def __init__(self, key_id: str | None = None) -> None:
        self.key_id = key_id

    def wrap(self, key: bytes) -> str:
        return base64.b64encode(_check_key(key)).decode()

    def unwrap(self, wrapped: str) -> bytes:
        try:
            key = base64.b64decode(wrapped, validate=True)
        except ValueError:
            raise UsageError("wrapped data key is not valid base64") from None
        return _check_key(key)


_WRAPPERS: dict[str, str] = {
    "none": "skyhop.crypto:LocalKeyWrapper",
    "kms": "skyhop.compute.ec2:KMSKeyWrapper",
}


def register_key_wrapper(kind: str, target: str) -> None:
    """Register ``module:Class`` (constructed as ``Class(key_id)``) for ``kind``."""
    _WRAPPERS[kind] = target


def open_key_wrapper(kind: str, key_id: str | None = None) -> KeyWrapper:
    """The key wrapper called ``kind`` (``none``, ``kms``)."""
    target = _WRAPPERS.get(kind)
    if target is None:
        raise UsageError(f"unknown key wrap {kind!r}: use one of {', '.join(_WRAPPERS)}")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"key wrap {kind!r} is not available ({exc.name})") from None
    return getattr(module, cls_name)(key_id)


def encode_key(key: bytes) -> str:
    """A data key as base64 text (for ``GatewayConfig.data_key_b64``)."""
    return base64.b64encode(_check_key(key)).decode()


def decode_key(text: str) -> bytes:
    """The inverse of :func:`encode_key`."""
    return LocalKeyWrapper().unwrap(text)


# ---------------------------------------------------------------- control tokens


def new_control_token() -> str:
    """A bearer token for one gateway's control API."""
    return secrets.token_urlsafe(32)


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    if not given:
        return False
    return secrets.compare_digest(given.encode(), expected.encode())


# ---------------------------------------------------------------- job CA


@dataclass(frozen=True)
class IssuedCert:
    """A certificate and its private key, both PEM."""

    cert_pem: str
    key_pem: str


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


class JobCA:
    """A per-job certificate authority (EC P-256)."""

    def __init__(self, cert_pem: str, key_pem: str) -> None:
        self.cert_pem = cert_pem
        self.key_pem = key_pem
        self._cert = x509.load_pem_x509_certificate(cert_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UsageError("job CA key is not an EC key")
        self._key = key

    @classmethod
    def create(cls, job_id: str, *, days: int = 7) -> JobCA:
        """A new CA for ``job_id``, valid for ``days``."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"skyhop job {job_id} CA")])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))

    def _issue(
        self,
        common_name: str,
        sans: list[x509.GeneralName],
        usages: list[x509.ObjectIdentifier],
        days: int,
    ) -> IssuedCert:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))

    def issue_gateway_cert(
        self, gateway_id: str, ips: Sequence[str] = (), *, days: int = 7
    ) -> IssuedCert:
        """A server+client certificate with SAN ``DNS:gateway_id`` (+ ``IP:`` each of ``ips``)."""
        if not gateway_id or any(c.isspace() for c in gateway_id):
            raise UsageError(f"invalid gateway id {gateway_id!r} for a certificate")
        sans: list[x509.GeneralName] = [x509.DNSName(gateway_id)]
        for ip in ips:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(ip)))
            except ValueError:
                raise UsageError(f"invalid IP address {ip!r} for gateway {gateway_id}") from None
        return self._issue(
            gateway_id,
            sans,
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
            days,
        )

    def issue_client_cert(self, name: str = "skyhop-control", *, days: int = 7) -> IssuedCert:
        """A client-only certificate (for the control plane calling gateways)."""
        return self._issue(name, [x509.DNSName(name)], [ExtendedKeyUsageOID.CLIENT_AUTH], days)


# ---------------------------------------------------------------- TLS contexts


def _load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load a PEM chain without writing it to a lasting file: a memfd on Linux,
    else a private temporary directory removed at once."""
    blob = (cert_pem.rstrip() + "\n" + key_pem.rstrip() + "\n").encode()
    if hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd"):
        fd = os.memfd_create("skyhop-cert", os.MFD_CLOEXEC)
        try:
            os.write(fd, blob)
            ctx.load_cert_chain(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return
    with tempfile.TemporaryDirectory(prefix="skyhop-tls-") as tmp:  # pragma: no cover
        path = os.path.join(tmp, "chain.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        ctx.load_cert_chain(path)


def server_context(ca_cert_pem: str, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A TLS 1.3 server context requiring a client certificate from the job CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    # No session tickets: nothing resumes sessions, and unsolicited post-handshake
    # bytes left unread by a client that only sends make its close() a TCP reset,
    # which can destroy the tail of what it sent.
    ctx.num_tickets = 0
    ctx.load_verify_locations(cadata=ca_cert_pem)
    _load_chain(ctx, cert_pem, key_pem)
    return ctx


def client_context(ca_cert_pem: str, cert_pem: str, key_pem: str) -> ssl.SSLContext:
    """A TLS 1.3 client context that trusts the job CA only and presents a client
    certificate; pass the peer's gateway id as ``server_hostname``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cadata=ca_cert_pem)
    _load_chain(ctx, cert_pem, key_pem)
    return ctx
