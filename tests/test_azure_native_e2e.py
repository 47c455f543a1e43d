"""Azure alone, end to end: blob events on Azurite replicated through the Azure
functions with a Table Storage manifest (Azurite's table endpoint), no AWS endpoint
configured and no AWS client made.

Azurite raises no Event Grid events and no Functions host runs here, so the test
plays both: it builds each ``Microsoft.Storage.BlobCreated`` event from the blob
Azurite stored (the Event Grid schema, decoded by azure-functions' own converter)
and, as the host's queue listeners do, hands every message of the requests and
events queues to its function, decoded, deleting it once the function returns.
Everything else is real: the functions, the queues, the table, the gateway
processes.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from functions import common
from functions.azure import function_app as fa
from skyhop.models import JobState, ReplicationConfig, ReplicationRule
from skyhop.state.azure_tables import AzureTableManifest
from tests.fixtures.emulators import forbid_aws
from tests.test_functions_azure import ACCOUNT, Queues, blob_event


@pytest.mark.parametrize("control", ["https", "queues"])
def test_blob_events_replicate_through_azure_functions_with_a_table_manifest(
    azurite_server, monkeypatch, control
):
    """``queues``: the gateways are queue-controlled, as VMs the functions launch are:
    each boots with a one-time token only, enrols over the Azure queues (gateway_enrol
    through on_gateway_event, its secrets sealed on its own control queue) and takes
    its orders from that queue."""
    forbid_aws(monkeypatch)
    blobs = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    tag = uuid.uuid4().hex[:10]
    src, dst = f"src{tag}", f"dst{tag}"
    blobs.create_container(src)
    blobs.create_container(dst)
    queues = Queues(azurite_server.connection_string)
    table = f"manifest{tag}"
    monkeypatch.setenv("SKYHOP_MANIFEST", azurite_server.table_uri(table))
    monkeypatch.setenv("SKYHOP_COMPUTE", "local")
    monkeypatch.setenv("SKYHOP_EVENTS_QUEUE", queues.uri("evt"))
    monkeypatch.setenv("SKYHOP_REQUESTS_QUEUE", queues.uri("req"))
    monkeypatch.setenv("SKYHOP_REQUESTS_QUEUE_NAME", queues.names["req"])
    monkeypatch.setenv("SKYHOP_EVENTS_QUEUE_NAME", queues.names["evt"])
    if control == "queues":
        monkeypatch.setenv("SKYHOP_CONTROL_QUEUES", f"azq://{ACCOUNT}/ctl{tag}")
    rules = ReplicationConfig(
        rules=[
            ReplicationRule(
                name="r1",
                source_bucket=src,
                prefix="in/",
                destination=f"az://{ACCOUNT}/{dst}/out/",
                inline_max_bytes=64 * 1024,
            )
        ]
    )
    monkeypatch.setenv("SKYHOP_RULES", rules.model_dump_json())
    common.reset()
    try:
        cp = common.control_plane()
        assert isinstance(cp.manifest, AzureTableManifest)

        small, large = os.urandom(3000), os.urandom(300_000)
        for key, body in (("in/small.bin", small), ("in/deep/large.bin", large)):
            etag = blobs.get_blob_client(src, key).upload_blob(body)["etag"]
            handled = fa.process_blob_event(
                blob_event("BlobCreated", src, key, size=len(body), etag=etag)
            )
            assert handled.action == "done", handled
        assert blobs.get_blob_client(dst, "out/small.bin").download_blob().readall() == small

        manifest = AzureTableManifest(ACCOUNT, table)
        deadline = time.monotonic() + 120
        job = None
        while time.monotonic() < deadline:
            settled = queues.feed("req", fa.process_request)
            settled += queues.feed("evt", fa.process_gateway_event)
            assert all(h.action == "done" for h in settled), settled
            jobs = manifest.list_jobs()
            if jobs and jobs[0].state.finished:
                job = jobs[0]
                break
            time.sleep(0.2)
        assert job is not None, f"no finished job in the table: {manifest.list_jobs()}"
        assert job.state == JobState.SUCCEEDED, job.error
        assert job.request.keys == ["deep/large.bin"]
        assert blobs.get_blob_client(dst, "out/deep/large.bin").download_blob().readall() == large
        progress = manifest.progress(job.job_id)
        assert progress.objects_verified == 1 and progress.bytes_verified == len(large)
        assert cp.compute.list_gateways(job.job_id) == []
        if control == "queues":
            assert job.runtime is not None and job.runtime.gateways
            assert all(g.control_queue and g.enrolment is None for g in job.runtime.gateways)
    finally:
        cp = common.control_plane()
        for job_id in {g.job_id for g in cp.compute.list_gateways()}:
            cp.teardown(job_id)
        common.reset()


def test_the_reaper_purges_expired_jobs_from_a_table_manifest(azurite_server, monkeypatch):
    """Table Storage has no TTL: the reaper deletes finished jobs past retention."""
    from datetime import timedelta

    from skyhop.controlplane.serverless import reap
    from tests.suites.manifest_suite import make_job

    table = f"reap{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("SKYHOP_MANIFEST", azurite_server.table_uri(table))
    monkeypatch.setenv("SKYHOP_COMPUTE", "local")
    common.reset()
    try:
        cp = common.control_plane()
        cp.manifest.retention = timedelta(0)
        cp.manifest.create_job(make_job("j-old"))
        cp.manifest.update_job("j-old", state=JobState.SUCCEEDED)
        cp.manifest.create_job(make_job("j-running", state=JobState.FAILED))
        cp.manifest.retention = timedelta(days=1)
        cp.manifest.update_job("j-running", state=JobState.RUNNING, error=None)
        time.sleep(0.01)
        report = reap(cp, resume=False)
        assert report.jobs_purged == ["j-old"] and report.errors == []
        assert cp.manifest.get_job("j-old") is None
        assert cp.manifest.get_job("j-running") is not None
    finally:
        common.reset()
