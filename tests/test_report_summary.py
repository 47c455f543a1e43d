"""The job summary says what happened (#21 item 14): chunks sent again after a
resume are not called failed, and "copied" counts the bytes of copied objects,
not parts of objects that never completed."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from skyhop.cli import _print_report
from skyhop.controlplane.report import build_report
from skyhop.models import (
    Chunk,
    ChunkState,
    Job,
    JobReport,
    JobState,
    ObjectEntry,
    ObjectState,
    TransferRequest,
)
from skyhop.state.sqlite import SQLiteManifest

MIB = 1024 * 1024


def _job(tmp_path: Path) -> tuple[SQLiteManifest, Job]:
    manifest = SQLiteManifest(tmp_path / "m.db")
    job = Job(request=TransferRequest(source="/src/", destination="/dst/"), state=JobState.FAILED)
    manifest.create_job(job)
    objects, chunks = [], []
    # object 0: copied; its first chunk went again after a resume, its second after
    # two failed attempts. Object 1: one of its two parts written, then it failed.
    for object_id, state in ((0, ObjectState.VERIFIED), (1, ObjectState.FAILED)):
        objects.append(
            ObjectEntry(
                job_id=job.job_id,
                object_id=object_id,
                src_key=f"src/{object_id}",
                dst_key=f"dst/{object_id}",
                size=10 * MIB,
                chunk_size=5 * MIB,
                n_chunks=2,
                multipart=True,
                state=state,
            )
        )
    tries = {0: (2, 0), 1: (3, 2), 2: (1, 0), 3: (5, 5)}  # chunk -> (attempts, failures)
    for chunk_id, (attempts, failures) in tries.items():
        chunks.append(
            Chunk(
                job_id=job.job_id,
                chunk_id=chunk_id,
                object_id=chunk_id // 2,
                index=chunk_id % 2,
                offset=(chunk_id % 2) * 5 * MIB,
                length=5 * MIB,
                state=ChunkState.FAILED if chunk_id == 3 else ChunkState.VERIFIED,
                attempts=attempts,
                failures=failures,
            )
        )
    manifest.put_objects(objects)
    manifest.put_chunks(chunks)
    return manifest, job


def test_the_report_tells_resends_after_failures_from_resends_after_a_stop(tmp_path: Path):
    manifest, job = _job(tmp_path)
    report = build_report(manifest, job, None)
    assert report.objects == 1 and report.objects_failed == 1
    assert report.bytes == 10 * MIB  # the copied object, not object 1's written part
    assert report.chunks_resent == 1 + 2 + 0 + 4
    assert report.chunks_resent_after_failure == 0 + 2 + 0 + 4


def _lines(report: JobReport, capsys: pytest.CaptureFixture[str]) -> list[str]:
    _print_report(argparse.Namespace(json=False), report)
    return capsys.readouterr().out.splitlines()


def test_a_resume_that_resent_in_flight_chunks_says_so(capsys: pytest.CaptureFixture[str]):
    base = dict(
        job_id="j-1",
        state=JobState.SUCCEEDED,
        source="/a",
        destination="/b",
        objects=3,
        objects_failed=0,
        bytes=3 * MIB,
        seconds=1.0,
        gbps=0.1,
    )
    resumed = JobReport(**base, chunks_resent=2)  # type: ignore[arg-type]
    [line] = [x for x in _lines(resumed, capsys) if x.strip().startswith("resent")]
    assert "failed" not in line
    assert line.strip() == (
        "resent   2 chunk(s): 2 in flight when the job stopped or a gateway was lost"
    )
    mixed = JobReport(**base, chunks_resent=3, chunks_resent_after_failure=1)  # type: ignore[arg-type]
    [line] = [x for x in _lines(mixed, capsys) if x.strip().startswith("resent")]
    assert line.strip() == (
        "resent   3 chunk(s): 1 after a failed attempt, "
        "2 in flight when the job stopped or a gateway was lost"
    )
    copied = [x for x in _lines(resumed, capsys) if x.strip().startswith("copied")]
    assert copied and "3 objects, 3.0 MiB" in copied[0]
