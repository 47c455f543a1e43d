"""The per-store part defaults of issue 20 are what a job is cut into.

A job that leaves the part size, multipart threshold and concurrency open takes
them from its DESTINATION store's Capabilities (aws-cli's 8 MiB x 10 for S3,
8 MiB x 16 for Azure's staged blocks, 32 MiB x 8 for GCS's composed parts,
whole files up to 128 MiB then 64 MiB x 4 locally): the chunks recorded in the
manifest, the multipart uploads started at the real emulators, and the direct
path's worker count are checked here. The source files are sparse, so no data
is written; only listing and chunking happen.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane.direct import DirectRunner
from skyhop.controlplane.service import ControlPlane
from skyhop.models import TransferOptions, TransferRequest
from skyhop.state.sqlite import SQLiteManifest

MIB = 1024 * 1024
SIZE = 40 * MIB  # above every cloud store's threshold, below the local one
HUGE = 200 * MIB  # above the local threshold


def _sparse(path: Path, size: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.truncate(size)


def _cut(cp: ControlPlane, src: Path | str, dst: str, **options: object) -> dict[str, object]:
    job = cp.create_job(
        TransferRequest(source=str(src), destination=dst, options=TransferOptions(**options))
    )
    try:
        (entry,) = list(cp.manifest.iter_objects(job.job_id))
        chunks = sorted(cp.manifest.iter_chunks(job.job_id), key=lambda c: c.index)
        src_store = cp.store(job.request.source_uri)
        dst_store = cp.store(job.request.destination_uri)
        return {
            "part": entry.chunk_size,
            "multipart": entry.multipart,
            "upload": entry.upload_id,
            "lengths": [c.length for c in chunks],
            "offsets": [c.offset for c in chunks],
            "workers": DirectRunner(cp)._workers(job, src_store, dst_store),
            "options": job.request.options,
        }
    finally:
        cp.abort_uploads(job.job_id)


@pytest.fixture
def cp(tmp_path: Path) -> ControlPlane:
    return ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())


def _parts(size: int, part: int) -> list[int]:
    return [min(part, size - o) for o in range(0, size, part)]


def test_s3_destination_is_cut_as_aws_cli_cuts(cp: ControlPlane, tmp_path: Path, moto):
    import boto3

    boto3.client("s3").create_bucket(Bucket="skyhop-parts")
    _sparse(tmp_path / "big.bin", SIZE)
    got = _cut(cp, tmp_path / "big.bin", "s3://skyhop-parts/big.bin")
    assert got["part"] == 8 * MIB and got["multipart"] and got["upload"]
    assert got["lengths"] == _parts(SIZE, 8 * MIB) and len(got["lengths"]) == 5
    assert got["offsets"] == list(range(0, SIZE, 8 * MIB))
    assert got["workers"] == 10
    # fixed in the job, so a resumed job cuts the same way
    assert got["options"].chunk_size == 8 * MIB
    assert got["options"].multipart_threshold == 8 * MIB
    # a multipart upload was really started at S3 (and aborted by _cut)
    assert boto3.client("s3").list_multipart_uploads(Bucket="skyhop-parts").get("Uploads") is None


def test_azure_destination_stages_8_mib_blocks_16_at_once(
    cp: ControlPlane, tmp_path: Path, azure_container: str
):
    _sparse(tmp_path / "big.bin", SIZE)
    got = _cut(cp, tmp_path / "big.bin", azure_container + "big.bin")
    assert got["part"] == 8 * MIB and got["multipart"] and got["upload"]
    assert got["lengths"] == _parts(SIZE, 8 * MIB)
    assert got["workers"] == 16


def test_gcs_destination_composes_32_mib_parts(cp: ControlPlane, tmp_path: Path, gcs_bucket: str):
    _sparse(tmp_path / "big.bin", SIZE)
    got = _cut(cp, tmp_path / "big.bin", gcs_bucket + "big.bin")
    assert got["part"] == 32 * MIB and got["multipart"] and got["upload"]
    assert got["lengths"] == [32 * MIB, 8 * MIB]
    assert got["workers"] == 8
    # at the threshold an object is still one PUT
    _sparse(tmp_path / "edge.bin", 32 * MIB)
    edge = _cut(cp, tmp_path / "edge.bin", gcs_bucket + "edge.bin")
    assert not edge["multipart"] and edge["lengths"] == [32 * MIB]


def test_local_destination_takes_whole_files_up_to_128_mib(cp: ControlPlane, tmp_path: Path):
    _sparse(tmp_path / "src" / "big.bin", SIZE)
    got = _cut(cp, tmp_path / "src" / "big.bin", str(tmp_path / "dst" / "big.bin"))
    assert not got["multipart"] and got["lengths"] == [SIZE]
    assert got["workers"] == 4
    _sparse(tmp_path / "src" / "huge.bin", HUGE)
    huge = _cut(cp, tmp_path / "src" / "huge.bin", str(tmp_path / "dst" / "huge.bin"))
    assert huge["multipart"] and huge["part"] == 64 * MIB
    assert huge["lengths"] == _parts(HUGE, 64 * MIB) and len(huge["lengths"]) == 4


def test_explicit_options_win_over_the_store_defaults(cp: ControlPlane, tmp_path: Path, moto):
    import boto3

    boto3.client("s3").create_bucket(Bucket="skyhop-parts-explicit")
    _sparse(tmp_path / "big.bin", SIZE)
    got = _cut(
        cp,
        tmp_path / "big.bin",
        "s3://skyhop-parts-explicit/big.bin",
        chunk_size=16 * MIB,
        multipart_threshold=16 * MIB,
        connections=3,
    )
    assert got["part"] == 16 * MIB and got["lengths"] == [16 * MIB, 16 * MIB, 8 * MIB]
    assert got["workers"] == 3


def test_a_source_store_with_more_concurrency_raises_the_workers(
    cp: ControlPlane, tmp_path: Path, azure_container: str
):
    """Azure -> local: the larger concurrency of the two stores (Azure's 16) is used,
    bounded by the in-flight byte budget."""
    from skyhop.stores.base import open_store
    from skyhop.uri import parse_uri

    store = open_store(parse_uri(azure_container))
    store.put("x.bin", os.urandom(1000))
    got = _cut(cp, azure_container + "x.bin", str(tmp_path / "x.bin"))
    assert got["workers"] == 16 and got["lengths"] == [1000]
