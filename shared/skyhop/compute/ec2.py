"""Gateways on EC2, and data keys wrapped with AWS KMS.

Network (once per region, reused by every job): a VPC, a subnet with public
addresses, an internet gateway with the default route, and the security group
``skyhop-gateways``, each tagged ``skyhop=network`` and found by that tag.
The group starts with no ingress at all.

Firewall (per job): :meth:`EC2ComputeProvider.authorize` admits, in the group
of every region where the job has gateways, TCP on the gateways' data port
from the ``/32`` address of each of the job's gateways, nothing else (plus the
control port from ``control_cidrs``, when given). Each rule is tagged
``skyhop:job=JOB`` and described ``skyhop:job=JOB``, so :meth:`revoke`
removes exactly that job's rules and a concurrent job's rules stay. (A group
holds 60 inbound rules by default: about ``60 / gateways per job`` concurrent
jobs per region, unless the quota is raised.)

Gateways: one instance per :class:`~skyhop.models.GatewayConfig`, tagged
``skyhop=gateway``, ``skyhop:job=JOB``, ``skyhop:gateway=ID``,
``skyhop:role=ROLE`` (and its ports), with IMDSv2 required and
terminate-on-shutdown. Its user data (:func:`bootstrap_script`) is the
startup script every cloud's gateways share (:mod:`skyhop.compute.startup`):
it writes the configuration to ``/etc/skyhop/gateway.json`` (0600), installs
skyhop into a venv and starts ``python -m gateway_vm`` under systemd.
User data is readable by principals allowed ``ec2:DescribeInstanceAttribute``:
it holds the gateway's TLS key and control token, never a clear data key
(:meth:`launch` refuses one), only a KMS-wrapped key.

Data keys (:class:`KMSKeyWrapper`): wrapped with KMS under the encryption
context ``{"skyhop:job": JOB}``; the wrapped form carries the key ARN and the
context, so a gateway unwraps with nothing but it. :meth:`launch` creates, for
each gateway role that receives a wrapped key (destinations), a KMS grant for
that role's IAM role (``grantee_roles``) allowing only ``Decrypt`` and only
with that job's encryption context; :meth:`revoke` retires it. Relays are
refused a key outright; roles with no grant and no IAM permission get
``AccessDenied`` from KMS.

Regions are plain AWS names (``us-east-1``) or the planner's ``aws:us-east-1``.
:meth:`revoke`, :meth:`terminate` and :meth:`list_gateways` look in the
regions this provider has used plus ``regions`` given to the constructor (a
fresh function instance must be told; the reaper passes every region it
deploys to) and the session's default region.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoRegionError, WaiterError

from skyhop.compute import startup
from skyhop.errors import (
    AccessError,
    GatewayError,
    IntegrityError,
    NotFoundError,
    SkyhopError,
    StoreError,
    UsageError,
)
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec

log = logging.getLogger("skyhop.compute.ec2")

NETWORK_TAG = ("skyhop", "network")
GATEWAY_TAG = ("skyhop", "gateway")
JOB_TAG = "skyhop:job"
GATEWAY_ID_TAG = "skyhop:gateway"
ROLE_TAG = "skyhop:role"
DATA_PORT_TAG = "skyhop:data-port"
CONTROL_PORT_TAG = "skyhop:control-port"
SECURITY_GROUP_NAME = "skyhop-gateways"
NETWORK_CIDR = "10.73.0.0/16"
SUBNET_CIDR = "10.73.0.0/20"
DEFAULT_DATA_PORT = startup.DATA_PORT
DEFAULT_CONTROL_PORT = startup.CONTROL_PORT
DEFAULT_INSTANCE_TYPE = "m5.8xlarge"  # the planner's default profile prices this type
AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
CONFIG_PATH = startup.CONFIG_PATH
MAX_USER_DATA = 16 * 1024
KMS_CONTEXT_KEY = "skyhop:job"
WRAP_VERSION = 1
_LIVE_STATES = ["pending", "running", "stopping", "stopped"]
_ACCESS_CODES = {
    "UnauthorizedOperation",
    "AuthFailure",
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
}


def aws_region(region: str) -> str:
    """``aws:us-east-1`` or ``us-east-1`` -> ``us-east-1``; other clouds are an error."""
    cloud, sep, name = region.partition(":")
    if sep and cloud != "aws":
        raise UsageError(f"region {region!r} is not an AWS region (the aws provider runs EC2)")
    name = name if sep else region
    if not name or not name.replace("-", "").isalnum():
        raise UsageError(f"malformed AWS region {region!r}")
    return name


# ---------------------------------------------------------------- bootstrap


def bootstrap_script(config: GatewayConfig, *, package: str = "skyhop") -> str:
    """The user data that runs ``config`` (as :func:`~skyhop.compute.startup.vm_config`
    made it) on a fresh VM: the shared startup script, with the configuration
    carried inline as base64."""
    payload = base64.b64encode(config.model_dump_json().encode()).decode()
    lines = "\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    write = f"base64 -d > \"$CONFIG\" <<'SKYHOP_CONFIG'\n{lines}\nSKYHOP_CONFIG"
    return startup.startup_script(write, package)


def config_from_user_data(user_data: str) -> GatewayConfig:
    """The gateway configuration inside a :func:`bootstrap_script` (tests, debugging)."""
    try:
        block = user_data.split("<<'SKYHOP_CONFIG'\n", 1)[1].split("\nSKYHOP_CONFIG\n", 1)[0]
        raw = base64.b64decode("".join(block.split()), validate=True)
    except (IndexError, ValueError):
        raise UsageError("user data holds no skyhop gateway configuration") from None
    return GatewayConfig.model_validate_json(raw)


# ---------------------------------------------------------------- the provider


@dataclass
class Network:
    """The skyhop network of one region."""

    region: str
    vpc_id: str
    subnet_id: str
    security_group_id: str
    internet_gateway_id: str


class EC2ComputeProvider:
    """:class:`~skyhop.compute.base.ComputeProvider` on EC2 (see the module docstring).

    ``ami`` is one image id or a map region -> id (default: the latest Amazon
    Linux 2023 from the public SSM parameter); ``launch_templates`` maps a
    region to a launch template name (``infra_cdk``'s), which then supplies
    image, type and profile. ``instance_profiles`` and ``grantee_roles`` map a
    gateway role (``source``, ``relay``, ``destination``) to an instance
    profile (name or ARN) and to the IAM role ARN that gets the job's KMS
    grant. ``wait_ready=False`` returns once instances run, without waiting
    for the gateway to accept connections (moto never runs user data).
    """

    name = "aws"
    #: the control plane learns that a gateway is up (and its public address) from
    #: its gateway_ready event and controls it through its queue: the functions have
    #: no fixed egress address to open a control port to
    ready_via_events = True

    def __init__(
        self,
        *,
        regions: Sequence[str] = (),
        ami: str | Mapping[str, str] | None = None,
        instance_type: str = DEFAULT_INSTANCE_TYPE,
        launch_templates: Mapping[str, str] | None = None,
        instance_profiles: Mapping[str, str] | None = None,
        grantee_roles: Mapping[str, str] | None = None,
        kms_keys: Sequence[str] = (),
        data_port: int = DEFAULT_DATA_PORT,
        control_port: int = DEFAULT_CONTROL_PORT,
        control_cidrs: Sequence[str] = (),
        package: str = "skyhop",
        wait_ready: bool = True,
        ready_timeout: float = 900.0,
    ) -> None:
        self.ami = ami
        self.instance_type = instance_type
        self.launch_templates = dict(launch_templates or {})
        self.instance_profiles = dict(instance_profiles or {})
        self.grantee_roles = dict(grantee_roles or {})
        self.data_port = data_port
        self.control_port = control_port
        self.control_cidrs = startup.check_cidrs(list(control_cidrs))
        self.package = package
        self.wait_ready = wait_ready
        self.ready_timeout = ready_timeout
        self._regions: set[str] = {aws_region(r) for r in regions}
        self._kms_keys: set[str] = set(kms_keys)
        self._networks: dict[str, Network] = {}
        self._clients: dict[str, Any] = {}

    # ------------------------------------------------------------ network

    def ensure_network(self, region: str) -> None:
        self.network(region)

    def network(self, region: str) -> Network:
        """The region's skyhop network, created on first use and found by tag after."""
        name = aws_region(region)
        self._regions.add(name)
        found = self._networks.get(name)
        if found is None:
            found = self._ensure_network(name)
            self._networks[name] = found
        return found

    def _ensure_network(self, region: str) -> Network:
        ec2 = self._ec2(region)
        what = f"setting up the skyhop network in {region}"
        tags = _tags({NETWORK_TAG[0]: NETWORK_TAG[1], "Name": "skyhop"})
        vpcs = _call(lambda: ec2.describe_vpcs(Filters=[_tag_filter(*NETWORK_TAG)]), what)["Vpcs"]
        if vpcs:
            vpc_id = sorted(v["VpcId"] for v in vpcs)[0]
        else:
            vpc_id = _call(
                lambda: ec2.create_vpc(
                    CidrBlock=NETWORK_CIDR,
                    TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}],
                ),
                what,
            )["Vpc"]["VpcId"]
            _call(lambda: ec2.get_waiter("vpc_available").wait(VpcIds=[vpc_id]), what)
        in_vpc = {"Name": "vpc-id", "Values": [vpc_id]}

        igws = _call(
            lambda: ec2.describe_internet_gateways(
                Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
            ),
            what,
        )["InternetGateways"]
        if igws:
            igw_id = igws[0]["InternetGatewayId"]
        else:
            igw_id = _call(
                lambda: ec2.create_internet_gateway(
                    TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": tags}]
                ),
                what,
            )["InternetGateway"]["InternetGatewayId"]
            _call(lambda: ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id), what)

        subnets = _call(
            lambda: ec2.describe_subnets(Filters=[in_vpc, _tag_filter(*NETWORK_TAG)]), what
        )["Subnets"]
        if subnets:
            subnet_id = sorted(s["SubnetId"] for s in subnets)[0]
        else:
            zones = _call(
                lambda: ec2.describe_availability_zones(
                    Filters=[{"Name": "state", "Values": ["available"]}]
                ),
                what,
            )["AvailabilityZones"]
            zone = sorted(z["ZoneName"] for z in zones)[0]
            subnet_id = _call(
                lambda: ec2.create_subnet(
                    VpcId=vpc_id,
                    CidrBlock=SUBNET_CIDR,
                    AvailabilityZone=zone,
                    TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}],
                ),
                what,
            )["Subnet"]["SubnetId"]
            _call(
                lambda: ec2.modify_subnet_attribute(
                    SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True}
                ),
                what,
            )

        tables = _call(
            lambda: ec2.describe_route_tables(
                Filters=[in_vpc, {"Name": "association.main", "Values": ["true"]}]
            ),
            what,
        )["RouteTables"]
        if tables:
            table = tables[0]
            if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in table["Routes"]):
                _call(
                    lambda: ec2.create_route(
                        RouteTableId=table["RouteTableId"],
                        DestinationCidrBlock="0.0.0.0/0",
                        GatewayId=igw_id,
                    ),
                    what,
                )
            _call(lambda: ec2.create_tags(Resources=[table["RouteTableId"]], Tags=tags), what)

        groups = _call(
            lambda: ec2.describe_security_groups(
                Filters=[in_vpc, {"Name": "group-name", "Values": [SECURITY_GROUP_NAME]}]
            ),
            what,
        )["SecurityGroups"]
        if groups:
            sg_id = groups[0]["GroupId"]
        else:
            sg_id = _call(
                lambda: ec2.create_security_group(
                    GroupName=SECURITY_GROUP_NAME,
                    Description="skyhop gateways: ingress only between one job's gateways",
                    VpcId=vpc_id,
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
                ),
                what,
            )["GroupId"]
        return Network(region, vpc_id, subnet_id, sg_id, igw_id)

    def _find_network(self, region: str) -> Network | None:
        """The region's network if it exists (for revoke and listing); never creates."""
        if region in self._networks:
            return self._networks[region]
        ec2 = self._ec2(region)
        what = f"looking up the skyhop network in {region}"
        vpcs = _call(lambda: ec2.describe_vpcs(Filters=[_tag_filter(*NETWORK_TAG)]), what)["Vpcs"]
        for vpc_id in sorted(v["VpcId"] for v in vpcs):
            groups = _call(
                lambda vpc_id=vpc_id: ec2.describe_security_groups(
                    Filters=[
                        {"Name": "vpc-id", "Values": [vpc_id]},
                        {"Name": "group-name", "Values": [SECURITY_GROUP_NAME]},
                    ]
                ),
                what,
            )["SecurityGroups"]
            if groups:
                return Network(region, vpc_id, "", groups[0]["GroupId"], "")
        return None

    # ------------------------------------------------------------ gateways

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        if not configs:
            return []
        started: list[tuple[str, str]] = []  # (region, instance id): the undo list
        grants: list[tuple[KMSKeyWrapper, str]] = []
        try:
            for config in configs:
                self._check_key_material(config)
            grants = self._grant_keys(configs)
            specs = []
            for config in configs:
                spec = self._run(config)
                started.append((aws_region(config.region), spec.instance_id or ""))
                specs.append(spec)
            specs = self._wait_running(specs)
            if self.wait_ready and not self.ready_via_events:
                for spec in specs:
                    self._wait_listening(spec)
            return specs
        except BaseException:
            self._undo(started, grants)
            raise

    def _check_key_material(self, config: GatewayConfig) -> None:
        if config.data_key_b64 is not None:
            raise GatewayError(
                f"refusing to put a clear data key into EC2 user data for {config.gateway_id}: "
                "wrap it with KMS (key_wrap='kms')"
            )
        if config.wrapped_data_key is None:
            return
        if config.role == GatewayRole.RELAY:
            raise GatewayError(f"refusing to give relay {config.gateway_id} the data key")
        if config.key_wrap != "kms":
            raise GatewayError(
                f"gateway {config.gateway_id}: a key wrapped with {config.key_wrap!r} "
                "cannot be opened on EC2; use key_wrap='kms'"
            )

    def _grant_keys(self, configs: list[GatewayConfig]) -> list[tuple[KMSKeyWrapper, str]]:
        """One KMS grant per (job, key, role) for the roles that receive a wrapped key."""
        made: list[tuple[KMSKeyWrapper, str]] = []
        done: set[tuple[str, str, str]] = set()
        try:
            for config in configs:
                if config.wrapped_data_key is None:
                    continue
                key = config.kms_key_id or KMSKeyWrapper.key_of(config.wrapped_data_key)
                grantee = self.grantee_roles.get(config.role.value)
                self._kms_keys.add(key)
                if grantee is None or (config.job_id, key, grantee) in done:
                    continue
                wrapper = KMSKeyWrapper(key, job_id=config.job_id)
                made.append((wrapper, wrapper.grant_decrypt(grantee, role=config.role.value)))
                done.add((config.job_id, key, grantee))
        except BaseException:
            self._undo([], made)
            raise
        return made

    def _run(self, config: GatewayConfig) -> GatewaySpec:
        region = aws_region(config.region)
        net = self.network(region)
        vm_config = startup.vm_config(
            config.model_copy(
                update={
                    "data_port": config.data_port or self.data_port,
                    "control_port": config.control_port or self.control_port,
                }
            )
        )
        user_data = bootstrap_script(vm_config, package=self.package)
        if len(user_data.encode()) > MAX_USER_DATA:
            raise GatewayError(
                f"gateway {config.gateway_id}: configuration too large for EC2 user data "
                f"({len(user_data.encode())} > {MAX_USER_DATA} bytes)"
            )
        tags = _tags(
            {
                GATEWAY_TAG[0]: GATEWAY_TAG[1],
                JOB_TAG: config.job_id,
                GATEWAY_ID_TAG: config.gateway_id,
                ROLE_TAG: config.role.value,
                DATA_PORT_TAG: str(vm_config.data_port),
                CONTROL_PORT_TAG: str(vm_config.control_port),
                "Name": f"skyhop-{config.gateway_id}",
            }
        )
        params: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            "UserData": user_data,
            "ClientToken": hashlib.sha256(
                f"{config.job_id}/{config.gateway_id}".encode()
            ).hexdigest()[:64],
            "NetworkInterfaces": [
                {
                    "DeviceIndex": 0,
                    "SubnetId": net.subnet_id,
                    "Groups": [net.security_group_id],
                    "AssociatePublicIpAddress": True,
                    "DeleteOnTermination": True,
                }
            ],
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": tags},
                {"ResourceType": "volume", "Tags": tags},
            ],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1},
        }
        template = self.launch_templates.get(region)
        if template:
            params["LaunchTemplate"] = {"LaunchTemplateName": template, "Version": "$Default"}
        else:
            params["ImageId"] = self._ami(region)
            params["InstanceType"] = self.instance_type
        profile = self.instance_profiles.get(config.role.value)
        if profile:
            params["IamInstanceProfile"] = (
                {"Arn": profile} if profile.startswith("arn:") else {"Name": profile}
            )
        ec2 = self._ec2(region)
        instance = _call(
            lambda: ec2.run_instances(**params),
            f"launching gateway {config.gateway_id} in {region}",
            GatewayError,
        )["Instances"][0]
        return GatewaySpec(
            gateway_id=config.gateway_id,
            job_id=config.job_id,
            region=config.region,
            role=config.role,
            host=instance.get("PublicIpAddress") or instance.get("PrivateIpAddress") or "",
            data_port=vm_config.data_port,
            control_port=vm_config.control_port,
            instance_id=instance["InstanceId"],
            next_hops=[p.gateway_id for p in config.next_hops],
        )

    def _wait_running(self, specs: list[GatewaySpec]) -> list[GatewaySpec]:
        """Wait until every instance runs; fill in its public address."""
        by_region: dict[str, list[GatewaySpec]] = {}
        for spec in specs:
            by_region.setdefault(aws_region(spec.region), []).append(spec)
        for region, group in by_region.items():
            ec2 = self._ec2(region)
            ids = [s.instance_id for s in group if s.instance_id]
            what = f"waiting for gateways in {region}"
            try:
                ec2.get_waiter("instance_running").wait(
                    InstanceIds=ids, WaiterConfig={"Delay": 3, "MaxAttempts": 200}
                )
            except WaiterError as exc:
                raise GatewayError(f"{what}: {ids} did not reach running ({exc})") from None
            except (ClientError, BotoCoreError) as exc:
                raise _classify(exc, what, GatewayError) from None
            found = {
                i["InstanceId"]: i
                for i in _instances(ec2, [{"Name": "instance-id", "Values": ids}], what)
            }
            for spec in group:
                instance = found.get(spec.instance_id or "", {})
                spec.host = (
                    instance.get("PublicIpAddress") or instance.get("PrivateIpAddress") or spec.host
                )
                if not spec.host:
                    raise GatewayError(f"gateway {spec.gateway_id} has no address")
        return specs

    def _wait_listening(self, spec: GatewaySpec) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while True:
            try:
                with socket.create_connection((spec.host, spec.control_port), timeout=3):
                    return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise GatewayError(
                        f"gateway {spec.gateway_id} at {spec.host}:{spec.control_port} did not "
                        f"come up within {self.ready_timeout:.0f} s ({exc})"
                    ) from None
                time.sleep(5)

    def _undo(
        self, started: list[tuple[str, str]], grants: list[tuple[KMSKeyWrapper, str]]
    ) -> None:
        """Failure cleanup of :meth:`launch`: terminate what it started, retire its grants."""
        by_region: dict[str, list[str]] = {}
        for region, instance_id in started:
            if instance_id:
                by_region.setdefault(region, []).append(instance_id)
        for region, ids in by_region.items():
            try:
                self._ec2(region).terminate_instances(InstanceIds=ids)
            except (ClientError, BotoCoreError) as exc:
                log.warning("cleanup: terminating %s in %s failed: %s", ids, region, exc)
        for wrapper, grant_id in grants:
            try:
                wrapper.revoke_grant(grant_id)
            except SkyhopError as exc:
                log.warning("cleanup: revoking grant %s failed: %s", grant_id, exc)

    # ------------------------------------------------------------ firewall

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        if not gateways:
            return
        addresses = startup.peer_cidrs(gateways)
        regions: dict[str, set[tuple[int, int]]] = {}
        for g in gateways:
            regions.setdefault(aws_region(g.region), set()).add((g.data_port, g.control_port))
        description = f"{JOB_TAG}={job_id}"
        for region, ports in sorted(regions.items()):
            net = self.network(region)
            wanted: set[tuple[int, str]] = {(data, c) for data, _ in ports for c in addresses}
            wanted |= {(control, cidr) for _, control in ports for cidr in self.control_cidrs}
            have = {
                (r["FromPort"], r.get("CidrIpv4") or r.get("CidrIpv6") or "")
                for r in self._job_rules(net, job_id)
            }
            missing = sorted(wanted - have)
            if not missing:
                continue
            by_port: dict[int, dict[str, list[dict[str, str]]]] = {}
            for port, cidr in missing:
                v6 = ":" in cidr
                ranges = by_port.setdefault(port, {"IpRanges": [], "Ipv6Ranges": []})
                ranges["Ipv6Ranges" if v6 else "IpRanges"].append(
                    {"CidrIpv6" if v6 else "CidrIp": cidr, "Description": description}
                )
            ec2 = self._ec2(region)
            _call(
                lambda ec2=ec2, net=net, by_port=by_port: ec2.authorize_security_group_ingress(
                    GroupId=net.security_group_id,
                    IpPermissions=[
                        {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, **ranges}
                        for p, ranges in sorted(by_port.items())
                    ],
                    TagSpecifications=[
                        {"ResourceType": "security-group-rule", "Tags": _tags({JOB_TAG: job_id})}
                    ],
                ),
                f"opening the firewall for job {job_id} in {region}",
                GatewayError,
            )

    def revoke(self, job_id: str) -> None:
        for region in sorted(self._known_regions()):
            net = self._find_network(region)
            if net is None:
                continue
            ids = [r["SecurityGroupRuleId"] for r in self._job_rules(net, job_id)]
            if ids:
                ec2 = self._ec2(region)
                try:
                    _call(
                        lambda ec2=ec2, net=net, ids=ids: ec2.revoke_security_group_ingress(
                            GroupId=net.security_group_id, SecurityGroupRuleIds=ids
                        ),
                        f"closing the firewall for job {job_id} in {region}",
                        GatewayError,
                    )
                except NotFoundError:
                    pass  # revoked concurrently
        for key in sorted(self._kms_keys):
            KMSKeyWrapper(key, job_id=job_id).revoke_grants()

    def rules(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Ingress rules of the skyhop groups (of one job, or all) in the known regions."""
        out: list[dict[str, Any]] = []
        for region in sorted(self._known_regions()):
            net = self._find_network(region)
            if net is not None:
                out.extend(self._ingress(net) if job_id is None else self._job_rules(net, job_id))
        return out

    def _job_rules(self, net: Network, job_id: str) -> list[dict[str, Any]]:
        mark = f"{JOB_TAG}={job_id}"
        return [
            r
            for r in self._ingress(net)
            if r.get("Description") == mark
            or any(t["Key"] == JOB_TAG and t["Value"] == job_id for t in r.get("Tags", []))
        ]

    def _ingress(self, net: Network) -> list[dict[str, Any]]:
        ec2 = self._ec2(net.region)
        rules: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "Filters": [{"Name": "group-id", "Values": [net.security_group_id]}]
        }
        while True:
            page = _call(
                lambda kwargs=kwargs: ec2.describe_security_group_rules(**kwargs),
                f"reading the firewall in {net.region}",
                GatewayError,
            )
            rules.extend(r for r in page["SecurityGroupRules"] if not r.get("IsEgress"))
            token = page.get("NextToken")
            if not token:
                return rules
            kwargs["NextToken"] = token

    # ------------------------------------------------------------ teardown and listing

    def terminate(self, job_id: str) -> None:
        for region in sorted(self._known_regions()):
            ec2 = self._ec2(region)
            what = f"terminating gateways of job {job_id} in {region}"
            ids = [
                i["InstanceId"]
                for i in _instances(
                    ec2,
                    [
                        _tag_filter(JOB_TAG, job_id),
                        _tag_filter(*GATEWAY_TAG),
                        {"Name": "instance-state-name", "Values": [*_LIVE_STATES, "shutting-down"]},
                    ],
                    what,
                )
            ]
            if not ids:
                continue
            _call(
                lambda ec2=ec2, ids=ids: ec2.terminate_instances(InstanceIds=ids),
                what,
                GatewayError,
            )
            try:
                ec2.get_waiter("instance_terminated").wait(
                    InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
                )
            except WaiterError as exc:
                raise GatewayError(f"{what}: {ids} did not terminate ({exc})") from None
            except (ClientError, BotoCoreError) as exc:
                raise _classify(exc, what, GatewayError) from None

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        filters = [
            _tag_filter(*GATEWAY_TAG),
            {"Name": "instance-state-name", "Values": _LIVE_STATES},
        ]
        if job_id is not None:
            filters.append(_tag_filter(JOB_TAG, job_id))
        specs: list[GatewaySpec] = []
        for region in sorted(self._known_regions()):
            ec2 = self._ec2(region)
            for instance in _instances(ec2, filters, f"listing gateways in {region}"):
                spec = _spec_of(instance, region)
                if spec is not None:
                    specs.append(spec)
        return sorted(specs, key=lambda s: (s.job_id, s.gateway_id))

    # ------------------------------------------------------------ plumbing

    def _known_regions(self) -> set[str]:
        regions = set(self._regions)
        default = boto3.session.Session().region_name
        if default:
            regions.add(default)
        return regions

    def _ami(self, region: str) -> str:
        if isinstance(self.ami, str):
            return self.ami
        if self.ami is not None and region in self.ami:
            return self.ami[region]
        ssm = _client("ssm", region)
        return _call(
            lambda: ssm.get_parameter(Name=AMI_PARAMETER),
            f"looking up the Amazon Linux 2023 image in {region}",
            GatewayError,
        )["Parameter"]["Value"]

    def _ec2(self, region: str) -> Any:
        client = self._clients.get(region)
        if client is None:
            client = self._clients[region] = _client("ec2", region)
        return client


# ---------------------------------------------------------------- KMS key wrapping


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
        key = response["Plaintext"]
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
        return self._call(
            lambda: self._kms().create_grant(
                KeyId=key_id,
                GranteePrincipal=grantee,
                Operations=["Decrypt"],
                Constraints={"EncryptionContextEquals": self.context},
                Name=f"skyhop-{self.job_id}-{role}",
            ),
            f"granting {grantee} the data key of job {self.job_id}",
        )["GrantId"]

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
            client = self._clients[name] = _client("kms", name)
        return client

    def _call(self, fn: Any, what: str) -> Any:
        try:
            return fn()
        except ClientError as exc:
            raise _classify_kms(exc, f"KMS: {what}") from None
        except NoRegionError:
            raise UsageError(
                f"KMS: {what}: no AWS region (use a key ARN or set AWS_REGION)"
            ) from None
        except BotoCoreError as exc:
            raise StoreError(f"KMS: {what}: {exc}", retryable=True) from None


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
    return token


def _region_of_arn(key_id: str | None) -> str | None:
    if key_id and key_id.startswith("arn:"):
        parts = key_id.split(":")
        if len(parts) > 3 and parts[3]:
            return parts[3]
    return None


def _classify_kms(exc: ClientError, what: str) -> SkyhopError:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in _ACCESS_CODES or status in (401, 403) or "AccessDenied" in code:
        return AccessError(f"{what}: access denied")
    if code in ("InvalidCiphertextException", "IncorrectKeyException"):
        return IntegrityError(f"{what}: the wrapped key does not open with this key and job")
    if code in ("NotFoundException", "InvalidGrantIdException"):
        return NotFoundError(f"{what}: not found")
    if code in ("DisabledException", "KMSInvalidStateException"):
        return AccessError(f"{what}: the KMS key is disabled or pending deletion")
    return _classify(exc, what, StoreError)


# ---------------------------------------------------------------- helpers


def _client(service: str, region: str | None) -> Any:
    try:
        return boto3.session.Session().client(
            service, region_name=region, config=Config(retries={"mode": "standard"})
        )
    except NoRegionError:
        raise UsageError(f"no AWS region for {service}: set AWS_REGION") from None


def _call(fn: Any, what: str, kind: type[SkyhopError] = GatewayError) -> Any:
    try:
        return fn()
    except SkyhopError:
        raise
    except (ClientError, BotoCoreError) as exc:
        raise _classify(exc, what, kind) from None


def _classify(exc: Exception, what: str, kind: type[SkyhopError]) -> SkyhopError:
    if not isinstance(exc, ClientError):
        return (
            StoreError(f"{what}: {exc}", retryable=True)
            if kind is StoreError
            else kind(f"{what}: {exc}")
        )
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    message = str(error.get("Message") or code).splitlines()[0][:300]
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
    if code in _ACCESS_CODES or status in (401, 403):
        return AccessError(f"{what}: access denied ({code})")
    if code.endswith(".NotFound") or code.startswith("InvalidPermission.NotFound"):
        return NotFoundError(f"{what}: {code}: {message}")
    if kind is StoreError:
        return StoreError(f"{what}: {code}: {message}", retryable=status >= 500 or status == 429)
    return kind(f"{what}: {code}: {message}")


def _instances(ec2: Any, filters: list[dict[str, Any]], what: str) -> Iterable[dict[str, Any]]:
    kwargs: dict[str, Any] = {"Filters": filters}
    while True:
        page = _call(lambda kwargs=kwargs: ec2.describe_instances(**kwargs), what)
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])
        token = page.get("NextToken")
        if not token:
            return
        kwargs["NextToken"] = token


def _spec_of(instance: dict[str, Any], region: str) -> GatewaySpec | None:
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    try:
        return GatewaySpec(
            gateway_id=tags[GATEWAY_ID_TAG],
            job_id=tags[JOB_TAG],
            region=region,
            role=GatewayRole(tags.get(ROLE_TAG, "source")),
            host=instance.get("PublicIpAddress") or instance.get("PrivateIpAddress") or "",
            data_port=int(tags.get(DATA_PORT_TAG, DEFAULT_DATA_PORT)),
            control_port=int(tags.get(CONTROL_PORT_TAG, DEFAULT_CONTROL_PORT)),
            instance_id=instance["InstanceId"],
        )
    except (KeyError, ValueError):
        log.warning("instance %s has incomplete skyhop tags", instance.get("InstanceId"))
        return None


def _tags(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


def _tag_filter(key: str, value: str) -> dict[str, Any]:
    return {"Name": f"tag:{key}", "Values": [value]}
