"""Amazon S3 (and S3-compatible endpoints) as an :class:`~skyhop.stores.base.ObjectStore`.

The only module that uses boto3 for S3. The client is created on first use,
once per store, and shared by every thread using the store (boto3 clients are
thread-safe; sessions are not, so creation holds a lock). Its connection pool
is sized for parallel part transfers and botocore's ``standard`` retry mode
retries throttling and 5xx answers per request. ``AWS_ENDPOINT_URL`` (read by
boto3 itself) points it at moto or another S3-compatible service.

Every botocore error is classified into :mod:`skyhop.errors` by
:func:`classify_error`; none escapes. Streamed reads that break midway resume
from the last byte received, pinned to the ETag of the first response so that
bytes of two versions are never mixed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from urllib3.exceptions import HTTPError as URLLib3HTTPError

from skyhop.checksums import md5_from_etag, normalize_etag
from skyhop.errors import (
    AccessError,
    NotFoundError,
    PreconditionFailed,
    SkyhopError,
    StoreError,
    ThrottledError,
    UsageError,
)
from skyhop.retry import backoff_delay
from skyhop.stores.base import BaseStore, Capabilities, ObjectInfo, ObjectMeta
from skyhop.uri import StoreURI

NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
)

_ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
        "UnrecognizedClientException",
        "403",
    }
)
_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestLimitExceeded",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "BandwidthLimitExceeded",
        "429",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "OperationAborted",
        "BadGateway",
        "GatewayTimeout",
        "IDPCommunicationError",
    }
)
_TRANSPORT_ERRORS = (
    BotoConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    ResponseStreamingError,
    IncompleteReadError,
)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def classify_error(
    exc: BaseException, *, bucket: str, key: str | None = None, op: str = "request"
) -> SkyhopError:
    """The :mod:`skyhop.errors` equivalent of a botocore (or urllib3) error.

    NoSuchBucket, NoSuchKey and NoSuchUpload become NotFoundError; 403s and
    credential problems AccessError; 412 PreconditionFailed; SlowDown and
    other throttling ThrottledError (retryable); 500s, timeouts and broken
    connections StoreError(retryable=True); anything else StoreError.
    """
    where = f"s3://{bucket}/{key}" if key is not None else f"s3://{bucket}"
    if isinstance(exc, SkyhopError):
        return exc
    if isinstance(exc, NoCredentialsError | PartialCredentialsError | CredentialRetrievalError):
        return AccessError(NO_CREDENTIALS)
    if isinstance(exc, ClientError):
        code = _error_code(exc)
        message = _one_line((exc.response.get("Error", {}) or {}).get("Message", "") or "")
        status = _http_status(exc)
        if code == "NoSuchBucket" or (status == 404 and key is None):
            return NotFoundError(f"bucket '{bucket}' does not exist")
        if code == "NoSuchUpload":
            return NotFoundError(
                f"multipart upload for {where} does not exist (aborted or completed)"
            )
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return NotFoundError(f"{where} does not exist")
        if code in _ACCESS_CODES or status == 403:
            detail = f" ({code})" if code and code not in ("AccessDenied", "403") else ""
            return AccessError(f"access denied to bucket '{bucket}'{detail}")
        if code in ("PreconditionFailed", "412") or status == 412:
            return PreconditionFailed(f"{where} changed while it was being read (ETag mismatch)")
        if code in _THROTTLE_CODES or status in (429, 503):
            return ThrottledError(f"S3 asked to slow down on {op} {where} ({code or status})")
        if code in _TRANSIENT_CODES or status >= 500:
            return StoreError(
                f"S3 {op} {where} failed with a transient error: {code or status}", retryable=True
            )
        if code in ("InvalidRange", "416") or status == 416:
            return StoreError(f"range of {op} is beyond the end of {where}")
        if code == "EntityTooSmall":
            return StoreError(f"S3 {op} {where}: a part other than the last is under 5 MiB")
        detail = f"{code}: {message}" if message else (code or str(status))
        return StoreError(f"S3 {op} {where} failed: {detail}")
    if isinstance(exc, (*_TRANSPORT_ERRORS, URLLib3HTTPError)):
        return StoreError(f"S3 {op} {where} failed in transit: {_one_line(exc)}", retryable=True)
    if isinstance(exc, BotoCoreError):
        return StoreError(f"S3 {op} {where} failed: {_one_line(exc)}")
    return StoreError(f"S3 {op} {where} failed: {type(exc).__name__}: {_one_line(exc)}")


def _meta_args(meta: ObjectMeta | None) -> dict[str, Any]:
    if meta is None:
        return {}
    args: dict[str, Any] = {}
    if meta.content_type:
        args["ContentType"] = meta.content_type
    if meta.content_encoding:
        args["ContentEncoding"] = meta.content_encoding
    if meta.cache_control:
        args["CacheControl"] = meta.cache_control
    if meta.user:
        args["Metadata"] = dict(meta.user)
    if meta.storage_class:
        args["StorageClass"] = meta.storage_class
    return args


def _checksums(etag: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if etag:
        out["etag"] = etag
        md5 = md5_from_etag(etag)
        if md5:
            out["md5"] = md5
    return out


def _listed(item: dict[str, Any]) -> ObjectInfo:
    """An entry of ListObjectsV2's ``Contents``."""
    etag = normalize_etag(item.get("ETag"))
    modified = item.get("LastModified")
    return ObjectInfo(
        key=item["Key"],
        size=int(item["Size"]),
        etag=etag,
        mtime=modified.timestamp() if modified is not None else None,
        checksums=_checksums(etag),
    )


def _quoted(etag: str) -> str:
    return '"' + (normalize_etag(etag) or "") + '"'


def _error_code(exc: ClientError) -> str:
    return str((exc.response.get("Error", {}) or {}).get("Code", "") or "")


def _http_status(exc: ClientError) -> int:
    return int((exc.response.get("ResponseMetadata", {}) or {}).get("HTTPStatusCode") or 0)


class S3Store(BaseStore):
    """``s3://BUCKET``: one bucket of S3 or an S3-compatible service.

    Keyword arguments tune the client: ``max_pool_connections`` (parallel
    requests without queueing on the pool), ``max_attempts`` (botocore retries
    per request, including the first try), ``stream_attempts`` (resumptions of
    a broken streamed read) and the socket timeouts.
    """

    capabilities = Capabilities(
        multipart=True, server_side_copy=False, conditional_read=True, listing_metadata=False
    )

    def __init__(
        self,
        uri: StoreURI,
        *,
        max_pool_connections: int = 64,
        max_attempts: int = 8,
        stream_attempts: int = 4,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        page_size: int = 1000,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if uri.scheme != "s3":
            raise UsageError(f"S3Store needs an s3:// URI, got {uri}")
        if not 1 <= page_size <= 1000:
            raise ValueError("page_size must be between 1 and 1000")
        self.uri = uri
        self.bucket = uri.bucket
        self._pool = max_pool_connections
        self._max_attempts = max_attempts
        self._stream_attempts = stream_attempts
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._page_size = page_size
        self._sleep = sleep
        self._client: Any = None
        self._client_lock = threading.Lock()
        self._region: str | None = None

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}')"

    # ------------------------------------------------------------ client

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created on first use (thread-safe)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
                client = self._client
        return client

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        config = Config(
            max_pool_connections=self._pool,
            # adaptive: standard retries (jittered exponential back-off of throttling,
            # 5xx and transport errors) plus a client-side rate limiter that slows
            # this client's requests down while S3 answers 503 SlowDown
            retries={"mode": "adaptive", "max_attempts": self._max_attempts},
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            tcp_keepalive=True,
        )
        try:
            return boto3.session.Session().client("s3", config=config)
        except BotoCoreError as exc:
            raise classify_error(exc, bucket=self.bucket, op="client setup") from None

    def close(self) -> None:
        """Release the client's connections (the store stays usable: a new one is made)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    @contextmanager
    def _errors(self, op: str, key: str | None = None) -> Iterator[None]:
        try:
            yield
        except SkyhopError:
            raise
        except (BotoCoreError, ClientError, URLLib3HTTPError) as exc:
            raise classify_error(exc, bucket=self.bucket, key=key, op=op) from None

    # ------------------------------------------------------------ bucket

    def region(self) -> str | None:
        if self._region is None:
            with self._errors("GetBucketLocation"):
                answer = self.client.get_bucket_location(Bucket=self.bucket)
            location = answer.get("LocationConstraint") or "us-east-1"
            if location == "EU":
                location = "eu-west-1"
            self._region = f"aws:{location}"
        return self._region

    def check_bucket(self) -> None:
        with self._errors("HeadBucket"):
            self.client.head_bucket(Bucket=self.bucket)

    # ------------------------------------------------------------ reading

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        with self._errors("ListObjectsV2"):
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self.bucket,
                Prefix=prefix,
                PaginationConfig={"PageSize": self._page_size},
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    yield _listed(item)

    def list_delimited(self, prefix: str) -> Iterator[ObjectInfo | str]:
        """One level under ``prefix`` (``Delimiter='/'``): objects and common
        prefixes merged in key order, page by page."""
        with self._errors("ListObjectsV2"):
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self.bucket,
                Prefix=prefix,
                Delimiter="/",
                PaginationConfig={"PageSize": self._page_size},
            )
            for page in pages:
                found: list[tuple[str, ObjectInfo | str]] = [
                    (p["Prefix"], p["Prefix"]) for p in page.get("CommonPrefixes", ())
                ]
                found += [(item["Key"], _listed(item)) for item in page.get("Contents", ())]
                found.sort(key=lambda pair: pair[0])
                for _, entry in found:
                    yield entry

    def head(self, key: str) -> ObjectInfo | None:
        with self._errors("HeadObject", key):
            try:
                answer = self.client.head_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _http_status(exc) == 404:  # a HEAD answer has no body to tell why
                    return None
                raise
        return self._info(key, answer)

    def _info(self, key: str, answer: dict[str, Any]) -> ObjectInfo:
        etag = normalize_etag(answer.get("ETag"))
        modified = answer.get("LastModified")
        # under SSE-KMS or SSE-C the ETag is no checksum of the bytes (a listing
        # cannot tell; a HEAD can, so only a HEAD leaves it out)
        encrypted = str(answer.get("ServerSideEncryption") or "").startswith("aws:kms") or bool(
            answer.get("SSECustomerAlgorithm")
        )
        return ObjectInfo(
            key=key,
            size=int(answer.get("ContentLength", 0)),
            etag=etag,
            version=answer.get("VersionId"),
            mtime=modified.timestamp() if modified is not None else None,
            checksums={} if encrypted else _checksums(etag),
            meta=ObjectMeta(
                content_type=answer.get("ContentType"),
                content_encoding=answer.get("ContentEncoding"),
                cache_control=answer.get("CacheControl"),
                user=dict(answer.get("Metadata") or {}),
                storage_class=answer.get("StorageClass") or "STANDARD",
            ),
        )

    def _require(self, key: str, if_match: str | None) -> None:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if if_match:
            args["IfMatch"] = _quoted(if_match)
        with self._errors("HeadObject", key):
            self.client.head_object(**args)

    def read_range(
        self, key: str, offset: int, length: int, *, if_match: str | None = None
    ) -> bytes:
        if length == 0:
            _check_range(offset, length, 1)
            self._require(key, if_match)
            return b""
        return b"".join(self.iter_range(key, offset, length, length, if_match=if_match))

    def iter_range(
        self, key: str, offset: int, length: int, block: int, *, if_match: str | None = None
    ) -> Iterator[bytes]:
        _check_range(offset, length, block)
        if length == 0:
            self._require(key, if_match)
            return
        end = offset + length
        pos = offset  # next byte to receive
        buf = bytearray()  # bytes of the block in progress
        block_end = min(offset + block, end)
        pinned = normalize_etag(if_match)
        failures = 0
        while pos < end:
            body = self._open_range(key, pos, end, pinned)
            try:
                if pinned is None:
                    pinned = body.etag
                while pos < end:
                    data = body.read(block_end - pos)
                    if not data:
                        raise StoreError(
                            f"S3 GetObject s3://{self.bucket}/{key} ended early at byte {pos}",
                            retryable=True,
                        )
                    pos += len(data)
                    failures = 0
                    if not buf and pos == block_end:
                        yield data
                    else:
                        buf += data
                        if pos == block_end:
                            yield bytes(buf)
                            buf.clear()
                    if pos == block_end:
                        block_end = min(pos + block, end)
            except StoreError as exc:
                if not exc.retryable or failures + 1 >= self._stream_attempts:
                    raise
                failures += 1
                self._sleep(backoff_delay(failures, base=0.1, cap=5.0, rng=random.random))
            finally:
                body.close()

    def _open_range(self, key: str, start: int, end: int, if_match: str | None) -> _Body:
        args: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Range": f"bytes={start}-{end - 1}",
        }
        if if_match:
            args["IfMatch"] = _quoted(if_match)
        with self._errors("GetObject", key):
            answer = self.client.get_object(**args)
        got = int(answer.get("ContentLength", 0))
        if got < end - start:
            answer["Body"].close()
            total = str(answer.get("ContentRange", "")).rpartition("/")[2] or "?"
            raise StoreError(
                f"range {start}-{end - 1} is beyond the end of s3://{self.bucket}/{key} "
                f"({total} bytes)"
            )
        return _Body(answer["Body"], normalize_etag(answer.get("ETag")), self, key)

    # ------------------------------------------------------------ writing

    def put(self, key: str, data: bytes, *, meta: ObjectMeta | None = None) -> ObjectInfo:
        with self._errors("PutObject", key):
            answer = self.client.put_object(
                Bucket=self.bucket, Key=key, Body=data, **_meta_args(meta)
            )
        etag = normalize_etag(answer.get("ETag"))
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=etag,
            version=answer.get("VersionId"),
            checksums=_checksums(etag),
            meta=meta,
        )

    def delete(self, key: str) -> None:
        with self._errors("DeleteObject", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    # ------------------------------------------------------------ multipart

    def create_multipart(self, key: str, *, meta: ObjectMeta | None = None) -> str:
        with self._errors("CreateMultipartUpload", key):
            answer = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, **_meta_args(meta)
            )
        return str(answer["UploadId"])

    def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes) -> str:
        if not 1 <= part_number <= self.capabilities.max_parts:
            raise ValueError(f"part number {part_number} is outside 1..10000")
        with self._errors("UploadPart", key):
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=data,
            )
        return normalize_etag(answer["ETag"]) or ""

    def complete_multipart(
        self, key: str, upload_id: str, parts: list[tuple[int, str]]
    ) -> ObjectInfo:
        ordered = sorted(parts)
        with self._errors("CompleteMultipartUpload", key):
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [{"PartNumber": n, "ETag": _quoted(tag)} for n, tag in ordered]
                },
            )
        info = self.head(key)
        if info is None:
            raise StoreError(
                f"s3://{self.bucket}/{key} is missing right after its upload completed"
            )
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        with self._errors("AbortMultipartUpload", key):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except ClientError as exc:
                if _error_code(exc) != "NoSuchUpload":  # already aborted or completed
                    raise


class _Body:
    """A GetObject body whose reads raise :mod:`skyhop.errors`."""

    def __init__(self, raw: Any, etag: str | None, store: S3Store, key: str) -> None:
        self._raw = raw
        self.etag = etag
        self._store = store
        self._key = key

    def read(self, n: int) -> bytes:
        with self._store._errors("GetObject", self._key):
            return self._raw.read(n)

    def close(self) -> None:
        try:
            self._raw.close()
        except Exception:  # noqa: BLE001 - closing a broken stream must not mask its error
            pass


def _check_range(offset: int, length: int, block: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"bad range: offset {offset}, length {length}")
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")
