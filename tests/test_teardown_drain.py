"""Ctrl-C records what was written: chunks whose writes finish while the job stops
are verified in the manifest, so a resume sends none of them again (#21 item 5).

One object of eight 5 MiB parts, copied two chunks at a time with every chunk
slowed down (test hooks), is interrupted with SIGINT right after its first chunk
verified; every part that reached the destination's staging directory must then
be VERIFIED in the manifest, and the resume must send only what never arrived."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from skyhop.models import ChunkState, JobState
from skyhop.state.sqlite import SQLiteManifest
from tests.fixtures.cli import GATEWAYS, MIB, SMALL_PARTS, run_cli, start_cli, wait_no_gateways

PARTS = 8


def _first_verified(home: Path, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (home / "manifest.db").exists():
            m = SQLiteManifest(home / "manifest.db")
            for job in m.list_jobs():
                if m.progress(job.job_id).chunks.get(ChunkState.VERIFIED, 0) >= 1:
                    return job.job_id
        time.sleep(0.02)
    raise AssertionError("no chunk was verified")


def _parts_on_disk(dst: Path) -> set[int]:
    """Part numbers (1-based) the local store staged for the object's upload."""
    return {
        int(part.parent.name)
        for staging in dst.glob(".skyhop-mpu-*")
        for part in staging.glob("*/*")
        if part.is_file() and not part.name.startswith(".skyhop-")
    }


@pytest.mark.parametrize(
    ("path", "extra", "hook"),
    [
        ("direct", [], "direct:sleep_per_chunk=1.0"),
        # the destination holds each write a second: writes are under way when it stops
        ("gateways", GATEWAYS, "source:sleep_per_chunk=1.0,destination:sleep_per_write=1.5"),
    ],
)
def test_ctrl_c_records_the_writes_that_finish_while_stopping(
    tmp_path: Path, skyhop_home: Path, path: str, extra: list[str], hook: str
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    body = os.urandom(PARTS * 5 * MIB)
    (src / "big.bin").write_bytes(body)
    proc = start_cli(
        "cp", str(src / "big.bin"), str(dst) + "/", *SMALL_PARTS, "--connections", "2", *extra,
        env={"SKYHOP_TEST_HOOKS": hook},
    )  # fmt: skip
    job_id = _first_verified(skyhop_home)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert wait_no_gateways(job_id) == []
    m = SQLiteManifest(skyhop_home / "manifest.db")
    assert m.get_job(job_id).state == JobState.INTERRUPTED
    verified = {c.index + 1 for c in m.iter_chunks(job_id, {ChunkState.VERIFIED})}
    written = _parts_on_disk(dst)
    assert written <= verified, (written, verified)  # nothing written and left unrecorded
    assert len(verified) > 1  # what was under way when it stopped finished and counts
    if path == "direct":
        assert written and len(verified) < PARTS  # it really stopped mid-way

    res = run_cli("cp", "--resume", job_id, "--json", timeout=240)
    assert res.code == 0, res.stderr
    assert (dst / "big.bin").read_bytes() == body
    if path == "direct":
        # the chunks under way when it stopped finished and count: nothing goes twice
        assert res.report["chunks_resent"] == 0, res.report
    resent = {c.index + 1 for c in m.iter_chunks(job_id) if c.attempts > 1}
    assert not resent & verified, (resent, verified)  # never a part that was recorded
