"""The planner's entry point: validate a request, run a planner, cost the route."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from skyhop.errors import PlanError, SkyhopError, UsageError
from skyhop.models import CostEstimate, Edge, Gateway, RoutePlan
from skyhop.planner.base import Mode, PlanRequest, Route, single_path_route, to_route_plan
from skyhop.planner.costs import request_counts, request_usd, transfer_seconds, workload
from skyhop.planner.direct import plan_direct
from skyhop.planner.overlay import plan_overlay
from skyhop.planner.profile import (
    LOCAL,
    CustomRegion,
    Profile,
    cloud_of,
    load_profile,
    with_custom_regions,
)

if TYPE_CHECKING:
    from skyhop.stores.base import ObjectStore
    from skyhop.uri import StoreURI


def plan_milp(req: PlanRequest) -> Route:
    """The MILP planner, imported on first use: scipy costs about a second at start-up,
    which every `skyhop cp` would otherwise pay."""
    from skyhop.planner.milp import plan_milp as solve

    return solve(req)


PLANNERS: dict[str, Callable[[PlanRequest], Route]] = {
    "direct": plan_direct,
    "overlay": plan_overlay,
    "milp": plan_milp,
}
MODES: tuple[Mode, ...] = ("fastest", "cheapest")
DEFAULT_MAX_VMS = 1


def plan(
    src_region: str,
    dst_region: str,
    *,
    bytes: int = 0,
    objects: int | None = None,
    parts: int | None = None,
    multipart_objects: int | None = None,
    mode: Mode = "fastest",
    planner: str = "milp",
    target_gbps: float | None = None,
    max_cost_per_gb: float | None = None,
    max_vms: int | Mapping[str, int] | None = None,
    vcpu_quota: int | Mapping[str, int] | None = None,
    regions: Iterable[str] | None = None,
    profile: Profile | str | Path | None = None,
    relays: Sequence[str] | None = None,
) -> RoutePlan:
    """Plan moving ``bytes`` (in ``objects`` objects cut into ``parts`` chunks).

    mode ``fastest``: the most throughput within the gateway limits and, if
    given, at most ``max_cost_per_gb`` dollars per GB (egress, VM-hours and
    requests). mode ``cheapest``: the lowest cost that delivers
    ``target_gbps`` (default: what one gateway pair achieves on the direct link).
    ``max_vms`` caps gateways per region (default 1, an int or a region map);
    ``vcpu_quota`` (per region) caps them further to quota // vCPUs of the
    cloud's gateway instance. ``regions`` restricts the relay candidates (the
    MILP and overlay planners; default: every profiled region). A plan
    touching ``local`` is the trivial local plan. ``relays`` forces the route
    through those regions in order (``skyhop cp --relay``): the plan then shows
    and costs that path instead of choosing one. Raises PlanError when the
    request cannot be met, naming the best achievable figure.
    """
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    prof = with_remote_regions(prof, [src_region, dst_region, *(relays or ())])
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if planner not in PLANNERS:
        raise UsageError(f"unknown planner {planner!r}: use one of {', '.join(PLANNERS)}")
    if target_gbps is not None and target_gbps <= 0:
        raise UsageError(f"target must be a positive Gbit/s figure, got {target_gbps:g}")
    if max_cost_per_gb is not None and max_cost_per_gb <= 0:
        raise UsageError(f"cost ceiling must be a positive $/GB figure, got {max_cost_per_gb:g}")
    if target_gbps is not None and mode != "cheapest":
        raise UsageError("a throughput target applies to mode cheapest")
    if max_cost_per_gb is not None and mode != "fastest":
        raise UsageError("a cost ceiling applies to mode fastest")
    work = workload(bytes, objects, parts, multipart_objects)

    src = _resolve_or_local(prof, src_region)
    dst = _resolve_or_local(prof, dst_region)
    via = [_resolve_or_local(prof, r) for r in relays or ()]
    if LOCAL in (src, dst, *via) or (src == dst and not via):
        return _trivial_plan(prof, src, dst, work, via)

    pool = via or ([prof.resolve(r) for r in regions] if regions is not None else prof.region_names)
    candidates = tuple(dict.fromkeys([src, dst, *pool]))
    limits = gateway_limits(prof, candidates, max_vms, vcpu_quota, needed=(src, dst))
    if mode == "cheapest" and target_gbps is None:
        target_gbps = prof.pair_gbps(src, dst) or None
        if target_gbps is None:
            raise PlanError(f"no measured direct link {src} -> {dst}: give a target throughput")
    req = PlanRequest(
        profile=prof,
        src=src,
        dst=dst,
        work=work,
        mode=mode,
        target_gbps=target_gbps,
        max_cost_per_gb=max_cost_per_gb,
        limits=limits,
        candidates=candidates,
    )
    if via:
        route = single_path_route(req, [src, *via, dst], "the forced")
        result = to_route_plan(req, route, "forced")
        result.path = [src, *via, dst]
        result.notes.insert(0, "route forced through " + ", ".join(via) + " (--relay)")
    else:
        route = PLANNERS[planner](req)
        result = to_route_plan(req, route, planner)
    result.notes.append(f"profile: {prof.name}")
    return result


def with_remote_regions(prof: Profile, names: Iterable[str]) -> Profile:
    """``prof`` with the regions of the user's own that storage remotes define
    (``planner_region`` with ``throughput_gbps``) among ``names``."""
    wanted = {
        n.strip().lower()
        for n in names
        if isinstance(n, str) and ":" in n and cloud_of(n.strip().lower()) not in prof.clouds
    }
    if not wanted:
        return prof
    from skyhop.remotes import storage_remotes

    custom = [
        CustomRegion(
            name=r.planner_region.lower(),
            gbps=r.throughput_gbps,
            egress_usd_per_gb=r.egress_usd_per_gb,
        )
        for r in storage_remotes().values()
        if r.planner_region and r.planner_region.lower() in wanted and r.throughput_gbps
    ]
    return with_custom_regions(prof, custom) if custom else prof


def _resolve_or_local(prof: Profile, region: str) -> str:
    if not isinstance(region, str) or not region.strip():
        raise UsageError("a region is required (e.g. aws:us-east-1, or local)")
    if region.strip().lower() == LOCAL:
        return LOCAL
    return prof.resolve(region)


def gateway_limits(
    prof: Profile,
    candidates: Iterable[str],
    max_vms: int | Mapping[str, int] | None,
    vcpu_quota: int | Mapping[str, int] | None,
    *,
    needed: Iterable[str],
) -> dict[str, int]:
    """Gateways allowed per candidate region; PlanError when a region the route
    cannot do without (``needed``: source and destinations) fits none."""
    limits = {r: _limit(prof, r, max_vms, vcpu_quota) for r in candidates}
    for r in needed:
        if limits[r] < 1:
            raise PlanError(
                f"no gateway fits in {r}: the vCPU quota is below one {prof.cloud(r).instance_type} "
                f"({prof.cloud(r).vcpus} vCPUs)"
            )
    return limits


def _limit(
    prof: Profile,
    region: str,
    max_vms: int | Mapping[str, int] | None,
    vcpu_quota: int | Mapping[str, int] | None,
) -> int:
    cap = _per_region(max_vms, region, DEFAULT_MAX_VMS, "max_vms")
    quota = _per_region(vcpu_quota, region, None, "vcpu_quota")
    if quota is not None:
        cap = min(cap, quota // prof.cloud(region).vcpus)
    return cap


def _per_region(
    value: int | Mapping[str, int] | None, region: str, default: int | None, name: str
) -> int | None:
    if isinstance(value, Mapping):
        value = value.get(region, value.get(cloud_of(region), default))
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"{name} must be a non-negative integer, got {value!r}")
    if name == "max_vms" and value < 1:
        raise UsageError("max_vms must be at least 1")
    return value


def _trivial_plan(
    prof: Profile, src: str, dst: str, work: object, via: Sequence[str] = ()
) -> RoutePlan:
    """Gateways as local processes (a laptop), or a same-region copy: one hop, no egress.

    Egress of a cloud side to a laptop is not estimated (internet egress is
    billed by the cloud, outside any profile); request charges of a cloud
    store are.
    """
    from skyhop.planner.costs import Workload

    assert isinstance(work, Workload)
    local = LOCAL in (src, dst, *via)
    where = LOCAL if local else src
    if local:
        gbps = prof.local_gbps
        instance = None
        note = "gateways run as local processes; throughput is nominal"
    else:
        cloud = prof.cloud(src)
        gbps = min(cloud.egress_gbps_per_vm, cloud.ingress_gbps_per_vm)
        instance = cloud.instance_type
        note = "same-region copy: no egress; throughput is the per-VM cap, not a measurement"
    seconds = transfer_seconds(work.bytes, gbps)
    counts = request_counts(work)
    vm = 0.0 if local else 2 * prof.regions[src].vm_usd_per_hour * seconds / 3600
    notes = [note]
    if local and (cloud_of(src) != LOCAL or cloud_of(dst) != LOCAL):
        notes.append("egress from a cloud to this machine is not estimated")
    notes.append("requests: " + ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "none")
    if via:
        notes.insert(0, f"route forced through {len(via)} relay(s) (--relay)")
    relays = [Gateway(region=where, count=1, role="relay", instance_type=instance) for _ in via]
    return RoutePlan(
        planner="local" if local else "direct",
        src_region=src,
        dst_region=dst,
        gateways=[
            Gateway(region=where, count=1, role="source", instance_type=instance),
            *relays,
            Gateway(region=where, count=1, role="destination", instance_type=instance),
        ],
        edges=[Edge(src=where, dst=where, gbps=gbps, connections=8) for _ in range(len(via) + 1)],
        path=[src, *via, dst],  # the control plane launches one hop per entry
        throughput_gbps=gbps,
        bytes=work.bytes,
        seconds=seconds,
        cost=CostEstimate(
            egress_usd=0.0, vm_usd=vm, requests_usd=request_usd(prof, src, dst, counts)
        ),
        notes=notes,
    )


def region_of(
    uri: str,
    override: str | None = None,
    *,
    stores: Callable[[StoreURI], ObjectStore] | None = None,
) -> str:
    """The region of a store URI: ``override`` if given, ``local`` for local paths,
    else what the store reports (``ObjectStore.region()``), asking a store of
    ``stores`` (already open, so no second client) when given."""
    from skyhop.stores.base import open_store
    from skyhop.uri import parse_uri

    parsed = parse_uri(uri)  # a malformed URI is an error even with an override
    if override:
        return override
    if parsed.scheme == "local":
        return LOCAL
    try:
        region = (stores or open_store)(parsed).region()
    except SkyhopError as exc:
        raise UsageError(f"cannot tell the region of {uri} ({exc}); pass it explicitly") from None
    if not region:
        raise UsageError(f"cannot tell the region of {uri}; pass it explicitly")
    return region
