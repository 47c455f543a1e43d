"""The per-job CA, its certificates, and mutual-TLS contexts.

:class:`JobCA` is a per-job EC P-256 CA. Gateways get a
certificate whose SAN is ``DNS:<gateway_id>`` (plus the host's IP addresses
when known), usable for both TLS server and client authentication, because a
gateway is a server to its upstream and a client of its next hop. The control
plane gets a client certificate. :func:`server_context` and
:func:`client_context` build mutual-TLS contexts that trust the job CA only;
clients check the peer's name against its gateway id via ``server_hostname``.

Keys are never logged: nothing in this module formats a key into a message.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from skyhop.errors import UsageError

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
        public_key: ec.EllipticCurvePublicKey | None = None,
    ) -> IssuedCert:
        """A certificate for a new key pair, or for ``public_key`` (a key its holder
        made: the certificate comes back with no private key)."""
        key = ec.generate_private_key(ec.SECP256R1()) if public_key is None else None
        subject_key = public_key if key is None else key.public_key()
        assert subject_key is not None
        now = _now()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._cert.subject)
            .public_key(subject_key)
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
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        return IssuedCert(pem, _key_pem(key) if key is not None else "")

    def issue_gateway_cert(
        self,
        gateway_id: str,
        ips: Sequence[str] = (),
        *,
        days: int = 7,
        public_key_pem: str | None = None,
    ) -> IssuedCert:
        """A server+client certificate with SAN ``DNS:gateway_id`` (+ ``IP:`` each of
        ``ips``); for ``public_key_pem`` (a key the gateway made itself, at enrolment:
        no private key comes back), else for a new key pair."""
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
            _ec_public_key(public_key_pem) if public_key_pem is not None else None,
        )

    def issue_client_cert(self, name: str = "skyhop-control", *, days: int = 7) -> IssuedCert:
        """A client-only certificate (for the control plane calling gateways)."""
        return self._issue(name, [x509.DNSName(name)], [ExtendedKeyUsageOID.CLIENT_AUTH], days)


def _ec_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError:
        raise UsageError("not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise UsageError("a gateway's key must be an EC key")
    return key


def self_signed(common_name: str, *, days: int = 1) -> IssuedCert:
    """A self-signed EC P-256 server certificate and its key: what a gateway shows
    while it enrols, before the job CA has certified the key it made."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return IssuedCert(cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(key))


def public_key_pem(cert_pem_or_der: str | bytes) -> str:
    """The public key (PEM) of a certificate, PEM text or DER bytes."""
    if isinstance(cert_pem_or_der, bytes):
        cert = x509.load_der_x509_certificate(cert_pem_or_der)
    else:
        cert = x509.load_pem_x509_certificate(cert_pem_or_der.encode())
    return (
        cert.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def cert_fingerprint(cert_pem: str) -> str:
    """The SHA-256 fingerprint (hex) of a PEM certificate's DER encoding."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return der_fingerprint(cert.public_bytes(serialization.Encoding.DER))


def der_fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint (hex) of a DER certificate (``getpeercert(True)``)."""
    return hashlib.sha256(der).hexdigest()


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


def load_chain(ctx: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Load a PEM certificate and key into ``ctx`` (never through a lasting file)."""
    _load_chain(ctx, cert_pem, key_pem)


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
