"""`skyhop sync` between clouds on the emulators (moto, the GCS emulator, Azurite),
and the parallel prefix listing every store offers (delimiter listings merged
back into key order, with pages of two keys so paging really happens)."""

from __future__ import annotations

import csv
import os

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from skyhop.controlplane.fanout import list_parallel
from skyhop.stores import azure as azure_store
from skyhop.stores import gcs as gcs_store
from skyhop.stores.base import DelimitedLister, ObjectStore, open_store
from skyhop.stores.s3 import S3Store
from skyhop.uri import parse_uri
from tests.fixtures.cli import MIB, SMALL_PARTS, run_cli

FILES = {
    "a.txt": b"a" * 10,
    "dir/b.bin": os.urandom(2000),
    "dir/sub/c.bin": os.urandom(300),
    "big.bin": os.urandom(6 * MIB),
}


def _gcs_objects(bucket_uri: str, prefix: str) -> dict[str, bytes]:
    client = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    return {
        b.name[len(prefix) :]: b.download_as_bytes()
        for b in client.list_blobs(parse_uri(bucket_uri).bucket, prefix=prefix)
    }


def test_s3_to_gcs_sync_checksum_and_delete(moto, gcs_bucket):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="sync-src")
    for key, body in FILES.items():
        s3.put_object(Bucket="sync-src", Key=key, Body=body)
    dst = gcs_bucket  # the bucket root: skyhop's own staging objects must survive --delete
    client = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    bucket = client.bucket(parse_uri(gcs_bucket).bucket)
    bucket.blob(".skyhop-uploads/0123abcd/upload.json").upload_from_string(b"{}")
    bucket.blob("stale.txt").upload_from_string(b"old")

    res = run_cli("sync", "s3://sync-src/", dst, "--delete", "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert res.report["objects"] == len(FILES) and res.report["sync"]["deleted"] == 1
    got = _gcs_objects(dst, "")
    assert {k: v for k, v in got.items() if not k.startswith(".skyhop-")} == FILES
    assert ".skyhop-uploads/0123abcd/upload.json" in got

    # a same-size rewrite right after the sync: the times do not tell (S3 keeps whole
    # seconds), the MD5s do
    s3.put_object(Bucket="sync-src", Key="dir/b.bin", Body=os.urandom(2000))
    res = run_cli("sync", "s3://sync-src/", dst, "--checksum", "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert res.report["objects"] == 1
    rows = _rows(res.report)
    assert rows["dir/b.bin"] == ("copied", "")
    assert rows["a.txt"] == ("skipped", "md5")
    assert rows["big.bin"][0] == "skipped"
    body = s3.get_object(Bucket="sync-src", Key="dir/b.bin")["Body"].read()
    assert _gcs_objects(dst, "dir/")["b.bin"] == body

    res = run_cli("sync", "s3://sync-src/", dst, "--checksum", "--json")
    assert res.code == 0 and res.report["objects"] == 0


def _rows(report: dict) -> dict[str, tuple[str, str]]:
    with open(report["csv"], newline="", encoding="utf-8") as fh:
        return {
            r["key"]: (r["action"], r["checksum_method"] if r["action"] == "skipped" else "")
            for r in csv.DictReader(fh)
        }


def test_azure_to_s3_sync_second_run_moves_nothing(moto, azure_container, azurite_server):
    service = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    container = service.get_container_client(parse_uri(azure_container).bucket)
    for key, body in FILES.items():
        container.upload_blob(f"src/{key}", body)
    boto3.client("s3").create_bucket(Bucket="sync-dst")
    res = run_cli("sync", azure_container + "src/", "s3://sync-dst/x/", "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert res.report["objects"] == len(FILES)
    res = run_cli("sync", azure_container + "src/", "s3://sync-dst/x/", "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert res.report["objects"] == 0 and res.report["sync"]["skipped"] == len(FILES)


# ---------------------------------------------------------------- parallel listing

KEYS = sorted(
    [
        "a-b",
        "a.txt",
        "a/1",
        "a/2",
        "a/x/1",
        "a/x/2",
        "a/y/1",
        "a0",
        "b/c/d/e",
        "ü/1",
        "z",
    ],
    key=lambda k: k.encode(),
)


def _check_parallel(store: ObjectStore, prefix: str) -> None:
    assert isinstance(store, DelimitedLister)
    plain = [i.key for i in store.list(prefix)]
    assert plain == [prefix + k for k in KEYS]
    one_level = [e if isinstance(e, str) else e.key for e in store.list_delimited(prefix)]
    assert one_level == [prefix + k for k in ["a-b", "a.txt", "a/", "a0", "b/", "z", "ü/"]]
    for depth in (1, 2, 3):
        got = list_parallel(store, prefix, workers=3, depth=depth, window=2, batch=1)
        assert [i.key for i in got] == plain


def test_parallel_listing_s3(moto):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="list-par")
    for key in KEYS:
        s3.put_object(Bucket="list-par", Key="p/" + key, Body=b"x")
    _check_parallel(S3Store(parse_uri("s3://list-par"), page_size=2), "p/")


def test_parallel_listing_gcs(gcs_bucket, gcs_server, monkeypatch: pytest.MonkeyPatch):
    if not gcs_server.paging:
        pytest.skip("this GCS emulator ignores page sizes")
    monkeypatch.setattr(gcs_store, "LIST_PAGE_SIZE", 2)
    store = open_store(parse_uri(gcs_bucket))
    for key in KEYS:
        store.put("p/" + key, b"x")
    _check_parallel(store, "p/")


def test_parallel_listing_azure(azure_container, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(azure_store, "LIST_PAGE_SIZE", 2)
    store = open_store(parse_uri(azure_container))
    for key in KEYS:
        store.put("p/" + key, b"x")
    _check_parallel(store, "p/")


def test_parallel_listing_local(tmp_path):
    root = tmp_path / "p"
    for key in KEYS:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    store = open_store(parse_uri(str(tmp_path)))
    _check_parallel(store, str(root).lstrip("/") + "/")
