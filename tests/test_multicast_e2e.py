"""Multicast end to end: one source, several destinations, one set of real gateway
processes (the source reads each chunk once and sends it along the tree), the
manifest per destination, and destinations that fail or die without holding
back the others' verification or resume."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane import provision
from skyhop.controlplane.embedded import EmbeddedRunner
from skyhop.controlplane.service import ControlPlane
from skyhop.models import (
    ChunkState,
    Edge,
    Gateway,
    GatewayRole,
    Job,
    JobState,
    ObjectState,
    RoutePlan,
    TransferOptions,
    TransferRequest,
)
from skyhop.state.sqlite import SQLiteManifest
from tests.fixtures.cli import (
    MIB,
    SMALL_PARTS,
    awkward_tree,
    gateway_processes,
    run_cli,
    start_cli,
    tree_digest,
    wait_no_gateways,
)


def manifest(home: Path) -> SQLiteManifest:
    return SQLiteManifest(home / "manifest.db")


def test_one_source_three_destinations(tmp_path: Path, skyhop_home: Path):
    src = tmp_path / "src"
    files = awkward_tree(src)
    dsts = [tmp_path / f"d{i}" for i in range(3)]
    res = run_cli(
        "cp", "-r", str(src), str(dsts[0]), "--also", str(dsts[1]), "--also", str(dsts[2]),
        "--json", *SMALL_PARTS,
    )  # fmt: skip
    assert res.code == 0, res.stderr
    report = res.report
    assert report["state"] == "succeeded"
    assert [d["destination"] for d in report["destinations"]] == [str(d) for d in dsts]
    for leg in report["destinations"]:
        assert leg["state"] == "succeeded" and leg["objects"] == len(files)
        assert leg["verification"]["checked"] == len(files)
        assert leg["verification"]["missing"] == [] and leg["objects_failed"] == 0
    assert report["objects"] == 3 * len(files)
    # the source read the data once, not three times
    size = sum(len(b) for b in files.values())
    assert report["source_bytes_read"] == size
    for d in dsts:
        assert tree_digest(d) == tree_digest(src)
    # the manifest keeps every chunk per destination, each verified once
    m = manifest(skyhop_home)
    job = m.get_job(report["job_id"])
    assert job is not None and job.state == JobState.SUCCEEDED and len(job.legs) == 3
    assert job.plan is not None and job.plan.planner == "multicast"
    ids = None
    for n, leg_id in enumerate(job.legs):
        leg = m.get_job(leg_id)
        assert leg is not None and leg.leg_of == job.job_id and leg.leg == n
        assert leg.state == JobState.SUCCEEDED and leg.request.destination == str(dsts[n])
        chunks = list(m.iter_chunks(leg_id))
        assert all(c.state == ChunkState.VERIFIED and c.attempts == 1 for c in chunks)
        mine = [(c.chunk_id, c.offset, c.length) for c in chunks]
        assert ids is None or mine == ids  # the same chunks at every destination
        ids = mine
    assert wait_no_gateways(job.job_id) == []
    # `skyhop status` lists the job once, with its destinations under it
    listed = run_cli("status", "--json")
    rows = [j for j in json.loads(listed.stdout) if j["job_id"].startswith(job.job_id)]
    assert [r["job_id"] for r in rows] == [job.job_id]
    one = json.loads(run_cli("status", job.job_id, "--json").stdout)
    assert [d["job"]["state"] for d in one["destinations"]] == ["succeeded"] * 3


def test_a_failing_destination_does_not_hold_back_the_others(tmp_path: Path, skyhop_home: Path):
    """Destination 2 refuses one object (a file where its directory should be): the
    object fails there alone; the other destinations verify everything; the job
    fails, naming that destination."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"alpha")
    (src / "sub" / "b.bin").write_bytes(b"b" * 100_000)
    dsts = [tmp_path / f"d{i}" for i in range(3)]
    dsts[1].mkdir()
    (dsts[1] / "sub").write_bytes(b"in the way")
    res = run_cli(
        "cp", "-r", str(src), str(dsts[0]), "--also", str(dsts[1]), "--also", str(dsts[2]),
        "--json",
    )  # fmt: skip
    assert res.code == 1, res.stderr
    report = res.report
    assert report["state"] == "failed"
    states = [d["state"] for d in report["destinations"]]
    assert states == ["succeeded", "failed", "succeeded"]
    bad = report["destinations"][1]
    assert bad["objects"] == 1 and bad["objects_failed"] == 1
    assert any("sub/b.bin" in f for f in bad["failures"])
    assert any(f.startswith(str(dsts[1])) for f in report["failures"])
    for d in (dsts[0], dsts[2]):
        assert tree_digest(d) == tree_digest(src)
    assert (dsts[1] / "a.txt").read_bytes() == b"alpha"


def test_a_dead_destination_is_set_aside_and_resumed_alone(tmp_path: Path, skyhop_home: Path):
    """Destination 1's gateway is killed mid-copy: the others finish and verify; the
    job is left resumable; --resume starts gateways for destination 1 only and sends
    only what it lacks."""
    src = tmp_path / "src"
    for i in range(12):
        (src / f"f{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (src / f"f{i}.bin").write_bytes(bytes([i]) * 200_000)
    dsts = [tmp_path / f"d{i}" for i in range(3)]
    proc = start_cli(
        "cp", "-r", str(src), str(dsts[0]), "--also", str(dsts[1]), "--also", str(dsts[2]),
        "--json", "--connections", "1", env={"SKYHOP_TEST_HOOKS": "source:sleep_per_chunk=0.5"},
    )  # fmt: skip
    m = manifest(skyhop_home)
    job_id = _wait_for_job(m)
    leg1 = f"{job_id}.d1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if m.progress(leg1).chunks.get(ChunkState.VERIFIED, 0) >= 1:
            break
        time.sleep(0.05)
    victims = [p for p in gateway_processes(job_id) if "-d1-" in " ".join(p.cmdline())]
    assert victims, "destination 1's gateway is not running"
    for p in victims:
        p.kill()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    report = json.loads(out)
    assert report["state"] == "interrupted"
    states = [d["state"] for d in report["destinations"]]
    assert states == ["succeeded", "interrupted", "succeeded"]
    assert f"skyhop cp --resume {job_id}" in " ".join(report["failures"])
    for d in (dsts[0], dsts[2]):
        assert tree_digest(d) == tree_digest(src)
    done_before = {
        leg: {c.chunk_id: c.attempts for c in m.iter_chunks(f"{job_id}.d{leg}")} for leg in (0, 2)
    }
    assert wait_no_gateways(job_id) == []

    res = run_cli("cp", "--resume", job_id, "--json")
    assert res.code == 0, res.stderr
    report = res.report
    assert report["state"] == "succeeded"
    assert [d["state"] for d in report["destinations"]] == ["succeeded"] * 3
    assert tree_digest(dsts[1]) == tree_digest(src)
    for leg in (0, 2):  # nothing was sent again to the finished destinations
        after = {c.chunk_id: c.attempts for c in m.iter_chunks(f"{job_id}.d{leg}")}
        assert after == done_before[leg]
    job = m.get_job(job_id)
    assert job is not None and job.runtime is not None
    launched = {g.role for g in job.runtime.gateways if g.role == GatewayRole.DESTINATION}
    assert launched == {GatewayRole.DESTINATION}
    assert [g.legs for g in job.runtime.gateways if g.role == GatewayRole.DESTINATION] == [[1]]
    assert wait_no_gateways(job_id) == []


def _wait_for_job(m: SQLiteManifest, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [j for j in m.list_jobs(10) if j.legs]
        if jobs and jobs[0].state == JobState.RUNNING:
            return jobs[0].job_id
        time.sleep(0.05)
    raise AssertionError("the multicast job never started running")


# ---------------------------------------------------------------- a tree with a relay


def tree_plan(job: Job, *, stores: object = None) -> RoutePlan:
    """src -> r1 -> r2: destination 0 in r1, which forwards to destination 1 in r2
    (regions are labels of local gateway processes here)."""
    return RoutePlan(
        planner="multicast",
        src_region="r0",
        dst_region="r1",
        dst_regions=["r1", "r2"],
        gateways=[
            Gateway(region="r0", count=1, role="source"),
            Gateway(region="r1", count=1, role="destination"),
            Gateway(region="r2", count=1, role="destination"),
        ],
        edges=[
            Edge(src="r0", dst="r1", gbps=1.0, connections=8),
            Edge(src="r1", dst="r2", gbps=1.0, connections=8),
        ],
        path=["r0", "r1"],
        throughput_gbps=1.0,
    )


def test_the_tree_from_a_plan():
    job = Job(
        request=TransferRequest(
            source="/tmp/src/",
            destination="/tmp/a/",
            destinations=["/tmp/a/", "/tmp/b/", "/tmp/c/"],
        )
    )
    job = job.model_copy(
        update={"plan": tree_plan(job).model_copy(update={"dst_regions": ["r1", "r2", "r2"]})}
    )
    groups = provision.tree_groups(job, [(0, "/tmp/a/"), (1, "/tmp/b/"), (2, "/tmp/c/")])
    by_label = {g.label: g for g in groups}
    root = groups[0]
    assert root.role == GatewayRole.SOURCE and root.legs == [0, 1, 2]
    # r1 holds destination 0 and forwards: a relay beside its destination gateway
    (relay1,) = root.next
    assert relay1.role == GatewayRole.RELAY and relay1.region == "r1" and relay1.legs == [0, 1, 2]
    kinds = sorted((g.role.value, g.region, tuple(g.legs)) for g in relay1.next)
    # r2 holds two destinations: its own relay, fanning out to both
    assert kinds == [("destination", "r1", (0,)), ("relay", "r2", (1, 2))]
    relay2 = next(g for g in relay1.next if g.role == GatewayRole.RELAY)
    assert sorted(g.leg for g in relay2.next) == [1, 2]
    assert by_label["d2"].destination == "/tmp/c/"
    # only destination 1 left: the tree shrinks to the path that reaches it
    left = provision.tree_groups(job, [(1, "/tmp/b/")])
    assert sorted((g.role.value, g.region) for g in left) == [
        ("destination", "r2"),
        ("relay", "r1"),  # the planned path still goes through r1
        ("source", "r0"),
    ]
    built = provision._build(job, "pull", attempt=1, key_wrapper=None, legs=[(1, "/tmp/b/")])
    dests = [c for c in built.configs if c.role == GatewayRole.DESTINATION]
    assert [(c.leg, c.destination_uri) for c in dests] == [(1, "/tmp/b/")]
    assert all(c.data_key_b64 is None for c in built.configs if c.role == GatewayRole.RELAY)


def test_through_a_relay_each_destination_writes_its_own(tmp_path: Path, monkeypatch):
    """Real gateways along src -> relay(r1) -> {destination 0 in r1, destination 1 in
    r2}: the relay forwards every chunk to both without opening it. A write that
    destination 1 refuses once is sent again to destination 1 alone: the relay
    forwards it down both branches and destination 0 drops what is not for it."""
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "destination1:fail_write=2")
    src = tmp_path / "src"
    files = awkward_tree(src)
    dsts = [tmp_path / "d0", tmp_path / "d1"]
    cp = ControlPlane(
        manifest=SQLiteManifest(tmp_path / "m.db"),
        compute=LocalComputeProvider(),
        planner=tree_plan,
    )
    request = TransferRequest(
        source=f"{src}/",
        destination=f"{dsts[0]}/",
        destinations=[f"{dsts[0]}/", f"{dsts[1]}/"],
        options=TransferOptions(recursive=True, chunk_size=5 * MIB, multipart_threshold=5 * MIB),
    )
    job = cp.create_job(request)
    report = EmbeddedRunner(cp).run(job.job_id)
    assert report.state == JobState.SUCCEEDED, report.failures
    for d in dsts:
        assert tree_digest(d) == tree_digest(src)
    runtime = cp.require(job.job_id).runtime
    assert runtime is not None
    assert sorted(g.role.value for g in runtime.gateways) == [
        "destination",
        "destination",
        "relay",
        "source",
    ]
    resent = [c for c in cp.manifest.iter_chunks(f"{job.job_id}.d1") if c.attempts > 1]
    assert len(resent) == 2  # destination 1's two refused writes, and only those
    assert all(c.attempts == 1 for c in cp.manifest.iter_chunks(f"{job.job_id}.d0"))
    assert report.source_bytes_read == sum(len(b) for b in files.values()) + sum(
        c.length for c in resent
    )
    assert all(
        o.state == ObjectState.VERIFIED
        for leg in (0, 1)
        for o in cp.manifest.iter_objects(f"{job.job_id}.d{leg}")
    )


def test_bad_multicast_requests_are_one_line(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x")
    cases = [
        (["cp", "-r", str(src), str(tmp_path / "d"), "--also", str(tmp_path / "d")], "twice"),
        (["cp", "-r", str(src), str(tmp_path / "d"), "--also", str(tmp_path / "d" / "in")], "overlap"),
        (["cp", "-r", str(src), str(tmp_path / "d"), "--also", str(src)], "same"),
        (["cp", "-r", str(src), str(tmp_path / "d"), "--also", str(tmp_path / "e"), "--relay", "local"], "--relay"),
        (["cp", "-r", str(src), str(tmp_path / "d"), "--also", str(tmp_path / "e"), "--dry-run"], "plan"),
    ]  # fmt: skip
    for argv, needle in cases:
        res = run_cli(*argv, "-y")
        assert res.code != 0 and needle in res.stderr, (argv, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "d").exists() or not any((tmp_path / "d").iterdir())


@pytest.mark.parametrize("n", [2])
def test_the_request_model(n: int):
    r = TransferRequest(source="s3://src-bucket/a/", destinations=["/tmp/x/", "/tmp/y/"])
    assert (
        r.destination == "/tmp/x/" and r.multicast and r.all_destinations == ["/tmp/x/", "/tmp/y/"]
    )
    one = TransferRequest(source="s3://src-bucket/a/", destinations=["/tmp/x/"])
    assert one.destination == "/tmp/x/" and one.destinations == [] and not one.multicast
    again = TransferRequest.model_validate_json(r.model_dump_json())
    assert again == r
    with pytest.raises(ValueError, match="first of destinations"):
        TransferRequest(
            source="s3://src-bucket/a/", destination="/tmp/z/", destinations=["/tmp/x/", "/tmp/y/"]
        )
    with pytest.raises(ValueError, match=r"destination\n  Field required"):
        TransferRequest(source="s3://src-bucket/a/")
    assert n == 2
