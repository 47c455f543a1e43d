"""The multicast planner: its trees against brute force over every tree and gateway
count on small graphs of the shipped profile, in both modes and under a cost
ceiling; the plan's shape, its baseline of separate copies, errors, and
``skyhop plan --also``."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from skyhop.errors import PlanError, UsageError
from skyhop.models import RoutePlan
from skyhop.planner import load_profile, plan, render_plan, workload
from skyhop.planner.cli import main as plan_main
from skyhop.planner.multicast import TreeRequest, plan_multicast

PROFILE = load_profile()
GBIT_PER_GB = 8.0


def small_instances(count: int, size: int, terminals: int, seed: int):
    """(src, destinations, candidate regions) drawn from the shipped profile."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        regions = rng.sample(PROFILE.region_names, size)
        out.append((regions[0], regions[1 : 1 + terminals], regions))
    return out


# ---------------------------------------------------------------- brute force


def trees(regions, src, terminals):
    """Every arborescence rooted at ``src`` over measured edges that reaches every
    terminal, as {child: parent}; relays optional."""
    p = PROFILE
    relays = [r for r in regions if r != src and r not in terminals]
    for k in range(len(relays) + 1):
        for chosen in itertools.combinations(relays, k):
            nodes = [*terminals, *chosen]
            options = [[q for q in [src, *nodes] if q != v] for v in nodes]
            for parents in itertools.product(*options):
                parent = dict(zip(nodes, parents, strict=True))
                if not all(p.usable[p.index[parent[v]], p.index[v]] for v in nodes):
                    continue
                if all(_reaches(parent, v, src) for v in nodes):
                    yield parent


def _reaches(parent, v, src):
    seen = set()
    while v != src:
        if v in seen:
            return False
        seen.add(v)
        v = parent[v]
    return True


def throughput(parent, src, vms):
    """Gbit/s of the tree with ``vms`` gateways per region: every edge carries it all,
    so each region's budget (connections: one VM pair at the measured rate per VM;
    the per-VM egress and ingress caps) bounds it."""
    p = PROFILE
    best = float("inf")
    for v in [src, *parent]:
        children = [c for c, q in parent.items() if q == v]
        n = vms[v]
        if children:
            best = min(best, n / sum(1 / p.link_gbps(v, c) for c in children))
            best = min(best, p.cloud(v).egress_gbps_per_vm * n / len(children))
        if v in parent:
            best = min(best, n * p.link_gbps(parent[v], v), p.cloud(v).ingress_gbps_per_vm * n)
    return best


def brute_force(src, terminals, regions, limit, *, target=None, ceiling=None, requests=0.0):
    """Best (throughput, cost rate) over every tree and gateway assignment: the
    fastest (cheapest among those), the fastest within ``ceiling`` $/GB, or the
    cheapest reaching ``target``. The cost rate is $/GB x Gbit/s of egress and VMs."""
    p = PROFILE
    best = None
    for parent in trees(regions, src, terminals):
        used = [src, *parent]
        egress = sum(p.egress_usd_per_gb(q, v) for v, q in parent.items())
        for counts in itertools.product(range(1, limit + 1), repeat=len(used)):
            vms = dict(zip(used, counts, strict=True))
            t = throughput(parent, src, vms)
            vm = GBIT_PER_GB / 3600 * sum(vms[r] * p.regions[r].vm_usd_per_hour for r in used)
            if target is not None:
                if t < target * (1 - 1e-9):
                    continue
                key = (target * egress + vm,)
                if best is None or key[0] < best[1] - 1e-12:
                    best = (target, key[0])
                continue
            rate = t * egress + vm
            if ceiling is not None and rate + requests * t > ceiling * t * (1 + 1e-12):
                continue
            if (
                best is None
                or t > best[0] * (1 + 1e-9)
                or (t >= best[0] * (1 - 1e-9) and rate < best[1] - 1e-12)
            ):
                best = (t, rate)
    return best


def cost_rate(route: RoutePlan) -> float:
    p = PROFILE
    egress = sum(e.gbps * p.egress_usd_per_gb(e.src, e.dst) for e in route.edges)
    vms = sum(g.count * p.regions[g.region].vm_usd_per_hour for g in route.gateways)
    return egress + GBIT_PER_GB / 3600 * vms


def check_tree(route: RoutePlan, src: str, terminals: list[str]) -> None:
    """Each destination hangs off the source by exactly one path of the plan's edges."""
    parent = route.tree_parent()
    assert src not in parent
    assert len(parent) == len(route.edges)  # one edge into each region
    for t in terminals:
        assert _reaches(parent, t, src)
    assert route.dst_regions == terminals
    assert all(e.gbps == pytest.approx(route.throughput_gbps) for e in route.edges)


# ---------------------------------------------------------------- optimality


@pytest.mark.parametrize("src,terminals,regions", small_instances(4, 5, 3, seed=7))
def test_fastest_tree_is_optimal_against_brute_force(src, terminals, regions):
    route = plan_multicast(src, terminals, bytes=10**11, max_vms=2, regions=regions)
    best_t, best_rate = brute_force(src, terminals, regions, 2)
    check_tree(route, src, terminals)
    assert route.throughput_gbps == pytest.approx(best_t, rel=1e-5)
    assert cost_rate(route) == pytest.approx(best_rate, rel=1e-4)


@pytest.mark.parametrize("src,terminals,regions", small_instances(3, 5, 2, seed=11))
def test_cheapest_tree_is_optimal_against_brute_force(src, terminals, regions):
    fastest = plan_multicast(src, terminals, bytes=10**11, max_vms=2, regions=regions)
    target = round(fastest.throughput_gbps * 0.6, 3)
    route = plan_multicast(
        src,
        terminals,
        bytes=10**11,
        mode="cheapest",
        target_gbps=target,
        max_vms=2,
        regions=regions,
    )
    _, best_rate = brute_force(src, terminals, regions, 2, target=target)
    check_tree(route, src, terminals)
    assert route.throughput_gbps == pytest.approx(target)
    assert cost_rate(route) == pytest.approx(best_rate, rel=1e-4)


@pytest.mark.parametrize("src,terminals,regions", small_instances(3, 5, 3, seed=5))
def test_fastest_tree_under_a_cost_ceiling_is_optimal_against_brute_force(src, terminals, regions):
    work = workload(10**11)
    fastest = plan_multicast(src, terminals, bytes=work.bytes, max_vms=2, regions=regions)
    cheapest = plan_multicast(
        src, terminals, bytes=work.bytes, mode="cheapest", max_vms=2, regions=regions
    )
    gb = work.bytes / 1e9
    hi, lo = fastest.cost.total_usd / gb, cheapest.cost.total_usd / gb
    ceiling = round(lo + (hi - lo) * 0.4, 5) if hi > lo else round(lo * 1.01, 5)
    requests = fastest.cost.requests_usd / gb
    best = brute_force(src, terminals, regions, 2, ceiling=ceiling, requests=requests)
    kw = dict(bytes=work.bytes, max_vms=2, regions=regions, max_cost_per_gb=ceiling)
    if best is None:
        with pytest.raises(PlanError, match="cheapest achievable"):
            plan_multicast(src, terminals, **kw)
        return
    route = plan_multicast(src, terminals, **kw)
    check_tree(route, src, terminals)
    assert route.throughput_gbps == pytest.approx(best[0], rel=1e-5)
    assert route.cost.total_usd / gb <= ceiling * (1 + 1e-6)


# ---------------------------------------------------------------- the plan


def test_the_tree_is_priced_against_separate_direct_copies():
    src = "aws:ap-southeast-2"
    dsts = ["aws:eu-west-1", "aws:eu-central-1", "gcp:europe-west4-a"]
    route = plan_multicast(src, dsts, bytes=10**12, objects=10, mode="cheapest", max_vms=2)
    sep = route.separate
    assert route.planner == "multicast" and route.multicast
    assert sep is not None and sep.copies == 3
    assert sep.source_bytes_read == 3 * 10**12 and route.bytes == 10**12
    directs = [plan(src, d, bytes=10**12, objects=10, planner="direct") for d in dsts]
    assert sep.cost.egress_usd == pytest.approx(sum(d.cost.egress_usd for d in directs))
    # the expensive hop out of Sydney is paid once, not three times
    assert route.cost.egress_usd < 0.75 * sep.cost.egress_usd
    assert route.cost.total_usd < sep.cost.total_usd
    tree_egress = sum(PROFILE.egress_usd_per_gb(e.src, e.dst) for e in route.edges) * 1000
    assert route.cost.egress_usd == pytest.approx(tree_egress)
    # request charges: the source's once, each destination's writes
    one = plan(src, dsts[0], bytes=10**12, objects=10, planner="direct").cost.requests_usd
    assert sep.cost.requests_usd > route.cost.requests_usd > one
    assert route.path[0] == src and route.path[-1] == dsts[0]
    assert RoutePlan.model_validate_json(route.model_dump_json()) == route


def test_over_the_whole_profile_both_modes():
    src, dsts = "gcp:us-central1-a", ["aws:us-east-1", "azure:westeurope", "aws:ap-northeast-1"]
    fast = plan_multicast(src, dsts, bytes=10**12, max_vms=2)
    cheap = plan_multicast(src, dsts, bytes=10**12, max_vms=2, mode="cheapest")
    check_tree(fast, src, dsts)
    check_tree(cheap, src, dsts)
    assert fast.throughput_gbps > cheap.throughput_gbps
    assert cheap.cost.total_usd <= fast.cost.total_usd
    assert cheap.cost.total_usd < cheap.separate.cost.total_usd
    assert any("relay candidates" in n for n in fast.notes)
    assert all(g.count <= 2 for g in fast.gateways)


def test_same_region_and_repeated_destinations():
    src = "aws:us-east-1"
    route = plan_multicast(src, [src, "aws:eu-west-1", "aws:eu-west-1"], bytes=10**10, regions=[])
    assert route.dst_regions == [src, "aws:eu-west-1", "aws:eu-west-1"]
    assert [(e.src, e.dst) for e in route.edges] == [(src, "aws:eu-west-1")]
    assert route.cost.egress_usd == pytest.approx(
        10 * PROFILE.egress_usd_per_gb(src, "aws:eu-west-1")
    )
    assert route.separate.cost.egress_usd == pytest.approx(2 * route.cost.egress_usd)
    roles = [(g.region, g.role) for g in route.gateways]
    assert (src, "source") in roles and (src, "destination") in roles
    same = plan_multicast(src, [src, src], bytes=10**10)
    assert same.edges and same.cost.egress_usd == 0


def test_local_destinations_are_a_star_of_local_gateways():
    route = plan_multicast("local", ["local", "local", "local"], bytes=10**9, objects=3)
    assert route.planner == "multicast" and route.dst_regions == ["local"] * 3
    assert [g.role for g in route.gateways] == ["source"] + ["destination"] * 3
    assert route.cost.egress_usd == 0 and route.cost.vm_usd == 0
    assert route.separate.source_bytes_read == 3 * 10**9


def test_infeasible_requests_name_the_best_figure():
    src, dsts = "aws:us-east-1", ["aws:eu-west-1", "gcp:asia-east1-a"]
    fastest = plan_multicast(src, dsts, bytes=10**10, max_vms=1)
    with pytest.raises(PlanError, match=r"best achievable is ([0-9.]+) Gbit/s") as info:
        plan_multicast(
            src, dsts, bytes=10**10, mode="cheapest", target_gbps=fastest.throughput_gbps * 3
        )
    got = float(str(info.value).rsplit("is ", 1)[1].split()[0])
    assert got == pytest.approx(fastest.throughput_gbps, rel=1e-2)
    with pytest.raises(PlanError, match=r"cheapest achievable is about \$0\.\d+/GB"):
        plan_multicast(src, dsts, bytes=10**10, max_cost_per_gb=0.001)
    for kw in (
        dict(mode="slowest"),
        dict(target_gbps=1.0),
        dict(mode="cheapest", max_cost_per_gb=1.0),
        dict(max_vms=0),
    ):
        with pytest.raises(UsageError):
            plan_multicast(src, dsts, bytes=10, **kw)
    with pytest.raises(UsageError):
        plan_multicast(src, [], bytes=10)
    with pytest.raises(PlanError, match="nearest known"):
        plan_multicast(src, ["aws:eu-west-1", "aws:nowhere-9"], bytes=10)


def test_tree_request_counts_requests_once_at_the_source():
    work = workload(10**9, objects=1000)
    one = TreeRequest(profile=PROFILE, src="aws:us-east-1", legs=("gcp:us-east1-b",), work=work)
    three = TreeRequest(
        profile=PROFILE, src="aws:us-east-1", legs=("gcp:us-east1-b",) * 3, work=work
    )
    source_only = one.requests_usd - (three.requests_usd - one.requests_usd) / 2
    single = plan("aws:us-east-1", "gcp:us-east1-b", bytes=10**9, objects=1000, planner="direct")
    assert one.requests_usd == pytest.approx(single.cost.requests_usd)
    assert 0 < source_only < one.requests_usd


# ---------------------------------------------------------------- skyhop plan --also


def test_plan_also_shows_the_tree_against_separate_copies(capsys, tmp_path):
    code = plan_main(
        [
            "plan",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--also",
            str(tmp_path / "c"),
            "--also",
            str(tmp_path / "d"),
            "--src-region",
            "aws:ap-southeast-2",
            "--dst-region",
            "aws:eu-west-1",
            "--also-region",
            "aws:eu-central-1",
            "--also-region",
            "gcp:europe-west4-a",
            "--bytes",
            "1TB",
            "--mode",
            "cheapest",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    for needle in (
        "Tree aws:ap-southeast-2 -> aws:eu-west-1, aws:eu-central-1, gcp:europe-west4-a",
        "3 separate direct copies",
        "read at the source",
        "3.00 TB",
        "tree saves",
        "egress",
    ):
        assert needle in out, needle
    code = plan_main(
        [
            "plan",
            str(tmp_path / "a"),
            str(tmp_path / "b"),
            "--also",
            str(tmp_path / "c"),
            "--src-region",
            "aws:us-east-1",
            "--dst-region",
            "aws:eu-west-1",
            "--also-region",
            "aws:eu-central-1",
            "--bytes",
            "10GB",
            "--regions",
            "aws:eu-west-2,aws:us-east-2",
            "--json",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    route = RoutePlan.model_validate_json(out)
    assert route.dst_regions == ["aws:eu-west-1", "aws:eu-central-1"]
    assert route.separate is not None and route.separate.copies == 2
    assert {r for e in route.edges for r in (e.src, e.dst)} <= {
        "aws:us-east-1",
        "aws:eu-west-1",
        "aws:eu-central-1",
        "aws:eu-west-2",
        "aws:us-east-2",
    }


def test_local_paths_plan_a_local_star(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 1000)
    code = plan_main(
        ["plan", str(src), str(tmp_path / "b"), "--also", str(tmp_path / "c"), "--json"]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    route = json.loads(out)
    assert route["dst_regions"] == ["local", "local"] and route["bytes"] == 1000


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--also-region", "aws:us-east-1"], "--also-region"),
        (["--also", "/x", "--planner", "overlay"], "--planner"),
    ],
)
def test_bad_also_is_one_line(capsys, tmp_path, extra, needle):
    code = plan_main(["plan", str(tmp_path / "a"), str(tmp_path / "b"), "--bytes", "1GB", *extra])
    _, err = capsys.readouterr()
    assert code != 0 and needle in err and len(err.strip().splitlines()) == 1


def test_render_of_a_tree_is_readable():
    from rich.console import Console

    route = plan_multicast("aws:us-east-1", ["aws:eu-west-1", "aws:eu-central-1"], bytes=10**11)
    console = Console(width=140, record=True)
    console.print(render_plan(route))
    text = console.export_text()
    assert "Tree aws:us-east-1 -> aws:eu-west-1, aws:eu-central-1" in text
    assert "2 separate direct copies" in text and "Tree edges" in text
