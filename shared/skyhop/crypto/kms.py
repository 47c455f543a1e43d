"""Data keys wrapped with AWS KMS (the ``kms`` :class:`~skyhop.crypto.keys.KeyWrapper`).

A key is wrapped under the encryption context ``{"skyhop:job": JOB}``; the
wrapped form carries the key ARN and the context, so a gateway unwraps with
nothing but it. :meth:`KMSKeyWrapper.grant_decrypt` lets one IAM role decrypt
one job's keys (``Decrypt`` only, only with that job's context); the EC2
provider grants it to the roles that receive a wrapped key and revokes it
with the job's firewall rules.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from botocore.exceptions import ClientError

from skyhop.clouds import aws
from skyhop.errors import (
    AccessError,
    IntegrityError,
    NotFoundError,
    SkyhopError,
    StoreError,
    UsageError,
    translated,
)

KMS_CONTEXT_KEY = "skyhop:job"
WRAP_VERSION = 1


class KMSKeyWrapper:
    """:class:`skyhop.crypto.KeyWrapper` with AWS KMS, bound to one job.

    ``wrap`` encrypts a data key under ``key_id`` with the encryption context
    ``{"skyhop:job": job_id}`` and returns a JSON text carrying the key ARN,
    the context and the ciphertext; ``unwrap`` needs only that text (and KMS
    permission: a grant from :meth:`grant_decrypt` or an IAM policy). When
    this wrapper knows its job, ``unwrap`` refuses a key wrapped for another.
    Constructed as ``KMSKeyWrapper(key_id)`` by :func:`skyhop.crypto.open_key_wrapper`.
    """

    def __init__(
        self,
        key_id: str | None = None,
        *,
        job_id: str | None = None,
        region: str | None = None,
        client: Any | None = None,
    ) -> None:
        self.key_id = key_id
        self.job_id = job_id
        self.region = region or _region_of_arn(key_id)
        self._client = client
        self._clients: dict[str | None, Any] = {}

    @property
    def context(self) -> dict[str, str]:
        if not self.job_id:
            raise UsageError("KMS key wrapping needs the job id (KMSKeyWrapper(key, job_id=...))")
        return {KMS_CONTEXT_KEY: self.job_id}

    def generate(self) -> tuple[bytes, str]:
        """A fresh 256-bit data key: (plaintext, wrapped)."""
        key_id = self._key()
        response = self._call(
            lambda: self._kms().generate_data_key(
                KeyId=key_id, KeySpec="AES_256", EncryptionContext=self.context
            ),
            "generating a data key",
        )
        return response["Plaintext"], self._token(response["KeyId"], response["CiphertextBlob"])

    def wrap(self, key: bytes) -> str:
        if len(key) != 32:
            raise UsageError(f"a data key is 32 bytes, not {len(key)}")
        key_id = self._key()
        response = self._call(
            lambda: self._kms().encrypt(
                KeyId=key_id, Plaintext=key, EncryptionContext=self.context
            ),
            "wrapping the data key",
        )
        return self._token(response["KeyId"], response["CiphertextBlob"])

    def unwrap(self, wrapped: str) -> bytes:
        token = _parse_token(wrapped)
        job = token["context"].get(KMS_CONTEXT_KEY)
        if self.job_id is not None and job != self.job_id:
            raise IntegrityError(f"the data key was wrapped for job {job!r}, not {self.job_id!r}")
        client = self._kms(_region_of_arn(token["key"]) or self.region)
        response = self._call(
            lambda: client.decrypt(
                CiphertextBlob=base64.b64decode(token["blob"]),
                EncryptionContext=token["context"],
                KeyId=token["key"],
            ),
            f"unwrapping the data key of job {job}",
        )
        key: bytes = response["Plaintext"]
        if len(key) != 32:
            raise IntegrityError(f"the unwrapped data key of job {job} is not 32 bytes")
        return key

    @staticmethod
    def key_of(wrapped: str) -> str:
        """The KMS key ARN a wrapped key names."""
        return str(_parse_token(wrapped)["key"])

    def grant_decrypt(self, grantee: str, *, role: str = "gateway") -> str:
        """Let IAM principal ``grantee`` decrypt this job's data keys, and nothing
        else (``Decrypt`` only, only with this job's encryption context)."""
        key_id = self._key()
        grant = self._call(
            lambda: self._kms().create_grant(
                KeyId=key_id,
                GranteePrincipal=grantee,
                Operations=["Decrypt"],
                Constraints={"EncryptionContextEquals": self.context},
                Name=f"skyhop-{self.job_id}-{role}",
            ),
            f"granting {grantee} the data key of job {self.job_id}",
        )
        return str(grant["GrantId"])

    def grants(self) -> list[dict[str, Any]]:
        """This job's grants on the key."""
        key_id = self._key()
        prefix = f"skyhop-{self.job_id}-"
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"KeyId": key_id}
        while True:
            page = self._call(
                lambda kwargs=kwargs: self._kms().list_grants(**kwargs), "listing grants"
            )
            for grant in page.get("Grants", []):
                constraint = (grant.get("Constraints") or {}).get("EncryptionContextEquals")
                if str(grant.get("Name", "")).startswith(prefix) or constraint == self.context:
                    out.append(grant)
            if not page.get("Truncated") or not page.get("NextMarker"):
                return out
            kwargs["Marker"] = page["NextMarker"]

    def revoke_grant(self, grant_id: str) -> None:
        key_id = self._key()
        try:
            self._call(
                lambda: self._kms().revoke_grant(KeyId=key_id, GrantId=grant_id),
                f"revoking grant {grant_id}",
            )
        except NotFoundError:
            pass

    def revoke_grants(self) -> int:
        """Revoke every grant of this job on the key (idempotent); how many there were."""
        found = self.grants()
        for grant in found:
            self.revoke_grant(grant["GrantId"])
        return len(found)

    # ------------------------------------------------------------ plumbing

    def _key(self) -> str:
        if not self.key_id:
            raise UsageError("no KMS key given: set the deployment's key ARN (kms_key_id)")
        return self.key_id

    def _token(self, key_arn: str, blob: bytes) -> str:
        return json.dumps(
            {
                "v": WRAP_VERSION,
                "key": key_arn,
                "context": self.context,
                "blob": base64.b64encode(blob).decode(),
            },
            separators=(",", ":"),
            sort_keys=True,
        )

    def _kms(self, region: str | None = None) -> Any:
        if self._client is not None:
            return self._client
        name = region or self.region
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = aws.client("kms", name)
        return client

    def _call(self, fn: Any, what: str) -> Any:
        return translated(fn, f"KMS: {what}", _translate, catch=aws.SDK_ERRORS)


def _parse_token(wrapped: str) -> dict[str, Any]:
    try:
        token = json.loads(wrapped)
        ok = (
            isinstance(token, dict)
            and token.get("v") == WRAP_VERSION
            and isinstance(token.get("key"), str)
            and isinstance(token.get("context"), dict)
            and isinstance(token.get("blob"), str)
        )
    except ValueError:
        ok = False
    if not ok:
        raise UsageError("the wrapped data key is not a skyhop KMS token (version 1)")
    return dict(token)


def _region_of_arn(key_id: str | None) -> str | None:
    if key_id and key_id.startswith("arn:"):
        parts = key_id.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


def _classify_kms(exc: ClientError, what: str) -> SkyhopError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in aws.ACCESS_CODES or status in (401, 403) or "AccessDenied" in code:
        return AccessError(f"{what}: access denied")
    if code in ("InvalidCiphertextException", "IncorrectKeyException"):
        return IntegrityError(f"{what}: the wrapped key does not open with this key and job")
    if code in ("NotFoundException", "InvalidGrantIdException"):
        return NotFoundError(f"{what}: not found")
    if code in ("DisabledException", "KMSInvalidStateException"):
        return AccessError(f"{what}: the KMS key is disabled or pending deletion")
    return aws.classify(exc, what, StoreError)


_translate = aws.translator(
    _classify_kms, no_region="no AWS region (use a key ARN or set AWS_REGION)"
)


#: the key the CLI's own gateways (``--gateways cloud``) wrap data keys with, made
#: once per region on first use and found again by this alias
CLI_KEY_ALIAS = "alias/skyhop-gateways"


def ensure_key(region: str, alias: str = CLI_KEY_ALIAS) -> str:
    """The ARN of the KMS key behind ``alias`` in ``region``, creating the key (tagged
    ``skyhop=gateways``, symmetric, for data keys only) and the alias when missing."""
    client = aws.client("kms", region)

    def call(fn: Any, what: str) -> Any:
        return translated(fn, f"KMS: {what}", _translate, catch=aws.SDK_ERRORS)

    try:
        found = call(lambda: client.describe_key(KeyId=alias), f"looking up {alias}")
        return str(found["KeyMetadata"]["Arn"])
    except NotFoundError:
        pass
    made = call(
        lambda: client.create_key(
            Description="skyhop: wraps the data keys of gateways launched by the CLI",
            KeyUsage="ENCRYPT_DECRYPT",
            Tags=[{"TagKey": "skyhop", "TagValue": "gateways"}],
        ),
        f"creating the key of {alias}",
    )["KeyMetadata"]
    try:
        call(
            lambda: client.create_alias(AliasName=alias, TargetKeyId=made["KeyId"]),
            f"naming the key {alias}",
        )
    except SkyhopError:  # another CLI named its key first: use that one, drop ours
        call(
            lambda: client.schedule_key_deletion(KeyId=made["KeyId"], PendingWindowInDays=7),
            "dropping a duplicate key",
        )
        found = call(lambda: client.describe_key(KeyId=alias), f"looking up {alias}")
        return str(found["KeyMetadata"]["Arn"])
    return str(made["Arn"])
