"""Attacks on a job's gateways from one of its own gateways (#19 item 1),
run against real gateway processes on loopback.

A relay holds a certificate of the job's CA and a control token. Neither may
command another gateway: the control API takes only the control plane's own
client certificate, and each gateway checks its own token. And whatever a
caller sends, a source reads only under its source location and a destination
writes only under its destination location.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from skyhop.errors import GatewayError
from skyhop.gateway_api import GatewayClient
from skyhop.models import ChunkBatch, ChunkFailed, ChunkVerified, ChunkWork, GatewayRole
from tests.fixtures.gateways import GatewayJob, gateway_job_fixture, provider_fixture  # noqa: F401 - pytest fixtures, registered by importing them


@pytest.fixture
def chain(gateway_job: GatewayJob, tmp_path: Path) -> GatewayJob:
    """source -> relay -> destination, between tmp/src and tmp/dst."""
    job = gateway_job
    (tmp_path / "src").mkdir()
    (tmp_path / "dst").mkdir()
    job.relay_config = job.config("relay-0", GatewayRole.RELAY)  # type: ignore[attr-defined]
    job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(tmp_path / "src")),
        job.relay_config,  # type: ignore[attr-defined]
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path / "dst")),
    )
    job.chain("src-0", "relay-0", "dst-0")
    return job


def _as_relay(job: GatewayJob, target: str, token: str | None = None) -> GatewayClient:
    """A control-API client holding the relay's own configuration."""
    relay = job.relay_config  # type: ignore[attr-defined]
    spec = job.specs[target]
    return GatewayClient(
        spec.host,
        spec.control_port,
        target,
        relay.ca_cert_pem,
        token or relay.control_token,
        relay.cert_pem,
        relay.key_pem,
    )


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


def test_a_relay_cannot_command_the_source(chain: GatewayJob, tmp_path: Path) -> None:
    """The reported attack: the relay's configuration POSTs /v1/chunks to the source
    with src_key=etc/hostname and an absolute dst_key."""
    job = chain
    stolen = tmp_path / "stolen"
    size = os.path.getsize("/etc/hostname")
    batch = ChunkBatch(job_id=job.job_id, chunks=[_work("etc/hostname", str(stolen), size)])
    with pytest.raises(GatewayError, match="403.*only the control plane's client certificate"):
        _as_relay(job, "src-0").submit(batch)
    # even with the source's own token, the relay's certificate is refused
    with pytest.raises(GatewayError, match="403"):
        _as_relay(job, "src-0", job.token_of("src-0")).status()
    time.sleep(1.0)
    assert not stolen.exists()
    assert job.clients["src-0"].status().chunks_queued == 0


def test_a_relay_cannot_read_or_drain_the_destinations_events(chain: GatewayJob) -> None:
    job = chain
    with pytest.raises(GatewayError, match="403"):
        _as_relay(job, "dst-0").events(after=10**6)
    with pytest.raises(GatewayError, match="403"):
        _as_relay(job, "dst-0").shutdown()
    events, _ = job.clients["dst-0"].events()  # nothing was acknowledged away
    assert [e.type for e in events] == ["gateway_ready"]


def test_tokens_are_per_gateway(chain: GatewayJob) -> None:
    """The control plane's own certificate with another gateway's token is refused."""
    job = chain
    spec = job.specs["src-0"]
    other = GatewayClient(
        spec.host,
        spec.control_port,
        "src-0",
        job.ca.cert_pem,
        job.token_of("relay-0"),
        job.client_cert.cert_pem,
        job.client_cert.key_pem,
    )
    with pytest.raises(GatewayError, match="rejected the control token"):
        other.status()
    assert job.token_of("src-0") != job.token_of("relay-0")
    assert job.clients["src-0"].status().state == "ready"


def test_no_pinned_control_certificate_means_no_control_api(
    gateway_job: GatewayJob, tmp_path: Path
) -> None:
    job = gateway_job
    cfg = job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path))
    job.launch(cfg.model_copy(update={"control_client_sha256": None}))
    with pytest.raises(GatewayError, match="403"):
        job.clients["dst-0"].status()


def test_the_source_reads_only_under_its_source(chain: GatewayJob, tmp_path: Path) -> None:
    """Even the control plane's own client cannot make a source read outside its
    location, nor hand it a destination key that is absolute or climbs out."""
    job = chain
    inside = tmp_path / "src" / "a.bin"
    inside.write_bytes(b"x" * 1000)
    src_key = str(inside).lstrip("/")
    dst_key = str(tmp_path / "dst" / "a.bin").lstrip("/")
    size = os.path.getsize("/etc/hostname")
    for work, message in [
        (_work("etc/hostname", dst_key, size), "outside"),
        (_work(str(tmp_path / "src" / ".." / "x").lstrip("/"), dst_key, 1), "'..'"),
        (_work(src_key, str(tmp_path / "dst" / "evil"), 1000), "absolute"),
        (_work(src_key, dst_key + "/../../../../evil", 1000), "'..'"),
    ]:
        with pytest.raises(GatewayError, match=f"400.*{message}"):
            job.submit("src-0", [work])
    assert job.clients["src-0"].status().chunks_queued == 0


def test_the_destination_writes_only_under_its_destination(
    chain: GatewayJob, tmp_path: Path
) -> None:
    """A source (compromised, or told so) sends a chunk for a key outside the
    destination's location: the destination refuses it and writes nothing; a chunk
    inside still goes through."""
    job = chain
    (tmp_path / "src" / "a.bin").write_bytes(b"y" * 5000)
    src_key = str(tmp_path / "src" / "a.bin").lstrip("/")
    outside = tmp_path / "elsewhere.bin"
    good = tmp_path / "dst" / "a.bin"
    job.submit(
        "src-0",
        [
            _work(src_key, str(outside).lstrip("/"), 5000, chunk_id=0),
            _work(src_key, str(good).lstrip("/"), 5000, chunk_id=1),
        ],
    )
    verified, failed = job.outcome({0, 1})
    assert set(verified) == {1} and set(failed) == {0}
    reason = failed[0][0]
    assert isinstance(reason, ChunkFailed) and not reason.retryable
    assert "outside" in reason.reason and reason.gateway_id == "dst-0"
    assert isinstance(verified[1], ChunkVerified)
    assert not outside.exists()
    assert good.read_bytes() == b"y" * 5000
