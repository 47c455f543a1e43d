"""Google Cloud Storage: ``gs://BUCKET/PREFIX`` (google-cloud-storage).

* Credentials: Application Default Credentials; with ``STORAGE_EMULATOR_HOST``
  set, the client talks to that emulator anonymously.
* ``ObjectInfo.etag`` (and ``version``) is the object's *generation* as a decimal
  string: the token a reader pins. A pinned read asks for exactly that
  generation (``generation=`` plus ``ifGenerationMatch``); if the object has
  moved on it raises :class:`~skyhop.errors.PreconditionFailed`.
* Checksums: ``crc32c`` always (GCS sends base64; skyhop reports hex), ``md5``
  only where GCS has one (not for composite objects).
* Same-store copies (:class:`~skyhop.stores.base.ServerSideCopier`): another
  bucket behind the same endpoint is copied by GCS itself with ``rewrite``, as
  many calls as GCS asks for (a large object, or one changing location or
  storage class, takes several, each answering a rewrite token for the next).
  GCS copies whole objects only, so a job copying this way cuts none into parts.
  The copy's CRC32C is GCS's own, computed where it wrote the bytes, and is
  compared with the source's when the object completes.
* Multipart writing composes temporary part objects: parts are written under
  ``.skyhop-uploads/UPLOAD_ID/`` in the same bucket, composed (32 at a time, in
  a tree when there are more) into the destination key, then deleted. The
  upload's key and metadata live in ``.skyhop-uploads/UPLOAD_ID/upload.json``,
  so any process can complete or abort an upload another one started.
"""

from __future__ import annotations

import base64
import builtins
import heapq
import json
import math
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import storage
from google.cloud.storage import exceptions as storage_exc

from skyhop.clouds import gcp
from skyhop.errors import (
    AccessError,
    IntegrityError,
    NotFoundError,
    PreconditionFailed,
    SkyhopError,
    StoreError,
    UsageError,
    translated,
)
from skyhop.store_access import GCSAccess, access_for
from skyhop.stores import mtime as kept_time
from skyhop.stores.base import (
    BaseStore,
    Capabilities,
    CopiesWholeObjects,
    ObjectInfo,
    ObjectMeta,
    ObjectStore,
)
from skyhop.uri import StoreURI

if TYPE_CHECKING:
    from skyhop.remotes import GCSRemote

UPLOADS_PREFIX = ".skyhop-uploads/"
COMPOSE_MAX_SOURCES = 32
LIST_PAGE_SIZE = 1000
#: rewrite calls of one copy before giving up (each moves up to ~1 GiB or more)
MAX_REWRITE_CALLS = 100_000

T = TypeVar("T")


def b64_to_hex(value: str | None) -> str | None:
    """A base64 checksum as GCS reports it, in hex."""
    if not value:
        return None
    return base64.b64decode(value).hex()


def remote_client(access: GCSAccess) -> storage.Client:
    """A client for a storage remote: its endpoint, its service account (or none)."""
    options = {"api_endpoint": access.endpoint} if access.endpoint else None
    if access.anonymous:
        return storage.Client(
            project=access.project or "anonymous",
            credentials=gcp.anonymous_credentials(),
            client_options=options,
        )
    if access.service_account_info:
        creds = gcp.service_account_credentials(json.loads(access.service_account_info))
        return storage.Client(
            project=access.project or creds.project_id, credentials=creds, client_options=options
        )
    return storage.Client(project=access.project, client_options=options)


def resolve_access(name: str, remote: GCSRemote) -> GCSAccess:
    """Remote ``name``'s endpoint and the service account key its file holds."""
    info = None
    if remote.service_account_file:
        try:
            with open(remote.service_account_file, encoding="utf-8") as fh:
                info = fh.read()
            json.loads(info)
        except OSError as exc:
            raise AccessError(
                f"remote {name!r}: cannot read {remote.service_account_file}: {exc.strerror or exc}"
            ) from None
        except ValueError:
            raise AccessError(
                f"remote {name!r}: {remote.service_account_file} is not a JSON key file"
            ) from None
    return GCSAccess(
        remote=name,
        endpoint=remote.endpoint,
        planner_region=remote.planner_region,
        project=remote.project,
        anonymous=remote.anonymous,
        service_account_info=info,
    )


class GCSStore(CopiesWholeObjects, BaseStore):
    """The ObjectStore and MultipartWriter for one GCS bucket."""

    capabilities = Capabilities(
        conditional_read=True,
        max_parts=10_000,
        min_part_size=5 * 1024 * 1024,
        reports_md5=True,
        # each part is an object composed at the end: fewer, larger parts than S3's
        part_size=32 * 1024 * 1024,
        multipart_threshold=32 * 1024 * 1024,
        concurrency=8,
    )

    def __init__(self, uri: StoreURI, *, client: storage.Client | None = None) -> None:
        if uri.scheme != "gs":
            raise UsageError(f"not a gs:// location: {uri}")
        self.uri = uri
        self._client = client
        self._region: str | None = None
        self._region_known = False

    # ------------------------------------------------------------ plumbing

    @property
    def client(self) -> storage.Client:
        if self._client is None:
            if self.uri.remote is not None:
                access = access_for(self.uri.remote)
                if not isinstance(access, GCSAccess):
                    raise UsageError(
                        f"remote {self.uri.remote!r} is a {access.type} remote, not gcs"
                    )
                self._client = self._call(lambda: remote_client(access), "connect to GCS")
            else:
                self._client = self._call(lambda: storage.Client(), "connect to GCS")
        return self._client

    @property
    def bucket(self) -> storage.Bucket:
        return self.client.bucket(self.uri.bucket)

    def _where(self, key: str | None = None) -> str:
        return f"gs://{self.uri.bucket}/{key}" if key is not None else f"gs://{self.uri.bucket}"

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return translated(fn, what, self._classify)

    def _classify(self, exc: Exception, what: str) -> SkyhopError:
        detail = gcp.short(exc)
        if isinstance(exc, gexc.PreconditionFailed):
            return PreconditionFailed(f"{what}: the object changed ({detail})")
        found = gcp.known(exc, what)
        if found is not None:
            return found
        if isinstance(exc, gexc.RequestRangeNotSatisfiable):
            return StoreError(f"{what}: range not satisfiable ({detail})")
        if isinstance(exc, gexc.TooManyRequests | gexc.ServerError | gexc.RetryError):
            return StoreError(f"{what}: {detail}", retryable=True)
        if isinstance(exc, storage_exc.DataCorruption):
            return IntegrityError(f"{what}: checksum mismatch in transit ({detail})")
        if isinstance(exc, gexc.GoogleAPICallError):
            code = getattr(exc, "code", None)
            return StoreError(f"{what}: {detail}", retryable=code in (408, 409))
        if isinstance(exc, OSError | ConnectionError | TimeoutError) or type(
            exc
        ).__module__.startswith(("requests", "urllib3")):
            return StoreError(f"{what}: connection failed ({detail})", retryable=True)
        return StoreError(f"{what}: {detail}")

    # ------------------------------------------------------------ ObjectStore

    def region(self) -> str | None:
        if self.uri.remote is not None:
            access = access_for(self.uri.remote)
            if access.planner_region or access.endpoint:
                return access.planner_region
        if not self._region_known:
            try:
                bucket = self._call(lambda: self.client.get_bucket(self.uri.bucket), "region")
                location = bucket.location
                self._region = f"gcp:{location.lower()}" if location else None
            except SkyhopError:
                self._region = None
            self._region_known = True
        return self._region

    def check_bucket(self) -> None:
        what = f"bucket {self._where()}"
        try:
            self._call(lambda: self.client.get_bucket(self.uri.bucket), what)
        except AccessError:
            # object-level permissions may allow listing without buckets.get
            self._call(lambda: list(self.client.list_blobs(self.uri.bucket, max_results=1)), what)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        what = f"list {self._where(prefix)}"
        pages = self._call(
            lambda: (
                self.client.list_blobs(
                    self.uri.bucket, prefix=prefix or None, page_size=LIST_PAGE_SIZE
                ).pages
            ),
            what,
        )
        while True:
            page = self._call(lambda: next(pages, None), what)
            if page is None:
                return
            blobs: builtins.list[Any] = self._call(partial(builtins.list, page), what)
            for blob in blobs:
                yield self._info(blob)

    def list_delimited(self, prefix: str) -> Iterator[ObjectInfo | str]:
        """One level under ``prefix`` (``delimiter='/'``): blobs and prefixes merged
        in key order, page by page."""
        what = f"list {self._where(prefix)}"
        pages = self._call(
            lambda: (
                self.client.list_blobs(
                    self.uri.bucket,
                    prefix=prefix or None,
                    delimiter="/",
                    page_size=LIST_PAGE_SIZE,
                ).pages
            ),
            what,
        )
        # A prefix is handed out once a blob after it was seen (or at the end):
        # some servers (fake-gcs-server) repeat every prefix of the listing on
        # every page instead of only those within the page's range.
        pending: list[str] = []
        seen: set[str] = set()
        while True:
            page = self._call(lambda: next(pages, None), what)
            if page is None:
                break
            blobs: builtins.list[Any] = self._call(partial(builtins.list, page), what)
            for found in getattr(page, "prefixes", ()) or ():
                if found not in seen:
                    seen.add(found)
                    heapq.heappush(pending, found)
            for blob in sorted(blobs, key=lambda b: b.name):
                while pending and pending[0] < blob.name:
                    yield heapq.heappop(pending)
                yield self._info(blob)
        while pending:
            yield heapq.heappop(pending)

    def head(self, key: str) -> ObjectInfo | None:
        blob = self._call(lambda: self.bucket.get_blob(key), f"head {self._where(key)}")
        return None if blob is None else self._info(blob)

    def read_range(
        self, key: str, offset: int, length: int, *, if_match: str | None = None
    ) -> bytes:
        if offset < 0 or length < 0:
            raise UsageError(f"bad range {offset}+{length} for {self._where(key)}")
        generation = _generation(if_match, key) if if_match is not None else None
        if length == 0:
            self._check_exists(key, generation)
            return b""
        what = f"read {self._where(key)} bytes {offset}-{offset + length - 1}"
        blob = self.bucket.blob(key, generation=generation)
        try:
            data = self._call(
                lambda: blob.download_as_bytes(
                    start=offset,
                    end=offset + length - 1,
                    raw_download=True,
                    checksum=None,
                    if_generation_match=generation,
                ),
                what,
            )
        except NotFoundError:
            if generation is not None and self.head(key) is not None:
                raise PreconditionFailed(
                    f"{what}: the object changed (generation {generation} is gone)"
                ) from None
            raise
        if len(data) != length:
            raise StoreError(
                f"{what}: got {len(data)} bytes, expected {length} (object shorter than the range?)"
            )
        return bytes(data)

    def _check_exists(self, key: str, generation: int | None) -> None:
        info = self.head(key)
        if info is None:
            raise NotFoundError(f"read {self._where(key)}: not found")
        if generation is not None and info.version != str(generation):
            raise PreconditionFailed(
                f"read {self._where(key)}: the object changed (generation {generation} is gone)"
            )

    def put(self, key: str, data: bytes, *, meta: ObjectMeta | None = None) -> ObjectInfo:
        blob = self.bucket.blob(key)
        content_type = _apply_meta(blob, meta)
        self._call(
            lambda: blob.upload_from_string(data, content_type=content_type, checksum="crc32c"),
            f"write {self._where(key)}",
        )
        return self._info(blob)

    def delete(self, key: str) -> None:
        try:
            self._call(lambda: self.bucket.blob(key).delete(), f"delete {self._where(key)}")
        except NotFoundError:
            pass

    # ------------------------------------------------------------ ServerSideCopier

    def can_copy_from(self, src: ObjectStore) -> bool:
        """Another GCS bucket (or this one) behind the same endpoint, reached with the
        same identity (not two storage remotes): GCS rewrites it itself."""
        return (
            isinstance(src, GCSStore)
            and src.uri.remote == self.uri.remote
            and src.client.api_endpoint == self.client.api_endpoint
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
        """``rewrite`` until GCS says done (a rewrite token per call until then),
        pinned to the source generation ``if_match``; ``meta`` replaces the copied
        metadata when given."""
        assert isinstance(src, GCSStore)
        what = f"copy {src._where(src_key)} to {self._where(key)}"
        generation = _generation(if_match, src_key) if if_match is not None else None
        source = src.bucket.blob(src_key, generation=generation)
        dest = self.bucket.blob(key)
        _apply_meta(dest, meta)
        token: str | None = None
        for _ in range(MAX_REWRITE_CALLS):
            try:
                token, _done, _total = self._call(
                    partial(
                        dest.rewrite, source, token=token, if_source_generation_match=generation
                    ),
                    what,
                )
            except NotFoundError:
                if generation is not None and src.head(src_key) is not None:
                    raise PreconditionFailed(
                        f"{what}: the object changed (generation {generation} is gone)"
                    ) from None
                raise
            if token is None:
                info = self._info(dest)
                if info.size != size:
                    raise IntegrityError(f"{what}: GCS wrote {info.size} of {size} bytes")
                return info
        raise StoreError(f"{what}: not done after {MAX_REWRITE_CALLS} rewrite calls")

    # ------------------------------------------------------------ MultipartWriter

    def create_multipart(
        self, key: str, *, meta: ObjectMeta | None = None, crc32c: bool = False
    ) -> str:
        upload_id = uuid.uuid4().hex
        marker = {"key": key, "meta": meta.model_dump(mode="json") if meta else None}
        blob = self.bucket.blob(self._marker(upload_id))
        self._call(
            lambda: blob.upload_from_string(
                json.dumps(marker), content_type="application/json", if_generation_match=0
            ),
            f"start multipart upload of {self._where(key)}",
        )
        return upload_id

    def upload_part(
        self,
        key: str,
        upload_id: str,
        part_number: int,
        data: bytes,
        *,
        crc32c: str | None = None,
    ) -> str:
        _check_upload_id(upload_id)
        if not 1 <= part_number <= self.capabilities.max_parts:
            raise UsageError(f"part number {part_number} out of range 1..10000")
        blob = self.bucket.blob(self._part(upload_id, part_number))
        self._call(
            lambda: blob.upload_from_string(
                data, content_type="application/octet-stream", checksum="crc32c"
            ),
            f"write part {part_number} of {self._where(key)}",
        )
        # checked after the write, so a part racing an abort is not left behind
        if not self._marker_exists(upload_id):
            self.delete(blob.name)
            raise NotFoundError(
                f"write part {part_number} of {self._where(key)}: "
                f"no multipart upload {upload_id!r} (aborted or completed)"
            )
        return str(blob.generation)

    def complete_multipart(
        self,
        key: str,
        upload_id: str,
        parts: builtins.list[tuple[int, str]],
        *,
        part_crc32c: Mapping[int, str] | None = None,
        crc32c: str | None = None,
    ) -> ObjectInfo:
        _check_upload_id(upload_id)
        what = f"complete multipart upload of {self._where(key)}"
        meta = self._read_marker(key, upload_id, what)
        if not parts:
            raise UsageError(f"{what}: no parts given")
        numbers = [n for n, _ in parts]
        if len(set(numbers)) != len(numbers):
            raise UsageError(f"{what}: a part number is given twice")
        sources = [
            self.bucket.blob(self._part(upload_id, n), generation=_generation(tag, key))
            for n, tag in sorted(parts)
        ]
        level = 0
        while len(sources) > COMPOSE_MAX_SOURCES:
            merged = []
            for i in range(0, len(sources), COMPOSE_MAX_SOURCES):
                group = sources[i : i + COMPOSE_MAX_SOURCES]
                target = self.bucket.blob(f"{UPLOADS_PREFIX}{upload_id}/c{level}-{i:05d}")
                target.content_type = "application/octet-stream"
                self._call(partial(target.compose, group), what)
                merged.append(self.bucket.blob(target.name, generation=target.generation))
            sources = merged
            level += 1
        dest = self.bucket.blob(key)
        dest.content_type = _apply_meta(dest, meta) or "application/octet-stream"
        self._call(lambda: dest.compose(sources), what)
        self._delete_upload(upload_id)
        return self._info(dest)

    def abort_multipart(self, key: str, upload_id: str) -> None:
        _check_upload_id(upload_id)
        self._delete_upload(upload_id)

    # ------------------------------------------------------------ helpers

    def _marker(self, upload_id: str) -> str:
        return f"{UPLOADS_PREFIX}{upload_id}/upload.json"

    def _part(self, upload_id: str, part_number: int) -> str:
        return f"{UPLOADS_PREFIX}{upload_id}/p{part_number:05d}"

    def _marker_exists(self, upload_id: str) -> bool:
        name = self._marker(upload_id)
        return self._call(lambda: self.bucket.get_blob(name), f"head {name}") is not None

    def _read_marker(self, key: str, upload_id: str, what: str) -> ObjectMeta | None:
        try:
            raw = self._call(
                lambda: self.bucket.blob(self._marker(upload_id)).download_as_bytes(), what
            )
        except NotFoundError:
            raise NotFoundError(f"{what}: no multipart upload {upload_id!r}") from None
        marker = json.loads(raw)
        if marker.get("key") != key:
            raise UsageError(f"{what}: upload {upload_id!r} belongs to key {marker.get('key')!r}")
        return ObjectMeta.model_validate(marker["meta"]) if marker.get("meta") else None

    def _delete_upload(self, upload_id: str) -> None:
        prefix = f"{UPLOADS_PREFIX}{upload_id}/"
        names = [info.key for info in self.list(prefix)]

        def drop(name: str) -> None:
            try:
                self._call(lambda: self.bucket.blob(name).delete(), f"delete {name}")
            except NotFoundError:
                pass

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(drop, names))

    def _info(self, blob: storage.Blob) -> ObjectInfo:
        checksums: dict[str, str] = {}
        crc = b64_to_hex(blob.crc32c)
        if crc:
            checksums["crc32c"] = crc
        md5 = b64_to_hex(blob.md5_hash)
        if md5:
            checksums["md5"] = md5
        generation = str(blob.generation) if blob.generation is not None else None
        mtime, precision, user = kept_time.kept(dict(blob.metadata or {}))
        if mtime is None and blob.updated:
            mtime = blob.updated.timestamp()
        return ObjectInfo(
            key=blob.name,
            size=int(blob.size or 0),
            etag=generation,
            version=generation,
            mtime=mtime,
            mtime_precision=precision,
            checksums=checksums,
            meta=ObjectMeta(
                content_type=blob.content_type,
                content_encoding=blob.content_encoding,
                cache_control=blob.cache_control,
                user=user,
                storage_class=blob.storage_class,
                mtime=mtime if precision is not None else None,
            ),
        )


def _apply_meta(blob: storage.Blob, meta: ObjectMeta | None) -> str | None:
    """Set ``meta`` on a blob about to be written; returns its content type."""
    if meta is None:
        return None
    if meta.content_encoding:
        blob.content_encoding = meta.content_encoding
    if meta.cache_control:
        blob.cache_control = meta.cache_control
    user = dict(meta.user)
    if meta.mtime is not None:
        # kept as rclone keeps it: RFC 3339 in "mtime", whole seconds for gsutil
        user = kept_time.kept(user)[2]
        user[kept_time.MTIME_KEY] = kept_time.rfc3339_text(meta.mtime)
        user[kept_time.GSUTIL_MTIME_KEY] = str(math.floor(meta.mtime))
    if user:
        blob.metadata = user
    if meta.storage_class:
        blob.storage_class = meta.storage_class
    if meta.content_type:
        blob.content_type = meta.content_type
    return meta.content_type


def _generation(tag: str, key: str) -> int:
    try:
        value = int(tag)
    except (TypeError, ValueError):
        raise UsageError(f"{tag!r} is not a GCS generation (pinning gs://.../{key})") from None
    if value <= 0:
        raise UsageError(f"{tag!r} is not a GCS generation (pinning gs://.../{key})")
    return value


def _check_upload_id(upload_id: str) -> None:
    if not upload_id or not all(c in "0123456789abcdef" for c in upload_id):
        raise UsageError(f"malformed multipart upload id {upload_id!r}")
