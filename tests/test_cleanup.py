"""Undo registered where resources are made: newest first, only on failure, and a
failing undo never skips the next (the stack itself, then a job whose multipart
uploads are aborted, and real local gateways torn down when wiring them fails)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from skyhop.cleanup import Cleanup
from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import GatewayError, PlanError, StoreError
from skyhop.models import GatewaySpec, Job, JobState, RoutePlan, TransferOptions, TransferRequest
from skyhop.state.sqlite import SQLiteManifest
from skyhop.stores.local import LocalStore
from skyhop.uri import StoreURI

MiB = 1024 * 1024


def test_undos_run_newest_first_and_a_failing_one_skips_nothing():
    ran: list[str] = []

    def fail() -> None:
        ran.append("fail")
        raise StoreError("undo broke")

    with pytest.raises(ValueError, match="the block failed"), Cleanup("test") as undo:
        undo.add(ran.append, "first made")
        undo.add(fail)
        undo.add(ran.append, "last made")
        raise ValueError("the block failed")
    assert ran == ["last made", "fail", "first made"]
    assert isinstance(undo.error, ValueError)
    assert len(undo) == 0


def test_nothing_is_undone_when_the_block_succeeds():
    ran: list[str] = []
    with Cleanup() as undo:
        undo.add(ran.append, "made")
    assert ran == [] and len(undo) == 0


def test_run_reports_every_failure():
    undo = Cleanup()
    undo.add(lambda: (_ for _ in ()).throw(StoreError("a")))
    undo.add(lambda: (_ for _ in ()).throw(StoreError("b")))
    assert [str(e) for e in undo.run()] == ["b", "a"]


class _FirstAbortFails(LocalStore):
    """The local store, except that its first abort_multipart raises."""

    aborts = 0

    def abort_multipart(self, key: str, upload_id: str) -> None:
        type(self).aborts += 1
        if type(self).aborts == 1:
            raise StoreError(f"cannot abort {key}")
        super().abort_multipart(key, upload_id)


def _no_plan(job: Job, *, stores: object = None) -> RoutePlan:
    raise PlanError("no route to nowhere-1")


def test_a_failed_create_job_aborts_every_upload_even_when_one_abort_fails(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    for name in ("a", "b", "c"):
        (src / name).write_bytes(os.urandom(6 * MiB))

    def stores(uri: StoreURI) -> LocalStore:
        assert uri.scheme == "local"
        return _FirstAbortFails(uri)

    _FirstAbortFails.aborts = 0
    cp = ControlPlane(
        manifest=SQLiteManifest(tmp_path / "m.db"),
        compute=LocalComputeProvider(),
        planner=_no_plan,
        stores=stores,
    )
    request = TransferRequest(
        source=str(src),
        destination=str(dst),
        options=TransferOptions(recursive=True, chunk_size=5 * MiB, multipart_threshold=5 * MiB),
    )
    with pytest.raises(PlanError, match="no route"):
        cp.create_job(request)
    assert _FirstAbortFails.aborts == 3  # the failing abort did not stop the other two
    staged = [n for n in os.listdir(dst) if n.startswith(".skyhop-")]
    assert len(staged) == 1  # only the upload whose abort failed is left
    [job] = cp.jobs()
    assert job.state == JobState.FAILED and "no route to nowhere-1" in (job.error or "")


class _CannotWire(LocalComputeProvider):
    """Local gateway processes whose firewall can be neither opened nor closed."""

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        raise GatewayError("authorize broke")

    def revoke(self, job_id: str) -> None:
        raise GatewayError("revoke broke")


def test_gateways_are_terminated_when_wiring_fails_even_if_revoke_fails(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 1000)
    compute = _CannotWire()
    cp = ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=compute)
    request = TransferRequest(
        source=str(src),
        destination=str(tmp_path / "dst"),
        options=TransferOptions(recursive=True, gateways="local"),
    )
    job = cp.create_job(request)
    with pytest.raises(GatewayError, match="authorize broke"):
        cp.start(job.job_id)
    assert compute.list_gateways(job.job_id) == []
