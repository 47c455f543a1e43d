"""LocalStore specifics: awkward keys, true key order, pinned reads, atomic
writes, multipart staging, and one-line errors naming the path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyhop.errors import AccessError, NotFoundError, PreconditionFailed, StoreError, UsageError
from skyhop.stores.base import MultipartWriter, ObjectStore, capabilities, open_store
from skyhop.stores.local import LocalStore
from skyhop.uri import parse_uri


@pytest.fixture
def store() -> LocalStore:
    s = open_store(parse_uri("/"))
    assert isinstance(s, LocalStore)
    return s


def key(path: Path) -> str:
    return str(path).lstrip("/")


def test_protocols_and_capabilities(store: LocalStore) -> None:
    assert isinstance(store, ObjectStore) and isinstance(store, MultipartWriter)
    caps = capabilities(store)
    assert caps.multipart and caps.conditional_read
    assert store.region() == "local"


def test_awkward_keys_round_trip(store: LocalStore, tmp_path: Path) -> None:
    names = {
        "with spaces/and more spaces.txt": b"spaces",
        "ünïcödé/日本語/файл.bin": os.urandom(1000),
        "/".join(f"d{i}" for i in range(40)) + "/deep.bin": b"deep",
        "zero-bytes": b"",
        "quote'and\"dq #hash %percent": b"q",
    }
    for name, data in names.items():
        info = store.put(key(tmp_path / name), data)
        assert info.size == len(data)
        assert store.head(key(tmp_path / name)) == info
        assert store.read_range(key(tmp_path / name), 0, len(data)) == data
    listed = {i.key: i.size for i in store.list(key(tmp_path) + "/")}
    assert listed == {key(tmp_path / n): len(d) for n, d in names.items()}


def test_list_is_in_true_key_order(store: LocalStore, tmp_path: Path) -> None:
    names = ["a/b", "a-c", "a0", "a/a/z", "a.b", "b", "a/b0", "A", "a~", "é", "a/b/c"[:3] + "x"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    keys = [i.key for i in store.list(key(tmp_path) + "/")]
    assert keys == sorted((key(tmp_path / n) for n in names), key=lambda k: k.encode())
    assert keys.index(key(tmp_path / "a-c")) < keys.index(key(tmp_path / "a/b"))
    assert keys.index(key(tmp_path / "a/b")) < keys.index(key(tmp_path / "a0"))


def test_list_by_partial_name_and_missing_prefix(store: LocalStore, tmp_path: Path) -> None:
    for name in ["logs/2024-01.txt", "logs/2024-02.txt", "logs/2025-01.txt", "logs2/x"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    got = [i.key for i in store.list(key(tmp_path) + "/logs/2024")]
    assert got == [key(tmp_path / "logs/2024-01.txt"), key(tmp_path / "logs/2024-02.txt")]
    assert [i.key for i in store.list(key(tmp_path) + "/logs")][-1] == key(tmp_path / "logs2/x")
    assert list(store.list(key(tmp_path) + "/nothing-here/")) == []


def test_pinned_reads(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    info = store.put(key(tmp_path / "f"), data)
    st = os.stat(tmp_path / "f")
    assert info.etag == f"{st.st_mtime_ns:x}-{len(data):x}-{st.st_ino:x}-{st.st_ctime_ns:x}"
    blocks = list(store.iter_range(key(tmp_path / "f"), 10, 50_000, 16_384, if_match=info.etag))
    assert [len(b) for b in blocks] == [16_384, 16_384, 16_384, 848]
    assert b"".join(blocks) == data[10:50_010]
    os.utime(tmp_path / "f", ns=(1, 1))
    with pytest.raises(PreconditionFailed, match="changed since it was listed"):
        store.read_range(key(tmp_path / "f"), 0, 10, if_match=info.etag)
    with pytest.raises(PreconditionFailed):
        next(store.iter_range(key(tmp_path / "f"), 0, 10, 5, if_match=info.etag))
    with pytest.raises(StoreError, match="outside"):
        store.read_range(key(tmp_path / "f"), 99_999, 2)


def test_reads_into_a_reused_buffer(store: LocalStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    info = store.put(key(tmp_path / "f"), data)
    buffer = bytearray(16_384)
    got = [
        bytes(v)
        for v in store.iter_range_into(key(tmp_path / "f"), 10, 50_000, buffer, if_match=info.etag)
    ]
    assert [len(b) for b in got] == [16_384, 16_384, 16_384, 848]
    assert b"".join(got) == data[10:50_010]
    os.utime(tmp_path / "f", ns=(1, 1))
    with pytest.raises(PreconditionFailed):
        next(store.iter_range_into(key(tmp_path / "f"), 0, 10, buffer, if_match=info.etag))


def test_put_is_atomic_and_overwrites(store: LocalStore, tmp_path: Path) -> None:
    store.put(key(tmp_path / "x/obj"), b"old")
    store.put(key(tmp_path / "x/obj"), memoryview(b"new contents"))
    assert (tmp_path / "x/obj").read_bytes() == b"new contents"
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["obj"]  # no temp left


def test_multipart(store: LocalStore, tmp_path: Path) -> None:
    k = key(tmp_path / "out/big.bin")
    parts = [os.urandom(1000), os.urandom(2000), os.urandom(5)]
    upload = store.create_multipart(k)
    tags = {}
    for number in (3, 1, 2):  # any order
        tags[number] = store.upload_part(k, upload, number, bytearray(parts[number - 1]))
    tags[2] = store.upload_part(k, upload, 2, parts[1])  # a re-sent part replaces the first
    assert list(store.list(key(tmp_path) + "/")) == []  # staging is hidden
    assert not (tmp_path / "out/big.bin").exists()
    with pytest.raises(UsageError, match="ascending order"):
        store.complete_multipart(k, upload, [(2, tags[2]), (1, tags[1])])
    with pytest.raises(StoreError, match="part 1 .* missing or its tag does not match"):
        store.complete_multipart(k, upload, [(1, "bogus"), (2, tags[2]), (3, tags[3])])
    info = store.complete_multipart(k, upload, [(n, tags[n]) for n in (1, 2, 3)])
    assert info.size == 3005
    assert (tmp_path / "out/big.bin").read_bytes() == b"".join(parts)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["big.bin"]
    with pytest.raises(NotFoundError, match="no multipart upload"):
        store.upload_part(k, upload, 1, b"late")


def test_abort_cleans_up(store: LocalStore, tmp_path: Path) -> None:
    k = key(tmp_path / "a/b.bin")
    upload = store.create_multipart(k)
    store.upload_part(k, upload, 1, b"data")
    store.abort_multipart(k, upload)
    store.abort_multipart(k, upload)  # idempotent
    assert list((tmp_path / "a").iterdir()) == []
    with pytest.raises(NotFoundError, match=str(tmp_path / "a/b.bin")):
        store.upload_part(k, upload, 1, b"x")
    with pytest.raises(UsageError, match="part number 0"):
        store.upload_part(k, store.create_multipart(k), 0, b"x")


def test_errors_name_the_path(store: LocalStore, tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "file"
    with pytest.raises(NotFoundError, match=f"no such file: {missing}$"):
        store.read_range(key(missing), 0, 1)
    assert store.head(key(missing)) is None
    store.delete(key(missing))  # deleting what is missing is fine
    with pytest.raises(NotFoundError, match="not a regular file"):
        store.read_range(key(tmp_path), 0, 1)
    (tmp_path / "plain").write_bytes(b"x")
    with pytest.raises(StoreError, match="not a directory"):
        store.put(key(tmp_path / "plain/child"), b"x")
    with pytest.raises(UsageError, match="not a file name"):
        store.put(key(tmp_path) + "/dir/", b"x")


def test_unwritable_destination_is_an_access_error(store: LocalStore, tmp_path: Path) -> None:
    if os.geteuid() == 0:
        target = Path("/sys/skyhop-test/obj")  # sysfs refuses even root
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "obj"
    with pytest.raises(AccessError, match=str(target.parent)):
        store.put(key(target), b"x")
    with pytest.raises(AccessError):
        store.create_multipart(key(target))
