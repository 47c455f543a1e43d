"""Amazon S3 (and S3-compatible endpoints) as an :class:`~skyhop.stores.base.ObjectStore`.

The only module that uses boto3 for S3. The client is created on first use,
once per store, and shared by every thread using the store (boto3 clients are
thread-safe; sessions are not, so creation holds a lock). Its connection pool
is sized for parallel part transfers and botocore's ``standard`` retry mode
retries throttling and 5xx answers per request. ``AWS_ENDPOINT_URL`` (read by
boto3 itself) points it at moto or another S3-compatible service; a location
naming a storage remote (``s3://bucket?remote=NAME``) uses that remote's
endpoint, credentials and quirks instead (:func:`resolve_access`).

Every botocore error is classified into :mod:`skyhop.errors` by
:func:`classify_error`; none escapes. Streamed reads that break midway resume
from the last byte received, pinned to the ETag of the first response so that
bytes of two versions are never mixed.
"""

from __future__ import annotations

import base64
import builtins
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

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
    IntegrityError,
    NotFoundError,
    PreconditionFailed,
    SkyhopError,
    StoreError,
    ThrottledError,
    UsageError,
    first_line,
)
from skyhop.integrity import crc32c_extend
from skyhop.retry import backoff_delay
from skyhop.store_access import S3Access, access_for
from skyhop.stores import mtime as kept_time
from skyhop.stores.base import BaseStore, Capabilities, ObjectInfo, ObjectMeta, ObjectStore
from skyhop.uri import StoreURI

if TYPE_CHECKING:
    from skyhop.remotes import S3Remote

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


def classify_error(
    exc: BaseException, *, bucket: str, key: str | None = None, op: str = "request"
) -> SkyhopError:
    """The :mod:`skyhop.errors` equivalent of a botocore (or urllib3) error.

    NoSuchBucket, NoSuchKey and NoSuchUpload become NotFoundError; 403s and
    credential problems AccessError; 412 PreconditionFailed; BadDigest (a body
    that differs from the checksum it came with) IntegrityError; SlowDown and
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
        message = first_line((exc.response.get("Error", {}) or {}).get("Message", "") or "")
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
        if code in ("BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"):
            return IntegrityError(
                f"S3 {op} {where}: the bytes S3 received differ from their checksum ({code})"
            )
        if code == "EntityTooSmall":
            return StoreError(f"S3 {op} {where}: a part other than the last is under 5 MiB")
        detail = f"{code}: {message}" if message else (code or str(status))
        return StoreError(f"S3 {op} {where} failed: {detail}")
    if isinstance(exc, (*_TRANSPORT_ERRORS, URLLib3HTTPError)):
        return StoreError(f"S3 {op} {where} failed in transit: {first_line(exc)}", retryable=True)
    if isinstance(exc, BotoCoreError):
        return StoreError(f"S3 {op} {where} failed: {first_line(exc)}")
    return StoreError(f"S3 {op} {where} failed: {type(exc).__name__}: {first_line(exc)}")


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
    user = dict(meta.user)
    if meta.mtime is not None:
        # kept as rclone keeps it (x-amz-meta-mtime), for sync to compare for equality
        user = kept_time.kept(user)[2]
        user[kept_time.MTIME_KEY] = kept_time.unix_text(meta.mtime)
    if user:
        args["Metadata"] = user
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
        conditional_read=True,
        listing_metadata=False,
        reports_md5=True,
        # x-amz-checksum-crc32c on puts and parts; the whole object's at completion
        verifies_crc32c=True,
        copies_ranges=True,  # UploadPartCopy
        # aws-cli's defaults (8 MiB parts from 8 MiB on, 10 requests at once)
        part_size=8 * 1024 * 1024,
        multipart_threshold=8 * 1024 * 1024,
        concurrency=10,
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
        self._put_crc32c = False  # PutObject carries the body's CRC32C, which S3 checks
        self._region: str | None = None
        if uri.remote is not None:
            # a storage remote's endpoint may not check checksums: its writes carry none
            self.capabilities = type(self).capabilities.model_copy(
                update={"verifies_crc32c": False}
            )

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
        import botocore.session
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
        if self.uri.remote is None:
            # skyhop checks every byte itself (CRC32C of what it read, MD5 against
            # the ETag S3 computes from what it received), so botocore's own CRC32
            # of every request body and response is CPU spent twice
            own = Config(
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
            try:
                session = botocore.session.Session()
                _fast_timestamps(session)
                client = session.create_client("s3", config=config.merge(own))
            except BotoCoreError as exc:
                raise classify_error(exc, bucket=self.bucket, op="client setup") from None
            self._put_crc32c = True
            _unsigned_over_tls(client)
            return client
        access = access_for(self.uri.remote)
        if not isinstance(access, S3Access):
            raise UsageError(f"remote {self.uri.remote!r} is a {access.type} remote, not s3")
        quirks = Config(
            s3={
                "addressing_style": {None: "auto", True: "path", False: "virtual"}[
                    access.path_style
                ]
            },
            **(
                {}
                if access.checksums
                else {
                    "request_checksum_calculation": "when_required",
                    "response_checksum_validation": "when_required",
                }
            ),
        )
        try:
            session = boto3.session.Session(
                aws_access_key_id=access.access_key_id,
                aws_secret_access_key=access.secret_access_key,
                aws_session_token=access.session_token,
                region_name=access.region or "us-east-1",
            )
            return session.client("s3", endpoint_url=access.endpoint, config=config.merge(quirks))
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
        if self.uri.remote is not None:
            access = access_for(self.uri.remote)
            if access.planner_region or access.endpoint:
                # an S3-compatible endpoint's bucket location says nothing of where it is
                return access.planner_region
        if self._region is None:
            with self._errors("GetBucketLocation"):
                answer = self.client.get_bucket_location(Bucket=self.bucket)
            location = answer.get("LocationConstraint") or "us-east-1"
            if location == "EU":
                location = "eu-west-1"
            self._region = f"aws:{location}"
        return self._region

    def check_bucket(self) -> None:
        """HeadBucket; its answer names the bucket's region, kept for :meth:`region`
        (so that planning after a preflight costs no GetBucketLocation)."""
        with self._errors("HeadBucket"):
            answer = self.client.head_bucket(Bucket=self.bucket)
        headers = (answer.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        location = answer.get("BucketRegion") or headers.get("x-amz-bucket-region")
        if location and self._region is None:
            self._region = f"aws:{location}"

    def tags(self) -> dict[str, str]:
        """The bucket's tags (none when it has no tag set)."""
        try:
            with self._errors("GetBucketTagging"):
                answer = self.client.get_bucket_tagging(Bucket=self.bucket)
        except NotFoundError:
            return {}  # NoSuchTagSet
        return {t["Key"]: t["Value"] for t in answer.get("TagSet", [])}

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
        mtime, precision, user = kept_time.kept(dict(answer.get("Metadata") or {}))
        if mtime is None and modified is not None:
            mtime = modified.timestamp()
        return ObjectInfo(
            key=key,
            size=int(answer.get("ContentLength", 0)),
            etag=etag,
            version=answer.get("VersionId"),
            mtime=mtime,
            mtime_precision=precision,
            checksums={} if encrypted else _checksums(etag),
            meta=ObjectMeta(
                content_type=answer.get("ContentType"),
                content_encoding=answer.get("ContentEncoding"),
                cache_control=answer.get("CacheControl"),
                user=user,
                storage_class=answer.get("StorageClass") or "STANDARD",
                mtime=mtime if precision is not None else None,
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
        client = self.client
        args = _meta_args(meta)
        if self._put_crc32c:
            args["ChecksumCRC32C"] = _crc32c_b64(data)
        with self._errors("PutObject", key):
            answer = client.put_object(Bucket=self.bucket, Key=key, Body=data, **args)
        etag = normalize_etag(answer.get("ETag"))
        kept = meta.mtime if meta is not None else None
        checksums = _checksums(etag)
        if "ChecksumCRC32C" in args:
            # S3 refused the put had the body's CRC32C differed; the answer says which it
            # checked (compared by the writer with the one of the bytes it read)
            theirs = _crc_hex(answer.get("ChecksumCRC32C"))
            checksums["crc32c"] = theirs or _crc_hex(args["ChecksumCRC32C"]) or ""
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=etag,
            version=answer.get("VersionId"),
            mtime=kept,
            mtime_precision=kept_time.KEPT_PRECISION if kept is not None else None,
            checksums=checksums,
            meta=meta,
        )

    def delete(self, key: str) -> None:
        with self._errors("DeleteObject", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    # ------------------------------------------------------------ multipart

    def create_multipart(
        self, key: str, *, meta: ObjectMeta | None = None, crc32c: bool = False
    ) -> str:
        """With ``crc32c`` (and an endpoint that checks checksums) a CRC32C upload of
        the FULL_OBJECT type: S3 checks every part's CRC32C as it arrives and, at
        completion, the whole object's (combined from the parts') against the bytes
        it assembled, so nothing here computes an MD5 to compare with an ETag."""
        client = self.client  # made first: it sets whether checksums are sent
        args = _meta_args(meta)
        if crc32c and self._put_crc32c:
            args["ChecksumAlgorithm"] = "CRC32C"
            args["ChecksumType"] = "FULL_OBJECT"
        with self._errors("CreateMultipartUpload", key):
            answer = client.create_multipart_upload(Bucket=self.bucket, Key=key, **args)
        return str(answer["UploadId"])

    def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: bytes,
        *,
        crc32c: str | None = None,
    ) -> str:
        """``crc32c`` (hex, that of ``data``) goes as the part's x-amz-checksum-crc32c,
        which S3 checks against the body before it stores the part (BadDigest
        otherwise); botocore then computes no checksum of its own (a header set by
        the caller is left alone, and ``when_required`` asks for none)."""
        if not 1 <= part_number <= self.capabilities.max_parts:
            raise ValueError(f"part number {part_number} is outside 1..10000")
        client = self.client
        args: dict[str, Any] = {}
        if crc32c is not None and self._put_crc32c:
            args["ChecksumCRC32C"] = _crc_b64(crc32c)
        with self._errors("UploadPart", key):
            answer = client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=part_number,
                Body=data,
                **args,
            )
        if args:
            theirs = _crc_hex(answer.get("ChecksumCRC32C"))
            if theirs is not None and theirs != _crc_hex(args["ChecksumCRC32C"]):
                raise IntegrityError(
                    f"s3://{self.bucket}/{key}: part {part_number} stored with CRC32C "
                    f"{theirs}, sent {crc32c}"
                )
        return normalize_etag(answer["ETag"]) or ""

    def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: builtins.list[tuple[int, str]],
        *,
        part_crc32c: Mapping[int, str] | None = None,
        crc32c: str | None = None,
    ) -> ObjectInfo:
        """For a CRC32C upload, each part goes with its CRC32C and the request with
        the whole object's, which S3 compares with the object it assembled."""
        ordered = sorted(parts)
        client = self.client
        sums = part_crc32c if part_crc32c is not None and self._put_crc32c else None
        listed: builtins.list[dict[str, Any]] = []
        for n, tag in ordered:
            part: dict[str, Any] = {"PartNumber": n, "ETag": _quoted(tag)}
            if sums is not None and sums.get(n):
                part["ChecksumCRC32C"] = _crc_b64(sums[n])
            listed.append(part)
        args: dict[str, Any] = {}
        if sums is not None and crc32c:
            args = {"ChecksumCRC32C": _crc_b64(crc32c), "ChecksumType": "FULL_OBJECT"}
        with self._errors("CompleteMultipartUpload", key):
            answer = client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": listed},
                **args,
            )
        theirs = _crc_hex(answer.get("ChecksumCRC32C")) if args else None
        if theirs is not None and theirs != _crc_hex(args["ChecksumCRC32C"]):
            raise IntegrityError(
                f"s3://{self.bucket}/{key}: assembled with CRC32C {theirs}, expected {crc32c}"
            )
        info = self.head(key)
        if info is None:
            raise StoreError(
                f"s3://{self.bucket}/{key} is missing right after its upload completed"
            )
        return info

    # ------------------------------------------------------------ ServerSideCopier

    def can_copy_from(self, src: ObjectStore) -> bool:
        """Another bucket (or this one) behind the same endpoint, reached with the same
        identity: S3 copies it itself. Two storage remotes are two identities (another
        account's role, say) even on one endpoint: the copy is signed by the destination
        alone, which need not be able to read the source, so the bytes travel instead."""
        return (
            isinstance(src, S3Store)
            and src.uri.remote == self.uri.remote
            and src.client.meta.endpoint_url == self.client.meta.endpoint_url
        )

    def copy_object(
        self,
        src: ObjectStore,
        src_key: str,
        key: str,
        size: int,
        *,
        meta: ObjectMeta | None = None,
        if_match: str | None = None,
    ) -> ObjectInfo:
        assert isinstance(src, S3Store)
        extra: dict[str, Any] = {"MetadataDirective": "COPY"}
        if meta is not None:
            extra = {"MetadataDirective": "REPLACE", **_meta_args(meta)}
        if if_match:
            extra["CopySourceIfMatch"] = _quoted(if_match)
        with self._errors("CopyObject", key):
            answer = self.client.copy_object(
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": src.bucket, "Key": src_key},
                **extra,
            )
        etag = normalize_etag((answer.get("CopyObjectResult") or {}).get("ETag"))
        return ObjectInfo(
            key=key,
            size=size,
            etag=etag,
            version=answer.get("VersionId"),
            checksums=_checksums(etag),
            meta=meta,
        )

    def copy_part(
        self,
        src: ObjectStore,
        src_key: str,
        key: str,
        upload_id: str,
        part_number: int,
        offset: int,
        length: int,
        *,
        if_match: str | None = None,
    ) -> str:
        assert isinstance(src, S3Store)
        if not 1 <= part_number <= self.capabilities.max_parts:
            raise ValueError(f"part number {part_number} is outside 1..10000")
        extra: dict[str, Any] = {}
        if if_match:
            extra["CopySourceIfMatch"] = _quoted(if_match)
        with self._errors("UploadPartCopy", key):
            answer = self.client.upload_part_copy(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=part_number,
                CopySource={"Bucket": src.bucket, "Key": src_key},
                CopySourceRange=f"bytes={offset}-{offset + max(length, 1) - 1}",
                **extra,
            )
        return normalize_etag((answer.get("CopyPartResult") or {}).get("ETag")) or ""

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
            data: bytes = self._raw.read(n)
        return data

    def close(self) -> None:
        try:
            self._raw.close()
        except Exception:  # noqa: BLE001, S110 - closing a broken stream must not mask its error
            pass


def _parse_timestamp(value: str | int | float) -> datetime:
    """botocore's timestamp parser, with the ISO 8601 form S3 listings use
    (``2024-05-01T12:00:00.000Z``) parsed by :meth:`datetime.fromisoformat` instead of
    dateutil: a 1,000-key page otherwise costs about 0.1 CPU-s in dateutil alone."""
    if isinstance(value, str) and len(value) >= 20 and value[10] == "T":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    from botocore.utils import parse_timestamp

    parsed_by_botocore: datetime = parse_timestamp(value)
    return parsed_by_botocore


def _unsigned_over_tls(client: Any) -> bool:
    """Send request bodies unsigned (``UNSIGNED-PAYLOAD``) when the endpoint is HTTPS.

    botocore otherwise signs every body with a SHA-256 of all its bytes, about
    0.5 GB/s per core here: the costliest pass over the data on the way to S3,
    and one that protects nothing TLS does not (TLS authenticates every record
    in transit). What S3 stored is still checked: single puts carry their
    CRC32C, which S3 verifies before it stores the object, and every object's
    MD5s are compared with the ETags S3 computed from what it received. Over
    plain HTTP (a local endpoint) bodies stay signed. True when turned off."""
    if not str(client.meta.endpoint_url).startswith("https://"):
        return False
    client.meta.config.s3 = {**(client.meta.config.s3 or {}), "payload_signing_enabled": False}
    return True


def _crc_b64(crc_hex: str) -> str:
    """A CRC32C in hex as S3 writes it: 4 bytes big-endian, base64."""
    return base64.b64encode(int(crc_hex, 16).to_bytes(4, "big")).decode()


def _crc_hex(value: str | None) -> str | None:
    """S3's base64 CRC32C (a FULL_OBJECT one; a COMPOSITE one ends in ``-N``) as 8 hex
    digits; None when absent or of another form."""
    if not value or "-" in value:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 4 else None


def _crc32c_b64(data: bytes | bytearray | memoryview) -> str:
    """The ``x-amz-checksum-crc32c`` of ``data``: its CRC32C, big-endian, base64."""
    return base64.b64encode(crc32c_extend(0, data).to_bytes(4, "big")).decode()


def _fast_timestamps(session: Any) -> None:
    """Make the clients of a botocore ``session`` parse timestamps with
    :func:`_parse_timestamp` (botocore's documented parser hook)."""
    session.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=_parse_timestamp
    )


def _check_range(offset: int, length: int, block: int) -> None:
    if offset < 0 or length < 0:
        raise ValueError(f"bad range: offset {offset}, length {length}")
    if block <= 0:
        raise ValueError(f"block must be positive, got {block}")


# ---------------------------------------------------------------- storage remotes


def resolve_access(name: str, remote: S3Remote) -> S3Access:
    """Remote ``name``'s endpoint, quirks and concrete credentials: the role assumed
    (with the base credentials below, through the remote's STS endpoint), else the
    profile's keys, else the key pair of the environment variables it names, else
    the default chain's (None when it has none: the default chain applies where
    the store is opened)."""
    import os

    import boto3

    def env(var: str | None) -> str | None:
        if var is None:
            return None
        value = os.environ.get(var)
        if not value:
            raise AccessError(f"remote {name!r}: environment variable {var} is not set")
        return value

    where = f"remote {name!r}"
    try:
        if remote.profile is not None:
            base = boto3.session.Session(profile_name=remote.profile)
        elif remote.access_key_env is not None:
            base = boto3.session.Session(
                aws_access_key_id=env(remote.access_key_env),
                aws_secret_access_key=env(remote.secret_key_env),
                aws_session_token=env(remote.session_token_env),
            )
        else:
            base = boto3.session.Session()
        key = secret = token = None
        expires = None
        if remote.role_arn is not None:
            sts = base.client(
                "sts",
                endpoint_url=remote.sts_endpoint or remote.endpoint,
                region_name=remote.region or "us-east-1",
            )
            kw: dict[str, Any] = {
                "RoleArn": remote.role_arn,
                "RoleSessionName": remote.session_name,
                "DurationSeconds": remote.duration_seconds,
            }
            if remote.external_id:
                kw["ExternalId"] = remote.external_id
            creds = sts.assume_role(**kw)["Credentials"]
            key, secret = creds["AccessKeyId"], creds["SecretAccessKey"]
            token, expires = creds.get("SessionToken"), creds.get("Expiration")
        else:
            found = base.get_credentials()
            if found is not None:
                frozen = found.get_frozen_credentials()
                key, secret, token = frozen.access_key, frozen.secret_key, frozen.token
    except SkyhopError:
        raise
    except ClientError as exc:
        code = _error_code(exc)
        if code in _ACCESS_CODES or _http_status(exc) in (401, 403):
            raise AccessError(f"{where}: assuming {remote.role_arn} was refused ({code})") from None
        raise StoreError(f"{where}: {code}: {first_line(exc)}") from None
    except (BotoCoreError, URLLib3HTTPError) as exc:
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            raise AccessError(f"{where}: {NO_CREDENTIALS}") from None
        raise AccessError(f"{where}: {first_line(exc)}") from None
    return S3Access(
        remote=name,
        endpoint=remote.endpoint,
        planner_region=remote.planner_region,
        region=remote.region,
        path_style=remote.path_style,
        checksums=remote.checksums,
        access_key_id=key,
        secret_access_key=secret,
        session_token=token,
        expires_at=expires,
    )
