"""Route planning: where gateways run and how data flows between regions.

The API::

    from skyhop.planner import load_profile, plan, render_plan

    route = plan("aws:us-east-1", "gcp:europe-west4-a", bytes=10**12, mode="fastest",
                 planner="milp", max_vms=4)
    console.print(render_plan(route))

Planners: ``direct`` (N gateways at each end), ``overlay`` (the best single
relay, used when it beats direct) and ``milp`` (Skyplane's formulation over
every profiled region, scipy.optimize.milp/HiGHS). Every planner returns a
:class:`skyhop.models.RoutePlan` with the predicted throughput, time and cost
(egress, VM-hours, requests).
"""

from typing import Any

from skyhop.planner.api import MODES, PLANNERS, plan, region_of
from skyhop.planner.costs import Workload, request_counts, workload
from skyhop.planner.profile import LOCAL, Profile, default_profile_path, load_profile


def __getattr__(name: str) -> Any:
    """``render_plan`` and ``plan_json`` import rich on first use: a quiet copy
    plans without printing, and should not pay for it at start-up."""
    if name in ("render_plan", "plan_json"):
        from skyhop.planner import render

        return getattr(render, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "LOCAL",
    "MODES",
    "PLANNERS",
    "Profile",
    "Workload",
    "default_profile_path",
    "load_profile",
    "plan",
    "plan_json",
    "region_of",
    "render_plan",
    "request_counts",
    "workload",
]
