"""``skyhop plan``: readable table and JSON; every bad input is one line and a non-zero exit."""

from __future__ import annotations

import json

import boto3
import pytest

from skyhop.models import RoutePlan
from skyhop.planner.cli import main as plan_main

PAIR = ["--src-region", "aws:af-south-1", "--dst-region", "aws:ap-northeast-2"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = plan_main(["plan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_table_shows_route_gateways_time_and_cost(capsys, tmp_path):
    code, out, err = run(
        capsys,
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        *PAIR,
        "--bytes",
        "100GB",
        "--planner",
        "overlay",
    )
    assert code == 0, err
    for needle in (
        "aws:af-south-1",
        "relay",
        "aws:ap-northeast-2",
        "Gbit/s",
        "100.00 GB",
        "egress",
        "VM-hours",
        "requests",
        "total",
    ):
        assert needle in out


def test_json_is_a_route_plan(capsys, tmp_path):
    code, out, _ = run(
        capsys,
        str(tmp_path / "a"),
        str(tmp_path / "b"),
        *PAIR,
        "--bytes",
        "1TiB",
        "--objects",
        "1000",
        "--max-vms",
        "3",
        "--json",
    )
    assert code == 0
    route = RoutePlan.model_validate_json(out)
    assert route.bytes == 2**40 and route.planner == "milp"
    assert max(g.count for g in route.gateways) <= 3
    assert route.seconds > 0 and route.cost.egress_usd > 0


def test_cheapest_mode_with_target(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "a",
        "b",
        *PAIR,
        "--bytes",
        "1e11",
        "--mode",
        "cheapest",
        "--target-gbps",
        "2",
        "--max-vms",
        "2",
        "--json",
    )
    assert code == 0, err
    assert json.loads(out)["throughput_gbps"] == pytest.approx(2.0)


def test_local_paths_are_measured_and_planned_locally(capsys, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        (src / f"f{i}").write_bytes(b"x" * (1000 + i))
    code, out, err = run(capsys, str(src) + "/", str(tmp_path / "dst") + "/", "--json")
    assert code == 0, err
    route = RoutePlan.model_validate_json(out)
    assert route.planner == "local" and route.bytes == 3003
    assert route.cost.egress_usd == 0 and route.cost.requests_usd == 0
    code, out, _ = run(capsys, str(src / "f1"), str(tmp_path / "x"), "--json")
    assert RoutePlan.model_validate_json(out).bytes == 1001


def test_bucket_region_comes_from_the_store(moto, capsys, tmp_path):
    s3 = boto3.client("s3", endpoint_url=moto.endpoint, region_name="eu-west-1")
    s3.create_bucket(
        Bucket="plan-src", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    s3.put_object(Bucket="plan-src", Key="data/a.bin", Body=b"y" * 5000)
    code, out, err = run(
        capsys,
        "s3://plan-src/data/",
        "gs://some-bucket/x/",
        "--dst-region",
        "gcp:us-central1",
        "--json",
    )
    assert code == 0, err
    route = RoutePlan.model_validate_json(out)
    assert route.src_region == "aws:eu-west-1" and route.dst_region == "gcp:us-central1-a"
    assert route.bytes == 5000


def test_mounted_in_the_skyhop_command(capsys, tmp_path):
    from skyhop.cli import main

    code = main(["plan", str(tmp_path), str(tmp_path / "b"), *PAIR, "--bytes", "1GB", "--json"])
    out, _ = capsys.readouterr()
    assert code == 0
    assert RoutePlan.model_validate_json(out).src_region == "aws:af-south-1"


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["--src-region", "aws:us-east-3", "--dst-region", "aws:us-east-1", "--bytes", "1GB"],
            "nearest known: aws:us-east-2",
        ),
        ([*PAIR, "--bytes", "ten"], "not a size"),
        ([*PAIR, "--bytes", "1GB", "--max-vms", "0"], "--max-vms must be at least 1"),
        ([*PAIR, "--bytes", "1GB", "--max-vms", "two"], "--max-vms must be a whole number"),
        ([*PAIR, "--bytes", "1GB", "--target-gbps", "5"], "applies to --mode cheapest"),
        ([*PAIR, "--bytes", "1GB", "--max-cost-per-gb", "-1"], "positive number"),
        (
            [*PAIR, "--bytes", "1GB", "--mode", "cheapest", "--max-cost-per-gb", "1"],
            "applies to --mode fastest",
        ),
        ([*PAIR, "--bytes", "1GB", "--mode", "slow"], "unknown --mode"),
        ([*PAIR, "--bytes", "1GB", "--planner", "magic"], "unknown --planner"),
        (
            [*PAIR, "--bytes", "1GB", "--mode", "cheapest", "--target-gbps", "500"],
            "best achievable is",
        ),
        ([*PAIR, "--bytes", "1GB", "--max-cost-per-gb", "0.0001"], "cheapest achievable"),
        ([*PAIR, "--bytes", "1GB", "--vcpu-quota", "8"], "vCPU quota"),
        ([*PAIR, "--bytes", "1GB", "--profile", "/nonexistent/profile.json"], "does not exist"),
        ([*PAIR, "--bytes", "1GB", "--objects", "5", "--parts", "2"], "parts (2) must be"),
        ([*PAIR, "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(capsys, tmp_path, argv, needle):
    code, out, err = run(capsys, str(tmp_path / "a"), str(tmp_path / "b"), *argv)
    assert code != 0
    assert out == ""
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_unmeasurable_source_asks_for_bytes(capsys, tmp_path):
    code, out, err = run(capsys, str(tmp_path / "missing") + "/", str(tmp_path / "b"), *PAIR)
    assert code != 0 and out == ""
    assert "pass --bytes" in err and len(err.strip().splitlines()) == 1


def test_malformed_uri_and_missing_arguments(capsys):
    code, _, err = run(capsys, "s3:/broken", "b", *PAIR, "--bytes", "1")
    assert code == 2 and "malformed URI" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
