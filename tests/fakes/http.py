"""A tiny base for local fakes of cloud REST APIs that have no emulator.

A fake is an ``http.server`` on 127.0.0.1 (optionally with TLS from a throwaway
CA) whose routes are ``(METHOD, regex) -> handler``. Every request is recorded
(method, path, query, JSON body) so tests can assert what a client sent.
"""

from __future__ import annotations

import datetime
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request, re.Match[str]], Reply]


class FakeHTTP:
    """Routes requests to handlers; records them; serves on 127.0.0.1 until ``close``."""

    def __init__(self) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[Request] = []
        self.lock = threading.RLock()
        self.server: ThreadingHTTPServer | None = None
        self.scheme = "http"
        #: injected faults: (method, path substring, reply), each answered once
        self.faults: list[tuple[str, str, Reply]] = []

    def fail(self, method: str, contains: str, reply: Reply) -> None:
        """Answer the next ``method`` request whose path contains ``contains`` with
        ``reply`` instead of its handler's (once)."""
        with self.lock:
            self.faults.append((method, contains, reply))

    def route(self, method: str, pattern: str, handler: Handler, flags: int = 0) -> None:
        self.routes.append((method, re.compile(f"^{pattern}$", flags), handler))

    def calls(self, method: str | None = None, contains: str = "") -> list[Request]:
        with self.lock:
            return [
                r
                for r in self.requests
                if (method is None or r.method == method) and contains in r.path
            ]

    def start(self, tls_dir: Path | None = None) -> str:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                req = Request(
                    method=self.command,
                    path=unquote(split.path),
                    query=parse_qs(split.query),
                    body=body,
                    headers={k.lower(): v for k, v in self.headers.items()},
                )
                with fake.lock:
                    fake.requests.append(req)
                    reply = fake.dispatch(req)
                data = b"" if reply.body is None else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                if data:
                    self.send_header("Content-Type", "application/json")
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        if tls_dir is not None:
            cert, key = self_signed(tls_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"{self.scheme}://127.0.0.1:{self.server.server_address[1]}"

    def dispatch(self, req: Request) -> Reply:
        for i, (method, contains, reply) in enumerate(self.faults):
            if method == req.method and contains in req.path:
                del self.faults[i]
                return reply
        for method, pattern, handler in self.routes:
            if method != req.method:
                continue
            match = pattern.match(req.path)
            if match:
                return handler(req, match)
        return Reply(404, {"error": {"code": 404, "message": f"no route {req.method} {req.path}"}})

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def self_signed(directory: Path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, written to ``directory``; the
    certificate doubles as the CA bundle a client should trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)
