"""The multicast planner: one source, several destinations, one distribution tree.

Replicating a dataset to N regions as N jobs reads the source N times and pays
egress on N paths. A tree sends each chunk once over each of its edges: the
source to its children, relays (and destinations) on to theirs, every
destination receiving the stream once. This is the Steiner-arborescence
problem over the profile, solved as a MILP with scipy.optimize.milp (HiGHS).

Variables, over the candidate regions V and the measured edges E between them
(none into the source; destinations may forward):

* ``x_e`` binary: edge e = (i, j) is in the tree;
* ``z_e >= 0`` Gbit/s on edge e: the whole stream T on a tree edge, else 0;
* ``F_e^k >= 0``: T Gbit/s from the source to destination k (one commodity each);
* ``n_i`` integer gateway VMs in region i, ``0 <= n_i <= limit_i``;
* ``T >= 0`` Gbit/s delivered to every destination (fixed in ``cheapest`` mode).

Constraints (``g_e`` the measured Gbit/s of one VM pair, as in milp.py):

* connectivity: each ``F^k`` carries T from the source to destination k, only
  on tree edges (``F_e^k <= U x_e``, U an upper bound of T: what the source's
  and each destination's gateways can move);
* a tree: at most one edge into each region, and an edge leaves a relay only
  when one enters it. With x integral, each ``F^k`` then follows the one tree
  path to k, so
* ``z_e = T`` on every tree edge: ``F_e^k <= z_e <= T`` (the multicommodity
  form; its LP relaxation is the multicast-flow bound, much tighter than
  linearising ``z_e = T x_e`` with big-M terms);
* per region, the connection budget and the per-VM caps of milp.py, over
  ``z``: ``sum_out z_e / g_e <= n_i``, ``sum_in z_e / g_e <= n_j``,
  ``sum_out z_e <= egress_i n_i``, ``sum_in z_e <= ingress_j n_j``.

Costs are per GB of the dataset (read once, delivered to each destination):
egress ``sum_e z_e c_e / T`` and VM time ``(8/3600) sum_i n_i p_i / T``, so

* ``cheapest``: T fixed to the target, minimise ``sum_e z_e c_e + (8/3600) sum_i n_i p_i``;
* ``fastest``: maximise T (the cheapest such tree: ``-T + LAMBDA * cost rate``,
  as in milp.py) subject to ``cost rate + r T <= Y T`` when a ceiling Y is
  given (r: request charges per GB: the source's once, each destination's).

A tiny charge per tree edge keeps edges that would cost nothing (a user's
profile with free links) out of the tree unless they serve a destination.

Same-region destinations (the source's own region, or two buckets in one
region) need no edge: they are served inside their region's node. A plan
touching ``local`` is the trivial star of local gateway processes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import csr_array

from skyhop.errors import PlanError, UsageError
from skyhop.models import CostEstimate, Edge, Gateway, RoutePlan, SeparateCopies
from skyhop.planner.api import (
    MODES,
    _resolve_or_local,
    gateway_limits,
    plan,
    with_remote_regions,
)
from skyhop.planner.base import GBIT_PER_GB, Mode, Question
from skyhop.planner.costs import (
    Workload,
    request_counts,
    request_usd,
    transfer_seconds,
    vm_usd,
    workload,
)
from skyhop.planner.profile import LOCAL, Profile, load_profile

LAMBDA = 1e-3
EDGE_CHARGE = 1e-9  # per tree edge, in the objective only
MIP_GAP = 1e-4
TIME_LIMIT_S = 60.0
EPS = 1e-7
BISECT_TOLERANCE = 1e-6
#: a relay pool larger than this (the whole profile, by default) is narrowed
#: to relay_candidates() first; a pool the caller names is used as it is
MAX_POOL = 16
HUBS = 3


@dataclass(frozen=True, kw_only=True)
class TreeRequest(Question):
    """One multicast planning question: from ``src`` to every region of ``legs``."""

    legs: tuple[str, ...]  # each destination's region, in the request's order

    @property
    def terminals(self) -> tuple[str, ...]:
        """The destination regions the tree must reach (the source's own is reached)."""
        return tuple(dict.fromkeys(r for r in self.legs if r != self.src))

    @property
    def requests_usd(self) -> float:
        """The source's requests once, each destination's for its own writes."""
        counts = request_counts(self.work)
        total = request_usd(self.profile, self.src, LOCAL, counts)
        return total + sum(request_usd(self.profile, LOCAL, leg, counts) for leg in self.legs)


@dataclass
class Tree:
    """A solved tree: its edges (parent -> child), gateways per region, Gbit/s."""

    edges: list[tuple[str, str]]
    gateways: dict[str, int]
    throughput_gbps: float
    notes: list[str] = field(default_factory=list)


class _Rows:
    """A sparse constraint matrix, built a block of rows at a time."""

    def __init__(self, nx: int) -> None:
        self.nx = nx
        self.n = 0
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []

    def block(
        self,
        terms: list[tuple[Any, Any, Any]],
        count: int,
        lo: float | np.ndarray,
        hi: float | np.ndarray,
    ) -> None:
        """``count`` rows at once; each term is (row within the block, column, value)."""
        for row, cols, vals in terms:
            row, cols, values = np.broadcast_arrays(
                np.atleast_1d(row), np.atleast_1d(cols), np.asarray(vals, dtype=float)
            )
            self.rows.append(self.n + row.ravel())
            self.cols.append(cols.ravel())
            self.vals.append(values.ravel())
        self.lo.append(np.broadcast_to(np.asarray(lo, dtype=float), (count,)))
        self.hi.append(np.broadcast_to(np.asarray(hi, dtype=float), (count,)))
        self.n += count

    def constraint(self) -> LinearConstraint:
        matrix = csr_array(
            (np.concatenate(self.vals), (np.concatenate(self.rows), np.concatenate(self.cols))),
            shape=(self.n, self.nx),
        )
        return LinearConstraint(matrix, np.concatenate(self.lo), np.concatenate(self.hi))


class _TreeModel:
    """The constraint matrix of one request. ``fixed_t`` makes T a constant (the
    cheapest mode's target, or the second phase of fastest)."""

    def __init__(
        self, req: TreeRequest, fixed_t: float | None = None, t_max: float | None = None
    ) -> None:
        p = req.profile
        self.req = req
        terminals = req.terminals
        self.regions = list(dict.fromkeys((req.src, *terminals, *req.candidates)))
        idx = np.array([p.index[r] for r in self.regions])
        lim = np.array([req.limit(r) for r in self.regions], dtype=float)
        self.limits = lim
        eg, ing = p.egress_cap_array[idx], p.ingress_cap_array[idx]
        usable = _usable(p, idx, lim, fixed_t)
        es, ed = np.nonzero(usable)
        self.es, self.ed = es, ed
        gbps = p.gbps_array[np.ix_(idx, idx)][es, ed]
        cost = p.cost_array[np.ix_(idx, idx)][es, ed]
        price = p.vm_price_array[idx]
        ne, nv, k = len(es), len(self.regions), len(terminals)
        self.ne, self.nv, self.k = ne, nv, k
        self.x0, self.z0, self.f0 = 0, ne, 2 * ne
        self.n0 = 2 * ne + k * ne
        self.t = self.n0 + nv
        nx = self.t + 1
        self.nx = nx
        self.fixed_t = fixed_t
        # what one edge can carry at most: its VM pairs, the ends' caps, and T's bound
        upper = min(eg[0] * lim[0], *(ing[j] * lim[j] for j in range(1, 1 + k)))
        if fixed_t is not None:
            upper = fixed_t
        elif t_max is not None:
            upper = min(upper, t_max)
        self.upper = float(max(upper, EPS))
        cap = np.minimum.reduce(
            [
                np.full(ne, self.upper),
                gbps * np.minimum(lim[es], lim[ed]),
                eg[es] * lim[es],
                ing[ed] * lim[ed],
            ]
        )
        x = self.x0 + np.arange(ne)
        z = self.z0 + np.arange(ne)
        n = self.n0 + np.arange(nv)
        rows = _Rows(nx)
        # a tree: at most one edge into each region ...
        rows.block([(ed, x, 1.0)], nv, -np.inf, 1.0)
        # ... and an edge leaves a relay only when one enters it
        relay_out = np.nonzero(es > k)[0]
        for e in relay_out:
            into = np.nonzero(ed == es[e])[0]
            rows.block([(0, x[e], 1.0), (0, x[into], -1.0)], 1, -np.inf, 0.0)
        # per region: connection budget and per-VM caps, sending and receiving
        for ends, vm_cap in ((es, eg), (ed, ing)):
            rows.block([(ends, z, 1.0 / gbps), (np.arange(nv), n, -1.0)], nv, -np.inf, 0.0)
            rows.block([(ends, z, 1.0), (np.arange(nv), n, -vm_cap)], nv, -np.inf, 0.0)
        # z on tree edges only, at most T, at most the edge's capacity
        rows.block([(np.arange(ne), z, 1.0), (np.arange(ne), x, -cap)], ne, -np.inf, 0.0)
        rows.block([(np.arange(ne), z, 1.0), (np.arange(ne), self.t, -1.0)], ne, -np.inf, 0.0)
        # F^k: T Gbit/s from the source to terminal k, on edges carrying at least as much
        for term in range(k):
            f = self.f0 + term * ne + np.arange(ne)
            sign = np.zeros(nv)
            sign[0] -= 1.0
            sign[1 + term] += 1.0
            rows.block(
                [(es, f, 1.0), (ed, f, -1.0), (np.arange(nv), np.full(nv, self.t), sign)],
                nv,
                0.0,
                0.0,
            )
            rows.block([(np.arange(ne), f, 1.0), (np.arange(ne), z, -1.0)], ne, -np.inf, 0.0)
        self.rows = rows
        self.cost_row = np.zeros(nx)
        self.cost_row[z] = cost
        self.cost_row[self.n0 : self.t] = GBIT_PER_GB / 3600 * price
        self.integrality = np.zeros(nx)
        self.integrality[x] = 1
        self.integrality[self.n0 : self.t] = 1
        self.timed_out = False

    def solve(self, ceiling: float | None = None, *, cheapest: bool = True) -> np.ndarray | None:
        """Fixed T: the cheapest tree. Free T: the fastest (``cheapest``: then the
        cheapest of the fastest, in the same solve)."""
        fixed = self.fixed_t is not None
        lb = np.zeros(self.nx)
        ub = np.full(self.nx, np.inf)
        ub[self.x0 : self.x0 + self.ne] = 1.0
        ub[self.n0 : self.t] = self.limits
        if fixed:
            lb[self.t] = ub[self.t] = self.fixed_t
        else:
            ub[self.t] = self.upper
        constraints = [self.rows.constraint()]
        if ceiling is not None:
            row = self.cost_row.copy()
            row[self.t] = self.req.requests_usd_per_gb - ceiling
            constraints.append(LinearConstraint(row.reshape(1, -1), -np.inf, 0.0))
        if fixed:
            objective = self.cost_row.copy()
        else:
            objective = LAMBDA * self.cost_row if cheapest else np.zeros(self.nx)
            objective[self.t] = -1.0
        objective[self.x0 : self.x0 + self.ne] += EDGE_CHARGE
        res = milp(
            objective,
            constraints=constraints,
            integrality=self.integrality,
            bounds=Bounds(lb, ub),
            options={"time_limit": TIME_LIMIT_S, "mip_rel_gap": MIP_GAP},
        )
        if res.x is None or res.status not in (0, 1):
            return None
        self.timed_out = self.timed_out or res.status == 1
        return res.x

    def to_tree(self, x: np.ndarray) -> Tree:
        chosen = [
            (self.regions[self.es[e]], self.regions[self.ed[e]])
            for e in range(self.ne)
            if x[self.x0 + e] > 0.5
        ]
        edges = prune(chosen, self.req.src, set(self.req.terminals))
        used = {self.req.src} | {b for _, b in edges}
        vms = np.rint(x[self.n0 : self.t]).astype(int)
        gateways = {r: max(1, int(vms[i])) for i, r in enumerate(self.regions) if r in used}
        return Tree(edges=edges, gateways=gateways, throughput_gbps=float(x[self.t]))


def _usable(profile: Profile, idx: np.ndarray, lim: np.ndarray, t: float | None) -> np.ndarray:
    """Edges a tree may use among the regions ``idx`` (the source first): measured,
    priced, not into the source and, when every tree edge must carry ``t`` Gbit/s,
    only those whose two ends' gateways can carry it alone."""
    usable = profile.usable[np.ix_(idx, idx)].copy()
    usable[:, 0] = False  # nothing flows into the source
    if t is not None:
        g = profile.gbps_array[np.ix_(idx, idx)]
        eg, ing = profile.egress_cap_array[idx], profile.ingress_cap_array[idx]
        usable &= g * np.minimum.outer(lim, lim) >= t * (1 - 1e-12)
        usable &= (eg * lim)[:, None] >= t * (1 - 1e-12)
        usable &= (ing * lim)[None, :] >= t * (1 - 1e-12)
    return usable


class _Reach:
    """Is there a tree that carries ``t`` Gbit/s to every destination with every
    region's gateways at their limit? A 0-1 feasibility problem (T is a constant,
    so ``z_e = t x_e`` is linear); its answer is monotone in t, so the fastest tree
    is found by bisection, far faster than maximising T in one MILP (whose LP
    relaxation is the much higher multi-path bound)."""

    def __init__(self, req: TreeRequest) -> None:
        self.req = req
        self.regions = list(dict.fromkeys((req.src, *req.terminals, *req.candidates)))
        p = req.profile
        self.idx = np.array([p.index[r] for r in self.regions])
        self.lim = np.array([req.limit(r) for r in self.regions], dtype=float)
        self.timed_out = False
        self.solves = 0

    def tree(self, t: float) -> list[tuple[str, str]] | None:
        """A tree carrying ``t`` Gbit/s (its edges), or None."""
        p, idx, lim = self.req.profile, self.idx, self.lim
        k, nv = len(self.req.terminals), len(self.regions)
        es, ed = np.nonzero(_usable(p, idx, lim, t))
        ne = len(es)
        if ne == 0:
            return None
        g = p.gbps_array[np.ix_(idx, idx)][es, ed]
        eg = p.egress_cap_array[idx]
        x = np.arange(ne)
        rows = _Rows(ne + k * ne)
        rows.block([(ed, x, 1.0)], nv, -np.inf, 1.0)
        for e in np.nonzero(es > k)[0]:
            rows.block([(0, x[e], 1.0), (0, x[ed == es[e]], -1.0)], 1, -np.inf, 0.0)
        rows.block([(es, x, t / g)], nv, -np.inf, lim)
        rows.block([(es, x, t)], nv, -np.inf, eg * lim)
        for term in range(k):
            f = ne + term * ne + np.arange(ne)
            rhs = np.zeros(nv)
            rhs[0], rhs[1 + term] = 1.0, -1.0
            rows.block([(es, f, 1.0), (ed, f, -1.0)], nv, rhs, rhs)
            rows.block([(np.arange(ne), f, 1.0), (np.arange(ne), x, -1.0)], ne, -np.inf, 0.0)
        integrality = np.zeros(ne + k * ne)
        integrality[:ne] = 1
        self.solves += 1
        res = milp(
            np.zeros(ne + k * ne),
            constraints=[rows.constraint()],
            integrality=integrality,
            bounds=Bounds(0.0, 1.0),
            options={"time_limit": TIME_LIMIT_S},
        )
        self.timed_out = self.timed_out or res.status == 1
        if res.x is None or res.status not in (0, 1):
            return None
        chosen = [(self.regions[es[e]], self.regions[ed[e]]) for e in range(ne) if res.x[e] > 0.5]
        return prune(chosen, self.req.src, set(self.req.terminals))

    def fastest(self) -> tuple[float, list[tuple[str, str]]]:
        """The most Gbit/s any tree carries (to a relative 1e-6), and that tree."""
        at_limit = dict(zip(self.regions, (int(v) for v in self.lim), strict=True))
        first = reachable_tree(self.req.profile, self.regions, self.req.src, self.req.terminals)
        if first is None:
            return 0.0, []
        best, lo = first, tree_throughput(self.req.profile, self.req.src, first, at_limit)
        eg, ing = self.req.profile.egress_cap_array, self.req.profile.ingress_cap_array
        hi = min(
            eg[self.idx[0]] * self.lim[0],
            *(ing[self.idx[1 + j]] * self.lim[1 + j] for j in range(len(self.req.terminals))),
        )
        while hi - lo > BISECT_TOLERANCE * hi:
            mid = (lo + hi) / 2
            found = self.tree(mid)
            if found is None:
                hi = mid
                continue
            best = found
            lo = max(mid, tree_throughput(self.req.profile, self.req.src, found, at_limit))
        return lo, best


def reachable_tree(
    profile: Profile, regions: Sequence[str], src: str, terminals: Sequence[str]
) -> list[tuple[str, str]] | None:
    """A tree of measured edges reaching every terminal (breadth first), or None."""
    parent: dict[str, str] = {}
    frontier, seen = [src], {src}
    while frontier:
        nxt = []
        for a in frontier:
            for b in regions:
                if b not in seen and profile.usable[profile.index[a], profile.index[b]]:
                    seen.add(b)
                    parent[b] = a
                    nxt.append(b)
        frontier = nxt
    if any(t not in seen for t in terminals):
        return None
    return prune([(a, b) for b, a in parent.items()], src, set(terminals))


def min_gateways(
    profile: Profile, src: str, edges: Sequence[tuple[str, str]], t: float
) -> dict[str, int]:
    """The fewest gateways per region for ``edges`` to carry ``t`` Gbit/s (each
    region's constraints are its own, so this is exact)."""
    need: dict[str, int] = {}
    for v in {src} | {b for _, b in edges}:
        out = [b for a, b in edges if a == v]
        inn = [a for a, b in edges if b == v]
        least = 1.0
        if out:
            least = max(least, t * sum(1.0 / profile.link_gbps(v, b) for b in out))
            least = max(least, t * len(out) / profile.cloud(v).egress_gbps_per_vm)
        if inn:
            least = max(least, t / profile.link_gbps(inn[0], v))
            least = max(least, t / profile.cloud(v).ingress_gbps_per_vm)
        need[v] = math.ceil(least - 1e-9)
    return need


def relay_candidates(
    profile: Profile, src: str, terminals: Sequence[str], pool: Sequence[str]
) -> list[str]:
    """The relays worth offering the solver from a large pool: for each way into a
    destination (from the source or another destination) the fastest and the
    cheapest single relay, and the cheapest hubs to all destinations at once."""
    ends = [src, *terminals]
    relays = [r for r in pool if r not in ends]
    picked: list[str] = []

    def cost(a: str, b: str) -> float:
        return profile.egress_usd_per_gb(a, b) if profile.pair_gbps(a, b) > 0 else math.inf

    for a in ends:
        for b in terminals:
            if a == b:
                continue
            fast = [(min(profile.pair_gbps(a, r), profile.pair_gbps(r, b)), r) for r in relays]
            cheap = [(cost(a, r) + cost(r, b), r) for r in relays]
            picked += [max(fast)[1]] if fast and max(fast)[0] > 0 else []
            picked += [min(cheap)[1]] if cheap and math.isfinite(min(cheap)[0]) else []
    hubs = sorted((cost(src, r) + sum(cost(r, t) for t in terminals), r) for r in relays)
    picked += [r for c, r in hubs[:HUBS] if math.isfinite(c)]
    return list(dict.fromkeys(picked))


def prune(edges: list[tuple[str, str]], src: str, terminals: set[str]) -> list[tuple[str, str]]:
    """The arborescence of ``edges`` reachable from ``src``, without branches that
    lead to no terminal; parents before children."""
    children: dict[str, list[str]] = {}
    for a, b in edges:
        children.setdefault(a, []).append(b)
    needed: dict[str, bool] = {}

    def visit(v: str, seen: frozenset[str]) -> bool:
        keep = v in terminals
        for c in children.get(v, []):
            if c not in seen and visit(c, seen | {c}):
                keep = True
        needed[v] = keep or needed.get(v, False)
        return keep

    visit(src, frozenset({src}))
    out: list[tuple[str, str]] = []
    frontier, reached = [src], {src}
    while frontier:
        nxt = []
        for a in frontier:
            for b in children.get(a, []):
                if b not in reached and needed.get(b):
                    reached.add(b)
                    out.append((a, b))
                    nxt.append(b)
        frontier = nxt
    return out


def tree_throughput(
    profile: Profile, src: str, edges: Sequence[tuple[str, str]], gateways: Mapping[str, int]
) -> float:
    """Gbit/s a tree carries to every destination with ``gateways`` VMs per region:
    the tightest of each region's connection budget and per-VM caps (every tree
    edge carries the whole stream)."""
    best = math.inf
    regions = {src} | {b for _, b in edges}
    for v in regions:
        n = gateways.get(v, 0)
        out = [b for a, b in edges if a == v]
        inn = [a for a, b in edges if b == v]
        if n <= 0 and (out or inn):
            return 0.0
        if any(profile.link_gbps(a, b) <= 0 for a, b in edges):
            return 0.0
        if out:
            best = min(best, n / sum(1.0 / profile.link_gbps(v, b) for b in out))
            best = min(best, profile.cloud(v).egress_gbps_per_vm * n / len(out))
        if inn:
            best = min(best, n * profile.link_gbps(inn[0], v))
            best = min(best, profile.cloud(v).ingress_gbps_per_vm * n)
    return 0.0 if not math.isfinite(best) else best


def plan_tree(req: TreeRequest) -> Tree:
    """The tree the mode asks for (see the module docstring)."""
    started = time.perf_counter()
    reach = _Reach(req)
    fastest, found = 0.0, list[tuple[str, str]]()
    if req.mode == "cheapest":
        target = float(req.target_gbps or 0.0)
        model = _TreeModel(req, fixed_t=target)
        x = model.solve()
        if x is None:
            best, _ = reach.fastest()
            raise PlanError(
                f"no tree from {req.src} to {', '.join(req.terminals)} reaches {target:g} Gbit/s "
                f"with the gateway limits; the best achievable is {best:.3g} Gbit/s"
            )
    else:
        fastest, found = reach.fastest()
        if fastest <= EPS:
            raise PlanError(
                f"the profile has no measured tree from {req.src} to {', '.join(req.terminals)}"
            )
        if req.max_cost_per_gb is None:
            # the cheapest of the fastest trees: T fixed a hair below the bisection's
            model = _TreeModel(req, fixed_t=fastest * (1 - 1e-9))
            x = model.solve()
        else:
            model = _TreeModel(req, t_max=fastest)
            x = model.solve(req.max_cost_per_gb)
            if x is None or x[model.t] <= EPS:
                raise PlanError(_no_tree(req, model))
    if x is not None:
        tree = model.to_tree(x)
    else:  # the solver's time ran out: the bisection's tree, with as few gateways as it needs
        model.timed_out = True
        tree = Tree(
            edges=found,
            gateways=min_gateways(req.profile, req.src, found, fastest),
            throughput_gbps=fastest,
        )
    exact = tree_throughput(req.profile, req.src, tree.edges, tree.gateways)
    tree.throughput_gbps = float(req.target_gbps or 0.0) if req.mode == "cheapest" else exact
    if model.timed_out or reach.timed_out:
        tree.notes.append(
            f"solver stopped at its {TIME_LIMIT_S:g} s limit: best tree found, not proven optimal"
        )
    tree.notes.append(
        f"multicast milp over {model.nv} regions and {model.ne} edges "
        f"({reach.solves} feasibility solves) in {time.perf_counter() - started:.2f} s"
    )
    return tree


def _no_tree(req: TreeRequest, model: _TreeModel) -> str:
    """Why no tree fits the cost ceiling, with the cheapest $/GB a tree costs."""
    free = model.solve()
    if free is None or free[model.t] <= EPS:
        return f"the profile has no measured tree from {req.src} to {', '.join(req.terminals)}"
    # the cheapest tree per GB moves as fast as its gateways allow: a slower one
    # pays the same egress and longer VM-hours
    slow = _TreeModel(req, fixed_t=float(free[model.t]) * 1e-3).solve()
    rate = ""
    if slow is not None:
        tree = model.to_tree(slow)
        gbps = tree_throughput(req.profile, req.src, tree.edges, tree.gateways)
        egress = sum(req.profile.egress_usd_per_gb(a, b) for a, b in tree.edges)
        vm = sum(req.profile.regions[r].vm_usd_per_hour * n for r, n in tree.gateways.items())
        per_gb = egress + GBIT_PER_GB / 3600 * vm / max(gbps, EPS) + req.requests_usd_per_gb
        rate = f"; the cheapest achievable is about ${per_gb:.4f}/GB"
    return f"no tree to {', '.join(req.terminals)} costs at most ${req.max_cost_per_gb:g}/GB{rate}"


# ---------------------------------------------------------------- the entry point


def plan_multicast(
    src_region: str,
    dst_regions: Sequence[str],
    *,
    bytes: int = 0,
    objects: int | None = None,
    parts: int | None = None,
    multipart_objects: int | None = None,
    mode: Mode = "fastest",
    target_gbps: float | None = None,
    max_cost_per_gb: float | None = None,
    max_vms: int | Mapping[str, int] | None = None,
    vcpu_quota: int | Mapping[str, int] | None = None,
    regions: Sequence[str] | None = None,
    profile: Profile | str | Path | None = None,
) -> RoutePlan:
    """Plan copying ``bytes`` from ``src_region`` to every region of ``dst_regions``
    (one per destination, in order; repeats and the source's own region allowed)
    as one distribution tree, with the baseline of one direct copy each.

    The modes and limits are :func:`skyhop.planner.plan`'s; the cost ceiling is
    in dollars per GB of the dataset. The default target of ``cheapest`` is what
    one gateway pair achieves on the slowest direct link to a destination.
    Raises PlanError when the request cannot be met, naming the best figure."""
    prof = profile if isinstance(profile, Profile) else load_profile(profile)
    prof = with_remote_regions(prof, [src_region, *dst_regions])
    if not dst_regions:
        raise UsageError("a multicast plan needs at least one destination")
    if mode not in MODES:
        raise UsageError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    if target_gbps is not None and (target_gbps <= 0 or mode != "cheapest"):
        raise UsageError("a throughput target is a positive Gbit/s figure for mode cheapest")
    if max_cost_per_gb is not None and (max_cost_per_gb <= 0 or mode != "fastest"):
        raise UsageError("a cost ceiling is a positive $/GB figure for mode fastest")
    work = workload(bytes, objects, parts, multipart_objects)
    src = _resolve_or_local(prof, src_region)
    legs = tuple(_resolve_or_local(prof, r) for r in dst_regions)
    trivial = LOCAL in (src, *legs) or all(leg == src for leg in legs)
    if mode == "cheapest" and target_gbps is None and not trivial:
        direct = [prof.pair_gbps(src, leg) for leg in legs if leg != src]
        if not all(direct):
            raise PlanError("a destination has no measured direct link: give a target throughput")
        target_gbps = min(direct)
    baseline = _separate(prof, src, legs, work, max_vms, vcpu_quota, mode, target_gbps)
    if trivial:
        result = _trivial(prof, src, legs, work)
        result.separate = baseline
        result.notes.append(f"profile: {prof.name}")
        return result
    terminals = [leg for leg in dict.fromkeys(legs) if leg != src]
    narrowed = ""
    if regions is not None:
        pool = [prof.resolve(r) for r in regions]
    else:
        pool = prof.region_names
        if len(pool) > MAX_POOL:
            pool = relay_candidates(prof, src, terminals, pool)
            narrowed = (
                f"relay candidates: {len(pool)} of {len(prof.region_names)} profiled regions "
                "(the fastest and cheapest single relays into each destination, and the "
                "cheapest hubs; name others with --regions)"
            )
    candidates = tuple(dict.fromkeys([src, *legs, *pool]))
    limits = gateway_limits(prof, candidates, max_vms, vcpu_quota, needed=(src, *legs))
    req = TreeRequest(
        profile=prof,
        src=src,
        legs=legs,
        work=work,
        mode=mode,
        target_gbps=target_gbps,
        max_cost_per_gb=max_cost_per_gb,
        limits=limits,
        candidates=candidates,
    )
    tree = plan_tree(req)
    if narrowed:
        tree.notes.append(narrowed)
    result = to_multicast_plan(req, tree)
    result.separate = baseline
    result.notes.append(f"profile: {prof.name}")
    return result


def to_multicast_plan(req: TreeRequest, tree: Tree) -> RoutePlan:
    """Cost a tree and describe it as a RoutePlan (see RoutePlan's docstring)."""
    p = req.profile
    total = tree.throughput_gbps
    seconds = transfer_seconds(req.work.bytes, total)
    gb = req.work.gigabytes
    conns = p.connections_per_vm_pair
    edges = []
    for a, b in tree.edges:
        link = p.link_gbps(a, b)
        connections = max(1, math.ceil(conns * total / link - 1e-6)) if link > 0 else conns
        edges.append(Edge(src=a, dst=b, gbps=round(total, 6), connections=connections))
    egress = gb * sum(p.egress_usd_per_gb(a, b) for a, b in tree.edges)
    terminals = set(req.terminals)
    gateways = [
        Gateway(
            region=r,
            count=n,
            role="source" if r == req.src else "destination" if r in terminals else "relay",
            instance_type=p.cloud(r).instance_type,
        )
        for r, n in sorted(
            tree.gateways.items(),
            key=lambda kv: (0 if kv[0] == req.src else 2 if kv[0] in terminals else 1, kv[0]),
        )
    ]
    vm_regions = dict(tree.gateways)
    if req.src in req.legs:  # a destination in the source's own region
        gateways.append(
            Gateway(
                region=req.src,
                count=1,
                role="destination",
                instance_type=p.cloud(req.src).instance_type,
            )
        )
        vm_regions[req.src] = vm_regions.get(req.src, 0) + 1
    counts = request_counts(req.work)
    notes = list(tree.notes)
    notes.append(
        "tree: " + "; ".join(f"{a} -> {b}" for a, b in tree.edges)
        if tree.edges
        else "tree: every destination in the source's region"
    )
    notes.append(
        "requests: "
        + ", ".join(f"{k}={v}" for k, v in counts.items() if v)
        + f" (destination requests x{len(req.legs)})"
        if any(counts.values())
        else "requests: none"
    )
    return RoutePlan(
        planner="multicast",
        src_region=req.src,
        dst_region=req.legs[0],
        dst_regions=list(req.legs),
        gateways=gateways,
        edges=edges,
        path=tree_path(req.src, tree.edges, req.legs[0]),
        throughput_gbps=round(total, 6),
        bytes=req.work.bytes,
        seconds=seconds if math.isfinite(seconds) else 0.0,
        cost=CostEstimate(
            egress_usd=egress,
            vm_usd=vm_usd(p, vm_regions, seconds),
            requests_usd=req.requests_usd,
        ),
        notes=notes,
        separate=None,
    )


def tree_path(src: str, edges: Sequence[tuple[str, str]], dst: str) -> list[str]:
    """Regions from ``src`` down the tree to ``dst`` (``[src, src]`` for the source's own)."""
    parent = {b: a for a, b in edges if a != b}
    if dst == src or dst not in parent:
        return [src, dst]
    path = [dst]
    while path[-1] != src:
        path.append(parent[path[-1]])
    return path[::-1]


def _trivial(prof: Profile, src: str, legs: tuple[str, ...], work: Workload) -> RoutePlan:
    """Local gateway processes, or every destination in the source's region: the
    source sends to each destination itself; no relays, no estimate of egress to or
    from this machine."""
    local = LOCAL in (src, *legs)
    if local:
        gbps = prof.local_gbps
        note = "gateways run as local processes; throughput is nominal"
    else:
        cloud = prof.cloud(src)
        gbps = min(cloud.egress_gbps_per_vm, cloud.ingress_gbps_per_vm)
        note = "same-region copies: no egress; throughput is the per-VM cap, not a measurement"
    instance = None if local else prof.cloud(src).instance_type
    unique = list(dict.fromkeys(legs))
    seconds = transfer_seconds(work.bytes, gbps)
    gateways = [Gateway(region=src, count=1, role="source", instance_type=instance)]
    gateways += [
        Gateway(region=leg, count=1, role="destination", instance_type=instance) for leg in legs
    ]
    vm = 0.0 if local else (1 + len(legs)) * prof.regions[src].vm_usd_per_hour * seconds / 3600
    counts = request_counts(work)
    requests = request_usd(prof, src, LOCAL, counts) + sum(
        request_usd(prof, LOCAL, leg, counts) for leg in legs
    )
    return RoutePlan(
        planner="multicast",
        src_region=src,
        dst_region=legs[0],
        dst_regions=list(legs),
        gateways=gateways,
        edges=[Edge(src=src, dst=leg, gbps=gbps, connections=8) for leg in unique],
        path=[src, legs[0]],
        throughput_gbps=gbps,
        bytes=work.bytes,
        seconds=seconds,
        cost=CostEstimate(egress_usd=0.0, vm_usd=vm, requests_usd=requests),
        notes=[note, "tree: the source sends to each destination"],
        separate=None,
    )


def _separate(
    prof: Profile,
    src: str,
    legs: tuple[str, ...],
    work: Workload,
    max_vms: int | Mapping[str, int] | None,
    vcpu_quota: int | Mapping[str, int] | None,
    mode: Mode,
    target_gbps: float | None,
) -> SeparateCopies:
    """One direct copy per destination, side by side, planned in the same mode: the
    fastest, or the cheapest at the tree's target (a destination whose direct link
    cannot reach it: its fastest)."""

    def direct(leg: str) -> RoutePlan:
        plan_direct = partial(
            plan,
            src,
            leg,
            bytes=work.bytes,
            objects=work.objects,
            parts=work.parts,
            multipart_objects=work.multipart_objects,
            planner="direct",
            max_vms=max_vms,
            vcpu_quota=vcpu_quota,
            profile=prof,
        )
        if mode == "cheapest" and leg != src and LOCAL not in (src, leg):
            try:
                return plan_direct(mode="cheapest", target_gbps=target_gbps)
            except PlanError:
                pass
        return plan_direct()

    plans = [direct(leg) for leg in legs]
    return SeparateCopies(
        copies=len(plans),
        throughput_gbps=min(p.throughput_gbps for p in plans),
        seconds=max(p.seconds for p in plans),
        source_bytes_read=work.bytes * len(plans),
        cost=CostEstimate(
            egress_usd=sum(p.cost.egress_usd for p in plans),
            vm_usd=sum(p.cost.vm_usd for p in plans),
            requests_usd=sum(p.cost.requests_usd for p in plans),
        ),
    )
