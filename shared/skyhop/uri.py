"""Parsing of store URIs: ``s3://``, ``gs://``, ``az://``, Azure ``https://`` blob URLs,
``file://`` and plain local paths. Every malformed URI is a one-line :class:`UsageError`.

A location may name a storage remote (endpoint and credentials of its own, see
:mod:`skyhop.remotes`): ``NAME:bucket/prefix`` (``NAME:container/prefix`` for an
Azure remote), or a URI followed by ``?remote=NAME``; it prints in the second,
self-describing form."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict

from skyhop.errors import SkyhopError, UsageError

Scheme = Literal["local", "s3", "gs", "az"]

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_GS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._\-]{1,220}[a-z0-9]$")
_AZ_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
_AZ_CONTAINER = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9\-]{1,61}[a-z0-9]$|^\$root$")
_AZ_HOST = re.compile(r"^([a-z0-9]{3,24})\.blob\.core\.windows\.net$")
_REMOTE_NAME = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
#: ``NAME:bucket/prefix`` (rclone's form; a local path with a colon is written ./a:b)
_NAMED = re.compile(rf"^({_REMOTE_NAME}):(?!/)(.*)$", re.DOTALL)
#: ``s3://bucket/prefix?remote=NAME``: only a trailing tag of exactly this shape
_REMOTE_TAG = re.compile(rf"\?remote=({_REMOTE_NAME})$")


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
    remote: str | None = None  # a storage remote of $SKYHOP_HOME/remotes.toml

    def __str__(self) -> str:
        if self.scheme == "local":
            return "/" + self.key
        if self.scheme == "az":
            text = f"az://{self.account}/{self.bucket}/{self.key}"
        else:
            text = f"{self.scheme}://{self.bucket}/{self.key}"
        return text + (f"?remote={self.remote}" if self.remote else "")

    @property
    def store_id(self) -> str:
        """Identifies the bucket-level store: equal for URIs that share a store (the
        same bucket through two remotes is two stores: two endpoints, two identities)."""
        if self.scheme == "local":
            return "local"
        if self.scheme == "az":
            text = f"az://{self.account}/{self.bucket}"
        else:
            text = f"{self.scheme}://{self.bucket}"
        return text + (f"?remote={self.remote}" if self.remote else "")

    def with_key(self, key: str) -> StoreURI:
        """The same store at another key."""
        return self.model_copy(update={"key": key})

    def is_dir_like(self) -> bool:
        """True when the URI names a prefix (ends with ``/`` or is a bucket root)."""
        return self.key == "" or self.key.endswith("/")


#: What a message may name as a location (the ``pattern`` of ``source`` and
#: ``destination`` in the published JSON Schemas): an absolute local path or
#: ``file:///``, ``s3://BUCKET``, ``gs://BUCKET``, ``az://ACCOUNT/CONTAINER`` or
#: ``https://ACCOUNT.blob.core.windows.net/CONTAINER``, each optionally followed
#: by ``/KEY``, a cloud one by ``?remote=NAME`` too. Every string it matches also
#: parses (:func:`parse_uri` accepts more: relative paths, ``~`` and ``NAME:bucket``,
#: which mean nothing to another system; the CLI writes them out as absolute
#: paths and ``?remote=`` URIs). Written for ECMA-262 and Python alike:
#: ``(?![\s\S])`` is the end of the text (``$`` would also match before a final
#: newline).
_CLOUD_TAIL = rf"(?:/[\s\S]*|\?remote={_REMOTE_NAME})?"
LOCATION_PATTERN = (
    r"^(?:"
    r"/(?:(?!://)[^\x00])*"
    r"|file:///(?![\s\S]*%00)[^\x00]*"
    rf"|s3://[a-z0-9][a-z0-9.\-]{{1,61}}[a-z0-9]{_CLOUD_TAIL}"
    rf"|gs://[a-z0-9][a-z0-9._\-]{{1,220}}[a-z0-9]{_CLOUD_TAIL}"
    r"|(?:az://[a-z0-9]{3,24}/|https://[a-z0-9]{3,24}\.blob\.core\.windows\.net/)"
    rf"(?:\$root|(?![a-z0-9\-]*--)[a-z0-9][a-z0-9\-]{{1,61}}[a-z0-9]){_CLOUD_TAIL}"
    r")(?![\s\S])"
)
_LOCATION = re.compile(LOCATION_PATTERN)


def check_location(text: str) -> str:
    """``text`` when a message may name it as a location (:data:`LOCATION_PATTERN`
    and :func:`parse_uri` both accept it), else UsageError saying why."""
    parse_uri(text)
    if not _LOCATION.search(text):
        if "://" not in text and not text.startswith("/"):
            raise UsageError(f"location {text!r} is not absolute: give /PATH or file:///PATH")
        raise UsageError(
            f"location {text!r} is not in its canonical form (s3://BUCKET/KEY, gs://BUCKET/KEY, "
            "az://ACCOUNT/CONTAINER/KEY, https://ACCOUNT.blob.core.windows.net/CONTAINER/KEY, "
            "/PATH or file:///PATH)"
        )
    return text


def absolute(text: str) -> str:
    """A location as a message names it: local paths made absolute (``data/x`` ->
    ``/home/me/data/x``, ``~`` expanded, a trailing ``/`` kept), a storage remote's
    ``NAME:bucket/prefix`` as ``s3://bucket/prefix?remote=NAME``, URIs as given."""
    uri = parse_uri(text)
    return str(uri) if uri.scheme == "local" or uri.remote else text.strip()


def parse_uri(text: str) -> StoreURI:
    """Parse a user-supplied location; raise :class:`UsageError` naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("empty location: give a path or a URI such as s3://bucket/prefix")
    text = text.strip()
    if "://" not in text:
        if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*:/", text):
            raise UsageError(f"malformed URI {text!r}: expected SCHEME://...")
        named = _NAMED.match(text)
        if named:
            return _named(text, named.group(1), named.group(2))
        return _local(text)
    remote = None
    tagged = _REMOTE_TAG.search(text)
    if tagged:
        remote = tagged.group(1)
        text = text[: tagged.start()]
    parsed = _parse_scheme(text)
    if remote is None:
        return parsed
    if parsed.scheme == "local":
        raise UsageError(f"malformed URI {text!r}: ?remote= names a storage remote, not a path")
    return parsed.model_copy(update={"remote": remote})


def _parse_scheme(text: str) -> StoreURI:
    scheme, _, rest = text.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        if not rest.startswith("/"):
            raise UsageError(
                f"malformed URI {text!r}: file:// needs an absolute path (file:///path)"
            )
        return _local(unquote(rest))
    if scheme in ("s3", "gs"):
        kind: Literal["s3", "gs"] = "s3" if scheme == "s3" else "gs"
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise UsageError(f"malformed URI {text!r}: no bucket name after {kind}://")
        pattern = _S3_BUCKET if kind == "s3" else _GS_BUCKET
        if not pattern.match(bucket):
            raise UsageError(f"malformed URI {text!r}: {bucket!r} is not a valid bucket name")
        return StoreURI(scheme=kind, bucket=bucket, key=key)
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


def _named(text: str, name: str, rest: str) -> StoreURI:
    """``NAME:bucket/prefix``: a location of storage remote NAME (its type says the
    scheme; an Azure remote names its account, so the rest is container/prefix)."""
    from skyhop.store_access import azure_account_of, scheme_of

    try:
        scheme = scheme_of(name)
    except SkyhopError as exc:
        raise UsageError(
            f"{text!r}: {exc} (a local path with a colon: write it as ./{text})"
        ) from None
    if scheme == "az":
        container, _, key = rest.partition("/")
        if not container:
            raise UsageError(f"malformed location {text!r}: expected {name}:CONTAINER/PREFIX")
        return _azure(text, azure_account_of(name), container, key).model_copy(
            update={"remote": name}
        )
    parsed = _parse_scheme(f"{scheme}://{rest}")
    return parsed.model_copy(update={"remote": name})


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
