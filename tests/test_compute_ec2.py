"""The EC2 compute provider against moto in server mode: the shared network, per-job
firewall rules that admit only the job's gateway addresses, tagged instances with
their bootstrap, and teardown that leaves a concurrent job alone.

moto never runs user data, so gateways are launched with ``wait_ready=False``;
the data path end to end runs on the local provider."""

from __future__ import annotations

import base64
import subprocess
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from skyhop.compute.base import ComputeProvider, open_provider
from skyhop.compute.ec2 import (
    CONFIG_PATH,
    DEFAULT_DATA_PORT,
    EC2ComputeProvider,
    config_from_user_data,
)
from skyhop.crypto.kms import KMSKeyWrapper
from skyhop.errors import GatewayError, UsageError
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec
from tests.suites.compute_suite import ComputeSuite

EAST, WEST = "us-east-1", "us-west-2"


class TestEC2Suite(ComputeSuite):
    """The ComputeProvider suite against moto's EC2."""

    @pytest.fixture
    def regions(self, moto):
        return (f"aws:{EAST}", f"aws:{WEST}")

    @pytest.fixture
    def make(self, moto):
        return lambda **kw: _provider(regions=[EAST, WEST], **kw)

    @pytest.fixture
    def admitted(self, moto):
        def read(job_id: str) -> set[str]:
            found: set[str] = set()
            for region in (EAST, WEST):
                ec2 = _ec2(region)
                for group in ec2.describe_security_groups()["SecurityGroups"]:
                    found |= {
                        r["CidrIpv4"]
                        for r in _group_rules(region, group["GroupId"])
                        if r.get("Description") == f"skyhop:job={job_id}"
                        and r["FromPort"] == DEFAULT_DATA_PORT
                    }
            return found

        return read

    @pytest.fixture
    def reaches(self, moto):
        def read(spec: GatewaySpec) -> set[str]:
            region = spec.region.removeprefix("aws:")
            [instance] = _ec2(region).describe_instances(InstanceIds=[spec.instance_id])[
                "Reservations"
            ][0]["Instances"]
            groups = {g["GroupId"] for n in instance["NetworkInterfaces"] for g in n["Groups"]}
            return {
                r["CidrIpv4"]
                for group in groups
                for r in _group_rules(region, group)
                if r["FromPort"] <= spec.data_port <= r["ToPort"]
            }

        return read

    @pytest.fixture
    def lose_gateways(self, moto):
        # the instances go; the job's groups and rules stay (revoke and the groups'
        # deletion failed)
        return lambda provider, job_id: provider._instances.terminate(job_id)

    @pytest.fixture
    def leftovers(self, moto):
        def read(job_id: str) -> list[str]:
            found = _ec2(EAST).describe_instances(
                Filters=[{"Name": "tag:skyhop:job", "Values": [job_id]}]
            )["Reservations"]
            return [
                i["InstanceId"]
                for r in found
                for i in r["Instances"]
                if i["State"]["Name"] not in ("shutting-down", "terminated")
            ]

        return read

    @pytest.fixture
    def failed_launch(self, moto):
        configs = [
            _config("j-f", "gw-f-0", GatewayRole.SOURCE, EAST),
            _config("j-f", "gw-f-1", GatewayRole.DESTINATION, "gcp:us-central1"),
        ]
        return _provider(), configs, "not an AWS region"


def _config(job: str, gw: str, role: GatewayRole, region: str, **kw: Any) -> GatewayConfig:
    return GatewayConfig(
        job_id=job,
        gateway_id=gw,
        role=role,
        region=region,
        ca_cert_pem="-----BEGIN CERTIFICATE-----\nca\n-----END CERTIFICATE-----\n",
        cert_pem="-----BEGIN CERTIFICATE-----\ngw\n-----END CERTIFICATE-----\n",
        key_pem="-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n",
        control_token="t0k3n",
        parent_pid=4242,
        **kw,
    )


def _provider(**kw: Any) -> EC2ComputeProvider:
    return EC2ComputeProvider(wait_ready=False, **kw)


def _ec2(region: str) -> Any:
    return boto3.client("ec2", region_name=region)


def _group_rules(region: str, group_id: str) -> list[dict[str, Any]]:
    return [
        r
        for r in _ec2(region).describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [group_id]}]
        )["SecurityGroupRules"]
        if not r["IsEgress"]
    ]


def _ingress(region: str) -> set[tuple[str, int, int, str]]:
    """Every inbound rule of every security group in ``region`` (a test may look at all)."""
    return {
        (r["IpProtocol"], r["FromPort"], r["ToPort"], r["CidrIpv4"])
        for group in _ec2(region).describe_security_groups()["SecurityGroups"]
        for r in _group_rules(region, group["GroupId"])
    }


def _states(region: str, ids: list[str]) -> set[str]:
    pages = _ec2(region).describe_instances(InstanceIds=ids)["Reservations"]
    return {i["State"]["Name"] for r in pages for i in r["Instances"]}


def _rules_for(specs: list[GatewaySpec]) -> set[tuple[str, int, int, str]]:
    return {("tcp", s.data_port, s.data_port, f"{g.host}/32") for s in specs for g in specs}


def test_registry_and_protocol(moto) -> None:
    provider = open_provider("aws", wait_ready=False)
    assert isinstance(provider, EC2ComputeProvider) and isinstance(provider, ComputeProvider)


def test_network_is_created_once_and_found_by_tag(moto) -> None:
    first = _provider()
    net = first.network(EAST)
    first.ensure_network(EAST)
    again = _provider().network(f"aws:{EAST}")  # a fresh function instance finds it by tag
    assert again == net
    ec2 = _ec2(EAST)
    tagged = {"Name": "tag:skyhop", "Values": ["network"]}
    assert [v["VpcId"] for v in ec2.describe_vpcs(Filters=[tagged])["Vpcs"]] == [net.vpc_id]
    [subnet] = ec2.describe_subnets(Filters=[tagged])["Subnets"]
    assert subnet["MapPublicIpOnLaunch"] and subnet["VpcId"] == net.vpc_id
    [igw] = ec2.describe_internet_gateways(Filters=[tagged])["InternetGateways"]
    assert igw["Attachments"][0]["VpcId"] == net.vpc_id
    # the subnet's own route table, made tagged (#19 item 11: CreateRoute is granted
    # only on route tables tagged skyhop=network); the VPC's main table is left alone
    in_vpc = {"Name": "vpc-id", "Values": [net.vpc_id]}
    [table] = ec2.describe_route_tables(Filters=[in_vpc, tagged])["RouteTables"]
    assert not any(a.get("Main") for a in table["Associations"])
    assert [a.get("SubnetId") for a in table["Associations"]] == [net.subnet_id]
    assert any(
        r.get("DestinationCidrBlock") == "0.0.0.0/0"
        and r.get("GatewayId") == igw["InternetGatewayId"]
        for r in table["Routes"]
    )
    [main] = ec2.describe_route_tables(
        Filters=[in_vpc, {"Name": "association.main", "Values": ["true"]}]
    )["RouteTables"]
    assert not main.get("Tags")
    assert not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in main["Routes"])
    assert _ingress(EAST) == set()  # the group admits nothing until a job authorizes


def test_firewall_admits_only_each_jobs_gateways_and_teardown_keeps_the_other_job(moto) -> None:
    provider = _provider()
    a = provider.launch(
        [
            _config("j-a", "gw-a-src", GatewayRole.SOURCE, f"aws:{EAST}"),
            _config("j-a", "gw-a-dst", GatewayRole.DESTINATION, f"aws:{WEST}"),
        ]
    )
    b = provider.launch(
        [
            _config("j-b", "gw-b-src", GatewayRole.SOURCE, EAST),
            _config("j-b", "gw-b-dst", GatewayRole.DESTINATION, EAST),
        ]
    )
    for spec in a + b:
        assert spec.host and spec.instance_id and spec.data_port == DEFAULT_DATA_PORT
    assert len({s.host for s in a + b}) == 4

    provider.authorize("j-a", a)
    provider.authorize("j-b", b)
    provider.authorize("j-a", a)  # a retried authorize adds nothing and does not fail
    assert _ingress(EAST) == _rules_for(a) | _rules_for(b)
    assert _ingress(WEST) == _rules_for(a)
    assert {r["Description"] for r in provider.rules("j-a")} == {"skyhop:job=j-a"}

    provider.revoke("j-a")
    provider.terminate("j-a")
    assert _ingress(EAST) == _rules_for(b)
    assert _ingress(WEST) == set()
    assert _states(EAST, [a[0].instance_id]) == {"terminated"}
    assert _states(WEST, [a[1].instance_id]) == {"terminated"}
    assert provider.list_gateways("j-a") == []
    assert [g.gateway_id for g in provider.list_gateways("j-b")] == ["gw-b-dst", "gw-b-src"]
    assert _states(EAST, [s.instance_id for s in b]) == {"running"}

    provider.revoke("j-a")  # idempotent
    provider.terminate("j-a")

    # another function instance, told the regions, tears down job b from the tags alone
    fresh = _provider(regions=[EAST, WEST])
    assert {g.gateway_id for g in fresh.list_gateways()} == {"gw-b-src", "gw-b-dst"}
    fresh.revoke("j-b")
    fresh.terminate("j-b")
    assert _ingress(EAST) == set() and _ingress(WEST) == set()
    assert fresh.list_gateways() == []


def test_instances_carry_tags_and_a_bootstrap_with_their_config(moto, tmp_path) -> None:
    provider = _provider()
    [spec] = provider.launch([_config("j-t", "gw-t-0", GatewayRole.SOURCE, EAST)])
    ec2 = _ec2(EAST)
    [instance] = ec2.describe_instances(InstanceIds=[spec.instance_id])["Reservations"][0][
        "Instances"
    ]
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert tags["skyhop"] == "gateway"
    assert tags["skyhop:job"] == "j-t" and tags["skyhop:gateway"] == "gw-t-0"
    groups = instance["NetworkInterfaces"][0]["Groups"]
    assert [g["GroupName"] for g in groups] == ["skyhop-job-j-t"]  # its job's group only
    raw = ec2.describe_instance_attribute(InstanceId=spec.instance_id, Attribute="userData")
    script = base64.b64decode(raw["UserData"]["Value"]).decode()
    config = config_from_user_data(script)
    assert config.gateway_id == "gw-t-0" and config.listen_host == "0.0.0.0"
    assert (config.data_port, config.parent_pid) == (spec.data_port, None)
    assert config.data_key_b64 is None and config.wrapped_data_key is None
    assert f"CONFIG={CONFIG_PATH}" in script
    assert f"python -m gateway_vm --config {CONFIG_PATH}" in script
    path = tmp_path / "user-data.sh"
    path.write_text(script)
    subprocess.run(["bash", "-n", str(path)], check=True)  # the script parses


def test_key_material_rules_are_enforced_before_anything_starts(moto) -> None:
    provider = _provider()
    clear = _config("j-k", "gw-k-dst", GatewayRole.DESTINATION, EAST, data_key_b64="A" * 44)
    with pytest.raises(GatewayError, match="clear data key"):
        provider.launch([_config("j-k", "gw-k-src", GatewayRole.SOURCE, EAST), clear])
    relay = _config(
        "j-k", "gw-k-rly", GatewayRole.RELAY, EAST, wrapped_data_key="{}", key_wrap="kms"
    )
    with pytest.raises(GatewayError, match="relay"):
        provider.launch([relay])
    assert provider.list_gateways("j-k") == []


def test_a_failed_launch_terminates_what_it_started(moto) -> None:
    """Beyond the suite's teardown check: the started instance existed and is going."""
    provider = _provider()
    with pytest.raises(UsageError, match="not an AWS region"):
        provider.launch(
            [
                _config("j-f", "gw-f-0", GatewayRole.SOURCE, EAST),
                _config("j-f", "gw-f-1", GatewayRole.DESTINATION, "gcp:us-central1"),
            ]
        )
    found = _ec2(EAST).describe_instances(Filters=[{"Name": "tag:skyhop:job", "Values": ["j-f"]}])[
        "Reservations"
    ]
    states = {i["State"]["Name"] for r in found for i in r["Instances"]}
    assert states <= {"shutting-down", "terminated"} and states


def test_destination_gets_a_job_scoped_kms_grant_until_revoke(moto) -> None:
    key_arn = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    role_arn = "arn:aws:iam::123456789012:role/skyhop-gateway-destination"
    wrapped = KMSKeyWrapper(key_arn, job_id="j-g").wrap(b"k" * 32)
    provider = _provider(grantee_roles={"destination": role_arn})
    provider.launch(
        [
            _config("j-g", "gw-g-src", GatewayRole.SOURCE, EAST),
            _config(
                "j-g",
                "gw-g-dst",
                GatewayRole.DESTINATION,
                EAST,
                wrapped_data_key=wrapped,
                key_wrap="kms",
            ),
        ]
    )
    [grant] = KMSKeyWrapper(key_arn, job_id="j-g").grants()
    assert grant["GranteePrincipal"] == role_arn
    assert grant["Operations"] == ["Decrypt"]
    assert grant["Constraints"] == {"EncryptionContextEquals": {"skyhop:job": "j-g"}}
    provider.revoke("j-g")
    assert KMSKeyWrapper(key_arn, job_id="j-g").grants() == []
    # a fresh provider that knows the deployment's key revokes too (idempotent)
    _provider(kms_keys=[key_arn]).revoke("j-g")


def test_authorize_needs_ip_addresses(moto) -> None:
    spec = GatewaySpec(
        gateway_id="gw-x", job_id="j-x", region=EAST, role=GatewayRole.SOURCE, host="gw.example"
    )
    with pytest.raises(GatewayError, match="no IP address"):
        _provider().authorize("j-x", [spec])


def test_a_revoke_that_fails_in_one_region_still_revokes_the_others(moto) -> None:
    """Issue 19 item 10: one error stopped the rest of the revoke loop (the other
    regions' rules and the job's KMS grants stayed)."""
    key_arn = boto3.client("kms").create_key()["KeyMetadata"]["Arn"]
    role_arn = "arn:aws:iam::123456789012:role/skyhop-gateway-destination"
    wrapped = KMSKeyWrapper(key_arn, job_id="j-r").wrap(b"k" * 32)
    provider = _provider(grantee_roles={"destination": role_arn})
    specs = provider.launch(
        [
            _config("j-r", "gw-r-src", GatewayRole.SOURCE, EAST),
            _config(
                "j-r",
                "gw-r-dst",
                GatewayRole.DESTINATION,
                WEST,
                wrapped_data_key=wrapped,
                key_wrap="kms",
            ),
        ]
    )
    provider.authorize("j-r", specs)
    assert KMSKeyWrapper(key_arn, job_id="j-r").grants()
    fresh = _provider(regions=[EAST, WEST], kms_keys=[key_arn])
    east = fresh._clients.ec2(EAST)

    def refuse(**kwargs: Any) -> Any:
        raise ClientError(
            {"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}},
            "RevokeSecurityGroupIngress",
        )

    east.revoke_security_group_ingress = refuse
    with pytest.raises(GatewayError, match="RequestLimitExceeded"):
        fresh.revoke("j-r")
    assert {r["FromPort"] for r in fresh.rules("j-r")} == {DEFAULT_DATA_PORT}
    assert {r["GroupId"] for r in fresh.rules("j-r")} == {
        g["GroupId"]
        for g in _ec2(EAST).describe_security_groups(
            Filters=[{"Name": "tag:skyhop:job", "Values": ["j-r"]}]
        )["SecurityGroups"]
    }  # only the failing region's rules are left
    assert _ingress(WEST) == set()
    assert KMSKeyWrapper(key_arn, job_id="j-r").grants() == []  # retired all the same
    _provider(regions=[EAST, WEST]).revoke("j-r")  # the next try finishes it
    assert _ingress(EAST) == set()


def test_terminate_deletes_the_jobs_security_groups(moto) -> None:
    provider = _provider()
    specs = provider.launch(
        [
            _config("j-d", "gw-d-src", GatewayRole.SOURCE, EAST),
            _config("j-d", "gw-d-dst", GatewayRole.DESTINATION, WEST),
        ]
    )
    provider.authorize("j-d", specs)
    assert provider.firewall_jobs() >= {"j-d"}
    provider.revoke("j-d")
    provider.terminate("j-d")
    for region in (EAST, WEST):
        assert not _ec2(region).describe_security_groups(
            Filters=[{"Name": "tag:skyhop:job", "Values": ["j-d"]}]
        )["SecurityGroups"]
    assert "j-d" not in _provider(regions=[EAST, WEST]).firewall_jobs()


def test_each_gateway_role_launches_with_its_own_instance_profile(moto) -> None:
    """Issue 19 item 9: every gateway had one identity (the deployment and the CLI gave
    the one profile to every role). Each role's instances carry their role's profile,
    and a provider told to share one between roles refuses before launching."""
    iam = boto3.client("iam")
    arns = {}
    for role in ("source", "relay", "destination"):
        made = iam.create_instance_profile(InstanceProfileName=f"skyhop-gw-{role}")
        arns[role] = made["InstanceProfile"]["Arn"]
    provider = _provider(instance_profiles=arns)
    specs = provider.launch(
        [
            _config("j-p", "gw-p-src", GatewayRole.SOURCE, EAST),
            _config("j-p", "gw-p-rly", GatewayRole.RELAY, EAST),
            _config("j-p", "gw-p-dst", GatewayRole.DESTINATION, EAST),
        ]
    )
    ids = {s.instance_id: s.role.value for s in specs}
    found = _ec2(EAST).describe_instances(InstanceIds=list(ids))["Reservations"]
    launched = {
        ids[i["InstanceId"]]: i["IamInstanceProfile"]["Arn"] for r in found for i in r["Instances"]
    }
    assert launched == arns
    with pytest.raises(UsageError, match="share the identity"):
        _provider(instance_profiles={**arns, "relay": arns["source"]})
    with pytest.raises(UsageError, match="not a gateway role"):
        _provider(instance_profiles={"sauce": arns["source"]})


def test_the_cli_gives_each_gateway_role_its_own_profile(monkeypatch) -> None:
    from skyhop.cloud_gateways import provider_options

    monkeypatch.setenv("SKYHOP_AWS_INSTANCE_PROFILE", "one-for-all")
    with pytest.raises(UsageError, match="SKYHOP_AWS_INSTANCE_PROFILE_SOURCE, _RELAY"):
        provider_options("aws")
    monkeypatch.delenv("SKYHOP_AWS_INSTANCE_PROFILE")
    for role in ("source", "relay", "destination"):
        monkeypatch.setenv(f"SKYHOP_AWS_INSTANCE_PROFILE_{role.upper()}", f"gw-{role}")
    assert provider_options("aws")["instance_profiles"] == {
        "source": "gw-source",
        "relay": "gw-relay",
        "destination": "gw-destination",
    }


def test_a_deployments_wheel_is_signed_for_each_launch_and_installed_by_hash(moto) -> None:
    """Issue 19 item 12 (deployed): the functions name the stack's wheel asset
    (SKYHOP_GATEWAY_WHEEL); each launch's user data fetches a presigned URL of that
    object and installs it only by its SHA-256."""
    import json

    from functions.aws import common as aws_common

    boto3.client("s3").create_bucket(Bucket="cdk-assets")
    boto3.client("s3").put_object(Bucket="cdk-assets", Key="abc.whl", Body=b"wheel")
    wheel = {
        "bucket": "cdk-assets",
        "key": "abc.whl",
        "sha256": "b" * 64,
        "filename": "skyhop-0.1.0-py3-none-any.whl",
        "requirements": ["pydantic==2.9.2"],
    }
    options = json.loads(
        aws_common.translated_env({"SKYHOP_GATEWAY_WHEEL": json.dumps(wheel)})[
            "SKYHOP_COMPUTE_OPTIONS"
        ]
    )
    assert options["wheel"] == wheel
    provider = _provider(**options)
    [spec] = provider.launch([_config("j-w", "gw-w-0", GatewayRole.RELAY, EAST)])
    raw = _ec2(EAST).describe_instance_attribute(InstanceId=spec.instance_id, Attribute="userData")
    script = base64.b64decode(raw["UserData"]["Value"]).decode()
    assert "cdk-assets/abc.whl?" in script and "Signature=" in script  # presigned
    assert f"--hash=sha256:{'b' * 64}" in script and "--require-hashes" in script
    assert "pip install -q 'skyhop" not in script and "pip install -q skyhop" not in script
    with pytest.raises(UsageError, match="wheel"):
        _provider(wheel={"bucket": "b"})
