"""The skyhop network of a region and the per-job firewall rules in it.

Network (once per region, reused by every job): a VPC, a subnet with public
addresses and a route table of its own holding the default route to an internet
gateway, and the security group ``skyhop-gateways`` (which admits nothing, ever),
each created tagged ``skyhop=network`` and found by that tag (the VPC's main route
table is left as CreateVpc made it: a network set up by an earlier skyhop, whose
main table it routed and tagged, gets its subnet's own table on next use).

Firewall (per job): every job has its own security group in each region it has
gateways in, ``skyhop-job-JOB`` (tagged ``skyhop=network`` and
``skyhop:job=JOB``), and its instances are in that group only. So a rule that
admits one job's gateways admits them to that job's gateways, never to another
job's in the same region (a group shared by every job did: one job's /32 rules
opened every job's gateways to its peers). :meth:`EC2Network.authorize` admits,
in the job's group, TCP on the gateways' data port from the ``/32`` address of
each of the job's gateways, nothing else (plus the control port from
``control_cidrs``, when given); each rule is tagged and described
``skyhop:job=JOB``. :meth:`EC2Network.revoke` removes the job's rules (and
deletes its group once no instance uses it; :meth:`EC2Network.delete_groups`
after the instances are gone), in every region, even when one region fails.
:meth:`EC2Network.firewall_jobs` names the jobs that still have rules or
groups, for the reaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from skyhop.cleanup import each
from skyhop.clouds import aws
from skyhop.compute import startup
from skyhop.compute.ec2.common import (
    JOB_TAG,
    NETWORK_CIDR,
    NETWORK_TAG,
    SECURITY_GROUP_NAME,
    SUBNET_CIDR,
    Clients,
    aws_region,
    is_aws,
    tag_filter,
    tags_of,
)
from skyhop.errors import GatewayError, NotFoundError, SkyhopError
from skyhop.models import GatewaySpec


@dataclass
class Network:
    """The skyhop network of one region."""

    region: str
    vpc_id: str
    subnet_id: str
    security_group_id: str
    internet_gateway_id: str


JOB_GROUP_PREFIX = "skyhop-job-"


def job_group_name(job_id: str) -> str:
    """The name of a job's security group (unique in its VPC)."""
    return (JOB_GROUP_PREFIX + job_id)[:255]


class EC2Network:
    """The networks of the regions a provider uses, and the job rules in their groups."""

    def __init__(self, clients: Clients, control_cidrs: list[str]) -> None:
        self.clients = clients
        self.control_cidrs = control_cidrs
        self._networks: dict[str, Network] = {}

    def network(self, region: str) -> Network:
        """The region's skyhop network, created on first use and found by tag after."""
        name = aws_region(region)
        self.clients.regions.add(name)
        found = self._networks.get(name)
        if found is None:
            found = self._create(name)
            self._networks[name] = found
        return found

    def _create(self, region: str) -> Network:
        ec2 = self.clients.ec2(region)
        what = f"setting up the skyhop network in {region}"
        tags = tags_of({NETWORK_TAG[0]: NETWORK_TAG[1], "Name": "skyhop"})
        vpcs = aws.call(lambda: ec2.describe_vpcs(Filters=[tag_filter(*NETWORK_TAG)]), what)["Vpcs"]
        if vpcs:
            vpc_id = sorted(v["VpcId"] for v in vpcs)[0]
        else:
            vpc_id = aws.call(
                lambda: ec2.create_vpc(
                    CidrBlock=NETWORK_CIDR,
                    TagSpecifications=[{"ResourceType": "vpc", "Tags": tags}],
                ),
                what,
            )["Vpc"]["VpcId"]
            aws.call(lambda: ec2.get_waiter("vpc_available").wait(VpcIds=[vpc_id]), what)
        in_vpc = {"Name": "vpc-id", "Values": [vpc_id]}

        igws = aws.call(
            lambda: ec2.describe_internet_gateways(
                Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
            ),
            what,
        )["InternetGateways"]
        if igws:
            igw_id = igws[0]["InternetGatewayId"]
        else:
            igw_id = aws.call(
                lambda: ec2.create_internet_gateway(
                    TagSpecifications=[{"ResourceType": "internet-gateway", "Tags": tags}]
                ),
                what,
            )["InternetGateway"]["InternetGatewayId"]
            aws.call(
                lambda: ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id), what
            )

        subnets = aws.call(
            lambda: ec2.describe_subnets(Filters=[in_vpc, tag_filter(*NETWORK_TAG)]), what
        )["Subnets"]
        if subnets:
            subnet_id = sorted(s["SubnetId"] for s in subnets)[0]
        else:
            zones = aws.call(
                lambda: ec2.describe_availability_zones(
                    Filters=[{"Name": "state", "Values": ["available"]}]
                ),
                what,
            )["AvailabilityZones"]
            zone = sorted(z["ZoneName"] for z in zones)[0]
            subnet_id = aws.call(
                lambda: ec2.create_subnet(
                    VpcId=vpc_id,
                    CidrBlock=SUBNET_CIDR,
                    AvailabilityZone=zone,
                    TagSpecifications=[{"ResourceType": "subnet", "Tags": tags}],
                ),
                what,
            )["Subnet"]["SubnetId"]
            aws.call(
                lambda: ec2.modify_subnet_attribute(
                    SubnetId=subnet_id, MapPublicIpOnLaunch={"Value": True}
                ),
                what,
            )

        self._route(ec2, vpc_id, subnet_id, igw_id, tags, what)

        groups = aws.call(
            lambda: ec2.describe_security_groups(
                Filters=[in_vpc, {"Name": "group-name", "Values": [SECURITY_GROUP_NAME]}]
            ),
            what,
        )["SecurityGroups"]
        if groups:
            sg_id = groups[0]["GroupId"]
        else:
            sg_id = aws.call(
                lambda: ec2.create_security_group(
                    GroupName=SECURITY_GROUP_NAME,
                    Description="skyhop gateways: ingress only between one job's gateways",
                    VpcId=vpc_id,
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
                ),
                what,
            )["GroupId"]
        return Network(region, vpc_id, subnet_id, sg_id, igw_id)

    @staticmethod
    def _route(
        ec2: Any, vpc_id: str, subnet_id: str, igw_id: str, tags: list[dict[str, str]], what: str
    ) -> None:
        """The subnet's own route table, with the default route to the internet gateway:
        made tagged ``skyhop=network`` (never the VPC's main table, which CreateVpc makes
        untagged), so that the stack's CreateRoute and AssociateRouteTable can be
        granted on tables of the skyhop network alone (infra_cdk.permissions)."""
        tables = aws.call(
            lambda: ec2.describe_route_tables(
                Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, tag_filter(*NETWORK_TAG)]
            ),
            what,
        )["RouteTables"]
        own = [t for t in tables if not any(a.get("Main") for a in t.get("Associations", []))]

        def serves(table: dict[str, Any]) -> bool:
            return any(a.get("SubnetId") == subnet_id for a in table.get("Associations", []))

        table = next((t for t in own if serves(t)), None)
        if table is None and own:  # made before, its association not (yet)
            table = sorted(own, key=lambda t: str(t["RouteTableId"]))[0]
        if table is None:
            table = aws.call(
                lambda: ec2.create_route_table(
                    VpcId=vpc_id,
                    TagSpecifications=[{"ResourceType": "route-table", "Tags": tags}],
                ),
                what,
            )["RouteTable"]
        table_id = str(table["RouteTableId"])
        if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in table.get("Routes", [])):
            aws.call(
                lambda: ec2.create_route(
                    RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id
                ),
                what,
            )
        if not serves(table):
            aws.call(
                lambda: ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet_id), what
            )

    def find(self, region: str) -> Network | None:
        """The region's network if it exists (for revoke and listing); never creates."""
        if region in self._networks:
            return self._networks[region]
        ec2 = self.clients.ec2(region)
        what = f"looking up the skyhop network in {region}"
        vpcs = aws.call(lambda: ec2.describe_vpcs(Filters=[tag_filter(*NETWORK_TAG)]), what)["Vpcs"]
        for vpc_id in sorted(v["VpcId"] for v in vpcs):
            groups = aws.call(
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

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        """Data ports from every gateway of the job (of any cloud: a cross-cloud route's
        peers are admitted too), control ports from ``control_cidrs``, in the group of
        each AWS region the job has gateways in."""
        if not gateways:
            return
        addresses = startup.peer_cidrs(gateways)
        self._open(job_id, gateways, lambda data, control: {(data, c) for c in addresses})

    def authorize_control(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        """Only the control ports, from ``control_cidrs`` (a control plane that calls the
        gateways' HTTPS API opens this before they are ready, the data ports after)."""
        self._open(job_id, gateways, lambda data, control: set())

    def _open(
        self,
        job_id: str,
        gateways: list[GatewaySpec],
        data_rules: Any,
    ) -> None:
        regions: dict[str, set[tuple[int, int]]] = {}
        for g in gateways:
            if not is_aws(g.region):
                continue  # another cloud's gateway: its provider opens its own firewall
            regions.setdefault(aws_region(g.region), set()).add((g.data_port, g.control_port))
        description = f"{JOB_TAG}={job_id}"
        for region, ports in sorted(regions.items()):
            net = self.network(region)
            group_id = self.job_group(net, job_id)
            wanted: set[tuple[int, str]] = set()
            for data, control in ports:
                wanted |= data_rules(data, control)
            wanted |= {(control, cidr) for _, control in ports for cidr in self.control_cidrs}
            have = {
                (r["FromPort"], r.get("CidrIpv4") or r.get("CidrIpv6") or "")
                for r in self._job_rules(net, job_id)
                if r.get("GroupId") == group_id
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
            ec2 = self.clients.ec2(region)
            aws.call(
                lambda ec2=ec2, group_id=group_id, by_port=by_port: (
                    ec2.authorize_security_group_ingress(
                        GroupId=group_id,
                        IpPermissions=[
                            {"IpProtocol": "tcp", "FromPort": p, "ToPort": p, **ranges}
                            for p, ranges in sorted(by_port.items())
                        ],
                        TagSpecifications=[
                            {
                                "ResourceType": "security-group-rule",
                                "Tags": tags_of({JOB_TAG: job_id}),
                            }
                        ],
                    )
                ),
                f"opening the firewall for job {job_id} in {region}",
                GatewayError,
            )

    def job_group(self, net: Network, job_id: str) -> str:
        """The id of the job's security group in ``net`` (created, tagged, when missing)."""
        found = self._job_groups(net, job_id)
        if found:
            return str(sorted(g["GroupId"] for g in found)[0])
        ec2 = self.clients.ec2(net.region)
        tags = tags_of(
            {NETWORK_TAG[0]: NETWORK_TAG[1], JOB_TAG: job_id, "Name": job_group_name(job_id)}
        )
        return str(
            aws.call(
                lambda: ec2.create_security_group(
                    GroupName=job_group_name(job_id),
                    Description=f"skyhop job {job_id}: ingress only between its gateways",
                    VpcId=net.vpc_id,
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
                ),
                f"creating the firewall of job {job_id} in {net.region}",
                GatewayError,
            )["GroupId"]
        )

    def _job_groups(self, net: Network, job_id: str | None) -> list[dict[str, Any]]:
        """The per-job groups in ``net`` (of one job, or of all)."""
        ec2 = self.clients.ec2(net.region)
        filters: list[dict[str, Any]] = [
            {"Name": "vpc-id", "Values": [net.vpc_id]},
            tag_filter(*NETWORK_TAG),
            tag_filter(JOB_TAG, job_id) if job_id else {"Name": "tag-key", "Values": [JOB_TAG]},
        ]
        groups = aws.call(
            lambda: ec2.describe_security_groups(Filters=filters),
            f"reading the firewall in {net.region}",
            GatewayError,
        )["SecurityGroups"]
        return [g for g in groups if g.get("GroupName", "").startswith(JOB_GROUP_PREFIX)]

    def revoke(self, job_id: str) -> None:
        """Remove the job's ingress rules in every known region (idempotent), and its
        groups where no instance uses them any more; every region is tried even when
        one fails, and the first failure is raised after."""
        each(
            sorted(self.clients.known_regions()),
            lambda region: self._revoke_in(region, job_id),
            f"closing the firewall of job {job_id}",
        )

    def _revoke_in(self, region: str, job_id: str) -> None:
        net = self.find(region)
        if net is None:
            return
        ec2 = self.clients.ec2(region)
        by_group: dict[str, list[str]] = {}
        for r in self._job_rules(net, job_id):
            by_group.setdefault(r["GroupId"], []).append(r["SecurityGroupRuleId"])

        def revoke_group(item: tuple[str, list[str]]) -> None:
            group_id, ids = item
            try:
                aws.call(
                    lambda: ec2.revoke_security_group_ingress(
                        GroupId=group_id, SecurityGroupRuleIds=ids
                    ),
                    f"closing the firewall for job {job_id} in {region}",
                    GatewayError,
                )
            except NotFoundError:
                pass  # revoked concurrently

        each(sorted(by_group.items()), revoke_group, f"closing the firewall of job {job_id}")
        self._delete_groups_in(net, job_id, in_use_ok=True)

    def delete_groups(self, job_id: str) -> None:
        """Delete the job's security groups in every known region (once its instances
        are gone: a group in use cannot be deleted)."""
        each(
            sorted(self.clients.known_regions()),
            lambda region: self._delete_groups_in(self.find(region), job_id, in_use_ok=False),
            f"deleting the firewall groups of job {job_id}",
        )

    def _delete_groups_in(self, net: Network | None, job_id: str, *, in_use_ok: bool) -> None:
        if net is None:
            return
        ec2 = self.clients.ec2(net.region)

        def delete(group_id: str) -> None:
            try:
                aws.call(
                    lambda: ec2.delete_security_group(GroupId=group_id),
                    f"deleting the firewall group {group_id} of job {job_id} in {net.region}",
                    GatewayError,
                )
            except NotFoundError:
                pass  # deleted concurrently
            except SkyhopError as exc:
                if not (in_use_ok and "DependencyViolation" in str(exc)):
                    raise  # in use: its instances are still there; terminate deletes it

        each(
            sorted(g["GroupId"] for g in self._job_groups(net, job_id)),
            delete,
            f"deleting the firewall groups of job {job_id}",
        )

    def rules(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Ingress rules of the skyhop groups (of one job, or all) in the known regions,
        each with the ``job`` it belongs to."""
        out: list[dict[str, Any]] = []
        for region in sorted(self.clients.known_regions()):
            net = self.find(region)
            if net is None:
                continue
            for rule in self._job_rules(net, job_id):
                out.append({**rule, "job": _job_of(rule)})
        return out

    def firewall_jobs(self) -> set[str]:
        """The jobs with rules or a security group left in the known regions."""
        jobs = {r["job"] for r in self.rules() if r["job"]}
        for region in sorted(self.clients.known_regions()):
            net = self.find(region)
            if net is not None:
                for group in self._job_groups(net, None):
                    tags = {t["Key"]: t["Value"] for t in group.get("Tags", [])}
                    if tags.get(JOB_TAG):
                        jobs.add(tags[JOB_TAG])
        return jobs

    def _job_rules(self, net: Network, job_id: str | None) -> list[dict[str, Any]]:
        """The rules of the job (or of every job) in its own groups, and any a job made
        in the shared group before jobs had groups of their own."""
        rules: list[dict[str, Any]] = []
        for group_id in [net.security_group_id] + [
            g["GroupId"] for g in self._job_groups(net, job_id)
        ]:
            rules += [
                r
                for r in self._ingress(net, group_id)
                if _job_of(r) and (job_id is None or _job_of(r) == job_id)
            ]
        return rules

    def _ingress(self, net: Network, group_id: str) -> list[dict[str, Any]]:
        ec2 = self.clients.ec2(net.region)
        rules: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"Filters": [{"Name": "group-id", "Values": [group_id]}]}
        while True:
            page = aws.call(
                lambda kwargs=kwargs: ec2.describe_security_group_rules(**kwargs),
                f"reading the firewall in {net.region}",
                GatewayError,
            )
            rules.extend(r for r in page["SecurityGroupRules"] if not r.get("IsEgress"))
            token = page.get("NextToken")
            if not token:
                return rules
            kwargs["NextToken"] = token


def _job_of(rule: dict[str, Any]) -> str:
    """The job a rule was made for (its tag, else its description), or ''."""
    for tag in rule.get("Tags", []):
        if tag["Key"] == JOB_TAG:
            return str(tag["Value"])
    description = str(rule.get("Description") or "")
    mark = f"{JOB_TAG}="
    return description[len(mark) :] if description.startswith(mark) else ""
