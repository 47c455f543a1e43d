"""``skyhop plan SRC DST [--also DST2 ...]``: the route, gateways, expected throughput, time and cost.

No data moves. With ``--also``, one distribution tree to every destination,
shown against one direct copy each. Regions come from ``--src-region``/``--dst-region`` or from the
stores (``ObjectStore.region()``; local paths are ``local``). Without
``--bytes`` the source is measured (one HEAD, or a listing of the prefix).
The lead's ``skyhop`` command mounts this with :func:`add_parser`; it also
runs alone: ``python -m skyhop.planner.cli plan SRC DST ...``.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from rich.console import Console

from skyhop.errors import SkyhopError, UsageError, first_line
from skyhop.models import RoutePlan
from skyhop.planner.api import MODES, PLANNERS, plan, region_of
from skyhop.planner.render import plan_json, render_plan

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?(?:e\d+)?)\s*([kmgtp]?)(i?)b?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``4096``, ``1e12``, ``10GB`` (10**10), ``1.5TiB`` (1.5 * 2**40) -> bytes."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"not a size: {text!r} (e.g. 4096, 10GB, 1.5TiB)")
    number, unit, binary = match.groups()
    power = " kmgtp".index(unit.lower() or " ")
    base = 1024 if binary else 1000
    return int(float(number) * base**power)


def _positive_float(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} must be a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise UsageError(f"{name} must be a positive number, got {text}")
    return value


def _count(name: str, text: str | None, minimum: int) -> int | None:
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {text!r}") from None
    if value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {value}")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``plan`` to the ``skyhop`` command's subcommands."""
    p = subparsers.add_parser(
        "plan",
        help="show the route, gateways, expected time and cost; no data moves",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("source", help="path, file://, s3://, gs:// or az:// URI")
    p.add_argument("destination")
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="DST",
        help="another destination (repeatable): plan one distribution tree to all of them, "
        "shown against one direct copy each",
    )
    p.add_argument(
        "--also-region",
        action="append",
        default=[],
        metavar="REGION",
        help="the region of each --also destination, in order (default: ask the store)",
    )
    p.add_argument("--bytes", metavar="SIZE", help="data to move (4096, 10GB, 1.5TiB)")
    p.add_argument("--objects", metavar="N", help="number of objects (default: 1, or measured)")
    p.add_argument("--parts", metavar="N", help="chunks over all objects (default: derived)")
    p.add_argument("--mode", default="fastest", help="fastest (default) or cheapest")
    p.add_argument("--planner", default="milp", help="milp (default), overlay or direct")
    p.add_argument("--target-gbps", metavar="X", help="mode cheapest: throughput to deliver")
    p.add_argument("--max-cost-per-gb", metavar="Y", help="mode fastest: $/GB ceiling")
    p.add_argument("--max-vms", metavar="N", help="gateways per region at most (default 1)")
    p.add_argument("--vcpu-quota", metavar="N", help="vCPUs per region you may use")
    p.add_argument(
        "--src-region", metavar="REGION", help="e.g. aws:us-east-1 (default: ask the store)"
    )
    p.add_argument("--dst-region", metavar="REGION")
    p.add_argument(
        "--regions",
        metavar="R1,R2,...",
        help="relay candidates (default: every profiled region; for --also, a shortlist of them)",
    )
    p.add_argument("--profile", metavar="PATH", help="a throughput/cost profile JSON")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan and print; a bad request is one line on stderr and a non-zero exit."""
    try:
        route = _plan(args)
    except SkyhopError as exc:
        print(f"skyhop: error: {first_line(exc)}", file=sys.stderr)
        return exc.exit_code
    if args.json:
        print(plan_json(route))
    else:
        Console(width=max(100, Console().width)).print(render_plan(route))
    return 0


def _plan(args: argparse.Namespace) -> RoutePlan:
    if args.mode not in MODES:
        raise UsageError(f"unknown --mode {args.mode!r}: use {' or '.join(MODES)}")
    if args.planner not in PLANNERS:
        raise UsageError(f"unknown --planner {args.planner!r}: use one of {', '.join(PLANNERS)}")
    target = _positive_float("--target-gbps", args.target_gbps)
    ceiling = _positive_float("--max-cost-per-gb", args.max_cost_per_gb)
    if target is not None and args.mode != "cheapest":
        raise UsageError("--target-gbps applies to --mode cheapest")
    if ceiling is not None and args.mode != "fastest":
        raise UsageError("--max-cost-per-gb applies to --mode fastest")
    max_vms = _count("--max-vms", args.max_vms, 1)
    quota = _count("--vcpu-quota", args.vcpu_quota, 1)
    objects = _count("--objects", args.objects, 0)
    parts = _count("--parts", args.parts, 0)
    regions = (
        [r.strip() for r in args.regions.split(",") if r.strip()]
        if getattr(args, "regions", None)
        else None
    )
    also = list(getattr(args, "also", []) or [])
    also_regions = list(getattr(args, "also_region", []) or [])
    if len(also_regions) > len(also):
        raise UsageError("--also-region names the region of an --also destination: give one each")
    if also and args.planner not in ("milp", "multicast"):
        raise UsageError("--also plans a distribution tree: --planner applies to one destination")
    src = region_of(args.source, args.src_region)
    dst = region_of(args.destination, args.dst_region)
    others = [
        region_of(uri, also_regions[i] if i < len(also_regions) else None)
        for i, uri in enumerate(also)
    ]
    if args.bytes is not None:
        nbytes = parse_size(args.bytes)
    else:
        nbytes, measured = measure_source(args.source)
        objects = measured if objects is None else objects
    if also:
        from skyhop.planner.multicast import plan_multicast

        return plan_multicast(
            src,
            [dst, *others],
            bytes=nbytes,
            objects=objects,
            parts=parts,
            mode=args.mode,
            target_gbps=target,
            max_cost_per_gb=ceiling,
            max_vms=max_vms,
            vcpu_quota=quota,
            regions=regions,
            profile=args.profile,
        )
    return plan(
        src,
        dst,
        bytes=nbytes,
        objects=objects,
        parts=parts,
        mode=args.mode,
        planner=args.planner,
        target_gbps=target,
        max_cost_per_gb=ceiling,
        max_vms=max_vms,
        vcpu_quota=quota,
        regions=regions,
        profile=args.profile,
    )


def measure_source(uri: str) -> tuple[int, int]:
    """(bytes, objects) under ``uri``: the object itself, or everything under the prefix."""
    from skyhop.stores.base import open_store
    from skyhop.uri import parse_uri

    parsed = parse_uri(uri)
    try:
        store = open_store(parsed)
        if parsed.key and not parsed.is_dir_like():
            info = store.head(parsed.key)
            if info is not None:
                return info.size, 1
        prefix = parsed.key if parsed.is_dir_like() else parsed.key + "/"
        total = count = 0
        for info in store.list(prefix):
            total += info.size
            count += 1
    except SkyhopError as exc:
        raise UsageError(f"cannot measure {uri} ({exc}); pass --bytes") from None
    if count == 0:
        raise UsageError(f"nothing at {uri} to measure; pass --bytes")
    return total, count


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        raise UsageError(f"{self.prog}: {message}")


def main(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point with the same one-line errors as ``skyhop``."""
    parser = _Parser(prog="skyhop")
    add_parser(parser.add_subparsers(dest="command", required=True, parser_class=_Parser))
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(f"skyhop: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
