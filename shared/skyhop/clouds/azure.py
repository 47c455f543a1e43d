"""The Azure kit: which credentials a storage client uses, and Azure Core errors
as :mod:`skyhop.errors`.

A client for storage account ``ACCOUNT`` comes from the connection string in
``AZURE_STORAGE_CONNECTION_STRING`` when that string names the account
(Azurite in tests, a key in a function app), else from azure-identity's
``DefaultAzureCredential`` against ``https://ACCOUNT.<service>.core.windows.net``.
Stores, queues and the Table Storage manifest all build their clients with
:func:`storage_client`, so they agree on which account a string names.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from azure.core import exceptions as aexc

from skyhop.errors import (
    AccessError,
    NotFoundError,
    PreconditionFailed,
    SkyhopError,
    StoreError,
    UsageError,
    first_line,
    from_status,
)

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
_ENDPOINTS = ("blobendpoint", "queueendpoint", "tableendpoint")


def connection_string_account(conn: str) -> str | None:
    """The storage account a connection string points at: its AccountName, else
    the account of its blob, queue or table endpoint (``https://ACCOUNT.blob...``,
    or Azurite's ``http://127.0.0.1:PORT/ACCOUNT``)."""
    fields: dict[str, str] = {}
    for part in conn.split(";"):
        name, sep, value = part.partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    if fields.get("accountname"):
        return fields["accountname"]
    for name in _ENDPOINTS:
        endpoint = fields.get(name)
        if endpoint:
            split = urlsplit(endpoint)
            host = split.hostname or ""
            if host.endswith(".core.windows.net"):
                return host.split(".")[0]
            return split.path.strip("/").split("/")[0] or None
    return None


def connection_string(account: str) -> str | None:
    """The environment's connection string when it names ``account``."""
    conn = os.environ.get(CONNECTION_STRING_ENV)
    if conn and connection_string_account(conn) == account:
        return conn
    return None


def credential() -> Any:
    """azure-identity's DefaultAzureCredential (imported only when needed)."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def storage_client(cls: Any, account: str, service: str, *args: Any, **kwargs: Any) -> Any:
    """A ``cls`` client (BlobServiceClient, QueueClient, TableServiceClient, ...) of
    ``service`` (blob, queue, table) in ``account``; ``args`` follow the account URL
    (a queue's name, say)."""
    conn = connection_string(account)
    if conn:
        return cls.from_connection_string(conn, *args, **kwargs)
    url = f"https://{account}.{service}.core.windows.net"
    return cls(url, *args, credential=credential(), **kwargs)


def short(exc: BaseException) -> str:
    """One line of an Azure exception: ``STATUS CODE`` of an HTTP error, else its
    message's first line."""
    if isinstance(exc, aexc.HttpResponseError):
        code = getattr(exc, "error_code", None) or exc.reason or ""
        return f"{exc.status_code} {code}".strip()
    return first_line(exc)


def translate(exc: Exception, what: str) -> SkyhopError:
    """An Azure Storage (Core) exception as a SkyhopError."""
    detail = short(exc)
    if isinstance(exc, aexc.ResourceModifiedError):
        return PreconditionFailed(f"{what}: the object changed ({detail})")
    if isinstance(exc, aexc.ResourceNotFoundError):
        return NotFoundError(f"{what}: not found ({detail})")
    if isinstance(exc, aexc.ClientAuthenticationError):
        return AccessError(f"{what}: access denied ({detail})")
    if isinstance(exc, aexc.ServiceRequestError | aexc.ServiceResponseError):
        return StoreError(f"{what}: connection failed ({detail})", retryable=True)
    if isinstance(exc, aexc.HttpResponseError):
        status = exc.status_code or 0
        if status == 416:
            return StoreError(f"{what}: range not satisfiable ({detail})")
        return from_status(status, what, detail)
    if isinstance(exc, ValueError):
        return UsageError(f"{what}: {detail}")
    if isinstance(exc, OSError | ConnectionError | TimeoutError):
        return StoreError(f"{what}: connection failed ({detail})", retryable=True)
    if type(exc).__module__.startswith("azure.identity"):
        return AccessError(f"{what}: no usable Azure credentials ({detail})")
    return StoreError(f"{what}: {detail}")
