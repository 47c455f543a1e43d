"""``skyhop cp`` on cloud gateways: through a deployed control plane (``--on``) and
launched from the CLI (``--gateways cloud``).

``--on aws``: the CLI (a child process with its own SKYHOP_HOME) submits to SQS
and follows the job in DynamoDB on moto, while the real ``submit`` and
``gateway_events`` handlers run from poller threads here (see
tests/fixtures/controlplane.py) with real gateways as local processes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import boto3
import pytest

from skyhop.models import ChunkState, JobState
from skyhop.remotes import ControlPlaneProfile
from tests.fixtures import azure_boot as azure_boot_fixture
from tests.fixtures import controlplane
from tests.fixtures import ec2_boot as ec2_boot_fixture
from tests.fixtures import gce_boot as gce_boot_fixture
from tests.fixtures.cli import (
    Result,
    Terminal,
    gateway_processes,
    run_cli,
    start_cli,
    wait_no_gateways,
)
from tests.fixtures.controlplane import DeployedAWS
from tests.fixtures.vm_boot import VM

deployed_aws = controlplane.deployed_aws
moto_serial_server = controlplane.moto_serial_server

MIB = 1024 * 1024
SMALL_PARTS = ["--multipart-threshold", "5MiB", "--chunk-size", "5MiB"]


@pytest.fixture
def laptop(tmp_path: Path) -> Path:
    """The CLI user's SKYHOP_HOME (the functions keep their own)."""
    home = tmp_path / "laptop-home"
    home.mkdir()
    return home


def write_profile(home: Path, name: str, profile: ControlPlaneProfile) -> None:
    from skyhop import remotes

    (home / "remotes.toml").write_text(remotes.dumps({name: profile}))
    (home / "remotes.toml").chmod(0o600)


def cli(home: Path, *args: str, timeout: float = 240) -> Result:
    return run_cli(*args, env={"SKYHOP_HOME": str(home)}, timeout=timeout)


def tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"hello cloud\n",
        "dir/b.bin": bytes(range(256)) * 64,
        "dir/big.bin": (b"skyhop-on-aws..." * (MIB // 16)) * 11 + b"tail",  # 3 parts
        "empty": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def s3_objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    s3 = boto3.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            key = item["Key"]
            out[key[len(prefix) :]] = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return out


def test_cp_on_aws_local_tree_to_s3_then_s3_to_another_bucket(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path
) -> None:
    write_profile(laptop, "aws-test", deployed_aws.profile())
    s3 = boto3.client("s3")
    for bucket in ("skyhop-on-a", "skyhop-on-b"):
        s3.create_bucket(Bucket=bucket)
    files = tree(tmp_path / "src")

    first = cli(
        laptop,
        "cp",
        "-r",
        f"{tmp_path}/src/",
        "s3://skyhop-on-a/in/",
        "--on",
        "aws",
        "-y",
        "--json",
        *SMALL_PARTS,
    )
    assert first.code == 0, first.stderr
    report = first.report
    assert report["state"] == "succeeded" and report["objects"] == len(files)
    assert s3_objects("skyhop-on-a", "in/") == files
    job_id = report["job_id"]
    # the job is the control plane's (its manifest), the report the CLI's (its home)
    job = deployed_aws.manifest.get_job(job_id)
    assert job is not None and job.state == JobState.SUCCEEDED and job.report is not None
    assert job.runtime is not None and all(g.control_queue for g in job.runtime.gateways)
    local_report = laptop / "reports" / f"{job_id}.json"
    assert json.loads(local_report.read_text())["objects"] == len(files)
    csv = (laptop / "reports" / f"{job_id}.csv").read_text().splitlines()
    assert csv[0].startswith("key,size,action") and len(csv) == 1 + len(files)
    assert "submitted to control plane aws-test (aws)" in first.stderr

    second = cli(
        laptop,
        "cp",
        "-r",
        "s3://skyhop-on-a/in/",
        "s3://skyhop-on-b/copy/",
        "--on",
        "aws-test",
        "-y",
        *SMALL_PARTS,
    )
    assert second.code == 0, second.stderr
    assert s3_objects("skyhop-on-b", "copy/") == files
    assert "succeeded" in second.stdout and "verified 4 objects" in second.stdout

    # both jobs are listed as running on aws-test
    status = cli(laptop, "status", "--json")
    assert status.code == 0, status.stderr
    listed = {j["job_id"]: j for j in json.loads(status.stdout)}
    assert listed[job_id]["where"] == "aws-test" and listed[job_id]["state"] == "succeeded"
    assert listed[job_id]["objects"] == len(files)
    assert listed[job_id]["bytes"] == sum(len(v) for v in files.values())
    assert deployed_aws.control_queues() == []


def test_sync_on_aws_copies_what_differs_and_deletes_what_the_source_lacks(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path
) -> None:
    """``skyhop sync --on``: the control plane's submit function compares both sides
    and plans the copies; the function that finishes the job (no spool of the
    submit's there) plans the deletes again and runs them after every copy verified."""
    write_profile(laptop, "aws-test", deployed_aws.profile())
    boto3.client("s3").create_bucket(Bucket="skyhop-sync-on")
    src = tmp_path / "src"
    files = tree(src)
    first = cli(laptop, "sync", f"{src}/", "s3://skyhop-sync-on/s/", "--on", "aws", "-y",
                "--json", *SMALL_PARTS)  # fmt: skip
    assert first.code == 0, first.stderr
    assert first.report["state"] == "succeeded" and first.report["objects"] == len(files)
    assert first.report["sync"]["to_copy"] == len(files) and first.report["sync"]["skipped"] == 0
    assert s3_objects("skyhop-sync-on", "s/") == files
    job = deployed_aws.manifest.get_job(first.report["job_id"])
    assert (
        job is not None and job.request.mode == "sync" and job.request.options.gateways == ("cloud")
    )

    # one changed, one added, one gone at the source; an object only the destination has
    (src / "a.txt").write_bytes(b"hello cloud, changed\n")
    (src / "new.txt").write_bytes(b"new at the source")
    (src / "dir" / "b.bin").unlink()
    boto3.client("s3").put_object(Bucket="skyhop-sync-on", Key="s/only-there", Body=b"x")
    expected = {k: v for k, v in files.items() if k != "dir/b.bin"}
    expected["a.txt"] = b"hello cloud, changed\n"
    expected["new.txt"] = b"new at the source"

    # without --delete nothing goes; only the two differing objects are copied
    second = cli(laptop, "sync", f"{src}/", "s3://skyhop-sync-on/s/", "--on", "aws-test", "-y",
                 *SMALL_PARTS)  # fmt: skip
    assert second.code == 0, second.stderr
    assert "verified 2 objects" in second.stdout and "skipped  2 unchanged objects" in (
        second.stdout
    )
    assert set(s3_objects("skyhop-sync-on", "s/")) == {*expected, "dir/b.bin", "only-there"}

    third = cli(laptop, "sync", f"{src}/", "s3://skyhop-sync-on/s/", "--on", "aws", "-y",
                "--delete", "--json", *SMALL_PARTS)  # fmt: skip
    assert third.code == 0, third.stderr
    sync = third.report["sync"]
    assert (sync["to_copy"], sync["skipped"], sync["to_delete"], sync["deleted"]) == (0, 4, 2, 2)
    assert s3_objects("skyhop-sync-on", "s/") == expected
    assert deployed_aws.errors() == []

    # a sync refused by the control plane (more deletes than --max-delete) deletes nothing
    boto3.client("s3").put_object(Bucket="skyhop-sync-on", Key="s/gone-1", Body=b"1")
    boto3.client("s3").put_object(Bucket="skyhop-sync-on", Key="s/gone-2", Body=b"2")
    refused = cli(laptop, "sync", f"{src}/", "s3://skyhop-sync-on/s/", "--on", "aws", "-y",
                  "--delete", "--max-delete", "1")  # fmt: skip
    assert refused.code == 1, refused.stderr
    assert "--max-delete 1: this sync would delete 2 objects" in refused.stdout
    assert {"gone-1", "gone-2"} <= set(s3_objects("skyhop-sync-on", "s/"))

    listed = {j["job_id"]: j for j in json.loads(cli(laptop, "status", "--json").stdout)}
    assert listed[third.report["job_id"]]["where"] == "aws-test"
    assert listed[third.report["job_id"]]["state"] == "succeeded"
    assert deployed_aws.control_queues() == []

    # from another machine with the profile: the job is found in its control plane
    other = tmp_path / "other-home"
    other.mkdir()
    write_profile(other, "aws-test", deployed_aws.profile())
    job_id = third.report["job_id"]
    shown = cli(other, "status", job_id, "--json")
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["where"] == "aws-test (aws)"
    assert json.loads(shown.stdout)["job"]["state"] == "succeeded"
    late = cli(other, "cancel", job_id)
    assert late.code == 2 and "already succeeded; nothing to cancel" in late.stderr
    assert job_id in {j["job_id"] for j in json.loads(cli(other, "status", "--json").stdout)}
    unknown = cli(other, "cancel", "j-0123456789abcdef")
    assert unknown.code != 0 and len(unknown.stderr.strip().splitlines()) == 1


def test_one_profile_is_offered_for_cloud_to_cloud_and_local_keeps_the_job_here(
    deployed_aws: DeployedAWS, laptop: Path
) -> None:
    write_profile(laptop, "aws-test", deployed_aws.profile())
    s3 = boto3.client("s3")
    for bucket in ("skyhop-one-a", "skyhop-one-b"):
        s3.create_bucket(Bucket=bucket)
    files = {"a.txt": b"one profile", "d/b.bin": os.urandom(5000)}
    for rel, data in files.items():
        s3.put_object(Bucket="skyhop-one-a", Key="in/" + rel, Body=data)

    # -y: the one control plane runs it (a sync here), without --on
    remote = cli(laptop, "sync", "s3://skyhop-one-a/in/", "s3://skyhop-one-b/r/", "-y", "--json")
    assert remote.code == 0, remote.stderr
    assert "running on control plane aws-test (aws); --local runs it here" in remote.stderr
    assert deployed_aws.manifest.get_job(remote.report["job_id"]) is not None
    assert s3_objects("skyhop-one-b", "r/") == files

    # no terminal to ask on: a note, and the copy runs here; --local: here, no note
    for extra, note in (([], True), (["--local"], False)):
        here = cli(laptop, "cp", "-r", "s3://skyhop-one-a/in/", "s3://skyhop-one-b/h/", "--json",
                   *extra)  # fmt: skip
        assert here.code == 0, here.stderr
        assert ("note: --on aws-test runs this copy on control plane aws-test" in here.stderr) is (
            note
        )
        assert deployed_aws.manifest.get_job(here.report["job_id"]) is None  # a local job
    assert s3_objects("skyhop-one-b", "h/") == files


def test_sync_on_refuses_what_it_cannot_do(laptop: Path, tmp_path: Path) -> None:
    profile = ControlPlaneProfile(
        cloud="aws", requests_queue="sqs://q?region=us-east-1", manifest="dynamodb://t"
    )
    write_profile(laptop, "prod", profile)
    for args, message in [
        (["--dry-run"], "--dry-run moves nothing: run it without --on"),
        (["--gateways", "local"], "--on runs the job on the control plane's gateways"),
        (["--control-cidr", "198.51.100.1/32"], "--control-cidr is for --gateways cloud"),
        (["--local"], "argument --local: not allowed with argument --on"),
    ]:
        result = cli(laptop, "sync", "s3://bucket-x/a/", "s3://bucket-y/b/", "--on", "prod",
                     "-y", *args)  # fmt: skip
        assert result.code == 2, (args, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert message in line, line
    assert not (laptop / "jobs-index.json").exists()


def _wait_job(plane: DeployedAWS, predicate, timeout: float = 90.0):
    """The newest job of the control plane once ``predicate(job, progress)`` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in plane.manifest.list_jobs(5):
            if predicate(job, plane.manifest.progress(job.job_id)):
                return job
        assert plane.errors() == [], plane.errors()[0]
        time.sleep(0.2)
    raise AssertionError(f"no job got there: {plane.manifest.list_jobs(5)}")


def _some_verified(job, progress) -> bool:
    return job.state == JobState.RUNNING and progress.chunks.get(ChunkState.VERIFIED, 0) >= 1


def _slow_tree(root: Path, n: int = 12) -> dict[str, bytes]:
    files = {f"part-{i:02d}.bin": os.urandom(256 * 1024 + i) for i in range(n)}
    root.mkdir(parents=True)
    for rel, data in files.items():
        (root / rel).write_bytes(data)
    return files


def test_detach_then_status_and_resume_reattach(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=0.5")
    write_profile(laptop, "aws-test", deployed_aws.profile())
    boto3.client("s3").create_bucket(Bucket="skyhop-detach")
    files = _slow_tree(tmp_path / "src")
    proc = start_cli(
        "cp",
        "-r",
        f"{tmp_path}/src/",
        "s3://skyhop-detach/d/",
        "--on",
        "aws",
        "-y",
        "--connections",
        "1",
        env={"SKYHOP_HOME": str(laptop)},
    )
    job = _wait_job(deployed_aws, _some_verified)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"detached; {job.job_id} goes on in aws-test (aws)" in err
    assert f"skyhop cp --resume {job.job_id}" in err and f"skyhop cancel {job.job_id}" in err

    status = cli(laptop, "status", job.job_id, "--json")
    assert status.code == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["where"] == "aws-test (aws)" and shown["job"]["job_id"] == job.job_id
    assert shown["job"]["state"] in ("running", "verifying", "succeeded")
    listing = cli(laptop, "status")
    assert job.job_id in listing.stdout and "aws-test" in listing.stdout

    again = cli(laptop, "cp", "--resume", job.job_id)
    assert again.code == 0, again.stderr
    assert (
        f"re-attaching to {job.job_id} on aws-test (aws)" in again.stderr
        or f"{job.job_id} on aws-test (aws) ended while detached" in again.stderr
    )
    assert f"job {job.job_id}: succeeded" in again.stdout
    assert s3_objects("skyhop-detach", "d/") == files
    assert json.loads((laptop / "reports" / f"{job.job_id}.json").read_text())["state"] == (
        "succeeded"
    )
    # a finished job is not resumed again
    done = cli(laptop, "cp", "--resume", job.job_id)
    assert done.code == 2 and "already succeeded; nothing to resume" in done.stderr


def test_sync_on_detach_then_resume_finishes_and_deletes(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=0.5")
    write_profile(laptop, "aws-test", deployed_aws.profile())
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="skyhop-sync-detach")
    s3.put_object(Bucket="skyhop-sync-detach", Key="d/stale", Body=b"absent at the source")
    files = _slow_tree(tmp_path / "src")
    proc = start_cli("sync", f"{tmp_path}/src/", "s3://skyhop-sync-detach/d/", "--on", "aws",
                     "-y", "--delete", "--connections", "1",
                     env={"SKYHOP_HOME": str(laptop)})  # fmt: skip
    job = _wait_job(deployed_aws, _some_verified)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"detached; {job.job_id} goes on in aws-test (aws)" in err

    again = cli(laptop, "cp", "--resume", job.job_id, "--json")
    assert again.code == 0, again.stderr
    sync = again.report["sync"]
    assert (sync["to_copy"], sync["to_delete"], sync["deleted"]) == (len(files), 1, 1), sync
    assert s3_objects("skyhop-sync-detach", "d/") == files


def test_cancel_tears_down_in_the_cloud(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=3.0")
    write_profile(laptop, "aws-test", deployed_aws.profile())
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="skyhop-cancel")
    src = tmp_path / "src"
    files = _slow_tree(src, 8)
    (src / "big.bin").write_bytes(os.urandom(12 * MIB))  # a multipart upload to abort
    files["big.bin"] = (src / "big.bin").read_bytes()
    follower = start_cli(
        "cp",
        "-r",
        f"{src}/",
        "s3://skyhop-cancel/c/",
        "--on",
        "aws",
        "-y",
        "--connections",
        "1",  # with the hook: about 2 chunks a second, so the cancel comes mid-way
        *SMALL_PARTS,
        env={"SKYHOP_HOME": str(laptop)},
    )
    job = _wait_job(deployed_aws, lambda job, _: job.state == JobState.RUNNING)
    running = deployed_aws.manifest.get_job(job.job_id)
    assert running is not None and running.runtime is not None
    assert gateway_processes(job.job_id)
    assert deployed_aws.compute.allowed(job.job_id)  # the firewall is open for the job

    cancelled = cli(laptop, "cancel", job.job_id)
    assert cancelled.code == 0, cancelled.stderr
    assert f"job {job.job_id} cancelled on aws-test (aws)" in cancelled.stdout
    assert "gateways are terminated and its firewall rules revoked" in cancelled.stdout

    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 1, err
    assert f"job {job.job_id}: failed" in out
    final = deployed_aws.manifest.get_job(job.job_id)
    assert final is not None and final.state == JobState.FAILED
    assert final.error == "cancelled by the user"
    assert wait_no_gateways(job.job_id) == []
    assert deployed_aws.compute.list_gateways(job.job_id) == []
    assert deployed_aws.compute.allowed(job.job_id) == {}  # rules revoked
    assert deployed_aws.control_queues() == []
    assert s3.list_multipart_uploads(Bucket="skyhop-cancel").get("Uploads", []) == []
    copied = s3_objects("skyhop-cancel", "c/")
    assert len(copied) < len(files)
    assert all(files[k] == v for k, v in copied.items())  # what was written is whole
    report = json.loads((laptop / "reports" / f"{job.job_id}.json").read_text())
    assert report["state"] == "failed"
    again = cli(laptop, "cancel", job.job_id)
    assert again.code == 2 and "already failed; nothing to cancel" in again.stderr


def test_on_without_a_profile_says_how_to_deploy_one(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path
) -> None:
    result = cli(laptop, "cp", "-r", "s3://a-bucket/x/", "s3://b-bucket/y/", "--on", "aws", "-y")
    assert result.code != 0
    assert result.stderr.strip().splitlines() == [
        "skyhop: error: no aws control plane: deploy one with `skyhop deploy aws`, "
        "or add a profile with `skyhop remote add NAME --from FILE`"
    ]
    assert deployed_aws.manifest.list_jobs(5) == []


def test_a_profile_whose_queue_does_not_exist_submits_nothing(
    deployed_aws: DeployedAWS, laptop: Path
) -> None:
    profile = deployed_aws.profile().model_copy(
        update={"requests_queue": "sqs://skyhop-no-such-queue?region=us-east-1"}
    )
    write_profile(laptop, "broken", profile)
    boto3.client("s3").create_bucket(Bucket="skyhop-broken")
    result = cli(
        laptop, "cp", "s3://skyhop-broken/a", "s3://skyhop-broken/b", "--on", "broken", "-y"
    )
    assert result.code != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "skyhop: error: control plane 'broken': its requests queue "
        "sqs://skyhop-no-such-queue?region=us-east-1 does not exist: is the control plane "
        "deployed? (`skyhop deploy aws`"
    ), line
    assert deployed_aws.manifest.list_jobs(5) == []
    assert not (laptop / "jobs-index.json").exists()  # nothing recorded as submitted


def test_a_request_the_control_plane_refuses_is_one_line(
    deployed_aws: DeployedAWS, laptop: Path
) -> None:
    write_profile(laptop, "aws-test", deployed_aws.profile())
    result = cli(
        laptop,
        "cp",
        "-r",
        "s3://skyhop-missing-src/x/",
        "s3://skyhop-missing-dst/",
        "--on",
        "aws-test",
        "-y",
    )
    assert result.code == 1, result.stderr
    assert "FAILED   refused: " in result.stdout and "skyhop-missing-src" in result.stdout
    [job] = deployed_aws.manifest.list_jobs(5)
    assert job.state == JobState.FAILED and "skyhop-missing-src" in (job.error or "")


def test_a_local_path_needs_gateways_that_see_it(laptop: Path, tmp_path: Path) -> None:
    profile = ControlPlaneProfile(
        cloud="aws", requests_queue="sqs://q?region=us-east-1", manifest="dynamodb://t"
    )
    write_profile(laptop, "prod", profile)
    (tmp_path / "f").write_text("x")
    result = cli(laptop, "cp", str(tmp_path / "f"), "s3://bucket-x/f", "--on", "prod", "-y")
    assert result.code == 2
    assert result.stderr.strip().splitlines() == [
        f"skyhop: error: the source {tmp_path / 'f'} is on this machine: gateways in aws "
        "cannot read or write it; copy it without --on (or to/from a bucket first)"
    ]
    assert stat.S_IMODE((laptop / "remotes.toml").stat().st_mode) == 0o600


# ---------------------------------------------------------------- at a terminal


def _requests_left(plane: DeployedAWS) -> int:
    """Messages on the control plane's requests queue not yet settled by its function."""
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=plane.queues["requests"],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(v) for v in attributes.values())


def _settled(plane: DeployedAWS, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _requests_left(plane) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _requests_left(plane) == 0


def test_cp_on_at_a_terminal_shows_the_plan_and_asks_first(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path
) -> None:
    """Without ``-y`` the plan and its cost come first (the control plane listed and
    planned the job, held), then the question: "n" starts nothing and cancels the
    held job; "y" starts it and the copy follows to its report."""
    write_profile(laptop, "aws-test", deployed_aws.profile())
    boto3.client("s3").create_bucket(Bucket="skyhop-ask")
    files = tree(tmp_path / "src")
    env = {"SKYHOP_HOME": str(laptop)}
    args = ["cp", "-r", f"{tmp_path}/src/", "--on", "aws", *SMALL_PARTS]

    with Terminal(*args[:3], "s3://skyhop-ask/no/", *args[3:], env=env) as term:
        shown = term.expect("Proceed? [y/N]")
        # the plan and its estimate are shown before the question
        before = shown[: shown.index("Proceed? [y/N]")]
        assert "submitted to control plane aws-test (aws)" in before
        for line in ("Route ", "Estimate", "data", "time", "egress", "total"):
            assert line in before, before
        [job] = deployed_aws.manifest.list_jobs(5)
        assert f"job {job.job_id} on aws-test (aws)" in before
        assert job.state == JobState.PLANNED and job.request.hold  # planned, not started
        assert job.objects_total == len(files) and job.plan is not None
        assert deployed_aws.compute.list_gateways(job.job_id) == []
        term.type("n")
        code = term.wait(60)
        shown = term.output
    assert code == 1, shown
    assert "cancelled; nothing was copied" in shown
    final = deployed_aws.manifest.get_job(job.job_id)
    assert final is not None and final.state == JobState.FAILED
    assert final.error == "cancelled by the user before it started"
    assert final.runtime is None or final.runtime.gateways == []  # no gateway was launched
    assert deployed_aws.compute.list_gateways(job.job_id) == []
    assert deployed_aws.compute.allowed(job.job_id) == {}
    assert deployed_aws.control_queues() == []
    assert s3_objects("skyhop-ask", "no/") == {}
    _settled(deployed_aws)  # nothing left on the requests queue to start it later
    assert [j.job_id for j in deployed_aws.manifest.list_jobs(5)] == [job.job_id]

    with Terminal(*args[:3], "s3://skyhop-ask/yes/", *args[3:], env=env) as term:
        shown = term.expect("Proceed? [y/N]")
        assert "Estimate" in shown[: shown.index("Proceed? [y/N]")]
        term.type("y")
        code = term.wait(90)
        shown = term.output
    assert code == 0, shown
    assert s3_objects("skyhop-ask", "yes/") == files
    [done] = [j for j in deployed_aws.manifest.list_jobs(5) if j.job_id != job.job_id]
    assert done.state == JobState.SUCCEEDED and f"job {done.job_id}: succeeded" in shown
    assert (laptop / "reports" / f"{done.job_id}.json").exists()


def test_ctrl_c_or_end_of_input_at_the_question_starts_nothing(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path
) -> None:
    """The question is not answered yes: Ctrl-C (exit 130) or Ctrl-D (a no, exit 1)
    cancels the held job, one line each, and nothing is copied."""
    write_profile(laptop, "aws-test", deployed_aws.profile())
    boto3.client("s3").create_bucket(Bucket="skyhop-unanswered")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.txt").write_bytes(b"never copied")
    env = {"SKYHOP_HOME": str(laptop)}
    for how, expected in (("ctrl-c", 130), ("ctrl-d", 1)):
        with Terminal("cp", "-r", f"{tmp_path}/src/", f"s3://skyhop-unanswered/{how}/", "--on",
                      "aws", env=env) as term:  # fmt: skip
            term.expect("Proceed? [y/N]")
            [job] = [j for j in deployed_aws.manifest.list_jobs(5) if how in j.request.destination]
            if how == "ctrl-c":
                term.interrupt()
            else:
                term.end_input()
            code = term.wait(60)
            shown = term.output
        assert code == expected, shown
        assert "Traceback" not in shown
        assert shown.rstrip().endswith("cancelled; nothing was copied"), shown
        final = deployed_aws.manifest.get_job(job.job_id)
        assert final is not None and final.state == JobState.FAILED, final
        assert final.error == "cancelled by the user before it started"
        assert deployed_aws.compute.list_gateways(job.job_id) == []
    assert s3_objects("skyhop-unanswered") == {}
    _settled(deployed_aws)


def test_end_of_input_at_a_local_jobs_question_is_a_no(laptop: Path, tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"not copied")
    with Terminal("cp", str(tmp_path / "f.txt"), str(tmp_path / "copy.txt"),
                  env={"SKYHOP_HOME": str(laptop)}) as term:  # fmt: skip
        term.expect("Proceed? [y/N]")
        term.end_input()
        code = term.wait(30)
        shown = term.output
    assert code == 1, shown
    assert "Traceback" not in shown
    assert shown.rstrip().endswith("cancelled; nothing was copied"), shown
    assert not (tmp_path / "copy.txt").exists()


def test_ctrl_c_before_the_control_plane_made_the_job_still_asks(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the CLI waits for the control plane to make and plan the job (a
    long listing): the request is in the cloud already, so the CLI asks as it does
    while following; "c" cancels the job once it is made, "d" leaves it going on."""
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=1.0")  # outlasts the cancel
    write_profile(laptop, "aws-test", deployed_aws.profile())
    boto3.client("s3").create_bucket(Bucket="skyhop-early")
    files = _slow_tree(tmp_path / "src", 8)
    [requests] = [p for p in deployed_aws.pollers if p.name == "requests"]
    gate = threading.Event()
    submit = requests.handler

    def slow_submit(event: dict, context: object) -> dict:
        gate.wait(60)  # the submit function is busy (listing a big source)
        return submit(event, context)

    requests.handler = slow_submit
    env = {"SKYHOP_HOME": str(laptop)}
    with Terminal("cp", "-r", f"{tmp_path}/src/", "s3://skyhop-early/e/", "--on", "aws", "-y",
                  "--connections", "1", env=env) as term:  # fmt: skip
        term.expect("submitted to control plane aws-test (aws)")
        time.sleep(0.5)
        term.interrupt()
        term.expect("[d]etach (it goes on in the cloud) or [c]ancel it? [D/c]")
        term.type("c")
        gate.set()
        code = term.wait(90)
        shown = term.output
    assert code == 1, shown
    assert "Traceback" not in shown
    [job] = deployed_aws.manifest.list_jobs(5)
    assert f"job {job.job_id} cancelled on aws-test (aws)" in shown
    final = deployed_aws.manifest.get_job(job.job_id)
    assert final is not None and final.state == JobState.FAILED
    assert final.error == "cancelled by the user"
    assert wait_no_gateways(job.job_id) == []
    assert deployed_aws.compute.list_gateways(job.job_id) == []
    assert deployed_aws.compute.allowed(job.job_id) == {}
    copied = s3_objects("skyhop-early", "e/")
    assert len(copied) < len(files) and all(files[k] == v for k, v in copied.items())

    # "d": the request goes on; status and cancel find its job by the request id
    gate.clear()
    with Terminal("cp", "-r", f"{tmp_path}/src/", "s3://skyhop-early/d/", "--on", "aws", "-y",
                  "--connections", "1", env=env) as term:  # fmt: skip
        shown = term.expect("submitted to control plane aws-test (aws)")
        request_id = shown.split("request ", 1)[1].split()[0]
        time.sleep(0.5)
        term.interrupt()
        term.expect(f"request {request_id} is on aws-test: [d]etach")
        term.type("d")
        code = term.wait(30)
        shown = term.output
    assert code == 130, shown
    assert f"detached; request {request_id} goes on in aws-test (aws)" in shown
    assert f"`skyhop status {request_id}`" in shown
    gate.set()
    made = _wait_job(deployed_aws, lambda job, _: job.request.request_id == request_id)
    status = cli(laptop, "status", request_id, "--json")
    assert status.code == 0, status.stderr
    job_id = json.loads(status.stdout)["job"]["job_id"]
    assert job_id == made.job_id
    assert json.loads(status.stdout)["job"]["state"] in ("created", "planned", "provisioning",
                                                         "running")  # fmt: skip
    cancelled = cli(laptop, "cancel", request_id)
    assert cancelled.code == 0, cancelled.stderr
    assert f"job {job_id} cancelled on aws-test (aws)" in cancelled.stdout
    assert wait_no_gateways(job_id) == []


def test_ctrl_c_at_a_terminal_asks_detach_or_cancel(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while following a job asks: "d" detaches (it goes on in the cloud,
    `skyhop status` shows it, `--resume` re-attaches); "c" at the re-attached
    follower's question cancels it in the cloud (gateways gone, rules revoked)."""
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=0.5")
    write_profile(laptop, "aws-test", deployed_aws.profile())
    boto3.client("s3").create_bucket(Bucket="skyhop-ctrl-c")
    files = _slow_tree(tmp_path / "src", 30)
    env = {"SKYHOP_HOME": str(laptop)}
    question = "[d]etach (it goes on in the cloud) or [c]ancel it? [D/c]"

    with Terminal("cp", "-r", f"{tmp_path}/src/", "s3://skyhop-ctrl-c/c/", "--on", "aws", "-y",
                  "--connections", "1", env=env) as term:  # fmt: skip
        job = _wait_job(deployed_aws, _some_verified)
        term.expect(f"{job.job_id} ━")  # its progress bar: the CLI follows it
        term.interrupt()
        term.expect(f"{job.job_id} runs on aws-test: {question}")
        term.type("d")
        code = term.wait(60)
        shown = term.output
    assert code == 130, shown
    assert f"detached; {job.job_id} goes on in aws-test (aws)" in shown
    running = deployed_aws.manifest.get_job(job.job_id)
    assert running is not None and running.state == JobState.RUNNING
    assert deployed_aws.compute.list_gateways(job.job_id)  # still at work in the cloud

    status = cli(laptop, "status", job.job_id, "--json")
    assert status.code == 0, status.stderr
    assert json.loads(status.stdout)["where"] == "aws-test (aws)"
    assert json.loads(status.stdout)["job"]["state"] == "running"

    with Terminal("cp", "--resume", job.job_id, env=env) as term:
        term.expect(f"re-attaching to {job.job_id} on aws-test (aws)")
        term.expect(f"{job.job_id} ━")
        again = deployed_aws.manifest.get_job(job.job_id)
        assert again is not None and again.state == JobState.RUNNING
        term.interrupt()
        term.expect(question)
        term.type("c")
        code = term.wait(90)
        shown = term.output
    assert code == 1, shown  # the job did not succeed
    assert f"job {job.job_id} cancelled on aws-test (aws)" in shown
    final = deployed_aws.manifest.get_job(job.job_id)
    assert final is not None and final.state == JobState.FAILED
    assert final.error == "cancelled by the user"
    assert wait_no_gateways(job.job_id) == []
    assert deployed_aws.compute.list_gateways(job.job_id) == []
    assert deployed_aws.compute.allowed(job.job_id) == {}  # rules revoked
    assert deployed_aws.control_queues() == []
    copied = s3_objects("skyhop-ctrl-c", "c/")
    assert len(copied) < len(files) and all(files[k] == v for k, v in copied.items())
    assert json.loads(cli(laptop, "status", job.job_id, "--json").stdout)["job"]["state"] == (
        "failed"
    )


def test_status_lists_local_and_remote_jobs_together(
    deployed_aws: DeployedAWS, laptop: Path, tmp_path: Path
) -> None:
    write_profile(laptop, "aws-test", deployed_aws.profile())
    boto3.client("s3").create_bucket(Bucket="skyhop-both")
    (tmp_path / "f.txt").write_bytes(b"here and there\n")
    local = cli(laptop, "cp", str(tmp_path / "f.txt"), str(tmp_path / "copy.txt"), "-y", "--json")
    assert local.code == 0, local.stderr
    remote = cli(laptop, "cp", str(tmp_path / "f.txt"), "s3://skyhop-both/f.txt", "--on", "aws",
                 "-y", "--json")  # fmt: skip
    assert remote.code == 0, remote.stderr
    here, there = local.report["job_id"], remote.report["job_id"]
    assert deployed_aws.manifest.get_job(here) is None  # the local job is this machine's only

    listing = cli(laptop, "status")
    assert listing.code == 0, listing.stderr
    rows = {line.split()[1]: line for line in listing.stdout.splitlines() if "j-" in line}
    assert set(rows) >= {here, there}, listing.stdout
    assert rows[here].split()[3] == "local" and rows[there].split()[3] == "aws-test", rows
    listed = {j["job_id"]: j for j in json.loads(cli(laptop, "status", "--json").stdout)}
    assert (listed[here]["where"], listed[here]["state"]) == ("local", "succeeded")
    assert (listed[there]["where"], listed[there]["state"]) == ("aws-test", "succeeded")


def test_one_profile_at_a_terminal_asks_to_use_it(deployed_aws: DeployedAWS, laptop: Path) -> None:
    """Cloud to cloud with one control-plane profile: at a terminal the CLI asks to
    run it there ("y": submitted to that control plane, "n": here); ``--local``
    neither asks nor submits (``-y`` without a question: the test above)."""
    write_profile(laptop, "aws-test", deployed_aws.profile())
    s3 = boto3.client("s3")
    for bucket in ("skyhop-ask-a", "skyhop-ask-b"):
        s3.create_bucket(Bucket=bucket)
    files = {"a.txt": b"asked", "d/b.bin": os.urandom(5000)}
    for rel, data in files.items():
        s3.put_object(Bucket="skyhop-ask-a", Key="in/" + rel, Body=data)
    env = {"SKYHOP_HOME": str(laptop)}
    offer = "Run this copy on control plane aws-test (aws)? [Y/n]"
    [requests] = [p for p in deployed_aws.pollers if p.name == "requests"]

    with Terminal("cp", "-r", "s3://skyhop-ask-a/in/", "s3://skyhop-ask-b/there/",
                  env=env) as term:  # fmt: skip
        term.expect(offer)
        term.type("y")
        term.expect("Proceed? [y/N]")
        term.type("y")
        code = term.wait(90)
        shown = term.output
    assert code == 0, shown
    assert "submitted to control plane aws-test (aws)" in shown
    [there] = deployed_aws.manifest.list_jobs(5)
    assert there.state == JobState.SUCCEEDED and f"job {there.job_id}: succeeded" in shown
    assert s3_objects("skyhop-ask-b", "there/") == files

    _settled(deployed_aws)
    handled = requests.handled
    with Terminal("cp", "-r", "s3://skyhop-ask-a/in/", "s3://skyhop-ask-b/here/",
                  env=env) as term:  # fmt: skip
        term.expect(offer)
        term.type("n")
        term.expect("Proceed? [y/N]")
        term.type("y")
        code = term.wait(90)
        shown = term.output
    assert code == 0, shown
    assert "submitted to control plane" not in shown
    assert s3_objects("skyhop-ask-b", "here/") == files
    assert requests.handled == handled and _requests_left(deployed_aws) == 0  # nothing sent
    assert deployed_aws.manifest.list_jobs(5) == [there]

    _settled(deployed_aws)
    handled = requests.handled
    with Terminal("cp", "-r", "s3://skyhop-ask-a/in/", "s3://skyhop-ask-b/local/", "--local",
                  env=env) as term:  # fmt: skip
        shown = term.expect("Proceed? [y/N]")
        assert offer not in shown
        term.type("y")
        code = term.wait(90)
    assert code == 0, term.output
    assert s3_objects("skyhop-ask-b", "local/") == files
    assert requests.handled == handled and _requests_left(deployed_aws) == 0
    assert deployed_aws.manifest.list_jobs(5) == [there]


# ---------------------------------------------------------------- --gateways cloud on moto EC2

ec2_boot = ec2_boot_fixture.ec2_boot


def _live_gateway_instances() -> list[str]:
    ec2 = boto3.client("ec2")
    found = ec2.describe_instances(
        Filters=[
            {"Name": "tag:skyhop", "Values": ["gateway"]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping"]},
        ]
    )
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def _job_rules(job_id: str | None = None) -> list[dict]:
    from skyhop.compute.ec2 import EC2ComputeProvider

    return EC2ComputeProvider(regions=["us-east-1"]).rules(job_id)


class _RuleWatch:
    """Every ingress rule the skyhop group had while a job ran (port, source)."""

    def __init__(self) -> None:
        import threading

        self.seen: set[tuple[int, str]] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                for rule in _job_rules():
                    self.seen.add((rule["FromPort"], rule.get("CidrIpv4") or ""))
            except Exception:  # noqa: BLE001, S110 - the network may not exist yet
                pass
            self.stop.wait(0.2)

    def close(self) -> set[tuple[int, str]]:
        self.stop.set()
        self.thread.join(10)
        return self.seen


def _s3_tree(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    files = {
        "a.txt": b"hello cloud gateways\n",
        "dir/b.bin": os.urandom(70_000),
        "dir/big.bin": os.urandom(11 * MIB + 3),  # three parts
    }
    for rel, data in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=data)
    return files


def _booted_with_own_wheel_and_powered_off(vm: VM, not_from_index: str | None = None) -> None:
    """The VM installed this machine's own wheel by its hash (none of ``not_from_index``
    from the public index) and powered off at the job's end, through its runner."""
    pip = (vm.root / "pip.log").read_text()
    assert "pip install -q --no-deps --require-hashes -r" in pip, pip
    if not_from_index is not None:
        assert not_from_index not in pip, pip
    wheel = next((vm.root / "opt" / "skyhop" / "dist").glob("skyhop-*.whl"))
    assert (
        hashlib.sha256(wheel.read_bytes()).hexdigest()
        in (vm.root / "opt" / "skyhop" / "dist" / "requirements.txt").read_text()
    )
    assert vm.powered_off, vm.log()[-2000:]
    assert not vm.running()


def test_gateways_cloud_boot_from_user_data_copy_and_tear_down(ec2_boot, skyhop_home: Path):
    files = _s3_tree("skyhop-gwc-src", "in/")
    boto3.client("s3").create_bucket(Bucket="skyhop-gwc-dst")
    rules = _RuleWatch()
    result = run_cli(
        "cp", "-r", "s3://skyhop-gwc-src/in/", "s3://skyhop-gwc-dst/out/", "--gateways", "cloud",
        "--control-cidr", f"{ec2_boot.host}/32", "-y", "--json", *SMALL_PARTS,
    )  # fmt: skip
    seen = rules.close()
    assert result.code == 0, result.stderr + "\n".join(
        v.log()[-2000:] for v in ec2_boot.vms.values()
    )
    report = result.report
    assert report["state"] == "succeeded" and report["objects"] == len(files)
    assert s3_objects("skyhop-gwc-dst", "out/") == files
    job_id = report["job_id"]

    # each instance booted from its real user data: the configuration it carried, the
    # package it installed, readiness, and a clean exit that powered the VM off
    from skyhop.compute.ec2 import config_from_user_data

    vms = list(ec2_boot.vms.values())
    assert len(vms) == 2 and all(v.boot_error is None for v in vms), [v.boot_error for v in vms]
    configs = {config_from_user_data(v.user_data).role.value: v for v in vms}
    assert set(configs) == {"source", "destination"}
    for vm in vms:
        config = config_from_user_data(vm.user_data)
        assert config.job_id == job_id and config.listen_host == "0.0.0.0"
        # no secret at rest in user data: a boot configuration, secrets came over mTLS
        assert config.data_key_b64 is None  # never a clear key (a wrapped one at most)
        assert config.key_pem == config.cert_pem == config.control_token == ""
        assert config.event_key_b64 is None and config.store_access is None
        assert config.enrol_token and config.control_client_sha256
        assert (
            "PRIVATE KEY"
            not in base64.b64decode(
                "".join(
                    vm.user_data.split("<<'SKYHOP_CONFIG'\n", 1)[1]
                    .split("\nSKYHOP_CONFIG")[0]
                    .split()
                )
            ).decode()
        )
        # issue 19 item 12: this machine's own wheel, downloaded and installed by its hash
        _booted_with_own_wheel_and_powered_off(vm)
    destination = config_from_user_data(configs["destination"].user_data)
    assert destination.key_wrap == "kms" and destination.wrapped_data_key  # KMS-wrapped
    # the control port was open to this machine's /32 only, the data port to the gateways
    publics = {f"{v.public_ip}/32" for v in vms}
    assert {cidr for port, cidr in seen if port == 7401} == {f"{ec2_boot.host}/32"}
    assert {cidr for port, cidr in seen if port == 7400} == publics
    # afterwards: no instance running, no rule of the job left, the local record closed
    assert _live_gateway_instances() == []
    assert _job_rules(job_id) == []
    index = json.loads((skyhop_home / "jobs-index.json").read_text())
    assert [(e["job_id"], e["kind"], e["open"]) for e in index] == [(job_id, "cloud", False)]
    status = run_cli("status", job_id)
    assert "cloud gateways (cloud:aws)" in status.stdout


def _local_job(home: Path, predicate, timeout: float = 90.0):
    from skyhop.state.sqlite import SQLiteManifest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "manifest.db").exists():
            for job in SQLiteManifest(home / "manifest.db").list_jobs(5):
                if predicate(job):
                    return job
        time.sleep(0.2)
    raise AssertionError("no local job got there")


def test_gateways_cloud_ctrl_c_tears_down_a_crash_is_cleaned_up_and_the_job_resumes(
    ec2_boot, skyhop_home: Path
):
    files = _s3_tree("skyhop-gwk-src", "in/")
    boto3.client("s3").create_bucket(Bucket="skyhop-gwk-dst")
    cidr = f"{ec2_boot.host}/32"
    slow = {"SKYHOP_TEST_HOOKS": "source:sleep_per_chunk=60"}
    args = ("s3://skyhop-gwk-src/in/", "s3://skyhop-gwk-dst/out/", "--gateways", "cloud",
            "--control-cidr", cidr, "-y", "--connections", "1", *SMALL_PARTS)  # fmt: skip

    def running(job) -> bool:
        return job.state == JobState.RUNNING and len(_live_gateway_instances()) == 2

    # Ctrl-C: the gateways are terminated and the rules revoked before the CLI exits
    first = start_cli("cp", "-r", *args, env=slow)
    job = _local_job(skyhop_home, running)
    assert _job_rules(job.job_id)
    first.send_signal(signal.SIGINT)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err
    assert _live_gateway_instances() == [] and _job_rules(job.job_id) == []

    # a crash (SIGKILL) leaves them; `skyhop cleanup` finds them by their tags, names each
    second = start_cli("cp", "--resume", job.job_id, "--control-cidr", cidr, env=slow)
    _local_job(skyhop_home, lambda j: running(j) and j.runtime.attempt == 2)
    left = _live_gateway_instances()
    rules = [r["SecurityGroupRuleId"] for r in _job_rules(job.job_id)]
    assert len(left) == 2 and rules
    second.kill()
    second.communicate(timeout=30)
    assert sorted(_live_gateway_instances()) == sorted(left)  # still there
    cleaned = run_cli("cleanup")
    assert cleaned.code == 0, cleaned.stderr
    for name in [*left, *rules]:
        assert name in cleaned.stdout, cleaned.stdout
    assert f"1 job(s), {len(left) + len(rules)} resource(s) removed" in cleaned.stdout
    assert _live_gateway_instances() == [] and _job_rules(job.job_id) == []
    again = run_cli("cleanup")
    assert "no --gateways cloud job was left behind" in again.stdout

    status = run_cli("status", job.job_id)
    assert "interrupted" in status.stdout and f"skyhop cp --resume {job.job_id}" in status.stdout
    done = run_cli("cp", "--resume", job.job_id, "--control-cidr", cidr, "--json")
    assert done.code == 0, done.stdout + done.stderr
    assert done.report["state"] == "succeeded"
    assert s3_objects("skyhop-gwk-dst", "out/") == files
    assert _live_gateway_instances() == [] and _job_rules(job.job_id) == []


def test_the_next_run_cleans_up_after_a_crashed_cloud_job_and_naming_it(
    moto, skyhop_home: Path, tmp_path: Path
):
    """Only local records trigger it: an open --gateways cloud entry whose CLI is gone."""
    from skyhop import jobindex
    from skyhop.compute.ec2 import EC2ComputeProvider
    from skyhop.models import GatewaySpec

    provider = EC2ComputeProvider(regions=["us-east-1"], wait_ready=False)
    net = provider.network("us-east-1")
    ec2 = boto3.client("ec2")
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = [
        {"Key": "skyhop", "Value": "gateway"},
        {"Key": "skyhop:job", "Value": "j-crashed"},
        {"Key": "skyhop:gateway", "Value": "gw-j-crashed-a1-h0-0"},
        {"Key": "skyhop:role", "Value": "source"},
    ]
    [instance] = ec2.run_instances(
        ImageId=ami, MinCount=1, MaxCount=1, SubnetId=net.subnet_id,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"]  # fmt: skip
    spec = GatewaySpec(
        gateway_id="gw-j-crashed-a1-h0-0", job_id="j-crashed", region="aws:us-east-1",
        role="source", host="198.51.100.7", data_port=7400, control_port=7401,
    )  # fmt: skip
    provider.authorize("j-crashed", [spec])
    jobindex.add(
        jobindex.IndexEntry(
            kind="cloud", request_id="r-crashed", job_id="j-crashed", where="aws",
            source="s3://skyhop-a/x/", destination="s3://skyhop-b/y/", pid=2**22 + 17,
            regions=["aws:us-east-1"],
        )
    )  # fmt: skip
    (tmp_path / "f.txt").write_text("a local copy, unrelated")
    result = run_cli("cp", str(tmp_path / "f.txt"), str(tmp_path / "g.txt"), "-y")
    assert result.code == 0, result.stderr
    assert (tmp_path / "g.txt").read_text() == "a local copy, unrelated"
    assert f"job j-crashed: removed gateway gw-j-crashed-a1-h0-0 ({instance['InstanceId']}" in (
        result.stderr
    )
    assert "job j-crashed: removed firewall rule sgr-" in result.stderr
    assert _live_gateway_instances() == [] and _job_rules("j-crashed") == []
    [entry] = jobindex.entries()
    assert not entry.open
    # nothing is left to do: the next command calls no cloud
    quiet = run_cli("cp", str(tmp_path / "f.txt"), str(tmp_path / "h.txt"), "-y")
    assert quiet.code == 0 and "cleanup" not in quiet.stderr


def test_gateways_cloud_without_credentials_is_one_line(
    tmp_path: Path, skyhop_home: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    result = run_cli(
        "cp", "-r", "s3://skyhop-x/in/", "s3://skyhop-y/out/", "--gateways", "cloud",
        "--control-cidr", "203.0.113.9/32", "-y", env=env,
    )  # fmt: skip
    assert result.code != 0
    assert result.stderr.strip().splitlines() == [
        "skyhop: error: --gateways cloud: no usable aws credentials to launch gateways with "
        "(checking the AWS credentials: Unable to locate credentials); set them up "
        "(e.g. AWS_PROFILE) or run without --gateways cloud"
    ]
    assert (
        not (skyhop_home / "manifest.db").exists()
        or run_cli("status", "--json").stdout.strip() == "[]"
    )


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("0.0.0.0/0", "--control-cidr 0.0.0.0/0: too wide"),
        ("10.0.0.0/8", "--control-cidr 10.0.0.0/8: too wide"),
        ("nope", "--control-cidr 'nope' is not an address or CIDR range"),
    ],
)
def test_control_cidr_is_this_machine_only(cidr: str, message: str) -> None:
    from skyhop.cloud_gateways import control_cidrs
    from skyhop.errors import UsageError

    with pytest.raises(UsageError, match=message):
        control_cidrs([cidr])
    assert control_cidrs([], discover=lambda: "198.51.100.4") == ["198.51.100.4/32"]
    assert control_cidrs(["198.51.100.4"]) == ["198.51.100.4/32"]


def test_gateways_cloud_refuses_a_local_end(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    result = run_cli("cp", str(tmp_path / "f"), "s3://skyhop-z/f", "--gateways", "cloud", "-y")
    assert result.code == 2
    assert "cloud gateways cannot reach; copy it without --gateways cloud" in result.stderr


# ---------------------------------------------------------------- --gateways cloud on GCE

gce_boot = gce_boot_fixture.gce_boot


def _gcs():
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="skyhop-test", credentials=AnonymousCredentials())


def test_gateways_cloud_on_gcp_boot_from_the_startup_script_copy_and_tear_down(
    gce_boot, skyhop_home: Path
):
    """GCE gateways launched by the CLI (the Compute API a local fake, no emulator
    exists), each booted from its real startup script, copying between buckets of the
    GCS emulator; the control port open to this machine's /32 only."""
    from skyhop.models import GatewayConfig

    gcs = _gcs()
    tag = os.urandom(3).hex()
    src, dst = gcs.create_bucket(f"gwc-src-{tag}"), gcs.create_bucket(f"gwc-dst-{tag}")
    files = {
        "a.txt": b"hello gce gateways\n",
        "dir/b.bin": os.urandom(70_000),
        "dir/big.bin": os.urandom(11 * MIB + 3),  # three parts
    }
    for rel, data in files.items():
        src.blob("in/" + rel).upload_from_string(data)
    env = {"SKYHOP_GCP_COMPUTE_OPTIONS": json.dumps(gce_boot.compute_options())}
    result = run_cli(
        "cp", "-r", f"gs://{src.name}/in/", f"gs://{dst.name}/out/", "--gateways", "cloud",
        "--control-cidr", f"{gce_boot.host}/32", "-y", "--json", *SMALL_PARTS, env=env,
    )  # fmt: skip
    assert result.code == 0, result.stderr + "\n".join(
        v.log()[-2000:] for v in gce_boot.vms.values()
    )
    report = result.report
    assert report["state"] == "succeeded" and report["objects"] == len(files)
    copied = {b.name[4:]: b.download_as_bytes() for b in gcs.list_blobs(dst, prefix="out/")}
    assert copied == files
    job_id = report["job_id"]

    vms = list(gce_boot.vms.values())
    assert len(vms) == 2 and all(v.boot_error is None for v in vms), [v.boot_error for v in vms]
    roles = set()
    for vm in vms:
        config = GatewayConfig.model_validate_json(
            gce_boot.attributes[vm.instance_id]["skyhop-gateway-config"]
        )
        roles.add(config.role.value)
        # the metadata holds no secret: a boot configuration (#19 item 9), the
        # destination's key and every token came over mutual TLS after boot
        attribute = gce_boot.attributes[vm.instance_id]["skyhop-gateway-config"]
        assert "PRIVATE KEY" not in attribute and config.enrol_token
        assert config.key_pem == config.control_token == "" and config.data_key_b64 is None
        assert config.event_key_b64 is None and config.store_access is None
        assert config.job_id == job_id and config.listen_host == "0.0.0.0"
        written = json.loads((vm.root / "etc/skyhop/gateway.json").read_text())
        assert written["gateway_id"] == config.gateway_id  # fetched from the metadata server
        # issue 19 item 12: this machine's own wheel, from the emulator, installed by hash
        _booted_with_own_wheel_and_powered_off(vm, not_from_index="skyhop[gcp]")
    assert roles == {"source", "destination"}
    # the control port was open to this machine's /32 only, the data port to the gateways
    rules = {r["name"]: r for r in gce_boot.firewall_inserts()}
    control = [r for name, r in rules.items() if name.endswith("-ctl")]
    data = [r for name, r in rules.items() if not name.endswith("-ctl")]
    assert [r["sourceRanges"] for r in control] == [[f"{gce_boot.host}/32"]]
    assert [r["allowed"][0]["ports"] for r in control] == [["7401"]]
    assert [sorted(r["sourceRanges"]) for r in data] == [sorted(f"{v.public_ip}/32" for v in vms)]
    assert [r["allowed"][0]["ports"] for r in data] == [["7400"]]
    # afterwards: no instance, no rule of the job left, the local record closed
    assert gce_boot.fake.instances == {} and gce_boot.fake.firewalls == {}
    index = json.loads((skyhop_home / "jobs-index.json").read_text())
    assert [(e["job_id"], e["kind"], e["open"], e["where"]) for e in index] == [
        (job_id, "cloud", False, "gcp")
    ]
    status = run_cli("status", job_id)
    assert "cloud gateways (cloud:gcp)" in status.stdout


def test_gateways_cloud_on_gcp_without_credentials_is_one_line(
    tmp_path: Path, skyhop_home: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "SKYHOP_GCP_COMPUTE_OPTIONS": json.dumps({"project": "skyhop-test"}),
        "GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "none.json"),
        "CLOUDSDK_CONFIG": str(tmp_path / "gcloud"),
        "NO_GCE_CHECK": "True",
    }
    result = run_cli(
        "cp", "-r", "gs://skyhop-x/in/", "gs://skyhop-y/out/", "--gateways", "cloud",
        "--control-cidr", "203.0.113.9/32", "-y", env=env,
    )  # fmt: skip
    assert result.code != 0
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        "skyhop: error: --gateways cloud: no usable gcp credentials to launch gateways with "
        "(checking the Google Cloud credentials: "
    ), line


def test_gateways_cloud_on_azure_without_credentials_is_one_line(
    skyhop_home: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_USERNAME"):
        monkeypatch.delenv(name, raising=False)
    env = {
        "SKYHOP_AZURE_COMPUTE_OPTIONS": json.dumps({"subscription_id": "sub-1"}),
        "AZURE_CONFIG_DIR": str(skyhop_home / "no-az"),
        "IDENTITY_ENDPOINT": "http://127.0.0.1:1/no-managed-identity",
        "IMDS_ENDPOINT": "http://127.0.0.1:1",
    }
    result = run_cli(
        "cp", "-r", "az://skyhopacct/src/in/", "az://skyhopacct/dst/out/", "--gateways", "cloud",
        "--control-cidr", "203.0.113.9/32", "-y", "--src-region", "azure:eastus",
        "--dst-region", "azure:eastus", env=env,
    )  # fmt: skip
    assert result.code != 0
    [line] = result.stderr.strip().splitlines()  # not the SDK's list of what it tried
    assert line.startswith(
        "skyhop: error: --gateways cloud: no usable azure credentials to launch gateways with "
        "(checking the Azure credentials: "
    ), line


def test_cleanup_removes_what_a_crashed_gce_job_left_naming_each(skyhop_home: Path):
    """``skyhop cleanup`` after a CLI that died mid-job: its GCE instance and both
    firewall rules, found by the job's labels and rule names in the Compute API fake."""
    from skyhop import jobindex
    from skyhop.compute.gce import GCEComputeProvider
    from skyhop.compute.startup import default_spec
    from skyhop.models import GatewayConfig, GatewayRole
    from tests.fakes.gce_api import FakeGCE

    fake = FakeGCE()
    endpoint = fake.start()
    try:
        options = {"project": "skyhop-test", "api_endpoint": endpoint, "credentials": "anonymous"}
        provider = GCEComputeProvider(
            **options, control_cidrs=["198.51.100.7/32"], ready_via_events=False,
            ready_probe=lambda spec, cfg: True, poll_interval=0.01,
            package_spec=default_spec("gcp"),  # what the VM installs is not this test's
        )  # fmt: skip
        config = GatewayConfig(
            job_id="j-gcecrash", gateway_id="gw-j-gcecrash-a1-h0-0", role=GatewayRole.SOURCE,
            region="gcp:us-east1", ca_cert_pem="CA", cert_pem="CERT", key_pem="KEY",
            control_token="t",
        )  # fmt: skip
        specs = provider.launch([config])
        provider.authorize("j-gcecrash", specs)
        assert len(fake.firewalls) == 2 and len(fake.instances) == 1
        jobindex.add(
            jobindex.IndexEntry(
                kind="cloud", request_id="r-gcecrash", job_id="j-gcecrash", where="gcp",
                source="gs://skyhop-a/x/", destination="gs://skyhop-b/y/", pid=2**22 + 19,
                regions=["gcp:us-east1"],
            )
        )  # fmt: skip
        env = {"SKYHOP_GCP_COMPUTE_OPTIONS": json.dumps(options)}
        cleaned = run_cli("cleanup", env=env)
        assert cleaned.code == 0, cleaned.stderr
        name = specs[0].instance_id
        assert f"removed gateway gw-j-gcecrash-a1-h0-0 ({name}, gcp:us-east1)" in cleaned.stdout
        assert "removed firewall rule skyhop-j-gcecrash (gcp, port 7400 from " in cleaned.stdout
        assert (
            "removed firewall rule skyhop-j-gcecrash-ctl (gcp, port 7401 from 198.51.100.7/32)"
            in (cleaned.stdout)
        )
        assert "1 job(s), 3 resource(s) removed" in cleaned.stdout
        assert fake.instances == {} and fake.firewalls == {}
        [entry] = jobindex.entries()
        assert not entry.open
    finally:
        fake.close()


# ---------------------------------------------------------------- --gateways cloud on Azure

azure_boot = azure_boot_fixture.azure_boot


def test_gateways_cloud_on_azure_boot_from_custom_data_copy_and_tear_down(
    azure_boot, skyhop_home: Path
):
    """Azure VMs launched by the CLI (Resource Manager a local fake, no emulator
    exists), each booted from its real custom data, copying between Azurite
    containers; the control port open to this machine's /32 only."""
    from skyhop.models import GatewayConfig
    from tests.fixtures.controlplane import _Blobs

    blobs = _Blobs(azure_boot.connection_string)
    tag = os.urandom(3).hex()
    src, dst = f"gwc-src-{tag}", f"gwc-dst-{tag}"
    blobs.make(src)
    blobs.make(dst)
    files = {
        "a.txt": b"hello azure gateways\n",
        "dir/b.bin": os.urandom(70_000),
        "dir/big.bin": os.urandom(11 * MIB + 3),  # three parts
    }
    for rel, data in files.items():
        blobs.put(src, "in/" + rel, data)
    env = {"SKYHOP_AZURE_COMPUTE_OPTIONS": json.dumps(azure_boot.compute_options())}
    result = run_cli(
        "cp", "-r", blobs.uri(src, "in/"), blobs.uri(dst, "out/"), "--gateways", "cloud",
        "--control-cidr", f"{azure_boot.host}/32", "-y", "--json", *SMALL_PARTS,
        # Azurite's account is in no Azure region: say which the gateways go to
        "--src-region", "azure:eastus", "--dst-region", "azure:eastus", env=env,
    )  # fmt: skip
    assert result.code == 0, result.stderr + "\n".join(
        v.log()[-2000:] for v in azure_boot.vms.values()
    )
    report = result.report
    assert report["state"] == "succeeded" and report["objects"] == len(files)
    assert blobs.objects(dst, "out/") == files
    job_id = report["job_id"]

    vms = list(azure_boot.vms.values())
    assert len(vms) == 2 and all(v.boot_error is None for v in vms), [v.boot_error for v in vms]
    roles = set()
    for vm in vms:
        config = GatewayConfig.model_validate_json(
            (vm.root / "etc/skyhop/gateway.json").read_text()  # written from the custom data
        )
        roles.add(config.role.value)
        # the custom data holds no secret: a boot configuration (#19 item 9)
        assert config.enrol_token and config.key_pem == config.control_token == ""
        assert config.data_key_b64 is None and config.store_access is None
        assert "PRIVATE KEY" not in (vm.root / "etc/skyhop/gateway.json").read_text()
        assert config.job_id == job_id and config.listen_host == "0.0.0.0"
        # issue 19 item 12: this machine's own wheel, from the emulator, installed by hash
        _booted_with_own_wheel_and_powered_off(vm, not_from_index="skyhop[azure]")
    assert roles == {"source", "destination"}
    # the control port was open to this machine's /32 only, the data port to the gateways
    rules = {r["name"]: r for r in azure_boot.rule_writes()}
    control = [r for name, r in rules.items() if name.endswith("-ctl")]
    data = [r for name, r in rules.items() if not name.endswith("-ctl")]
    assert [r["sourceAddressPrefixes"] for r in control] == [[f"{azure_boot.host}/32"]]
    assert [r["destinationPortRanges"] for r in control] == [["7401"]]
    assert [sorted(r["sourceAddressPrefixes"]) for r in data] == [
        sorted(f"{v.public_ip}/32" for v in vms)
    ]
    # afterwards: no VM, NIC, address or rule of the job left, the local record closed
    for kind in ("virtualMachines", "networkInterfaces", "publicIPAddresses", "securityRules"):
        assert azure_boot.fake.of_type(kind) == {}, kind
    index = json.loads((skyhop_home / "jobs-index.json").read_text())
    assert [(e["job_id"], e["kind"], e["open"], e["where"]) for e in index] == [
        (job_id, "cloud", False, "azure")
    ]


# ---------------------------------------------------------------- --on gcp, --on azure

deployed = controlplane.deployed


@pytest.mark.parametrize("deployed", ["gcp", "azure"], indirect=True)
def test_cp_on_another_clouds_control_plane_bucket_to_bucket(deployed, laptop: Path) -> None:
    """The same job through GCP's functions (Pub/Sub push, Firestore) and Azure's
    (queue functions, Table Storage), each cloud's emulators alone."""
    cloud = deployed.cloud
    write_profile(laptop, f"{cloud}-test", deployed.profile())
    storage = deployed.storage
    tag = os.urandom(4).hex()
    src, dst = f"src{tag}", f"dst{tag}"
    storage.make(src)
    storage.make(dst)
    files = {"a.txt": b"hello " + cloud.encode(), "dir/b.bin": os.urandom(300_000), "empty": b""}
    for rel, data in files.items():
        storage.put(src, "in/" + rel, data)
    result = cli(laptop, "cp", "-r", storage.uri(src, "in/"), storage.uri(dst, "out/"), "--on",
                 cloud, "-y", "--json")  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    report = result.report
    assert report["state"] == "succeeded" and report["objects"] == len(files)
    assert storage.objects(dst, "out/") == files
    job = deployed.manifest.get_job(report["job_id"])
    assert job is not None and job.state == JobState.SUCCEEDED and job.report is not None
    assert (laptop / "reports" / f"{job.job_id}.json").exists()
    assert f"submitted to control plane {cloud}-test ({cloud})" in result.stderr
    assert deployed.compute.list_gateways(job.job_id) == []


@pytest.mark.parametrize("deployed", ["gcp", "azure"], indirect=True)
def test_sync_on_another_clouds_control_plane(deployed, laptop: Path) -> None:
    """``sync --on gcp|azure``: compared and planned by that cloud's submit function,
    deletes planned again and run by the function that finishes the job."""
    cloud = deployed.cloud
    write_profile(laptop, f"{cloud}-test", deployed.profile())
    storage = deployed.storage
    tag = os.urandom(4).hex()
    src, dst = f"src{tag}", f"dst{tag}"
    storage.make(src)
    storage.make(dst)
    files = {"a.txt": b"hello " + cloud.encode(), "dir/b.bin": os.urandom(30_000)}
    for rel, data in files.items():
        storage.put(src, "in/" + rel, data)
    storage.put(dst, "out/dir/b.bin", files["dir/b.bin"][:100])  # differs: copied
    storage.put(dst, "out/only-there", b"x")  # absent at the source: deleted
    result = cli(laptop, "sync", storage.uri(src, "in/"), storage.uri(dst, "out/"), "--on",
                 cloud, "-y", "--delete", "--json")  # fmt: skip
    assert result.code == 0, result.stderr[-3000:]
    sync = result.report["sync"]
    assert (sync["to_copy"], sync["to_delete"], sync["deleted"]) == (2, 1, 1), sync
    assert storage.objects(dst, "out/") == files
    again = cli(laptop, "sync", storage.uri(src, "in/"), storage.uri(dst, "out/"), "--on",
                cloud, "-y", "--json")  # fmt: skip
    assert again.code == 0, again.stderr[-3000:]
    assert (again.report["sync"]["to_copy"], again.report["sync"]["skipped"]) == (0, 2)
    job = deployed.manifest.get_job(again.report["job_id"])
    assert job is not None and job.state == JobState.SUCCEEDED and job.request.mode == "sync"


@pytest.mark.parametrize("deployed", ["gcp", "azure"], indirect=True)
def test_cancel_on_another_clouds_control_plane(
    deployed, laptop: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=3.0")
    cloud = deployed.cloud
    write_profile(laptop, f"{cloud}-test", deployed.profile())
    storage = deployed.storage
    tag = os.urandom(4).hex()
    src, dst = f"src{tag}", f"dst{tag}"
    storage.make(src)
    storage.make(dst)
    for n in range(8):
        storage.put(src, f"in/part-{n}.bin", os.urandom(50_000))
    follower = start_cli("cp", "-r", storage.uri(src, "in/"), storage.uri(dst, "out/"), "--on",
                         cloud, "-y", "--connections", "1",
                         env={"SKYHOP_HOME": str(laptop)})  # fmt: skip
    job = _wait_job(deployed, lambda job, _: job.state == JobState.RUNNING)
    assert deployed.compute.list_gateways(job.job_id)
    cancelled = cli(laptop, "cancel", job.job_id)
    assert cancelled.code == 0, cancelled.stderr
    assert f"job {job.job_id} cancelled on {cloud}-test ({cloud})" in cancelled.stdout
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 1 and f"job {job.job_id}: failed" in out, err
    final = deployed.manifest.get_job(job.job_id)
    assert final is not None and final.error == "cancelled by the user"
    assert wait_no_gateways(job.job_id) == []
    assert deployed.compute.list_gateways(job.job_id) == []
    assert deployed.compute.allowed(job.job_id) == {}  # rules revoked
    assert len(storage.objects(dst, "out/")) < 8
