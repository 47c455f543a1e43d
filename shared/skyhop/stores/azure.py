"""Azure Blob Storage: ``az://ACCOUNT/CONTAINER/PREFIX`` and
``https://ACCOUNT.blob.core.windows.net/CONTAINER/PREFIX`` (azure-storage-blob).

* Credentials: ``AZURE_STORAGE_CONNECTION_STRING`` when it names the URI's
  account (that is how Azurite is reached in tests), else azure-identity's
  ``DefaultAzureCredential`` against ``https://ACCOUNT.blob.core.windows.net``;
  a location naming a storage remote (``az://ACCOUNT/C/P?remote=NAME``) uses
  that remote's endpoint and credential (:func:`resolve_access`).
* ``ObjectInfo.etag`` is the blob's ETag; a pinned read sends it as
  ``If-Match`` and a moved blob raises :class:`~skyhop.errors.PreconditionFailed`.
* Checksums: Azure keeps a Content-MD5 only where the writer set one, so
  skyhop computes MD5 while writing: on every ``put``, and on the block-list
  commit of a multipart upload that this store instance started and whose parts
  it saw in order (1, 2, 3, ...), which is how one sequential writer uploads.
  Parts staged out of order or by other processes (gateways) leave no
  Content-MD5; those objects are verified by skyhop's chunk CRC32Cs and size. Each staged block is also sent with a
  transactional MD5 that the service checks.
* Multipart writing stages blocks (block id derived from the upload id and part
  number) and commits them with a block list. The upload's key and metadata live
  in a small marker blob ``.skyhop-uploads/UPLOAD_ID.json`` so that any process
  can complete or abort it. Azure discards uncommitted blocks by itself after
  seven days; there is no call to drop them sooner.
* Same-store copies (:class:`~skyhop.stores.base.ServerSideCopier`): a blob of
  another container (or this one) of the same account is copied by the service
  itself with Copy Blob (``start_copy_from_url``), pinned to the source ETag,
  and waited for while its status is ``pending``. Copy Blob copies whole blobs
  only (the ranged Put Block From URL is not implemented by Azurite 3.35, where
  this is tested), so a job copying this way cuts no object into parts. The
  copy keeps the source's properties, Content-MD5 among them; its size and that
  MD5 are compared with the source's when the object completes and with the
  destination listing at the end (the MD5 is the source's, carried by the
  service, not a fresh hash of the copied bytes).
* ``region()`` is None: the data-plane API does not say where an account lives.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from azure.core import MatchConditions
from azure.storage.blob import BlobBlock, BlobServiceClient, ContentSettings, StandardBlobTier

from skyhop.clouds import azure as azure_kit
from skyhop.errors import (
    AccessError,
    IntegrityError,
    NotFoundError,
    PreconditionFailed,
    StoreError,
    UsageError,
    translated,
)
from skyhop.store_access import AzureAccess, access_for
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
    from skyhop.remotes import AzureRemote

UPLOADS_PREFIX = ".skyhop-uploads/"
LIST_PAGE_SIZE = 1000
#: how long one Copy Blob may stay pending (a same-account copy is usually done at once)
COPY_WAIT = 3600.0
ACCESS_TIERS = {"hot": "Hot", "cool": "Cool", "cold": "Cold", "archive": "Archive"}

T = TypeVar("T")


def service_client(account: str) -> BlobServiceClient:
    """A BlobServiceClient for ``account`` (connection string if it names it, else identity)."""
    client: BlobServiceClient = azure_kit.storage_client(BlobServiceClient, account, "blob")
    return client


#: the parser every Azure adapter shares (kept here for callers of the old name)
connection_string_account = azure_kit.connection_string_account


def remote_client(access: AzureAccess) -> BlobServiceClient:
    """A BlobServiceClient for a storage remote's account, with its own credential."""
    if access.connection_string:
        return BlobServiceClient.from_connection_string(access.connection_string)
    endpoint = access.endpoint or f"https://{access.account}.blob.core.windows.net"
    if access.account_key:
        return BlobServiceClient(
            endpoint, credential={"account_name": access.account, "account_key": access.account_key}
        )
    if access.sas_token:
        return BlobServiceClient(endpoint, credential=access.sas_token.lstrip("?"))
    return BlobServiceClient(endpoint, credential=azure_kit.credential())


def resolve_access(name: str, remote: AzureRemote) -> AzureAccess:
    """Remote ``name``'s account, endpoint and the secret its environment variable
    holds (none: azure-identity's default credential where the store is opened)."""

    def env(var: str | None) -> str | None:
        if var is None:
            return None
        value = os.environ.get(var)
        if not value:
            raise AccessError(f"remote {name!r}: environment variable {var} is not set")
        return value

    conn = env(remote.connection_string_env)
    if conn is not None and connection_string_account(conn) not in (None, remote.account):
        raise UsageError(
            f"remote {name!r}: the connection string in {remote.connection_string_env} is for "
            f"account {connection_string_account(conn)!r}, not {remote.account!r}"
        )
    return AzureAccess(
        remote=name,
        endpoint=remote.endpoint,
        planner_region=remote.planner_region,
        account=remote.account,
        connection_string=conn,
        account_key=env(remote.account_key_env),
        sas_token=env(remote.sas_token_env),
    )


class _RunningMD5:
    """MD5 of the parts seen so far, valid while they arrive in order."""

    def __init__(self) -> None:
        self.next_part = 1
        self.hasher = hashlib.md5()  # noqa: S324 - Azure's Content-MD5, not security
        self.broken = False


class AzureStore(CopiesWholeObjects, BaseStore):
    """The ObjectStore and MultipartWriter for one Azure Blob container."""

    capabilities = Capabilities(
        conditional_read=True,
        max_parts=10_000,
        min_part_size=5 * 1024 * 1024,
        reports_md5=True,
        # staged blocks of 8 MiB (azcopy's block size), 16 at once (rclone's azureblob)
        part_size=8 * 1024 * 1024,
        multipart_threshold=8 * 1024 * 1024,
        concurrency=16,
    )

    def __init__(self, uri: StoreURI, *, service: BlobServiceClient | None = None) -> None:
        if uri.scheme != "az" or not uri.account:
            raise UsageError(f"not an az:// location: {uri}")
        self.uri = uri
        self._service = service
        self._md5: dict[tuple[str, str], _RunningMD5] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ plumbing

    @property
    def service(self) -> BlobServiceClient:
        if self._service is None:
            account = self.uri.account or ""
            if self.uri.remote is not None:
                access = access_for(self.uri.remote)
                if not isinstance(access, AzureAccess):
                    raise UsageError(
                        f"remote {self.uri.remote!r} is a {access.type} remote, not azure"
                    )
                self._service = self._call(lambda: remote_client(access), "connect to Azure")
            else:
                self._service = self._call(lambda: service_client(account), "connect to Azure")
        return self._service

    @property
    def container(self) -> Any:
        return self.service.get_container_client(self.uri.bucket)

    def _blob(self, key: str) -> Any:
        return self.service.get_blob_client(self.uri.bucket, key)

    def _where(self, key: str | None = None) -> str:
        base = f"az://{self.uri.account}/{self.uri.bucket}"
        return f"{base}/{key}" if key is not None else base

    def _call(self, fn: Callable[[], T], what: str) -> T:
        return translated(fn, what, azure_kit.translate)

    # ------------------------------------------------------------ ObjectStore

    def region(self) -> str | None:
        if self.uri.remote is not None:
            return access_for(self.uri.remote).planner_region
        return None

    def check_bucket(self) -> None:
        self._call(lambda: self.container.get_container_properties(), f"container {self._where()}")

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        what = f"list {self._where(prefix)}"
        pages = self._call(
            lambda: self.container.list_blobs(
                name_starts_with=prefix or None,
                include=["metadata"],
                results_per_page=LIST_PAGE_SIZE,
            ).by_page(),
            what,
        )
        while True:
            page = self._call(lambda: next(pages, None), what)
            if page is None:
                return
            items: builtins.list[Any] = self._call(partial(builtins.list, page), what)
            for props in items:
                yield _info(props)

    def list_delimited(self, prefix: str) -> Iterator[ObjectInfo | str]:
        """One level under ``prefix`` (``delimiter='/'``): blobs and BlobPrefixes
        merged in key order, page by page."""
        from azure.storage.blob import BlobPrefix

        what = f"list {self._where(prefix)}"
        pages = self._call(
            lambda: self.container.walk_blobs(
                name_starts_with=prefix or None,
                include=["metadata"],
                delimiter="/",
                results_per_page=LIST_PAGE_SIZE,
            ).by_page(),
            what,
        )
        while True:
            page = self._call(lambda: next(pages, None), what)
            if page is None:
                return
            items: builtins.list[Any] = self._call(partial(builtins.list, page), what)
            found: list[tuple[str, ObjectInfo | str]] = []
            for item in items:
                if isinstance(item, BlobPrefix):
                    found.append((item.name, item.name))
                else:
                    found.append((item.name, _info(item)))
            found.sort(key=lambda pair: pair[0])
            for _, entry in found:
                yield entry

    def head(self, key: str) -> ObjectInfo | None:
        try:
            props = self._call(
                lambda: self._blob(key).get_blob_properties(), f"head {self._where(key)}"
            )
        except NotFoundError:
            return None
        return _info(props)

    def read_range(
        self, key: str, offset: int, length: int, *, if_match: str | None = None
    ) -> bytes:
        if offset < 0 or length < 0:
            raise UsageError(f"bad range {offset}+{length} for {self._where(key)}")
        if length == 0:
            info = self.head(key)
            if info is None:
                raise NotFoundError(f"read {self._where(key)}: not found")
            if if_match is not None and info.etag != _quoted(if_match):
                raise PreconditionFailed(f"read {self._where(key)}: the object changed")
            return b""
        what = f"read {self._where(key)} bytes {offset}-{offset + length - 1}"
        # decompress=False: the stored bytes, even of a Content-Encoding: gzip blob
        kwargs: dict[str, Any] = {
            "offset": offset,
            "length": length,
            "max_concurrency": 1,
            "decompress": False,
        }
        if if_match is not None:
            kwargs.update(etag=_quoted(if_match), match_condition=MatchConditions.IfNotModified)
        data = self._call(lambda: self._blob(key).download_blob(**kwargs).readall(), what)
        if len(data) != length:
            raise StoreError(
                f"{what}: got {len(data)} bytes, expected {length} (object shorter than the range?)"
            )
        return bytes(data)

    def put(self, key: str, data: bytes, *, meta: ObjectMeta | None = None) -> ObjectInfo:
        md5 = hashlib.md5(data).digest()  # noqa: S324 - Azure's Content-MD5
        kwargs = _write_kwargs(meta, md5)
        result = self._call(
            lambda: self._blob(key).upload_blob(data, overwrite=True, **kwargs),
            f"write {self._where(key)}",
        )
        modified = result.get("last_modified")
        settings = kwargs["content_settings"]
        mtime, precision, user = kept_time.kept(dict(kwargs.get("metadata") or {}))
        if mtime is None and modified:
            mtime = modified.timestamp()
        return ObjectInfo(
            key=key,
            size=len(data),
            etag=_quoted(result.get("etag")),
            version=result.get("version_id"),
            mtime=mtime,
            mtime_precision=precision,
            checksums={"md5": md5.hex()},
            meta=ObjectMeta(
                content_type=settings.content_type,
                content_encoding=settings.content_encoding,
                cache_control=settings.cache_control,
                mtime=mtime if precision is not None else None,
                user=user,
                storage_class=kwargs["standard_blob_tier"].value
                if "standard_blob_tier" in kwargs
                else None,
            ),
        )

    def delete(self, key: str) -> None:
        try:
            self._call(lambda: self._blob(key).delete_blob(), f"delete {self._where(key)}")
        except NotFoundError:
            pass

    # ------------------------------------------------------------ ServerSideCopier

    def can_copy_from(self, src: ObjectStore) -> bool:
        """A container of the same account behind the same endpoint, reached with the
        same identity (not two storage remotes): Copy Blob within an account needs no
        access to the source beyond this store's own."""
        return (
            isinstance(src, AzureStore)
            and src.uri.remote == self.uri.remote
            and src.uri.account == self.uri.account
            and src.service.url == self.service.url
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
        """Copy Blob, pinned to the source ETag ``if_match``, then wait while the copy
        is pending; ``meta`` (user metadata, kept mtime, tier) replaces the copied
        metadata when given, the content settings are the source's."""
        assert isinstance(src, AzureStore)
        what = f"copy {src._where(src_key)} to {self._where(key)}"
        kwargs: dict[str, Any] = {}
        if meta is not None:
            written = _write_kwargs(meta, None)
            kwargs["metadata"] = written.get("metadata") or {}
            if "standard_blob_tier" in written:
                kwargs["standard_blob_tier"] = written["standard_blob_tier"]
        if if_match is not None:
            kwargs.update(
                source_etag=_quoted(if_match), source_match_condition=MatchConditions.IfNotModified
            )
        blob = self._blob(key)
        source_url = src._blob(src_key).url
        answer = self._call(lambda: blob.start_copy_from_url(source_url, **kwargs), what)
        status, copy_id = answer.get("copy_status"), answer.get("copy_id")
        deadline = time.monotonic() + COPY_WAIT
        delay = 0.05
        while status == "pending":
            if time.monotonic() > deadline:
                self._call(lambda: blob.abort_copy(copy_id), what)
                raise StoreError(f"{what}: still pending after {COPY_WAIT:.0f} s", retryable=True)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            props = self._call(lambda: blob.get_blob_properties(), what)
            status = props.copy.status
        if status != "success":
            raise StoreError(f"{what}: the service's copy ended {status}", retryable=True)
        info = self.head(key)
        if info is None:
            raise StoreError(f"{what}: the blob vanished right after its copy")
        if info.size != size:
            raise IntegrityError(f"{what}: the service wrote {info.size} of {size} bytes")
        return info

    # ------------------------------------------------------------ MultipartWriter

    def create_multipart(
        self, key: str, *, meta: ObjectMeta | None = None, crc32c: bool = False
    ) -> str:
        upload_id = uuid.uuid4().hex
        marker = {"key": key, "meta": meta.model_dump(mode="json") if meta else None}
        self._call(
            lambda: self._blob(self._marker(upload_id)).upload_blob(
                json.dumps(marker).encode(), overwrite=False
            ),
            f"start multipart upload of {self._where(key)}",
        )
        with self._lock:
            self._md5[(key, upload_id)] = _RunningMD5()
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
        block_id = _block_id(upload_id, part_number)
        self._call(
            lambda: self._blob(key).stage_block(block_id, data, validate_content=True),
            f"write part {part_number} of {self._where(key)}",
        )
        if self.head(self._marker(upload_id)) is None:
            # an uncommitted block cannot be deleted; Azure drops it after a week
            raise NotFoundError(
                f"write part {part_number} of {self._where(key)}: "
                f"no multipart upload {upload_id!r} (aborted or completed)"
            )
        with self._lock:
            # only for uploads this instance started (a gateway writing parts of an
            # upload the control plane started would hash them for nothing, and keep
            # the hasher forever: the commit happens elsewhere)
            running = self._md5.get((key, upload_id))
            if running is not None:
                if not running.broken and part_number == running.next_part:
                    running.hasher.update(data)
                    running.next_part += 1
                else:
                    running.broken = True
        return block_id

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
        ordered = sorted(parts)
        numbers = [n for n, _ in ordered]
        if len(set(numbers)) != len(numbers):
            raise UsageError(f"{what}: a part number is given twice")
        for n, tag in ordered:
            if tag != _block_id(upload_id, n):
                raise UsageError(f"{what}: tag {tag!r} is not part {n} of upload {upload_id}")
        with self._lock:
            running = self._md5.pop((key, upload_id), None)
        md5 = None
        if running and not running.broken and numbers == list(range(1, running.next_part)):
            md5 = running.hasher.digest()
        blocks = [BlobBlock(block_id=tag) for _, tag in ordered]
        kwargs = _write_kwargs(meta, md5)
        self._call(lambda: self._blob(key).commit_block_list(blocks, **kwargs), what)
        self.delete(self._marker(upload_id))
        info = self.head(key)
        if info is None:
            raise StoreError(f"{what}: the blob vanished right after the commit")
        return info

    def abort_multipart(self, key: str, upload_id: str) -> None:
        _check_upload_id(upload_id)
        with self._lock:
            self._md5.pop((key, upload_id), None)
        self.delete(self._marker(upload_id))

    # ------------------------------------------------------------ helpers

    def _marker(self, upload_id: str) -> str:
        return f"{UPLOADS_PREFIX}{upload_id}.json"

    def _read_marker(self, key: str, upload_id: str, what: str) -> ObjectMeta | None:
        try:
            raw = self._call(
                lambda: self._blob(self._marker(upload_id)).download_blob().readall(), what
            )
        except NotFoundError:
            raise NotFoundError(f"{what}: no multipart upload {upload_id!r}") from None
        marker = json.loads(raw)
        if marker.get("key") != key:
            raise UsageError(f"{what}: upload {upload_id!r} belongs to key {marker.get('key')!r}")
        return ObjectMeta.model_validate(marker["meta"]) if marker.get("meta") else None


def _block_id(upload_id: str, part_number: int) -> str:
    """Block ids of one blob must all have the same length: fixed-width part numbers."""
    return base64.b64encode(f"{upload_id}:{part_number:06d}".encode()).decode()


def _write_kwargs(meta: ObjectMeta | None, md5: bytes | None) -> dict[str, Any]:
    settings = ContentSettings(
        content_type=(meta.content_type if meta else None) or "application/octet-stream",
        content_encoding=meta.content_encoding if meta else None,
        cache_control=meta.cache_control if meta else None,
        content_md5=bytearray(md5) if md5 else None,
    )
    kwargs: dict[str, Any] = {"content_settings": settings}
    user = dict(meta.user) if meta else {}
    if meta and meta.mtime is not None:
        # kept as rclone keeps it (metadata "mtime", RFC 3339), for sync to compare
        user = kept_time.kept(user)[2]
        user[kept_time.MTIME_KEY] = kept_time.rfc3339_text(meta.mtime)
    if user:
        kwargs["metadata"] = user
    tier = ACCESS_TIERS.get((meta.storage_class or "").lower()) if meta else None
    if tier:
        kwargs["standard_blob_tier"] = StandardBlobTier(tier)
    return kwargs


def _info(props: Any) -> ObjectInfo:
    settings = props.content_settings
    checksums: dict[str, str] = {}
    if settings is not None and settings.content_md5:
        checksums["md5"] = bytes(settings.content_md5).hex()
    modified = props.last_modified
    mtime, precision, user = kept_time.kept(dict(props.metadata or {}))
    if mtime is None and modified:
        mtime = modified.timestamp()
    return ObjectInfo(
        key=props.name,
        size=int(props.size or 0),
        etag=_quoted(props.etag),
        version=getattr(props, "version_id", None),
        mtime=mtime,
        mtime_precision=precision,
        checksums=checksums,
        meta=ObjectMeta(
            content_type=settings.content_type if settings else None,
            content_encoding=settings.content_encoding if settings else None,
            cache_control=settings.cache_control if settings else None,
            user=user,
            storage_class=str(props.blob_tier) if props.blob_tier else None,
            mtime=mtime if precision is not None else None,
        ),
    )


def _quoted(etag: str | None) -> str | None:
    """ETags in their HTTP form: listings give them bare, properties quoted."""
    if not etag:
        return None
    return etag if etag.startswith('"') else f'"{etag}"'


def _check_upload_id(upload_id: str) -> None:
    if not upload_id or not all(c in "0123456789abcdef" for c in upload_id):
        raise UsageError(f"malformed multipart upload id {upload_id!r}")
