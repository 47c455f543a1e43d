"""The direct planner: N gateways at the source and N at the destination."""

from __future__ import annotations

from skyhop.planner.base import PlanRequest, Route, single_path_route


def plan_direct(req: PlanRequest) -> Route:
    """Source -> destination over one edge; N from the mode (see single_path_route)."""
    return single_path_route(req, [req.src, req.dst], "direct")
