"""The data port under connections that never authenticate (#19 item 3), against
real gateway processes on loopback: a connection takes a serving slot only after
its mutual-TLS handshake, and the handshake has a short deadline."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from skyhop import crypto
from skyhop.models import ChunkWork, GatewayRole
from tests.fixtures.gateways import GatewayJob, gateway_job_fixture, provider_fixture  # noqa: F401 - pytest fixtures, registered by importing them


@pytest.fixture
def chain(gateway_job: GatewayJob, tmp_path: Path) -> GatewayJob:
    """source -> relay -> destination, between tmp/src and tmp/dst."""
    job = gateway_job
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(tmp_path / "src")),
        job.config("relay-0", GatewayRole.RELAY),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path / "dst")),
    )
    job.chain("src-0", "relay-0", "dst-0")
    return job


def _work(src_key: str, dst_key: str, size: int, chunk_id: int = 0) -> ChunkWork:
    return ChunkWork(
        chunk_id=chunk_id,
        object_id=chunk_id,
        index=0,
        src_key=src_key,
        dst_key=dst_key,
        offset=0,
        length=size,
        object_size=size,
    )


def test_idle_connections_do_not_starve_the_data_port(chain: GatewayJob, tmp_path: Path) -> None:
    """160 TCP connections (the report: 140) that never start TLS are held open on the destination's
    data port while the real source sends through it: the transfer still completes
    (a connection takes a worker slot only after its handshake, which has a short
    deadline)."""
    job = chain
    spec = job.specs["dst-0"]
    idle = []
    try:
        for _ in range(160):
            idle.append(socket.create_connection(("127.0.0.1", spec.data_port), timeout=5))
        # a fresh connection path: the relay must (re)connect to the destination now
        job.chain("relay-0", "dst-0")
        files = {}
        for i in range(6):
            path = tmp_path / "src" / f"f{i}.bin"
            path.write_bytes(os.urandom(200_000))
            files[i] = path
        work = [
            _work(
                str(p).lstrip("/"),
                str(tmp_path / "dst" / p.name).lstrip("/"),
                p.stat().st_size,
                chunk_id=i,
            )
            for i, p in files.items()
        ]
        job.submit("src-0", work)
        verified, failed = job.outcome(set(files), timeout=60)
        assert not failed, failed
        for p in files.values():
            assert (tmp_path / "dst" / p.name).read_bytes() == p.read_bytes()
    finally:
        for s in idle:
            s.close()


def test_a_handshake_that_never_finishes_is_cut_off(chain: GatewayJob) -> None:
    """A connection that sends nothing is closed by the gateway within the handshake
    deadline (seconds, not the 30 s it was)."""
    from gateway_vm.context import HANDSHAKE_TIMEOUT

    assert HANDSHAKE_TIMEOUT <= 10
    spec = chain.specs["dst-0"]
    with socket.create_connection(("127.0.0.1", spec.data_port), timeout=30) as raw:
        started = time.monotonic()
        assert raw.recv(10) == b""  # closed by the gateway
        assert time.monotonic() - started < HANDSHAKE_TIMEOUT + 5
    # and a proper peer still gets through afterwards
    mine = chain.ca.issue_gateway_cert("src-0")
    ctx = crypto.client_context(chain.ca.cert_pem, mine.cert_pem, mine.key_pem)
    with socket.create_connection(("127.0.0.1", spec.data_port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="dst-0") as tls:
            assert isinstance(tls, ssl.SSLSocket) and tls.version() == "TLSv1.3"
