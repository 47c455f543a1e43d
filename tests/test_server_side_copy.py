"""Same-store copies on the direct path: GCS -> GCS by ``rewrite`` on
fake-gcs-server, Azure -> Azure by Copy Blob on Azurite (S3's CopyObject /
UploadPartCopy is tested in test_cp_e2e.py).

Both services copy whole objects only, so an object the default part size would
cut is one chunk here; the report counts the copies, the copies' checksums are
compared with the source's and with the destination listing, and the bytes read
back equal the source's. Emulator limits, checked by hand against these
versions: Azurite 3.35 answers APINotImplemented to Put Block From URL and Put
Blob From URL (so the ranged copy is not used); fake-gcs-server answers every
rewrite in one call (so the rewrite-token loop is tested against a stub below)
and ignores ``ifSourceGenerationMatch`` (the source generation pin,
``sourceGeneration``, is honoured and is what skyhop relies on).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skyhop.errors import PreconditionFailed
from skyhop.models import ChunkState
from skyhop.state.sqlite import SQLiteManifest
from skyhop.stores.base import open_store
from skyhop.stores.gcs import GCSStore
from skyhop.uri import parse_uri
from tests.fixtures.cli import GATEWAYS, MIB, SMALL_PARTS, run_cli
from tests.fixtures.emulators import fresh_container

FILES = {
    "a.txt": b"hello",
    "sub/b.bin": os.urandom(1000),
    "empty": b"",
    "big.bin": os.urandom(12 * MIB),  # three parts with SMALL_PARTS, were it not copied
}


def _put_tree(uri: str, files: dict[str, bytes]) -> None:
    store = open_store(parse_uri(uri))
    prefix = parse_uri(uri).key
    for rel, body in files.items():
        store.put(prefix + rel, body)


def _read_tree(uri: str) -> dict[str, bytes]:
    parsed = parse_uri(uri)
    store = open_store(parsed)
    return {
        info.key[len(parsed.key) :]: store.read_range(info.key, 0, info.size)
        for info in store.list(parsed.key)
    }


def _assert_copied(res: Any, home: Path, method: str) -> None:
    assert res.code == 0, res.stderr
    report = res.report
    assert report["state"] == "succeeded" and report["objects_failed"] == 0, report
    assert report["data_path"] == "direct" and report["server_side_copies"] == len(FILES)
    verification = report["verification"]
    assert verification["checked"] == len(FILES)
    assert not verification["missing"] and not verification["size_mismatches"]
    assert not verification["checksum_mismatches"]
    assert verification["checksum_methods"].get(method, 0) >= len(FILES) - 1, verification
    chunks = list(SQLiteManifest(home / "manifest.db").iter_chunks(report["job_id"]))
    # whole objects: one chunk each, the big one included
    assert len(chunks) == len(FILES) and all(c.state == ChunkState.VERIFIED for c in chunks)


@pytest.fixture
def second_container(azurite_server: Any) -> Iterator[str]:
    with fresh_container(azurite_server) as uri:
        yield uri


def test_gcs_to_gcs_is_rewritten_by_gcs(gcs_bucket: str, skyhop_home: Path):
    other = gcs_bucket.rstrip("/") + "-dst/"
    open_store(parse_uri(gcs_bucket)).client.create_bucket(parse_uri(other).bucket)
    _put_tree(gcs_bucket + "data/", FILES)
    res = run_cli("cp", "-r", gcs_bucket + "data/", other + "copy/", "--json", *SMALL_PARTS)
    # GCS computes the copy's CRC32C where it writes it; compared with the source's
    _assert_copied(res, skyhop_home, "crc32c")
    assert _read_tree(other + "copy/") == FILES
    # through gateways the bytes move instead (and nothing is counted as copied)
    res = run_cli(
        "cp", "-r", gcs_bucket + "data/", other + "gw/", "--json", *SMALL_PARTS, *GATEWAYS,
    )  # fmt: skip
    assert res.code == 0, res.stderr
    assert res.report["server_side_copies"] == 0 and res.report["data_path"] == "gateways"
    assert _read_tree(other + "gw/") == FILES


def test_azure_to_azure_is_copied_by_the_service(
    azure_container: str, second_container: str, skyhop_home: Path
):
    _put_tree(azure_container + "data/", FILES)
    res = run_cli(
        "cp", "-r", azure_container + "data/", second_container + "copy/", "--json",
        *SMALL_PARTS,
    )  # fmt: skip
    # the copy keeps the source's Content-MD5 (skyhop sets one on every put)
    _assert_copied(res, skyhop_home, "md5")
    assert _read_tree(second_container + "copy/") == FILES


def test_a_copy_pinned_to_a_replaced_source_fails(
    gcs_bucket: str, azure_container: str, second_container: str
):
    """The source changed after listing: the copy is refused, nothing is written."""
    for src_uri, dst_uri in ((gcs_bucket, gcs_bucket), (azure_container, second_container)):
        store = open_store(parse_uri(src_uri))
        dst = open_store(parse_uri(dst_uri))
        old = store.put("pinned.bin", b"first version")
        store.put("pinned.bin", b"second version")
        assert dst.can_copy_from(store)  # type: ignore[attr-defined]
        with pytest.raises(PreconditionFailed):
            dst.copy_object(  # type: ignore[attr-defined]
                store, "pinned.bin", "pinned-copy.bin", 13, if_match=old.etag
            )
        assert dst.head("pinned-copy.bin") is None


def test_stores_of_another_service_or_account_are_not_copied(
    gcs_bucket: str, azure_container: str, moto
):
    gcs = open_store(parse_uri(gcs_bucket))
    azure = open_store(parse_uri(azure_container))
    s3 = open_store(parse_uri("s3://any-bucket"))
    local = open_store(parse_uri("/tmp"))
    other_account = open_store(parse_uri("az://otheraccount/ccc"))
    assert not gcs.can_copy_from(azure) and not gcs.can_copy_from(s3)  # type: ignore[attr-defined]
    assert not azure.can_copy_from(gcs) and not azure.can_copy_from(local)  # type: ignore[attr-defined]
    assert not other_account.can_copy_from(azure)  # type: ignore[attr-defined]
    assert not s3.can_copy_from(gcs)  # type: ignore[attr-defined]


class _StubBlob:
    """A stand-in for google-cloud-storage's Blob whose ``rewrite`` answers in three
    calls, as GCS does for a large object (fake-gcs-server always answers in one)."""

    def __init__(self) -> None:
        self.tokens: list[str | None] = []
        self.name, self.size, self.generation = "copy.bin", 30, 7
        self.crc32c, self.md5_hash = "AAAAAA==", None
        self.metadata, self.updated = None, None
        self.content_type = self.content_encoding = self.cache_control = None
        self.storage_class = None

    def rewrite(self, source: Any, token: str | None = None, **kwargs: Any) -> tuple:
        self.tokens.append(token)
        n = len(self.tokens)
        return (f"tok{n}" if n < 3 else None), 10 * n, 30


def test_a_rewrite_goes_on_with_each_token_until_done(monkeypatch: pytest.MonkeyPatch):
    dst = GCSStore(parse_uri("gs://dst"))
    src = GCSStore(parse_uri("gs://src"))
    stub = _StubBlob()

    class _Bucket:
        def blob(self, name: str, generation: int | None = None) -> Any:
            return stub if name == "copy.bin" else object()

    monkeypatch.setattr(GCSStore, "bucket", property(lambda self: _Bucket()))
    info = dst.copy_object(src, "big.bin", "copy.bin", 30, if_match="5")
    assert stub.tokens == [None, "tok1", "tok2"]
    assert info.size == 30 and info.checksums["crc32c"] == "00000000"
