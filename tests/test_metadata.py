"""Metadata carried across clouds: S3 (moto) -> GCS (emulator) -> Azure (Azurite),
through real gateways, for a one-chunk object (written by the destination
gateway) and a multipart one (its upload started by the control plane).

Content type, content encoding, cache control and user metadata travel; the
storage class / access tier is set per destination with --storage-class."""

from __future__ import annotations

import gzip
import os

import boto3
from azure.storage.blob import BlobServiceClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from skyhop.stores.mtime import parse as parse_mtime
from skyhop.uri import parse_uri
from tests.fixtures.cli import MIB, SMALL_PARTS, run_cli

PAGE = gzip.compress(b"<html>" + b"skyhop " * 2000 + b"</html>")
BLOB = os.urandom(11 * MIB + 3)  # three parts of 5 MiB

OBJECTS = {
    "page.html": (
        PAGE,
        {
            "ContentType": "text/html; charset=utf-8",
            "ContentEncoding": "gzip",
            "CacheControl": "public, max-age=60",
            "Metadata": {"owner": "team-a", "build": "42"},
        },
    ),
    "blob.bin": (
        BLOB,
        {
            "ContentType": "application/x-skyhop",
            "CacheControl": "no-cache",
            "Metadata": {"kind": "multipart"},
        },
    ),
}


def _gcs_blobs(bucket_uri: str, prefix: str) -> dict[str, storage.Blob]:
    client = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    bucket = parse_uri(bucket_uri).bucket
    return {
        b.name[len(prefix) :]: b
        for b in client.list_blobs(bucket, prefix=prefix)
        if not b.name.startswith(".skyhop-")
    }


def test_metadata_s3_to_gcs_to_azure(moto, gcs_bucket, azure_container, azurite_server, tmp_path):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="meta-src")
    for name, (body, extra) in OBJECTS.items():
        s3.put_object(Bucket="meta-src", Key=f"data/{name}", Body=body, **extra)

    # S3 -> GCS
    res = run_cli("sync", "s3://meta-src/data/", gcs_bucket + "copy/", "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert res.report["objects"] == 2
    blobs = _gcs_blobs(gcs_bucket, "copy/")
    assert set(blobs) == set(OBJECTS)
    for name, (body, extra) in OBJECTS.items():
        blob = blobs[name]
        assert blob.content_type == extra["ContentType"]
        assert blob.cache_control == extra["CacheControl"]
        assert blob.content_encoding == extra.get("ContentEncoding")
        # user metadata, plus the source's modification time as rclone and gsutil keep it
        kept = dict(blob.metadata)
        source_time = s3.head_object(Bucket="meta-src", Key=f"data/{name}")["LastModified"]
        assert parse_mtime(kept.pop("mtime")) == source_time.timestamp()
        assert int(kept.pop("goog-reserved-file-mtime")) == int(source_time.timestamp())
        assert kept == extra["Metadata"]
        assert blob.download_as_bytes(raw_download=True) == body

    # GCS -> Azure, with an access tier for the destination
    res = run_cli(
        "sync",
        gcs_bucket + "copy/",
        azure_container + "copy/",
        "--storage-class",
        "cool",
        "--json",
        *SMALL_PARTS,
    )
    assert res.code == 0, res.stderr
    assert res.report["objects"] == 2
    service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    container = service.get_container_client(parse_uri(azure_container).bucket)
    for name, (body, extra) in OBJECTS.items():
        blob = container.get_blob_client(f"copy/{name}")
        props = blob.get_blob_properties()
        settings = props.content_settings
        assert settings.content_type == extra["ContentType"]
        assert settings.cache_control == extra["CacheControl"]
        assert settings.content_encoding == extra.get("ContentEncoding")
        kept = dict(props.metadata)
        assert "mtime" in kept and "goog-reserved-file-mtime" not in kept
        kept.pop("mtime")
        assert kept == extra["Metadata"]
        assert str(props.blob_tier).lower() == "cool"
        assert blob.download_blob(decompress=False).readall() == body

    # Azure -> local: the stored bytes, never a decompressed copy
    local = tmp_path / "local"
    res = run_cli("sync", azure_container + "copy/", str(local), "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert {p.name: p.read_bytes() for p in local.iterdir()} == {
        name: body for name, (body, _extra) in OBJECTS.items()
    }

    # and a second sync of the chain moves nothing
    res = run_cli("sync", "s3://meta-src/data/", gcs_bucket + "copy/", "--checksum", "--json")
    assert res.code == 0, res.stderr
    assert res.report["objects"] == 0 and res.report["sync"]["skipped"] == 2


def test_storage_class_on_s3(moto, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "cold.bin").write_bytes(b"c" * 100)
    boto3.client("s3").create_bucket(Bucket="meta-dst")
    res = run_cli(
        "cp", "-r", str(src), "s3://meta-dst/x/", "--storage-class", "STANDARD_IA", "--json"
    )
    assert res.code == 0, res.stderr
    head = boto3.client("s3").head_object(Bucket="meta-dst", Key="x/cold.bin")
    assert head["StorageClass"] == "STANDARD_IA"
