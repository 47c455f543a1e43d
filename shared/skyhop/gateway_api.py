"""The client of a gateway's control API, used by the control plane.

HTTPS over stdlib ``http.client`` with mutual TLS against the job CA (the
gateway's certificate is checked against its gateway id, whatever address it
is reached at) and the job's bearer token. Every failure is a one-line
:class:`~skyhop.errors.GatewayError`.

    client = GatewayClient.for_spec(spec, ca.cert_pem, token, ca.issue_client_cert())
    client.set_peers([PeerSpec(gateway_id=dst.gateway_id, host=dst.host, data_port=dst.data_port)])
    client.submit(ChunkBatch(job_id=job_id, chunks=[...]))
    events, cursor = client.events(after=cursor, wait=5.0)
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
from typing import Any
from urllib.parse import urlencode

from pydantic import TypeAdapter, ValidationError

from skyhop.crypto import IssuedCert, client_context
from skyhop.errors import GatewayError
from skyhop.models import ChunkBatch, GatewayEvent, GatewaySpec, GatewayStatus, PeerSpec

_EVENTS = TypeAdapter(list[GatewayEvent])


class _Connection(http.client.HTTPSConnection):
    """An HTTPS connection to ``host`` that verifies the certificate of ``server_name``."""

    def __init__(
        self, host: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)
        except BaseException:
            sock.close()
            raise


class GatewayClient:
    """Calls one gateway's control API."""

    def __init__(
        self,
        host: str,
        control_port: int,
        gateway_id: str,
        ca_cert_pem: str,
        token: str,
        cert_pem: str,
        key_pem: str,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.host = host
        self.port = control_port
        self.gateway_id = gateway_id
        self.timeout = timeout
        self._token = token
        try:
            self._ctx = client_context(ca_cert_pem, cert_pem, key_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise GatewayError(f"bad TLS material for gateway {gateway_id}: {exc}") from None

    @classmethod
    def for_spec(
        cls,
        spec: GatewaySpec,
        ca_cert_pem: str,
        token: str,
        client_cert: IssuedCert,
        *,
        timeout: float = 30.0,
    ) -> GatewayClient:
        """A client for a launched gateway, authenticating with ``client_cert``."""
        return cls(
            spec.host,
            spec.control_port,
            spec.gateway_id,
            ca_cert_pem,
            token,
            client_cert.cert_pem,
            client_cert.key_pem,
            timeout=timeout,
        )

    def __repr__(self) -> str:  # never show the token
        return f"GatewayClient({self.gateway_id}@{self.host}:{self.port})"

    # ------------------------------------------------------------ transport

    def _request(
        self, method: str, path: str, body: str | None = None, *, timeout: float | None = None
    ) -> Any:
        where = f"gateway {self.gateway_id} at {self.host}:{self.port}"
        conn = _Connection(
            self.host, self.port, self.gateway_id, self._ctx, timeout or self.timeout
        )
        headers = {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(
                method, path, body=body.encode() if body is not None else None, headers=headers
            )
            resp = conn.getresponse()
            data = resp.read()
        except ConnectionRefusedError:
            raise GatewayError(f"{where} refused the connection (not running?)") from None
        except ssl.SSLCertVerificationError as exc:
            raise GatewayError(
                f"{where} presented an untrusted certificate: {exc.verify_message}"
            ) from None
        except ssl.SSLError as exc:
            raise GatewayError(f"TLS with {where} failed: {exc.reason or exc}") from None
        except TimeoutError:
            raise GatewayError(f"{where} did not answer {method} {path} in time") from None
        except (OSError, http.client.HTTPException) as exc:
            raise GatewayError(
                f"{where} failed on {method} {path}: {type(exc).__name__}: {exc}"
            ) from None
        finally:
            conn.close()
        try:
            payload = json.loads(data) if data else None
        except ValueError:
            raise GatewayError(f"{where} sent a non-JSON answer to {method} {path}") from None
        if resp.status == 401:
            raise GatewayError(f"{where} rejected the control token")
        if resp.status >= 400:
            message = payload.get("error") if isinstance(payload, dict) else None
            raise GatewayError(
                f"{where}: {method} {path} failed ({resp.status}): {message or resp.reason}"
            )
        return payload

    # ------------------------------------------------------------ API

    def submit(self, batch: ChunkBatch) -> int:
        """Queue chunks on a source gateway; returns how many were accepted."""
        payload = self._request("POST", "/v1/chunks", batch.model_dump_json())
        return int(payload["accepted"])

    def status(self) -> GatewayStatus:
        return self._parse(GatewayStatus, self._request("GET", "/v1/status"))

    def set_peers(self, peers: list[PeerSpec]) -> None:
        """Replace the gateway's next hops."""
        body = json.dumps([p.model_dump(mode="json") for p in peers])
        self._request("POST", "/v1/peers", body)

    def events(self, after: int = 0, wait: float = 0.0) -> tuple[list[GatewayEvent], int]:
        """Events numbered above ``after`` (long-polling up to ``wait`` s) and the next cursor.
        Passing a cursor acknowledges every event up to it."""
        query = urlencode({"after": after, "wait": wait})
        payload = self._request("GET", f"/v1/events?{query}", timeout=self.timeout + wait)
        try:
            return _EVENTS.validate_python(payload["events"]), int(payload["next"])
        except (ValidationError, KeyError, TypeError, ValueError):
            raise GatewayError(f"gateway {self.gateway_id} sent malformed events") from None

    def drain(self, wait: float = 30.0, *, discard: bool = False) -> GatewayStatus:
        """Stop accepting chunks (``discard``: a source drops those queued and not
        started); returns once nothing is in flight or after ``wait`` s."""
        query = urlencode({"wait": wait, **({"discard": 1} if discard else {})})
        payload = self._request("POST", f"/v1/drain?{query}", "", timeout=self.timeout + wait)
        return self._parse(GatewayStatus, payload)

    def shutdown(self) -> None:
        """Ask the gateway to exit."""
        self._request("POST", "/v1/shutdown", "")

    def _parse(self, model: Any, payload: Any) -> Any:
        try:
            return model.model_validate(payload)
        except ValidationError:
            raise GatewayError(
                f"gateway {self.gateway_id} sent a malformed {model.__name__}"
            ) from None
