"""Real gateways on loopback move files between two LocalStore directories:
source -> destination and source -> relay -> destination, byte for byte; bit
flips on the wire and in the plaintext are caught and a re-sent chunk passes."""

from __future__ import annotations

import os
from pathlib import Path

import google_crc32c

from skyhop.models import GatewayRole, PeerSpec
from tests.fixtures.gateways import GatewayJob, MiB, gateway_job_fixture, provider_fixture  # noqa: F401 - pytest fixtures, registered by importing them


def _files(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    text = ("skyhop moves bytes between clouds. " * 40_000).encode()  # compressible
    files = {
        "big.bin": os.urandom(3 * MiB + 12345),  # multipart, 4 chunks, last one short
        "text/notes and spaces.txt": text,  # multipart and compressible
        "dir/δ ünïcode/κλειδί.dat": os.urandom(70_000),  # one chunk
        "empty": b"",  # zero bytes
    }
    out = {}
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[name] = path
    return out


def _copy_all(job: GatewayJob, source: str, src: Path, dst: Path, chunk_size: int = MiB) -> int:
    files = _files(src)
    chunks_by_file = {}
    next_id = 0
    for object_id, (name, path) in enumerate(sorted(files.items())):
        chunks = job.chunks_for(
            path, dst / name, chunk_size, object_id=object_id, first_chunk=next_id
        )
        next_id += len(chunks)
        chunks_by_file[name] = chunks
    every = [c for chunks in chunks_by_file.values() for c in chunks]
    job.submit(source, every)
    verified, failed = job.outcome({c.chunk_id for c in every})
    assert not failed, failed
    for name, chunks in chunks_by_file.items():
        for c in chunks:
            ev = verified[c.chunk_id]
            data = (src / name).read_bytes()[c.offset : c.offset + c.length]
            assert ev.crc32c == f"{google_crc32c.value(data):08x}"
            assert ev.length == c.length
        job.complete(chunks, verified)
    for name in files:
        assert (dst / name).read_bytes() == (src / name).read_bytes(), name
    return len(every)


def test_source_to_destination(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    src, dst = tmp_path / "src", tmp_path / "dst"
    job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(src)),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(dst)),
    )
    job.chain("src-0", "dst-0")
    n = _copy_all(job, "src-0", src, dst)
    status = job.clients["dst-0"].status()
    assert status.chunks_done == n and status.errors == 0 and status.chunks_in_flight == 0
    source = job.clients["src-0"].status()
    assert source.chunks_done == n and source.chunks_queued == 0
    # compressible segments travelled compressed
    assert source.bytes_sent < sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    # nothing staged or temporary is left behind
    assert sorted(p.name for p in dst.rglob(".skyhop-*")) == []


def test_source_relay_destination(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    src, dst = tmp_path / "src", tmp_path / "dst"
    job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(src)),
        job.config("relay-0", GatewayRole.RELAY),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(dst)),
    )
    job.chain("src-0", "relay-0", "dst-0")
    n = _copy_all(job, "src-0", src, dst)
    relay = job.clients["relay-0"].status()
    assert relay.chunks_done == n and relay.bytes_received == relay.bytes_sent > 0


def _flip_then_resend(job: GatewayJob, tmp_path: Path, hook: str) -> list[str]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    data = os.urandom(600_000)
    (src / "victim.bin").write_bytes(data)
    job.launch(
        job.config(
            "src-0", GatewayRole.SOURCE, source_uri=str(src), test_hooks={hook: "1"}, workers=1
        ),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(dst)),
    )
    job.chain("src-0", "dst-0")
    chunks = [
        c.model_copy(update={"attempt": 3})
        for c in job.chunks_for(src / "victim.bin", dst / "victim.bin", 8 * MiB)
    ]
    job.submit("src-0", chunks)
    verified, failed = job.outcome({0})
    assert verified == {} and set(failed) == {0}
    assert {f.attempt for f in failed[0]} == {3}  # the destination names the attempt
    assert not (dst / "victim.bin").exists()  # nothing written
    reasons = [f.reason for f in failed[0]]
    job.submit("src-0", chunks)  # the hook is spent: the re-sent chunk passes
    verified, failed = job.outcome({0})
    assert set(verified) == {0} and not failed
    assert (dst / "victim.bin").read_bytes() == data
    return reasons


def test_wire_flip_fails_authentication_then_resend_passes(
    gateway_job: GatewayJob, tmp_path: Path
) -> None:
    reasons = _flip_then_resend(gateway_job, tmp_path, "flip_wire")
    assert any("failed authentication" in r for r in reasons), reasons


def test_plaintext_flip_fails_crc_then_resend_passes(
    gateway_job: GatewayJob, tmp_path: Path
) -> None:
    reasons = _flip_then_resend(gateway_job, tmp_path, "flip_plain")
    assert any("CRC32C mismatch" in r for r in reasons), reasons


def test_changed_source_fails_the_chunk(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "moving.bin").write_bytes(os.urandom(10_000))
    job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(src)),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(dst)),
    )
    job.chain("src-0", "dst-0")
    chunks = [
        c.model_copy(update={"attempt": 2})
        for c in job.chunks_for(src / "moving.bin", dst / "moving.bin", MiB)
    ]
    (src / "moving.bin").write_bytes(os.urandom(10_001))  # changes after listing
    job.submit("src-0", chunks)
    verified, failed = job.outcome({0})
    assert not verified and "changed since it was listed" in failed[0][0].reason
    assert failed[0][0].attempt == 2  # the source names the attempt
    assert failed[0][0].retryable is False
    assert not (dst / "moving.bin").exists()
    # the gateway is still healthy
    assert job.clients["src-0"].status().state == "ready"


def test_source_spreads_chunks_over_several_next_hops(
    gateway_job: GatewayJob, tmp_path: Path
) -> None:
    job = gateway_job
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    files = {f"obj-{i}": os.urandom(300_000) for i in range(4)}
    for name, data in files.items():
        (src / name).write_bytes(data)
    job.launch(
        job.config(
            "src-0",
            GatewayRole.SOURCE,
            source_uri=str(src),
            connections=2,  # one sender thread per next hop
            workers=1,
            test_hooks={"sleep_per_chunk": "1.0"},  # so that both threads take chunks
        ),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(dst)),
        job.config("dst-1", GatewayRole.DESTINATION, destination_uri=str(dst)),
    )
    job.clients["src-0"].set_peers(
        [
            PeerSpec(gateway_id=g, host=job.specs[g].host, data_port=job.specs[g].data_port)
            for g in ("dst-0", "dst-1")
        ]
    )
    chunks = [
        c
        for i, name in enumerate(sorted(files))
        for c in job.chunks_for(src / name, dst / name, MiB, object_id=i, first_chunk=i)
    ]
    job.submit("src-0", chunks)
    verified, failed = job.outcome({c.chunk_id for c in chunks})
    assert not failed
    assert {e.gateway_id for e in verified.values()} == {"dst-0", "dst-1"}
    for name, data in files.items():
        assert (dst / name).read_bytes() == data


def test_chunk_larger_than_the_buffer_budget_is_refused(
    gateway_job: GatewayJob, tmp_path: Path
) -> None:
    """Held whole until verified, such a chunk would break the memory bound."""
    job = gateway_job
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    (src / "huge.bin").write_bytes(os.urandom(9 * MiB))
    job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(src)),
        job.config(
            "dst-0", GatewayRole.DESTINATION, destination_uri=str(dst), buffer_budget_bytes=8 * MiB
        ),
    )
    job.chain("src-0", "dst-0")
    chunks = job.chunks_for(src / "huge.bin", dst / "huge.bin", 16 * MiB)  # one 9 MiB chunk
    job.submit("src-0", chunks)
    verified, failed = job.outcome({0})
    assert not verified and "exceeds this gateway's chunk buffer budget" in failed[0][0].reason
    assert failed[0][0].retryable is False
    # the connection stays usable: a small object still goes through
    (src / "small.bin").write_bytes(b"fine")
    small = job.chunks_for(src / "small.bin", dst / "small.bin", MiB, object_id=1, first_chunk=1)
    job.submit("src-0", small)
    verified, failed = job.outcome({1})
    assert set(verified) == {1} and (dst / "small.bin").read_bytes() == b"fine"
