"""An object overwritten between its first and its last chunk never arrives as a
mix of old and new bytes: every ranged read pins the version listed (the local
store's mtime+size tag, S3 If-Match on the ETag, Azure's ETag condition), the
object is reported as changed, and the next sync copies its new version.

The source gateway is slowed down (test hook) so the test can overwrite the
object after the first chunk was verified and before the last one is read."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from azure.storage.blob import BlobServiceClient

from skyhop.models import ChunkState, JobState
from skyhop.state.sqlite import SQLiteManifest
from skyhop.uri import parse_uri
from tests.fixtures.cli import MIB, SMALL_PARTS, run_cli, start_cli, wait_no_gateways

SIZE = 3 * 5 * MIB  # three chunks
SLOW = {"SKYHOP_TEST_HOOKS": "source:sleep_per_chunk=1.5,direct:sleep_per_chunk=1.5"}


def _first_chunk_verified(home: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "manifest.db").exists():
            manifest = SQLiteManifest(home / "manifest.db")
            for job in manifest.list_jobs():
                verified = manifest.progress(job.job_id).chunks.get(ChunkState.VERIFIED, 0)
                if job.state == JobState.RUNNING and verified >= 1:
                    return job.job_id
        time.sleep(0.05)
    raise AssertionError("no chunk was verified")


def _overwrite_during_sync(
    src_uri: str, dst: Path, home: Path, overwrite: Callable[[bytes], None], old: bytes
) -> None:
    new = os.urandom(SIZE)
    proc = start_cli(
        "sync", src_uri, str(dst), "--json", "--connections", "1", *SMALL_PARTS, env=SLOW
    )
    job_id = _first_chunk_verified(home)
    overwrite(new)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    report = json.loads(out)
    assert report["state"] == "failed"
    assert any("changed" in f for f in report["failures"]), report["failures"]
    target = dst / "big.bin"
    # never a mix: either nothing, or exactly one version
    assert not target.exists() or target.read_bytes() in (old, new)
    assert not list(dst.glob(".skyhop-*"))  # the multipart upload was aborted
    assert wait_no_gateways(job_id) == []
    # the next sync copies the new version
    res = run_cli("sync", src_uri, str(dst), "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert target.read_bytes() == new


def test_local_source_overwritten_mid_copy(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    old = os.urandom(SIZE)
    (src / "big.bin").write_bytes(old)

    def overwrite(new: bytes) -> None:
        tmp = src / "big.bin.new"
        tmp.write_bytes(new)
        os.replace(tmp, src / "big.bin")

    _overwrite_during_sync(str(src), dst, skyhop_home, overwrite, old)


@pytest.mark.parametrize("how", ["replaced", "rewritten in place"])
def test_local_source_swapped_for_one_of_the_same_size_and_mtime(
    tmp_path: Path, skyhop_home: Path, how: str
):
    """#21 item 2: ``cp -p`` / ``rsync -t`` of another version over the file mid-copy
    (a new inode, the old mtime), or a rewrite in place with the mtime set back (the
    inode's ctime moved): neither size nor mtime tell; the inode and the ctime do."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    old = os.urandom(SIZE)
    path = src / "big.bin"
    path.write_bytes(old)
    stamp = path.stat().st_mtime_ns

    def overwrite(new: bytes) -> None:
        if how == "replaced":
            tmp = src / "big.bin.new"
            tmp.write_bytes(new)
            os.utime(tmp, ns=(stamp, stamp))
            os.replace(tmp, path)
        else:
            with open(path, "r+b") as fh:
                fh.write(new)
            os.utime(path, ns=(stamp, stamp))
        assert path.stat().st_mtime_ns == stamp and path.stat().st_size == SIZE

    _overwrite_during_sync(str(src), dst, skyhop_home, overwrite, old)


def test_s3_source_overwritten_mid_copy(moto, tmp_path: Path, skyhop_home: Path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="mid-copy")
    old = os.urandom(SIZE)
    s3.put_object(Bucket="mid-copy", Key="d/big.bin", Body=old)

    def overwrite(new: bytes) -> None:
        s3.put_object(Bucket="mid-copy", Key="d/big.bin", Body=new)

    _overwrite_during_sync("s3://mid-copy/d/", tmp_path / "dst", skyhop_home, overwrite, old)


@pytest.mark.usefixtures("azurite_server")
def test_azure_source_overwritten_mid_copy(
    azure_container: str, azurite_server, tmp_path: Path, skyhop_home: Path
):
    service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    blob = service.get_blob_client(parse_uri(azure_container).bucket, "d/big.bin")
    old = os.urandom(SIZE)
    blob.upload_blob(old)

    def overwrite(new: bytes) -> None:
        blob.upload_blob(new, overwrite=True)

    _overwrite_during_sync(azure_container + "d/", tmp_path / "dst", skyhop_home, overwrite, old)


def test_gcs_source_overwritten_mid_copy(
    gcs_bucket: str, gcs_server, tmp_path: Path, skyhop_home: Path
):
    if not gcs_server.pinning:
        pytest.skip("this GCS emulator ignores generation pins")
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    blob = client.bucket(parse_uri(gcs_bucket).bucket).blob("d/big.bin")
    old = os.urandom(SIZE)
    blob.upload_from_string(old)

    def overwrite(new: bytes) -> None:
        blob.upload_from_string(new)

    _overwrite_during_sync(gcs_bucket + "d/", tmp_path / "dst", skyhop_home, overwrite, old)
