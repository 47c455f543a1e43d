"""Job keys, per-chunk keys, data-key wrapping and control tokens.

A job's data key is an X25519 key pair whose private half reaches destination
gateways only; each chunk is sealed with a key derived for it (below). A
:class:`KeyWrapper` carries a key to a gateway (``none`` for local processes,
``kms`` in AWS, :mod:`skyhop.crypto.kms`); a new wrapper registers with
:func:`register_key_wrapper`. Control tokens authenticate calls to a gateway's
control API.

Keys are never logged: nothing in this module formats a key into a message.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from skyhop.crypto.sealing import _check_key, job_digest
from skyhop.errors import IntegrityError, UsageError
from skyhop.registry import resolve

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
    "none": "skyhop.crypto.keys:LocalKeyWrapper",
    "kms": "skyhop.crypto.kms:KMSKeyWrapper",
}


def register_key_wrapper(kind: str, target: str) -> None:
    """Register ``module:Class`` (constructed as ``Class(key_id)``) for ``kind``."""
    _WRAPPERS[kind] = target


def open_key_wrapper(kind: str, key_id: str | None = None) -> KeyWrapper:
    """The key wrapper called ``kind`` (``none``, ``kms``)."""
    target = _WRAPPERS.get(kind)
    if target is None:
        raise UsageError(f"unknown key wrap {kind!r}: use one of {', '.join(_WRAPPERS)}")
    wrapper: KeyWrapper = resolve(target, f"key wrap {kind!r}")(key_id)
    return wrapper


def encode_key(key: bytes) -> str:
    """A data key as base64 text (for ``GatewayConfig.data_key_b64``)."""
    return base64.b64encode(_check_key(key)).decode()


def decode_key(text: str) -> bytes:
    """The inverse of :func:`encode_key`."""
    return LocalKeyWrapper().unwrap(text)


# ---------------------------------------------------------------- sealing to a public key
#
# A queue-controlled gateway's secrets travel on its control queue sealed to the
# X25519 key it made at boot: an ephemeral key pair per message, HKDF-SHA256 over
# the ECDH secret (salted with both public keys, bound to ``context``), AES-256-GCM
# with ``context`` as associated data.


def _sealing_key(secret: bytes, eph: bytes, recipient: bytes, context: bytes) -> AESGCM:
    info = b"skyhop sealed to a key v1\x00" + context
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=eph + recipient, info=info).derive(secret)
    return AESGCM(key)


def seal_to(recipient: bytes, plaintext: bytes, context: bytes) -> tuple[bytes, bytes, bytes]:
    """``plaintext`` sealed for the holder of the X25519 private half of
    ``recipient``: (ephemeral public key, nonce, ciphertext)."""
    try:
        peer = X25519PublicKey.from_public_bytes(recipient)
    except ValueError:
        raise IntegrityError("the key to seal to is not an X25519 public key") from None
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    secret = eph.exchange(peer)
    nonce = secrets.token_bytes(12)
    sealed = _sealing_key(secret, eph_pub, recipient, context).encrypt(nonce, plaintext, context)
    return eph_pub, nonce, sealed


def open_sealed(
    private: bytes, eph_pub: bytes, nonce: bytes, sealed: bytes, context: bytes
) -> bytes:
    """Open what :func:`seal_to` sealed to ``private``'s public half (IntegrityError
    when it was sealed to another key, for another context, or changed)."""
    priv = X25519PrivateKey.from_private_bytes(_check_key(private))
    recipient = priv.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    try:
        secret = priv.exchange(X25519PublicKey.from_public_bytes(eph_pub))
        return _sealing_key(secret, eph_pub, recipient, context).decrypt(nonce, sealed, context)
    except (ValueError, InvalidTag):
        raise IntegrityError("a sealed message does not open with this key") from None


# ---------------------------------------------------------------- control tokens


def new_control_token() -> str:
    """A bearer token for one gateway's control API."""
    return secrets.token_urlsafe(32)


def gateway_token(master: str, gateway_id: str) -> str:
    """The control token of one gateway, derived from the job's ``master`` token
    (HMAC-SHA256 over the gateway id): each gateway holds its own and no other's,
    and the control plane keeps only the master."""
    if not master:
        raise UsageError("no master control token to derive a gateway's token from")
    mac = hmac.new(master.encode(), b"skyhop gateway token\x00" + gateway_id.encode(), "sha256")
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def gateway_event_key(master: str, gateway_id: str) -> bytes:
    """The key one gateway signs its events with (HMAC-SHA256), derived from the
    job's ``master`` token: no other gateway holds it, the control plane derives it."""
    if not master:
        raise UsageError("no master control token to derive a gateway's event key from")
    return hmac.new(
        master.encode(), b"skyhop event key\x00" + gateway_id.encode(), "sha256"
    ).digest()


def event_mac(key: bytes, body: str) -> str:
    """The MAC (hex HMAC-SHA256) of an event's canonical JSON ``body``."""
    return hmac.new(key, body.encode(), "sha256").hexdigest()


def event_mac_matches(key: bytes, body: str, mac: str | None) -> bool:
    """Constant-time check of an event's MAC."""
    return bool(mac) and hmac.compare_digest(event_mac(key, body).encode(), (mac or "").encode())


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented token with the expected one."""
    if not given:
        return False
    return secrets.compare_digest(given.encode(), expected.encode())
