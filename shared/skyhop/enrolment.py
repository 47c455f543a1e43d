"""The control plane's side of a cloud gateway's enrolment (see :mod:`gateway_vm.enrol`).

:func:`boot_config` is what goes into a VM's user data or metadata: the gateway's
configuration without its private key, certificate, tokens, data key or storage
credentials, plus a one-time enrolment token; the control plane keeps only the
token's SHA-256. A destination's KMS-wrapped data key (``wrapped_data_key``) stays
in it: ciphertext that only the destination role's KMS grant opens, and what the
provider grants that role from; a clear data key never does. :func:`enrol` then connects to the booted gateway's control port
with the control plane's own client certificate, checks the token the gateway
presents against that hash and that the key it presents is the one its TLS
certificate holds, certifies that key with the job CA, and sends the secrets,
all over that mutual TLS. Nothing secret is ever at rest in the VM's metadata.

Queue-controlled gateways (launched by the cloud functions, which cannot connect
to a gateway) enrol over their queues instead (:func:`queued_boot`,
:func:`seal_secrets`): the same boot configuration; the gateway posts a
:class:`~skyhop.models.GatewayEnrol` event (its token, the public half of the TLS
key it made, an X25519 public key) to the events queue; the control plane checks
the token against the hash in the gateway's :class:`~skyhop.models.PendingEnrolment`
before anything else, spends it with a conditional write on the job, certifies
the TLS key with the job CA and sends the secrets sealed to the X25519 key
(:class:`~skyhop.models.EnrolledMessage`) on that gateway's own control queue.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import socket
import ssl
import time
from typing import Any

from skyhop import crypto
from skyhop.errors import GatewayError, IntegrityError, SkyhopError
from skyhop.models import (
    EnrolledMessage,
    EnrolSecrets,
    GatewayConfig,
    GatewayEnrol,
    GatewaySpec,
    JobRuntime,
    PendingEnrolment,
)

#: the fields a boot configuration goes without (they come at enrolment)
SECRET_FIELDS = (
    "key_pem",
    "cert_pem",
    "control_token",
    "event_key_b64",
    "data_key_b64",
    "store_access",
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def boot_config(cfg: GatewayConfig) -> tuple[GatewayConfig, str]:
    """The boot configuration of ``cfg`` (no secret in it) and the hash of its
    one-time enrolment token, which is all the control plane keeps of it."""
    token = secrets.token_urlsafe(32)
    boot = cfg.model_copy(
        update={
            "key_pem": "",
            "cert_pem": "",
            "control_token": "",
            "event_key_b64": None,
            "data_key_b64": None,
            "store_access": None,
            "enrol_token": token,
        }
    )
    return boot, token_hash(token)


def secrets_of(cfg: GatewayConfig, cert_pem: str) -> EnrolSecrets:
    """What an enrolling gateway is sent: ``cfg``'s secrets, with its certificate."""
    return EnrolSecrets(
        gateway_id=cfg.gateway_id,
        cert_pem=cert_pem,
        control_token=cfg.control_token,
        event_key_b64=cfg.event_key_b64,
        data_key_b64=cfg.data_key_b64,
        store_access=cfg.store_access,
    )


def token_matches(token: str, token_sha256: str) -> bool:
    """Constant-time check of a presented token against the hash kept of it."""
    return secrets.compare_digest(token_hash(token).encode(), token_sha256.encode())


def queued_boot(cfg: GatewayConfig) -> tuple[GatewayConfig, PendingEnrolment]:
    """A queue-controlled gateway's boot configuration, and what the control plane
    keeps until it enrols: the token's hash and the secrets its master token does
    not derive (a clear data key, storage credentials)."""
    boot, token_sha256 = boot_config(cfg)
    return boot, PendingEnrolment(
        token_sha256=token_sha256, data_key_b64=cfg.data_key_b64, store_access=cfg.store_access
    )


def seal_context(job_id: str, gateway_id: str, seal_key: bytes) -> bytes:
    """What a sealed enrolment is bound to: its job, its gateway and the key it is for."""
    return b"\x00".join([b"skyhop enrolled v1", job_id.encode(), gateway_id.encode(), seal_key])


def seal_key_of(event: GatewayEnrol) -> bytes:
    """The X25519 public key an enrolling gateway posted (GatewayError if not one)."""
    try:
        key = base64.b64decode(event.seal_key_b64, validate=True)
    except ValueError:
        raise GatewayError("its sealing key is not base64") from None
    if len(key) != 32:
        raise GatewayError(f"its sealing key has {len(key)} bytes, not 32")
    return key


def seal_secrets(
    runtime: JobRuntime, spec: GatewaySpec, pending: PendingEnrolment, event: GatewayEnrol
) -> EnrolledMessage:
    """Certify the TLS key ``event`` offers with the job CA and seal the gateway's
    secrets to its X25519 key. GatewayError when its keys are not keys, or the
    runtime holds no CA key or master token to do it with."""
    if not runtime.ca_key_pem or not runtime.control_token:
        raise GatewayError("the job holds no CA key or master token any more")
    seal_key = seal_key_of(event)
    ca = crypto.JobCA(runtime.ca_cert_pem, runtime.ca_key_pem)
    try:
        issued = ca.issue_gateway_cert(spec.gateway_id, public_key_pem=event.tls_public_key_pem)
    except SkyhopError as exc:
        raise GatewayError(f"its TLS key: {exc}") from None
    given = EnrolSecrets(
        gateway_id=spec.gateway_id,
        cert_pem=issued.cert_pem,
        control_token=crypto.gateway_token(runtime.control_token, spec.gateway_id),
        event_key_b64=base64.b64encode(
            crypto.gateway_event_key(runtime.control_token, spec.gateway_id)
        ).decode(),
        data_key_b64=pending.data_key_b64,
        store_access=pending.store_access,
    )
    eph, nonce, sealed = crypto.seal_to(
        seal_key,
        given.model_dump_json().encode(),
        seal_context(spec.job_id, spec.gateway_id, seal_key),
    )
    return EnrolledMessage(
        gateway_id=spec.gateway_id,
        ephemeral_key_b64=base64.b64encode(eph).decode(),
        nonce_b64=base64.b64encode(nonce).decode(),
        sealed_b64=base64.b64encode(sealed).decode(),
    )


def open_secrets(
    message: EnrolledMessage, job_id: str, gateway_id: str, seal_private: bytes
) -> EnrolSecrets:
    """The secrets in ``message``, opened with the gateway's X25519 private key
    (IntegrityError when it was not sealed to it, or was changed)."""
    seal_key = crypto.job_public_key(seal_private)
    try:
        eph = base64.b64decode(message.ephemeral_key_b64, validate=True)
        nonce = base64.b64decode(message.nonce_b64, validate=True)
        sealed = base64.b64decode(message.sealed_b64, validate=True)
    except ValueError:
        raise IntegrityError("an enrolled message is not base64") from None
    plain = crypto.open_sealed(
        seal_private, eph, nonce, sealed, seal_context(job_id, gateway_id, seal_key)
    )
    return EnrolSecrets.model_validate_json(plain)


class _Enrolment:
    """Calls one enrolling gateway, over mutual TLS with the control plane's client
    certificate; the gateway's certificate is self-signed (its key is not yet
    certified), so it is pinned on first sight instead."""

    def __init__(self, spec: GatewaySpec, client: crypto.IssuedCert, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # checked below: the key the token vouches for
        crypto.load_chain(ctx, client.cert_pem, client.key_pem)
        self.ctx = ctx
        self.server_der: bytes | None = None

    def call(self, method: str, body: str | None = None) -> Any:
        where = f"gateway {self.spec.gateway_id} at {self.spec.host}:{self.spec.control_port}"
        raw = socket.create_connection((self.spec.host, self.spec.control_port), self.timeout)
        with raw, self.ctx.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
            if der is None or (self.server_der is not None and der != self.server_der):
                raise GatewayError(f"{where} changed its certificate while enrolling")
            self.server_der = der
            conn = http.client.HTTPConnection(self.spec.host, self.spec.control_port)
            conn.sock = tls
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, "/v1/enrol", body=body.encode() if body else None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        try:
            payload = json.loads(data) if data else {}
        except ValueError:
            raise GatewayError(f"{where} sent a non-JSON answer while enrolling") from None
        if resp.status != 200:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise GatewayError(f"{where} refused enrolment ({resp.status}): {message}")
        return payload


def enrol(
    spec: GatewaySpec,
    cfg: GatewayConfig,
    token_sha256: str,
    ca: crypto.JobCA,
    client: crypto.IssuedCert,
    *,
    timeout: float = 120.0,
) -> None:
    """Enrol the booted gateway ``spec`` (launched with ``boot_config(cfg)``): check
    it holds the one-time token, certify the key it made, send ``cfg``'s secrets."""
    where = f"gateway {spec.gateway_id} at {spec.host}:{spec.control_port}"
    deadline = time.monotonic() + timeout
    pause = 0.2
    while True:
        session = _Enrolment(spec, client, timeout=10.0)
        try:
            offer = session.call("GET")
            break
        except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
            if time.monotonic() >= deadline:
                raise GatewayError(f"{where} did not enrol within {timeout:.0f} s: {exc}") from None
            time.sleep(pause)
            pause = min(2.0, pause * 2)
    token = offer.get("token") if isinstance(offer, dict) else None
    if not isinstance(token, str) or not secrets.compare_digest(
        token_hash(token).encode(), token_sha256.encode()
    ):
        raise GatewayError(f"{where} does not hold its enrolment token: not enrolled")
    public_key = offer.get("public_key_pem")
    assert session.server_der is not None
    if offer.get("gateway_id") != spec.gateway_id or public_key != crypto.public_key_pem(
        session.server_der
    ):
        raise GatewayError(f"{where} offered a key its TLS certificate does not hold")
    issued = ca.issue_gateway_cert(spec.gateway_id, public_key_pem=public_key)
    try:
        session.call("POST", secrets_of(cfg, issued.cert_pem).model_dump_json())
    except (OSError, ssl.SSLError, http.client.HTTPException) as exc:
        raise GatewayError(f"{where}: sending its secrets failed: {exc}") from None
