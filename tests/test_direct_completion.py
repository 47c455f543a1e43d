"""The direct path completes multipart objects beside the parts of the others.

Completing a multipart upload is a request of its own (at moto, a 64 MiB
object's CompleteMultipartUpload took 1.4 s on a loaded machine) and was made
on the runner's thread, so no part of any other object was dispatched until
it returned. Here the other object's parts are written only once a.bin's
completion has begun, and that completion waits until the runner has recorded
one of them; made on the runner's thread it would wait in vain.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane import direct
from skyhop.controlplane.direct import DirectConfig, DirectRunner
from skyhop.controlplane.service import ControlPlane
from skyhop.models import JobState, ObjectState, TransferOptions, TransferRequest
from skyhop.state.sqlite import SQLiteManifest

MIB = 1024 * 1024


def test_a_completion_does_not_hold_up_the_parts_of_other_objects(tmp_path: Path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    files = {"a.bin": os.urandom(10 * MIB), "b.bin": os.urandom(40 * MIB)}  # 2 and 8 parts
    for name, data in files.items():
        (src / name).write_bytes(data)
    cp = ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())
    job = cp.create_job(
        TransferRequest(
            source=f"{src}/",
            destination=f"{tmp_path / 'dst'}/",
            options=TransferOptions(
                recursive=True, chunk_size=5 * MIB, multipart_threshold=5 * MIB, connections=2
            ),
        )
    )
    dst = cp.store(job.request.destination_uri)
    runner = DirectRunner(cp, config=DirectConfig(backlog=1))
    began, completing = threading.Event(), threading.Event()
    applied_meanwhile = threading.Event()
    real_upload, real_complete, real_apply = dst.upload_part, dst.complete_multipart, runner._apply

    def upload_part(key, upload_id, number, data, **checksums):
        if key.endswith("b.bin"):  # b's parts are written only once a.bin is completing
            began.wait(10)
        return real_upload(key, upload_id, number, data, **checksums)

    def complete_multipart(key, upload_id, parts, **checksums):
        if key.endswith("a.bin"):
            began.set()
            completing.set()
            applied_meanwhile.wait(10)  # a loaded machine: only a failure waits it out
            completing.clear()
        return real_complete(key, upload_id, parts, **checksums)

    def apply(result, completions):
        real_apply(result, completions)
        if result.work.src_key.endswith("b.bin") and completing.is_set():
            applied_meanwhile.set()  # the runner recorded a part of b meanwhile

    real_part_verified = direct._Completions.part_verified

    def part_verified(self, chunk):
        real_part_verified(self, chunk)
        # the runner's round is still open (its writes not committed): a completion
        # started now would read the object's last part as not yet verified
        time.sleep(0.2)

    monkeypatch.setattr(dst, "upload_part", upload_part)
    monkeypatch.setattr(dst, "complete_multipart", complete_multipart)
    monkeypatch.setattr(runner, "_apply", apply)
    monkeypatch.setattr(direct._Completions, "part_verified", part_verified)
    report = runner.run(job.job_id)

    assert applied_meanwhile.is_set(), "no part was recorded while a.bin was being completed"
    assert report.state == JobState.SUCCEEDED and report.objects == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "dst").iterdir()} == files
    entries = list(cp.manifest.iter_objects(job.job_id))
    assert [e.state for e in entries] == [ObjectState.VERIFIED] * 2
    assert all(e.multipart and e.crc32c for e in entries)


def test_a_resumed_object_completes_when_its_remaining_parts_verify(tmp_path: Path, monkeypatch):
    """Parts verified by an earlier run count: the object completes once the rest
    arrive (the parts left are read from the manifest, not assumed)."""
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(20 * MIB)  # 4 parts
    (src / "c.bin").write_bytes(data)
    cp = ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())
    job = cp.create_job(
        TransferRequest(
            source=str(src / "c.bin"),
            destination=str(tmp_path / "dst" / "c.bin"),
            options=TransferOptions(chunk_size=5 * MIB, multipart_threshold=5 * MIB, connections=1),
        )
    )
    runner = DirectRunner(cp)
    stop_after = 2
    real_apply = runner._apply
    applied = []

    def apply(result, completions):
        real_apply(result, completions)
        applied.append(result.work.chunk_id)
        if len(applied) == stop_after:
            raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_apply", apply)
    try:
        runner.run(job.job_id)
    except KeyboardInterrupt:
        pass
    assert cp.require(job.job_id).state == JobState.INTERRUPTED
    report = DirectRunner(cp).run(job.job_id)
    assert report.state == JobState.SUCCEEDED
    assert (tmp_path / "dst" / "c.bin").read_bytes() == data
