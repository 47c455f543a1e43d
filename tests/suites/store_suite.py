"""The ObjectStore protocol suite: every store implementation runs it.

Subclass :class:`StoreSuite` and supply a ``store`` fixture returning a store
bound to an empty bucket::

    class TestS3Store(StoreSuite):
        supports_metadata = True

        @pytest.fixture
        def store(self, moto):
            boto3.client("s3").create_bucket(Bucket="suite")
            return S3Store(parse_uri("s3://suite"))

Stores whose keys are absolute (the local filesystem) also override
``key_prefix`` (a fixture) with an empty directory, e.g.
``str(tmp_path).lstrip("/") + "/"``; every key the suite writes starts with
it. Multipart tests run only when ``capabilities(store).multipart``, the
If-Match tests only when ``conditional_read``; the 1,100-object paging test is
marked ``slow``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

import pytest

from skyhop.errors import IntegrityError, NotFoundError, PreconditionFailed, SkyhopError, StoreError
from skyhop.integrity import crc32c, crc_hex
from skyhop.stores.base import (
    Directories,
    MultipartWriter,
    ObjectMeta,
    ObjectStore,
    RangeReaderInto,
    capabilities,
    is_dir,
)

KeyFn = Callable[[str], str]

AWKWARD_KEYS = [
    "with space.txt",
    "unicodé/日本語/файл.bin",
    "deep/a/b/c/d/e/f/g/h/i/j/k/leaf",
    "plus+equals=amp&.txt",
    "percent%20encoded%2F",
    "semi;colon,comma",
    "tilde~and'quote",
    "(parens)[brackets]{braces}",
    "hash#question?",
    "emoji-🚀.dat",
    "dots..in..name",
    "trailing-dot.",
]

#: keys whose code-point order differs from a per-directory walk
ORDER_KEYS = ["b", "a/x", "a-b", "a0", "A", "é", "ü/x", "a b", "a.b", "a/y/z"]


def payload(n: int, seed: int = 0) -> bytes:
    """``n`` pseudo-random bytes (incompressible, reproducible)."""
    return random.Random(seed).randbytes(n)


def keys_of(store: ObjectStore, prefix: str) -> list[str]:
    return [info.key for info in store.list(prefix)]


class StoreSuite:
    """Tests every ObjectStore must pass. Needs a ``store`` fixture."""

    #: head() reports content type, cache control, content encoding and user metadata
    supports_metadata: ClassVar[bool] = False
    #: objects written by the paging test (more than one S3 listing page)
    many_objects: ClassVar[int] = 1100

    @pytest.fixture
    def key_prefix(self) -> str:
        """Prepended to every key the suite writes; override for absolute-key stores."""
        return ""

    @pytest.fixture
    def k(self, key_prefix: str) -> KeyFn:
        return lambda name: key_prefix + name

    # ------------------------------------------------------------ bucket

    def test_check_bucket_accepts_a_usable_bucket(self, store):
        assert store.check_bucket() is None

    def test_region_names_its_cloud_or_is_unknown(self, store):
        region = store.region()
        # "cloud:region" (aws:us-east-1), "local" for the local filesystem, or None
        assert region is None or region == "local" or (":" in region and region.split(":", 1)[1])

    def test_store_satisfies_the_protocol(self, store):
        assert isinstance(store, ObjectStore)
        caps = capabilities(store)
        if caps.multipart:
            assert isinstance(store, MultipartWriter)

    def test_capabilities_are_what_the_store_does(self, store, k):
        """Every entry of the features table holds: buffers are taken, ranges read
        into a buffer, directories answer (and without the entry, no such method)."""
        caps = capabilities(store)
        data = payload(300_000, seed=5)
        if caps.accepts_buffers:
            store.put(k("buf.bin"), memoryview(bytearray(data)))
            assert store.read_range(k("buf.bin"), 0, len(data)) == data
        else:
            store.put(k("buf.bin"), data)
        if caps.read_into:
            buffer = bytearray(64 * 1024)
            blocks = store.iter_range_into(k("buf.bin"), 10, 200_000, buffer)
            assert b"".join(bytes(b) for b in blocks) == data[10:200_010]
        else:
            assert not isinstance(store, RangeReaderInto)
        if caps.directories:
            store.put(k("dir/inner.bin"), b"x")
            assert is_dir(store, k("dir")) and not is_dir(store, k("buf.bin"))
        else:
            assert not isinstance(store, Directories) and not is_dir(store, k("dir"))
        assert caps.server_side_copy == hasattr(store, "copy_object")

    # ------------------------------------------------------------ put / head

    def test_empty_store_lists_nothing(self, store, k):
        assert keys_of(store, k("")) == []
        assert keys_of(store, k("nothing/here/")) == []

    def test_put_then_head(self, store, k):
        data = payload(1234, seed=1)
        info = store.put(k("obj.bin"), data)
        assert info.key == k("obj.bin")
        assert info.size == len(data)
        head = store.head(k("obj.bin"))
        assert head is not None
        assert head.key == k("obj.bin")
        assert head.size == len(data)
        if info.etag is not None and head.etag is not None:
            assert head.etag == info.etag
        assert store.read_range(k("obj.bin"), 0, len(data)) == data

    def test_head_of_missing_key_is_none(self, store, k):
        assert store.head(k("missing")) is None
        store.put(k("dir/present"), b"x")
        assert store.head(k("dir")) is None
        assert store.head(k("dir/")) is None
        assert store.head(k("dir/presen")) is None

    def test_put_overwrites(self, store, k):
        store.put(k("o"), b"first version")
        store.put(k("o"), b"v2")
        head = store.head(k("o"))
        assert head is not None and head.size == 2
        assert store.read_range(k("o"), 0, 2) == b"v2"
        assert keys_of(store, k("")) == [k("o")]

    def test_zero_byte_object(self, store, k):
        info = store.put(k("empty"), b"")
        assert info.size == 0
        head = store.head(k("empty"))
        assert head is not None and head.size == 0
        assert store.read_range(k("empty"), 0, 0) == b""
        assert b"".join(store.iter_range(k("empty"), 0, 0, 1024)) == b""
        listed = list(store.list(k("")))
        assert [(i.key, i.size) for i in listed] == [(k("empty"), 0)]

    @pytest.mark.parametrize("name", AWKWARD_KEYS)
    def test_awkward_keys_round_trip(self, store, k, name):
        key = k(name)
        data = payload(100, seed=len(name)) + name.encode()
        store.put(key, data)
        head = store.head(key)
        assert head is not None and head.size == len(data)
        assert store.read_range(key, 0, len(data)) == data
        assert keys_of(store, k("")) == [key]
        assert keys_of(store, key) == [key]
        store.delete(key)
        assert store.head(key) is None
        assert keys_of(store, k("")) == []

    def test_metadata_round_trip(self, store, k):
        if not self.supports_metadata:
            pytest.skip("store does not keep object metadata")
        meta = ObjectMeta(
            content_type="application/json",
            content_encoding="identity",
            cache_control="max-age=60",
            user={"origin": "skyhop", "job": "j-1"},
        )
        store.put(k("meta.json"), b"{}", meta=meta)
        head = store.head(k("meta.json"))
        assert head is not None and head.meta is not None
        assert head.meta.content_type == "application/json"
        assert head.meta.content_encoding == "identity"
        assert head.meta.cache_control == "max-age=60"
        assert head.meta.user == {"origin": "skyhop", "job": "j-1"}

    def test_modification_time_is_kept(self, store, k):
        """The source's mtime written with an object comes back from head and list
        (what sync compares for equality), in every store."""
        stamp = 1_700_000_000.123456
        store.put(k("kept.txt"), b"x", meta=ObjectMeta(mtime=stamp, user={"u": "v"}))
        store.put(k("plain.txt"), b"y")
        head = store.head(k("kept.txt"))
        assert head is not None and head.mtime_precision is not None
        assert abs(head.mtime - stamp) <= head.mtime_precision
        if head.meta is not None:
            assert head.meta.user.get("u", "v") == "v" and "mtime" not in head.meta.user
        listed = {i.key: i for i in store.list(k(""))}
        if capabilities(store).listing_metadata:
            assert abs(listed[k("kept.txt")].mtime - stamp) <= head.mtime_precision
        plain = store.head(k("plain.txt"))
        assert plain is not None and plain.mtime is not None
        # a cloud object written without one has only its write time; a file has its own
        assert (plain.mtime_precision is None) == (store.uri.scheme != "local")

    def test_multipart_keeps_the_modification_time(self, store, k):
        self._need_multipart(store)
        stamp = 1_600_000_000.5
        key = k("mp/kept")
        upload = store.create_multipart(key, meta=ObjectMeta(mtime=stamp))
        tag = store.upload_part(key, upload, 1, b"hello")
        store.complete_multipart(key, upload, [(1, tag)])
        head = store.head(key)
        assert head is not None and head.mtime_precision is not None
        assert abs(head.mtime - stamp) <= head.mtime_precision

    # ------------------------------------------------------------ listing

    def test_listing_is_in_key_order(self, store, k):
        for i, name in enumerate(ORDER_KEYS):
            store.put(k(name), bytes([i]) * (i + 1))
        listed = list(store.list(k("")))
        assert [i.key for i in listed] == sorted(k(n) for n in ORDER_KEYS)
        sizes = {i.key: i.size for i in listed}
        assert sizes == {k(n): i + 1 for i, n in enumerate(ORDER_KEYS)}

    def test_listing_is_a_lazy_iterator(self, store, k):
        store.put(k("a"), b"1")
        listing = store.list(k(""))
        assert isinstance(listing, Iterator)
        assert [i.key for i in listing] == [k("a")]

    def test_list_prefix_filters(self, store, k):
        for name in ["logs/2024/a", "logs/2024/b", "logs/2025/a", "logsx", "other/logs/a"]:
            store.put(k(name), name.encode())
        assert keys_of(store, k("logs/")) == [k("logs/2024/a"), k("logs/2024/b"), k("logs/2025/a")]
        assert keys_of(store, k("logs/2024")) == [k("logs/2024/a"), k("logs/2024/b")]
        assert keys_of(store, k("logs")) == [
            k("logs/2024/a"),
            k("logs/2024/b"),
            k("logs/2025/a"),
            k("logsx"),
        ]
        assert keys_of(store, k("logs/2024/a")) == [k("logs/2024/a")]
        assert keys_of(store, k("logs/20")) == [
            k("logs/2024/a"),
            k("logs/2024/b"),
            k("logs/2025/a"),
        ]
        assert keys_of(store, k("nope/")) == []
        assert keys_of(store, k("logs/2026/")) == []

    def test_listing_agrees_with_head(self, store, k):
        for i in range(5):
            store.put(k(f"x/{i}"), payload(10 * i + 1, seed=i))
        for info in store.list(k("x/")):
            head = store.head(info.key)
            assert head is not None
            assert head.size == info.size
            if head.etag is not None and info.etag is not None:
                assert head.etag == info.etag

    @pytest.mark.slow
    def test_listing_pages_through_many_objects(self, store, k):
        names = [f"many/{i:05d}" for i in range(self.many_objects)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: store.put(k(n), n.encode()), names))
        listed = list(store.list(k("many/")))
        assert [i.key for i in listed] == [k(n) for n in names]
        assert all(i.size == len(n) for i, n in zip(listed, names, strict=True))
        # a prefix deep in the listing, crossing no page boundary by construction
        expected = [k(n) for n in names if n.startswith("many/0100")]
        assert keys_of(store, k("many/0100")) == expected

    # ------------------------------------------------------------ reading

    def test_read_range_slices(self, store, k):
        data = payload(10_000, seed=7)
        store.put(k("r"), data)
        n = len(data)
        for offset, length in [(0, 1), (0, n), (1234, 100), (n - 1, 1), (n - 10, 10), (5000, 0)]:
            assert store.read_range(k("r"), offset, length) == data[offset : offset + length]

    def test_read_past_the_end_is_an_error(self, store, k):
        store.put(k("short"), b"0123456789")
        with pytest.raises(StoreError):
            store.read_range(k("short"), 5, 10)
        with pytest.raises(StoreError):
            store.read_range(k("short"), 20, 1)

    def test_read_missing_key_raises_not_found(self, store, k):
        with pytest.raises(NotFoundError):
            store.read_range(k("missing"), 0, 1)
        with pytest.raises(NotFoundError):
            store.read_range(k("missing"), 0, 0)
        with pytest.raises(NotFoundError):
            list(store.iter_range(k("missing"), 0, 10, 4))

    def test_iter_range_yields_exact_blocks(self, store, k):
        data = payload(100_000, seed=3)
        store.put(k("big"), data)
        blocks = list(store.iter_range(k("big"), 1000, 50_000, 7_000))
        assert [len(b) for b in blocks] == [7_000] * 7 + [1_000]
        assert b"".join(blocks) == data[1000:51_000]

    def test_iter_range_block_larger_than_range(self, store, k):
        data = payload(5_000, seed=4)
        store.put(k("b"), data)
        blocks = list(store.iter_range(k("b"), 100, 300, 1 << 20))
        assert blocks == [data[100:400]]

    def test_iter_range_small_blocks(self, store, k):
        data = payload(97, seed=5)
        store.put(k("s"), data)
        blocks = list(store.iter_range(k("s"), 0, 97, 10))
        assert [len(b) for b in blocks] == [10] * 9 + [7]
        assert b"".join(blocks) == data

    def test_iter_range_can_be_abandoned(self, store, k):
        data = payload(64_000, seed=6)
        store.put(k("a"), data)
        stream = store.iter_range(k("a"), 0, len(data), 1000)
        assert next(stream) == data[:1000]
        stream.close()
        # the store is still usable afterwards
        assert store.read_range(k("a"), 63_000, 1000) == data[63_000:]

    # ------------------------------------------------------------ conditional reads

    def _need_conditional(self, store: ObjectStore) -> None:
        if not capabilities(store).conditional_read:
            pytest.skip("store does not declare conditional reads")

    def test_if_match_with_current_etag_reads(self, store, k):
        self._need_conditional(store)
        data = payload(3000, seed=8)
        store.put(k("c"), data)
        head = store.head(k("c"))
        assert head is not None and head.etag
        assert store.read_range(k("c"), 10, 100, if_match=head.etag) == data[10:110]
        blocks = store.iter_range(k("c"), 0, 3000, 1000, if_match=head.etag)
        assert b"".join(blocks) == data

    def test_if_match_after_overwrite_raises_precondition_failed(self, store, k):
        self._need_conditional(store)
        store.put(k("c"), payload(3000, seed=9))
        old = store.head(k("c"))
        assert old is not None and old.etag
        store.put(k("c"), payload(3001, seed=10))
        new = store.head(k("c"))
        assert new is not None and new.etag != old.etag
        with pytest.raises(PreconditionFailed):
            store.read_range(k("c"), 0, 100, if_match=old.etag)
        with pytest.raises(PreconditionFailed):
            list(store.iter_range(k("c"), 0, 3000, 1000, if_match=old.etag))
        assert store.read_range(k("c"), 0, 1, if_match=new.etag) == payload(3001, seed=10)[:1]

    # ------------------------------------------------------------ delete

    def test_delete_removes_and_is_idempotent(self, store, k):
        store.put(k("d/1"), b"one")
        store.put(k("d/2"), b"two")
        store.delete(k("d/1"))
        assert store.head(k("d/1")) is None
        assert keys_of(store, k("")) == [k("d/2")]
        store.delete(k("d/1"))
        store.delete(k("never/existed"))
        assert store.read_range(k("d/2"), 0, 3) == b"two"

    # ------------------------------------------------------------ concurrency

    def test_parallel_puts_and_reads(self, store, k):
        def work(i: int) -> bool:
            data = payload(2000 + i, seed=100 + i)
            store.put(k(f"par/{i:02d}"), data)
            return store.read_range(k(f"par/{i:02d}"), 0, len(data)) == data

        with ThreadPoolExecutor(8) as pool:
            assert all(pool.map(work, range(24)))
        assert keys_of(store, k("par/")) == [k(f"par/{i:02d}") for i in range(24)]

    # ------------------------------------------------------------ multipart

    def _need_multipart(self, store: ObjectStore) -> int:
        caps = capabilities(store)
        if not caps.multipart:
            pytest.skip("store does not declare multipart writing")
        return caps.min_part_size

    def test_multipart_round_trip(self, store, k):
        min_part = self._need_multipart(store)
        part1 = payload(max(min_part, 64 * 1024), seed=11)
        part2 = payload(1000, seed=12)
        key = k("mp/object")
        upload = store.create_multipart(key)
        tag2 = store.upload_part(key, upload, 2, part2)  # parts may arrive in any order
        tag1 = store.upload_part(key, upload, 1, part1)
        assert store.head(key) is None  # nothing visible before completion
        info = store.complete_multipart(key, upload, [(1, tag1), (2, tag2)])
        assert info.key == key
        assert info.size == len(part1) + len(part2)
        assert store.read_range(key, 0, info.size) == part1 + part2
        assert store.read_range(key, len(part1) - 5, 10) == part1[-5:] + part2[:5]
        assert keys_of(store, k("mp/")) == [key]

    def test_multipart_with_crc32cs_round_trip(self, store, k):
        """An upload whose parts and completion carry their CRC32Cs (the direct path's):
        every store takes them; the bytes are the parts'."""
        min_part = self._need_multipart(store)
        part1 = payload(max(min_part, 64 * 1024), seed=21)
        part2 = payload(1000, seed=22)
        crcs = {1: crc_hex(crc32c(part1)), 2: crc_hex(crc32c(part2))}
        key = k("mp/crc")
        upload = store.create_multipart(key, crc32c=True)
        tag2 = store.upload_part(key, upload, 2, part2, crc32c=crcs[2])
        tag1 = store.upload_part(key, upload, 1, part1, crc32c=crcs[1])
        whole = crc_hex(crc32c(part1 + part2))
        info = store.complete_multipart(
            key, upload, [(1, tag1), (2, tag2)], part_crc32c=crcs, crc32c=whole
        )
        assert info.size == len(part1) + len(part2)
        assert store.read_range(key, 0, info.size) == part1 + part2
        if info.checksums.get("crc32c"):
            assert info.checksums["crc32c"].rjust(8, "0") == whole

    def test_part_differing_from_its_crc32c_is_refused(self, store, k):
        """A store that checks the CRC32C a write carries refuses a part whose bytes
        changed after their CRC32C was computed (S3: BadDigest), and keeps none of it."""
        min_part = self._need_multipart(store)
        if not capabilities(store).verifies_crc32c:
            pytest.skip("store does not check the CRC32C of writes")
        good = payload(max(min_part, 64 * 1024), seed=23)
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0x01
        key = k("mp/flipped")
        upload = store.create_multipart(key, crc32c=True)
        with pytest.raises(IntegrityError):
            store.upload_part(key, upload, 1, bytes(bad), crc32c=crc_hex(crc32c(good)))
        tag = store.upload_part(key, upload, 1, good, crc32c=crc_hex(crc32c(good)))
        whole = crc_hex(crc32c(good))
        store.complete_multipart(key, upload, [(1, tag)], part_crc32c={1: whole}, crc32c=whole)
        assert store.read_range(key, 0, len(good)) == good

    def test_multipart_single_small_part(self, store, k):
        self._need_multipart(store)
        key = k("mp/small")
        upload = store.create_multipart(key)
        tag = store.upload_part(key, upload, 1, b"just one part")
        info = store.complete_multipart(key, upload, [(1, tag)])
        assert info.size == 13
        assert store.read_range(key, 0, 13) == b"just one part"

    def test_multipart_part_uploaded_twice_keeps_the_last(self, store, k):
        self._need_multipart(store)
        key = k("mp/retry")
        upload = store.create_multipart(key)
        store.upload_part(key, upload, 1, b"first attempt")
        tag = store.upload_part(key, upload, 1, b"second")
        store.complete_multipart(key, upload, [(1, tag)])
        assert store.read_range(key, 0, 6) == b"second"

    def test_multipart_with_metadata(self, store, k):
        self._need_multipart(store)
        if not self.supports_metadata:
            pytest.skip("store does not keep object metadata")
        key = k("mp/meta")
        meta = ObjectMeta(content_type="text/plain", user={"a": "b"})
        upload = store.create_multipart(key, meta=meta)
        tag = store.upload_part(key, upload, 1, b"hello")
        store.complete_multipart(key, upload, [(1, tag)])
        head = store.head(key)
        assert head is not None and head.meta is not None
        assert head.meta.content_type == "text/plain"
        assert head.meta.user == {"a": "b"}

    def test_multipart_abort_discards_and_is_idempotent(self, store, k):
        self._need_multipart(store)
        key = k("mp/aborted")
        upload = store.create_multipart(key)
        store.upload_part(key, upload, 1, b"doomed")
        store.abort_multipart(key, upload)
        assert store.head(key) is None
        assert keys_of(store, k("")) == []
        store.abort_multipart(key, upload)

    def test_multipart_upload_to_unknown_upload_fails(self, store, k):
        self._need_multipart(store)
        key = k("mp/unknown")
        upload = store.create_multipart(key)
        store.abort_multipart(key, upload)
        with pytest.raises(SkyhopError):
            store.upload_part(key, upload, 1, b"late part")
        assert store.head(key) is None
