"""Names every part of the EC2 provider shares: tags, ports, limits, regions, and
the per-region client cache."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import boto3

from skyhop.clouds import aws
from skyhop.compute import startup
from skyhop.errors import UsageError

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
LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def aws_region(region: str) -> str:
    """``aws:us-east-1`` or ``us-east-1`` -> ``us-east-1``; other clouds are an error."""
    cloud, sep, name = region.partition(":")
    if sep and cloud != "aws":
        raise UsageError(f"region {region!r} is not an AWS region (the aws provider runs EC2)")
    name = name if sep else region
    if not name or not name.replace("-", "").isalnum():
        raise UsageError(f"malformed AWS region {region!r}")
    return name


def is_aws(region: str) -> bool:
    """Whether a planner region (``aws:us-east-1``, or a bare AWS name) is AWS's."""
    cloud, sep, _ = region.partition(":")
    return not sep or cloud == "aws"


class Clients:
    """EC2 clients by region, and the regions this provider has used (plus those
    it was told of and the session's default)."""

    def __init__(self, regions: Iterable[str] = ()) -> None:
        self.regions: set[str] = {aws_region(r) for r in regions}
        self._clients: dict[str, Any] = {}

    def ec2(self, region: str) -> Any:
        client = self._clients.get(region)
        if client is None:
            client = self._clients[region] = aws.client("ec2", region)
        return client

    def identity(self) -> str:
        """The ARN the credentials in use belong to (STS GetCallerIdentity)."""
        from skyhop.errors import AccessError

        sts = aws.client("sts", next(iter(sorted(self.regions)), None) or "us-east-1")
        found = aws.call(sts.get_caller_identity, "checking the AWS credentials", AccessError)
        return str(found.get("Arn", ""))

    def known_regions(self) -> set[str]:
        regions = set(self.regions)
        default = boto3.session.Session().region_name
        if default:
            regions.add(default)
        return regions


def tags_of(values: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in values.items()]


def tag_filter(key: str, value: str) -> dict[str, Any]:
    return {"Name": f"tag:{key}", "Values": [value]}
