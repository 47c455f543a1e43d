"""KMS wrapping of data keys against moto in server mode.

What moto really enforces, and so what these tests rest on:

* the encryption context: moto seals KMS ciphertexts with AES-GCM and the
  context as associated data, so a wrapped key presented with another job's
  context does not open (``InvalidCiphertextException``);
* IAM identity policies, when authentication is switched on
  (``/moto-api/reset-auth``): a principal whose policies do not allow
  ``kms:Decrypt`` gets ``AccessDenied``. A source gateway's role has no such
  permission, so it is refused.

What moto does not enforce: KMS grants and their constraints (stored and
listed, never evaluated) and key policies (only a ``Deny`` on DescribeKey).
In AWS a destination gateway's role gets ``kms:Decrypt`` from the job's grant
(created by the EC2 provider, constrained to the job's encryption context);
here its role is given an identity policy instead, and the grant's contents
are checked as data.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from skyhop.crypto import KeyWrapper, open_key_wrapper
from skyhop.crypto.kms import KMSKeyWrapper
from skyhop.errors import AccessError, IntegrityError, UsageError

ACCOUNT = "123456789012"


@pytest.fixture
def key_arn(moto) -> str:
    return boto3.client("kms").create_key(Description="skyhop data keys")["KeyMetadata"]["Arn"]


def test_is_a_key_wrapper(key_arn: str) -> None:
    assert isinstance(KMSKeyWrapper(key_arn, job_id="j-1"), KeyWrapper)


def test_wrap_and_unwrap_with_only_the_token(key_arn: str) -> None:
    key = bytes(range(32))
    wrapped = KMSKeyWrapper(key_arn, job_id="j-1").wrap(key)
    token = json.loads(wrapped)
    assert token["key"] == key_arn and token["context"] == {"skyhop:job": "j-1"}
    assert base64.b64encode(key).decode() not in wrapped and key.hex() not in wrapped
    # a gateway builds the wrapper from its config alone: KMSKeyWrapper(kms_key_id or None)
    assert KMSKeyWrapper(None).unwrap(wrapped) == key
    assert KMSKeyWrapper(key_arn, job_id="j-1").unwrap(wrapped) == key

    plain, wrapped2 = KMSKeyWrapper(key_arn, job_id="j-1").generate()
    assert len(plain) == 32 and KMSKeyWrapper(None).unwrap(wrapped2) == plain


def test_a_gateway_unwraps_through_the_crypto_registry(key_arn: str) -> None:
    """What gateway_vm does with a config whose key_wrap is 'kms'."""
    key = bytes(range(32, 64))
    wrapped = KMSKeyWrapper(key_arn, job_id="j-9").wrap(key)
    assert open_key_wrapper("kms", None).unwrap(wrapped) == key
    assert open_key_wrapper("kms", key_arn).unwrap(wrapped) == key


def test_another_jobs_context_does_not_open_the_key(key_arn: str) -> None:
    wrapped = KMSKeyWrapper(key_arn, job_id="j-1").wrap(b"\x01" * 32)
    with pytest.raises(IntegrityError, match="wrapped for job 'j-1', not 'j-2'"):
        KMSKeyWrapper(key_arn, job_id="j-2").unwrap(wrapped)
    # forge the context in the token: KMS itself refuses (moto enforces the context)
    forged = json.loads(wrapped)
    forged["context"] = {"skyhop:job": "j-2"}
    with pytest.raises(IntegrityError, match="does not open"):
        KMSKeyWrapper(None).unwrap(json.dumps(forged))


def test_bad_input_is_a_one_line_error(key_arn: str) -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        KMSKeyWrapper(key_arn, job_id="j-1").wrap(b"short")
    with pytest.raises(UsageError, match="job id"):
        KMSKeyWrapper(key_arn).wrap(b"\x00" * 32)
    with pytest.raises(UsageError, match="not a skyhop KMS token"):
        KMSKeyWrapper(None).unwrap("bm90IGEgdG9rZW4=")


def test_grants_are_scoped_to_the_job_and_revocable(key_arn: str) -> None:
    role = f"arn:aws:iam::{ACCOUNT}:role/skyhop-gateway-destination"
    one, two = KMSKeyWrapper(key_arn, job_id="j-1"), KMSKeyWrapper(key_arn, job_id="j-2")
    one.grant_decrypt(role, role="destination")
    two.grant_decrypt(role, role="destination")
    [grant] = one.grants()
    assert grant["GranteePrincipal"] == role and grant["Operations"] == ["Decrypt"]
    assert grant["Constraints"] == {"EncryptionContextEquals": {"skyhop:job": "j-1"}}
    assert one.revoke_grants() == 1
    assert one.grants() == [] and len(two.grants()) == 1
    assert one.revoke_grants() == 0


# ---------------------------------------------------------------- roles, with moto's IAM enforcement


def _set_auth(endpoint: str, count: str) -> None:
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=count.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    urllib.request.urlopen(request, timeout=10)


@pytest.fixture
def gateway_roles(moto, key_arn: str) -> Iterator[dict[str, Any]]:
    """Two gateway roles as infra_cdk would make them, assumable by a control-plane
    user; IAM authentication is on while the test runs."""
    iam = boto3.client("iam")
    iam.create_user(UserName="skyhop-control-plane")
    access = iam.create_access_key(UserName="skyhop-control-plane")["AccessKey"]
    user_arn = iam.get_user(UserName="skyhop-control-plane")["User"]["Arn"]
    iam.put_user_policy(
        UserName="skyhop-control-plane",
        PolicyName="control-plane",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Action": ["sts:AssumeRole", "kms:*"], "Resource": "*"}
                ],
            }
        ),
    )
    trust = json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": {"AWS": user_arn}, "Action": "sts:AssumeRole"}
            ],
        }
    )
    policies = {
        # sources read the source bucket and post events; no KMS at all
        "skyhop-gateway-source": ["s3:GetObject", "sqs:SendMessage"],
        # in AWS this comes from the job's grant; moto does not evaluate grants
        "skyhop-gateway-destination": ["s3:PutObject", "sqs:SendMessage", "kms:Decrypt"],
    }
    for name, actions in policies.items():
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=trust)
        iam.put_role_policy(
            RoleName=name,
            PolicyName="gateway",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                }
            ),
        )
    wrapped = KMSKeyWrapper(key_arn, job_id="j-1").wrap(b"\x07" * 32)
    _set_auth(moto.endpoint, "0")
    try:
        user = boto3.session.Session(
            aws_access_key_id=access["AccessKeyId"],
            aws_secret_access_key=access["SecretAccessKey"],
            aws_session_token=None,
        )
        clients = {}
        for name in policies:
            creds = user.client("sts").assume_role(
                RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}", RoleSessionName="gateway"
            )["Credentials"]
            clients[name] = boto3.client(
                "kms",
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
        yield {"wrapped": wrapped, "kms": clients}
    finally:
        _set_auth(moto.endpoint, "inf")


def test_only_the_destination_role_unwraps(gateway_roles: dict[str, Any]) -> None:
    wrapped, kms = gateway_roles["wrapped"], gateway_roles["kms"]
    destination = KMSKeyWrapper(None, job_id="j-1", client=kms["skyhop-gateway-destination"])
    assert destination.unwrap(wrapped) == b"\x07" * 32
    source = KMSKeyWrapper(None, job_id="j-1", client=kms["skyhop-gateway-source"])
    with pytest.raises(AccessError, match="access denied") as info:
        source.unwrap(wrapped)
    assert "\n" not in str(info.value)
