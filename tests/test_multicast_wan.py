"""Multicast on a small emulated WAN: one namespace per region of the planner's
tree, links shaped with tc, real gateways placed in their regions by the control
plane, relays forwarding between namespaces. Speed and cost against separate
jobs are the benchmark's business (benchmarks/multicast.py); here the tree, the
bytes and the single read of the source are."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from skyhop.planner import load_profile
from skyhop.planner.multicast import plan_multicast
from tests.fixtures.netns import EmulatedWAN, scaled_rates, why_not

ROOT = Path(__file__).resolve().parents[1]
SRC = "aws:ap-southeast-2"
DSTS = ["aws:eu-west-1", "aws:eu-central-1", "gcp:europe-west4-a"]


@pytest.mark.skipif(why_not() is not None, reason=why_not() or "")
def test_a_tree_across_namespaces(tmp_path: Path):
    profile = load_profile()
    nbytes = 8 * 2**20
    tree = plan_multicast(SRC, DSTS, bytes=nbytes, mode="cheapest", regions=[])
    edges = [(e.src, e.dst) for e in tree.edges]
    assert len(edges) == 3 and {b for _, b in edges} == set(DSTS)
    regions = list(dict.fromkeys([SRC, *DSTS]))
    rates = scaled_rates(profile, edges, 10.0)
    src = tmp_path / "src"
    src.mkdir()
    files = {f"f{i}.bin": os.urandom(nbytes // 2) for i in range(2)}
    for name, body in files.items():
        (src / name).write_bytes(body)
    dsts = [f"{tmp_path}/d{i}/" for i in range(3)]
    with EmulatedWAN(regions, rates) as wan:
        spec = {
            "workdir": str(tmp_path),
            "name": "multicast",
            "source": f"{src}/",
            "destinations": dsts,
            "src_region": SRC,
            "dst_regions": DSTS,
            "tree": tree.model_dump(mode="json"),
            "chunk_size": 5 * 2**20,
            "region_netns": wan.region_netns(),
        }
        path = tmp_path / "spec.json"
        path.write_text(json.dumps(spec))
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "shared")]))
        proc = wan.run_in_ctl(
            [sys.executable, "-m", "benchmarks.multicast", "drive", str(path)],
            env=env,
            timeout=300,
        )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads([ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1])
    assert result["succeeded"]
    assert result["source_bytes_read"] == nbytes  # once, for three destinations
    # one source, a relay in each forwarding region, one gateway per destination
    assert result["gateways"] == 1 + 2 + 3
    for d in dsts:
        for name, body in files.items():
            assert (Path(d) / name).read_bytes() == body
