"""Storage remotes: each side of a copy with its own endpoint and credentials.

End to end with the real CLI and real gateway processes: between two moto
servers that check signatures (one playing AWS, one an S3-compatible store that
needs path-style addressing), across accounts with a role assumed on moto's STS,
and between two Azurite accounts. The environment holds no usable AWS or Azure
credential in these tests: each side can only be reached with its own remote's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from skyhop import store_access
from skyhop.errors import UsageError
from skyhop.uri import parse_uri
from tests.fixtures.cli import GATEWAYS, MIB, SMALL_PARTS, run_cli, wait_no_gateways
from tests.fixtures.remote_servers import (
    AuthedMoto,
    loopback_hostname,
    running_authed_moto,
    running_azurite_accounts,
)

OTHER_ACCOUNT = "222222222222"
FILES = {
    "data/a.txt": b"alpha\n",
    "data/nested/b.bin": os.urandom(300_000),
    "data/big.bin": os.urandom(6 * MIB),  # two parts with SMALL_PARTS
    "data/empty": b"",
}


@pytest.fixture(scope="module")
def aws_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthedMoto]:
    """'AWS': user alice, and a role 'writer' in another account."""
    with running_authed_moto(
        tmp_path_factory.mktemp("aws"), users=["alice"], roles=[("writer", OTHER_ACCOUNT)]
    ) as server:
        server.client("s3", server.users["alice"]).create_bucket(Bucket="src")
        yield server


@pytest.fixture(scope="module")
def compat_side(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthedMoto]:
    """'an S3-compatible store': user bob, reached by a host name that has no
    wildcard DNS, so only path-style requests reach it."""
    host = loopback_hostname()
    if host is None:  # pragma: no cover - every Linux host name resolves to 127.0.x.1
        pytest.fail("this machine's host name does not resolve to a loopback address")
    with running_authed_moto(tmp_path_factory.mktemp("compat"), users=["bob"], host=host) as server:
        server.client("s3", server.users["bob"]).create_bucket(Bucket="dst")
        yield server


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing in the environment reaches either side: only the remotes' own keys do."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_PROFILE",
        "AZURE_STORAGE_CONNECTION_STRING",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    store_access.forget()
    yield
    store_access.forget()


def skyhop(*argv: str) -> tuple[int, str, str]:
    """The skyhop command in this process (the remote verbs; copies run as processes)."""
    import contextlib
    import io

    from skyhop.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def add_remote(name: str, *flags: str) -> None:
    code, _, err = skyhop("remote", "add", name, *flags)
    assert code == 0, err


def put_files(s3, bucket: str) -> None:
    for key, body in FILES.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)


def assert_copied(s3, bucket: str, prefix: str) -> None:
    for key, body in FILES.items():
        got = s3.get_object(Bucket=bucket, Key=prefix + key[len("data/") :])["Body"].read()
        assert got == body, key


# ---------------------------------------------------------------- locations


def test_locations_name_remotes_in_two_forms(no_ambient_credentials, monkeypatch):
    add_remote("minio", "--type", "s3", "--endpoint", "http://127.0.0.1:9", "--path-style", "true")
    add_remote("blobs", "--type", "azure", "--account", "acctone")
    short = parse_uri("minio:bkt/some/prefix/")
    assert (short.scheme, short.bucket, short.key, short.remote) == (
        "s3",
        "bkt",
        "some/prefix/",
        "minio",
    )
    assert str(short) == "s3://bkt/some/prefix/?remote=minio"
    assert parse_uri(str(short)) == short
    assert parse_uri("s3://bkt/x?remote=minio").remote == "minio"
    az = parse_uri("blobs:cont/p")
    assert (az.scheme, az.account, az.bucket, az.key) == ("az", "acctone", "cont", "p")
    # the same bucket through two remotes is two stores
    assert short.store_id != parse_uri("s3://bkt/").store_id
    # a key with a '?' that is no remote tag stays a key
    assert parse_uri("s3://bkt/a?b").key == "a?b"
    with pytest.raises(UsageError, match=r"no storage remote 'nope'.*\./nope:x") as info:
        parse_uri("nope:x/y")
    assert "\n" not in str(info.value)
    assert parse_uri("./a:b").scheme == "local"
    code, _, err = skyhop("cp", "nope:bucket/x", "/tmp/y", "-y")
    assert code != 0 and "no storage remote 'nope'" in err
    assert len(err.strip().splitlines()) == 1


def test_a_remote_holds_names_of_secrets_not_secrets(no_ambient_credentials, skyhop_home):
    add_remote(
        "minio",
        "--type",
        "s3",
        "--endpoint",
        "https://minio.example:9000",
        "--access-key-env",
        "MINIO_KEY",
        "--secret-key-env",
        "MINIO_SECRET",
        "--path-style",
        "true",
        "--checksums",
        "false",
    )
    text = (skyhop_home / "remotes.toml").read_text()
    assert 'access_key_env = "MINIO_KEY"' in text and "path_style = true" in text
    assert (skyhop_home / "remotes.toml").stat().st_mode & 0o777 == 0o600
    code, out, _ = skyhop("remote", "show", "minio", "--json")
    assert code == 0 and json.loads(out)["checksums"] is False
    code, out, _ = skyhop("remote", "list")
    assert "minio" in out and "s3" in out
    code, _, err = skyhop("remote", "add", "x", "--type", "s3", "--access-key-env", "K")
    assert code != 0 and "together" in err
    code, _, err = skyhop("cp", "minio:bkt/x", "/tmp/y", "-y")
    assert code != 0 and "MINIO_KEY is not set" in err and len(err.strip().splitlines()) == 1


# ---------------------------------------------------------------- S3 <-> S3-compatible


def test_copy_between_two_s3_endpoints_with_their_own_credentials(
    aws_side, compat_side, no_ambient_credentials, monkeypatch, tmp_path
):
    alice, bob = aws_side.users["alice"], compat_side.users["bob"]
    put_files(aws_side.client("s3", alice), "src")
    for var, value in {**alice.env("ALICE"), **bob.env("BOB")}.items():
        monkeypatch.setenv(var, value)
    add_remote(
        "aws1",
        "--type",
        "s3",
        "--endpoint",
        aws_side.endpoint,
        "--access-key-env",
        "ALICE_KEY",
        "--secret-key-env",
        "ALICE_SECRET",
    )
    add_remote(
        "compat",
        "--type",
        "s3",
        "--endpoint",
        compat_side.endpoint,
        "--access-key-env",
        "BOB_KEY",
        "--secret-key-env",
        "BOB_SECRET",
        "--path-style",
        "true",
        "--checksums",
        "false",
    )
    res = run_cli(
        "cp", "-r", "aws1:src/data/", "compat:dst/copy/", "--json", "-y", *GATEWAYS, *SMALL_PARTS
    )
    assert res.code == 0, res.stderr
    report = res.report
    assert report["state"] == "succeeded" and report["objects"] == len(FILES)
    assert report["data_path"] == "gateways"
    assert report["verification"]["checked"] == len(FILES)
    assert_copied(compat_side.client("s3", bob), "dst", "copy/")
    assert wait_no_gateways(report["job_id"]) == []
    # each side knows only its own identity
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        compat_side.client("s3", alice).list_objects_v2(Bucket="dst")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        aws_side.client("s3", bob).list_objects_v2(Bucket="src")
    # the S3-compatible side answers path-style only (no wildcard DNS for BUCKET.host):
    # addressed virtual-hosted, it cannot be reached at all
    add_remote(
        "compat-vhost",
        "--type",
        "s3",
        "--endpoint",
        compat_side.endpoint,
        "--access-key-env",
        "BOB_KEY",
        "--secret-key-env",
        "BOB_SECRET",
        "--path-style",
        "false",
    )
    from skyhop.errors import StoreError
    from skyhop.stores.s3 import S3Store

    with pytest.raises(StoreError, match=r"dst\." + compat_side.host):
        S3Store(parse_uri("compat-vhost:dst/"), max_attempts=1).check_bucket()
    S3Store(parse_uri("compat:dst/"), max_attempts=1).check_bucket()


def test_cross_account_copy_with_an_assumed_role(aws_side, no_ambient_credentials, monkeypatch):
    alice = aws_side.users["alice"]
    put_files(aws_side.client("s3", alice), "src")
    for var, value in alice.env("ALICE").items():
        monkeypatch.setenv(var, value)
    role = aws_side.roles["writer"]
    assert f":{OTHER_ACCOUNT}:" in role
    sts = aws_side.client("sts", alice)
    creds = sts.assume_role(RoleArn=role, RoleSessionName="setup")["Credentials"]
    import boto3

    other = boto3.session.Session().client(
        "s3",
        endpoint_url=aws_side.endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    other.create_bucket(Bucket="theirs")
    base = ["--type", "s3", "--endpoint", aws_side.endpoint]
    keys = ["--access-key-env", "ALICE_KEY", "--secret-key-env", "ALICE_SECRET"]
    add_remote("aws1", *base, *keys)
    add_remote("acct2", *base, *keys, "--role-arn", role)
    res = run_cli("cp", "-r", "aws1:src/data/", "acct2:theirs/in/", "--json", "-y", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert res.report["state"] == "succeeded" and res.report["objects"] == len(FILES)
    # the direct path, and no server-side copy: the other account's role need not read ours
    assert res.report["data_path"] == "direct" and not res.report["server_side_copies"]
    assert_copied(other, "theirs", "in/")
    # the bucket is the other account's: it is among its buckets, not among alice's
    assert "theirs" in [b["Name"] for b in other.list_buckets()["Buckets"]]
    mine = [b["Name"] for b in aws_side.client("s3", alice).list_buckets()["Buckets"]]
    assert "src" in mine and "theirs" not in mine


def test_gateways_get_only_their_own_sides_credentials(
    aws_side, compat_side, no_ambient_credentials, monkeypatch
):
    from skyhop.controlplane import provision
    from skyhop.models import GatewayRole, Job, TransferOptions, TransferRequest
    from skyhop.uri import absolute

    alice, bob = aws_side.users["alice"], compat_side.users["bob"]
    for var, value in {**alice.env("ALICE"), **bob.env("BOB")}.items():
        monkeypatch.setenv(var, value)
    add_remote("aws1", "--type", "s3", "--endpoint", aws_side.endpoint, "--access-key-env",
               "ALICE_KEY", "--secret-key-env", "ALICE_SECRET")  # fmt: skip
    add_remote("compat", "--type", "s3", "--endpoint", compat_side.endpoint, "--access-key-env",
               "BOB_KEY", "--secret-key-env", "BOB_SECRET", "--path-style", "true")  # fmt: skip
    job = Job(
        request=TransferRequest(
            source=absolute("aws1:src/data/"),  # as the CLI records it: s3://src/data/?remote=aws1
            destination=absolute("compat:dst/copy/"),
            options=TransferOptions(recursive=True, relays=["local"]),
        )
    )
    built = provision._build(job, "pull", attempt=1, key_wrapper=None)
    by_role = {c.role: c for c in built.configs}
    source, relay, dest = (by_role[r] for r in GatewayRole)
    assert source.store_access is not None and source.store_access.remote == "aws1"
    assert dest.store_access is not None and dest.store_access.remote == "compat"
    assert dest.store_access.path_style and dest.store_access.endpoint == compat_side.endpoint
    assert relay.store_access is None
    for config, foreign in ((source, bob), (dest, alice), (relay, alice), (relay, bob)):
        text = config.model_dump_json()
        assert foreign.secret_access_key not in text and foreign.access_key_id not in text
    assert alice.secret_access_key in source.model_dump_json()
    assert "secret_access_key" not in repr(source.store_access)
    # a gateway given one side's access opens nothing else, remotes file or not
    store_access.forget()
    store_access.install([source.store_access], only=True)
    assert parse_uri("aws1:src/x").remote == "aws1"
    with pytest.raises(UsageError, match="not one this gateway was given"):
        parse_uri("compat:dst/x")


# ---------------------------------------------------------------- Azure <-> Azure


def test_azure_to_azure_between_two_accounts(no_ambient_credentials, monkeypatch, tmp_path):
    with running_azurite_accounts(tmp_path, ["acctone", "accttwo"]) as azurite:
        one, two = azurite.service("acctone"), azurite.service("accttwo")
        src = one.create_container("src")
        two.create_container("dst")
        for key, body in FILES.items():
            src.upload_blob(key, body)
        monkeypatch.setenv("AZ_ONE_KEY", azurite.keys["acctone"])
        monkeypatch.setenv("AZ_TWO_KEY", azurite.keys["accttwo"])
        for name, account, var in (
            ("one", "acctone", "AZ_ONE_KEY"),
            ("two", "accttwo", "AZ_TWO_KEY"),
        ):
            add_remote(name, "--type", "azure", "--account", account, "--endpoint",
                       azurite.endpoint(account), "--account-key-env", var)  # fmt: skip
        res = run_cli("cp", "-r", "one:src/data/", "two:dst/copy/", "--json", "-y", *SMALL_PARTS)
        assert res.code == 0, res.stderr
        assert res.report["state"] == "succeeded" and res.report["objects"] == len(FILES)
        dst = two.get_container_client("dst")
        for key, body in FILES.items():
            got = dst.download_blob("copy/" + key[len("data/") :]).readall()
            assert got == body, key
        # account one's key does not open account two
        from azure.core.exceptions import HttpResponseError
        from azure.storage.blob import BlobServiceClient

        wrong = BlobServiceClient(
            azurite.endpoint("accttwo"),
            credential={"account_name": "accttwo", "account_key": azurite.keys["acctone"]},
        )
        with pytest.raises(HttpResponseError):
            wrong.get_container_client("dst").get_container_properties()


# ---------------------------------------------------------------- planning


def test_the_planner_prices_a_region_of_your_own(no_ambient_credentials):
    from skyhop.planner import plan
    from skyhop.planner.multicast import plan_multicast

    add_remote("dc1", "--type", "s3", "--endpoint", "https://s3.dc1.example",
               "--planner-region", "onprem:dc1", "--throughput-gbps", "2",
               "--egress-usd-per-gb", "0.01")  # fmt: skip
    out = plan("onprem:dc1", "aws:us-east-1", bytes=10**11)
    assert out.throughput_gbps == pytest.approx(2.0)
    assert out.cost.egress_usd == pytest.approx(100 * 0.01)
    assert out.seconds == pytest.approx(10**11 * 8 / 2e9)
    back = plan("aws:us-east-1", "onprem:dc1", bytes=10**11, planner="direct")
    assert back.cost.egress_usd > out.cost.egress_usd  # the cloud's internet-like egress
    assert parse_uri("dc1:bkt/x").remote == "dc1"
    tree = plan_multicast("onprem:dc1", ["aws:us-east-1", "aws:eu-west-1"], bytes=10**10)
    assert tree.dst_regions == ["aws:us-east-1", "aws:eu-west-1"]
    code, out, err = skyhop("plan", "dc1:bkt/x", "s3://some-bucket/x", "--bytes", "100GB",
                            "--dst-region", "aws:us-east-1", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["src_region"] == "onprem:dc1"


def test_gcs_remote_against_the_emulator(gcs_server, no_ambient_credentials, monkeypatch):
    """A gcs remote with its own endpoint (the emulator) and no credentials."""
    from skyhop.stores.base import open_store

    endpoint = os.environ["STORAGE_EMULATOR_HOST"]
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    add_remote("fake", "--type", "gcs", "--endpoint", endpoint, "--set", "anonymous=true",
               "--set", "project=skyhop-test")  # fmt: skip
    uri = parse_uri("fake:remote-bucket-1/x")
    store = open_store(uri)
    store.client.create_bucket("remote-bucket-1")
    store.put("x", b"through the remote")
    assert store.read_range("x", 0, 18) == b"through the remote"
    assert store.region() is None
