"""Queue-controlled gateways driven by the AWS Lambda handlers, end to end.

The handlers run against moto in server mode (DynamoDB manifest and idempotency
table, SQS, KMS). Gateways are local processes, but configured exactly as
cloud gateways are: each takes its orders from its own SQS control queue,
posts its events (gateway_ready first) to the events queue, and receives the
job's data key wrapped with KMS. The control plane holds no client
certificate (only the master token its gateways' event keys derive from), and
every HTTPS control call of this process fails the test: readiness, next hops, chunks and shutdown all travel
through queues.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions import common as shared
from functions.aws import common as aws_common
from functions.aws import gateway_events, reaper, submit
from skyhop.config import jobs_dir
from skyhop.gateway_api import GatewayClient
from skyhop.models import (
    ChunkState,
    GatewayConfig,
    GatewayRole,
    JobReport,
    JobState,
    TransferOptions,
    TransferRequest,
)
from skyhop.queues.sqs import SQSQueue, create_queue
from skyhop.state.dynamodb import DynamoDBManifest, create_table
from tests.test_functions_aws import Context, sqs_event

MIB = 1024 * 1024


class Cloud:
    """The resources infra_cdk would make, and handles on them."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.manifest = DynamoDBManifest("skyhop-q-manifest")
        self.requests = SQSQueue(create_queue(f"requests-{uuid.uuid4().hex[:8]}"))
        self.events = SQSQueue(create_queue(f"events-{uuid.uuid4().hex[:8]}"))
        self.results = SQSQueue(create_queue(f"results-{uuid.uuid4().hex[:8]}"))
        self.kms_key = boto3.client("kms").create_key(Description="skyhop test")["KeyMetadata"][
            "Arn"
        ]

    def control_queues(self) -> list[str]:
        urls = boto3.client("sqs").list_queues(QueueNamePrefix=self.prefix).get("QueueUrls", [])
        return sorted(u.rsplit("/", 1)[-1] for u in urls)


@pytest.fixture
def cloud(moto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Cloud]:
    create_table("skyhop-q-manifest")
    boto3.client("dynamodb").create_table(
        TableName="skyhop-q-idempotency",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    prefix = f"skyhop-ctl-{uuid.uuid4().hex[:6]}"
    found = Cloud(prefix)
    for name in [*shared.ENV.values(), "SKYHOP_RULES", "SKYHOP_KMS_KEY_ID"]:
        monkeypatch.setenv(name, "")
    for name, value in {
        "SKYHOP_TABLE": "skyhop-q-manifest",
        "SKYHOP_IDEMPOTENCY_TABLE": "skyhop-q-idempotency",
        "SKYHOP_REQUESTS_QUEUE_URL": found.requests.uri,
        "SKYHOP_EVENTS_QUEUE_URL": found.events.uri,
        "SKYHOP_RESULTS_QUEUE_URL": found.results.uri,
        "SKYHOP_KMS_KEY_ID": found.kms_key,
        # local processes, controlled like EC2 gateways
        "SKYHOP_COMPUTE": "local",
        "SKYHOP_CONTROL_QUEUES": f"sqs://{prefix}",
        "SKYHOP_TRANSFER_LOCATIONS": f"file://{tmp_path}/",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": "skyhop",
    }.items():
        monkeypatch.setenv(name, value)
    aws_common.reset()
    yield found
    if shared.control_plane.cache_info().currsize:
        compute = shared.control_plane().compute
        if hasattr(compute, "terminate_all"):
            compute.terminate_all()
    aws_common.reset()


@pytest.fixture
def no_https_control(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every control-API call this process makes to a gateway is recorded (and fails)."""
    calls: list[str] = []

    def forbidden(name: str) -> Any:
        def call(self: GatewayClient, *args: Any, **kwargs: Any) -> Any:
            calls.append(f"{name} {self.gateway_id}")
            raise AssertionError(f"HTTPS control call {name} to {self.gateway_id}")

        return call

    for name in ("submit", "set_peers", "status", "events", "drain"):
        monkeypatch.setattr(GatewayClient, name, forbidden(name))
    return calls


def _results(queue: SQSQueue, wait: float = 0.2) -> list[dict[str, Any]]:
    out = []
    for message in queue.receive(max_messages=10, wait_seconds=wait):
        out.append(json.loads(message.body))
        queue.ack(message)
    return out


def _pump(cloud: Cloud, job_id: str, timeout: float = 120.0) -> JobReport:
    """Deliver the events queue to gateway_events, as Lambda's SQS trigger would,
    until the job's report arrives on the results queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = cloud.events.receive(max_messages=10, wait_seconds=1)
        if messages:
            response = gateway_events.handler(sqs_event([m.body for m in messages]), Context())
            assert response == {"batchItemFailures": []}
            for message in messages:
                cloud.events.ack(message)
        for result in _results(cloud.results, wait=0):
            if result.get("job_id") == job_id and "state" in result:
                return JobReport.model_validate(result)
    job = cloud.manifest.get_job(job_id)
    raise AssertionError(
        f"no report for {job_id} within {timeout} s: {job.state if job else None} "
        f"{job.error if job else ''} {cloud.manifest.progress(job_id)}"
    )


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"hello queues\n",
        "dir/b.bin": bytes(range(256)) * 64,
        "dir/big.bin": (b"skyhop-queue-ctl" * (MIB // 16)) * 11 + b"tail",
        "empty": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def test_handlers_drive_queue_controlled_gateways_to_a_verified_copy(
    cloud: Cloud, no_https_control: list[str], tmp_path: Path
) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    request = TransferRequest(
        source=f"{src}/",
        destination=f"{dst}/",
        options=TransferOptions(
            recursive=True,
            multipart_threshold=5 * MIB,
            chunk_size=5 * MIB,
        ),
    )
    assert submit.handler(sqs_event([request.model_dump_json()]), Context()) == {
        "batchItemFailures": []
    }
    [started] = _results(cloud.results, wait=5)
    assert started["type"] == "job_started"
    job_id = started["job_id"]

    # submit returned without waiting for readiness; the job waits for gateway_ready
    job = cloud.manifest.get_job(job_id)
    assert job is not None and job.state == JobState.PROVISIONING and job.runtime is not None
    assert job.runtime.client_cert_pem == job.runtime.client_key_pem == ""
    assert job.runtime.control_token  # the master its gateways' event keys derive from
    gateways = job.runtime.gateways
    assert {g.role for g in gateways} == {GatewayRole.SOURCE, GatewayRole.DESTINATION}
    assert all(g.control_queue and not g.ready for g in gateways)
    sources = [g for g in gateways if g.role == GatewayRole.SOURCE]
    destinations = {g.gateway_id for g in gateways if g.role == GatewayRole.DESTINATION}
    assert all(set(g.next_hops) == destinations for g in sources)
    assert len(cloud.control_queues()) == len(gateways)  # one queue per gateway

    # the configurations are the cloud's: a queue each, the job's key KMS-wrapped and
    # for destinations only (sources seal with its public half)
    texts = [p.read_text() for p in sorted((jobs_dir() / job_id).glob("*.json"))]
    configs = [GatewayConfig.model_validate_json(t) for t in texts]
    assert len(configs) == len(gateways)
    # ... and boot configurations: no key, token or MAC key; a one-time token whose hash
    # alone the manifest keeps (the secrets come sealed on the gateway's queue)
    assert not any("PRIVATE KEY" in t for t in texts)
    for cfg in configs:
        assert cfg.key_pem == cfg.cert_pem == cfg.control_token == ""
        assert cfg.event_key_b64 is None and cfg.enrol_token
        spec = next(g for g in gateways if g.gateway_id == cfg.gateway_id)
        assert (
            spec.enrolment is not None
            and spec.enrolment.token_sha256 == hashlib.sha256(cfg.enrol_token.encode()).hexdigest()
        )
    for cfg in configs:
        assert cfg.control_queue and cfg.control_queue.startswith(f"sqs://{cloud.prefix}-")
        assert cfg.event_sink == cloud.events.uri
        assert cfg.data_key_b64 is None
        if cfg.role == GatewayRole.DESTINATION:
            assert cfg.key_wrap == "kms" and cloud.kms_key in (cfg.wrapped_data_key or "")
        else:
            assert cfg.wrapped_data_key is None and cfg.recipient_key_b64

    # a malformed order on a source's queue is dropped, and changes nothing
    boto3.client("sqs").send_message(
        QueueUrl=SQSQueue(sources[0].control_queue or "").url, MessageBody='{"type": "explode"}'
    )

    report = _pump(cloud, job_id)
    assert report.state == JobState.SUCCEEDED, report.failures
    assert report.objects == len(files) and report.objects_failed == 0
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data

    job = cloud.manifest.get_job(job_id)
    assert job is not None and job.state == JobState.SUCCEEDED
    assert all(g.ready and g.host == "127.0.0.1" for g in job.runtime.gateways)
    assert all(g.enrolment is None for g in job.runtime.gateways)  # every token spent
    assert job.runtime.ca_key_pem == job.runtime.control_token == ""  # forgotten at the end
    assert all(g.data_port for g in job.runtime.gateways if g.gateway_id in destinations)
    assert no_https_control == []
    # teardown: gateways gone, every control queue deleted
    assert shared.control_plane().compute.list_gateways(job_id) == []
    assert cloud.control_queues() == []
    log = (jobs_dir() / job_id / f"{sources[0].gateway_id}.log").read_text()
    assert "dropped a malformed message" in log


def _pump_until(cloud: Cloud, job_id: str, done: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        messages = cloud.events.receive(max_messages=10, wait_seconds=1)
        if messages:
            response = gateway_events.handler(sqs_event([m.body for m in messages]), Context())
            assert response == {"batchItemFailures": []}
            for message in messages:
                cloud.events.ack(message)
    raise AssertionError(f"job {job_id} did not get there: {cloud.manifest.progress(job_id)}")


def test_the_reaper_resumes_a_job_whose_gateway_died_on_fresh_queues(
    cloud: Cloud, no_https_control: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYHOP_TEST_HOOKS", "source:sleep_per_chunk=0.25")
    src, dst = tmp_path / "src", tmp_path / "dst"
    rng = random.Random(5)
    files = {f"part-{i:02d}.bin": rng.randbytes(MIB + i) for i in range(16)}
    src.mkdir()
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    request = TransferRequest(
        source=f"{src}/", destination=f"{dst}/", options=TransferOptions(recursive=True)
    )
    submit.handler(sqs_event([request.model_dump_json()]), Context())
    [started] = _results(cloud.results, wait=5)
    job_id = started["job_id"]
    first = cloud.manifest.get_job(job_id)
    assert first is not None and first.runtime is not None
    first_queues = cloud.control_queues()

    def verified() -> int:
        return cloud.manifest.progress(job_id).chunks.get(ChunkState.VERIFIED, 0)

    _pump_until(cloud, job_id, lambda: verified() >= 3)
    job = cloud.manifest.get_job(job_id)
    assert job is not None and job.state == JobState.RUNNING and job.runtime is not None
    dest = next(g for g in job.runtime.gateways if g.role == GatewayRole.DESTINATION)
    os.kill(int(dest.instance_id or 0), signal.SIGKILL)
    compute = shared.control_plane().compute
    deadline = time.monotonic() + 10
    while dest.gateway_id in {g.gateway_id for g in compute.list_gateways(job_id)}:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    before = {c.chunk_id: c for c in cloud.manifest.iter_chunks(job_id, {ChunkState.VERIFIED})}
    assert 3 <= len(before) < len(files)

    sweep = reaper.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, Context())
    assert sweep["interrupted"] == [job_id] and sweep["resumed"] == [job_id], sweep
    resumed = cloud.manifest.get_job(job_id)
    assert resumed is not None and resumed.state == JobState.PROVISIONING
    assert resumed.runtime is not None and resumed.runtime.attempt == 2
    # the first attempt's queues are gone; the second attempt has its own
    now = cloud.control_queues()
    assert now and not set(now) & set(first_queues)
    assert all("--a2-" in name for name in now)

    report = _pump(cloud, job_id)
    assert report.state == JobState.SUCCEEDED, report.failures
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data
    after = {c.chunk_id: c for c in cloud.manifest.iter_chunks(job_id)}
    for chunk_id, chunk in before.items():  # verified chunks were not sent again
        assert after[chunk_id].attempts == chunk.attempts
    assert no_https_control == []
    assert cloud.control_queues() == []
    assert compute.list_gateways(job_id) == []
