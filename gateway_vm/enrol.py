"""A cloud gateway's enrolment: how it gets its secrets after it boots.

Its boot configuration (the VM's user data or metadata) holds no private key
and no token: only public material (the job CA's certificate, the fingerprint
of the control plane's client certificate, its ids and ports) and a one-time
enrolment token, whose SHA-256 is all the control plane keeps. At boot the
gateway makes its own EC key and serves, on its control port, a self-signed
certificate for it, accepting only the control plane's client certificate
(verified against the job CA, then pinned by fingerprint):

- ``GET  /v1/enrol`` -> ``{"gateway_id", "public_key_pem", "token"}``: the key it
  made and its one-time token, so the control plane knows it talks to the VM
  that booted with that token, and which key to certify;
- ``POST /v1/enrol`` EnrolSecrets -> ``{"enrolled": true}``: its certificate from
  the job CA (for that key) and the secrets, over the same mutual TLS.

Then the enrolment server closes, and the gateway starts as configured, with
the control API on the same port. The token is spent: nothing answers it again.

A queue-controlled gateway (``control_queue`` set: the cloud functions cannot
connect to it) enrols over its queues instead (:func:`enrol_queued`): it makes
its TLS key and an X25519 key, posts a :class:`~skyhop.models.GatewayEnrol`
(its token and both public keys) to the events queue, and waits on its own
control queue for the :class:`~skyhop.models.EnrolledMessage` sealed to its
X25519 key, whose certificate must be the job CA's, for its TLS key. Only then
does it start (and post ``gateway_ready``).
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from pydantic import TypeAdapter, ValidationError

from gateway_vm.control_api import serve_tls
from skyhop import crypto, enrolment
from skyhop.errors import IntegrityError, NotFoundError, UsageError, first_line
from skyhop.models import (
    ControlMessage,
    EnrolledMessage,
    EnrolSecrets,
    EventEnvelope,
    GatewayConfig,
    GatewayEnrol,
    ShutdownMessage,
)
from skyhop.queues.base import Queue, open_queue

log = logging.getLogger("gateway_vm")

MAX_BODY = 256 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, boot: GatewayConfig, mine: crypto.IssuedCert) -> None:
        host = boot.listen_host
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.boot = boot
        self.mine = mine
        self.public_key_pem = crypto.public_key_pem(mine.cert_pem)
        self.secrets: EnrolSecrets | None = None
        self.done = threading.Event()
        # a client certificate from the job CA is required (then pinned, per request)
        self.tls = crypto.server_context(boot.ca_cert_pem, mine.cert_pem, mine.key_pem)
        super().__init__((host, boot.control_port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        serve_tls(self, self.tls, request, client_address, _Handler, "enrolment")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("enrol %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        if not self._from_control_plane() or self.path != "/v1/enrol":
            return
        boot = self.server.boot
        self._reply(
            200,
            {
                "gateway_id": boot.gateway_id,
                "public_key_pem": self.server.public_key_pem,
                "token": boot.enrol_token,
            },
        )

    def do_POST(self) -> None:
        if not self._from_control_plane() or self.path != "/v1/enrol":
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY:
            self._reply(413, {"error": "bad enrolment body length"}, close=True)
            return
        try:
            given = EnrolSecrets.model_validate_json(self.rfile.read(length))
        except ValidationError as exc:
            self._reply(400, {"error": f"invalid enrolment: {exc.errors()[0].get('msg')}"})
            return
        problem = self._check(given)
        if problem:
            self._reply(400, {"error": problem})
            return
        if self.server.secrets is None:
            self.server.secrets = given
        self._reply(200, {"enrolled": True})
        self.server.done.set()

    def _check(self, given: EnrolSecrets) -> str | None:
        if given.gateway_id != self.server.boot.gateway_id:
            return f"these secrets are for {given.gateway_id}, not {self.server.boot.gateway_id}"
        try:
            certified = crypto.public_key_pem(given.cert_pem)
        except ValueError:
            return "the certificate is not PEM"
        if certified != self.server.public_key_pem:
            return "the certificate is not for this gateway's key"
        return None

    def _from_control_plane(self) -> bool:
        pinned = self.server.boot.control_client_sha256 or ""
        conn = self.connection
        der = conn.getpeercert(binary_form=True) if isinstance(conn, ssl.SSLSocket) else None
        if (
            pinned
            and der
            and secrets.compare_digest(
                crypto.der_fingerprint(der).encode(), pinned.lower().encode()
            )
        ):
            return True
        self._reply(
            403, {"error": "only the control plane's client certificate may enrol"}, close=True
        )
        return False

    def _reply(self, status: int, payload: Any, *, close: bool = False) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


def enrol(boot: GatewayConfig, stop: threading.Event | None = None) -> GatewayConfig:
    """Wait (up to the boot configuration's idle timeout) for the control plane to
    enrol this gateway; the full configuration, with the key made here."""
    if not boot.enrol_token:
        raise UsageError("not a boot configuration: no enrolment token")
    mine = crypto.self_signed(boot.gateway_id)
    server = _Server(boot, mine)
    thread = threading.Thread(
        target=lambda: server.serve_forever(poll_interval=0.1), name="enrol", daemon=True
    )
    thread.start()
    log.info("gateway %s waiting to enrol on port %d", boot.gateway_id, boot.control_port)
    try:
        waited = 0.0
        while not server.done.wait(0.5):
            waited += 0.5
            if (stop is not None and stop.is_set()) or waited >= boot.idle_timeout_s:
                raise UsageError(f"not enrolled within {waited:g} s")
    finally:
        server.shutdown()
        server.server_close()
    given = server.secrets
    assert given is not None
    log.info("gateway %s enrolled", boot.gateway_id)
    return enrolled(boot, mine.key_pem, given)


def enrolled(boot: GatewayConfig, key_pem: str, given: EnrolSecrets) -> GatewayConfig:
    """The full configuration: the boot configuration with the key made here and
    the secrets the control plane sent."""
    return boot.model_copy(
        update={
            "cert_pem": given.cert_pem,
            "key_pem": key_pem,
            "control_token": given.control_token,
            "event_key_b64": given.event_key_b64,
            "data_key_b64": given.data_key_b64,
            "store_access": given.store_access,
            "enrol_token": None,
        }
    )


# ---------------------------------------------------------------- over the queues

_CONTROL: TypeAdapter[ControlMessage] = TypeAdapter(ControlMessage)
#: how often the enrolment request is posted again while no answer came (one lost
#: on its way is asked again; one answered already is refused, changing nothing)
REPOST_SECONDS = 60.0
WAIT_SECONDS = 20.0


def enrol_queued(
    boot: GatewayConfig,
    stop: threading.Event | None = None,
    *,
    control: Queue | None = None,
    events: Queue | None = None,
    wait_seconds: float = WAIT_SECONDS,
) -> GatewayConfig:
    """Enrol a queue-controlled gateway: post its enrolment to the events queue and
    wait (up to its idle timeout) on its control queue for its sealed secrets; the
    full configuration, with the keys made here."""
    if not boot.enrol_token or not boot.control_queue:
        raise UsageError("not a queue-controlled boot configuration: no token or control queue")
    mine = crypto.self_signed(boot.gateway_id)
    seal_private = crypto.generate_job_key()
    request = GatewayEnrol(
        job_id=boot.job_id,
        gateway_id=boot.gateway_id,
        token=boot.enrol_token,
        tls_public_key_pem=crypto.public_key_pem(mine.cert_pem),
        seal_key_b64=base64.b64encode(crypto.job_public_key(seal_private)).decode(),
    )
    body = EventEnvelope(event=request).model_dump_json()
    control = control if control is not None else open_queue(boot.control_queue)
    events = events if events is not None else open_queue(boot.event_sink)
    started = time.monotonic()
    post_at = started
    log.info("gateway %s enrolling over its queues", boot.gateway_id)
    while True:
        waited = time.monotonic() - started
        if (stop is not None and stop.is_set()) or waited >= boot.idle_timeout_s:
            raise UsageError(f"not enrolled within {waited:.0f} s")
        if time.monotonic() >= post_at:
            try:
                events.send(body)
                post_at = time.monotonic() + REPOST_SECONDS
            except Exception as exc:  # noqa: BLE001 - asked again shortly
                log.warning("enrolment request not posted: %s", first_line(exc, limit=300))
                post_at = time.monotonic() + 2.0
        try:
            messages = control.receive(max_messages=10, wait_seconds=wait_seconds)
        except NotFoundError:
            raise UsageError(f"control queue {boot.control_queue} is gone") from None
        except Exception as exc:  # noqa: BLE001 - the queue may come back
            log.warning("control queue %s: %s", boot.control_queue, first_line(exc, limit=300))
            time.sleep(1.0)
            continue
        for message in messages:
            given = _secrets_in(boot, mine.cert_pem, seal_private, message.body)
            try:
                control.ack(message)
            except Exception as exc:  # noqa: BLE001 - seen again: opened again, or dropped
                log.warning("control queue %s: ack failed: %s", boot.control_queue, exc)
            if isinstance(given, EnrolSecrets):
                log.info("gateway %s enrolled", boot.gateway_id)
                return enrolled(boot, mine.key_pem, given)
            if given is not None:
                raise UsageError("told to shut down before it enrolled")


def _secrets_in(
    boot: GatewayConfig, mine_pem: str, seal_private: bytes, body: str
) -> EnrolSecrets | ShutdownMessage | None:
    """The secrets a control message brings (checked: for this gateway, sealed to its
    key, a certificate of the job CA for its TLS key), a shutdown, or None (logged)."""
    try:
        message = _CONTROL.validate_json(body)
    except ValidationError:
        log.warning("enrolling: dropped a malformed message")
        return None
    if isinstance(message, ShutdownMessage):
        return message
    if not isinstance(message, EnrolledMessage) or message.gateway_id != boot.gateway_id:
        log.warning("enrolling: dropped a %s message", message.type)
        return None
    try:
        given = enrolment.open_secrets(message, boot.job_id, boot.gateway_id, seal_private)
    except (IntegrityError, ValidationError):
        log.warning("enrolling: dropped secrets that do not open with this gateway's key")
        return None
    problem = _certified_problem(boot, mine_pem, given)
    if problem:
        log.warning("enrolling: dropped secrets: %s", problem)
        return None
    return given


def _certified_problem(boot: GatewayConfig, mine_pem: str, given: EnrolSecrets) -> str | None:
    """Why ``given`` is not this gateway's enrolment, if it is not: its certificate
    must hold the key made here and be issued by the job CA (whose key only the
    control plane holds: a sealed message anyone could make is refused)."""
    if given.gateway_id != boot.gateway_id:
        return f"they are for {given.gateway_id}"
    try:
        cert = x509.load_pem_x509_certificate(given.cert_pem.encode())
        ca = x509.load_pem_x509_certificate(boot.ca_cert_pem.encode())
    except ValueError:
        return "the certificate is not PEM"
    if crypto.public_key_pem(given.cert_pem) != crypto.public_key_pem(mine_pem):
        return "the certificate is not for this gateway's key"
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return "the certificate is not the job CA's"
    return None
