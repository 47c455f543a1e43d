"""The ComputeProvider protocol: networks, gateways and per-job firewall rules.

Life of a job's compute: ``ensure_network`` per region (created once, reused),
``launch`` the job's gateways (returns when each is ready and its address and
ports are known), ``authorize`` ingress only between the job's gateway
addresses, and at the end ``revoke`` that job's rules (other jobs' rules stay)
and ``terminate`` its gateways. ``list_gateways`` lets the reaper find what a
crash left behind. Implementations: local processes, EC2, GCE, Azure VMs.
"""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

from skyhop.errors import UsageError
from skyhop.models import GatewayConfig, GatewaySpec


@runtime_checkable
class ComputeProvider(Protocol):
    """``ready_via_events`` (an optional attribute, False when absent): ``launch``
    returns without waiting for the gateways, which report ready with a
    ``gateway_ready`` event and are controlled through per-gateway queues (cloud
    VMs); else ``launch`` returns once each gateway accepts control calls."""

    name: str

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
    module_name, _, cls_name = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, cls_name)(**kwargs)
