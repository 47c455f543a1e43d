"""A small emulated WAN: namespaces for real regions of the profile, veth links
shaped with tc tbf to the profile's rates (scaled down), real gateways copying
files direct and through the relay the planner picks. Speed is the benchmark's
business (benchmarks/wan_overlay.py); here the links, the route and the bytes are."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from skyhop.planner import load_profile, plan
from tests.fixtures.netns import EmulatedWAN, scaled_rates, why_not

SRC, DST = "aws:ap-southeast-2", "aws:af-south-1"
RELAY, OTHER = "gcp:asia-south1-a", "azure:eastus2"
SCALE = 10.0  # Mbit/s on the emulated link per Gbit/s in the profile

needs_netns = pytest.mark.skipif(why_not() is not None, reason=why_not() or "")


def test_without_root_it_says_so(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert "needs root" in why_not()


def test_the_planner_picks_the_relay_among_the_emulated_regions():
    profile = load_profile()
    route = plan(SRC, DST, bytes=2**20, planner="overlay", regions=[SRC, DST, RELAY, OTHER])
    assert route.path == [SRC, RELAY, DST]
    direct = plan(SRC, DST, bytes=2**20, planner="direct")
    assert route.throughput_gbps >= 1.5 * direct.throughput_gbps
    assert direct.throughput_gbps == pytest.approx(profile.pair_gbps(SRC, DST))


@pytest.mark.netns
@needs_netns
def test_real_gateways_copy_direct_and_through_the_relay(tmp_path: Path):
    profile = load_profile()
    links = [(SRC, DST), (SRC, RELAY), (RELAY, DST), (SRC, OTHER), (OTHER, DST)]
    rates = scaled_rates(profile, links, SCALE)
    src_dir, dst_dir = tmp_path / "src", tmp_path / "dst"
    src_dir.mkdir()
    dst_dir.mkdir()
    blobs = {"a.bin": os.urandom(5 * 2**20 + 123), "small.txt": b"hello relay\n" * 100}
    for name, data in blobs.items():
        (src_dir / name).write_bytes(data)

    with EmulatedWAN([SRC, DST, RELAY, OTHER], rates) as wan:
        prefix = wan.prefix
        # every direction of every link is shaped to its scaled profile rate
        shaped = wan.shaped_mbit()
        assert set(shaped) == set(rates) and len(shaped) == 2 * len(links)
        for direction, mbit in rates.items():
            assert shaped[direction] == pytest.approx(mbit, rel=0.01)
        # shaping holds: one TCP stream never beats the shaped rate
        assert 0 < wan.measure_tcp(SRC, DST, seconds=1.0) <= 1.1 * rates[(SRC, DST)]

        route = plan(
            SRC,
            DST,
            bytes=sum(map(len, blobs.values())),
            planner="overlay",
            regions=[SRC, DST, RELAY, OTHER],
        )
        for path in ([SRC, DST], route.path):
            for f in dst_dir.iterdir():
                f.unlink()
            result = wan.drive(
                {
                    "workdir": str(tmp_path),
                    "source": f"{src_dir}/",
                    "destination": f"{dst_dir}/",
                    "path": path,
                    "chunk_size": 5 * 2**20,
                    "connections": 1,
                    "workers": 1,
                    "segment_size": 2**20,
                }
            )
            assert result["path"] == path
            assert result["bytes"] == sum(map(len, blobs.values()))
            assert result["chunks"] == 3  # 5 MiB + 123 bytes as two parts, one small object
            for name, data in blobs.items():
                assert (dst_dir / name).read_bytes() == data

    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert prefix not in listed
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert prefix not in links
