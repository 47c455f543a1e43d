"""Who may talk to a gateway: only holders of a certificate from the job's CA,
and on the control API only with the job's bearer token."""

from __future__ import annotations

import http.client
import socket
import ssl
import time

import psutil
import pytest

from skyhop import crypto
from skyhop.errors import GatewayError
from skyhop.gateway_api import GatewayClient
from skyhop.models import ChunkBatch, GatewayRole
from tests.fixtures.gateways import GatewayJob, gateway_job_fixture, provider_fixture  # noqa: F401 - pytest fixtures, registered by importing them


@pytest.fixture
def destination(gateway_job: GatewayJob, tmp_path) -> GatewayJob:
    gateway_job.launch(
        gateway_job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path / "dst"))
    )
    return gateway_job


def _talk(ctx: ssl.SSLContext, port: int, name: str) -> bytes:
    """Connect, send a little, and read: what a client sees of the gateway."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"SKYH" + b"\x00" * 100)
            return tls.recv(100)


def test_data_port_refuses_a_certificate_from_another_ca(destination: GatewayJob) -> None:
    job = destination
    spec = job.specs["dst-0"]
    other = crypto.JobCA.create("j-forged").issue_gateway_cert("src-0")
    ctx = crypto.client_context(job.ca.cert_pem, other.cert_pem, other.key_pem)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        if _talk(ctx, spec.data_port, "dst-0") == b"":
            raise ConnectionError("closed by the gateway")
    client = job.clients["dst-0"]
    _wait(lambda: client.status().errors >= 1)
    events, _ = client.events()
    assert [e.type for e in events] == ["gateway_ready"]


def test_data_port_refuses_a_client_without_certificate(destination: GatewayJob) -> None:
    spec = destination.specs["dst-0"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=destination.ca.cert_pem)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        if _talk(ctx, spec.data_port, "dst-0") == b"":
            raise ConnectionError("closed by the gateway")


def test_clients_check_the_gateway_name(destination: GatewayJob) -> None:
    job = destination
    spec = job.specs["dst-0"]
    mine = job.ca.issue_gateway_cert("src-0")
    ctx = crypto.client_context(job.ca.cert_pem, mine.cert_pem, mine.key_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        _talk(ctx, spec.data_port, "some-other-gateway")
    # and a client that trusts another CA does not trust this gateway
    stranger = crypto.JobCA.create("j-other")
    cert = stranger.issue_client_cert()
    client = GatewayClient(
        spec.host,
        spec.control_port,
        "dst-0",
        stranger.cert_pem,
        job.token_of("dst-0"),
        cert.cert_pem,
        cert.key_pem,
    )
    with pytest.raises(GatewayError, match="untrusted certificate"):
        client.status()


def test_garbage_from_a_trusted_peer_is_contained(destination: GatewayJob) -> None:
    job = destination
    spec = job.specs["dst-0"]
    mine = job.ca.issue_gateway_cert("src-0")
    ctx = crypto.client_context(job.ca.cert_pem, mine.cert_pem, mine.key_pem)
    with socket.create_connection(("127.0.0.1", spec.data_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="dst-0") as tls:
            tls.sendall(b"NOPE" + b"\xff" * 52)  # a header with a bad magic
            assert tls.recv(10) == b""  # the gateway hangs up
    client = job.clients["dst-0"]
    _wait(lambda: any(e.type == "gateway_error" for e in client.events()[0]))
    events, _ = client.events()
    assert any("bad frame magic" in e.message for e in events if e.type == "gateway_error")
    assert client.status().state == "ready"


def test_oversized_frame_claims_are_refused_before_allocating(destination: GatewayJob) -> None:
    """A header claiming more than one sealed segment is refused as it is read."""
    job = destination
    spec = job.specs["dst-0"]
    mine = job.ca.issue_gateway_cert("src-0")
    ctx = crypto.client_context(job.ca.cert_pem, mine.cert_pem, mine.key_pem)
    header = crypto.HEADER.pack(
        b"SKYH", 1, crypto.FrameType.DATA, 0, crypto.job_digest(job.job_id), 1, 0,
        60 * 1024 * 1024, 60 * 1024 * 1024 - 16, b"\x00" * 12,
    )  # fmt: skip
    with socket.create_connection(("127.0.0.1", spec.data_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="dst-0") as tls:
            tls.sendall(header)
            assert tls.recv(10) == b""
    client = job.clients["dst-0"]
    _wait(lambda: any(e.type == "gateway_error" for e in client.events()[0]))
    messages = [e.message for e in client.events()[0] if e.type == "gateway_error"]
    assert any("out of bounds" in m for m in messages), messages


def test_control_api_needs_the_token(destination: GatewayJob) -> None:
    job = destination
    spec = job.specs["dst-0"]
    mine = job.client_cert
    ctx = crypto.client_context(job.ca.cert_pem, mine.cert_pem, mine.key_pem)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {job.token_of('dst-0')}"},
    ):
        conn = http.client.HTTPSConnection("127.0.0.1", spec.control_port, context=ctx, timeout=10)
        conn.sock = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", spec.control_port)), server_hostname="dst-0"
        )
        conn.request("GET", "/v1/status", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 401
        assert b"bearer token" in resp.read()
        conn.close()
    wrong = GatewayClient(
        spec.host,
        spec.control_port,
        "dst-0",
        job.ca.cert_pem,
        "not-the-token",
        mine.cert_pem,
        mine.key_pem,
    )
    with pytest.raises(GatewayError, match="rejected the control token"):
        wrong.status()
    assert job.clients["dst-0"].status().state == "ready"


def test_control_api_refuses_a_certificate_from_another_ca(destination: GatewayJob) -> None:
    job = destination
    spec = job.specs["dst-0"]
    forged = crypto.JobCA.create("j-forged").issue_client_cert()
    client = GatewayClient(
        spec.host,
        spec.control_port,
        "dst-0",
        job.ca.cert_pem,
        job.token_of("dst-0"),
        forged.cert_pem,
        forged.key_pem,
    )
    with pytest.raises(GatewayError):
        client.status()


def test_bad_requests_are_one_line_errors(destination: GatewayJob) -> None:
    job = destination
    client = job.clients["dst-0"]
    with pytest.raises(GatewayError, match="batch is for job j-other"):
        client.submit(ChunkBatch(job_id="j-other", chunks=[]))
    with pytest.raises(GatewayError, match="is a destination, not a source"):
        client.submit(ChunkBatch(job_id=job.job_id, chunks=[]))
    with pytest.raises(GatewayError) as info:
        client._request("POST", "/v1/peers", '[{"gateway_id": 1}]')
    assert "400" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(GatewayError, match="404"):
        client._request("GET", "/v1/nothing")


def test_ports_bind_to_the_listen_host_only(destination: GatewayJob) -> None:
    spec = destination.specs["dst-0"]
    proc = psutil.Process(int(spec.instance_id or 0))
    listening = [
        c.laddr for c in proc.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN
    ]
    ports = {addr.port: addr.ip for addr in listening}
    assert ports[spec.control_port] == "127.0.0.1"
    assert ports[spec.data_port] == "127.0.0.1"


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)
