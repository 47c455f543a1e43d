"""The built-in openers of :func:`skyhop.state.base.open_manifest`, one per scheme
(the registry names them as ``module:function`` strings, so the protocol module
imports no implementation)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from skyhop.errors import UsageError
from skyhop.state.base import ManifestStore
from skyhop.state.sqlite import SQLiteManifest


def open_sqlite(uri: str) -> ManifestStore:
    split = urlsplit(uri)
    if split.netloc or not split.path.startswith("/"):
        raise UsageError(f"manifest {uri!r}: expected sqlite:///ABSOLUTE/PATH")
    return SQLiteManifest(Path(split.path))


def open_dynamodb(uri: str) -> ManifestStore:
    from skyhop.state.dynamodb import DynamoDBManifest  # boto3 only when asked for

    split = urlsplit(uri)
    if not split.netloc:
        raise UsageError(f"manifest {uri!r}: expected dynamodb://TABLE[?region=R]")
    region = parse_qs(split.query).get("region", [None])[-1]
    return DynamoDBManifest(split.netloc, region=region)
