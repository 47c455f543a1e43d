"""GCSStore against a GCS emulator on 127.0.0.1 (fake-gcs-server, else gcp-storage-emulator)."""

from __future__ import annotations

import hashlib
import os

import google_crc32c
import pytest

from skyhop.errors import NotFoundError, PreconditionFailed, SkyhopError, UsageError
from skyhop.stores import gcs
from skyhop.stores.base import MultipartWriter, ObjectMeta, ObjectStore, capabilities, open_store
from skyhop.uri import parse_uri
from tests.suites.store_suite import StoreSuite


def crc_hex(data: bytes) -> str:
    return google_crc32c.Checksum(data).digest().hex()


@pytest.fixture
def store(gcs_bucket):
    return open_store(parse_uri(gcs_bucket))


class TestGCSStoreSuite(StoreSuite):
    """The shared ObjectStore suite."""

    supports_metadata = True

    @pytest.fixture
    def store(self, gcs_bucket, gcs_server):
        if not gcs_server.pinning:
            # gcp-storage-emulator ignores generation pins: run the rest of the suite
            store = open_store(parse_uri(gcs_bucket))
            store.capabilities = store.capabilities.model_copy(update={"conditional_read": False})
            return store
        return open_store(parse_uri(gcs_bucket))


def test_open_store_gives_a_gcs_store_with_capabilities(store):
    assert isinstance(store, gcs.GCSStore)
    assert isinstance(store, ObjectStore) and isinstance(store, MultipartWriter)
    caps = capabilities(store)
    assert caps.multipart and caps.conditional_read


def test_put_head_read_and_checksums(store):
    data = os.urandom(100_000)
    meta = ObjectMeta(content_type="text/plain", cache_control="no-cache", user={"a": "b"})
    info = store.put("dir/ü x.bin", data, meta=meta)
    assert info.size == len(data)
    assert info.checksums["crc32c"] == crc_hex(data)
    head = store.head("dir/ü x.bin")
    assert head is not None and head.size == len(data)
    assert head.checksums["crc32c"] == crc_hex(data)
    assert head.checksums["md5"] == hashlib.md5(data).hexdigest()
    assert head.etag == info.etag and head.etag.isdigit()
    assert head.meta.content_type == "text/plain"
    assert head.meta.user == {"a": "b"}
    assert store.read_range("dir/ü x.bin", 0, len(data)) == data
    assert store.read_range("dir/ü x.bin", 1234, 5000) == data[1234:6234]
    assert store.read_range("dir/ü x.bin", 10, 0) == b""
    blocks = list(store.iter_range("dir/ü x.bin", 100, 2500, 1000))
    assert [len(b) for b in blocks] == [1000, 1000, 500]
    assert b"".join(blocks) == data[100:2600]


def test_missing_objects_and_buckets(store, gcs_server):
    assert store.head("nope") is None
    store.delete("nope")  # not an error
    with pytest.raises(NotFoundError):
        store.read_range("nope", 0, 10)
    missing = open_store(parse_uri("gs://no-such-bucket-skyhop/"))
    with pytest.raises(NotFoundError, match="no-such-bucket-skyhop"):
        missing.check_bucket()
    store.check_bucket()


def test_read_past_the_end_is_a_store_error(store):
    store.put("short", b"12345")
    with pytest.raises(SkyhopError) as info:
        store.read_range("short", 3, 10)
    assert "\n" not in str(info.value)


def test_list_is_paged_ordered_and_prefixed(store, gcs_server, monkeypatch):
    monkeypatch.setattr(gcs, "LIST_PAGE_SIZE", 2)
    keys = [f"p/{i:02d}" for i in range(7)] + ["q/0", "p"]
    for key in reversed(keys):
        store.put(key, key.encode())
    listing = store.list("p/")
    assert iter(listing) is listing  # a generator, not a list
    got = [(o.key, o.size) for o in listing]
    assert got == [(f"p/{i:02d}", 4) for i in range(7)]
    assert [o.key for o in store.list("")] == sorted(keys)


def test_pinned_read_fails_once_the_object_changes(store, gcs_server):
    if not gcs_server.pinning:
        pytest.skip(f"{gcs_server.kind} ignores generation pins")
    info = store.put("pinned", b"version one")
    assert store.read_range("pinned", 0, 7, if_match=info.etag) == b"version"
    store.put("pinned", b"VERSION TWO")
    with pytest.raises(PreconditionFailed):
        store.read_range("pinned", 0, 7, if_match=info.etag)
    with pytest.raises(UsageError):
        store.read_range("pinned", 0, 7, if_match='"not-a-generation"')


def test_multipart_compose_in_any_order(store):
    parts = [os.urandom(300_000), os.urandom(300_000), os.urandom(1234)]
    meta = ObjectMeta(content_type="application/x-test", user={"k": "v"})
    upload = store.create_multipart("big/obj", meta=meta)
    tags = {}
    for n in (3, 1, 2):
        tags[n] = store.upload_part("big/obj", upload, n, parts[n - 1])
    info = store.complete_multipart("big/obj", upload, [(n, tags[n]) for n in (2, 3, 1)])
    whole = b"".join(parts)
    assert info.size == len(whole)
    assert info.checksums["crc32c"] == crc_hex(whole)
    assert store.read_range("big/obj", 0, len(whole)) == whole
    head = store.head("big/obj")
    assert head.meta.content_type == "application/x-test" and head.meta.user == {"k": "v"}
    assert [o.key for o in store.list("")] == ["big/obj"]  # temporary parts are gone


def test_multipart_with_more_parts_than_one_compose_takes(store):
    parts = [bytes([i]) * (1000 + i) for i in range(70)]
    upload = store.create_multipart("many")
    tags = [(n, store.upload_part("many", upload, n, parts[n - 1])) for n in range(1, 71)]
    info = store.complete_multipart("many", upload, tags)
    whole = b"".join(parts)
    assert info.size == len(whole)
    assert info.checksums["crc32c"] == crc_hex(whole)
    assert store.read_range("many", 0, len(whole)) == whole
    assert [o.key for o in store.list("")] == ["many"]


def test_abort_and_bad_uploads(store):
    upload = store.create_multipart("gone")
    store.upload_part("gone", upload, 1, b"x" * 10)
    store.abort_multipart("gone", upload)
    assert list(store.list("")) == []
    assert store.head("gone") is None
    with pytest.raises(NotFoundError, match="no multipart upload"):
        store.complete_multipart("gone", upload, [(1, "1")])
    other = store.create_multipart("a")
    tag = store.upload_part("a", other, 1, b"abc")
    with pytest.raises(UsageError, match="belongs to key 'a'"):
        store.complete_multipart("b", other, [(1, tag)])
    with pytest.raises(UsageError, match="malformed multipart upload id"):
        store.upload_part("a", "../evil", 1, b"x")
    with pytest.raises(UsageError, match="part number"):
        store.upload_part("a", other, 0, b"x")
    store.abort_multipart("a", other)


def test_region_comes_from_the_bucket_location(store, gcs_server):
    # fake-gcs-server is started with -location US-EAST1; gcp-storage-emulator says "US"
    expected = "gcp:us-east1" if gcs_server.kind == "fake-gcs-server" else "gcp:us"
    assert store.region() == expected
