"""The MILP planner: Skyplane's formulation, solved with scipy.optimize.milp (HiGHS).

Variables, over the candidate regions V and the measured edges E between them
(no edge into the source or out of the destination):

* ``f_e >= 0``   Gbit/s on edge e = (i, j);
* ``n_i``        integer gateway VMs in region i, ``0 <= n_i <= limit_i``;
* ``T >= 0``     Gbit/s delivered (fixed to the target in ``cheapest`` mode).

Constraints, with ``g_e`` the measured Gbit/s of one VM pair using ``C``
connections (C = ``connections_per_vm_pair``):

* flow conservation: out(src) = T, in(dst) = T, out(v) = in(v) at relays;
* connection budget per VM: edge e needs ``C * f_e / g_e`` connections, and a
  VM opens at most C (sending) and accepts at most C (receiving):
  ``sum_out f_e / g_e <= n_i`` and ``sum_in f_e / g_e <= n_j``;
* per-VM egress and ingress caps of each cloud:
  ``sum_out f_e <= egress_i * n_i`` and ``sum_in f_e <= ingress_j * n_j``.

Costs are linear once multiplied by T: per GB moved, egress is
``sum_e f_e c_e / T`` and VM time is ``(8/3600) sum_i n_i p_i / T``. So

* ``cheapest``: T fixed to the target, minimise ``sum_e f_e c_e + (8/3600) sum_i n_i p_i``;
* ``fastest``: maximise T subject to ``sum_e f_e c_e + (8/3600) sum_i n_i p_i + r T <= Y T``
  (Y the $/GB ceiling, r the request charges per GB), and among the fastest
  routes take the cheapest: the objective is ``-T + LAMBDA * cost rate``. With
  LAMBDA = 1e-3 this is lexicographic unless one more Gbit/s would cost over
  $1,000/GB, which no profiled route does; one solve instead of two is ~10x
  faster on the full profile.

The connection variables of Skyplane's formulation are substituted out (each
edge gets exactly the connections it needs), which halves the problem.
"""

from __future__ import annotations

import time

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from skyhop.errors import PlanError
from skyhop.planner.base import (
    GBIT_PER_GB,
    PlanRequest,
    Route,
    path_capacity,
    path_cost_rate,
)
from skyhop.planner.overlay import candidate_paths

EPS = 1e-7
LAMBDA = 1e-3
DUST = 1e-5  # paths carrying less than this share of T are dropped
MIP_GAP = 1e-6
TIME_LIMIT_S = 60.0


class _Model:
    """The constraint matrix of one request, shared by both solve phases."""

    def __init__(self, req: PlanRequest) -> None:
        p = req.profile
        self.req = req
        self.regions = list(dict.fromkeys((req.src, req.dst, *req.candidates)))
        idx = np.array([p.index[r] for r in self.regions])
        s, d = 0, 1
        usable = p.usable[np.ix_(idx, idx)].copy()
        usable[:, s] = False
        usable[d, :] = False
        src_i, dst_i = np.nonzero(usable)
        self.edge_src, self.edge_dst = src_i, dst_i
        gbps = p.gbps_array[np.ix_(idx, idx)][src_i, dst_i]
        self.edge_gbps = gbps
        self.edge_cost = p.cost_array[np.ix_(idx, idx)][src_i, dst_i]
        self.vm_price = p.vm_price_array[idx]
        eg, ing = p.egress_cap_array[idx], p.ingress_cap_array[idx]
        self.limits = np.array([req.limit(r) for r in self.regions], dtype=float)

        ne, nv = len(src_i), len(self.regions)
        self.ne, self.nv = ne, nv
        self.n_off, self.t_col = ne, ne + nv
        nx = ne + nv + 1
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        lo: list[float] = []
        hi: list[float] = []
        r = 0
        e_idx = np.arange(ne)

        def add(row_of_edge: np.ndarray, coef: np.ndarray) -> None:
            rows.append(row_of_edge)
            cols.append(e_idx)
            vals.append(coef)

        # flow conservation, one row per region: out - in - T[src] + T[dst] = 0
        add(r + src_i, np.ones(ne))
        add(r + dst_i, -np.ones(ne))
        rows += [np.array([r + s, r + d])]
        cols += [np.array([self.t_col, self.t_col])]
        vals += [np.array([-1.0, 1.0])]
        lo += [0.0] * nv
        hi += [0.0] * nv
        r += nv
        # connection budget, sending and receiving: sum f/g - n <= 0
        for ends in (src_i, dst_i):
            add(r + ends, 1.0 / gbps)
            rows.append(r + np.arange(nv))
            cols.append(self.n_off + np.arange(nv))
            vals.append(-np.ones(nv))
            lo += [-np.inf] * nv
            hi += [0.0] * nv
            r += nv
        # per-VM caps: sum f - cap * n <= 0
        for ends, cap in ((src_i, eg), (dst_i, ing)):
            add(r + ends, np.ones(ne))
            rows.append(r + np.arange(nv))
            cols.append(self.n_off + np.arange(nv))
            vals.append(-cap)
            lo += [-np.inf] * nv
            hi += [0.0] * nv
            r += nv
        self.base = csr_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(r, nx)
        )
        self.base_lo, self.base_hi = np.array(lo), np.array(hi)
        # cost rate ($ per GB, times T): sum f c + (8/3600) sum n p
        self.cost_row = np.zeros(nx)
        self.cost_row[:ne] = self.edge_cost
        self.cost_row[self.n_off : self.t_col] = GBIT_PER_GB / 3600 * self.vm_price
        self.integrality = np.zeros(nx)
        self.integrality[self.n_off : self.t_col] = 1
        self.nx = nx
        self.timed_out = False

    def solve(
        self,
        objective: np.ndarray,
        t_bounds: tuple[float, float],
        ceiling: float | None = None,
    ) -> np.ndarray | None:
        lb = np.zeros(self.nx)
        ub = np.full(self.nx, np.inf)
        ub[self.n_off : self.t_col] = self.limits
        lb[self.t_col], ub[self.t_col] = t_bounds
        constraints = [LinearConstraint(self.base, self.base_lo, self.base_hi)]
        if ceiling is not None:
            row = self.cost_row.copy()
            row[self.t_col] = self.req.requests_usd_per_gb - ceiling
            constraints.append(LinearConstraint(row.reshape(1, -1), -np.inf, 0.0))
        res = milp(
            objective,
            constraints=constraints,
            integrality=self.integrality,
            bounds=Bounds(lb, ub),
            options={"time_limit": TIME_LIMIT_S, "mip_rel_gap": MIP_GAP},
        )
        if res.x is None or res.status not in (0, 1):  # 1: time limit, best solution found
            return None
        self.timed_out = self.timed_out or res.status == 1
        return res.x

    def fastest_objective(self) -> np.ndarray:
        objective = LAMBDA * self.cost_row
        objective[self.t_col] = -1.0
        return objective

    def max_throughput(self, ceiling: float | None = None) -> float:
        x = self.solve(self.fastest_objective(), (0.0, np.inf), ceiling)
        return 0.0 if x is None else float(x[self.t_col])

    def to_route(self, x: np.ndarray) -> Route:
        """The solution as paths; solver dust (paths far below the tolerance that
        matters) is dropped so the plan does not open a VM for a trickle."""
        raw: dict[tuple[str, str], float] = {}
        for k in range(self.ne):
            if x[k] > EPS:
                a, b = self.regions[self.edge_src[k]], self.regions[self.edge_dst[k]]
                raw[(a, b)] = float(x[k])
        total = float(x[self.t_col])
        paths = [
            (path, w) for path, w in decompose(raw, self.req.src, self.req.dst) if w >= DUST * total
        ]
        flows: dict[tuple[str, str], float] = {}
        for path, w in paths:
            for a, b in zip(path, path[1:], strict=False):
                flows[(a, b)] = flows.get((a, b), 0.0) + w
        used = {r for edge in flows for r in edge}
        vms = np.rint(x[self.n_off : self.t_col]).astype(int)
        gateways = {
            self.regions[i]: int(v) for i, v in enumerate(vms) if v > 0 and self.regions[i] in used
        }
        return Route(
            gateways=gateways,
            flows=flows,
            throughput_gbps=sum(w for _, w in paths),
            paths=paths,
        )


def plan_milp(req: PlanRequest) -> Route:
    started = time.perf_counter()
    model = _Model(req)
    if req.mode == "cheapest":
        target = float(req.target_gbps or 0.0)
        x = model.solve(model.cost_row, (target, target))
        if x is None:
            best = model.max_throughput()
            raise PlanError(
                f"cannot reach {target:g} Gbit/s from {req.src} to {req.dst} with the gateway "
                f"limits; the best achievable is {best:.3g} Gbit/s"
            )
    else:
        x = model.solve(model.fastest_objective(), (0.0, np.inf), req.max_cost_per_gb)
        if x is None or x[model.t_col] <= EPS:
            raise PlanError(_no_route_within_ceiling(req))
    route = model.to_route(x)
    if model.timed_out:
        route.notes.append(
            f"solver stopped at its {TIME_LIMIT_S:g} s limit: best route found, not proven optimal"
        )
    route.notes.append(
        f"milp over {model.nv} regions and {model.ne} edges solved in "
        f"{time.perf_counter() - started:.2f} s"
    )
    return route


def _no_route_within_ceiling(req: PlanRequest) -> str:
    paths = [p for p in candidate_paths(req) if path_capacity(req.profile, p) > 0]
    if not paths:
        return f"the profile has no measured route from {req.src} to {req.dst}"
    cheapest = min(path_cost_rate(req, p, 1, path_capacity(req.profile, p)) for p in paths)
    return (
        f"no route from {req.src} to {req.dst} costs at most ${req.max_cost_per_gb:g}/GB; "
        f"the cheapest achievable is about ${cheapest:.4f}/GB"
    )


def decompose(
    flows: dict[tuple[str, str], float], src: str, dst: str
) -> list[tuple[list[str], float]]:
    """Split an edge flow into source-to-destination paths, widest first."""
    residual = dict(flows)
    paths: list[tuple[list[str], float]] = []
    while True:
        path = _widest_path(residual, src, dst)
        if path is None:
            break
        width = min(residual[(a, b)] for a, b in zip(path, path[1:], strict=False))
        if width <= EPS:
            break
        for a, b in zip(path, path[1:], strict=False):
            residual[(a, b)] -= width
        paths.append((path, width))
    return paths


def _widest_path(residual: dict[tuple[str, str], float], src: str, dst: str) -> list[str] | None:
    """The path of largest bottleneck (a Dijkstra variant)."""
    out: dict[str, list[tuple[str, float]]] = {}
    for (a, b), w in residual.items():
        if w > EPS:
            out.setdefault(a, []).append((b, w))
    width = {src: float("inf")}
    prev: dict[str, str] = {}
    done: set[str] = set()
    while True:
        frontier = [(w, v) for v, w in width.items() if v not in done]
        if not frontier:
            return None
        w, v = max(frontier)
        if v == dst:
            break
        done.add(v)
        for nxt, cap in out.get(v, []):
            cand = min(w, cap)
            if nxt not in done and cand > width.get(nxt, 0.0):
                width[nxt] = cand
                prev[nxt] = v
    path = [dst]
    while path[-1] != src:
        path.append(prev[path[-1]])
    return path[::-1]
