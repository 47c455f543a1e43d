"""How a RoutePlan looks to a person (rich) and to a program (JSON)."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from skyhop.models import RoutePlan


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} PB"  # pragma: no cover


def human_seconds(s: float) -> str:
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def render_plan(plan: RoutePlan) -> RenderableType:
    """The route as tables: gateways per region, overlay edges, estimate (for a
    multicast tree, side by side with one direct copy per destination)."""
    if plan.multicast:
        title = Text.assemble(
            ("Tree ", "bold"),
            (f"{plan.src_region} -> {', '.join(plan.dst_regions)}", "bold cyan"),
            (f"  ({plan.planner} planner)", "dim"),
        )
    else:
        title = Text.assemble(
            ("Route ", "bold"),
            (" -> ".join(plan.path), "bold cyan"),
            (f"  ({plan.planner} planner)", "dim"),
        )
    gateways = Table(title="Gateways", title_justify="left", show_edge=False)
    gateways.add_column("region")
    gateways.add_column("role")
    gateways.add_column("VMs", justify="right")
    gateways.add_column("instance type")
    for g in plan.gateways:
        gateways.add_row(g.region, g.role, str(g.count), g.instance_type or "-")

    edges = Table(
        title="Tree edges (each carries the data once)" if plan.multicast else "Edges",
        title_justify="left",
        show_edge=False,
    )
    edges.add_column("from")
    edges.add_column("to")
    edges.add_column("Gbit/s", justify="right")
    edges.add_column("connections", justify="right")
    for e in plan.edges:
        edges.add_row(e.src, e.dst, f"{e.gbps:.3f}", str(e.connections))

    if plan.multicast and plan.separate is not None:
        summary = _compare(plan)
        parts: list[RenderableType] = [title, gateways, edges, summary]
        if plan.notes:
            parts.append(Text("\n".join(f"- {n}" for n in plan.notes), style="dim"))
        return Group(*parts)
    c = plan.cost
    summary = Table(title="Estimate", title_justify="left", show_header=False, show_edge=False)
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    summary.add_row("throughput", f"{plan.throughput_gbps:.3f} Gbit/s")
    summary.add_row("data", human_bytes(plan.bytes))
    summary.add_row("time", human_seconds(plan.seconds))
    summary.add_row("egress", f"${c.egress_usd:,.4f}")
    summary.add_row("VM-hours", f"${c.vm_usd:,.4f}")
    summary.add_row("requests", f"${c.requests_usd:,.4f}")
    summary.add_row("total", f"${c.total_usd:,.4f}")
    if plan.bytes:
        summary.add_row("per GB", f"${c.total_usd / (plan.bytes / 1e9):,.4f}")
    parts = [title]
    if plan.gateways:  # a direct-path job has none
        parts += [gateways, edges]
    parts.append(summary)
    if plan.notes:
        parts.append(Text("\n".join(f"- {n}" for n in plan.notes), style="dim"))
    return Group(*parts)


def _compare(plan: RoutePlan) -> Table:
    """A multicast plan's estimate beside one direct copy per destination."""
    sep = plan.separate
    assert sep is not None
    n = sep.copies
    table = Table(title="Estimate", title_justify="left", show_edge=False)
    table.add_column("", style="bold")
    table.add_column("tree", justify="right")
    table.add_column(f"{n} separate direct copies", justify="right")
    table.add_column("tree saves", justify="right")

    def usd(v: float) -> str:
        return f"${v:,.4f}"

    def row(name: str, tree: float, apart: float, fmt: Callable[[float], str] = usd) -> None:
        saved = f"{(1 - tree / apart) * 100:.0f}%" if apart > 0 else "-"
        table.add_row(name, fmt(tree), fmt(apart), saved)

    table.add_row(
        "throughput",
        f"{plan.throughput_gbps:.3f} Gbit/s",
        f"{sep.throughput_gbps:.3f} Gbit/s",
        "",
    )
    table.add_row("data per destination", human_bytes(plan.bytes), human_bytes(plan.bytes), "")
    row("read at the source", plan.bytes, sep.source_bytes_read, human_bytes)
    table.add_row("time", human_seconds(plan.seconds), human_seconds(sep.seconds), "")
    c, s = plan.cost, sep.cost
    row("egress", c.egress_usd, s.egress_usd)
    row("VM-hours", c.vm_usd, s.vm_usd)
    row("requests", c.requests_usd, s.requests_usd)
    row("total", c.total_usd, s.total_usd)
    if plan.bytes:
        gb = plan.bytes / 1e9
        row("per GB of data", c.total_usd / gb, s.total_usd / gb)
    return table


def plan_json(plan: RoutePlan) -> str:
    """The plan as JSON: exactly the RoutePlan model, so a program can load it back
    (``RoutePlan.model_validate_json``); the total is the sum of the cost parts."""
    return plan.model_dump_json(indent=2)
