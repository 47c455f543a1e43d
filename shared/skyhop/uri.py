"""Parsing of store URIs: ``s3://``, ``gs://``, ``az://``, Azure ``https://`` blob URLs,
``file://`` and plain local paths. Every malformed URI is a one-line :class:`UsageError`."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict

from skyhop.errors import UsageError

Scheme = Literal["local", "s3", "gs", "az"]

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_GS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")
_AZ_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZ_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$|^\$root$")
_AZ_HOST = re.compile(r"^([a-z0-9]{3,24})\.blob\.core\.windows\.net$")


class StoreURI(BaseModel):
    """A location in an object store.

    ``bucket`` is the bucket (S3, GCS) or container (Azure); ``account`` is the
    Azure storage account. For the local filesystem ``bucket`` is ``""`` and
    ``key`` is the absolute path without its leading ``/``, so that every store
    speaks of keys relative to a root.
    """

    model_config = ConfigDict(frozen=True)

    scheme: Scheme
    bucket: str = ""
    key: str = ""
    account: str | None = None

    def __str__(self) -> str:
        if self.scheme == "local":
            return "/" + self.key
        if self.scheme == "az":
            return f"az://{self.account}/{self.bucket}/{self.key}"
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def store_id(self) -> str:
        """Identifies the bucket-level store: equal for URIs that share a store."""
        if self.scheme == "local":
            return "local"
        if self.scheme == "az":
            return f"az://{self.account}/{self.bucket}"
        return f"{self.scheme}://{self.bucket}"

    def with_key(self, key: str) -> StoreURI:
        """The same store at another key."""
        return self.model_copy(update={"key": key})

    def is_dir_like(self) -> bool:
        """True when the URI names a prefix (ends with ``/`` or is a bucket root)."""
        return self.key == "" or self.key.endswith("/")


def parse_uri(text: str) -> StoreURI:
    """Parse a user-supplied location; raise :class:`UsageError` naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("empty location: give a path or a URI such as s3://bucket/prefix")
    text = text.strip()
    if "://" not in text:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:/", text):
            raise UsageError(f"malformed URI {text!r}: expected SCHEME://...")
        return _local(text)
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        if not rest.startswith("/"):
            raise UsageError(
                f"malformed URI {text!r}: file:// needs an absolute path (file:///path)"
            )
        return _local(unquote(rest))
    if scheme in ("s3", "gs"):
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise UsageError(f"malformed URI {text!r}: no bucket name after {scheme}://")
        pattern = _S3_BUCKET if scheme == "s3" else _GS_BUCKET
        if not pattern.match(bucket):
            raise UsageError(f"malformed URI {text!r}: {bucket!r} is not a valid bucket name")
        return StoreURI(scheme=scheme, bucket=bucket, key=key)  # type: ignore[arg-type]
    if scheme == "az":
        parts = rest.split("/", 2)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise UsageError(f"malformed URI {text!r}: expected az://ACCOUNT/CONTAINER/PREFIX")
        return _azure(text, parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    if scheme in ("https", "http"):
        split = urlsplit(text)
        match = _AZ_HOST.match(split.hostname or "")
        if not match:
            raise UsageError(
                f"unsupported URL {text!r}: only Azure blob URLs (ACCOUNT.blob.core.windows.net) are accepted"
            )
        container, _, key = split.path.lstrip("/").partition("/")
        if not container:
            raise UsageError(f"malformed URI {text!r}: no container in the blob URL")
        return _azure(text, match.group(1), container, unquote(key))
    raise UsageError(
        f"unknown scheme {scheme!r} in {text!r}: use s3://, gs://, az://, file:// or a path"
    )


def _azure(text: str, account: str, container: str, key: str) -> StoreURI:
    if not _AZ_ACCOUNT.match(account):
        raise UsageError(f"malformed URI {text!r}: {account!r} is not a valid storage account name")
    if not _AZ_CONTAINER.match(container):
        raise UsageError(f"malformed URI {text!r}: {container!r} is not a valid container name")
    return StoreURI(scheme="az", account=account, bucket=container, key=key)


def _local(path: str) -> StoreURI:
    if "\x00" in path:
        raise UsageError("malformed path: contains a NUL byte")
    trailing = path.endswith("/") or path.endswith(os.sep)
    absolute = str(Path(os.path.expanduser(path)).absolute())
    # normalise ``..`` and ``.`` without resolving symlinks
    absolute = os.path.normpath(absolute)
    key = absolute.lstrip("/")
    if trailing and key:
        key += "/"
    return StoreURI(scheme="local", key=key)
