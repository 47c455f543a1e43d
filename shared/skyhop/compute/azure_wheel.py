"""Where Azure gateway VMs fetch skyhop's wheel: one blob, read through a SAS URL.

:func:`publish_wheel` builds the wheel of this control plane's own code
(:func:`skyhop.compute.package.build_wheel`) and puts it once into the private
container ``skyhop-gateways`` of a storage account (the deployment's own: the
account of its ``AzureWebJobsStorage`` connection; from the CLI, the account of
``AZURE_STORAGE_CONNECTION_STRING`` or ``wheel_account``), under its SHA-256
(``wheels/SHA256/skyhop-VERSION-py3-none-any.whl``), so publishing the same code
again uploads nothing. It returns an :class:`AzureWheel`, which names the blob.

:func:`signed` turns it into the :class:`~skyhop.compute.package.GatewayPackage` a
launch's custom data installs: a SAS URL of that one blob, read only, valid for
:data:`URL_SECONDS` (signed with the account key when the client has one, else
with a user delegation key from Entra credentials), its digest (not a secret)
and the dependencies pinned to this machine's versions. No gateway identity needs
any access to the account: the URL is the grant, for that blob alone.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from azure.core import exceptions as aexc
from azure.storage.blob import (
    BlobSasPermissions,
    BlobServiceClient,
    ContentSettings,
    generate_blob_sas,
)
from pydantic import BaseModel, ConfigDict, Field

from skyhop.clouds import azure
from skyhop.compute.package import GatewayPackage, build_wheel, pinned_requirements, sha256_of
from skyhop.errors import SkyhopError, translated

T = TypeVar("T")

CONTAINER = "skyhop-gateways"
URL_SECONDS = 6 * 3600  # a gateway boots within minutes; a resume launches (and signs) anew
_CLOCK_SKEW = dt.timedelta(minutes=5)


class AzureWheel(BaseModel):
    """skyhop's wheel as a blob of a storage account; signed anew at every launch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account: str = Field(pattern=r"^[a-z0-9]{3,24}$")
    container: str = Field(CONTAINER, pattern=r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$")
    blob: str = Field(pattern=r"^wheels/[0-9a-f]{64}/skyhop-[A-Za-z0-9_.+!]+-py3-none-any\.whl$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    filename: str
    requirements: list[str] = Field(default_factory=list)


def blob_name(sha256: str, filename: str) -> str:
    """Where a wheel lives in the container: named by its digest (content-addressed)."""
    return f"wheels/{sha256}/{filename}"


def _service(account: str, connection_string: str | None = None) -> BlobServiceClient:
    """The account's blob service: from ``connection_string`` when given, else as every
    storage client of skyhop is made (:func:`skyhop.clouds.azure.storage_client`)."""
    if connection_string:
        conn = connection_string
        client: BlobServiceClient = _call(
            lambda: BlobServiceClient.from_connection_string(conn),
            f"connect to the blob service of {account}",
        )
        return client
    client = _call(
        lambda: azure.storage_client(BlobServiceClient, account, "blob"),
        f"connect to the blob service of {account}",
    )
    return client


def publish_wheel(
    account: str,
    container: str = CONTAINER,
    *,
    connection_string: str | None = None,
    extra: str | None = "azure",
) -> AzureWheel:
    """Build skyhop's wheel and upload it to ``account``/``container`` unless a blob of
    the same digest is there already (then nothing is written). ``connection_string``
    (a deployment's) is used instead of the environment's credentials when given."""
    with tempfile.TemporaryDirectory(prefix="skyhop-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        digest = sha256_of(wheel)
        name = blob_name(digest, wheel.name)
        service = _service(account, connection_string)
        where = f"az://{account}/{container}/{name}"
        holder = service.get_container_client(container)
        try:  # private: no public access level (the default)
            _call(
                holder.create_container,
                f"create container {container} for the gateway wheel",
                passthrough=(aexc.ResourceExistsError,),
            )
        except aexc.ResourceExistsError:
            pass
        blob = holder.get_blob_client(name)
        if not _call(blob.exists, f"checking {where}"):
            data = wheel.read_bytes()
            try:
                _call(
                    lambda: blob.upload_blob(
                        data,
                        overwrite=False,
                        content_settings=ContentSettings(content_type="application/zip"),
                        metadata={"skyhop": "gateway-wheel", "sha256": digest},
                    ),
                    f"uploading the gateway wheel to {where}",
                    passthrough=(aexc.ResourceExistsError,),
                )
            except aexc.ResourceExistsError:  # another publisher got there first: same bytes
                pass
        return AzureWheel(
            account=account,
            container=container,
            blob=name,
            sha256=digest,
            filename=wheel.name,
            requirements=pinned_requirements(extra),
        )


def signed(
    wheel: AzureWheel, *, seconds: int = URL_SECONDS, connection_string: str | None = None
) -> GatewayPackage:
    """The package a launch's custom data installs: a read-only SAS URL of the wheel's
    blob alone, valid for ``seconds``, with its digest and pinned dependencies."""
    service = _service(wheel.account, connection_string)
    blob = service.get_blob_client(wheel.container, wheel.blob)
    now = dt.datetime.now(dt.UTC)
    start, expiry = now - _CLOCK_SKEW, now + dt.timedelta(seconds=seconds)
    # https only, but for an emulator on loopback (Azurite speaks http)
    protocol = "https" if blob.url.startswith("https://") else None
    what = f"signing a SAS URL of az://{wheel.account}/{wheel.container}/{wheel.blob}"
    key = getattr(service.credential, "account_key", None)  # a shared key (connection string)
    if key:
        sas = _call(
            lambda: generate_blob_sas(
                account_name=wheel.account,
                container_name=wheel.container,
                blob_name=wheel.blob,
                account_key=key,
                permission=BlobSasPermissions(read=True),
                start=start,
                expiry=expiry,
                protocol=protocol,
            ),
            what,
        )
    else:  # Entra credentials: a user delegation key, good until the URL expires
        delegation = _call(lambda: service.get_user_delegation_key(start, expiry), what)
        sas = _call(
            lambda: generate_blob_sas(
                account_name=wheel.account,
                container_name=wheel.container,
                blob_name=wheel.blob,
                user_delegation_key=delegation,
                permission=BlobSasPermissions(read=True),
                start=start,
                expiry=expiry,
                protocol=protocol,
            ),
            what,
        )
    return GatewayPackage(
        url=f"{blob.url}?{sas}",
        sha256=wheel.sha256,
        filename=wheel.filename,
        requirements=wheel.requirements,
    )


def _call(fn: Callable[[], T], what: str, passthrough: tuple[type[Exception], ...] = ()) -> T:
    return translated(fn, what, _classify, passthrough=passthrough)


def _classify(exc: Exception, what: str) -> SkyhopError:
    return azure.translate(exc, what)
