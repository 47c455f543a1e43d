"""Gateway instances on EC2.

One instance per :class:`~skyhop.models.GatewayConfig`, tagged
``skyhop=gateway``, ``skyhop:job=JOB``, ``skyhop:gateway=ID``,
``skyhop:role=ROLE`` (and its ports), with IMDSv2 required and
terminate-on-shutdown. Its user data (:func:`bootstrap_script`) is the startup
script every cloud's gateways share (:mod:`skyhop.compute.startup`): it writes
the configuration to ``/etc/skyhop/gateway.json`` (0600), installs skyhop into
a venv and starts ``python -m gateway_vm`` under systemd.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from skyhop.cleanup import each
from skyhop.clouds import aws
from skyhop.compute import startup
from skyhop.compute.ec2.common import (
    AMI_PARAMETER,
    CONTROL_PORT_TAG,
    DATA_PORT_TAG,
    DEFAULT_CONTROL_PORT,
    DEFAULT_DATA_PORT,
    GATEWAY_ID_TAG,
    GATEWAY_TAG,
    JOB_TAG,
    LIVE_STATES,
    MAX_USER_DATA,
    ROLE_TAG,
    Clients,
    aws_region,
    tag_filter,
    tags_of,
)
from skyhop.compute.ec2.network import Network
from skyhop.compute.package import GatewayPackage
from skyhop.errors import GatewayError, NotFoundError, UsageError
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec

log = logging.getLogger("skyhop.compute.ec2")


def bootstrap_script(config: GatewayConfig, *, package: GatewayPackage | str | None = None) -> str:
    """The user data that runs ``config`` (as :func:`~skyhop.compute.startup.vm_config`
    made it) on a fresh VM: the shared startup script, with the configuration
    carried inline as base64."""
    payload = base64.b64encode(config.model_dump_json().encode()).decode()
    lines = "\n".join(payload[i : i + 76] for i in range(0, len(payload), 76))
    write = f"base64 -d > \"$CONFIG\" <<'SKYHOP_CONFIG'\n{lines}\nSKYHOP_CONFIG"
    return startup.startup_script(write, package or startup.default_spec())


def config_from_user_data(user_data: str) -> GatewayConfig:
    """The gateway configuration inside a :func:`bootstrap_script` (tests, debugging)."""
    try:
        block = user_data.split("<<'SKYHOP_CONFIG'\n", 1)[1].split("\nSKYHOP_CONFIG\n", 1)[0]
        raw = base64.b64decode("".join(block.split()), validate=True)
    except (IndexError, ValueError):
        raise UsageError("user data holds no skyhop gateway configuration") from None
    return GatewayConfig.model_validate_json(raw)


class EC2Instances:
    """Runs, waits for, lists and terminates gateway instances (see the module docstring)."""

    def __init__(
        self,
        clients: Clients,
        *,
        ami: str | Mapping[str, str] | None,
        instance_type: str,
        launch_templates: Mapping[str, str],
        instance_profiles: Mapping[str, str],
        data_port: int,
        control_port: int,
        package: GatewayPackage | str,
        ready_timeout: float,
    ) -> None:
        self.clients = clients
        self.ami = ami
        self.instance_type = instance_type
        self.launch_templates = launch_templates
        self.instance_profiles = instance_profiles
        self.data_port = data_port
        self.control_port = control_port
        self.package = package
        self.ready_timeout = ready_timeout

    def run(self, config: GatewayConfig, net: Network, group_id: str) -> GatewaySpec:
        """Start one gateway's instance in ``net``, in its job's security group
        ``group_id`` only; its spec, address not yet known."""
        region = aws_region(config.region)
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
        tags = tags_of(
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
                    "Groups": [group_id],
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
        ec2 = self.clients.ec2(region)
        instance = aws.call(
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

    def wait_running(self, specs: list[GatewaySpec]) -> list[GatewaySpec]:
        """Wait until every instance runs; fill in its public address."""
        by_region: dict[str, list[GatewaySpec]] = {}
        for spec in specs:
            by_region.setdefault(aws_region(spec.region), []).append(spec)
        for region, group in by_region.items():
            ec2 = self.clients.ec2(region)
            ids = [s.instance_id for s in group if s.instance_id]
            what = f"waiting for gateways in {region}"
            _wait(
                ec2, "instance_running", ids, what, "did not reach running", delay=3, attempts=200
            )
            found = {
                i["InstanceId"]: i
                for i in instances(ec2, [{"Name": "instance-id", "Values": ids}], what)
            }
            for spec in group:
                instance = found.get(spec.instance_id or "", {})
                spec.host = (
                    instance.get("PublicIpAddress") or instance.get("PrivateIpAddress") or spec.host
                )
                if not spec.host:
                    raise GatewayError(f"gateway {spec.gateway_id} has no address")
        return specs

    def wait_listening(self, spec: GatewaySpec, config: GatewayConfig | None = None) -> None:
        """Wait until the gateway answers: with its ``config``, a status call over the
        job's mutual TLS (a middlebox that accepts any TCP connection is no gateway);
        without one, a TCP connection to its control port."""
        deadline = time.monotonic() + self.ready_timeout
        pause = 0.5  # a VM boots in tens of seconds: look often at first, then every 5 s
        while True:
            try:
                if config is not None:
                    if not startup.control_api_probe(spec, config):
                        raise OSError("its control API did not answer over the job's TLS")
                    return
                with socket.create_connection((spec.host, spec.control_port), timeout=3):
                    return
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise GatewayError(
                        f"gateway {spec.gateway_id} at {spec.host}:{spec.control_port} did not "
                        f"come up within {self.ready_timeout:.0f} s ({exc})"
                    ) from None
                time.sleep(pause)
                pause = min(5.0, pause * 2)

    def terminate_started(self, started: list[tuple[str, str]]) -> None:
        """Failure cleanup of a launch: terminate the (region, instance id) it started."""
        by_region: dict[str, list[str]] = {}
        for region, instance_id in started:
            if instance_id:
                by_region.setdefault(region, []).append(instance_id)
        for region, ids in by_region.items():
            ec2 = self.clients.ec2(region)
            try:
                ec2.terminate_instances(InstanceIds=ids)
                # waited for: the job's security group can only be deleted after
                ec2.get_waiter("instance_terminated").wait(
                    InstanceIds=ids, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
                )
            except (ClientError, BotoCoreError) as exc:
                log.warning("cleanup: terminating %s in %s failed: %s", ids, region, exc)

    def terminate(self, job_id: str) -> None:
        """Terminate the job's instances in every known region and wait until they are
        gone; every region is tried even when one fails (the first failure is raised)."""
        each(
            sorted(self.clients.known_regions()),
            lambda region: self._terminate_in(region, job_id),
            f"terminating gateways of job {job_id}",
        )

    def _terminate_in(self, region: str, job_id: str) -> None:
        ec2 = self.clients.ec2(region)
        what = f"terminating gateways of job {job_id} in {region}"
        ids = [
            i["InstanceId"]
            for i in instances(
                ec2,
                [
                    tag_filter(JOB_TAG, job_id),
                    tag_filter(*GATEWAY_TAG),
                    {"Name": "instance-state-name", "Values": [*LIVE_STATES, "shutting-down"]},
                ],
                what,
            )
        ]
        if not ids:
            return
        try:
            aws.call(lambda: ec2.terminate_instances(InstanceIds=ids), what, GatewayError)
        except NotFoundError:
            pass  # it went meanwhile (a gateway that powered itself off): wait for it
        _wait(ec2, "instance_terminated", ids, what, "did not terminate", delay=5, attempts=120)

    def running(self, job_id: str) -> set[str]:
        """Gateway ids of the job whose instances are pending or running (not yet
        powered off, which terminates them)."""
        filters = [
            tag_filter(*GATEWAY_TAG),
            tag_filter(JOB_TAG, job_id),
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
        found: set[str] = set()
        for region in sorted(self.clients.known_regions()):
            ec2 = self.clients.ec2(region)
            for instance in instances(ec2, filters, f"listing gateways in {region}"):
                spec = spec_of(instance, region)
                if spec is not None:
                    found.add(spec.gateway_id)
        return found

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        filters = [
            tag_filter(*GATEWAY_TAG),
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
        if job_id is not None:
            filters.append(tag_filter(JOB_TAG, job_id))
        specs: list[GatewaySpec] = []
        for region in sorted(self.clients.known_regions()):
            ec2 = self.clients.ec2(region)
            for instance in instances(ec2, filters, f"listing gateways in {region}"):
                spec = spec_of(instance, region)
                if spec is not None:
                    specs.append(spec)
        return sorted(specs, key=lambda s: (s.job_id, s.gateway_id))

    def _ami(self, region: str) -> str:
        if isinstance(self.ami, str):
            return self.ami
        if self.ami is not None and region in self.ami:
            return self.ami[region]
        ssm = aws.client("ssm", region)
        found = aws.call(
            lambda: ssm.get_parameter(Name=AMI_PARAMETER),
            f"looking up the Amazon Linux 2023 image in {region}",
            GatewayError,
        )
        return str(found["Parameter"]["Value"])


def instances(ec2: Any, filters: list[dict[str, Any]], what: str) -> Iterable[dict[str, Any]]:
    kwargs: dict[str, Any] = {"Filters": filters}
    while True:
        page = aws.call(lambda kwargs=kwargs: ec2.describe_instances(**kwargs), what)
        for reservation in page.get("Reservations", []):
            yield from reservation.get("Instances", [])
        token = page.get("NextToken")
        if not token:
            return
        kwargs["NextToken"] = token


def spec_of(instance: dict[str, Any], region: str) -> GatewaySpec | None:
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


def _wait(
    ec2: Any, waiter: str, ids: list[str], what: str, failed: str, *, delay: int, attempts: int
) -> None:
    """Wait with EC2's ``waiter`` for instances ``ids``; GatewayError ``failed`` when
    they never get there, botocore's errors translated."""
    try:
        ec2.get_waiter(waiter).wait(
            InstanceIds=ids, WaiterConfig={"Delay": delay, "MaxAttempts": attempts}
        )
    except WaiterError as exc:
        raise GatewayError(f"{what}: {ids} {failed} ({exc})") from None
    except (ClientError, BotoCoreError) as exc:
        raise aws.classify(exc, what, GatewayError) from None
