"""The ComputeProvider protocol: networks, gateways and per-job firewall rules.

Life of a job's compute: ``ensure_network`` per region (created once, reused),
``launch`` the job's gateways (returns when each is ready and its address and
ports are known), ``authorize`` ingress only between the job's gateway
addresses, and at the end ``revoke`` that job's rules (other jobs' rules stay)
and ``terminate`` its gateways. Both go on after an error (every region, every
rule is tried; the first error is raised after: :func:`skyhop.cleanup.each`), and
a caller terminates even when revoking failed. ``list_gateways`` lets the reaper find what a
crash left behind. Implementations: local processes, EC2, GCE, Azure VMs.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from skyhop.errors import UsageError
from skyhop.models import GatewayConfig, GatewaySpec, InstanceIdentity
from skyhop.registry import resolve


@runtime_checkable
class ComputeProvider(Protocol):
    """The compute of one cloud (see the module docstring)."""

    name: str
    #: True: ``launch`` returns without waiting for the gateways, which report ready
    #: with a ``gateway_ready`` event and are controlled through per-gateway queues
    #: (cloud VMs); False: ``launch`` returns once each gateway accepts control calls
    ready_via_events: bool

    def ensure_network(self, region: str) -> None:
        """Create (or find) the skyhop network and firewall of ``region``."""
        ...

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        """Start one gateway per config; return their specs once each is ready."""
        ...

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        """Admit traffic on the gateway ports only from these gateways' addresses."""
        ...

    def revoke(self, job_id: str) -> None:
        """Remove every rule ``authorize`` made for this job (idempotent)."""
        ...

    def terminate(self, job_id: str) -> None:
        """Stop every gateway of this job and wait until they are gone (idempotent)."""
        ...

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        """Gateways that exist now, of one job or of all."""
        ...


@runtime_checkable
class FirewallRules(Protocol):
    """Optional: a provider that lists the firewall rules it made, by job (to name
    leftovers, and for the reaper to revoke those of finished jobs: a revoke that
    failed leaves rules no gateway listing finds)."""

    def rules(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The rules of one job (or of every job) in the regions it knows, each a
        dict with at least ``job`` (the job it was made for)."""
        ...

    def firewall_jobs(self) -> set[str]:
        """Every job that still has firewall rules (or per-job firewall resources)."""
        ...


@runtime_checkable
class ChecksCredentials(Protocol):
    """Optional: a provider that can tell, before launching anything, whether its
    cloud's credentials work."""

    def check_credentials(self) -> str:
        """Who the credentials belong to; AccessError when there are none that work."""
        ...


@runtime_checkable
class PowersOff(Protocol):
    """Optional: a provider whose gateway VMs power themselves off after a clean exit
    (:func:`skyhop.compute.startup.runner_script`) and that can tell which still run.
    Teardown waits for the gateways it told to shut down to be off before it
    terminates them, so none is cut off in the middle of its own shutdown."""

    def running(self, job_id: str) -> set[str]:
        """The gateway ids of ``job_id`` whose VMs are still starting or running."""
        ...


@runtime_checkable
class InstanceIdentities(Protocol):
    """Optional: a provider whose gateways are cloud instances that their cloud names in
    every request made with the instance's own credentials (EC2 instances: the
    ``ec2:SourceInstanceARN`` of their role's session), so a resource can be closed to
    every instance but one: each gateway's control queue
    (:class:`~skyhop.queues.base.InstanceScopedControlQueues`)."""

    def instance_identity(self, gateway: GatewaySpec) -> InstanceIdentity | None:
        """The instance ``gateway`` (as ``launch`` returned it) runs on; None when its
        gateways are not instances its cloud names (GatewayError when the spec names
        no instance of this provider's)."""
        ...


@runtime_checkable
class Enrols(Protocol):
    """Optional: a provider whose gateways are VMs that enrol (``enrols`` True): each
    is launched with a boot configuration holding no secret, only a one-time token,
    and gets its secrets over mutual TLS (:mod:`skyhop.enrolment`). A provider without
    it (local processes) is given each gateway's whole configuration."""

    enrols: bool


@runtime_checkable
class RoutesByRegion(Protocol):
    """Optional: a provider over one provider per cloud, which launches each gateway
    with the provider of its region (:class:`~skyhop.compute.routed.RoutedComputeProvider`)."""

    def provider(self, region: str) -> ComputeProvider:
        """The provider that launches the gateways of ``region``."""
        ...


def gateways_enrol(compute: ComputeProvider, region: str) -> bool:
    """Whether the gateways ``compute`` launches in ``region`` enrol (:class:`Enrols`)."""
    provider = compute.provider(region) if isinstance(compute, RoutesByRegion) else compute
    return isinstance(provider, Enrols) and provider.enrols


_REGISTRY: dict[str, str] = {
    "local": "skyhop.compute.local:LocalComputeProvider",
    "aws": "skyhop.compute.ec2:EC2ComputeProvider",
    "gcp": "skyhop.compute.gce:GCEComputeProvider",
    "azure": "skyhop.compute.azure_vm:AzureComputeProvider",
}


def open_provider(name: str, **kwargs: object) -> ComputeProvider:
    """The compute provider called ``name`` (local, aws, gcp, azure)."""
    target = _REGISTRY.get(name)
    if target is None:
        raise UsageError(f"unknown compute provider {name!r}: use one of {', '.join(_REGISTRY)}")
    provider: ComputeProvider = resolve(target, f"compute provider {name!r}")(**kwargs)
    return provider
