"""Multicast on an emulated WAN: one source, three destinations, one job against
three separate jobs, with real skyhop gateways and the real control plane.

    sudo python benchmarks/multicast.py [--scale 10] [--mib 24] [--mode cheapest]

The source and destinations are real regions of the shipped profile (default:
aws:ap-southeast-2 to aws:eu-west-1, aws:eu-central-1 and gcp:europe-west4-a:
far from the source, close to each other). The multicast planner chooses the
tree; one network namespace per region of the tree (and one for the control
plane) is joined by veth pairs rate-shaped with tc tbf to the profile's Gbit/s
scaled down (``--scale`` Mbit/s per Gbit/s), the tree's edges and the three
direct links alike. In one run it copies the same files

* as one multicast job (``TransferRequest.destinations``): the embedded control
  plane, gateways in the namespaces along the tree, every destination verified;
* as three separate jobs, one direct route each, run side by side.

It prints, for both: the bytes the source gateways read (their counters), the
egress cost of those bytes from the profile (each tree edge carries the data
once; each separate job pays its own direct path), and the time from the start
to the last destination verified. Exits non-zero unless every copy is
byte-identical, the multicast job read the source once, and its egress is below
the separate jobs'. Needs root; everything it creates is removed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "shared")]

from skyhop.planner import load_profile, plan  # noqa: E402 - after sys.path names the checkout
from skyhop.planner.multicast import plan_multicast  # noqa: E402 - after sys.path names the checkout
from tests.fixtures.netns import EmulatedWAN, scaled_rates, why_not  # noqa: E402 - after sys.path names the checkout

SRC = "aws:ap-southeast-2"
DSTS = ["aws:eu-west-1", "aws:eu-central-1", "gcp:europe-west4-a"]
MAX_MBIT = 60.0  # keep every link well inside what 2 busy cores carry


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=10.0, help="Mbit/s per profile Gbit/s")
    parser.add_argument("--mib", type=int, default=24, help="data to copy, MiB")
    parser.add_argument("--chunk-mib", type=int, default=6)
    parser.add_argument("--mode", default="cheapest", help="the tree: cheapest or fastest")
    parser.add_argument("--src", default=SRC)
    parser.add_argument("--dst", action="append", default=None, help="three times")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = why_not()
    if reason:
        print(f"multicast: cannot run: {reason}", file=sys.stderr)
        return 2
    dsts = args.dst or DSTS
    console = Console(width=160)
    profile = load_profile()
    nbytes = args.mib * 2**20
    tree = plan_multicast(args.src, dsts, bytes=nbytes, mode=args.mode, regions=[])
    directs = [plan(args.src, d, bytes=nbytes, planner="direct") for d in dsts]
    edges = [(e.src, e.dst) for e in tree.edges]
    regions = list(dict.fromkeys([args.src, *dsts, *(r for e in edges for r in e)]))
    rates = scaled_rates(
        profile, list(dict.fromkeys([*edges, *((args.src, d) for d in dsts)])), args.scale
    )
    if max(rates.values()) > MAX_MBIT:
        shrink = MAX_MBIT / max(rates.values())
        rates = {k: v * shrink for k, v in rates.items()}
    console.print(
        f"[bold]tree[/] ({args.mode}): "
        + "; ".join(f"{a} -> {b}" for a, b in edges)
        + f"   scale {args.scale:g} Mbit/s per Gbit/s, {args.mib} MiB"
    )
    work = Path(tempfile.mkdtemp(prefix="skyhop-mc-"))
    started = time.monotonic()
    try:
        src_dir = work / "src"
        src_dir.mkdir()
        for i in range(4):
            (src_dir / f"part-{i}.bin").write_bytes(os.urandom(nbytes // 4))
        with EmulatedWAN(regions, rates) as wan:
            results = {}
            for name in ("multicast", "separate"):
                spec = {
                    "workdir": str(work),
                    "name": name,
                    "source": f"{src_dir}/",
                    "destinations": [f"{work}/{name}-{i}/" for i in range(len(dsts))],
                    "src_region": args.src,
                    "dst_regions": dsts,
                    "tree": tree.model_dump(mode="json"),
                    "chunk_size": args.chunk_mib * 2**20,
                    "region_netns": wan.region_netns(),
                }
                path = work / f"{name}.json"
                path.write_text(json.dumps(spec))
                env = dict(os.environ)
                env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "shared")])
                proc = wan.run_in_ctl(
                    [sys.executable, "-m", "benchmarks.multicast", "drive", str(path)],
                    env=env,
                    timeout=900,
                )
                lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
                if proc.returncode != 0 or not lines:
                    tail = "\n".join(proc.stderr.strip().splitlines()[-12:]) or "(no output)"
                    raise SystemExit(f"multicast: {name} run failed:\n{tail}")
                results[name] = json.loads(lines[-1])
                for d in spec["destinations"]:
                    for f in src_dir.iterdir():
                        if (Path(d) / f.name).read_bytes() != f.read_bytes():
                            raise SystemExit(f"multicast: {name}: {d}{f.name} differs")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    gb = nbytes / 1e9
    tree_egress = gb * sum(profile.egress_usd_per_gb(a, b) for a, b in edges)
    apart_egress = gb * sum(profile.egress_usd_per_gb(args.src, d) for d in dsts)
    table = Table(
        title=f"{args.mib} MiB from {args.src} to {', '.join(dsts)}: real gateways on emulated links"
    )
    for col in (
        "",
        "jobs",
        "gateways",
        "read at the source",
        "egress (profile)",
        "predicted s",
        "measured s",
        "all verified",
    ):
        table.add_column(col, justify="right")
    scale_s = 1000.0 / args.scale  # profile seconds -> emulated seconds (Mbit vs Gbit)
    m, s = results["multicast"], results["separate"]
    table.add_row(
        "multicast tree",
        "1",
        str(m["gateways"]),
        f"{m['source_bytes_read'] / 2**20:.1f} MiB",
        f"${tree_egress:.4f}",
        f"{tree.seconds * scale_s:.1f}",
        f"{m['seconds']:.1f}",
        "yes" if m["succeeded"] else "NO",
    )
    table.add_row(
        f"{len(dsts)} separate jobs",
        str(len(dsts)),
        str(s["gateways"]),
        f"{s['source_bytes_read'] / 2**20:.1f} MiB",
        f"${apart_egress:.4f}",
        f"{max(d.seconds for d in directs) * scale_s:.1f}",
        f"{s['seconds']:.1f}",
        "yes" if s["succeeded"] else "NO",
    )
    table.add_row(
        "tree / separate",
        "",
        "",
        f"{m['source_bytes_read'] / max(s['source_bytes_read'], 1):.2f}",
        f"{tree_egress / apart_egress:.2f}" if apart_egress else "-",
        "",
        f"{m['seconds'] / s['seconds']:.2f}",
        "",
    )
    console.print(table)
    console.print(
        "read at the source = the source gateways' own counter of bytes read from the store; "
        "egress = those bytes priced along each route by the profile (a tree edge carries the "
        "data once); measured s = from the jobs' start to the last destination verified "
        "(the separate jobs side by side). Predicted s: the planner's estimate at the emulated "
        f"rates (it leaves out gateway start-up). Run took {time.monotonic() - started:.0f} s."
    )
    checks = {
        "every copy byte-identical, every destination verified": m["succeeded"] and s["succeeded"],
        "the multicast job read the source once": m["source_bytes_read"] == nbytes,
        "the separate jobs read it once each": s["source_bytes_read"] == len(dsts) * nbytes,
        "the tree's egress is below the separate jobs'": tree_egress < apart_egress,
    }
    for what, good in checks.items():
        console.print(f"  {'ok  ' if good else 'FAIL'} {what}")
    return 0 if all(checks.values()) else 1


# ---------------------------------------------------------------- the driver, run in ctl


def drive(spec: dict) -> dict:
    """One phase inside the control namespace: the multicast job, or the separate
    jobs side by side, through the embedded control plane with gateways in the
    regions' namespaces."""
    os.environ["SKYHOP_HOME"] = str(Path(spec["workdir"]) / f"home-{spec['name']}")
    from skyhop.compute.local import LocalComputeProvider
    from skyhop.controlplane.embedded import EmbeddedRunner
    from skyhop.controlplane.service import ControlPlane
    from skyhop.models import Job, RoutePlan, TransferOptions, TransferRequest
    from skyhop.planner import plan as plan_route
    from skyhop.state.sqlite import SQLiteManifest

    netns = {k: tuple(v) for k, v in spec["region_netns"].items()}
    tree = RoutePlan.model_validate(spec["tree"])
    options = TransferOptions(
        recursive=True,
        chunk_size=spec["chunk_size"],
        multipart_threshold=spec["chunk_size"],
        connections=2,
        compression="none",
        src_region=spec["src_region"],
    )
    home = Path(os.environ["SKYHOP_HOME"])
    home.mkdir(parents=True, exist_ok=True)

    def control_plane(planner) -> ControlPlane:  # type: ignore[no-untyped-def]
        return ControlPlane(
            manifest=SQLiteManifest(home / "manifest.db"),
            compute=LocalComputeProvider(region_netns=netns),  # type: ignore[arg-type]
            planner=planner,
        )

    started = time.monotonic()
    if spec["name"] == "multicast":
        cp = control_plane(lambda job, stores=None: tree)
        request = TransferRequest(
            source=spec["source"],
            destination=spec["destinations"][0],
            destinations=spec["destinations"],
            options=options,
        )
        job = cp.create_job(request)
        report = EmbeddedRunner(cp).run(job.job_id)
        runtime = cp.require(job.job_id).runtime
        return {
            "succeeded": report.state.value == "succeeded"
            and all(d.state.value == "succeeded" for d in report.destinations),
            "seconds": time.monotonic() - started,
            "source_bytes_read": report.source_bytes_read or 0,
            "gateways": len(runtime.gateways) if runtime else 0,
        }
    reports = []
    gateways = 0
    errors: list[BaseException] = []

    def one(dst: str, region: str) -> None:
        nonlocal gateways
        try:

            def planner(job: Job, stores: object = None) -> RoutePlan:
                return plan_route(
                    spec["src_region"], region, bytes=job.bytes_total, planner="direct"
                )

            cp = control_plane(planner)
            request = TransferRequest(
                source=spec["source"],
                destination=dst,
                options=options.model_copy(update={"dst_region": region}),
            )
            job = cp.create_job(request)
            reports.append(EmbeddedRunner(cp).run(job.job_id))
            runtime = cp.require(job.job_id).runtime
            gateways += len(runtime.gateways) if runtime else 0
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=one, args=(d, r))
        for d, r in zip(spec["destinations"], spec["dst_regions"], strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {
        "succeeded": all(r.state.value == "succeeded" for r in reports),
        "seconds": time.monotonic() - started,
        "source_bytes_read": sum(r.source_bytes_read or 0 for r in reports),
        "gateways": gateways,
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "drive":
        print(json.dumps(drive(json.loads(Path(sys.argv[2]).read_text()))), flush=True)
        sys.exit(0)
    sys.exit(main())
