"""One :class:`~skyhop.compute.base.ComputeProvider` over one provider per cloud.

A route's regions are the planner's ``CLOUD:REGION`` names (``aws:us-east-1``,
``gcp:us-central1``); each gateway goes to the provider of its region's cloud.
Launches are undone together: when one cloud's launch fails, the gateways the
others launched are terminated before the error goes on. Firewall rules are
opened by every provider with the whole job's gateways (a cross-cloud peer is
admitted too) and revoked by every provider; terminating and listing ask them
all. This is how the CLI runs ``--gateways cloud`` jobs itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skyhop.cleanup import Cleanup, each
from skyhop.compute.base import ComputeProvider, FirewallRules, InstanceIdentities, PowersOff
from skyhop.errors import UsageError
from skyhop.models import GatewayConfig, GatewaySpec, InstanceIdentity

NAME = "cloud"


def cloud_of(region: str) -> str:
    """``aws:us-east-1`` -> ``aws``; a bare name is taken as AWS's (as EC2 takes it)."""
    cloud, sep, _ = region.partition(":")
    return cloud if sep else "aws"


class RoutedComputeProvider:
    """Gateways of each cloud launched, wired and torn down by that cloud's provider."""

    def __init__(self, providers: Mapping[str, ComputeProvider], *, name: str = NAME) -> None:
        if not providers:
            raise UsageError("no cloud to launch gateways in")
        self.name = name  # what the job's runtime records (``cloud:aws``)
        self.providers = dict(providers)
        self.ready_via_events = any(p.ready_via_events for p in self.providers.values())

    def provider(self, region: str) -> ComputeProvider:
        cloud = cloud_of(region)
        found = self.providers.get(cloud)
        if found is None:
            raise UsageError(
                f"region {region!r} is in {cloud}, which this job launches no gateways in "
                f"(clouds: {', '.join(sorted(self.providers))})"
            )
        return found

    def ensure_network(self, region: str) -> None:
        self.provider(region).ensure_network(region)

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        by_cloud: dict[str, list[GatewayConfig]] = {}
        for config in configs:
            self.provider(config.region)  # an unknown cloud fails before anything starts
            by_cloud.setdefault(cloud_of(config.region), []).append(config)
        specs: dict[str, GatewaySpec] = {}
        with Cleanup("launching gateways in several clouds") as undo:
            for cloud, group in sorted(by_cloud.items()):
                provider = self.providers[cloud]
                for job_id in sorted({c.job_id for c in group}):
                    undo.add(provider.terminate, job_id)  # a later cloud's failure undoes this
                for spec in provider.launch(group):
                    specs[spec.gateway_id] = spec
        return [specs[c.gateway_id] for c in configs if c.gateway_id in specs]

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        for cloud, provider in sorted(self.providers.items()):
            if any(cloud_of(g.region) == cloud for g in gateways):
                provider.authorize(job_id, gateways)

    def revoke(self, job_id: str) -> None:
        each(
            [p for _, p in sorted(self.providers.items())],
            lambda provider: provider.revoke(job_id),
            f"revoking job {job_id}",
        )

    def terminate(self, job_id: str) -> None:
        each(
            [p for _, p in sorted(self.providers.items())],
            lambda provider: provider.terminate(job_id),
            f"terminating job {job_id}",
        )

    def rules(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """The firewall rules of every provider that lists them, each with its ``cloud``."""
        out: list[dict[str, Any]] = []
        for cloud, provider in sorted(self.providers.items()):
            if isinstance(provider, FirewallRules):
                out += [{**r, "cloud": cloud} for r in provider.rules(job_id)]
        return out

    def firewall_jobs(self) -> set[str]:
        jobs: set[str] = set()
        for _, provider in sorted(self.providers.items()):
            if isinstance(provider, FirewallRules):
                jobs |= provider.firewall_jobs()
        return jobs

    def running(self, job_id: str) -> set[str]:
        """The job's gateways still running, in the clouds whose providers can tell
        (:class:`~skyhop.compute.base.PowersOff`)."""
        found: set[str] = set()
        for _, provider in sorted(self.providers.items()):
            if isinstance(provider, PowersOff):
                found |= provider.running(job_id)
        return found

    def instance_identity(self, gateway: GatewaySpec) -> InstanceIdentity | None:
        """The instance of a gateway whose cloud's provider names its instances
        (:class:`~skyhop.compute.base.InstanceIdentities`), else None."""
        provider = self.provider(gateway.region)
        if isinstance(provider, InstanceIdentities):
            return provider.instance_identity(gateway)
        return None

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        found: list[GatewaySpec] = []
        for _, provider in sorted(self.providers.items()):
            found.extend(provider.list_gateways(job_id))
        return sorted(found, key=lambda s: (s.job_id, s.gateway_id))
