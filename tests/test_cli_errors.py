"""Bad input: a one-line error naming the problem, a non-zero exit, no traceback,
and nothing written at the destination."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest

from skyhop.models import Chunk, Job, JobState, ObjectEntry, TransferRequest
from skyhop.state.sqlite import SQLiteManifest
from tests.fixtures.cli import Result, run_cli


def assert_one_line_error(res: Result, *needles: str) -> None:
    assert res.code != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("skyhop: error:"), lines[0]
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture
def src_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.txt"
    path.write_text("payload")
    return path


def test_unknown_scheme(src_file: Path, tmp_path: Path):
    res = run_cli("cp", str(src_file), "ftp://host/x")
    assert_one_line_error(res, "unknown scheme", "ftp")
    assert res.code == 2


def test_malformed_uri(src_file: Path):
    res = run_cli("cp", str(src_file), "s3://")
    assert_one_line_error(res, "no bucket name")
    res = run_cli("cp", str(src_file), "s3://Bad_Bucket/x")
    assert_one_line_error(res, "not a valid bucket name")
    res = run_cli("cp", str(src_file), "s3:/only-one-slash")
    assert_one_line_error(res, "malformed URI")


def test_missing_source(tmp_path: Path):
    dst = tmp_path / "dst"
    res = run_cli("cp", str(tmp_path / "nope.txt"), str(dst))
    assert_one_line_error(res, "source not found", "nope.txt")
    assert not dst.exists()
    res = run_cli("cp", "-r", str(tmp_path / "nodir"), str(dst))
    assert_one_line_error(res, "source not found")
    assert not dst.exists()


def test_directory_without_recursive(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    res = run_cli("cp", str(tmp_path / "d"), str(tmp_path / "out"))
    assert_one_line_error(res, "use -r")
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; covered below")
def test_destination_not_writable_user(src_file: Path, tmp_path: Path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    res = run_cli("cp", str(src_file), str(ro / "x.txt"))
    assert_one_line_error(res, "not writable")


def test_destination_not_writable(src_file: Path, tmp_path: Path):
    # a path under a regular file cannot be created, even by root
    blocker = tmp_path / "blocker"
    blocker.write_text("i am a file")
    res = run_cli("cp", str(src_file), str(blocker / "sub" / "x.txt"))
    assert_one_line_error(res, "not writable")
    assert blocker.read_text() == "i am a file"


def test_missing_bucket(moto, src_file: Path):
    res = run_cli("cp", str(src_file), "s3://no-such-bucket-here/x.txt")
    assert_one_line_error(res, "no-such-bucket-here", "does not exist")
    res = run_cli("cp", "s3://no-such-bucket-here/x.txt", str(src_file.parent / "out.txt"))
    assert_one_line_error(res, "does not exist")
    assert not (src_file.parent / "out.txt").exists()


def test_no_credentials(moto, src_file: Path, tmp_path: Path):
    boto3.client("s3").create_bucket(Bucket="creds-bucket")
    env = {
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
        "AWS_SESSION_TOKEN": "",
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    res = run_cli("cp", str(src_file), "s3://creds-bucket/x.txt", env=env)
    assert_one_line_error(res, "credentials")
    assert "Contents" not in boto3.client("s3").list_objects_v2(Bucket="creds-bucket")


def test_resume_unknown_job():
    res = run_cli("cp", "--resume", "j-doesnotexist")
    assert_one_line_error(res, "unknown job", "j-doesnotexist")


def test_resume_of_a_job_killed_while_listing(src_file: Path, tmp_path: Path, skyhop_home: Path):
    """A CLI killed while listing leaves its job 'created', with part of the source
    in the manifest and no totals: resuming it must refuse, never report success."""
    manifest = SQLiteManifest(skyhop_home / "manifest.db")
    dst = tmp_path / "never"
    job = Job(request=TransferRequest(source=str(src_file), destination=str(dst)))
    manifest.create_job(job)
    size = src_file.stat().st_size
    key = str(src_file).lstrip("/")
    manifest.put_objects(
        [
            ObjectEntry(
                job_id=job.job_id,
                object_id=0,
                src_key=key,
                dst_key=str(dst).lstrip("/"),
                size=size,
                chunk_size=size,
                n_chunks=1,
            )
        ]
    )
    manifest.put_chunks(
        [Chunk(job_id=job.job_id, chunk_id=0, object_id=0, index=0, offset=0, length=size)]
    )
    res = run_cli("cp", "--resume", job.job_id, "-y", "-q")
    assert_one_line_error(res, job.job_id, "interrupted before its listing finished")
    assert not dst.exists()
    assert manifest.get_job(job.job_id).state == JobState.FAILED


def test_tree_onto_an_existing_file(tmp_path: Path, skyhop_home: Path):
    tree = tmp_path / "tree"
    (tree / "x").mkdir(parents=True)
    (tree / "x" / "a").write_bytes(b"a")
    target = tmp_path / "existing.txt"
    target.write_bytes(b"keep")
    res = run_cli("cp", "-r", str(tree), str(target), "-y")
    assert_one_line_error(res, str(target), "is not a directory")
    assert target.read_bytes() == b"keep"
    assert (
        not (skyhop_home / "manifest.db").exists()
        or not SQLiteManifest(skyhop_home / "manifest.db").list_jobs()
    )


def test_status_unknown_job():
    res = run_cli("status", "j-doesnotexist")
    assert_one_line_error(res, "unknown job")


def test_bad_option_values(src_file: Path, tmp_path: Path):
    res = run_cli("cp", str(src_file), str(tmp_path / "o"), "--chunk-size", "lots")
    assert_one_line_error(res, "not a size")
    res = run_cli("cp", str(src_file), str(tmp_path / "o"), "--chunk-size", "1KiB")
    assert_one_line_error(res, "chunk_size")
    res = run_cli("cp", str(src_file))
    assert_one_line_error(res, "DESTINATION")
    assert not (tmp_path / "o").exists()


def test_same_source_and_destination(src_file: Path):
    res = run_cli("cp", str(src_file), str(src_file))
    assert_one_line_error(res, "same")
    assert src_file.read_text() == "payload"


def test_unknown_relay_region(tmp_path: Path, skyhop_home: Path):
    """A --relay region the profile does not know fails before anything is sent:
    one line naming it and the nearest known regions; the job is recorded failed."""
    src = tmp_path / "tree"
    src.mkdir()
    (src / "a.bin").write_bytes(b"relay me")
    dst = tmp_path / "out"
    res = run_cli("cp", "-r", str(src), str(dst), "--relay", "aws:nowhere-1", "-y")
    assert_one_line_error(res, "aws:nowhere-1", "nearest known")
    assert not dst.exists()
    jobs = SQLiteManifest(skyhop_home / "manifest.db").list_jobs()
    assert [j.state for j in jobs] == [JobState.FAILED]
    assert "aws:nowhere-1" in (jobs[0].error or "")


@pytest.mark.parametrize("flag", ["--chunk-size", "--multipart-threshold"])
@pytest.mark.parametrize("command", ["cp", "sync"])
def test_parts_larger_than_a_gateway_buffer_fail_at_validation(
    tmp_path: Path, skyhop_home: Path, flag: str, command: str
):
    """#21 item 16: a destination gateway holds a chunk whole until it is verified,
    within its buffer budget; a larger part is refused before anything starts (not
    found out inside the gateway), for a real run and a dry run alike."""
    src = tmp_path / "tree"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 100)
    dst = tmp_path / "out"
    for dry in ([], ["--dry-run"]):
        res = run_cli(
            command, *(["-r"] if command == "cp" else []), str(src), str(dst),
            "--gateways", "local", flag, "512MiB", *dry,
        )  # fmt: skip
        assert_one_line_error(res, flag, "512 MiB", "256 MiB")
        assert res.code == 2
    assert not dst.exists()
    manifest = skyhop_home / "manifest.db"
    assert not manifest.exists() or SQLiteManifest(manifest).list_jobs() == []
    # the direct path holds as few chunks as fit: the same size is fine there
    res = run_cli(command, *(["-r"] if command == "cp" else []), str(src), str(dst), flag, "512MiB")
    assert res.code == 0, res.stderr
    assert (dst / "a.bin").read_bytes() == b"x" * 100
