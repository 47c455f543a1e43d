"""Gateways on Azure virtual machines (azure-mgmt-compute, azure-mgmt-network).

Network: a resource group ``skyhop`` holding, per region, a network security
group ``skyhop-REGION-nsg`` and a virtual network ``skyhop-REGION-vnet`` whose
``gateways`` subnet is bound to that NSG; created on first use. Each gateway
gets a Standard static public IP and a NIC in that subnet.

Per job, NSG rules in each region where the job has gateways, at the lowest
free priority from 1000 up (two jobs may not share a priority in one NSG):

* ``skyhop-JOB`` (made by :meth:`authorize`): inbound TCP on the data ports,
  from the job's gateway addresses only (``/32`` each), to the job's own VMs'
  private addresses only;
* ``skyhop-JOB-ctl`` (made by :meth:`launch` when ``control_cidrs`` is given):
  inbound TCP on the control ports from the control plane's ranges.

:meth:`revoke` deletes both from every skyhop NSG (each even when another
fails); other jobs' rules stay. :meth:`rules` and :meth:`firewall_jobs` find rules
by the job their description names, so the reaper removes what a failed revoke
left. ``control_cidrs`` are a /16 at most.

What the VMs install: skyhop's wheel, by its SHA-256 (:mod:`skyhop.compute.package`).
``wheel`` names a deployment's copy of it in a storage account
(:class:`~skyhop.compute.azure_wheel.AzureWheel`: ``skyhop deploy azure`` uploads
it); given none, the first launch publishes this control plane's own wheel to
``wheel_account`` (default: the account of ``AZURE_STORAGE_CONNECTION_STRING``).
Each launch signs a fresh read-only SAS URL of that one blob for the custom data
(:func:`~skyhop.compute.azure_wheel.signed`). ``package_spec`` overrides both:
a :class:`~skyhop.compute.package.GatewayPackage` already signed, or, as an explicit
opt-in, a requirement pinned to one version (``skyhop[azure]==VERSION``, from the
public index, pinned by version and not by hash).

VMs carry the tags ``skyhop-job``, ``skyhop-gateway``, ``skyhop-role``,
``skyhop-region`` and ``skyhop-ports`` (public IPs and NICs the job tag too, so
:meth:`terminate` finds them all). The boot script and the GatewayConfig
(listen host 0.0.0.0, fixed ports) travel as the VM's custom data, which Azure
does not return on reads. Nobody can log in: the admin account gets a
throwaway SSH key whose private half is never kept.

:meth:`launch` returns once every VM has succeeded, has a public address and
its control API answers (``ready_probe``; tests replace it).

Each gateway role runs as its own user-assigned managed identity (``identities``:
role -> resource id; two roles may not share one), so a relay's VM holds no role
assignment a source's or destination's has: the assignments themselves are the
subscription's (not made here).

Credentials: ``DefaultAzureCredential`` unless ``credential`` is given
(``"anonymous"`` for an endpoint that checks no token);
``subscription_id`` or ``AZURE_SUBSCRIPTION_ID``. ``base_url`` points the
clients at another Resource Manager endpoint and ``client_kwargs`` go to every
client (tests use a local fake of the ARM REST API, since no emulator exists).
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from azure.core import exceptions as aexc
from azure.core.credentials import AccessToken
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute import models as cm
from azure.mgmt.network import NetworkManagementClient
from azure.mgmt.network import models as nm

from skyhop.cleanup import Cleanup, each
from skyhop.clouds import azure as kit
from skyhop.compute import startup
from skyhop.compute.azure_wheel import AzureWheel, publish_wheel, signed
from skyhop.compute.package import GatewayPackage
from skyhop.errors import (
    AccessError,
    GatewayError,
    NotFoundError,
    SkyhopError,
    UsageError,
    first_line,
    translated,
)
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec

try:  # azure-mgmt-resource moved the client between major versions
    from azure.mgmt.resource import ResourceManagementClient
except ImportError:  # pragma: no cover - depends on the installed version
    from azure.mgmt.resource.resources import ResourceManagementClient

DEFAULT_VM_SIZE = "Standard_D8s_v5"
DEFAULT_IMAGE = {
    "publisher": "Canonical",
    "offer": "ubuntu-24_04-lts",
    "sku": "server",
    "version": "latest",
}
FIRST_PRIORITY = 1000
LAST_PRIORITY = 4096
VNET_RANGE = "10.0.0.0/16"
SUBNET_RANGE = "10.0.0.0/20"
SUBNET = "gateways"

T = TypeVar("T")
_RULE_JOB = re.compile(r"skyhop: job (\S+): ")  # what authorize and launch write in a rule
ReadyProbe = Callable[[GatewaySpec, GatewayConfig], bool]


class AzureComputeProvider:
    """The ComputeProvider for Azure virtual machines."""

    name = "azure"
    #: a VM: launched over HTTPS control, it gets a boot configuration and enrols
    #: (its secrets come over mutual TLS, never in user data or metadata)
    enrols = True
    #: True (a deployed control plane): gateway_ready events and control queues (see
    #: compute.base); False (the CLI's ``--gateways cloud``): the control port opens to
    #: ``control_cidrs`` and ``launch`` returns once each gateway's control API answers
    ready_via_events: bool = True

    def __init__(
        self,
        subscription_id: str | None = None,
        *,
        resource_group: str = "skyhop",
        group_location: str | None = None,
        vm_size: str = DEFAULT_VM_SIZE,
        image: dict[str, str] | None = None,
        package_spec: GatewayPackage | Mapping[str, object] | str | None = None,
        wheel: AzureWheel | Mapping[str, object] | None = None,
        wheel_account: str | None = None,
        control_cidrs: list[str] | None = None,
        admin_username: str = "skyhop",
        identities: Mapping[str, str] | None = None,
        credential: Any = None,
        base_url: str | None = None,
        client_kwargs: dict[str, Any] | None = None,
        ready_timeout: float = 900.0,
        poll_interval: float = 5.0,
        ready_probe: ReadyProbe | None = None,
        ready_via_events: bool = True,
    ) -> None:
        self.ready_via_events = ready_via_events
        self.subscription_id = subscription_id or os.environ.get("AZURE_SUBSCRIPTION_ID")
        if not self.subscription_id:
            raise UsageError(
                "no Azure subscription: pass subscription_id= or set AZURE_SUBSCRIPTION_ID"
            )
        if not re.fullmatch(r"[-\w._()]{1,90}", resource_group):
            raise UsageError(f"not a resource group name: {resource_group!r}")
        self.resource_group = resource_group
        self.group_location = group_location
        self.vm_size = vm_size
        self.image = dict(image or DEFAULT_IMAGE)
        #: what the VMs install when given: a signed GatewayPackage, or (opt-in) a
        #: version pinned; else the wheel below, signed for each launch
        self.package_spec = (
            None if package_spec is None else startup.gateway_package(package_spec, "azure")
        )
        try:
            #: skyhop's wheel as a blob (a deployment's), else published at the first launch
            self.wheel = None if wheel is None else AzureWheel.model_validate(dict(wheel))
        except ValueError as exc:
            raise UsageError(f"wheel: {first_line(exc)}") from None
        self.wheel_account = wheel_account
        if control_cidrs is None:
            raw = os.environ.get("SKYHOP_CONTROL_CIDRS", "")
            control_cidrs = [c for c in raw.split(",") if c.strip()]
        self.control_cidrs = startup.check_cidrs(control_cidrs)
        if not ready_via_events and not self.control_cidrs:
            raise UsageError(
                "gateways controlled over their HTTPS API need the control plane's address "
                "(control_cidrs) to open their control port to"
            )
        self.admin_username = admin_username
        #: gateway role -> the resource id of the user-assigned managed identity its
        #: VMs run as (each role its own)
        self.identities = startup.own_identities("identities", identities)
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        self.ready_probe = ready_probe or startup.control_api_probe
        if credential == "anonymous":  # an endpoint that checks no token (a local fake)
            credential = _NoCredential()
        self._credential = credential
        self._base_url = base_url
        self._client_kwargs = dict(client_kwargs or {})
        self._clients: dict[str, Any] = {}
        self._group_ready = False
        self._regions_ready: set[str] = set()

    # ------------------------------------------------------------ plumbing

    def _client(self, cls: type) -> Any:
        key = cls.__name__
        if key not in self._clients:
            if self._credential is None:
                from azure.identity import DefaultAzureCredential

                self._credential = DefaultAzureCredential()
            kwargs = dict(self._client_kwargs)
            if self._base_url:
                kwargs["base_url"] = self._base_url
            self._clients[key] = _call(
                lambda: cls(self._credential, self.subscription_id, **kwargs), "connect to Azure"
            )
        return self._clients[key]

    @property
    def network(self) -> Any:
        return self._client(NetworkManagementClient)

    @property
    def compute(self) -> Any:
        return self._client(ComputeManagementClient)

    def _begin(self, fn: Callable[[], Any], what: str) -> Any:
        """Run a long-running operation to its end."""
        poller = _call(fn, what)
        return _call(lambda: poller.result(timeout=self.ready_timeout), what)

    @staticmethod
    def location(region: str) -> str:
        """``azure:eastus`` / ``eastus`` -> ``eastus``."""
        name = region.removeprefix("azure:").lower()
        if not re.fullmatch(r"[a-z][a-z0-9]{2,40}", name):
            raise UsageError(f"not an Azure region: {region!r}")
        return name

    def nsg_name(self, location: str) -> str:
        return f"skyhop-{location}-nsg"

    def vnet_name(self, location: str) -> str:
        return f"skyhop-{location}-vnet"

    def subnet_id(self, location: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Network/virtualNetworks/{self.vnet_name(location)}"
            f"/subnets/{SUBNET}"
        )

    # ------------------------------------------------------------ network

    def ensure_network(self, region: str) -> None:
        location = self.location(region)
        if location in self._regions_ready:
            return
        if not self._group_ready:
            groups = self._client(ResourceManagementClient).resource_groups
            what = f"resource group {self.resource_group}"
            try:  # a group's location cannot change: only create it when missing
                _call(lambda: groups.get(self.resource_group), what)
            except NotFoundError:
                _call(
                    lambda: groups.create_or_update(
                        self.resource_group,
                        {"location": self.group_location or location, "tags": {"skyhop": "1"}},
                    ),
                    what,
                )
            self._group_ready = True
        rg, nsg_name = self.resource_group, self.nsg_name(location)
        try:
            nsg = _call(lambda: self.network.network_security_groups.get(rg, nsg_name), nsg_name)
        except NotFoundError:
            nsg = self._begin(
                lambda: self.network.network_security_groups.begin_create_or_update(
                    rg,
                    nsg_name,
                    nm.NetworkSecurityGroup(location=location, tags={"skyhop": "1"}),
                ),
                f"create network security group {nsg_name}",
            )
        vnet_name = self.vnet_name(location)
        try:
            _call(lambda: self.network.virtual_networks.get(rg, vnet_name), vnet_name)
        except NotFoundError:
            self._begin(
                lambda: self.network.virtual_networks.begin_create_or_update(
                    rg,
                    vnet_name,
                    nm.VirtualNetwork(
                        location=location,
                        tags={"skyhop": "1"},
                        address_space=nm.AddressSpace(address_prefixes=[VNET_RANGE]),
                        subnets=[
                            nm.Subnet(
                                name=SUBNET,
                                address_prefix=SUBNET_RANGE,
                                network_security_group=nm.NetworkSecurityGroup(id=nsg.id),
                            )
                        ],
                    ),
                ),
                f"create virtual network {vnet_name}",
            )
        self._regions_ready.add(location)

    # ------------------------------------------------------------ NSG rules

    def rule_name(self, job_id: str, suffix: str = "") -> str:
        return startup.cloud_name(job_id + suffix, limit=80)

    def _put_rule(
        self,
        location: str,
        name: str,
        ports: list[int],
        sources: list[str],
        destinations: list[str],
        why: str,
    ) -> None:
        rg, nsg_name = self.resource_group, self.nsg_name(location)
        what = f"rule {name} in {nsg_name}"
        for _ in range(8):  # another job may take the same free priority first
            nsg = _call(lambda: self.network.network_security_groups.get(rg, nsg_name), what)
            rules = list(nsg.security_rules or [])
            mine = next((r for r in rules if r.name == name), None)
            if mine is not None:
                priority = mine.priority
            else:
                taken = {r.priority for r in rules if r.direction == "Inbound"}
                priority = next(
                    (p for p in range(FIRST_PRIORITY, LAST_PRIORITY + 1) if p not in taken), None
                )
                if priority is None:
                    raise GatewayError(f"{what}: no free priority left in {nsg_name}")
            rule = nm.SecurityRule(
                description=f"skyhop: {why}",
                protocol="Tcp",
                access="Allow",
                direction="Inbound",
                priority=priority,
                source_port_range="*",
                source_address_prefixes=sources,
                destination_address_prefixes=destinations,
                destination_port_ranges=[str(p) for p in ports],
            )
            try:
                self._begin(
                    lambda rule=rule: self.network.security_rules.begin_create_or_update(
                        rg, nsg_name, name, rule
                    ),
                    what,
                )
                return
            except _PriorityTaken:
                continue
        raise GatewayError(f"{what}: could not find a free priority (too many concurrent jobs)")

    def _job_private_ips(self, job_id: str) -> dict[str, list[str]]:
        """The job's NICs' private addresses (``/32``), by location."""
        out: dict[str, list[str]] = {}
        nics = _call(
            lambda: list(self.network.network_interfaces.list(self.resource_group)), "list NICs"
        )
        for nic in nics:
            if (nic.tags or {}).get("skyhop-job") != job_id:
                continue
            for ipc in nic.ip_configurations or []:
                if ipc.private_ip_address:
                    address = ipaddress.ip_address(ipc.private_ip_address)
                    out.setdefault(nic.location, []).append(f"{address}/{address.max_prefixlen}")
        return {k: sorted(set(v)) for k, v in out.items()}

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        if not gateways:
            return
        sources = startup.peer_cidrs(gateways)
        ports = startup.data_ports(gateways)
        for location, destinations in sorted(self._job_private_ips(job_id).items()):
            self._put_rule(
                location,
                self.rule_name(job_id),
                ports,
                sources,
                destinations,
                f"job {job_id}: data ports, from the job's gateways only",
            )

    def revoke(self, job_id: str) -> None:
        """Delete the job's rules from every skyhop NSG; every rule is tried even when
        one fails (the first failure is raised after)."""
        names = {self.rule_name(job_id), self.rule_name(job_id, "-ctl")}
        rg = self.resource_group

        def delete(item: tuple[str, str]) -> None:
            nsg_name, rule_name = item
            try:
                self._begin(
                    lambda: self.network.security_rules.begin_delete(rg, nsg_name, rule_name),
                    f"delete rule {rule_name} in {nsg_name}",
                )
            except NotFoundError:
                pass

        found = [(r["nsg"], r["name"]) for r in self._rules() if r["name"] in names]
        each(found, delete, f"closing the firewall of job {job_id}")

    def _rules(self) -> list[dict[str, Any]]:
        """Every rule of the skyhop NSGs: ``nsg``, ``name``, ``job`` (from its
        description, '' when it names none), ``ports`` and ``sources``."""
        rg = self.resource_group
        try:
            groups = _call(lambda: list(self.network.network_security_groups.list(rg)), "list NSGs")
        except NotFoundError:
            return []
        out = []
        for nsg in groups:
            if not (nsg.name or "").startswith("skyhop-"):
                continue
            for rule in nsg.security_rules or []:
                found = _RULE_JOB.match(rule.description or "")
                out.append(
                    {
                        "nsg": nsg.name,
                        "name": rule.name,
                        "job": found.group(1) if found else "",
                        "ports": list(rule.destination_port_ranges or []),
                        "sources": list(rule.source_address_prefixes or []),
                    }
                )
        return out

    def rules(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The skyhop NSG rules of one job (or of every job)."""
        return [r for r in self._rules() if r["job"] and (job_id is None or r["job"] == job_id)]

    def firewall_jobs(self) -> set[str]:
        """The jobs that still have NSG rules (for the reaper)."""
        return {r["job"] for r in self.rules()}

    def check_credentials(self) -> str:
        """That a Resource Manager token can be had (the credential given, else
        ``DefaultAzureCredential``): an AccessError before anything is launched."""
        if self._credential is None:
            from azure.identity import DefaultAzureCredential

            self._credential = DefaultAzureCredential()
        quiet = logging.getLogger("azure.identity")  # it logs every credential it tried
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            self._credential.get_token("https://management.azure.com/.default")
        except aexc.ClientAuthenticationError as exc:
            raise AccessError(
                f"checking the Azure credentials: {first_line(exc, limit=200)}"
            ) from None
        finally:
            quiet.setLevel(level)
        return f"subscription {self.subscription_id}"

    # ------------------------------------------------------------ VMs

    def vm_name(self, gateway_id: str) -> str:
        return startup.cloud_name(gateway_id, prefix="skyhop-gw-", limit=64)

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        if not configs:
            return []
        prepared = [startup.vm_config(cfg) for cfg in configs]
        locations = [self.location(cfg.region) for cfg in prepared]
        for location in dict.fromkeys(locations):
            self.ensure_network(location)
        jobs = sorted({cfg.job_id for cfg in prepared})
        package = self.package()
        with Cleanup("launching Azure gateways") as undo:
            for job_id in jobs:
                undo.add(self.terminate, job_id)
                undo.add(self.revoke, job_id)  # newest first: rules, then VMs
            workers = min(16, len(prepared))
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(self._create_vm, prepared, locations, [package] * len(prepared)))
            if self.control_cidrs:
                for job_id in jobs:
                    cfgs = [c for c in prepared if c.job_id == job_id]
                    for location, destinations in sorted(self._job_private_ips(job_id).items()):
                        self._put_rule(
                            location,
                            self.rule_name(job_id, "-ctl"),
                            startup.control_ports(cfgs),
                            self.control_cidrs,
                            destinations,
                            f"job {job_id}: control API, from the control plane",
                        )
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return list(pool.map(self._await_ready, prepared))

    def _tags(self, cfg: GatewayConfig) -> dict[str, str]:
        return {
            "skyhop-job": cfg.job_id,
            "skyhop-gateway": cfg.gateway_id,
            "skyhop-role": cfg.role.value,
            "skyhop-region": cfg.region,
            "skyhop-ports": f"{cfg.data_port},{cfg.control_port}",
        }

    def package(self) -> GatewayPackage | str:
        """What this launch's VMs install: ``package_spec`` when given, else the wheel
        (published to ``wheel_account`` the first time) under a fresh SAS URL."""
        if self.package_spec is not None:
            return self.package_spec
        if self.wheel is None:
            account = self.wheel_account or _connection_string_account()
            if not account:
                raise UsageError(
                    "no storage account for the gateways' skyhop wheel: set wheel_account "
                    "(or AZURE_STORAGE_CONNECTION_STRING), or give wheel or package_spec"
                )
            self.wheel = publish_wheel(account)
        return signed(self.wheel)

    def custom_data(self, cfg: GatewayConfig, package: GatewayPackage | str | None = None) -> str:
        """The boot script with the configuration inline, base64 as Azure wants it."""
        write = (
            f"cat > \"$CONFIG\" <<'SKYHOP_CONFIG_EOF'\n{cfg.model_dump_json()}\nSKYHOP_CONFIG_EOF"
        )
        script = startup.startup_script(write, package or self.package())
        return base64.b64encode(script.encode()).decode()

    def _create_vm(self, cfg: GatewayConfig, location: str, package: GatewayPackage | str) -> None:
        rg, name = self.resource_group, self.vm_name(cfg.gateway_id)
        tags = self._tags(cfg)
        pip = self._begin(
            lambda: self.network.public_ip_addresses.begin_create_or_update(
                rg,
                f"{name}-ip",
                nm.PublicIPAddress(
                    location=location,
                    tags=tags,
                    sku=nm.PublicIPAddressSku(name="Standard"),
                    public_ip_allocation_method="Static",
                ),
            ),
            f"create public IP of {name}",
        )
        nic = self._begin(
            lambda: self.network.network_interfaces.begin_create_or_update(
                rg,
                f"{name}-nic",
                nm.NetworkInterface(
                    location=location,
                    tags=tags,
                    ip_configurations=[
                        nm.NetworkInterfaceIPConfiguration(
                            name="primary",
                            subnet=nm.Subnet(id=self.subnet_id(location)),
                            public_ip_address=nm.PublicIPAddress(id=pip.id),
                        )
                    ],
                ),
            ),
            f"create NIC of {name}",
        )
        vm = cm.VirtualMachine(
            location=location,
            tags=tags,
            hardware_profile=cm.HardwareProfile(vm_size=self.vm_size),
            storage_profile=cm.StorageProfile(
                image_reference=cm.ImageReference(**self.image),
                os_disk=cm.OSDisk(
                    create_option="FromImage",
                    delete_option="Delete",
                    managed_disk=cm.ManagedDiskParameters(storage_account_type="Premium_LRS"),
                ),
            ),
            os_profile=cm.OSProfile(
                computer_name=name,
                admin_username=self.admin_username,
                custom_data=self.custom_data(cfg, package),
                linux_configuration=cm.LinuxConfiguration(
                    disable_password_authentication=True,
                    ssh=cm.SshConfiguration(
                        public_keys=[
                            cm.SshPublicKey(
                                path=f"/home/{self.admin_username}/.ssh/authorized_keys",
                                key_data=_throwaway_ssh_key(),
                            )
                        ]
                    ),
                ),
            ),
            network_profile=cm.NetworkProfile(
                network_interfaces=[
                    cm.NetworkInterfaceReference(id=nic.id, primary=True, delete_option="Delete")
                ]
            ),
        )
        identity = self.identities.get(cfg.role.value)
        if identity:
            vm.identity = cm.VirtualMachineIdentity(
                type="UserAssigned", user_assigned_identities={identity: {}}
            )
        self._begin(
            lambda: self.compute.virtual_machines.begin_create_or_update(rg, name, vm),
            f"create VM {name}",
        )

    def _public_ip(self, vm_name: str) -> str | None:
        try:
            pip = _call(
                lambda: self.network.public_ip_addresses.get(self.resource_group, f"{vm_name}-ip"),
                f"public IP of {vm_name}",
            )
        except NotFoundError:
            return None
        return pip.ip_address

    def _await_ready(self, cfg: GatewayConfig) -> GatewaySpec:
        name = self.vm_name(cfg.gateway_id)
        deadline = time.monotonic() + self.ready_timeout
        spec: GatewaySpec | None = None
        while True:
            if spec is None:
                host = self._public_ip(name)
                if host:
                    spec = GatewaySpec(
                        gateway_id=cfg.gateway_id,
                        job_id=cfg.job_id,
                        region=cfg.region,
                        role=cfg.role,
                        host=host,
                        data_port=cfg.data_port,
                        control_port=cfg.control_port,
                        instance_id=name,
                        next_hops=[p.gateway_id for p in cfg.next_hops],
                    )
            if spec is not None and self.ready_probe(spec, cfg):
                return spec
            if time.monotonic() >= deadline:
                why = "its control API does not answer" if spec else "it has no public address"
                raise GatewayError(
                    f"gateway {cfg.gateway_id} not ready within {self.ready_timeout:g} s: {why}"
                )
            time.sleep(self.poll_interval)

    def _vms(self, job_id: str | None) -> list[Any]:
        try:
            vms = _call(
                lambda: list(self.compute.virtual_machines.list(self.resource_group)), "list VMs"
            )
        except NotFoundError:
            return []
        out = []
        for vm in vms:
            tags = vm.tags or {}
            if "skyhop-gateway" not in tags:
                continue
            if job_id is not None and tags.get("skyhop-job") != job_id:
                continue
            out.append(vm)
        return out

    def terminate(self, job_id: str) -> None:
        rg = self.resource_group

        def delete(kind: str, ops: Any, name: str) -> None:
            try:
                self._begin(lambda: ops.begin_delete(rg, name), f"delete {kind} {name}")
            except NotFoundError:
                pass

        vms = self._vms(job_id)
        if vms:
            with ThreadPoolExecutor(max_workers=min(16, len(vms))) as pool:
                list(pool.map(lambda vm: delete("VM", self.compute.virtual_machines, vm.name), vms))
        # NICs and public IPs go with their VMs; these catch any a failed launch left
        for kind, ops in (
            ("NIC", self.network.network_interfaces),
            ("public IP", self.network.public_ip_addresses),
        ):
            try:
                items = _call(lambda ops=ops: list(ops.list(rg)), f"list {kind}s")
            except NotFoundError:
                continue
            for item in items:
                if (item.tags or {}).get("skyhop-job") == job_id:
                    delete(kind, ops, item.name)

    def running(self, job_id: str) -> set[str]:
        """Gateway ids of the job whose VMs are starting or running (a gateway that
        exits cleanly powers its VM off: stopped, until deleted)."""
        found = set()
        for vm in self._vms(job_id):
            try:
                view = _call(
                    lambda vm=vm: self.compute.virtual_machines.instance_view(
                        self.resource_group, vm.name
                    ),
                    f"instance view of {vm.name}",
                )
            except NotFoundError:
                continue
            codes = [s.code or "" for s in view.statuses or []]
            power = next((c for c in codes if c.startswith("PowerState/")), "PowerState/running")
            if power in ("PowerState/starting", "PowerState/running"):
                found.add(vm.tags["skyhop-gateway"])
        return found

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        specs = []
        for vm in self._vms(job_id):
            tags = vm.tags
            data_port, _, control_port = tags.get("skyhop-ports", "0,0").partition(",")
            specs.append(
                GatewaySpec(
                    gateway_id=tags["skyhop-gateway"],
                    job_id=tags.get("skyhop-job", ""),
                    region=tags.get("skyhop-region", f"azure:{vm.location}"),
                    role=GatewayRole(tags.get("skyhop-role", "relay")),
                    host=self._public_ip(vm.name) or "",
                    data_port=int(data_port or 0),
                    control_port=int(control_port or 0),
                    instance_id=vm.name,
                )
            )
        return sorted(specs, key=lambda s: s.gateway_id)


def _connection_string_account() -> str | None:
    conn = os.environ.get(kit.CONNECTION_STRING_ENV)
    return kit.connection_string_account(conn) if conn else None


def _throwaway_ssh_key() -> str:
    """An RSA public key in OpenSSH form whose private half is dropped at once."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


class _NoCredential:
    """A token credential for a Resource Manager endpoint that checks none."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("anonymous", int(time.time()) + 3600)


class _PriorityTaken(GatewayError):
    """Internal: another rule in the NSG has this priority."""


def _call(fn: Callable[[], T], what: str) -> T:
    return translated(fn, what, _classify)


def _classify(exc: Exception, what: str) -> SkyhopError:
    code = getattr(getattr(exc, "error", None), "code", None) or ""
    detail = first_line(getattr(exc, "message", None) or exc)
    if isinstance(exc, aexc.ResourceNotFoundError):
        return NotFoundError(f"{what}: not found ({code or detail})")
    if isinstance(exc, aexc.ClientAuthenticationError):
        return AccessError(f"{what}: access denied ({detail})")
    if isinstance(exc, aexc.HttpResponseError):
        status = exc.status_code or 0
        if status == 404:
            return NotFoundError(f"{what}: not found ({code or detail})")
        if status in (401, 403):
            return AccessError(f"{what}: access denied ({code or detail})")
        if "priority" in detail.lower() or code in (
            "SecurityRuleConflict",
            "SecurityRulesWithSamePriority",
        ):
            return _PriorityTaken(f"{what}: priority taken")
        return GatewayError(f"{what}: {code or status} {detail}".strip())
    if isinstance(exc, aexc.ServiceRequestError | aexc.ServiceResponseError):
        return GatewayError(f"{what}: connection failed ({detail})")
    return GatewayError(f"{what}: {detail or type(exc).__name__}")
