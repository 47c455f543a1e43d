"""What every planner shares: the request it answers and how a route becomes a RoutePlan."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from skyhop.errors import PlanError
from skyhop.models import CostEstimate, Edge, Gateway, RoutePlan
from skyhop.planner.costs import (
    Workload,
    request_counts,
    request_usd,
    transfer_seconds,
    vm_usd,
)
from skyhop.planner.profile import Profile

Mode = Literal["fastest", "cheapest"]
GBIT_PER_GB = 8.0


@dataclass(frozen=True, kw_only=True)
class Question:
    """What every planning question holds, validated and resolved against the
    profile: the source, the workload, the goal and the gateway limits per region."""

    profile: Profile
    src: str
    work: Workload
    mode: Mode = "fastest"
    target_gbps: float | None = None
    max_cost_per_gb: float | None = None
    limits: dict[str, int] = field(default_factory=dict)
    candidates: tuple[str, ...] = ()

    def limit(self, region: str) -> int:
        return self.limits[region]

    @property
    def requests_usd(self) -> float:
        raise NotImplementedError

    @property
    def requests_usd_per_gb(self) -> float:
        """Request charges spread over the bytes (0 when no bytes move)."""
        gb = self.work.gigabytes
        return self.requests_usd / gb if gb > 0 else 0.0


@dataclass(frozen=True, kw_only=True)
class PlanRequest(Question):
    """One planning question from ``src`` to one destination region ``dst``."""

    dst: str

    @property
    def requests_usd(self) -> float:
        return request_usd(self.profile, self.src, self.dst, request_counts(self.work))


@dataclass
class Route:
    """A planner's answer before costing: VMs per region and flows on edges."""

    gateways: dict[str, int]
    flows: dict[tuple[str, str], float]  # Gbit/s per edge
    throughput_gbps: float
    paths: list[tuple[list[str], float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def path_cost_rate(req: PlanRequest, path: list[str], vms: int, gbps: float) -> float:
    """$/GB of moving data along ``path`` with ``vms`` gateways per region at ``gbps``."""
    p = req.profile
    egress = sum(p.egress_usd_per_gb(a, b) for a, b in zip(path, path[1:], strict=False))
    vm_rate = sum(p.regions[r].vm_usd_per_hour for r in path) * vms  # $/h
    return egress + vm_rate * GBIT_PER_GB / (3600 * gbps) + req.requests_usd_per_gb


def path_capacity(profile: Profile, path: list[str]) -> float:
    """Gbit/s one VM per region carries along ``path`` (the bottleneck hop)."""
    return min(profile.pair_gbps(a, b) for a, b in zip(path, path[1:], strict=False))


def single_path_route(req: PlanRequest, path: list[str], kind: str) -> Route:
    """``path`` with the number of gateways per region the mode asks for.

    fastest: as many gateways as the tightest region limit allows, then checked
    against the cost ceiling; cheapest: the fewest gateways that reach the target.
    """
    cap = path_capacity(req.profile, path)
    most = min(req.limit(r) for r in path)
    if cap <= 0:
        raise PlanError(f"the profile has no measured link on {' -> '.join(path)}")
    if req.mode == "cheapest":
        target = req.target_gbps if req.target_gbps is not None else cap
        vms = max(1, math.ceil(target / cap - 1e-9))
        if vms > most:
            raise PlanError(
                f"{kind} route {' -> '.join(path)} cannot reach {target:g} Gbit/s with at most "
                f"{most} gateway(s) per region; the best achievable is {cap * most:.3g} Gbit/s"
            )
        gbps = target
    else:
        vms, gbps = most, cap * most
        if req.max_cost_per_gb is not None:
            rate = path_cost_rate(req, path, vms, gbps)
            if rate > req.max_cost_per_gb + 1e-12:
                raise PlanError(
                    f"{kind} route {' -> '.join(path)} costs ${rate:.4f}/GB, above the ceiling of "
                    f"${req.max_cost_per_gb:g}/GB; the cheapest achievable is ${rate:.4f}/GB"
                )
    flows = {(a, b): gbps for a, b in zip(path, path[1:], strict=False)}
    return Route(
        gateways={r: vms for r in path},
        flows=flows,
        throughput_gbps=gbps,
        paths=[(list(path), gbps)],
    )


def to_route_plan(req: PlanRequest, route: Route, planner: str) -> RoutePlan:
    """Cost a route and describe it as the RoutePlan every caller gets."""
    p = req.profile
    conns = p.connections_per_vm_pair
    seconds = transfer_seconds(req.work.bytes, route.throughput_gbps)
    gb = req.work.gigabytes
    total = route.throughput_gbps
    egress = 0.0
    edges: list[Edge] = []
    for (a, b), gbps in sorted(route.flows.items(), key=lambda kv: -kv[1]):
        if gbps <= 1e-9:
            continue
        share = gbps / total if total > 0 else 0.0
        egress += gb * share * p.egress_usd_per_gb(a, b)
        link = p.link_gbps(a, b)
        connections = max(1, math.ceil(conns * gbps / link - 1e-6)) if link > 0 else conns
        edges.append(Edge(src=a, dst=b, gbps=round(gbps, 6), connections=connections))
    gateways = [
        Gateway(
            region=region,
            count=count,
            role=_role(region, req.src, req.dst),
            instance_type=p.cloud(region).instance_type,
        )
        for region, count in sorted(
            route.gateways.items(), key=lambda kv: (_order(kv[0], req.src, req.dst), kv[0])
        )
        if count > 0
    ]
    counts = request_counts(req.work)
    cost = CostEstimate(
        egress_usd=egress,
        vm_usd=vm_usd(p, route.gateways, seconds),
        requests_usd=req.requests_usd,
    )
    best_path = max(route.paths, key=lambda x: x[1])[0] if route.paths else [req.src, req.dst]
    notes = list(route.notes)
    if len(route.paths) > 1:
        notes.append(
            "paths: " + "; ".join(f"{' -> '.join(path)} {g:.3g} Gbit/s" for path, g in route.paths)
        )
    notes.append(
        "requests: " + ", ".join(f"{k}={v}" for k, v in counts.items() if v)
        if any(counts.values())
        else "requests: none"
    )
    return RoutePlan(
        planner=planner,
        src_region=req.src,
        dst_region=req.dst,
        gateways=gateways,
        edges=edges,
        path=best_path,
        throughput_gbps=round(total, 6),
        bytes=req.work.bytes,
        seconds=seconds if math.isfinite(seconds) else 0.0,
        cost=cost,
        notes=notes,
    )


def _role(region: str, src: str, dst: str) -> Literal["source", "relay", "destination"]:
    if region == src:
        return "source"
    if region == dst:
        return "destination"
    return "relay"


def _order(region: str, src: str, dst: str) -> int:
    return 0 if region == src else 2 if region == dst else 1
