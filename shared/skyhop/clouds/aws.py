"""The AWS kit: boto3 clients with standard retries, and botocore errors as
:mod:`skyhop.errors` (access denied, not found, retryable or not)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from skyhop.errors import (
    AccessError,
    GatewayError,
    NotFoundError,
    SkyhopError,
    StoreError,
    Translator,
    UsageError,
    first_line,
    translated,
)

ACCESS_CODES = {
    "UnauthorizedOperation",
    "AuthFailure",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
}


#: what every botocore call can raise
SDK_ERRORS: tuple[type[Exception], ...] = (ClientError, BotoCoreError)


def client(
    service: str,
    region: str | None,
    *,
    max_attempts: int | None = None,
    no_region: str = "set AWS_REGION",
) -> Any:
    """A boto3 client of ``service`` with standard retries (``max_attempts`` of
    them, else botocore's default); no region is a UsageError saying ``no_region``."""
    retries: dict[str, Any] = {"mode": "standard"}
    if max_attempts is not None:
        retries["max_attempts"] = max_attempts
    try:
        return boto3.session.Session().client(
            service, region_name=region, config=Config(retries=retries)
        )
    except NoRegionError:
        raise UsageError(f"no AWS region for {service}: {no_region}") from None
    except BotoCoreError as exc:  # a profile that does not exist, a broken config file
        raise UsageError(f"AWS configuration for {service}: {first_line(exc)}") from None


def call(fn: Any, what: str, kind: type[SkyhopError] = GatewayError) -> Any:
    """One botocore call, its errors translated by :func:`classify` as ``kind``."""
    return translated(fn, what, lambda exc, w: classify(exc, w, kind), catch=SDK_ERRORS)


def translator(
    client_error: Callable[[ClientError, str], SkyhopError], *, no_region: str
) -> Translator:
    """The translation of an adapter whose service's error codes ``client_error``
    reads: no region is a UsageError saying ``no_region`` (what the user can do);
    any other botocore error (a connection, a timeout) a retryable StoreError."""

    def translate(exc: Exception, what: str) -> SkyhopError:
        if isinstance(exc, ClientError):
            return client_error(exc, what)
        if isinstance(exc, NoRegionError):
            return UsageError(f"{what}: {no_region}")
        return StoreError(f"{what}: {exc}", retryable=True)

    return translate


def classify(exc: Exception, what: str, kind: type[SkyhopError]) -> SkyhopError:
    if not isinstance(exc, ClientError):
        return (
            StoreError(f"{what}: {exc}", retryable=True)
            if kind is StoreError
            else kind(f"{what}: {exc}")
        )
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = first_line(error.get("Message") or code)
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in ACCESS_CODES or status in (401, 403):
        return AccessError(f"{what}: access denied ({code})")
    if code.endswith(".NotFound") or code.startswith("InvalidPermission.NotFound"):
        return NotFoundError(f"{what}: {code}: {message}")
    if kind is StoreError:
        return StoreError(f"{what}: {code}: {message}", retryable=status >= 500 or status == 429)
    return kind(f"{what}: {code}: {message}")
