"""The control plane's default planner: the shipped profile, or none at all.

:func:`default_planner` is what the embedded control plane and the cloud
functions hand to :class:`~skyhop.controlplane.service.ControlPlane`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from skyhop.controlplane.direct import takes_direct_path
from skyhop.errors import SkyhopError
from skyhop.models import Job, RoutePlan
from skyhop.stores.base import ObjectStore
from skyhop.uri import StoreURI

StoreOpener = Callable[[StoreURI], ObjectStore]


def default_planner(job: Job, *, stores: StoreOpener | None = None) -> RoutePlan | None:
    """Plan with the shipped profile; local paths get a trivial direct plan. Regions
    come from ``stores`` (the control plane's open stores) when given."""
    try:
        from skyhop import planner
    except ImportError:  # pragma: no cover - the planner ships with the package
        return None
    options = job.request.options
    src = _region(planner, job.request.source, options.src_region, stores)
    dst = _region(planner, job.request.destination, options.dst_region, stores)
    if job.request.multicast:
        from skyhop.planner.multicast import plan_multicast

        others = [_region(planner, d, None, stores) for d in job.request.all_destinations[1:]]
        return plan_multicast(
            src,
            [dst, *others],
            bytes=job.bytes_total,
            objects=job.objects_total,
            parts=job.chunks_total,
        )
    plan = planner.plan(
        src,
        dst,
        bytes=job.bytes_total,
        objects=job.objects_total,
        parts=job.chunks_total,
        relays=options.relays or None,
    )
    return _without_gateways(plan) if takes_direct_path(job) else plan


def _without_gateways(plan: RoutePlan) -> RoutePlan:
    """A direct-path job runs no gateway: none is shown or costed."""
    notes = [n for n in plan.notes if not n.startswith("gateways run as local processes")]
    return plan.model_copy(
        update={
            "gateways": [],
            "edges": [],
            "cost": plan.cost.model_copy(update={"vm_usd": 0.0}),
            "notes": ["direct path: this process moves the data, no gateways", *notes],
        }
    )


def _region(planner: ModuleType, uri: str, override: str | None, stores: StoreOpener | None) -> str:
    """The region from the option, else the bucket's location, else local: a store
    that cannot tell its region still copies, with a nominal estimate."""
    try:
        return str(planner.region_of(uri, override, stores=stores))
    except SkyhopError:
        return str(planner.LOCAL)
