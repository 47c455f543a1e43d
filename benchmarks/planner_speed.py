"""MILP solve time on the shipped profile: 10, 30 and all regions, 10 VMs per region.

    python benchmarks/planner_speed.py [--pairs 8] [--limit-s 2.0]

For each region count, the same source/destination pairs (seeded) are planned
in both modes (fastest, and cheapest at half the fastest throughput) over that
many candidate regions with at most 10 gateways per region. Prints the median
and worst solve time per row next to the 2 s limit, and exits non-zero when a
worst case exceeds it. The overlay planner runs on the same pairs as a peer.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time

from rich.console import Console
from rich.table import Table

from skyhop.planner import load_profile, plan


def timed(**kw) -> tuple[float, object]:
    started = time.perf_counter()
    route = plan(**kw)
    return time.perf_counter() - started, route


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--max-vms", type=int, default=10)
    parser.add_argument("--limit-s", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    profile = load_profile()
    names = profile.region_names
    rng = random.Random(args.seed)
    pairs = [tuple(rng.sample(names, 2)) for _ in range(args.pairs)]
    plan(src_region=pairs[0][0], dst_region=pairs[0][1], bytes=1, profile=profile)  # warm up

    table = Table(title=f"MILP solve time, {args.max_vms} VMs per region, {args.pairs} pairs")
    for col in (
        "regions",
        "mode",
        "median s",
        "worst s",
        "limit s",
        "ok",
        "overlay median s",
        "mean Gbit/s",
        "mean $/GB",
    ):
        table.add_column(col, justify="right")
    failed = False
    for count in (10, 30, len(names)):
        sets = []
        for src, dst in pairs:
            others = [r for r in names if r not in (src, dst)]
            sets.append((src, dst, [src, dst, *rng.sample(others, count - 2)]))
        for mode in ("fastest", "cheapest"):
            times, overlay_times, gbps, per_gb = [], [], [], []
            for src, dst, regions in sets:
                common = dict(
                    src_region=src,
                    dst_region=dst,
                    bytes=10**12,
                    regions=regions,
                    max_vms=args.max_vms,
                    profile=profile,
                )
                extra = {}
                if mode == "cheapest":
                    fastest = plan(**common)
                    extra = {"mode": "cheapest", "target_gbps": fastest.throughput_gbps / 2}
                t, route = timed(planner="milp", **common, **extra)
                times.append(t)
                gbps.append(route.throughput_gbps)
                per_gb.append(route.cost.total_usd / 1000)
                ot, _ = timed(planner="overlay", **common, **extra)
                overlay_times.append(ot)
            worst = max(times)
            ok = worst < args.limit_s
            failed |= not ok
            table.add_row(
                str(count),
                mode,
                f"{statistics.median(times):.3f}",
                f"{worst:.3f}",
                f"{args.limit_s:.1f}",
                "yes" if ok else "NO",
                f"{statistics.median(overlay_times):.4f}",
                f"{statistics.mean(gbps):.2f}",
                f"{statistics.mean(per_gb):.4f}",
            )
    Console(width=140).print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
