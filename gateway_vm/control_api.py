"""The gateway's control API: HTTPS with mutual TLS against the job CA, where the
client must present the control plane's own certificate (its SHA-256 pinned in
``GatewayConfig.control_client_sha256``: another gateway's certificate, from the
same CA, is refused), and this gateway's own bearer token. Bound to
``listen_host`` only.

Routes (JSON in, JSON out):

- ``POST /v1/chunks``   ChunkBatch -> ``{"accepted": n}`` (sources only; 409 while draining)
- ``GET  /v1/status``   -> GatewayStatus
- ``POST /v1/peers``    list[PeerSpec] -> ``{"peers": n}``
- ``GET  /v1/events?after=N&wait=S`` -> ``{"events": [...], "next": M}``
- ``POST /v1/drain?wait=S[&discard=1]`` -> GatewayStatus once idle or after S seconds
  (``discard``: a source drops its queued chunks first; those under way finish)
- ``POST /v1/shutdown`` -> ``{"stopping": true}``, then the gateway exits

Each action is one function (:func:`apply_chunks`, :func:`apply_peers`,
:func:`apply_drain`, :func:`apply_shutdown`), called by its route here and by
the control-queue poller (:mod:`gateway_vm.control_queue`) alike.
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from pydantic import TypeAdapter, ValidationError

from skyhop import crypto
from skyhop.crypto import token_matches
from skyhop.errors import SkyhopError
from skyhop.models import ChunkBatch, GatewayStatus, PeerSpec

if TYPE_CHECKING:
    from gateway_vm.daemon import Gateway

log = logging.getLogger("gateway_vm")

MAX_BODY = 32 * 1024 * 1024
DISCARD_LIMIT = 1024 * 1024  # a refused request's body read before answering
_PEERS = TypeAdapter(list[PeerSpec])


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, gateway: Gateway, host: str, port: int, tls: ssl.SSLContext) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.gateway = gateway
        self.tls = tls
        super().__init__((host, port), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's thread: the TLS handshake happens here, so a
        slow or hostile client never blocks the accept loop."""
        serve_tls(self, self.tls, request, client_address, _Handler, "control")


def serve_tls(
    server: Any,
    tls: ssl.SSLContext,
    request: Any,
    client_address: Any,
    handler: Any,
    what: str,
) -> None:
    """One connection of a threaded HTTPS server: the handshake (30 s deadline), the
    handler, the close; a failed handshake is logged as a refused ``what`` connection."""
    request.settimeout(30)
    try:
        conn = tls.wrap_socket(request, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        log.warning("refused %s connection from %s: %s", what, client_address[0], exc)
        return
    try:
        handler(conn, client_address, server)
    finally:
        try:
            conn.close()
        except OSError:
            pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ControlServer

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("control %s: " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if not self._from_control_plane():
                raise ApiError(
                    403, "only the control plane's client certificate may call the control API"
                )
            if not self._authorised():
                raise ApiError(401, "missing or wrong bearer token")
            route = _ROUTES.get((method, url.path))
            if route is None:
                known = {p for _, p in _ROUTES}
                raise ApiError(405 if url.path in known else 404, f"no route {method} {url.path}")
            body = self._body() if method == "POST" else b""
            self.server.gateway.touch()
            status, payload = route(self.server.gateway, body, query)
        except ApiError as exc:
            status, payload = exc.status, {"error": str(exc)}
            if status in (401, 403):
                self._discard_body()  # read, so the refusal reaches the caller intact
        except ValidationError as exc:
            errors = exc.errors()
            first: dict[str, Any] = dict(errors[0]) if errors else {}
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            status, payload = 400, {"error": f"invalid {where}: {first.get('msg', 'bad value')}"}
        except SkyhopError as exc:
            status, payload = 409, {"error": str(exc)}
        except Exception as exc:
            log.exception("control API error")
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}"}
        self._reply(status, payload)

    def _from_control_plane(self) -> bool:
        """The peer's certificate is the control plane's own (pinned by fingerprint)."""
        pinned = self.server.gateway.cfg.control_client_sha256
        conn = self.connection
        der = conn.getpeercert(binary_form=True) if isinstance(conn, ssl.SSLSocket) else None
        return bool(pinned and der) and secrets.compare_digest(
            crypto.der_fingerprint(der or b"").encode(), (pinned or "").lower().encode()
        )

    def _authorised(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        return scheme.lower() == "bearer" and token_matches(
            token.strip(), self.server.gateway.cfg.control_token
        )

    def _body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise ApiError(400, "bad Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise ApiError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
        return self.rfile.read(length)

    def _discard_body(self) -> None:
        """Read and drop a small unread request body (a large one: the connection
        closes with it unread)."""
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            return
        if 0 < length <= DISCARD_LIMIT:
            self.rfile.read(length)

    def _reply(self, status: int, payload: Any) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="skyhop-gateway"')
        if status in (401, 403, 404, 405, 413):  # the body may be unread: do not reuse
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)


def _float(query: dict[str, str], name: str, default: float) -> float:
    try:
        return float(query.get(name, default))
    except ValueError:
        raise ApiError(400, f"invalid {name}: not a number") from None


# ---------------------------------------------------------------- actions (API and queue)


def apply_chunks(gw: Gateway, batch: ChunkBatch) -> int:
    """Queue a batch on a source gateway; how many chunks were accepted."""
    return gw.submit(batch)


def apply_peers(gw: Gateway, peers: list[PeerSpec]) -> int:
    """Replace the gateway's next hops; how many there are now."""
    gw.set_peers(peers)
    return len(peers)


def apply_drain(gw: Gateway, wait: float, *, discard: bool = False) -> GatewayStatus:
    """Accept no more chunks (``discard``: drop those queued); the status once idle
    or after ``wait`` seconds."""
    return gw.drain(wait, discard=discard)


def apply_shutdown(gw: Gateway) -> None:
    """Stop the gateway shortly (after the caller had its answer)."""
    threading.Timer(0.1, gw.request_stop, args=("shutdown requested",)).start()


# ---------------------------------------------------------------- routes


def _submit(gw: Gateway, body: bytes, query: dict[str, str]) -> tuple[int, Any]:
    batch = ChunkBatch.model_validate_json(body)
    return 200, {"accepted": apply_chunks(gw, batch)}


def _status(gw: Gateway, body: bytes, query: dict[str, str]) -> tuple[int, Any]:
    return 200, gw.status().model_dump_json()


def _peers(gw: Gateway, body: bytes, query: dict[str, str]) -> tuple[int, Any]:
    return 200, {"peers": apply_peers(gw, _PEERS.validate_json(body))}


def _events(gw: Gateway, body: bytes, query: dict[str, str]) -> tuple[int, Any]:
    try:
        after = int(query.get("after", "0"))
    except ValueError:
        raise ApiError(400, "invalid after: not an integer") from None
    events, cursor = gw.router.outbox.read(after, _float(query, "wait", 0.0))
    return 200, '{"events": [' + ",".join(events) + '], "next": ' + str(cursor) + "}"


def _drain(gw: Gateway, body: bytes, query: dict[str, str]) -> tuple[int, Any]:
    discard = query.get("discard", "0") in ("1", "true")
    return 200, apply_drain(gw, _float(query, "wait", 0.0), discard=discard).model_dump_json()


def _shutdown(gw: Gateway, body: bytes, query: dict[str, str]) -> tuple[int, Any]:
    apply_shutdown(gw)
    return 200, {"stopping": True}


_ROUTES: dict[tuple[str, str], Callable[[Gateway, bytes, dict[str, str]], tuple[int, Any]]] = {
    ("POST", "/v1/chunks"): _submit,
    ("GET", "/v1/status"): _status,
    ("POST", "/v1/peers"): _peers,
    ("GET", "/v1/events"): _events,
    ("POST", "/v1/drain"): _drain,
    ("POST", "/v1/shutdown"): _shutdown,
}
