"""Where EC2 gateways launched from this machine fetch skyhop's wheel.

:func:`publish_wheel` builds the wheel of this control plane's own code
(:func:`skyhop.compute.package.build_wheel`), puts it once into the private
bucket ``skyhop-gateways-ACCOUNT-REGION`` (made when missing: public access
blocked, encrypted, tagged ``skyhop=gateways``) under its SHA-256, and returns
the :class:`~skyhop.compute.package.GatewayPackage` the boot script installs:
a presigned GET URL (no role of the gateways needs any S3 access to it, a relay
included), the digest, and the dependencies pinned to this machine's versions.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from skyhop.clouds import aws
from skyhop.compute.package import GatewayPackage, build_wheel, pinned_requirements, sha256_of
from skyhop.errors import GatewayError, NotFoundError, SkyhopError

URL_SECONDS = 6 * 3600  # a gateway boots within minutes; resumes launch anew


class WheelObject(BaseModel):
    """A deployment's copy of skyhop's wheel in S3 (``infra_cdk`` uploads it as an
    asset); signed anew at every launch (:func:`signed`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bucket: str
    key: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    filename: str
    requirements: list[str] = Field(default_factory=list)


def signed(wheel: WheelObject, region: str) -> GatewayPackage:
    """The package a launch's boot scripts install: a presigned GET URL of the object
    (made with the launching function's own credentials; no gateway role needs any S3
    access to it), its digest and pinned dependencies."""
    s3 = aws.client("s3", region)
    url = aws.call(
        lambda: s3.generate_presigned_url(
            "get_object", Params={"Bucket": wheel.bucket, "Key": wheel.key}, ExpiresIn=URL_SECONDS
        ),
        "signing the gateway wheel's URL",
        GatewayError,
    )
    return GatewayPackage(
        url=str(url), sha256=wheel.sha256, filename=wheel.filename, requirements=wheel.requirements
    )


def bucket_name(account: str, region: str) -> str:
    return f"skyhop-gateways-{account}-{region}"


def publish_wheel(region: str) -> GatewayPackage:
    """Build, upload (once per digest) and sign skyhop's wheel for gateways in ``region``."""
    with tempfile.TemporaryDirectory(prefix="skyhop-wheel-") as tmp:
        wheel = build_wheel(Path(tmp))
        digest = sha256_of(wheel)
        s3 = aws.client("s3", region)
        sts = aws.client("sts", region)
        account = str(aws.call(sts.get_caller_identity, "checking the AWS account")["Account"])
        bucket = bucket_name(account, region)
        _ensure_bucket(s3, bucket, region)
        key = f"wheels/{digest}/{wheel.name}"
        what = f"uploading the gateway wheel to s3://{bucket}/{key}"
        if not _exists(lambda: s3.head_object(Bucket=bucket, Key=key), what):
            body = wheel.read_bytes()
            aws.call(
                lambda: s3.put_object(
                    Bucket=bucket, Key=key, Body=body, ServerSideEncryption="AES256"
                ),
                what,
                GatewayError,
            )
        url = aws.call(
            lambda: s3.generate_presigned_url(
                "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=URL_SECONDS
            ),
            "signing the gateway wheel's URL",
            GatewayError,
        )
        return GatewayPackage(
            url=str(url),
            sha256=digest,
            filename=wheel.name,
            requirements=pinned_requirements(),
        )


def _ensure_bucket(s3: Any, bucket: str, region: str) -> None:
    what = f"setting up the gateway wheel bucket {bucket}"
    if _exists(lambda: s3.head_bucket(Bucket=bucket), what):
        return
    location = {} if region == "us-east-1" else {"LocationConstraint": region}
    try:
        aws.call(
            lambda: s3.create_bucket(
                Bucket=bucket,
                **({"CreateBucketConfiguration": location} if location else {}),
            ),
            what,
            GatewayError,
        )
    except GatewayError as exc:
        if "BucketAlreadyOwnedByYou" not in str(exc):
            raise
    aws.call(
        lambda: s3.put_public_access_block(
            Bucket=bucket,
            PublicAccessBlockConfiguration={
                "BlockPublicAcls": True,
                "IgnorePublicAcls": True,
                "BlockPublicPolicy": True,
                "RestrictPublicBuckets": True,
            },
        ),
        what,
        GatewayError,
    )
    aws.call(
        lambda: s3.put_bucket_tagging(
            Bucket=bucket, Tagging={"TagSet": [{"Key": "skyhop", "Value": "gateways"}]}
        ),
        what,
        GatewayError,
    )


def _exists(head: Any, what: str) -> bool:
    """Whether a HEAD finds it (S3 answers a bare 404 to HEAD, with no error code)."""
    try:
        aws.call(head, what, GatewayError)
    except NotFoundError:
        return False
    except SkyhopError as exc:
        if "404" in str(exc) or "Not Found" in str(exc):
            return False
        raise
    return True
