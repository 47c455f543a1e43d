"""A full destination disk: retryable failures back off, and a job that ran out of
tries on them ends ``interrupted`` (resumable, with the reason), never ``failed``;
once space is freed, ``--resume`` finishes it, bytes equal.

The destination is a real small file system (a tmpfs of 8 MiB mounted for the
test, so ENOSPC is the kernel's own), on the direct path and through gateways."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyhop.models import ChunkState, JobState
from skyhop.state.sqlite import SQLiteManifest
from tests.fixtures.cli import GATEWAYS, MIB, run_cli

#: the floors of the back-off before tries 2..5 (half of 0.5, 1, 2, 4 s)
MIN_BACKOFF = 0.25 + 0.5 + 1.0 + 2.0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.parametrize("path", ["direct", "gateways"])
def test_a_full_disk_interrupts_resumably_after_backing_off(
    tmp_path: Path, small_disk: Path, skyhop_home: Path, path: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    files = {"a.txt": b"small\n", "big.bin": os.urandom(4 * MIB)}
    for name, body in files.items():
        (src / name).write_bytes(body)
    filler = small_disk / "filler"
    filler.write_bytes(b"\0" * (6 * MIB))  # leaves about 2 MiB: big.bin cannot fit
    dst = small_disk / "dst"
    extra = GATEWAYS if path == "gateways" else []

    res = run_cli("cp", "-r", str(src), str(dst), "--json", "--quiet", *extra)
    assert res.code != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "interrupted" in lines[0] and "no space left" in lines[0], lines[0]
    assert "skyhop cp --resume j-" in lines[0], lines[0]

    manifest = SQLiteManifest(skyhop_home / "manifest.db")
    [job] = manifest.list_jobs()
    assert job.state == JobState.INTERRUPTED, job.error
    assert job.error is not None and "no space left" in job.error
    chunks = {c.length: c for c in manifest.iter_chunks(job.job_id)}
    big, small = chunks[4 * MIB], chunks[6]
    assert big.state == ChunkState.PENDING and big.failures == 5 and big.attempts == 5
    assert small.state == ChunkState.VERIFIED and small.attempts == 1
    # five tries, spaced by the retry policy's back-off (not re-sent at once): the
    # last one went this long after the first dispatch of both
    assert big.dispatched_at is not None and small.dispatched_at is not None
    spent = (big.dispatched_at - small.dispatched_at).total_seconds()
    assert spent >= MIN_BACKOFF, spent

    filler.unlink()  # space freed: the same job finishes
    res = run_cli("cp", "--resume", job.job_id, "--json", "--quiet")
    assert res.code == 0, res.stderr
    assert res.report["state"] == "succeeded"
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == files
