"""The EC2 :class:`~skyhop.compute.base.ComputeProvider`: the network and firewall
(:mod:`~skyhop.compute.ec2.network`), the instances
(:mod:`~skyhop.compute.ec2.instances`), and the KMS grants of the job's data key
(:mod:`skyhop.crypto.kms`), put together and undone together."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from skyhop.cleanup import Cleanup, each
from skyhop.compute import startup
from skyhop.compute.ec2.common import (
    DEFAULT_CONTROL_PORT,
    DEFAULT_DATA_PORT,
    DEFAULT_INSTANCE_TYPE,
    Clients,
    aws_region,
)
from skyhop.compute.ec2.instances import EC2Instances
from skyhop.compute.ec2.network import EC2Network, Network
from skyhop.compute.ec2.wheel import WheelObject, signed
from skyhop.compute.package import GatewayPackage
from skyhop.crypto.kms import KMSKeyWrapper
from skyhop.errors import GatewayError, UsageError, first_line
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec, InstanceIdentity

log = logging.getLogger("skyhop.compute.ec2")

#: an EC2 instance id: ``i-`` and hex digits (8 or 17 on EC2)
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{1,17}")


class EC2ComputeProvider:
    """:class:`~skyhop.compute.base.ComputeProvider` on EC2 (see the module docstring).

    ``ami`` is one image id or a map region -> id (default: the latest Amazon
    Linux 2023 from the public SSM parameter); ``launch_templates`` maps a
    region to a launch template name (``infra_cdk``'s), which then supplies
    image, type and profile. ``instance_profiles`` and ``grantee_roles`` map a
    gateway role (``source``, ``relay``, ``destination``) to an instance
    profile (name or ARN: each role its own, two roles sharing one are refused)
    and to the IAM role ARN that gets the job's KMS grant (destinations only). ``wait_ready=False`` returns once instances run, without waiting
    for the gateway to accept connections (moto never runs user data).
    """

    name = "aws"
    #: a VM: launched over HTTPS control, it gets a boot configuration and enrols
    #: (its secrets come over mutual TLS, never in user data or metadata)
    enrols = True
    #: by default the control plane learns that a gateway is up (and its public
    #: address) from its gateway_ready event and controls it through its queue: the
    #: functions have no fixed egress address to open a control port to. With
    #: ``ready_via_events=False`` (the CLI's ``--gateways cloud``, whose address is
    #: one ``control_cidrs`` range) the control port opens to ``control_cidrs`` as
    #: soon as the instances run, and ``launch`` returns once each gateway listens.
    ready_via_events: bool = True

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
        package: GatewayPackage | Mapping[str, object] | str | None = None,
        wheel: WheelObject | Mapping[str, object] | None = None,
        wait_ready: bool = True,
        ready_timeout: float = 900.0,
        ready_via_events: bool = True,
    ) -> None:
        self.ready_via_events = ready_via_events
        if not ready_via_events and not control_cidrs:
            raise UsageError(
                "gateways controlled over their HTTPS API need the control plane's address "
                "(control_cidrs) to open their control port to"
            )
        self.ami = ami
        self.instance_type = instance_type
        self.launch_templates = dict(launch_templates or {})
        self.instance_profiles = startup.own_identities("instance_profiles", instance_profiles)
        self.grantee_roles = dict(grantee_roles or {})
        self.data_port = data_port
        self.control_port = control_port
        self.control_cidrs = startup.check_cidrs(list(control_cidrs))
        #: what the VMs install: skyhop's wheel and its SHA-256, or this version pinned
        self.package = startup.gateway_package(package)
        #: a deployment's wheel in S3, signed for each launch (wins over ``package``)
        try:
            self.wheel = None if wheel is None else WheelObject.model_validate(dict(wheel))
        except ValueError as exc:
            raise UsageError(f"wheel: {first_line(exc)}") from None
        self.wait_ready = wait_ready
        self.ready_timeout = ready_timeout
        self._kms_keys: set[str] = set(kms_keys)
        self._clients = Clients(regions)
        self._network = EC2Network(self._clients, self.control_cidrs)
        self._instances = EC2Instances(
            self._clients,
            ami=ami,
            instance_type=instance_type,
            launch_templates=self.launch_templates,
            instance_profiles=self.instance_profiles,
            data_port=data_port,
            control_port=control_port,
            package=self.package,
            ready_timeout=ready_timeout,
        )

    # ------------------------------------------------------------ network and firewall

    def ensure_network(self, region: str) -> None:
        self.network(region)

    def network(self, region: str) -> Network:
        """The region's skyhop network, created on first use and found by tag after."""
        return self._network.network(region)

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        self._network.authorize(job_id, gateways)

    def revoke(self, job_id: str) -> None:
        """The job's rules in every region, then its KMS grants: each step runs even
        when an earlier one failed, and the first failure is raised after."""
        steps: list[Callable[[], object]] = [functools.partial(self._network.revoke, job_id)]
        steps += [KMSKeyWrapper(key, job_id=job_id).revoke_grants for key in sorted(self._kms_keys)]
        each(steps, lambda step: step(), f"revoking job {job_id}")

    def rules(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Ingress rules of the skyhop groups (of one job, or all) in the known regions,
        each with its ``job``."""
        return self._network.rules(job_id)

    def firewall_jobs(self) -> set[str]:
        """The jobs that still have firewall rules or a security group (for the reaper)."""
        return self._network.firewall_jobs()

    # ------------------------------------------------------------ gateways

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        if not configs:
            return []
        for config in configs:
            self._check_key_material(config)
        if self.wheel is not None:  # a fresh URL for every launch (it expires)
            self._instances.package = signed(self.wheel, aws_region(configs[0].region))
        with Cleanup("launching EC2 gateways") as undo:
            self._grant_keys(configs, undo)
            for job_id in sorted({c.job_id for c in configs}):
                # undone last: a group (and the rules in it) goes once its instances are gone
                undo.add(self._network.delete_groups, job_id)
            started: list[tuple[str, str]] = []  # (region, instance id), terminated together
            undo.add(self._instances.terminate_started, started)
            specs = []
            groups: dict[tuple[str, str], str] = {}
            for config in configs:
                net = self.network(config.region)
                key = (net.region, config.job_id)
                if key not in groups:
                    groups[key] = self._network.job_group(net, config.job_id)
                spec = self._instances.run(config, net, groups[key])
                started.append((aws_region(config.region), spec.instance_id or ""))
                specs.append(spec)
            specs = self._instances.wait_running(specs)
            if not self.ready_via_events:
                # the control plane calls the control port: open it (to its own
                # address only) before waiting for the gateways to listen on it
                self._network.authorize_control(configs[0].job_id, specs)
                if self.wait_ready:
                    by_id = {c.gateway_id: c for c in configs}
                    for spec in specs:
                        self._instances.wait_listening(spec, by_id.get(spec.gateway_id))
            return specs

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

    def _grant_keys(self, configs: list[GatewayConfig], undo: Cleanup) -> None:
        """One KMS grant per (job, key, role) for the roles that receive a wrapped key,
        each retired by ``undo`` if the launch fails."""
        done: set[tuple[str, str, str]] = set()
        for config in configs:
            if config.wrapped_data_key is None:
                continue
            key = config.kms_key_id or KMSKeyWrapper.key_of(config.wrapped_data_key)
            grantee = self.grantee_roles.get(config.role.value)
            self._kms_keys.add(key)
            if grantee is None or (config.job_id, key, grantee) in done:
                continue
            wrapper = KMSKeyWrapper(key, job_id=config.job_id)
            undo.add(wrapper.revoke_grant, wrapper.grant_decrypt(grantee, role=config.role.value))
            done.add((config.job_id, key, grantee))

    def check_credentials(self) -> str:
        """The caller's AWS identity (its ARN): an AccessError naming what is missing
        before anything is launched."""
        return self._clients.identity()

    def instance_identity(self, gateway: GatewaySpec) -> InstanceIdentity:
        """The EC2 instance of ``gateway`` (:class:`~skyhop.compute.base.InstanceIdentities`):
        a request made with its instance profile's credentials carries
        ``ec2:SourceInstanceARN`` ``arn:PARTITION:ec2:REGION:ACCOUNT:instance/ID``.
        GatewayError when the spec names no EC2 instance id."""
        instance_id = gateway.instance_id or ""
        if not _INSTANCE_ID.fullmatch(instance_id):
            raise GatewayError(
                f"gateway {gateway.gateway_id}: {instance_id!r} is not an EC2 instance id"
            )
        return InstanceIdentity(
            cloud="aws", region=aws_region(gateway.region), instance_id=instance_id
        )

    # ------------------------------------------------------------ teardown and listing

    def terminate(self, job_id: str) -> None:
        """Terminate the job's gateways, then delete its security groups (both run,
        whatever the other does; the first failure is raised after)."""
        each(
            [self._instances.terminate, self._network.delete_groups],
            lambda step: step(job_id),
            f"terminating job {job_id}",
        )

    def running(self, job_id: str) -> set[str]:
        """Gateway ids of the job whose instances still run (see compute.base.PowersOff)."""
        return self._instances.running(job_id)

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        return self._instances.list_gateways(job_id)
