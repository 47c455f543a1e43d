"""`skyhop cp` end to end: the real CLI, real gateway processes on loopback, real stores.

Every test checks bytes at the destination, the job's report and that no
gateway process outlives the job.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import boto3
import pytest

from skyhop.models import ChunkState, JobState, ObjectState
from skyhop.state.sqlite import SQLiteManifest
from tests.fixtures.cli import (
    GATEWAYS,
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


def assert_report_ok(report: dict, objects: int) -> None:
    assert report["state"] == "succeeded", report
    assert report["objects"] == objects
    assert report["objects_failed"] == 0
    assert report["verification"]["checked"] == objects
    assert report["verification"]["missing"] == []
    assert report["verification"]["size_mismatches"] == []
    assert report["verification"]["checksum_mismatches"] == []


def test_local_to_local_tree(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = awkward_tree(src)
    res = run_cli("cp", "-r", str(src), str(dst), "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert tree_digest(dst) == tree_digest(src)
    job = manifest(skyhop_home).get_job(res.report["job_id"])
    assert job is not None and job.state == JobState.SUCCEEDED
    # the multi-part object went as 3 parts, all verified once
    chunks = list(manifest(skyhop_home).iter_chunks(job.job_id))
    assert all(c.state == ChunkState.VERIFIED for c in chunks)
    assert max(c.index for c in chunks) == 2
    assert wait_no_gateways(job.job_id) == []


def test_single_file_into_directory_and_to_key(tmp_path: Path):
    src = tmp_path / "a file.bin"
    src.write_bytes(os.urandom(1000))
    (tmp_path / "out").mkdir()
    res = run_cli("cp", str(src), str(tmp_path / "out") + "/", "--json")
    assert res.code == 0, res.stderr
    assert (tmp_path / "out" / "a file.bin").read_bytes() == src.read_bytes()
    res = run_cli("cp", f"file://{src}", str(tmp_path / "renamed.bin"), "--json")
    assert res.code == 0, res.stderr
    assert (tmp_path / "renamed.bin").read_bytes() == src.read_bytes()


def test_relay_route(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = awkward_tree(src)
    res = run_cli("cp", "-r", str(src), str(dst), "--relay", "local", "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert tree_digest(dst) == tree_digest(src)
    job = manifest(skyhop_home).get_job(res.report["job_id"])
    assert job is not None and job.runtime is not None
    roles = sorted(g.role.value for g in job.runtime.gateways)
    assert roles == ["destination", "relay", "source"]
    relay = next(g for g in job.runtime.gateways if g.role.value == "relay")
    dest = next(g for g in job.runtime.gateways if g.role.value == "destination")
    assert relay.next_hops == [dest.gateway_id]
    # the plan shown before the copy (and kept in the report) is the route that ran
    assert job.plan is not None
    assert [g.role for g in job.plan.gateways] == ["source", "relay", "destination"]
    assert len(job.plan.path) == 3 and len(job.plan.edges) == 2
    assert wait_no_gateways(job.job_id) == []


@pytest.mark.parametrize("hook", ["flip_wire=2", "flip_plain=2"])
def test_bit_flip_detected_and_resent(tmp_path: Path, hook: str):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = awkward_tree(src)
    res = run_cli(
        "cp",
        "-r",
        str(src),
        str(dst),
        "--json",
        *SMALL_PARTS,
        *GATEWAYS,
        env={"SKYHOP_TEST_HOOKS": f"source:{hook}"},
    )
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert res.report["chunks_resent"] >= 2
    assert tree_digest(dst) == tree_digest(src)


def _s3_tree(bucket: str, files: dict[str, bytes], prefix: str = "data/") -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for rel, body in files.items():
        s3.put_object(Bucket=bucket, Key=prefix + rel, Body=body)


def _s3_read(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            out[obj["Key"][len(prefix) :]] = body
    return out


def test_local_to_s3_and_back(moto, tmp_path: Path):
    src = tmp_path / "src"
    files = awkward_tree(src)
    boto3.client("s3").create_bucket(Bucket="skyhop-dst")
    res = run_cli("cp", "-r", str(src), "s3://skyhop-dst/copy/", "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert _s3_read("skyhop-dst", "copy/") == files
    # the multi-part object really is a multipart upload (ETag with -N)
    head = boto3.client("s3").head_object(Bucket="skyhop-dst", Key="copy/multi/part.bin")
    assert head["ETag"].strip('"').endswith("-3")

    back = tmp_path / "back"
    res = run_cli("cp", "-r", "s3://skyhop-dst/copy", str(back), "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert tree_digest(back) == tree_digest(src)


def test_s3_keys_that_climb_out_are_never_written_outside(moto, tmp_path: Path):
    """S3 takes ``u/../../x`` as a plain name; as a local path it would land outside
    the destination. Such an object fails with its reason; the rest is copied."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="skyhop-climb")
    s3.put_object(Bucket="skyhop-climb", Key="u/ok.txt", Body=b"ok")
    s3.put_object(Bucket="skyhop-climb", Key="u/../../escape.txt", Body=b"pwned")
    s3.put_object(Bucket="skyhop-climb", Key="u/a//b.txt", Body=b"double")
    dst = tmp_path / "deep" / "dst"
    res = run_cli("cp", "-r", "s3://skyhop-climb/u/", f"{dst}/", "--json")
    assert res.code == 1 and "Traceback" not in res.stderr
    assert (dst / "ok.txt").read_bytes() == b"ok"
    assert (
        not (tmp_path / "escape.txt").exists() and not (tmp_path / "deep" / "escape.txt").exists()
    )
    assert not (dst / "a").exists()
    assert res.report["objects_failed"] == 2
    failures = res.report["failures"]
    assert len(failures) == 2 and all("cannot be a local path" in f for f in failures), failures


def test_s3_to_s3_through_relay(moto):
    files = {"a.txt": b"a" * 10, "b/c d.bin": os.urandom(6 * MIB + 5), "z/empty": b""}
    _s3_tree("skyhop-src", files)
    boto3.client("s3").create_bucket(Bucket="skyhop-dst2")
    res = run_cli(
        "cp",
        "-r",
        "s3://skyhop-src/data/",
        "s3://skyhop-dst2/",
        "--relay",
        "local",
        "--json",
        *SMALL_PARTS,
    )
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert _s3_read("skyhop-dst2", "") == files


# ---------------------------------------------------------------- interruption, resume, orphans


def _big_tree(root: Path, n: int = 24) -> None:
    root.mkdir(parents=True)
    for i in range(n):
        (root / f"part-{i:03d}.bin").write_bytes(os.urandom(5 * MIB))


def _wait_verified(home: Path, at_least: int, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "manifest.db").exists():
            m = manifest(home)
            for job in m.list_jobs():
                verified = m.progress(job.job_id).chunks.get(ChunkState.VERIFIED, 0)
                if job.state == JobState.RUNNING and verified >= at_least:
                    return job.job_id
        time.sleep(0.05)
    raise AssertionError("transfer did not make progress")


SLOW = {"SKYHOP_TEST_HOOKS": "source:sleep_per_chunk=0.15"}


def test_resume_after_gateway_killed(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _big_tree(src)
    proc = start_cli("cp", "-r", str(src), str(dst), "--json", *SMALL_PARTS, *GATEWAYS, env=SLOW)
    job_id = _wait_verified(skyhop_home, 3)
    job = manifest(skyhop_home).get_job(job_id)
    assert job is not None and job.runtime is not None
    dest = next(g for g in job.runtime.gateways if g.role.value == "destination")
    os.kill(int(dest.instance_id or 0), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert f"skyhop cp --resume {job_id}" in err
    assert wait_no_gateways(job_id) == []

    m = manifest(skyhop_home)
    assert m.get_job(job_id).state == JobState.INTERRUPTED
    before = {c.chunk_id: c for c in m.iter_chunks(job_id, {ChunkState.VERIFIED})}
    assert 3 <= len(before) < 24

    res = run_cli("cp", "--resume", job_id, "--json")
    assert res.code == 0, res.stderr
    assert res.report["state"] == "succeeded"
    assert tree_digest(dst) == tree_digest(src)
    after = {c.chunk_id: c for c in manifest(skyhop_home).iter_chunks(job_id)}
    for chunk_id, chunk in before.items():  # verified chunks were not sent again
        assert after[chunk_id].attempts == chunk.attempts
        assert after[chunk_id].dispatched_at == chunk.dispatched_at
    assert wait_no_gateways(job_id) == []


def test_ctrl_c_leaves_no_gateway_and_is_resumable(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _big_tree(src)
    proc = start_cli("cp", "-r", str(src), str(dst), *SMALL_PARTS, *GATEWAYS, env=SLOW)
    job_id = _wait_verified(skyhop_home, 2)
    assert gateway_processes(job_id)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"--resume {job_id}" in err
    assert wait_no_gateways(job_id) == []
    m = manifest(skyhop_home)
    assert m.get_job(job_id).state == JobState.INTERRUPTED
    # Ctrl-C can land between a chunk's verification and its object's completion:
    # an object left pending with every chunk verified must still be completed
    verified = next(iter(m.iter_objects(job_id, {ObjectState.VERIFIED})))
    assert m.update_object(
        job_id, verified.object_id, expect={ObjectState.VERIFIED}, state=ObjectState.PENDING
    )
    res = run_cli("cp", "--resume", job_id, "--json", timeout=120)
    assert res.code == 0, res.stderr
    assert res.report["state"] == "succeeded"
    assert tree_digest(dst) == tree_digest(src)
    assert manifest(skyhop_home).get_object(job_id, verified.object_id).state == (
        ObjectState.VERIFIED
    )


def test_a_running_job_is_not_resumed_by_another_process(tmp_path: Path, skyhop_home: Path):
    """Both would run the job, each with its own gateways."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _big_tree(src, 4)
    proc = start_cli(
        "cp", "-r", str(src), str(dst), *SMALL_PARTS, *GATEWAYS,
        env={"SKYHOP_TEST_HOOKS": "source:sleep_per_chunk=20"},
    )  # fmt: skip
    job_id = _wait_verified(skyhop_home, 0)
    assert gateway_processes(job_id)
    res = run_cli("cp", "--resume", job_id, "-q")
    assert res.code == 2 and "still running in another process" in res.stderr, res.stderr
    assert manifest(skyhop_home).get_job(job_id).state == JobState.RUNNING
    res = run_cli("status", job_id)
    assert res.code == 0 and "running" in res.stdout and "gone" not in res.stdout
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert wait_no_gateways(job_id) == []


def test_killed_cli_leaves_no_gateway(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _big_tree(src)
    proc = start_cli("cp", "-r", str(src), str(dst), *SMALL_PARTS, *GATEWAYS, env=SLOW)
    job_id = _wait_verified(skyhop_home, 1)
    assert gateway_processes(job_id)
    proc.kill()
    proc.communicate(timeout=30)
    assert wait_no_gateways(job_id) == []
    # the manifest still says running; status tells that nothing runs it any more
    res = run_cli("status", job_id)
    assert res.code == 0 and "its process is gone" in res.stdout, res.stdout
    assert f"skyhop cp --resume {job_id}" in res.stdout
    # the job stays resumable from the manifest
    res = run_cli("cp", "--resume", job_id, "--json")
    assert res.code == 0, res.stderr
    assert tree_digest(dst) == tree_digest(src)


def test_status_lists_and_shows_jobs(tmp_path: Path):
    src = tmp_path / "f.txt"
    src.write_text("x")
    res = run_cli("cp", str(src), str(tmp_path / "g.txt"), "--json")
    assert res.code == 0, res.stderr
    job_id = res.report["job_id"]
    listed = run_cli("status", "--json")
    assert listed.code == 0
    assert job_id in [j["job_id"] for j in listed.report]
    one = run_cli("status", job_id, "--json")
    assert one.code == 0
    assert one.report["job"]["state"] == "succeeded"
    assert one.report["progress"]["objects_verified"] == 1
    assert "runtime" not in one.report["job"]  # no tokens or keys printed


def test_chunk_lost_without_a_word_is_sent_again(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = awkward_tree(src)
    res = run_cli(
        "cp",
        "-r",
        str(src),
        str(dst),
        "--json",
        *SMALL_PARTS,
        *GATEWAYS,
        env={"SKYHOP_TEST_HOOKS": "source:drop_chunk=2"},
    )
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert res.report["chunks_resent"] >= 2
    assert tree_digest(dst) == tree_digest(src)


# ---------------------------------------------------------------- the direct path

SLOW_DIRECT = {"SKYHOP_TEST_HOOKS": "direct:sleep_per_chunk=1.0"}
TWO = ["--connections", "2"]  # two parts in flight: the job lasts while the test acts


def test_direct_path_needs_no_gateway(tmp_path: Path, skyhop_home: Path):
    """local -> local with no flag: moved by the CLI itself, same manifest and report."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = awkward_tree(src)
    res = run_cli("cp", "-r", str(src), str(dst), "--json", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert res.report["data_path"] == "direct" and res.report["encryption"] == "none"
    job = manifest(skyhop_home).get_job(res.report["job_id"])
    assert job.runtime is not None and job.runtime.compute == "direct"
    assert job.runtime.gateways == [] and job.runtime.control_token == ""
    # --gateways local still runs gateway processes, sealed by default
    res = run_cli("cp", "-r", str(src), str(tmp_path / "gw"), "--json", *SMALL_PARTS, *GATEWAYS)
    assert res.code == 0, res.stderr
    assert res.report["data_path"] == "gateways" and res.report["encryption"] == "aes-256-gcm"
    job = manifest(skyhop_home).get_job(res.report["job_id"])
    assert job.runtime is not None and len(job.runtime.gateways) == 2
    assert tree_digest(tmp_path / "gw") == tree_digest(src)


def test_direct_ctrl_c_is_resumable(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _big_tree(src, 16)  # 8 s at two chunks a second: time for the checks below
    proc = start_cli("cp", "-r", str(src), str(dst), *SMALL_PARTS, *TWO, env=SLOW_DIRECT)
    job_id = _wait_verified(skyhop_home, 2)
    # another process does not resume a job this one still runs
    res = run_cli("cp", "--resume", job_id, "-q")
    assert res.code == 2 and "still running in another process" in res.stderr, res.stderr
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert f"--resume {job_id}" in err
    m = manifest(skyhop_home)
    assert m.get_job(job_id).state == JobState.INTERRUPTED
    before = {c.chunk_id: c for c in m.iter_chunks(job_id, {ChunkState.VERIFIED})}
    assert 2 <= len(before) < 16
    res = run_cli("cp", "--resume", job_id, "--json")
    assert res.code == 0, res.stderr
    assert res.report["state"] == "succeeded" and res.report["data_path"] == "direct"
    assert tree_digest(dst) == tree_digest(src)
    after = {c.chunk_id: c for c in manifest(skyhop_home).iter_chunks(job_id)}
    for chunk_id, chunk in before.items():  # verified chunks were not copied again
        assert after[chunk_id].attempts == chunk.attempts


def test_direct_killed_cli_shows_gone_and_resumes(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _big_tree(src, 8)
    proc = start_cli("cp", "-r", str(src), str(dst), *SMALL_PARTS, *TWO, env=SLOW_DIRECT)
    job_id = _wait_verified(skyhop_home, 1)
    proc.kill()
    proc.communicate(timeout=30)
    res = run_cli("status", job_id)
    assert res.code == 0 and "its process is gone" in res.stdout, res.stdout
    res = run_cli("cp", "--resume", job_id, "--json")
    assert res.code == 0, res.stderr
    assert tree_digest(dst) == tree_digest(src)


def test_direct_write_checked_against_the_bytes_read(moto, tmp_path: Path, skyhop_home: Path):
    """A part whose bytes changed after they were read (test hook) is caught before it
    is recorded: S3 answers a single-request write with the CRC32C it checked, which
    differs from the one computed over the bytes read. The chunk goes again and
    arrives intact."""
    src = tmp_path / "src"
    files = {f"f{i}.bin": os.urandom(1000 + i) for i in range(3)}
    src.mkdir()
    for rel, body in files.items():
        (src / rel).write_bytes(body)
    boto3.client("s3").create_bucket(Bucket="skyhop-flip")
    res = run_cli(
        "cp", "-r", str(src), "s3://skyhop-flip/in/", "--json",
        env={"SKYHOP_TEST_HOOKS": "direct:flip_plain=2"},
    )  # fmt: skip
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert res.report["data_path"] == "direct" and res.report["chunks_resent"] == 2
    assert _s3_read("skyhop-flip", "in/") == files


def test_direct_parts_are_checked_by_s3_against_their_crc32c(
    moto, tmp_path: Path, skyhop_home: Path
):
    """local -> S3 in parts, no MD5 computed: each part goes with the CRC32C of the
    bytes read, in a CRC32C (FULL_OBJECT) upload. Parts whose bytes changed after
    they were read (test hook) are refused by S3 (BadDigest) and sent again; the
    objects arrive intact."""
    src = tmp_path / "src"
    src.mkdir()
    files = {f"big{i}.bin": os.urandom(11 * 1024 * 1024 + i) for i in range(2)}
    for rel, body in files.items():
        (src / rel).write_bytes(body)
    boto3.client("s3").create_bucket(Bucket="skyhop-crc")
    res = run_cli(
        "cp", "-r", str(src), "s3://skyhop-crc/in/", "--json",
        "--chunk-size", "5MiB", "--multipart-threshold", "5MiB",
        env={"SKYHOP_TEST_HOOKS": "direct:flip_plain=2"},
    )  # fmt: skip
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert res.report["data_path"] == "direct" and res.report["chunks_resent"] == 2
    assert _s3_read("skyhop-crc", "in/") == files
    head = boto3.client("s3").head_object(
        Bucket="skyhop-crc", Key="in/big0.bin", ChecksumMode="ENABLED"
    )
    assert head["ChecksumType"] == "FULL_OBJECT" and "-" in head["ETag"]


def test_encryption_none_still_checks_every_chunk(tmp_path: Path):
    """Unsealed chunks inside TLS: a bit flipped on the wire is still caught by the
    destination's CRC32C and the chunk sent again; the report records the choice."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = awkward_tree(src)
    res = run_cli(
        "cp", "-r", str(src), str(dst), "--json", *SMALL_PARTS, *GATEWAYS,
        "--encryption", "none",
        env={"SKYHOP_TEST_HOOKS": "source:flip_wire=2"},
    )  # fmt: skip
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert res.report["encryption"] == "none" and res.report["data_path"] == "gateways"
    assert res.report["chunks_resent"] >= 2
    assert tree_digest(dst) == tree_digest(src)


def test_s3_to_s3_is_copied_by_s3_itself(moto, tmp_path: Path, skyhop_home: Path):
    """Same endpoint: CopyObject / UploadPartCopy, no byte through skyhop; the copies'
    MD5s are still compared with the source's and the destination listing's."""
    files = {"a.txt": b"hello", "sub/b.bin": os.urandom(1000), "big.bin": os.urandom(12 * MIB)}
    _s3_tree("skyhop-ssc-src", files)
    boto3.client("s3").create_bucket(Bucket="skyhop-ssc-dst")
    res = run_cli(
        "cp", "-r", "s3://skyhop-ssc-src/data/", "s3://skyhop-ssc-dst/copy/", "--json",
        *SMALL_PARTS,
    )  # fmt: skip
    assert res.code == 0, res.stderr
    assert_report_ok(res.report, len(files))
    assert res.report["data_path"] == "direct" and res.report["server_side_copies"] == 3
    assert _s3_read("skyhop-ssc-dst", "copy/") == files
    methods = res.report["verification"]["checksum_methods"]
    assert set(methods) <= {"md5", "s3-multipart-etag"} and sum(methods.values()) == 3, methods
    job_id = res.report["job_id"]
    chunks = list(manifest(skyhop_home).iter_chunks(job_id))
    assert len(chunks) == 5 and all(c.md5 for c in chunks)  # 1 + 1 + 3 parts, each checked
    # through gateways, the bytes move (and are sealed) instead
    res = run_cli(
        "cp", "-r", "s3://skyhop-ssc-src/data/", "s3://skyhop-ssc-dst/gw/", "--json",
        *SMALL_PARTS, *GATEWAYS,
    )  # fmt: skip
    assert res.code == 0, res.stderr
    assert res.report["server_side_copies"] == 0 and res.report["data_path"] == "gateways"
    assert _s3_read("skyhop-ssc-dst", "gw/") == files
