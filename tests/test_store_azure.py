"""AzureStore against Azurite (npm) on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os

import pytest

from skyhop.errors import NotFoundError, PreconditionFailed, SkyhopError, UsageError
from skyhop.stores import azure
from skyhop.stores.base import MultipartWriter, ObjectMeta, ObjectStore, capabilities, open_store
from skyhop.uri import parse_uri
from tests.suites.store_suite import StoreSuite


@pytest.fixture
def store(azure_container):
    return open_store(parse_uri(azure_container))


class TestAzureStoreSuite(StoreSuite):
    """The shared ObjectStore suite."""

    supports_metadata = True

    @pytest.fixture
    def store(self, azure_container):
        return open_store(parse_uri(azure_container))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_open_store_gives_an_azure_store(store):
    assert isinstance(store, azure.AzureStore)
    assert isinstance(store, ObjectStore) and isinstance(store, MultipartWriter)
    assert capabilities(store).multipart
    assert store.region() is None


def test_https_blob_url_names_the_same_store(azure_container):
    container = parse_uri(azure_container).bucket
    uri = parse_uri(f"https://devstoreaccount1.blob.core.windows.net/{container}/x/y")
    store = open_store(uri)
    store.put("x/y", b"hi")
    assert store.read_range("x/y", 0, 2) == b"hi"


def test_connection_string_account():
    conn = "DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=abc==;"
    assert azure.connection_string_account(conn) == "acct1"
    sas = "BlobEndpoint=https://acct2.blob.core.windows.net/;SharedAccessSignature=sv=1"
    assert azure.connection_string_account(sas) == "acct2"
    local = "BlobEndpoint=http://127.0.0.1:1/devstoreaccount1;SharedAccessSignature=x"
    assert azure.connection_string_account(local) == "devstoreaccount1"


def test_put_head_read_with_md5(store):
    data = os.urandom(200_000)
    meta = ObjectMeta(
        content_type="text/plain", cache_control="max-age=5", user={"a": "b"}, storage_class="COOL"
    )
    info = store.put("dir/ü x.bin", data, meta=meta)
    assert info.size == len(data)
    assert info.checksums == {"md5": md5_hex(data)}
    head = store.head("dir/ü x.bin")
    assert head.etag == info.etag and head.etag
    assert head.meta.content_type == "text/plain"
    assert head.meta.cache_control == "max-age=5"
    assert head.meta.user == {"a": "b"}
    assert head.meta.storage_class == "Cool"
    assert store.read_range("dir/ü x.bin", 0, len(data)) == data
    assert store.read_range("dir/ü x.bin", 777, 10_000) == data[777:10_777]
    assert store.read_range("dir/ü x.bin", 5, 0) == b""
    assert b"".join(store.iter_range("dir/ü x.bin", 0, 2500, 1000)) == data[:2500]


def test_missing_things(store, azurite_server):
    assert store.head("nope") is None
    store.delete("nope")
    with pytest.raises(NotFoundError):
        store.read_range("nope", 0, 1)
    store.check_bucket()
    missing = open_store(parse_uri("az://devstoreaccount1/no-such-container/"))
    with pytest.raises(NotFoundError, match="no-such-container"):
        missing.check_bucket()


def test_read_past_the_end_is_one_line_store_error(store):
    store.put("short", b"12345")
    with pytest.raises(SkyhopError) as info:
        store.read_range("short", 3, 10)
    assert "\n" not in str(info.value)


def test_list_is_paged_ordered_and_prefixed(store, monkeypatch):
    monkeypatch.setattr(azure, "LIST_PAGE_SIZE", 2)
    keys = [f"p/{i:02d}" for i in range(7)] + ["q/0", "p"]
    for key in reversed(keys):
        store.put(key, key.encode(), meta=ObjectMeta(user={"k": key.replace("/", "_")}))
    listing = store.list("p/")
    assert iter(listing) is listing
    got = list(listing)
    assert [(o.key, o.size) for o in got] == [(f"p/{i:02d}", 4) for i in range(7)]
    assert got[0].meta.user == {"k": "p_00"}
    assert got[0].checksums["md5"] == md5_hex(b"p/00")
    assert [o.key for o in store.list("")] == sorted(keys)


def test_pinned_read_fails_once_the_blob_changes(store):
    info = store.put("pinned", b"version one")
    assert store.read_range("pinned", 0, 7, if_match=info.etag) == b"version"
    store.put("pinned", b"VERSION TWO")
    with pytest.raises(PreconditionFailed):
        store.read_range("pinned", 0, 7, if_match=info.etag)


def test_multipart_in_order_sets_content_md5(store):
    parts = [os.urandom(100_000), os.urandom(100_000), os.urandom(77)]
    meta = ObjectMeta(content_type="application/x-test", user={"k": "v"})
    upload = store.create_multipart("big/obj", meta=meta)
    tags = [(n, store.upload_part("big/obj", upload, n, parts[n - 1])) for n in (1, 2, 3)]
    info = store.complete_multipart("big/obj", upload, list(reversed(tags)))
    whole = b"".join(parts)
    assert info.size == len(whole)
    assert info.checksums == {"md5": md5_hex(whole)}
    assert store.read_range("big/obj", 0, len(whole)) == whole
    assert info.meta.content_type == "application/x-test" and info.meta.user == {"k": "v"}
    assert [o.key for o in store.list("")] == ["big/obj"]  # the marker is gone


def test_multipart_out_of_order_from_another_process(store, azure_container):
    parts = [b"a" * 1000, b"b" * 1000, b"c" * 10]
    upload = store.create_multipart("ooo")
    other = open_store(parse_uri(azure_container))  # e.g. a gateway in another process
    tags = {n: other.upload_part("ooo", upload, n, parts[n - 1]) for n in (3, 1, 2)}
    info = open_store(parse_uri(azure_container)).complete_multipart(
        "ooo", upload, sorted(tags.items())
    )
    assert store.read_range("ooo", 0, info.size) == b"".join(parts)
    assert "md5" not in info.checksums  # nobody saw the parts in order


def test_abort_and_bad_uploads(store):
    upload = store.create_multipart("gone")
    tag = store.upload_part("gone", upload, 1, b"x" * 10)
    store.abort_multipart("gone", upload)
    assert list(store.list("")) == []
    with pytest.raises(NotFoundError, match="no multipart upload"):
        store.complete_multipart("gone", upload, [(1, tag)])
    other = store.create_multipart("a")
    tag = store.upload_part("a", other, 1, b"abc")
    with pytest.raises(UsageError, match="belongs to key 'a'"):
        store.complete_multipart("b", other, [(1, tag)])
    with pytest.raises(UsageError, match="is not part 2"):
        store.complete_multipart("a", other, [(2, tag)])
    with pytest.raises(UsageError, match="malformed multipart upload id"):
        store.upload_part("a", "zz/..", 1, b"x")
    store.abort_multipart("a", other)
    assert store.head("a") is None
