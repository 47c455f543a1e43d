"""The planners on the shipped profile: optimality against brute force on small
graphs, both MILP modes, infeasible requests, VM limits and unknown regions."""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
from scipy.optimize import linprog

from skyhop.errors import PlanError, UsageError
from skyhop.models import RoutePlan
from skyhop.planner import load_profile, plan, plan_json, render_plan, workload
from skyhop.planner.costs import request_counts

PROFILE = load_profile()
GBIT_PER_GB = 8.0


def small_graphs(count: int, size: int, seed: int) -> list[tuple[str, str, list[str]]]:
    """Random (src, dst, candidate regions) triples from the shipped profile."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        regions = rng.sample(PROFILE.region_names, size)
        out.append((regions[0], regions[1], regions))
    return out


# ---------------------------------------------------------------- brute force


def lp_for_vms(regions, src, dst, vms, *, target=None, ceiling=None, requests_per_gb=0.0):
    """Skyplane's original LP (explicit connection variables) for fixed VM counts.

    Returns (throughput, cost rate) of the best flow: the maximum throughput
    (cheapest among those, by a second LP) when ``target`` is None, else the
    cheapest flow delivering ``target``. None when infeasible.
    """
    p = PROFILE
    C = p.connections_per_vm_pair
    edges = [
        (i, j)
        for i, a in enumerate(regions)
        for j, b in enumerate(regions)
        if i != j and p.usable[p.index[a], p.index[b]]
    ]
    ne, nr = len(edges), len(regions)
    # x = [f_e..., c_e..., T]
    nx = 2 * ne + 1
    t = 2 * ne
    A_ub, b_ub, A_eq, b_eq = [], [], [], []

    def row():
        return np.zeros(nx)

    for k, (i, j) in enumerate(edges):
        g = p.gbps_array[p.index[regions[i]], p.index[regions[j]]]
        r = row()
        r[k] = 1.0
        r[ne + k] = -g / C  # f <= g * c / C
        A_ub.append(r)
        b_ub.append(0.0)
    for v in range(nr):
        cap_out = p.egress_cap_array[p.index[regions[v]]]
        cap_in = p.ingress_cap_array[p.index[regions[v]]]
        out_e = [k for k, (i, _) in enumerate(edges) if i == v]
        in_e = [k for k, (_, j) in enumerate(edges) if j == v]
        for ks, limit in (
            ([ne + k for k in out_e], C * vms[v]),
            ([ne + k for k in in_e], C * vms[v]),
            (out_e, cap_out * vms[v]),
            (in_e, cap_in * vms[v]),
        ):
            r = row()
            r[ks] = 1.0
            A_ub.append(r)
            b_ub.append(limit)
        r = row()
        r[out_e] = 1.0
        r[in_e] = -1.0
        if regions[v] == src:
            r[t] = -1.0
            for k in in_e:  # nothing flows into the source
                z = row()
                z[k] = 1.0
                A_eq.append(z)
                b_eq.append(0.0)
        elif regions[v] == dst:
            r[t] = 1.0
            for k in out_e:  # nothing flows out of the destination
                z = row()
                z[k] = 1.0
                A_eq.append(z)
                b_eq.append(0.0)
        A_eq.append(r)
        b_eq.append(0.0)
    cost = row()
    for k, (i, j) in enumerate(edges):
        cost[k] = p.cost_array[p.index[regions[i]], p.index[regions[j]]]
    vm_rate = (
        GBIT_PER_GB / 3600 * sum(vms[v] * p.vm_price_array[p.index[regions[v]]] for v in range(nr))
    )
    if ceiling is not None:
        r = cost.copy()
        r[t] = requests_per_gb - ceiling
        A_ub.append(r)
        b_ub.append(-vm_rate)
    bounds = [(0, None)] * (2 * ne) + [(target, target) if target is not None else (0, None)]
    kw = dict(A_ub=np.array(A_ub), b_ub=np.array(b_ub), A_eq=np.array(A_eq), b_eq=np.array(b_eq))
    if target is not None:
        res = linprog(cost, bounds=bounds, method="highs", **kw)
        return None if res.status != 0 else (target, float(cost @ res.x) + vm_rate)
    obj = row()
    obj[t] = -1.0
    res = linprog(obj, bounds=bounds, method="highs", **kw)
    if res.status != 0:
        return None
    best_t = float(res.x[t])
    bounds[-1] = (best_t * (1 - 1e-9), None)
    res2 = linprog(cost, bounds=bounds, method="highs", **kw)
    rate = float(cost @ res2.x) if res2.status == 0 else float(cost @ res.x)
    return best_t, rate + vm_rate


def brute_force(regions, src, dst, limit, **kw):
    """Best (throughput, cost rate) over every integer VM assignment."""
    best = None
    for vms in itertools.product(range(limit + 1), repeat=len(regions)):
        if vms[regions.index(src)] == 0 or vms[regions.index(dst)] == 0:
            continue
        got = lp_for_vms(regions, src, dst, vms, **kw)
        if got is None or got[0] <= 1e-9:
            continue
        if kw.get("target") is None:
            key = (round(got[0], 6), -got[1])
            if best is None or key > (round(best[0], 6), -best[1]):
                best = got
        elif best is None or got[1] < best[1]:
            best = got
    return best


def cost_rate(route: RoutePlan) -> float:
    """$/GB x Gbit/s of a plan's egress and VMs (what the MILP minimises)."""
    p = PROFILE
    egress = sum(e.gbps * p.egress_usd_per_gb(e.src, e.dst) for e in route.edges)
    vms = sum(g.count * p.regions[g.region].vm_usd_per_hour for g in route.gateways)
    return egress + GBIT_PER_GB / 3600 * vms


# ---------------------------------------------------------------- optimality


@pytest.mark.parametrize("src,dst,regions", small_graphs(4, 4, seed=7))
def test_milp_fastest_is_optimal_against_brute_force(src, dst, regions):
    limit = 2
    route = plan(src, dst, bytes=10**11, planner="milp", max_vms=limit, regions=regions)
    best_t, best_rate = brute_force(regions, src, dst, limit)
    assert route.throughput_gbps == pytest.approx(best_t, rel=1e-5)
    assert cost_rate(route) == pytest.approx(best_rate, rel=2e-3)
    assert all(g.count <= limit for g in route.gateways)


@pytest.mark.parametrize("src,dst,regions", small_graphs(3, 4, seed=11))
def test_milp_cheapest_is_optimal_against_brute_force(src, dst, regions):
    limit = 2
    fastest = plan(src, dst, bytes=10**11, planner="milp", max_vms=limit, regions=regions)
    target = round(fastest.throughput_gbps * 0.6, 3)
    route = plan(
        src,
        dst,
        bytes=10**11,
        planner="milp",
        mode="cheapest",
        target_gbps=target,
        max_vms=limit,
        regions=regions,
    )
    _, best_rate = brute_force(regions, src, dst, limit, target=target)
    assert route.throughput_gbps == pytest.approx(target, rel=1e-6)
    assert cost_rate(route) == pytest.approx(best_rate, rel=1e-4)


@pytest.mark.parametrize("src,dst,regions", small_graphs(3, 4, seed=5))
def test_milp_fastest_under_cost_ceiling_is_optimal_against_brute_force(src, dst, regions):
    limit = 2
    work = workload(10**11)
    free = plan(src, dst, bytes=work.bytes, planner="milp", max_vms=limit, regions=regions)
    per_gb = free.cost.total_usd / (work.bytes / 1e9)
    cheapest_direct = plan(src, dst, bytes=work.bytes, planner="direct", max_vms=1)
    floor = cheapest_direct.cost.total_usd / (work.bytes / 1e9)
    ceiling = round(min(per_gb, floor) * 0.999 + max(per_gb, floor) * 0.001, 5)
    requests_per_gb = free.cost.requests_usd / (work.bytes / 1e9)
    best = brute_force(regions, src, dst, limit, ceiling=ceiling, requests_per_gb=requests_per_gb)
    if best is None:
        with pytest.raises(PlanError, match="cheapest achievable"):
            plan(
                src,
                dst,
                bytes=work.bytes,
                planner="milp",
                max_vms=limit,
                regions=regions,
                max_cost_per_gb=ceiling,
            )
        return
    route = plan(
        src,
        dst,
        bytes=work.bytes,
        planner="milp",
        max_vms=limit,
        regions=regions,
        max_cost_per_gb=ceiling,
    )
    assert route.throughput_gbps == pytest.approx(best[0], rel=1e-5)
    assert route.cost.total_usd / (work.bytes / 1e9) <= ceiling * (1 + 1e-6)


@pytest.mark.parametrize("src,dst,regions", small_graphs(5, 6, seed=3))
def test_overlay_is_the_best_single_relay_against_brute_force(src, dst, regions):
    p = PROFILE
    route = plan(src, dst, bytes=10**10, planner="overlay", regions=regions)
    direct = p.pair_gbps(src, dst)
    relays = {
        r: min(p.pair_gbps(src, r), p.pair_gbps(r, dst)) for r in regions if r not in (src, dst)
    }
    best_relay = max(relays, key=relays.get)
    if relays[best_relay] > direct:
        assert route.path == [src, best_relay, dst]
        assert route.throughput_gbps == pytest.approx(relays[best_relay])
        assert [g.role for g in route.gateways] == ["source", "relay", "destination"]
    else:
        assert route.path == [src, dst]
        assert route.throughput_gbps == pytest.approx(direct)


def test_direct_uses_n_gateways_per_side_and_the_per_vm_caps():
    src, dst = "aws:us-east-1", "gcp:us-central1-a"
    route = plan(src, dst, bytes=10**10, planner="direct", max_vms=3)
    p = PROFILE
    per_pair = min(
        p.link_gbps(src, dst), p.cloud(src).egress_gbps_per_vm, p.cloud(dst).ingress_gbps_per_vm
    )
    assert route.throughput_gbps == pytest.approx(3 * per_pair)
    assert [(g.region, g.count, g.role) for g in route.gateways] == [
        (src, 3, "source"),
        (dst, 3, "destination"),
    ]
    assert route.edges[0].connections == 3 * p.connections_per_vm_pair
    assert route.seconds == pytest.approx(10**10 * 8 / (route.throughput_gbps * 1e9))
    assert route.cost.egress_usd == pytest.approx(10 * p.egress_usd_per_gb(src, dst))


def test_milp_without_relays_equals_direct():
    src, dst = "azure:eastus", "aws:eu-west-1"
    milp = plan(src, dst, bytes=10**10, planner="milp", max_vms=2, regions=[])
    direct = plan(src, dst, bytes=10**10, planner="direct", max_vms=2)
    assert milp.throughput_gbps == pytest.approx(direct.throughput_gbps)
    assert milp.path == [src, dst]


# ---------------------------------------------------------------- the full profile


def test_milp_over_all_regions_both_modes():
    src, dst = "aws:af-south-1", "aws:ap-northeast-2"
    fast = plan(src, dst, bytes=10**12, planner="milp", max_vms=4)
    overlay = plan(src, dst, bytes=10**12, planner="overlay", max_vms=4)
    assert fast.throughput_gbps >= overlay.throughput_gbps * (1 - 1e-9)
    assert fast.throughput_gbps > 2 * PROFILE.pair_gbps(src, dst) * 4
    assert all(g.count <= 4 for g in fast.gateways)
    assert sum(e.gbps for e in fast.edges if e.src == src) == pytest.approx(fast.throughput_gbps)
    assert sum(e.gbps for e in fast.edges if e.dst == dst) == pytest.approx(fast.throughput_gbps)

    cheap = plan(
        src, dst, bytes=10**12, planner="milp", mode="cheapest", target_gbps=5.0, max_vms=4
    )
    assert cheap.throughput_gbps == pytest.approx(5.0)
    assert cheap.cost.total_usd <= fast.cost.total_usd
    assert cheap.seconds > fast.seconds


def test_infeasible_target_names_the_best_achievable():
    src, dst = "aws:us-east-1", "aws:eu-west-1"
    best = plan(src, dst, bytes=10**10, planner="milp", max_vms=1).throughput_gbps
    with pytest.raises(PlanError, match=r"best achievable is ([0-9.]+) Gbit/s") as info:
        plan(
            src, dst, bytes=10**10, planner="milp", mode="cheapest", target_gbps=best * 3, max_vms=1
        )
    assert float(info.value.args[0].rsplit("is ", 1)[1].split()[0]) == pytest.approx(best, rel=1e-2)
    assert "\n" not in str(info.value)
    for planner in ("direct", "overlay"):
        with pytest.raises(PlanError, match="best achievable"):
            plan(src, dst, bytes=10**10, planner=planner, mode="cheapest", target_gbps=1000)


def test_cost_ceiling_below_any_route_names_the_cheapest():
    for planner in ("direct", "overlay", "milp"):
        with pytest.raises(PlanError, match=r"cheapest achievable is (about )?\$0\.\d+/GB"):
            plan(
                "aws:us-east-1",
                "gcp:asia-east1-a",
                bytes=10**10,
                planner=planner,
                max_cost_per_gb=0.001,
            )


def test_vm_limits_per_region_and_from_vcpu_quota():
    src, dst = "aws:af-south-1", "aws:ap-northeast-2"
    route = plan(src, dst, bytes=10**11, max_vms={src: 3, dst: 3, "aws": 1, "gcp": 2, "azure": 2})
    for g in route.gateways:
        limit = {src: 3, dst: 3}.get(
            g.region, {"aws": 1, "gcp": 2, "azure": 2}[g.region.split(":")[0]]
        )
        assert g.count <= limit
    # 100 vCPUs of quota fit three 32-vCPU gateways
    quota = plan(src, dst, bytes=10**11, max_vms=10, vcpu_quota=100)
    assert max(g.count for g in quota.gateways) <= 3
    with pytest.raises(PlanError, match="vCPU quota"):
        plan(src, dst, bytes=10**11, vcpu_quota=16)


def test_unknown_region_names_the_nearest_known():
    with pytest.raises(PlanError) as info:
        plan("aws:us-east-3", "gcp:us-central1-a", bytes=1)
    msg = str(info.value)
    assert "aws:us-east-3" in msg and "aws:us-east-1" in msg and "aws:us-east-2" in msg
    assert "\n" not in msg


def test_region_names_are_resolved_leniently():
    p = PROFILE
    assert p.resolve("gcp:us-central1") == "gcp:us-central1-a"
    assert p.resolve("AWS:US-EAST-1") == "aws:us-east-1"
    assert p.resolve("azure:East US") == "azure:eastus"
    assert p.resolve("eu-west-1") == "aws:eu-west-1"
    assert p.resolve("gcp:us") == "gcp:us-central1-a"  # a GCS multi-region bucket
    assert p.resolve("gcp:EUR4") == "gcp:europe-west4-a"


def test_local_plans_are_trivial_and_free_of_egress():
    route = plan("local", "local", bytes=10**9, objects=100)
    assert route.planner == "local"
    assert route.cost.egress_usd == 0 and route.cost.vm_usd == 0 and route.cost.requests_usd == 0
    assert {g.region for g in route.gateways} == {"local"}
    up = plan("local", "aws:us-east-1", bytes=10**9, objects=100)
    assert up.cost.egress_usd == 0 and up.cost.vm_usd == 0
    assert up.cost.requests_usd > 0  # PUTs to S3 are billed


def test_request_charges_dominate_many_small_files():
    many = plan("aws:us-east-1", "gcp:us-east1-b", bytes=10**9, objects=1_000_000, planner="direct")
    one = plan("aws:us-east-1", "gcp:us-east1-b", bytes=10**9, objects=1, planner="direct")
    assert many.cost.egress_usd == pytest.approx(one.cost.egress_usd)
    # a million GETs on S3 and a million PUTs on GCS: $0.40 + $5.00, plus LIST pages
    assert many.cost.requests_usd == pytest.approx(0.4 + 5.0 + 1000 * 0.005 / 1000 * 2, rel=1e-6)
    assert many.cost.requests_usd > many.cost.egress_usd
    assert one.cost.requests_usd < 0.001


def test_request_counts_for_multipart_objects():
    work = workload(10 * 1024**3, objects=2)  # two 5 GiB objects, 64 MiB parts
    counts = request_counts(work)
    assert counts["src_get"] == 160 and counts["dst_upload_part"] == 160
    assert counts["dst_multipart_create"] == 2 == counts["dst_multipart_complete"]
    assert counts["dst_put"] == 0
    mixed = request_counts(workload(10**9, objects=10, parts=13))  # at most 3 multipart
    assert mixed["dst_multipart_create"] == 3 and mixed["dst_put"] == 7
    with pytest.raises(UsageError):
        workload(10, objects=5, parts=2)


def test_bad_arguments_are_usage_errors():
    for kw in (
        dict(mode="slowest"),
        dict(planner="magic"),
        dict(mode="cheapest", target_gbps=-1),
        dict(max_cost_per_gb=0),
        dict(target_gbps=1.0),  # a target needs mode cheapest
        dict(max_vms=0),
        dict(bytes=-1),
    ):
        with pytest.raises(UsageError):
            plan("aws:us-east-1", "aws:eu-west-1", **{"bytes": 10, **kw})


def test_a_user_profile_file(tmp_path):
    data = json.loads(PROFILE.model_dump_json())
    keep = ["aws:us-east-1", "aws:eu-west-1", "gcp:europe-west1-b"]
    idx = [PROFILE.index[r] for r in keep]
    data["name"] = "mine"
    data["regions"] = {r: data["regions"][r] for r in keep}
    data["gbps"] = [[data["gbps"][i][j] for j in idx] for i in idx]
    data["usd_per_gb"] = [[data["usd_per_gb"][i][j] for j in idx] for i in idx]
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data))
    route = plan("aws:us-east-1", "aws:eu-west-1", bytes=10**9, profile=path)
    assert "profile: mine" in route.notes
    with pytest.raises(PlanError, match="not in the profile mine"):
        plan("aws:us-east-1", "aws:us-west-2", bytes=10**9, profile=path)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**data, "gbps": data["gbps"][:2]}))
    with pytest.raises(PlanError, match="not a valid skyhop profile"):
        plan("aws:us-east-1", "aws:eu-west-1", bytes=1, profile=bad)
    with pytest.raises(PlanError, match="does not exist"):
        plan("aws:us-east-1", "aws:eu-west-1", bytes=1, profile=tmp_path / "nope.json")


def test_render_and_json_show_route_time_and_cost():
    from rich.console import Console

    route = plan(
        "aws:af-south-1", "aws:ap-northeast-2", bytes=10**11, objects=500, planner="overlay"
    )
    console = Console(width=140, record=True)
    console.print(render_plan(route))
    text = console.export_text()
    for needle in ("gcp:", "relay", "Gbit/s", "egress", "VM-hours", "requests", "total"):
        assert needle in text
    again = RoutePlan.model_validate_json(plan_json(route))
    assert again == route


def test_trivial_plans_have_a_source_and_a_destination_hop():
    for src, dst in (("local", "local"), ("aws:us-east-1", "aws:us-east-1")):
        route = plan(src, dst, bytes=10)
        assert route.path == [route.src_region, route.dst_region]
        assert [g.role for g in route.gateways] == ["source", "destination"]


def test_forced_relays_are_the_plan():
    """`skyhop cp --relay R`: the plan shows and costs the forced path, even where
    the planner would have chosen another."""
    src, dst, via = "aws:ap-southeast-2", "aws:af-south-1", "gcp:asia-south1-a"
    forced = plan(src, dst, bytes=10**10, objects=10, relays=[via])
    assert forced.planner == "forced"
    assert forced.path == [src, via, dst]
    assert [(g.region, g.role) for g in forced.gateways] == [
        (src, "source"),
        (via, "relay"),
        (dst, "destination"),
    ]
    assert {(e.src, e.dst) for e in forced.edges} == {(src, via), (via, dst)}
    assert forced.cost.egress_usd > 0 and forced.seconds > 0
    local = plan("local", "local", bytes=10**9, objects=3, relays=["local", "local"])
    assert [g.role for g in local.gateways] == ["source", "relay", "relay", "destination"]
    assert local.path == ["local"] * 4 and len(local.edges) == 3
    with pytest.raises(PlanError, match="nowhere-1.*nearest known"):
        plan(src, dst, bytes=1, relays=["aws:nowhere-1"])
