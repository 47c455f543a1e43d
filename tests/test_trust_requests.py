"""Trust boundaries of the serverless control plane (issue #19, item 8): a
TransferRequest on a queue comes from whoever may send there, so the functions
admit only configured locations and reply queues, and cap relays and gateways
per job and per account. The handler is the one every cloud's functions call
(functions.common.handle_request); gateways are real local processes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from functions import common
from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane import provision
from skyhop.controlplane.admission import Admission
from skyhop.controlplane.planning import default_planner
from skyhop.controlplane.service import ControlPlane, Limits
from skyhop.errors import UsageError
from skyhop.models import (
    JobState,
    ReplicationConfig,
    ReplicationRule,
    TransferOptions,
    TransferRequest,
)
from skyhop.queues.base import open_queue
from skyhop.state.sqlite import SQLiteManifest


def _drain(uri: str) -> list[dict]:
    queue = open_queue(uri)
    out = []
    for message in queue.receive(max_messages=100):
        out.append(json.loads(message.body))
        queue.ack(message)
    return out


@pytest.fixture
def fn_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    tag = uuid.uuid4().hex[:8]
    allowed = tmp_path / "exchange"
    (allowed / "in").mkdir(parents=True)
    (allowed / "in" / "a.txt").write_bytes(b"a")
    for name in common.ENV.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SKYHOP_MANIFEST", f"sqlite:///{tmp_path / 'manifest.db'}")
    monkeypatch.setenv("SKYHOP_COMPUTE", "local")
    monkeypatch.setenv("SKYHOP_RESULTS_QUEUE", f"memory://results-{tag}")
    monkeypatch.setenv("SKYHOP_REPLY_QUEUES", f"memory://partner-{tag}")
    monkeypatch.setenv("SKYHOP_TRANSFER_LOCATIONS", f"file://{allowed}/")
    common.reset()
    yield {
        "results": f"memory://results-{tag}",
        "partner": f"memory://partner-{tag}",
        "evil": f"memory://evil-{tag}",
        "allowed": allowed,
        "tmp": tmp_path,
    }
    try:
        cp = common.control_plane()
        for job_id in {g.job_id for g in cp.compute.list_gateways()}:
            cp.teardown(job_id)
    finally:
        common.reset()


def test_a_source_outside_the_configured_locations_is_refused(fn_env):
    """``file:///etc/`` to a local destination, the report to the sender's queue:
    nothing is read, nothing written, nothing sent to the sender."""
    out = fn_env["tmp"] / "loot"
    request = TransferRequest(
        source="file:///etc/",
        destination=f"{out}/",
        options=TransferOptions(recursive=True),
        reply_to=fn_env["evil"],
    )
    handled = common.handle_request(request.model_dump_json())
    assert handled.action == "dropped" and "reply_to" in handled.detail
    assert not out.exists()
    assert _drain(fn_env["evil"]) == []
    (rejected,) = _drain(fn_env["results"])
    assert rejected["type"] == "request_rejected" and rejected["request_id"] == request.request_id

    # with an allowed reply queue, the location itself is what is refused
    request = request.model_copy(update={"reply_to": fn_env["partner"]})
    handled = common.handle_request(request.model_dump_json())
    assert handled.action == "dropped"
    assert "source /etc/ is not a location this deployment transfers" in handled.detail
    assert not out.exists()
    assert [r["type"] for r in _drain(fn_env["partner"])] == ["request_rejected"]

    # a destination outside is refused the same way, and so is a climb out
    for source, destination in [
        (f"{fn_env['allowed']}/in/", "file:///root/"),
        (f"{fn_env['allowed']}/in/", f"{fn_env['allowed']}/../elsewhere/"),
    ]:
        bad = TransferRequest(source=source, destination=destination)
        assert common.handle_request(bad.model_dump_json()).action == "dropped"
    # each refusal is recorded as a failed job naming why (a sender following the
    # manifest learns it); none was planned, listed or started
    refused = common.control_plane().manifest.list_jobs()
    assert refused and all(
        j.state == JobState.FAILED
        and j.plan is None
        and j.runtime is None
        and (
            "is not a location this deployment transfers" in (j.error or "")
            or "is not an allowed reply queue" in (j.error or "")
        )
        for j in refused
    ), [(j.state, j.error) for j in refused]
    assert len(refused) == 3  # the reply_to refusal, the destination and the climb out
    assert common.control_plane().compute.list_gateways() == []

    # a body that does not even validate never reaches the queue it names
    assert common.handle_request(json.dumps({"source": 1, "reply_to": fn_env["evil"]})).action == (
        "dropped"
    )
    assert _drain(fn_env["evil"]) == []

    # what is configured runs, and its report goes to the allowed reply queue
    good = TransferRequest(
        source=f"{fn_env['allowed']}/in/",
        destination=f"{fn_env['allowed']}/out/",
        options=TransferOptions(recursive=True),
        reply_to=fn_env["partner"],
    )
    handled = common.handle_request(good.model_dump_json())
    assert handled.action == "done", handled.detail
    assert [r["type"] for r in _drain(fn_env["partner"])] == ["job_started"]


def test_relays_and_gateways_are_capped_per_request(fn_env):
    """The 924-byte request of 40 relays and 64 gateways per region planned 2,688
    gateways; now no field of a request can ask for more than the deployment allows."""
    src, dst = f"{fn_env['allowed']}/in/", f"{fn_env['allowed']}/out/"
    huge = json.dumps(
        {
            "source": src,
            "destination": dst,
            "options": {"relays": ["local"] * 40, "gateways_per_region": 64},
        }
    )
    handled = common.handle_request(huge)
    assert handled.action == "dropped" and "relays" in handled.detail
    for options, field in [
        ({"relays": ["local"] * 3}, "options.relays: 3 relays"),
        ({"gateways_per_region": 9}, "options.gateways_per_region: 9"),
    ]:
        body = json.dumps({"source": src, "destination": dst, "options": options})
        handled = common.handle_request(body)
        assert handled.action == "dropped" and field in handled.detail, handled.detail
    _nothing_started(common.control_plane(), refusals=2)  # the 40 relays do not even parse


def _nothing_started(cp: ControlPlane, *, refusals: int) -> None:
    """Every refused request is a failed job naming why (for a sender following the
    manifest) that was never planned or started; no gateway runs."""
    jobs = cp.manifest.list_jobs()
    assert len(jobs) == refusals, [(j.state, j.error) for j in jobs]
    for job in jobs:
        assert job.state == JobState.FAILED and job.error, job
        assert job.plan is None and job.runtime is None, job
    assert cp.compute.list_gateways() == []


def _cp(tmp_path: Path, **limits: int) -> ControlPlane:
    return ControlPlane(
        manifest=SQLiteManifest(tmp_path / "m.db"),
        compute=LocalComputeProvider(),
        planner=default_planner,
        limits=Limits(**limits),
    )


def _tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    return src


def test_gateways_are_capped_per_job_and_forced_relays_follow_the_plan(tmp_path: Path):
    src = _tree(tmp_path)
    cp = _cp(tmp_path, max_gateways_per_job=4)
    request = TransferRequest(
        source=f"{src}/",
        destination=f"{tmp_path}/dst/",
        options=TransferOptions(recursive=True, relays=["local"] * 3, gateways_per_region=8),
    )
    job = cp.create_job(request)
    # forced relays get the planner's counts (one a hop here), not the option's 8
    assert provision.gateways_per_hop(job, provision.route(job)) == [1, 1, 1, 1, 1]
    with pytest.raises(UsageError, match="needs 5 gateways, more than the limit of 4 per job"):
        cp.start(job.job_id)
    assert cp.manifest.get_job(job.job_id).state == JobState.FAILED
    assert cp.compute.list_gateways() == []


def test_gateways_are_capped_per_account(tmp_path: Path):
    src = _tree(tmp_path)
    cp = _cp(tmp_path, max_gateways_total=3)
    first = cp.create_job(
        TransferRequest(
            source=f"{src}/", destination=f"{tmp_path}/a/", options=TransferOptions(recursive=True)
        )
    )
    second = cp.create_job(
        TransferRequest(
            source=f"{src}/", destination=f"{tmp_path}/b/", options=TransferOptions(recursive=True)
        )
    )
    try:
        cp.start(first.job_id)  # 2 gateways
        with pytest.raises(UsageError, match="2 run for other jobs: more than the limit of 3"):
            cp.start(second.job_id)
        assert cp.manifest.get_job(second.job_id).state == JobState.FAILED
        assert {g.job_id for g in cp.compute.list_gateways()} == {first.job_id}
    finally:
        cp.teardown(first.job_id)


def test_rules_admit_their_own_routes_only():
    rules = ReplicationConfig(
        rules=[
            ReplicationRule(
                name="r", source_bucket="src-b", prefix="logs", destination="gs://dst-b/x/"
            ),
            ReplicationRule(name="t", bucket_tag="team=a", destination="s3://tagged-dst/"),
        ]
    )
    adm = Admission.build(
        transfer_locations=["s3://adhoc/"], rules=rules, reply_queues=[], results_queue=None
    )

    def ok(source: str, destination: str) -> bool:
        try:
            adm.check(TransferRequest(source=source, destination=destination))
        except UsageError:
            return False
        return True

    assert ok("s3://src-b/logs/", "gs://dst-b/x/")
    assert ok("s3://src-b/logs/2026/", "gs://dst-b/x/sub/")
    assert not ok("s3://src-b/logs2/", "gs://dst-b/x/")  # a folder, not a string prefix
    assert not ok("s3://src-b/", "gs://dst-b/x/")
    assert not ok("s3://src-b/logs/", "gs://dst-b/y/")  # the rule's destination only
    assert ok("s3://any-tagged/p/", "s3://tagged-dst/p/")
    assert not ok("/etc/", "s3://tagged-dst/")  # never a local source
    assert ok("s3://adhoc/a/", "s3://adhoc/b/")
    assert not ok("s3://adhoc/a/", "s3://elsewhere/")

    # a multicast request: every destination must be admitted
    def ok_multi(source: str, *destinations: str) -> bool:
        try:
            adm.check(TransferRequest(source=source, destinations=list(destinations)))
        except UsageError:
            return False
        return True

    assert ok_multi("s3://adhoc/a/", "s3://adhoc/b/", "s3://adhoc/c/")
    assert not ok_multi("s3://adhoc/a/", "s3://adhoc/b/", "/tmp/loot/")

    # every bucket of one cloud, by the deployer's choice; never the local filesystem
    wide = Admission.build(
        transfer_locations=["s3://*", "az://acct/*"],
        rules=None,
        reply_queues=[],
        results_queue=None,
    )
    wide.check(TransferRequest(source="s3://one/x/", destination="s3://two/y/"))
    wide.check(TransferRequest(source="s3://one/x/", destination="az://acct/cont/y/"))
    for source, destination in [
        ("/etc/", "s3://two/"),
        ("s3://one/", "/tmp/loot/"),
        ("gs://one/", "s3://two/"),
        ("s3://one/", "az://other/cont/"),
        ("s3://one/../x", "s3://two/"),
    ]:
        with pytest.raises(UsageError):
            wide.check(TransferRequest(source=source, destination=destination))


def test_deployments_configure_the_transfer_locations():
    """``deploy gcp|azure --transfer-location`` reach the functions' environment
    (``transferBuckets`` does on AWS: test_cdk_stack); a bad one is refused at deploy."""
    from pydantic import ValidationError

    from skyhop.deploy.azure import AzureDeployConfig
    from skyhop.deploy.gcp import GCPDeployConfig

    gcp = GCPDeployConfig(
        project="proj-12345",
        staging_bucket="stage",
        transfer_locations=["gs://exchange/in/", "gs://*"],
    )
    assert gcp.environment()["SKYHOP_TRANSFER_LOCATIONS"] == "gs://exchange/in/,gs://*"
    assert (
        "SKYHOP_TRANSFER_LOCATIONS"
        not in GCPDeployConfig(project="proj-12345", staging_bucket="stage").environment()
    )
    azure = AzureDeployConfig(
        subscription_id="sub",
        location="westeurope",
        app_name="skyhop-app",
        storage_connection_string="AccountName=acct;AccountKey=a2V5",
        transfer_locations=["az://acct/data/"],
    )
    assert azure.app_settings()["SKYHOP_TRANSFER_LOCATIONS"] == "az://acct/data/"
    with pytest.raises(ValidationError, match="a local location is an absolute path"):
        GCPDeployConfig(
            project="proj-12345", staging_bucket="stage", transfer_locations=["relative/dir"]
        )
