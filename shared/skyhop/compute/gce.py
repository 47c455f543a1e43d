"""Gateways on Google Compute Engine (google-cloud-compute).

Network: one global VPC ``skyhop`` (custom subnet mode, global routing) with a
subnet ``skyhop-REGION`` per region, created on first use. A new VPC admits no
ingress, so a gateway is reachable only through the rules below.

Per job, firewall rules at priority 1000 target the instances tagged with the
job (``skyhop-JOB``):

* ``skyhop-JOB`` (made by :meth:`authorize`): TCP on the gateways' data ports,
  only from the job's gateway addresses (``/32`` each);
* ``skyhop-JOB-ctl`` (made by :meth:`launch` when ``control_cidrs`` is given):
  TCP on the control ports from the control plane's ranges, which must reach
  the gateways' control API (mutual TLS and a bearer token guard it too).

:meth:`revoke` deletes both (each even when the other fails); other jobs' rules
stay. A failed launch deletes the control rule it made. :meth:`rules` and
:meth:`firewall_jobs` find rules by the job their description names, so the
reaper removes what a failed revoke left. ``control_cidrs`` are a /16 at most.

Instances carry the labels ``skyhop-job``, ``skyhop-gateway`` and
``skyhop-role``, the tags ``skyhop`` and ``skyhop-JOB``, and two metadata
attributes: ``startup-script`` (installs skyhop and starts ``python -m
gateway_vm``) and ``skyhop-gateway-config`` (the GatewayConfig, with listen host
0.0.0.0 and fixed ports). That configuration is a boot configuration
(:func:`skyhop.enrolment.boot_config`): the job's CA certificate, the gateway's
addresses and ports and a one-time enrolment token, but no private key, control
token, event key or data key; the gateway receives those over mutual TLS once it
is up (``enrols``), so whoever may read the project's instance metadata learns
no secret of the job.

What the VMs install: skyhop's wheel, by its SHA-256 (:mod:`skyhop.compute.package`).
``wheel`` names a deployment's copy of it in GCS
(:class:`~skyhop.compute.gce_wheel.GCSWheel`: ``skyhop deploy gcp`` uploads it);
given none, the first launch publishes this control plane's own wheel to
``wheel_bucket`` (default ``skyhop-gateways-PROJECT``). Each launch hands its VMs
a fresh V4 signed URL of that one object when the credentials can sign, else its
download URL, which the VMs fetch with their own service account's token
(:mod:`skyhop.compute.gce_wheel`). ``package_spec`` overrides both: a
:class:`~skyhop.compute.package.GatewayPackage` already signed, or, as an explicit
opt-in, a requirement pinned to one version (``skyhop[gcp]==VERSION``, from the
public index, pinned by version and not by hash).

:meth:`launch` returns once every instance is RUNNING with an external address
and its control API answers (``ready_probe``; tests replace it).

Each gateway role runs as its own service account (``service_accounts``: role ->
email; two roles may not share one), so a relay's VM holds no grant a source's or
destination's has: what each account may do is the project's IAM (not made here).

Credentials are Application Default Credentials unless ``credentials`` is
given (``"anonymous"`` for an endpoint that wants none); ``api_endpoint`` points
the client elsewhere (tests use a local fake of the Compute REST API, since no
emulator exists). ``ready_via_events=False`` (the CLI's ``--gateways cloud``)
needs ``control_cidrs``: the control plane then calls the gateways' control API
itself instead of waiting for events.
"""

from __future__ import annotations

import ipaddress
import os
import re
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import google.auth
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import compute_v1

from skyhop.cleanup import Cleanup, each
from skyhop.clouds import gcp
from skyhop.compute import gce_wheel, startup
from skyhop.compute.gce_wheel import GCSWheel
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

DEFAULT_IMAGE = "projects/debian-cloud/global/images/family/debian-12"
DEFAULT_MACHINE_TYPE = "n2-standard-8"
RULE_PRIORITY = 1000
CONFIG_KEY = "skyhop-gateway-config"

T = TypeVar("T")
_RULE_JOB = re.compile(r"skyhop job (\S+): ")  # what _put_rule writes in a rule's description
ReadyProbe = Callable[[GatewaySpec, GatewayConfig], bool]


class GCEComputeProvider:
    """The ComputeProvider for Google Compute Engine."""

    name = "gcp"
    #: a VM: launched over HTTPS control, it gets a boot configuration and enrols
    #: (its secrets come over mutual TLS, never in user data or metadata)
    enrols = True
    #: True (a deployed control plane): gateway_ready events and control queues (see
    #: compute.base); False (the CLI's ``--gateways cloud``): the control port opens to
    #: ``control_cidrs`` and ``launch`` returns once each gateway's control API answers
    ready_via_events: bool = True

    def __init__(
        self,
        project: str | None = None,
        *,
        network: str = "skyhop",
        machine_type: str = DEFAULT_MACHINE_TYPE,
        image: str = DEFAULT_IMAGE,
        disk_gb: int = 20,
        package_spec: GatewayPackage | Mapping[str, object] | str | None = None,
        wheel: GCSWheel | Mapping[str, object] | None = None,
        wheel_bucket: str | None = None,
        control_cidrs: list[str] | None = None,
        service_accounts: Mapping[str, str] | None = None,
        credentials: Any = None,
        api_endpoint: str | None = None,
        ready_timeout: float = 900.0,
        poll_interval: float = 5.0,
        ready_probe: ReadyProbe | None = None,
        ready_via_events: bool = True,
    ) -> None:
        self.ready_via_events = ready_via_events
        self.project = (
            project or os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCLOUD_PROJECT")
        )
        if not self.project:
            raise UsageError("no Google Cloud project: pass project= or set GOOGLE_CLOUD_PROJECT")
        self.network = network
        self.machine_type = machine_type
        self.image = image
        self.disk_gb = disk_gb
        #: what the VMs install when given: a signed GatewayPackage, or (opt-in) a
        #: version pinned; else the wheel below, signed for each launch
        self.package_spec = (
            None if package_spec is None else startup.gateway_package(package_spec, "gcp")
        )
        try:
            #: skyhop's wheel in GCS (a deployment's), else published at the first launch
            self.wheel = None if wheel is None else GCSWheel.model_validate(dict(wheel))
        except ValueError as exc:
            raise UsageError(f"wheel: {first_line(exc)}") from None
        self.wheel_bucket = wheel_bucket or gce_wheel.bucket_name(self.project)
        if control_cidrs is None:
            raw = os.environ.get("SKYHOP_CONTROL_CIDRS", "")
            control_cidrs = [c for c in raw.split(",") if c.strip()]
        self.control_cidrs = startup.check_cidrs(control_cidrs)
        if not ready_via_events and not self.control_cidrs:
            raise UsageError(
                "gateways controlled over their HTTPS API need the control plane's address "
                "(control_cidrs) to open their control port to"
            )
        #: gateway role -> the service account its VMs run as (each role its own)
        self.service_accounts = startup.own_identities("service_accounts", service_accounts)
        self.ready_timeout = ready_timeout
        self.poll_interval = poll_interval
        self.ready_probe = ready_probe or startup.control_api_probe
        self._client_kwargs: dict[str, Any] = {}
        if credentials == "anonymous":  # an endpoint that asks for none (a local fake)
            credentials = AnonymousCredentials()
        if credentials is not None:
            self._client_kwargs["credentials"] = credentials
        if api_endpoint is not None:
            self._client_kwargs["client_options"] = {"api_endpoint": api_endpoint}
        self._clients: dict[str, Any] = {}
        self._storage: Any = None
        self._networks_ready: set[str] = set()
        self._zones: dict[str, str] = {}

    # ------------------------------------------------------------ plumbing

    def _client(self, kind: str) -> Any:
        if kind not in self._clients:
            cls = getattr(compute_v1, kind)
            self._clients[kind] = _call(lambda: cls(**self._client_kwargs), "connect to GCE")
        return self._clients[kind]

    @property
    def network_url(self) -> str:
        return f"projects/{self.project}/global/networks/{self.network}"

    def _wait(self, op: Any, what: str) -> None:
        _call(lambda: op.result(timeout=self.ready_timeout), what)
        code = getattr(op, "error_code", None)
        message = getattr(op, "error_message", None)
        if code or message:
            if code == 409:
                raise _Conflict(f"{what}: already exists")
            if code == 404:
                raise NotFoundError(f"{what}: not found ({message})")
            raise GatewayError(f"{what}: {code} {message}".strip())

    def region_zone(self, region: str) -> tuple[str, str]:
        """``gcp:us-east1`` / ``us-east1`` / ``us-east1-b`` -> (region, zone)."""
        name = region.removeprefix("gcp:")
        parts = name.split("-")
        if len(parts) == 3 and len(parts[2]) == 1 and parts[2].isalpha():
            return "-".join(parts[:2]), name
        if len(parts) != 2 or not parts[1][-1:].isdigit():
            raise UsageError(f"not a GCP region or zone: {region!r}")
        if name not in self._zones:
            try:
                info = _call(
                    lambda: self._client("RegionsClient").get(project=self.project, region=name),
                    f"region {name}",
                )
            except NotFoundError:
                raise UsageError(f"unknown GCP region {name!r}") from None
            zones = sorted(url.rsplit("/", 1)[-1] for url in info.zones)
            if not zones:
                raise GatewayError(f"region {name} has no zones")
            self._zones[name] = zones[0]
        return name, self._zones[name]

    # ------------------------------------------------------------ network

    def ensure_network(self, region: str) -> None:
        region_name, _ = self.region_zone(region)
        if region_name in self._networks_ready:
            return
        networks = self._client("NetworksClient")
        try:
            _call(
                lambda: networks.get(project=self.project, network=self.network),
                f"network {self.network}",
            )
        except NotFoundError:
            body = compute_v1.Network(
                name=self.network,
                auto_create_subnetworks=False,
                routing_config=compute_v1.NetworkRoutingConfig(routing_mode="GLOBAL"),
                description="skyhop gateways",
            )
            self._insert(
                lambda: networks.insert(project=self.project, network_resource=body),
                f"create network {self.network}",
            )
        subnets = self._client("SubnetworksClient")
        subnet = self.subnet_name(region_name)
        try:
            _call(
                lambda: subnets.get(project=self.project, region=region_name, subnetwork=subnet),
                f"subnet {subnet}",
            )
        except NotFoundError:
            body = compute_v1.Subnetwork(
                name=subnet,
                network=self.network_url,
                region=region_name,
                ip_cidr_range=self._free_range(region_name),
                private_ip_google_access=True,
                description="skyhop gateways",
            )
            self._insert(
                lambda: subnets.insert(
                    project=self.project, region=region_name, subnetwork_resource=body
                ),
                f"create subnet {subnet}",
            )
        self._networks_ready.add(region_name)

    def subnet_name(self, region: str) -> str:
        return f"{self.network}-{region}"

    def _free_range(self, region: str) -> str:
        """A /16 in 10.0.0.0/8 that no subnet of the network uses; stable per region."""
        used = []
        pager = _call(
            lambda: self._client("SubnetworksClient").aggregated_list(
                request={"project": self.project}
            ),
            "list subnets",
        )
        for _, scoped in _call(lambda: list(pager), "list subnets"):
            for s in scoped.subnetworks:
                if s.network.endswith(f"/networks/{self.network}") and s.ip_cidr_range:
                    used.append(ipaddress.ip_network(s.ip_cidr_range))
        start = zlib.crc32(region.encode()) % 256
        for i in range(256):
            candidate = ipaddress.ip_network(f"10.{(start + i) % 256}.0.0/16")
            if not any(candidate.overlaps(u) for u in used):
                return str(candidate)
        raise GatewayError(f"no free /16 left in 10.0.0.0/8 for a subnet in {region}")

    def _insert(self, fn: Callable[[], Any], what: str) -> None:
        """Insert a resource; one that already exists (a concurrent creator) is fine."""
        try:
            op = _call(fn, what)
        except _Conflict:
            return
        try:
            self._wait(op, what)
        except _Conflict:
            return

    # ------------------------------------------------------------ firewall

    def rule_name(self, job_id: str, suffix: str = "") -> str:
        return startup.cloud_name(job_id + suffix)

    def job_tag(self, job_id: str) -> str:
        return startup.cloud_name(job_id)

    def _put_rule(
        self, job_id: str, name: str, ports: list[int], sources: list[str], why: str
    ) -> None:
        body = compute_v1.Firewall(
            name=name,
            network=self.network_url,
            direction="INGRESS",
            priority=RULE_PRIORITY,
            source_ranges=sources,
            target_tags=[self.job_tag(job_id)],
            allowed=[compute_v1.Allowed(I_p_protocol="tcp", ports=[str(p) for p in ports])],
            description=f"skyhop job {job_id}: {why}",
        )
        firewalls = self._client("FirewallsClient")
        what = f"firewall rule {name}"
        try:
            op = _call(lambda: firewalls.insert(project=self.project, firewall_resource=body), what)
        except _Conflict:
            op = _call(
                lambda: firewalls.patch(
                    project=self.project, firewall=name, firewall_resource=body
                ),
                what,
            )
        self._wait(op, what)

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        if not gateways:
            return
        self._put_rule(
            job_id,
            self.rule_name(job_id),
            startup.data_ports(gateways),
            startup.peer_cidrs(gateways),
            "data ports, from the job's gateways only",
        )

    def revoke(self, job_id: str) -> None:
        """Delete the job's data and control rules; both are tried even when one
        fails (the first failure is raised after)."""
        each(
            [self.rule_name(job_id), self.rule_name(job_id, "-ctl")],
            self._delete_rule,
            f"closing the firewall of job {job_id}",
        )

    def _delete_rule(self, name: str) -> None:
        firewalls = self._client("FirewallsClient")
        what = f"delete firewall rule {name}"
        try:
            op = _call(lambda: firewalls.delete(project=self.project, firewall=name), what)
            self._wait(op, what)
        except NotFoundError:
            pass

    def rules(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The skyhop firewall rules of the network (of one job, or of every job):
        ``name``, ``job`` (from the rule's description), ``ports`` and ``sources``."""
        pager = _call(
            lambda: self._client("FirewallsClient").list(project=self.project),
            "list firewall rules",
        )
        out = []
        for rule in _call(lambda: list(pager), "list firewall rules"):
            if not rule.network.endswith(f"/networks/{self.network}"):
                continue
            found = _RULE_JOB.match(rule.description or "")
            if found is None or (job_id is not None and found.group(1) != job_id):
                continue
            out.append(
                {
                    "name": rule.name,
                    "job": found.group(1),
                    "ports": [p for a in rule.allowed for p in a.ports],
                    "sources": list(rule.source_ranges),
                }
            )
        return sorted(out, key=lambda r: r["name"])

    def firewall_jobs(self) -> set[str]:
        """The jobs that still have firewall rules (for the reaper)."""
        return {r["job"] for r in self.rules()}

    def check_credentials(self) -> str:
        """Who launches: the credentials given, else Application Default Credentials
        (an AccessError naming what is missing before anything is launched)."""
        if "credentials" in self._client_kwargs:
            return f"the given credentials (project {self.project})"
        try:
            credentials, _ = google.auth.default()
        except DefaultCredentialsError as exc:
            raise AccessError(
                f"checking the Google Cloud credentials: {first_line(exc, limit=200)}"
            ) from None
        who = getattr(credentials, "service_account_email", None) or "application default"
        return f"{who} (project {self.project})"

    # ------------------------------------------------------------ instances

    def instance_name(self, gateway_id: str) -> str:
        return startup.cloud_name(gateway_id, prefix="skyhop-gw-")

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        if not configs:
            return []
        prepared = [startup.vm_config(cfg) for cfg in configs]
        placements = [self.region_zone(cfg.region) for cfg in prepared]
        for region_name, _ in dict.fromkeys(placements):
            self.ensure_network(region_name)
        package = self.package(placements[0][0])
        created: list[tuple[str, str]] = []  # (zone, name), deleted together on failure
        with Cleanup("launching GCE gateways") as undo:
            undo.add(self._delete_instances, created)
            jobs = sorted({cfg.job_id for cfg in prepared})
            if self.control_cidrs:
                for job_id in jobs:
                    cfgs = [c for c in prepared if c.job_id == job_id]
                    name = self.rule_name(job_id, "-ctl")
                    undo.add(self._delete_rule, name)  # a failed launch leaves no rule
                    self._put_rule(
                        job_id,
                        name,
                        startup.control_ports(cfgs),
                        self.control_cidrs,
                        "control API, from the control plane",
                    )
            instances = self._client("InstancesClient")
            ops = []
            for cfg, (region_name, zone) in zip(prepared, placements, strict=True):
                body = self._instance(cfg, region_name, zone, package)
                what = f"create instance {body.name}"
                ops.append(
                    (
                        _call(
                            lambda body=body, zone=zone: instances.insert(
                                project=self.project, zone=zone, instance_resource=body
                            ),
                            what,
                        ),
                        what,
                    )
                )
                created.append((zone, body.name))
            for op, what in ops:
                self._wait(op, what)
            with ThreadPoolExecutor(max_workers=min(16, len(prepared))) as pool:
                return list(
                    pool.map(
                        lambda args: self._await_ready(*args),
                        [(cfg, zone) for cfg, (_, zone) in zip(prepared, placements, strict=True)],
                    )
                )

    def package(self, region: str) -> GatewayPackage | str:
        """What this launch's VMs install: ``package_spec`` when given, else the wheel
        (published to ``wheel_bucket``, in ``region``, the first time) under a fresh
        signed URL, or fetched with the VMs' own tokens when nothing here can sign."""
        if self.package_spec is not None:
            return self.package_spec
        given = self._client_kwargs.get("credentials")
        if isinstance(given, AnonymousCredentials):
            given = None  # an endpoint that wants none: sign (if at all) as the defaults
        signer = gce_wheel.signing_credentials(given)
        readers = sorted(set(self.service_accounts.values()))
        if signer is None and not readers:
            raise UsageError(
                "the gateways' skyhop wheel: these credentials cannot sign a URL of it (a "
                "user's login cannot), and the gateways run as no service account to fetch "
                "it with: give a service-account key (GOOGLE_APPLICATION_CREDENTIALS) or "
                "service_accounts (or wheel, or package_spec)"
            )
        if self._storage is None:
            self._storage = gce_wheel.client(self.project, given)
        if self.wheel is None:
            self.wheel = gce_wheel.publish_wheel(
                self._storage,
                self.wheel_bucket,
                location=region,
                # whoever may have to fetch it with their own token may read it
                readers=readers if signer is None or gce_wheel.iam_signer(signer) else (),
            )
        return gce_wheel.signed(self.wheel, self._storage, signer=signer, token_fetch=bool(readers))

    def _instance(
        self, cfg: GatewayConfig, region: str, zone: str, package: GatewayPackage | str
    ) -> compute_v1.Instance:
        fetch = (
            "curl -fsS -H 'Metadata-Flavor: Google' -o \"$CONFIG\" "
            "'http://metadata.google.internal/computeMetadata/v1/instance/attributes/"
            f"{CONFIG_KEY}'"
        )
        script = startup.startup_script(fetch, package)
        labels = {
            "skyhop-job": startup.cloud_name(cfg.job_id, prefix=""),
            "skyhop-gateway": startup.cloud_name(cfg.gateway_id, prefix=""),
            "skyhop-role": cfg.role.value,
        }
        items = [
            compute_v1.Items(key="startup-script", value=script),
            compute_v1.Items(key=CONFIG_KEY, value=cfg.model_dump_json()),
            compute_v1.Items(key="skyhop-job-id", value=cfg.job_id),
            compute_v1.Items(key="skyhop-gateway-id", value=cfg.gateway_id),
            compute_v1.Items(key="skyhop-region", value=cfg.region),
            compute_v1.Items(key="skyhop-ports", value=f"{cfg.data_port},{cfg.control_port}"),
        ]
        body = compute_v1.Instance(
            name=self.instance_name(cfg.gateway_id),
            machine_type=f"zones/{zone}/machineTypes/{self.machine_type}",
            labels=labels,
            tags=compute_v1.Tags(items=["skyhop", self.job_tag(cfg.job_id)]),
            metadata=compute_v1.Metadata(items=items),
            disks=[
                compute_v1.AttachedDisk(
                    boot=True,
                    auto_delete=True,
                    initialize_params=compute_v1.AttachedDiskInitializeParams(
                        source_image=self.image, disk_size_gb=self.disk_gb
                    ),
                )
            ],
            network_interfaces=[
                compute_v1.NetworkInterface(
                    subnetwork=(
                        f"projects/{self.project}/regions/{region}/subnetworks/"
                        f"{self.subnet_name(region)}"
                    ),
                    access_configs=[
                        compute_v1.AccessConfig(
                            name="external-nat", type_="ONE_TO_ONE_NAT", network_tier="PREMIUM"
                        )
                    ],
                )
            ],
            description=f"skyhop gateway {cfg.gateway_id} of job {cfg.job_id}",
        )
        account = self.service_accounts.get(cfg.role.value)
        if account:
            body.service_accounts = [
                compute_v1.ServiceAccount(
                    email=account,
                    scopes=["https://www.googleapis.com/auth/cloud-platform"],
                )
            ]
        return body

    def _await_ready(self, cfg: GatewayConfig, zone: str) -> GatewaySpec:
        instances = self._client("InstancesClient")
        name = self.instance_name(cfg.gateway_id)
        deadline = time.monotonic() + self.ready_timeout
        spec: GatewaySpec | None = None
        while True:
            if spec is None:
                inst = _call(
                    lambda: instances.get(project=self.project, zone=zone, instance=name),
                    f"instance {name}",
                )
                if inst.status in ("TERMINATED", "STOPPING", "SUSPENDED"):
                    raise GatewayError(
                        f"gateway {cfg.gateway_id}: instance {name} is {inst.status}"
                    )
                host = _nat_ip(inst)
                if inst.status == "RUNNING" and host:
                    spec = GatewaySpec(
                        gateway_id=cfg.gateway_id,
                        job_id=cfg.job_id,
                        region=cfg.region,
                        role=cfg.role,
                        host=host,
                        data_port=cfg.data_port,
                        control_port=cfg.control_port,
                        instance_id=f"{zone}/{name}",
                        next_hops=[p.gateway_id for p in cfg.next_hops],
                    )
            if spec is not None and self.ready_probe(spec, cfg):
                return spec
            if time.monotonic() >= deadline:
                why = "its control API does not answer" if spec else "it has no address"
                raise GatewayError(
                    f"gateway {cfg.gateway_id} not ready within {self.ready_timeout:g} s: {why}"
                )
            time.sleep(self.poll_interval)

    def _instances(self, job_id: str | None) -> Iterable[tuple[str, Any]]:
        flt = (
            f'labels.skyhop-job = "{startup.cloud_name(job_id, prefix="")}"'
            if job_id
            else "labels.skyhop-job:*"
        )
        pager = _call(
            lambda: self._client("InstancesClient").aggregated_list(
                request={"project": self.project, "filter": flt}
            ),
            "list instances",
        )
        for scope, scoped in _call(lambda: list(pager), "list instances"):
            zone = scope.rsplit("/", 1)[-1]
            for inst in scoped.instances:
                meta = {item.key: item.value for item in inst.metadata.items}
                if "skyhop-gateway-id" not in meta:
                    continue
                if job_id is not None and meta.get("skyhop-job-id") != job_id:
                    continue
                yield zone, inst

    def terminate(self, job_id: str) -> None:
        self._delete_instances([(zone, inst.name) for zone, inst in self._instances(job_id)])

    def running(self, job_id: str) -> set[str]:
        """Gateway ids of the job whose instances are starting or running (a gateway
        that exits cleanly powers its VM off: TERMINATED, until deleted)."""
        found = set()
        for _, inst in self._instances(job_id):
            if inst.status in ("PROVISIONING", "STAGING", "RUNNING"):
                meta = {item.key: item.value for item in inst.metadata.items}
                found.add(meta["skyhop-gateway-id"])
        return found

    def _delete_instances(self, names: list[tuple[str, str]]) -> None:
        instances = self._client("InstancesClient")
        ops = []
        for zone, name in names:
            what = f"delete instance {name}"
            try:
                ops.append(
                    (
                        _call(
                            lambda zone=zone, name=name: instances.delete(
                                project=self.project, zone=zone, instance=name
                            ),
                            what,
                        ),
                        what,
                    )
                )
            except NotFoundError:
                pass
        for op, what in ops:
            try:
                self._wait(op, what)
            except NotFoundError:
                pass

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        specs = []
        for zone, inst in self._instances(job_id):
            meta = {item.key: item.value for item in inst.metadata.items}
            data_port, _, control_port = meta.get("skyhop-ports", "0,0").partition(",")
            specs.append(
                GatewaySpec(
                    gateway_id=meta["skyhop-gateway-id"],
                    job_id=meta.get("skyhop-job-id", ""),
                    region=meta.get("skyhop-region", f"gcp:{zone[:-2]}"),
                    role=GatewayRole(inst.labels.get("skyhop-role", "relay")),
                    host=_nat_ip(inst) or "",
                    data_port=int(data_port or 0),
                    control_port=int(control_port or 0),
                    instance_id=f"{zone}/{inst.name}",
                )
            )
        return sorted(specs, key=lambda s: s.gateway_id)


def _nat_ip(inst: Any) -> str | None:
    for nic in inst.network_interfaces:
        for access in nic.access_configs:
            if access.nat_i_p:
                return access.nat_i_p
    return None


class _Conflict(GatewayError):
    """Internal: the resource already exists."""


def _call(fn: Callable[[], T], what: str) -> T:
    return translated(fn, what, _classify)


def _classify(exc: Exception, what: str) -> SkyhopError:
    detail = gcp.short(exc)
    if isinstance(exc, gexc.Conflict):
        return _Conflict(f"{what}: already exists")
    found = gcp.known(exc, what)
    if found is not None:
        return found
    if isinstance(exc, gexc.BadRequest):
        return GatewayError(f"{what}: rejected ({detail})")
    return GatewayError(f"{what}: {detail}")
