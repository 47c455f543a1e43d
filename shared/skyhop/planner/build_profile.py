"""Build skyhop's compact default profile from measured grids.

    python -m skyhop.planner.build_profile [--data-dir ../shared/data/skyplane-profiles]
        [--throughput throughput_2023-04.csv] [--cost bc_old_cost.csv] [--tier PREMIUM]
        [--metric received|sent] [--pricing PATH] [--out PATH]

Reads an iperf3 throughput grid (one row per measured region pair: src_region,
dst_region, src_tier, dst_tier, throughput_sent, throughput_received in bit/s;
the later grid spells the column ``throughput_recieved``), an egress price
table (``src,dest[,src_tier,dest_tier],cost``), and skyhop's pricing inputs
(instance type, VM prices, caps and request prices per cloud, see
``planner/data/pricing_inputs.json``). Writes a profile JSON: regions, a Gbit/s
grid (duplicate measurements averaged), a $/GB grid, VM prices and the source
of every figure. Raw CSVs are never copied.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from skyhop.errors import SkyhopError, UsageError, first_line
from skyhop.planner.profile import (
    DEFAULT_PROFILE,
    CloudSpec,
    Profile,
    RegionSpec,
    RequestPrices,
    cloud_of,
)

DEFAULT_DATA_DIR = Path("../shared/data/skyplane-profiles")
DEFAULT_THROUGHPUT = "throughput_2023-04.csv"
DEFAULT_COST = "bc_old_cost.csv"


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CatalogPrice(_Input):
    catalog_instance: str
    usd_per_hour: float = Field(ge=0)
    scale: float = Field(1.0, gt=0)


class CloudInput(_Input):
    instance_type: str
    vcpus: int = Field(ge=1)
    egress_gbps_per_vm: float = Field(gt=0)
    ingress_gbps_per_vm: float = Field(gt=0)
    caps_source: str
    vm_price_source: str
    requests: RequestPrices
    vm_prices: dict[str, CatalogPrice]


class PricingInputs(_Input):
    format: int = 1
    about: str = ""
    clouds: dict[str, CloudInput]


def read_throughput(path: Path, tier: str, metric: str) -> dict[tuple[str, str], float]:
    """Mean Gbit/s per (src, dst) over successful rows of ``tier``; self-pairs dropped."""
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        column = _metric_column(fields, metric, path)
        for need in ("src_region", "dst_region"):
            if need not in fields:
                raise UsageError(f"{path.name}: missing column {need!r}")
        for row in reader:
            if "src_tier" in row and (row["src_tier"] != tier or row.get("dst_tier") != tier):
                continue
            if str(row.get("success", "True")).strip().lower() not in ("true", "1", "yes"):
                continue
            src, dst, value = row["src_region"], row["dst_region"], row.get(column) or ""
            if src == dst or not value:
                continue
            try:
                samples[(src, dst)].append(float(value) / 1e9)
            except ValueError:
                raise UsageError(f"{path.name}: {column} is not a number: {value!r}") from None
    if not samples:
        raise UsageError(f"{path.name}: no successful {tier} measurements")
    return {pair: sum(v) / len(v) for pair, v in samples.items()}


def _metric_column(fields: list[str], metric: str, path: Path) -> str:
    options = {
        "received": ("throughput_received", "throughput_recieved"),
        "sent": ("throughput_sent",),
    }[metric]
    for name in options:
        if name in fields:
            return name
    raise UsageError(f"{path.name}: no {' or '.join(options)} column")


def read_costs(path: Path, tier: str) -> dict[tuple[str, str], float]:
    """Egress $/GB per (src, dst); tiered tables are filtered to ``tier``."""
    out: dict[tuple[str, str], float] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        dst_col = "dest" if "dest" in fields else "dst"
        for need in ("src", dst_col, "cost"):
            if need not in fields:
                raise UsageError(f"{path.name}: missing column {need!r}")
        for row in reader:
            if "src_tier" in row and (row["src_tier"] != tier or row.get("dest_tier") != tier):
                continue
            try:
                out[(row["src"], row[dst_col])] = float(row["cost"])
            except ValueError:
                raise UsageError(f"{path.name}: cost is not a number: {row['cost']!r}") from None
    return out


def load_pricing(path: Path | None = None) -> PricingInputs:
    if path is None:
        path = Path(str(resources.files("skyhop.planner") / "data" / "pricing_inputs.json"))
    try:
        return PricingInputs.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"pricing inputs {path} do not exist") from None
    except ValueError as exc:
        raise UsageError(f"pricing inputs {path} are not valid: {first_line(exc)}") from None


def _price_key(region: str) -> str:
    """The catalog key of a profile region: GCP zones map to their region."""
    cloud, _, name = region.partition(":")
    if cloud == "gcp":
        return re.sub(r"-[a-z]$", "", name)
    return name


def build(
    throughput_csv: Path,
    cost_csv: Path,
    pricing: PricingInputs,
    *,
    tier: str = "PREMIUM",
    metric: str = "received",
    name: str | None = None,
) -> Profile:
    """Derive a profile from the measured grid, the price table and the pricing inputs."""
    grid = read_throughput(throughput_csv, tier, metric)
    costs = read_costs(cost_csv, tier)
    regions = sorted({r for pair in grid for r in pair})
    unknown = sorted({cloud_of(r) for r in regions} - set(pricing.clouds))
    if unknown:
        raise UsageError(f"pricing inputs describe no cloud {', '.join(unknown)}")

    clouds: dict[str, CloudSpec] = {}
    region_specs: dict[str, RegionSpec] = {}
    for cloud, spec in pricing.clouds.items():
        clouds[cloud] = CloudSpec(
            instance_type=spec.instance_type,
            vcpus=spec.vcpus,
            egress_gbps_per_vm=spec.egress_gbps_per_vm,
            ingress_gbps_per_vm=spec.ingress_gbps_per_vm,
            caps_source=spec.caps_source,
            vm_price_source=spec.vm_price_source,
            requests=spec.requests,
        )
    for region in regions:
        spec = pricing.clouds[cloud_of(region)]
        entry = spec.vm_prices.get(_price_key(region))
        if entry is not None:
            note = (
                "catalog"
                if entry.catalog_instance == spec.instance_type
                else (f"catalog {entry.catalog_instance} x {entry.scale:.4g}")
            )
            price = entry.usd_per_hour * entry.scale
        else:
            price = max(p.usd_per_hour * p.scale for p in spec.vm_prices.values())
            note = "fallback: region not in the catalog snapshot; highest catalogued price of this cloud"
        region_specs[region] = RegionSpec(vm_usd_per_hour=round(price, 5), price_note=note)

    gbps = [[_round(grid.get((s, d)), 4) for d in regions] for s in regions]
    usd = [[0.0 if s == d else _round(costs.get((s, d)), 5) for d in regions] for s in regions]
    column = "throughput_received" if metric == "received" else "throughput_sent"
    return Profile(
        name=name or f"skyplane-{throughput_csv.stem}-{tier.lower()}",
        source=(
            f"Skyplane project measurements (Apache-2.0): {throughput_csv.name} (iperf3 between "
            f"gateway VMs, one VM pair per region pair, {tier} tier, column {column}, duplicates "
            f"averaged) and {cost_csv.name} (egress $/GB, {tier} tier); VM prices and request "
            "prices as named per cloud"
        ),
        generated_by="python -m skyhop.planner.build_profile",
        connections_per_vm_pair=64,
        clouds=clouds,
        regions=region_specs,
        gbps=gbps,
        usd_per_gb=usd,
    )


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def write_profile(profile: Profile, out: Path) -> None:
    """Write compactly: one grid row per line keeps the file small and diffable."""
    data = profile.model_dump(mode="json")
    grids = {k: data.pop(k) for k in ("gbps", "usd_per_gb")}
    text = json.dumps(data, indent=1)[:-2]
    for key, grid in grids.items():
        rows = ",\n  ".join(json.dumps(row, separators=(",", ":")) for row in grid)
        text += f',\n "{key}": [\n  {rows}\n ]'
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n}\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skyhop.planner.build_profile", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--throughput", default=DEFAULT_THROUGHPUT, help="file in --data-dir")
    parser.add_argument("--cost", default=DEFAULT_COST, help="file in --data-dir")
    parser.add_argument("--tier", default="PREMIUM")
    parser.add_argument("--metric", choices=["received", "sent"], default="received")
    parser.add_argument("--pricing", type=Path, default=None)
    parser.add_argument("--name", default=None)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(str(resources.files("skyhop.planner") / "data" / DEFAULT_PROFILE)),
    )
    args = parser.parse_args(argv)
    try:
        for fname in (args.throughput, args.cost):
            if not (args.data_dir / fname).is_file():
                raise UsageError(f"{args.data_dir / fname} does not exist (pass --data-dir)")
        profile = build(
            args.data_dir / args.throughput,
            args.data_dir / args.cost,
            load_pricing(args.pricing),
            tier=args.tier,
            metric=args.metric,
            name=args.name,
        )
        write_profile(profile, args.out)
    except SkyhopError as exc:
        print(f"build_profile: error: {exc}", file=sys.stderr)
        return exc.exit_code
    n = len(profile.regions)
    edges = sum(v is not None for row in profile.gbps for v in row)
    fallback = [r for r, s in profile.regions.items() if s.price_note.startswith("fallback")]
    print(f"wrote {args.out}: {n} regions, {edges} measured edges")
    if fallback:
        print(f"VM price fallback for {len(fallback)} regions: {', '.join(fallback)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
