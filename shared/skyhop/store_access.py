"""How a store reaches its endpoint: a storage remote resolved into credentials.

A location that names a storage remote (``minio:bucket/prefix``,
``s3://bucket/prefix?remote=minio``) opens its store with that remote's
endpoint, quirks and credentials, not the environment's; each side of a copy
has its own. :func:`access_for` resolves a remote once per process into a
:data:`StoreAccess`: the endpoint and quirks, and credentials made concrete
(an assumed role's temporary keys, a profile's keys, the key pair read from the
environment variables the remote names, a connection string, a service
account's key). The cloud's own store module does the resolving
(``resolve_access`` in :mod:`skyhop.stores.s3`, ``gcs``, ``azure``), so the SDKs
stay in their adapters.

A gateway gets the access of its own side only, in its configuration
(``GatewayConfig.store_access``), and :func:`install` s it at start-up with
``only=True``: it then never reads a remotes file, so a source gateway cannot
open the destination even on a machine that has one.

The secret fields are plain strings because they travel in the gateway's
configuration (mode 0600, like its data key); they are left out of ``repr``.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from skyhop.errors import UsageError
from skyhop.registry import resolve

#: remote type -> URI scheme
SCHEMES: dict[str, Literal["s3", "gs", "az"]] = {"s3": "s3", "gcs": "gs", "azure": "az"}

#: remote type -> "module:function" resolving a remote into its access
_RESOLVERS: dict[str, str] = {
    "s3": "skyhop.stores.s3:resolve_access",
    "gcs": "skyhop.stores.gcs:resolve_access",
    "azure": "skyhop.stores.azure:resolve_access",
}


class _Access(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    remote: str = Field(description="the remote's name")
    endpoint: str | None = None
    planner_region: str | None = None


class S3Access(_Access):
    type: Literal["s3"] = "s3"
    region: str | None = None
    path_style: bool | None = None
    checksums: bool = True
    access_key_id: str | None = Field(None, repr=False)
    secret_access_key: str | None = Field(None, repr=False)
    session_token: str | None = Field(None, repr=False)
    expires_at: datetime | None = None


class GCSAccess(_Access):
    type: Literal["gcs"] = "gcs"
    project: str | None = None
    anonymous: bool = False
    service_account_info: str | None = Field(None, repr=False, description="the key file's JSON")


class AzureAccess(_Access):
    type: Literal["azure"] = "azure"
    account: str
    connection_string: str | None = Field(None, repr=False)
    account_key: str | None = Field(None, repr=False)
    sas_token: str | None = Field(None, repr=False)


StoreAccess = Annotated[S3Access | GCSAccess | AzureAccess, Field(discriminator="type")]

_lock = threading.Lock()
_accesses: dict[str, S3Access | GCSAccess | AzureAccess] = {}
_installed_only = False


def install(accesses: list[S3Access | GCSAccess | AzureAccess], *, only: bool = True) -> None:
    """Make ``accesses`` the ones this process uses; with ``only``, no other remote
    (from a remotes file) can be opened afterwards (gateways)."""
    global _installed_only
    with _lock:
        for access in accesses:
            _accesses[access.remote] = access
        _installed_only = _installed_only or only


def forget() -> None:
    """Drop every resolved access (tests; a long-lived process after credentials rotate)."""
    global _installed_only
    with _lock:
        _accesses.clear()
        _installed_only = False


def access_for(name: str) -> S3Access | GCSAccess | AzureAccess:
    """The access of remote ``name``, resolved on first use and then reused."""
    with _lock:
        found = _accesses.get(name)
        installed_only = _installed_only
    if found is not None:
        return found
    if installed_only:
        raise UsageError(f"remote {name!r} is not one this gateway was given")
    from skyhop.remotes import get_storage_remote

    remote = get_storage_remote(name)
    access: StoreAccess = resolve(_RESOLVERS[remote.type], f"remote {name!r} ({remote.type})")(
        name, remote
    )
    with _lock:
        _accesses[name] = access
    return access


def scheme_of(name: str) -> Literal["s3", "gs", "az"]:
    """The URI scheme of remote ``name`` (for ``NAME:bucket/prefix``), without
    resolving its credentials."""
    with _lock:
        found = _accesses.get(name)
        installed_only = _installed_only
    if found is not None:
        return SCHEMES[found.type]
    if installed_only:
        raise UsageError(f"remote {name!r} is not one this gateway was given")
    from skyhop.remotes import get_storage_remote

    return SCHEMES[get_storage_remote(name).type]


def azure_account_of(name: str) -> str:
    """The storage account of Azure remote ``name``."""
    with _lock:
        found = _accesses.get(name)
    if isinstance(found, AzureAccess):
        return found.account
    from skyhop.remotes import AzureRemote, get_storage_remote

    remote = get_storage_remote(name)
    if not isinstance(remote, AzureRemote):  # pragma: no cover - scheme_of said azure
        raise UsageError(f"remote {name!r} is not an Azure remote")
    return remote.account


def planner_region(name: str) -> str | None:
    """The region the planner knows remote ``name``'s endpoint as, if it says."""
    from skyhop.remotes import get_storage_remote

    with _lock:
        found = _accesses.get(name)
    if found is not None:
        return found.planner_region
    return get_storage_remote(name).planner_region
