"""`skyhop sync` never misses a change: what a user does, on every store.

Sync a directory, edit a file (same size) within 200 ms, sync again, compare
the bytes; replace a file by an older one (``cp -p``, ``rsync -t``, ``tar x``)
and sync again; a file with a future modification time is copied once, not on
every sync. The destination is local, S3 (moto), GCS (fake-gcs-server) and
Azure (Azurite): each keeps the source's modification time (a file's own mtime;
user metadata ``mtime`` on the clouds, as rclone writes it) and ``sync``
compares it for equality within the precision the store keeps.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from azure.storage.blob import BlobServiceClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from skyhop.uri import parse_uri
from tests.fixtures.cli import MIB, SMALL_PARTS, Result, run_cli

FILES = {
    "a.txt": b"alpha-1\n",
    "dir/b.bin": os.urandom(3000),
    "dir/sub/c.txt": b"gamma" * 50,
    "big.bin": os.urandom(6 * MIB),  # two parts: the multipart path keeps it too
}


@dataclass
class Dest:
    uri: str  # the destination prefix, with a trailing slash
    read: Callable[[], dict[str, bytes]]  # relative key -> bytes, skyhop's own objects left out


def _local_dest(tmp_path: Path) -> Dest:
    root = tmp_path / "dst"

    def read() -> dict[str, bytes]:
        return {
            p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*"))
            if p.is_file() and ".skyhop-" not in p.as_posix()
        }

    return Dest(str(root) + "/", read)


def _s3_dest() -> Dest:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="mtime-dst")

    def read() -> dict[str, bytes]:
        out = {}
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mtime-dst", Prefix="p/"):
            for item in page.get("Contents", ()):
                body = s3.get_object(Bucket="mtime-dst", Key=item["Key"])["Body"].read()
                out[item["Key"][2:]] = body
        return out

    return Dest("s3://mtime-dst/p/", read)


def _gcs_dest(bucket_uri: str) -> Dest:
    client = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    bucket = parse_uri(bucket_uri).bucket

    def read() -> dict[str, bytes]:
        return {
            b.name[2:]: b.download_as_bytes()
            for b in client.list_blobs(bucket, prefix="p/")
            if ".skyhop-" not in b.name
        }

    return Dest(bucket_uri + "p/", read)


def _azure_dest(container_uri: str, conn: str) -> Dest:
    service = BlobServiceClient.from_connection_string(conn)
    container = service.get_container_client(parse_uri(container_uri).bucket)

    def read() -> dict[str, bytes]:
        return {
            b.name[2:]: container.download_blob(b.name).readall()
            for b in container.list_blobs(name_starts_with="p/")
        }

    return Dest(container_uri + "p/", read)


@pytest.fixture(params=["local", "s3", "gcs", "azure"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Dest]:
    kind = request.param
    if kind == "local":
        yield _local_dest(tmp_path)
    elif kind == "s3":
        request.getfixturevalue("moto")
        yield _s3_dest()
    elif kind == "gcs":
        yield _gcs_dest(request.getfixturevalue("gcs_bucket"))
    else:
        server = request.getfixturevalue("azurite_server")
        yield _azure_dest(request.getfixturevalue("azure_container"), server.connection_string)


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def _source(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _sync(src: Path, dest: Dest) -> Result:
    res = run_cli("sync", str(src), dest.uri, "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    return res


def _actions(res: Result) -> dict[str, tuple[str, str]]:
    with open(res.report["csv"], newline="", encoding="utf-8") as fh:
        return {r["key"].rsplit("/", 1)[-1]: (r["action"], r["reason"]) for r in csv.DictReader(fh)}


def test_no_change_is_missed_and_nothing_is_copied_twice(tmp_path: Path, dest: Dest):
    src = tmp_path / "src"
    _tree(src, FILES)
    ahead = time.time() + 7 * 24 * 3600  # a clock that ran ahead, or a file from one
    os.utime(src / "dir" / "sub" / "c.txt", (ahead, ahead))
    first = _sync(src, dest)
    assert first.report["objects"] == len(FILES)
    assert dest.read() == FILES

    # a same-size edit within 200 ms of the sync's end, and a file replaced by an
    # older version of the same size (cp -p, rsync -t, tar x)
    (src / "a.txt").write_bytes(b"alpha-2\n")
    older = src / "dir" / "b.bin"
    stamp = older.stat().st_mtime - 3600
    older.write_bytes(os.urandom(3000))
    os.utime(older, (stamp, stamp))
    res = _sync(src, dest)
    actions = _actions(res)
    assert res.report["objects"] == 2, actions
    assert actions["a.txt"][0] == actions["b.bin"][0] == "copied", actions
    assert dest.read() == _source(src)

    # nothing changed: nothing is copied, however soon the next sync runs (the file
    # with a future time included)
    res = _sync(src, dest)
    assert res.report["objects"] == 0, _actions(res)
    assert res.report["sync"]["skipped"] == len(FILES)
