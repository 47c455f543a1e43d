"""The overlay planner: the RON idea, one relay region when it beats direct.

Every single-relay path source -> r -> destination is scored by its bottleneck
(one VM pair per hop, per-VM caps applied). In ``fastest`` mode the route with
the highest throughput within the cost ceiling wins, the cheaper one on a tie,
and direct wins unless a relay is strictly faster. In ``cheapest`` mode the
cheapest route that reaches the target wins.
"""

from __future__ import annotations

from skyhop.errors import PlanError
from skyhop.planner.base import (
    PlanRequest,
    Route,
    path_capacity,
    path_cost_rate,
    single_path_route,
)

_TIE = 1e-9


def candidate_paths(req: PlanRequest) -> list[list[str]]:
    """Direct first, then every single-relay path through the candidate regions."""
    relays = [r for r in req.candidates if r not in (req.src, req.dst)]
    return [[req.src, req.dst]] + [[req.src, r, req.dst] for r in relays]


def plan_overlay(req: PlanRequest) -> Route:
    best: tuple[float, float, Route] | None = None  # (throughput, $/GB, route)
    for path in candidate_paths(req):
        if path_capacity(req.profile, path) <= 0:
            continue
        try:
            route = single_path_route(req, path, "overlay")
        except PlanError:
            continue
        vms = route.gateways[req.src]
        rate = path_cost_rate(req, path, vms, route.throughput_gbps)
        if best is None or _better(req, route.throughput_gbps, rate, best[0], best[1]):
            best = (route.throughput_gbps, rate, route)
    if best is None:
        raise PlanError(_infeasible(req))
    route = best[2]
    if len(route.paths[0][0]) == 2 and len(req.candidates) > 2:
        route.notes.append("no single relay beats the direct route")
    elif len(route.paths[0][0]) == 3:
        direct = path_capacity(req.profile, [req.src, req.dst])
        ratio = route.throughput_gbps / (direct * route.gateways[req.src]) if direct > 0 else 0
        if req.mode == "fastest" and direct > 0:
            route.notes.append(f"relay via {route.paths[0][0][1]}: {ratio:.2f}x the direct route")
    return route


def _better(req: PlanRequest, gbps: float, rate: float, best_gbps: float, best_rate: float) -> bool:
    if req.mode == "cheapest":
        if rate < best_rate - _TIE:
            return True
        return abs(rate - best_rate) <= _TIE and gbps > best_gbps + _TIE
    if gbps > best_gbps * (1 + 1e-9) + _TIE:
        return True
    return abs(gbps - best_gbps) <= max(_TIE, best_gbps * 1e-9) and rate < best_rate - _TIE


def _infeasible(req: PlanRequest) -> str:
    """The one-line reason no path works, with the best achievable figure."""
    paths = [p for p in candidate_paths(req) if path_capacity(req.profile, p) > 0]
    if not paths:
        return f"the profile has no measured route from {req.src} to {req.dst}"
    if req.mode == "cheapest":
        best = max(path_capacity(req.profile, p) * min(req.limit(r) for r in p) for p in paths)
        return (
            f"no direct or single-relay route reaches {req.target_gbps:g} Gbit/s from {req.src} to "
            f"{req.dst} within the gateway limits; the best achievable is {best:.3g} Gbit/s"
        )
    cheapest = min(
        path_cost_rate(
            req,
            p,
            min(req.limit(r) for r in p),
            path_capacity(req.profile, p) * min(req.limit(r) for r in p),
        )
        for p in paths
    )
    return (
        f"no direct or single-relay route from {req.src} to {req.dst} costs at most "
        f"${req.max_cost_per_gb:g}/GB; the cheapest achievable is ${cheapest:.4f}/GB"
    )
