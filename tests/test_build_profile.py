"""The profile builder on a small CSV excerpt this test writes itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from skyhop.planner import load_profile, plan
from skyhop.planner.build_profile import build, load_pricing, main

HEADER = (
    "src_region,src_tier,src_instance_class,dst_region,dst_tier,dst_instance_class,"
    "iperf3_connections,iperf3_runtime,tag,stdout_path,stderr_path,throughput_sent,"
    "throughput_received,cpu_utilization,success"
)


def row(
    src: str, dst: str, sent: float, received: float, tier: str = "PREMIUM", success: str = "True"
) -> str:
    return f"{src},{tier},x,{dst},{tier},y,64,5,t,o,e,{sent * 1e9},{received * 1e9},5.0,{success}"


@pytest.fixture
def excerpt(tmp_path: Path) -> Path:
    rows = [
        HEADER,
        row("aws:us-east-1", "gcp:us-central1-a", 5.0, 4.0),
        row("aws:us-east-1", "gcp:us-central1-a", 5.0, 3.0),  # duplicate: averaged
        row("gcp:us-central1-a", "aws:us-east-1", 7.0, 6.5),
        row("aws:us-east-1", "azure:uksouth", 2.0, 1.5),
        row("azure:uksouth", "aws:us-east-1", 2.5, 2.0),
        row("azure:uksouth", "gcp:us-central1-a", 9.0, 8.0, tier="STANDARD"),  # other tier
        row("gcp:us-central1-a", "azure:uksouth", 9.0, 8.0, success="False"),  # failed run
        row("aws:us-east-1", "aws:us-east-1", 9.0, 9.0),  # self pair: dropped
    ]
    (tmp_path / "grid.csv").write_text("\n".join(rows) + "\n")
    costs = ["src,dest,src_tier,dest_tier,cost"]
    for s in ("aws:us-east-1", "gcp:us-central1-a", "azure:uksouth"):
        for d in ("aws:us-east-1", "gcp:us-central1-a", "azure:uksouth"):
            costs.append(f"{s},{d},PREMIUM,PREMIUM,{0.0 if s == d else 0.09}")
            costs.append(f"{s},{d},STANDARD,STANDARD,0.5")
    (tmp_path / "cost.csv").write_text("\n".join(costs) + "\n")
    return tmp_path


def test_builds_a_compact_profile(excerpt: Path):
    profile = build(excerpt / "grid.csv", excerpt / "cost.csv", load_pricing())
    assert list(profile.regions) == ["aws:us-east-1", "azure:uksouth", "gcp:us-central1-a"]
    assert profile.link_gbps("aws:us-east-1", "gcp:us-central1-a") == pytest.approx(3.5)
    assert profile.link_gbps("gcp:us-central1-a", "aws:us-east-1") == pytest.approx(6.5)
    assert profile.link_gbps("gcp:us-central1-a", "azure:uksouth") == 0.0  # failed, other tier
    assert profile.gbps[profile.index["azure:uksouth"]][profile.index["gcp:us-central1-a"]] is None
    assert profile.egress_usd_per_gb("aws:us-east-1", "azure:uksouth") == pytest.approx(0.09)
    assert profile.regions["aws:us-east-1"].vm_usd_per_hour == pytest.approx(1.536)
    gcp = profile.regions["gcp:us-central1-a"]  # a zone priced by its region
    assert gcp.vm_usd_per_hour == pytest.approx(4.66166 / 3, rel=1e-4)
    assert "n2-standard-96" in gcp.price_note
    assert profile.regions["azure:uksouth"].price_note.startswith("fallback")
    assert "grid.csv" in profile.source and "cost.csv" in profile.source
    assert "skypilot-catalog" in profile.clouds["aws"].vm_price_source
    sent = build(excerpt / "grid.csv", excerpt / "cost.csv", load_pricing(), metric="sent")
    assert sent.link_gbps("aws:us-east-1", "gcp:us-central1-a") == pytest.approx(5.0)


def test_command_writes_a_profile_the_planners_use(excerpt: Path, capsys):
    out = excerpt / "out" / "profile.json"
    code = main(
        [
            "--data-dir",
            str(excerpt),
            "--throughput",
            "grid.csv",
            "--cost",
            "cost.csv",
            "--out",
            str(out),
            "--name",
            "excerpt",
        ]
    )
    assert code == 0
    assert "3 regions" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["name"] == "excerpt" and len(data["gbps"]) == 3
    route = plan(
        "aws:us-east-1", "azure:uksouth", bytes=10**9, planner="overlay", profile=load_profile(out)
    )
    assert route.path == ["aws:us-east-1", "azure:uksouth"]  # the relay hop is unmeasured
    assert route.throughput_gbps == pytest.approx(1.5)


def test_bad_inputs_are_one_line_errors(excerpt: Path, tmp_path: Path, capsys):
    code = main(["--data-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "p.json")])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    (excerpt / "broken.csv").write_text("a,b\n1,2\n")
    code = main(
        [
            "--data-dir",
            str(excerpt),
            "--throughput",
            "broken.csv",
            "--cost",
            "cost.csv",
            "--out",
            str(tmp_path / "p.json"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "column" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.json").exists()


def test_the_shipped_profile_names_its_source():
    profile = load_profile()
    assert len(profile.regions) == 63
    assert "Skyplane" in profile.source and "throughput_2023-04.csv" in profile.source
    for cloud in profile.clouds.values():
        assert cloud.vm_price_source and cloud.caps_source and cloud.requests.source
    assert all(spec.vm_usd_per_hour > 0 for spec in profile.regions.values())
