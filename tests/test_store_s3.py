"""S3Store against moto in server mode: the shared store suite plus S3 specifics
(regions, bucket checks, credentials, error classification, ETags)."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import urllib.request
from collections.abc import Callable, Iterator

import boto3
import google_crc32c
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)

from skyhop.checksums import etag_part_count, md5_hex, s3_etag
from skyhop.errors import (
    AccessError,
    NotFoundError,
    PreconditionFailed,
    StoreError,
    ThrottledError,
)
from skyhop.integrity import crc32c, crc_hex
from skyhop.stores.base import capabilities, open_store
from skyhop.stores.s3 import S3Store, classify_error
from skyhop.uri import parse_uri
from tests.fixtures.services import MotoServer, free_port
from tests.suites.store_suite import StoreSuite, payload

BUCKET = "skyhop-suite"


@pytest.fixture
def bucket(moto: MotoServer) -> str:
    boto3.client("s3").create_bucket(Bucket=BUCKET)
    return BUCKET


@pytest.fixture
def s3store(bucket: str) -> Iterator[S3Store]:
    store = S3Store(parse_uri(f"s3://{bucket}"))
    yield store
    store.close()


class TestS3StoreSuite(StoreSuite):
    supports_metadata = True

    @pytest.fixture
    def store(self, s3store: S3Store) -> S3Store:
        return s3store


# ---------------------------------------------------------------- S3 specifics


def test_open_store_builds_an_s3_store(bucket):
    store = open_store(parse_uri(f"s3://{bucket}/some/prefix/"))
    assert isinstance(store, S3Store)
    assert store.bucket == bucket
    assert capabilities(store).multipart and capabilities(store).conditional_read


def test_bucket_tags_read_through_the_store(s3store):
    assert s3store.tags() == {}  # no tag set at all
    boto3.client("s3").put_bucket_tagging(
        Bucket=s3store.bucket,
        Tagging={"TagSet": [{"Key": "replicate", "Value": "yes"}, {"Key": "team", "Value": "d"}]},
    )
    assert s3store.tags() == {"replicate": "yes", "team": "d"}


def test_region_of_us_east_1_and_other_regions(moto, s3store):
    assert s3store.region() == "aws:us-east-1"
    boto3.client("s3").create_bucket(
        Bucket="skyhop-eu", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    assert S3Store(parse_uri("s3://skyhop-eu")).region() == "aws:eu-west-1"


def test_region_after_check_bucket_costs_no_request(moto):
    """HeadBucket names the region (x-amz-bucket-region): planning after the
    preflight asks S3 nothing more."""
    boto3.client("s3").create_bucket(
        Bucket="skyhop-eu2", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"}
    )
    store = S3Store(parse_uri("s3://skyhop-eu2"))
    store.check_bucket()
    calls: list[str] = []
    store.client.meta.events.register("before-call.s3", lambda model, **_: calls.append(model.name))
    assert store.region() == "aws:eu-west-2"
    assert calls == []


def test_listing_times_parse_as_botocore_parses_them(s3store):
    """Listing timestamps go through the ISO 8601 fast path; they equal botocore's
    own parse of the same text, and other forms still reach botocore's parser."""
    from botocore.utils import parse_timestamp

    from skyhop.stores.s3 import _parse_timestamp

    for text in (
        "2026-12-06T22:07:36.000Z",
        "2026-12-06T22:07:36Z",
        "2026-12-06T22:07:36.5+02:00",
        "Sun, 06 Dec 2026 22:07:36 GMT",
        "2026-12-06T22:07:36",
    ):
        assert _parse_timestamp(text).timestamp() == parse_timestamp(text).timestamp(), text
    s3store.put("t/a", b"x")
    (listed,) = list(s3store.list("t/"))
    head = boto3.client("s3").head_object(Bucket=s3store.bucket, Key="t/a")
    assert listed.mtime == head["LastModified"].timestamp()


def test_botocore_checksums_are_not_computed_twice(s3store):
    """skyhop checks bytes itself (CRC32C read, MD5 against the ETag): the client
    adds no CRC32 of its own to a write. A single put carries the CRC32C of its
    body for S3 to check; over plain HTTP the body is still signed."""
    sent: list[dict] = []
    s3store.client.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    s3store.put("t/b", b"payload")
    checksums = {k.lower(): v for k, v in sent[0].items() if k.lower().startswith("x-amz-checksum")}
    crc = base64.b64encode(google_crc32c.value(b"payload").to_bytes(4, "big"))
    assert checksums == {"x-amz-checksum-crc32c": crc}
    assert sent[0]["X-Amz-Content-SHA256"] == hashlib.sha256(b"payload").hexdigest().encode()
    assert s3store.head("t/b").checksums["md5"] == hashlib.md5(b"payload").hexdigest()


class _Answer:
    """The empty body of a stubbed S3 answer."""

    def stream(self, **_):
        yield b""


def test_over_https_bodies_go_unsigned_and_puts_carry_their_crc32c(monkeypatch):
    """Over TLS botocore would SHA-256 every body to sign it (the costliest pass
    over the data); TLS already authenticates it in transit, so bodies go as
    UNSIGNED-PAYLOAD, a single put with the CRC32C S3 checks before storing it.
    (An HTTPS endpoint whose answers are stubbed at before-send: moto is HTTP.)"""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "https://s3.skyhop.test")
    for var, value in {
        "AWS_ACCESS_KEY_ID": "a",
        "AWS_SECRET_ACCESS_KEY": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(var, value)
    store = S3Store(parse_uri("s3://skyhop-https"))
    sent: list[tuple[str, dict]] = []

    def answer(request, **_):
        sent.append((request.method, dict(request.headers)))
        return AWSResponse(request.url, 200, {"ETag": '"0123"'}, _Answer())

    store.client.meta.events.register("before-send.s3", answer)
    body = os.urandom(256 * 1024)
    store.put("k", body)
    store.upload_part("m", "u1", 1, body)
    (_, put), (_, part) = sent
    assert put["X-Amz-Content-SHA256"] == part["X-Amz-Content-SHA256"] == b"UNSIGNED-PAYLOAD"
    crc = base64.b64encode(google_crc32c.value(body).to_bytes(4, "big"))
    assert put["x-amz-checksum-crc32c"] == crc
    # a part of an upload created without a checksum algorithm carries none (S3
    # refuses one: "Checksum Type mismatch"); its MD5 counts in the multipart ETag
    assert not any(k.lower().startswith("x-amz-checksum") for k in part)
    store.close()


def test_check_bucket_missing(moto):
    store = S3Store(parse_uri("s3://no-such-bucket"))
    with pytest.raises(NotFoundError) as info:
        store.check_bucket()
    assert str(info.value) == "bucket 'no-such-bucket' does not exist"


def test_missing_bucket_errors_on_every_operation(moto):
    store = S3Store(parse_uri("s3://no-such-bucket"))
    for call in (
        lambda: list(store.list("")),
        lambda: store.put("k", b"x"),
        lambda: store.read_range("k", 0, 1),
        lambda: store.delete("k"),
        lambda: store.create_multipart("k"),
    ):
        with pytest.raises(NotFoundError, match="bucket 'no-such-bucket' does not exist"):
            call()


def test_no_credentials_is_an_access_error(bucket, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask 169.254.169.254
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", raising=False)
    monkeypatch.delenv("AWS_CONTAINER_CREDENTIALS_FULL_URI", raising=False)
    monkeypatch.delenv("AWS_WEB_IDENTITY_TOKEN_FILE", raising=False)
    store = S3Store(parse_uri(f"s3://{bucket}"))
    with pytest.raises(AccessError, match="no AWS credentials found"):
        store.check_bucket()
    with pytest.raises(AccessError, match="no AWS credentials found"):
        list(store.list(""))


@pytest.fixture
def enforce_iam(moto: MotoServer) -> Iterator[Callable[[], None]]:
    """Call it to make moto check IAM permissions on every request; undone afterwards."""

    def set_count(value: str) -> None:
        req = urllib.request.Request(
            f"{moto.endpoint}/moto-api/reset-auth",
            data=value.encode(),
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(req, timeout=10)

    yield lambda: set_count("0")
    set_count("inf")


def test_denied_user_gets_access_error(moto, enforce_iam, monkeypatch):
    boto3.client("s3").create_bucket(Bucket="locked-bucket")
    iam = boto3.client("iam")
    iam.create_user(UserName="nobody")  # no policies: every S3 call is denied
    key = iam.create_access_key(UserName="nobody")["AccessKey"]
    enforce_iam()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    store = S3Store(parse_uri("s3://locked-bucket"))
    with pytest.raises(AccessError) as info:
        store.check_bucket()
    assert str(info.value) == "access denied to bucket 'locked-bucket'"
    with pytest.raises(AccessError, match="access denied to bucket 'locked-bucket'"):
        store.put("k", b"x")
    with pytest.raises(AccessError):
        store.read_range("k", 0, 1)
    with pytest.raises(AccessError):
        list(store.list(""))

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")
    with pytest.raises(AccessError, match="access denied to bucket 'locked-bucket'"):
        S3Store(parse_uri("s3://locked-bucket")).put("k", b"x")


def test_unreachable_endpoint_is_a_retryable_store_error(bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    store = S3Store(parse_uri(f"s3://{bucket}"), max_attempts=1)
    with pytest.raises(StoreError) as info:
        store.head("k")
    assert info.value.retryable
    assert "\n" not in str(info.value)


def test_if_match_accepts_quoted_and_bare_etags(s3store):
    s3store.put("q", b"quoted")
    etag = s3store.head("q").etag
    assert not etag.startswith('"')
    assert s3store.read_range("q", 0, 6, if_match=etag) == b"quoted"
    assert s3store.read_range("q", 0, 6, if_match=f'"{etag}"') == b"quoted"
    with pytest.raises(PreconditionFailed, match="changed while it was being read"):
        s3store.read_range("q", 0, 0, if_match="0" * 32)


def test_etags_and_checksums_of_single_part_and_multipart(s3store):
    data = payload(1000, seed=1)
    info = s3store.put("single", data)
    assert info.etag == md5_hex(data)
    # the put carried its CRC32C, which S3 checked and answers with
    crc = crc_hex(crc32c(data))
    assert info.checksums == {"etag": md5_hex(data), "md5": md5_hex(data), "crc32c": crc}
    listed = next(iter(s3store.list("single")))
    assert listed.checksums == {"etag": md5_hex(data), "md5": md5_hex(data)}
    assert listed.mtime is not None

    part = 5 * 1024 * 1024
    big = payload(part + 123, seed=2)
    upload = s3store.create_multipart("multi")
    tags = [
        (1, s3store.upload_part("multi", upload, 1, big[:part])),
        (2, s3store.upload_part("multi", upload, 2, big[part:])),
    ]
    assert tags[0][1] == md5_hex(big[:part])
    out = s3store.complete_multipart("multi", upload, tags)
    assert out.etag == s3_etag(big, part)
    assert etag_part_count(out.etag) == 2
    assert "md5" not in out.checksums  # a multipart ETag is not the object's MD5
    assert out.checksums["etag"] == out.etag


def test_put_with_storage_class_and_meta(s3store):
    from skyhop.stores.base import ObjectMeta

    s3store.put("cold", b"brr", meta=ObjectMeta(storage_class="STANDARD_IA"))
    head = s3store.head("cold")
    assert head.meta.storage_class == "STANDARD_IA"
    assert s3store.head("cold").size == 3


def test_client_is_created_once_across_threads(s3store):
    clients: list[object] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        c = s3store.client
        with lock:
            clients.append(c)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(c) for c in clients}) == 1
    assert s3store.client.meta.config.max_pool_connections >= 8


def test_read_beyond_end_names_the_object(s3store):
    s3store.put("ten", b"0123456789")
    with pytest.raises(StoreError, match="beyond the end of s3://skyhop-suite/ten"):
        s3store.read_range("ten", 8, 5)
    with pytest.raises(StoreError, match="beyond the end"):
        s3store.read_range("ten", 10, 1)


def test_abort_unknown_upload_is_quiet_but_missing_bucket_is_not(moto, s3store):
    s3store.abort_multipart("k", "no-such-upload-id")
    with pytest.raises(NotFoundError, match="bucket"):
        S3Store(parse_uri("s3://absent-bucket")).abort_multipart("k", "x")


# ---------------------------------------------------------------- classification
#
# moto never throttles or fails with 5xx on its own, so these feed the classifier
# the exceptions botocore raises for such answers.


def client_error(code: str, status: int, op: str = "GetObject") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


@pytest.mark.parametrize(
    ("code", "status", "kind", "retryable"),
    [
        ("SlowDown", 503, ThrottledError, True),
        ("ServiceUnavailable", 503, ThrottledError, True),
        ("503", 503, ThrottledError, True),
        ("ThrottlingException", 400, ThrottledError, True),
        ("TooManyRequests", 429, ThrottledError, True),
        ("InternalError", 500, StoreError, True),
        ("500", 500, StoreError, True),
        ("BadGateway", 502, StoreError, True),
        ("RequestTimeout", 400, StoreError, True),
        ("PreconditionFailed", 412, PreconditionFailed, False),
        ("412", 412, PreconditionFailed, False),
        ("AccessDenied", 403, AccessError, None),
        ("403", 403, AccessError, None),
        ("InvalidAccessKeyId", 403, AccessError, None),
        ("NoSuchKey", 404, NotFoundError, None),
        ("NoSuchBucket", 404, NotFoundError, None),
        ("NoSuchUpload", 404, NotFoundError, None),
        ("InvalidRange", 416, StoreError, False),
        ("InvalidArgument", 400, StoreError, False),
    ],
)
def test_classify_client_errors(code, status, kind, retryable):
    err = classify_error(client_error(code, status), bucket="b", key="k", op="GetObject")
    assert type(err) is kind
    if retryable is not None:
        assert err.retryable is retryable
    assert "\n" not in str(err)


def test_classify_transport_and_credential_errors():
    err = classify_error(EndpointConnectionError(endpoint_url="http://x"), bucket="b")
    assert isinstance(err, StoreError) and err.retryable
    err = classify_error(ReadTimeoutError(endpoint_url="http://x"), bucket="b", key="k")
    assert isinstance(err, StoreError) and err.retryable
    err = classify_error(NoCredentialsError(), bucket="b")
    assert isinstance(err, AccessError) and "no AWS credentials found" in str(err)
    assert str(classify_error(client_error("NoSuchBucket", 404), bucket="b")) == (
        "bucket 'b' does not exist"
    )
    assert str(classify_error(client_error("AccessDenied", 403), bucket="b")) == (
        "access denied to bucket 'b'"
    )


# ---------------------------------------------------------------- broken streams
#
# Fault injection on real moto responses: the first GetObject body breaks midway,
# as a reset connection would.


class BreakingBody:
    def __init__(self, raw, after: int) -> None:
        self.raw = raw
        self.left = after

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            raise ReadTimeoutError(endpoint_url="http://127.0.0.1 (injected)")
        data = self.raw.read(min(n, self.left))
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.raw.close()


@pytest.fixture
def flaky_get(bucket, monkeypatch):
    store = S3Store(parse_uri(f"s3://{bucket}"), sleep=lambda s: None)
    real = store.client.get_object
    calls: list[dict] = []
    hooks: dict[str, Callable[[], None]] = {}

    def get_object(**kwargs):
        calls.append(kwargs)
        if len(calls) == 2 and "before_resume" in hooks:
            hooks["before_resume"]()
        answer = real(**kwargs)
        if len(calls) == 1:
            answer["Body"] = BreakingBody(answer["Body"], after=2500)
        return answer

    monkeypatch.setattr(store.client, "get_object", get_object)
    return store, calls, hooks


def test_broken_stream_resumes_pinned_to_the_first_etag(flaky_get):
    store, calls, _ = flaky_get
    data = payload(10_000, seed=21)
    etag = store.put("stream", data).etag
    blocks = list(store.iter_range("stream", 100, 9000, 1000))
    assert b"".join(blocks) == data[100:9100]
    assert [len(b) for b in blocks] == [1000] * 9
    assert len(calls) == 2
    assert calls[1]["Range"] == "bytes=2600-9099"
    assert calls[1]["IfMatch"] == f'"{etag}"'


def test_object_replaced_during_a_broken_stream_is_precondition_failed(flaky_get):
    store, calls, hooks = flaky_get
    store.put("stream", payload(10_000, seed=22))
    hooks["before_resume"] = lambda: store.put("stream", payload(10_000, seed=23))
    with pytest.raises(PreconditionFailed):
        store.read_range("stream", 0, 10_000)
    assert len(calls) == 2


# ---------------------------------------------------------------- ETag helpers


def test_etag_helpers():
    from skyhop.checksums import md5_from_etag, normalize_etag, s3_multipart_etag

    md5 = md5_hex(b"abc")
    assert normalize_etag(f'"{md5}"') == md5
    assert normalize_etag(f'W/"{md5}"') == md5
    assert normalize_etag(None) is None
    assert md5_from_etag(f'"{md5.upper()}"') == md5
    assert md5_from_etag(f"{md5}-3") is None
    assert md5_from_etag("0x8DC1234") is None  # an Azure ETag
    assert etag_part_count(f'"{md5}-12"') == 12
    assert etag_part_count(md5) is None
    assert s3_etag(b"abc") == md5
    # one part: still the multipart form
    assert s3_etag(b"abc", 5) == s3_multipart_etag([md5]) and s3_etag(b"abc", 5).endswith("-1")
    assert s3_etag(b"abcdef", 4) == s3_multipart_etag([md5_hex(b"abcd"), md5_hex(b"ef")])
    with pytest.raises(ValueError):
        s3_multipart_etag([])
    with pytest.raises(ValueError):
        s3_multipart_etag(["abcd"])
