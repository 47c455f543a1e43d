"""The store matrix: the same awkward tree copied across all 16 ordered pairs of
{local, S3 on moto, GCS on its emulator, Azure on Azurite} with the real
``skyhop cp``, on both data paths of this machine: real local gateway processes
(``--gateways local``) and the direct path (the CLI process itself).

Each pair checks that the destination holds exactly the source's bytes (read
back with the cloud's own SDK, not with skyhop), that the report verified
every object with zero mismatches, and that the checksum methods it names are
the ones each cloud allows: the destination listing check per destination
store (``verification.checksum_methods``) and the source comparison per
object (the CSV report's ``checksum_method``).

The source trees are written once per module with each cloud's SDK (the S3
multi-part object as a real 5 MiB-part multipart upload, so its ETag has
``-3``); each pair writes under its own destination prefix.
"""

from __future__ import annotations

import csv
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest

from tests.fixtures.cli import GATEWAYS, MIB, SMALL_PARTS, run_cli, wait_no_gateways
from tests.fixtures.emulators import Azurite, GCSEmulator
from tests.fixtures.services import MotoServer

PART = 5 * MIB
MULTI = "multi/part.bin"

#: the awkward tree: unicode and spaced keys, characters URLs escape, deep
#: nesting, a zero-byte object and one that travels as 3 parts of 5 MiB
TREE: dict[str, bytes] = {
    "plain.txt": b"hello skyhop\n",
    "with space/file name.txt": b"spaces " * 100,
    "ünïcødé/日本語/ファイル.bin": os.urandom(3000),
    "odd/a+b=c&d;e,f@(g)'h' ~!$.txt": b"odd characters\n",
    "odd/100% #1.txt": b"percent and hash\n",
    "deep/" + "/".join(f"d{i}" for i in range(8)) + "/leaf.dat": os.urandom(777),
    "empty/zero.bin": b"",
    MULTI: os.urandom(2 * PART + 12345),
}

STORES = ("local", "s3", "gcs", "azure")
#: the two data paths of a job on this machine: local gateway processes, and the
#: CLI process itself (the default when no hop crosses machines)
PATHS = {"gateways": GATEWAYS, "direct": []}

#: destination listing check: what each destination store offers to compare
DEST_METHODS = {
    # the CRC32C the local store records with each file as it writes it
    "local": {"crc32c": len(TREE)},
    "s3": {"md5": len(TREE) - 1, "s3-multipart-etag": 1},
    "gcs": {"crc32c": len(TREE)},
    # Content-MD5 on every single put; a block-list commit has no whole-object MD5
    "azure": {"md5": len(TREE) - 1, "size+crc32c-transfer": 1},
}

#: source comparison per object: (small objects, the multi-part object)
SOURCE_METHODS = {
    "local": ("crc32c-transfer", "crc32c-transfer"),
    "s3": ("md5", "s3-multipart-etag"),
    "gcs": ("crc32c", "crc32c"),
    # the blob's Content-MD5 is of the whole object: not comparable with parts
    "azure": ("md5", "crc32c-transfer"),
}


@dataclass
class Side:
    """One store of the matrix: where sources live, where copies go, how to read back."""

    name: str
    src_uri: str
    dst_uri: Callable[[str], str]  # pair id -> destination URI (a fresh prefix)
    read: Callable[[str], dict[str, bytes]]  # destination URI -> relative key -> bytes


# ---------------------------------------------------------------- the four stores


def _local(root: Path) -> Side:
    src = root / "src"
    for rel, body in TREE.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)

    def read(uri: str) -> dict[str, bytes]:
        base = Path(uri)
        return {
            p.relative_to(base).as_posix(): p.read_bytes() for p in base.rglob("*") if p.is_file()
        }

    return Side("local", str(src), lambda pair: str(root / "dst" / pair), read)


def _s3() -> Side:
    s3 = boto3.client("s3")
    src_bucket, dst_bucket = f"mx-src-{uuid.uuid4().hex[:8]}", f"mx-dst-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=src_bucket)
    s3.create_bucket(Bucket=dst_bucket)
    for rel, body in TREE.items():
        key = "src/" + rel
        if rel != MULTI:
            s3.put_object(Bucket=src_bucket, Key=key, Body=body)
            continue
        upload = s3.create_multipart_upload(Bucket=src_bucket, Key=key)["UploadId"]
        parts = []
        for n, i in enumerate(range(0, len(body), PART), start=1):
            tag = s3.upload_part(
                Bucket=src_bucket, Key=key, UploadId=upload, PartNumber=n, Body=body[i : i + PART]
            )["ETag"]
            parts.append({"PartNumber": n, "ETag": tag})
        s3.complete_multipart_upload(
            Bucket=src_bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts}
        )

    def read(uri: str) -> dict[str, bytes]:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                out[obj["Key"][len(prefix) :]] = body
        return out

    return Side("s3", f"s3://{src_bucket}/src/", lambda pair: f"s3://{dst_bucket}/{pair}/", read)


def _gcs() -> Side:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    src_bucket, dst_bucket = f"mx-src-{uuid.uuid4().hex[:8]}", f"mx-dst-{uuid.uuid4().hex[:8]}"
    client.create_bucket(src_bucket)
    client.create_bucket(dst_bucket)
    for rel, body in TREE.items():
        client.bucket(src_bucket).blob("src/" + rel).upload_from_string(body)

    def read(uri: str) -> dict[str, bytes]:
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        return {
            blob.name[len(prefix) :]: blob.download_as_bytes()
            for blob in client.list_blobs(bucket, prefix=prefix)
        }

    return Side("gcs", f"gs://{src_bucket}/src/", lambda pair: f"gs://{dst_bucket}/{pair}/", read)


def _azure(azurite: Azurite) -> Side:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    src_name, dst_name = f"mx-src-{uuid.uuid4().hex[:8]}", f"mx-dst-{uuid.uuid4().hex[:8]}"
    src, dst = service.create_container(src_name), service.create_container(dst_name)
    for rel, body in TREE.items():
        src.upload_blob("src/" + rel, body)
    del dst

    def read(uri: str) -> dict[str, bytes]:
        _, container, prefix = uri.removeprefix("az://").split("/", 2)
        client = service.get_container_client(container)
        return {
            blob.name[len(prefix) :]: client.download_blob(blob.name).readall()
            for blob in client.list_blobs(name_starts_with=prefix)
        }

    return Side(
        "azure",
        azurite.container_uri(src_name, "src/"),
        lambda pair: azurite.container_uri(dst_name, pair + "/"),
        read,
    )


@pytest.fixture(scope="module")
def sides(
    tmp_path_factory: pytest.TempPathFactory,
    moto_server: MotoServer,
    gcs_server: GCSEmulator,
    azurite_server: Azurite,
) -> Iterator[dict[str, Side]]:
    """The four stores with the awkward tree written once at each as a source."""
    root = tmp_path_factory.mktemp("matrix")
    yield {
        "local": _local(root),
        "s3": _s3(),
        "gcs": _gcs(),
        "azure": _azure(azurite_server),
    }


TIMES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _print_times() -> Iterator[None]:
    yield
    if TIMES:
        print("\n\npair              seconds")
        for pair, seconds in TIMES.items():
            print(f"{pair:<17} {seconds:7.1f}")


# ---------------------------------------------------------------- the 16 pairs


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dst", STORES)
@pytest.mark.parametrize("src", STORES)
def test_copy_matrix(sides: dict[str, Side], src: str, dst: str, path: str) -> None:
    source, dest = sides[src], sides[dst]
    pair = f"{src}-to-{dst}-{path}"
    target = dest.dst_uri(pair)
    started = time.monotonic()
    res = run_cli(
        "cp", "-r", source.src_uri, target, "--json", "--quiet", *SMALL_PARTS, *PATHS[path]
    )
    TIMES[pair] = time.monotonic() - started
    assert res.code == 0, res.stderr
    report = res.report

    # every byte arrived, under the same keys
    got = dest.read(target)
    assert sorted(got) == sorted(TREE)
    for rel, body in TREE.items():
        assert got[rel] == body, f"{pair}: {rel!r} differs"

    # the report: all verified, nothing missing or different, the methods named
    assert report["state"] == "succeeded", report
    assert report["objects"] == len(TREE) and report["objects_failed"] == 0
    assert report["failures"] == []
    verification = report["verification"]
    assert verification["checked"] == len(TREE)
    assert verification["missing"] == []
    assert verification["size_mismatches"] == []
    assert verification["checksum_mismatches"] == []
    expected_methods = DEST_METHODS[dst]
    small, multi = SOURCE_METHODS[src]
    if path == "direct" and src == dst == "azure":
        # Copy Blob (a same-account server-side copy) carries the source's
        # Content-MD5, the multi-block object's included
        expected_methods = {"md5": len(TREE)}
        small = multi = "md5"
    if path == "direct" and src == "local" and dst == "s3":
        # parts and objects go with the CRC32C of the bytes read, which S3 checks
        # (each part, and the whole object at completion): no MD5 is computed
        expected_methods = {"size+crc32c-transfer": len(TREE)}
    assert verification["checksum_methods"] == expected_methods

    with open(report["csv"], newline="", encoding="utf-8") as fh:
        rows = {row["key"]: row for row in csv.DictReader(fh)}
    assert len(rows) == len(TREE)
    for key, row in rows.items():
        assert row["action"] == "copied", row
        expected = multi if key.endswith(MULTI) else small
        assert row["checksum_method"] == expected, (pair, key, row)
    assert wait_no_gateways(report["job_id"]) == []
