"""Where GCE gateway VMs fetch skyhop's wheel: one object of a private GCS bucket.

:func:`publish_wheel` builds the wheel of this control plane's own code
(:func:`skyhop.compute.package.build_wheel`) and puts it once into a bucket
(default ``skyhop-gateways-PROJECT``, made when missing: uniform bucket-level
access, public access prevention enforced, labelled ``skyhop=gateways``) under its
SHA-256 (``wheels/SHA256/skyhop-VERSION-py3-none-any.whl``), so publishing the
same code again uploads nothing. It returns a :class:`GCSWheel`, naming the object.

:func:`signed` turns it into the :class:`~skyhop.compute.package.GatewayPackage` a
launch's startup script installs, its digest (not a secret) and dependencies
pinned to this machine's versions, fetched in one of two ways:

* a **V4 signed URL** of that one object, valid for :data:`URL_SECONDS`, when the
  launching credentials can sign: a service-account key (signed here), or, on
  Cloud Functions and GCE, the runtime's service account through IAM
  ``signBlob`` (its email and access token; the account needs
  ``iam.serviceAccounts.signBlob`` on itself). No gateway identity needs any
  access to the bucket: the URL is the grant.
* the object's **download URL fetched with the VM's own token** (``auth:
  gce-metadata``: the boot script asks the metadata server for its service
  account's access token), when the credentials cannot sign (a user's
  application-default login) and the gateways run as service accounts; those
  accounts are granted ``roles/storage.objectViewer`` on the bucket
  (:func:`grant_readers`: at publish from the CLI, by ``skyhop deploy gcp``).

The emulator the tests run (fake-gcs-server) serves both URLs but checks neither a
signature nor a token, and has no bucket IAM: tests check what the URL fetches
(exactly the wheel's bytes), the V4 signature against the key's public half, what
the boot script sends, that it refuses any other bytes, and the grant against a
local fake of the bucket IAM endpoints. IAM ``signBlob`` is not exercised (no
emulator of the IAM Credentials API).
"""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import google.auth
from google.api_core import exceptions as gexc
from google.auth.credentials import Credentials, Signing
from google.auth.exceptions import DefaultCredentialsError
from google.auth.transport import requests as auth_requests
from google.cloud import storage
from pydantic import BaseModel, ConfigDict, Field

from skyhop.clouds import gcp
from skyhop.compute.package import GatewayPackage, build_wheel, pinned_requirements, sha256_of
from skyhop.errors import AccessError, GatewayError, SkyhopError, UsageError, translated

T = TypeVar("T")

URL_SECONDS = 6 * 3600  # a gateway boots within minutes; a resume launches (and signs) anew
READER_ROLE = "roles/storage.objectViewer"


class GCSWheel(BaseModel):
    """skyhop's wheel as an object of a GCS bucket; signed anew at every launch."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
    name: str = Field(pattern=r"^wheels/[0-9a-f]{64}/skyhop-[A-Za-z0-9_.+!]+-py3-none-any\.whl$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    filename: str
    requirements: list[str] = Field(default_factory=list)


def bucket_name(project: str) -> str:
    return f"skyhop-gateways-{project}"


def object_name(sha256: str, filename: str) -> str:
    """Where a wheel lives in the bucket: named by its digest (content-addressed)."""
    return f"wheels/{sha256}/{filename}"


def client(project: str | None, credentials: Credentials | None = None) -> storage.Client:
    """A Storage client: ``credentials`` when given, else Application Default
    Credentials (anonymous against ``STORAGE_EMULATOR_HOST``)."""
    if credentials is None:
        return _call(lambda: storage.Client(project=project), "connect to GCS")
    return _call(lambda: storage.Client(project=project, credentials=credentials), "connect to GCS")


def publish_wheel(
    gcs: storage.Client,
    bucket: str,
    *,
    location: str | None = None,
    readers: Iterable[str] = (),
    extra: str | None = "gcp",
) -> GCSWheel:
    """Build skyhop's wheel and upload it to ``bucket`` (made in ``location`` when
    missing) unless an object of the same digest is there already (then nothing is
    written); grant ``readers`` (service-account emails) read access to the bucket's
    objects when given."""
    with tempfile.TemporaryDirectory(prefix="skyhop-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        digest = sha256_of(wheel)
        name = object_name(digest, wheel.name)
        where = f"gs://{bucket}/{name}"
        holder = _ensure_bucket(gcs, bucket, location)
        blob = holder.blob(name)
        if not _call(blob.exists, f"checking {where}"):
            try:
                _call(
                    lambda: blob.upload_from_filename(
                        str(wheel), content_type="application/zip", if_generation_match=0
                    ),
                    f"uploading the gateway wheel to {where}",
                    passthrough=(gexc.PreconditionFailed,),
                )
            except gexc.PreconditionFailed:  # another publisher got there first: same bytes
                pass
        if readers:
            grant_readers(gcs, bucket, readers)
        return GCSWheel(
            bucket=bucket,
            name=name,
            sha256=digest,
            filename=wheel.name,
            requirements=pinned_requirements(extra),
        )


def _ensure_bucket(gcs: storage.Client, bucket: str, location: str | None) -> storage.Bucket:
    what = f"setting up the gateway wheel bucket gs://{bucket}"
    holder = gcs.bucket(bucket)
    if _call(holder.exists, what):
        return holder
    holder.iam_configuration.uniform_bucket_level_access_enabled = True
    holder.iam_configuration.public_access_prevention = "enforced"
    holder.labels = {"skyhop": "gateways"}
    try:
        _call(
            lambda: gcs.create_bucket(holder, location=location),
            what,
            passthrough=(gexc.Conflict,),
        )
    except gexc.Conflict:  # made meanwhile (or someone else's: the upload then says so)
        pass
    return gcs.bucket(bucket)


def grant_readers(gcs: storage.Client, bucket: str, accounts: Iterable[str]) -> list[str]:
    """``roles/storage.objectViewer`` on ``bucket`` for each service account (email)
    not yet holding it; the members added."""
    members = {f"serviceAccount:{a}" for a in accounts}
    holder = gcs.bucket(bucket)
    what = f"granting the gateways read access to gs://{bucket}"
    policy = _call(lambda: holder.get_iam_policy(requested_policy_version=3), what)
    binding = next((b for b in policy.bindings if b.get("role") == READER_ROLE), None)
    if binding is None:
        binding = {"role": READER_ROLE, "members": set()}
        policy.bindings.append(binding)
    have = set(binding.get("members", set()))
    added = sorted(members - have)
    if added:
        binding["members"] = have | members
        _call(lambda: holder.set_iam_policy(policy), what)
    return added


def signing_credentials(given: Credentials | None) -> Credentials | None:
    """Credentials that can sign a URL: ``given`` (or Application Default Credentials)
    when they hold a key (or sign through IAM: a runtime service account); None else."""
    found = given
    if found is None:
        try:
            found, _ = google.auth.default()
        except DefaultCredentialsError:
            return None
    if isinstance(found, Signing) or iam_signer(found):
        return found
    return None


def iam_signer(credentials: Credentials) -> bool:
    """A runtime service account (Cloud Functions, GCE): signs through IAM signBlob."""
    email = getattr(credentials, "service_account_email", None)
    return bool(email) and not isinstance(credentials, Signing)


def signed(
    wheel: GCSWheel,
    gcs: storage.Client,
    *,
    signer: Credentials | None,
    token_fetch: bool = False,
    seconds: int = URL_SECONDS,
) -> GatewayPackage:
    """The package a launch's startup script installs: a V4 signed URL of the wheel's
    object when ``signer`` can sign, else (``token_fetch``: the gateways run as service
    accounts that may read it) its download URL, fetched with the VM's own token."""
    blob = gcs.bucket(wheel.bucket).blob(wheel.name)
    what = f"signing a URL of gs://{wheel.bucket}/{wheel.name}"
    common = {"sha256": wheel.sha256, "filename": wheel.filename}
    if signer is not None:
        try:
            return GatewayPackage(
                url=_signed_url(blob, signer, seconds, what),
                requirements=wheel.requirements,
                **common,
            )
        except AccessError:
            # a runtime account not allowed to signBlob as itself: the gateways' own
            # accounts, granted read on the bucket by the deployment, fetch it instead
            if not (token_fetch and iam_signer(signer)):
                raise
    if token_fetch:
        base = gcs.api_endpoint.rstrip("/")
        url = (
            f"{base}/download/storage/v1/b/{wheel.bucket}/o/{quote(wheel.name, safe='')}?alt=media"
        )
        return GatewayPackage(
            url=url, requirements=wheel.requirements, auth="gce-metadata", **common
        )
    raise UsageError(
        "the gateways' skyhop wheel: these credentials cannot sign a URL of it (a user's "
        "login cannot), and the gateways run as no service account to fetch it with: give "
        "a service-account key (GOOGLE_APPLICATION_CREDENTIALS) or service_accounts"
    )


def _signed_url(blob: storage.Blob, signer: Credentials, seconds: int, what: str) -> str:
    kwargs: dict[str, Any] = {}
    if iam_signer(signer):  # no key here: IAM signBlob, as the runtime's account
        if not signer.valid:
            _call(lambda: signer.refresh(auth_requests.Request()), what)
        runtime = cast(Any, signer)  # compute_engine.Credentials: an email, a token
        kwargs = {"service_account_email": runtime.service_account_email,
                  "access_token": runtime.token}  # fmt: skip
    url = _call(
        lambda: blob.generate_signed_url(
            version="v4",
            expiration=dt.timedelta(seconds=seconds),
            method="GET",
            credentials=signer,
            **kwargs,
        ),
        what,
    )
    return str(url)


def _call(fn: Callable[[], T], what: str, passthrough: tuple[type[Exception], ...] = ()) -> T:
    return translated(fn, what, _classify, passthrough=passthrough)


def _classify(exc: Exception, what: str) -> SkyhopError:
    found = gcp.known(exc, what)
    if found is not None:
        return found
    if isinstance(exc, ValueError | AttributeError | TypeError):  # e.g. cannot sign
        return UsageError(f"{what}: {gcp.short(exc)}")
    return GatewayError(f"{what}: {gcp.short(exc)}")
