"""The AWS Lambda handlers, invoked with real SQS / S3 / EventBridge event payloads
against moto in server mode (DynamoDB manifest and idempotency table, SQS queues,
S3, EC2). Gateways are local processes (``SKYHOP_COMPUTE=local``) posting their
events to SQS, as EC2 gateways would; the reaper runs against EC2 on moto."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from functions import common as shared
from functions.aws import bucket_events, gateway_events, reaper, submit
from functions.aws import common as aws_common
from skyhop.compute.ec2 import EC2ComputeProvider
from skyhop.errors import ThrottledError
from skyhop.models import (
    Chunk,
    ChunkVerified,
    EventEnvelope,
    GatewayConfig,
    GatewayRole,
    GatewaySpec,
    Job,
    JobReport,
    JobRuntime,
    JobState,
    ObjectEntry,
    ReplicationConfig,
    ReplicationRule,
    TransferOptions,
    TransferRequest,
)
from skyhop.queues.sqs import SQSQueue, create_queue
from skyhop.state.dynamodb import DynamoDBManifest, create_table
from tests.fixtures import events

MIB = 1024 * 1024


@dataclass
class Context:
    """The parts of a Lambda context the handlers and Powertools read."""

    function_name: str = "skyhop-test"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:skyhop-test"
    aws_request_id: str = "0d2e9c5a-test"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def sqs_event(bodies: list[str], queue: str = "q") -> dict[str, Any]:
    """An SQS event as Lambda delivers it."""
    return {
        "Records": [
            {
                "messageId": str(uuid.uuid4()),
                "receiptHandle": f"rh-{n}",
                "body": body,
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1700000000000",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1700000000001",
                },
                "messageAttributes": {},
                "md5OfBody": hashlib.md5(body.encode()).hexdigest(),
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
                "awsRegion": "us-east-1",
            }
            for n, body in enumerate(bodies)
        ]
    }


@dataclass
class Env:
    manifest: DynamoDBManifest
    requests: SQSQueue
    events: SQSQueue
    results: SQSQueue


def _queue(name: str) -> SQSQueue:
    return SQSQueue(create_queue(f"{name}-{uuid.uuid4().hex[:8]}"))


@pytest.fixture
def env(moto, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Env]:
    """The tables and queues infra_cdk would make, and the environment it sets
    (gateways as local processes: ``SKYHOP_COMPUTE=local``)."""
    create_table("skyhop-fn-manifest")
    boto3.client("dynamodb").create_table(
        TableName="skyhop-fn-idempotency",
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )
    queues = Env(
        manifest=DynamoDBManifest("skyhop-fn-manifest"),
        requests=_queue("requests"),
        events=_queue("events"),
        results=_queue("results"),
    )
    # what configure() derives is restored after the test, like the rest
    for name in [*shared.ENV.values(), "SKYHOP_RULES"]:
        monkeypatch.setenv(name, "")
    for name, value in {
        "SKYHOP_TABLE": "skyhop-fn-manifest",
        "SKYHOP_IDEMPOTENCY_TABLE": "skyhop-fn-idempotency",
        "SKYHOP_REQUESTS_QUEUE_URL": queues.requests.uri,
        "SKYHOP_EVENTS_QUEUE_URL": queues.events.uri,
        "SKYHOP_RESULTS_QUEUE_URL": queues.results.uri,
        "SKYHOP_COMPUTE": "local",
        # requests may use the test's own directory (and nothing else)
        "SKYHOP_TRANSFER_LOCATIONS": f"file://{tmp_path}/",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": "skyhop",
    }.items():
        monkeypatch.setenv(name, value)
    aws_common.reset()
    bucket_events.reset()
    yield queues
    if shared.control_plane.cache_info().currsize:
        compute = shared.control_plane().compute
        if hasattr(compute, "terminate_all"):
            compute.terminate_all()
    aws_common.reset()
    bucket_events.reset()


def results(queue: SQSQueue, want: int = 1, wait: float = 5.0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while len(out) < want and time.monotonic() < deadline:
        for message in queue.receive(max_messages=10, wait_seconds=1):
            out.append(json.loads(message.body))
            queue.ack(message)
    return out


# ---------------------------------------------------------------- submit


def test_submit_rejects_bad_requests_without_retrying(env: Env) -> None:
    bad = json.dumps({"request_id": "r-bad", "source": "s3://x/y", "destination": "/tmp/z"})
    response = submit.handler(sqs_event([bad, "not json", "{}"]), Context())
    assert response == {"batchItemFailures": []}
    rejected = results(env.results, 3)
    assert [r["type"] for r in rejected] == ["request_rejected"] * 3
    by_id = {r["request_id"]: r["error"] for r in rejected}
    assert "source" in by_id["r-bad"] and "\n" not in by_id["r-bad"]
    assert env.manifest.list_jobs() == []


def test_submit_rejects_a_missing_source(env: Env, tmp_path: Path) -> None:
    request = TransferRequest(
        source=str(tmp_path / "nowhere") + "/", destination=str(tmp_path / "d") + "/"
    )
    response = submit.handler(sqs_event([request.model_dump_json()]), Context())
    assert response == {"batchItemFailures": []}
    [rejected] = results(env.results)
    assert rejected["type"] == "request_rejected" and "not found" in rejected["error"]


def _tree(root: Path) -> dict[str, bytes]:
    files = {
        "a.txt": b"hello skyhop\n",
        "dir/b.bin": bytes(range(256)) * 40,
        "dir/big.bin": (b"0123456789abcdef" * (MIB // 16)) * 6 + b"tail",
        "empty": b"",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def pump_events(env: Env, job_id: str, timeout: float = 120.0) -> JobReport:
    """Deliver the events queue to the gateway_events function, as Lambda's SQS
    trigger would, until the job's report arrives on the results queue."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = env.events.receive(max_messages=10, wait_seconds=1)
        if messages:
            response = gateway_events.handler(sqs_event([m.body for m in messages]), Context())
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            assert not failed
            for message in messages:
                env.events.ack(message)
        for result in results(env.results, 1, wait=0.1):
            if result.get("job_id") == job_id and "state" in result:
                return JobReport.model_validate(result)
    job = env.manifest.get_job(job_id)
    progress = env.manifest.progress(job_id)
    raise AssertionError(
        f"no report for {job_id} within {timeout} s: "
        f"{job.state if job else None} {job.error if job else ''} {progress}"
    )


def test_submit_runs_a_job_to_its_report_through_the_queues(env: Env, tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    request = TransferRequest(
        source=f"{src}/",
        destination=f"{dst}/",
        options=TransferOptions(recursive=True, multipart_threshold=5 * MIB, chunk_size=5 * MIB),
    )
    body = request.model_dump_json()
    assert submit.handler(sqs_event([body]), Context()) == {"batchItemFailures": []}
    [started] = results(env.results)
    assert started["type"] == "job_started" and started["request_id"] == request.request_id
    job_id = started["job_id"]

    # the same message delivered again: settled already (idempotency), no second job
    assert submit.handler(sqs_event([body]), Context()) == {"batchItemFailures": []}
    assert results(env.results, wait=1.0) == []
    assert [j.job_id for j in env.manifest.list_jobs()] == [job_id]

    report = pump_events(env, job_id)
    assert report.state == JobState.SUCCEEDED and report.objects == len(files)
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data
    job = env.manifest.get_job(job_id)
    assert job is not None and job.state == JobState.SUCCEEDED
    assert shared.control_plane().compute.list_gateways(job_id) == []


def test_a_request_without_request_id_runs_once_per_message(env: Env, tmp_path: Path) -> None:
    """SQS keeps a message's id across redeliveries: a request sent without a
    request_id is known by it, so a redelivery (past the idempotency record too)
    finds the job the first delivery made instead of copying everything again."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    body = json.dumps(
        {"source": f"{src}/", "destination": f"{dst}/", "options": {"recursive": True}}
    )
    event = sqs_event([body])
    message_id = event["Records"][0]["messageId"]
    assert submit.handler(event, Context()) == {"batchItemFailures": []}
    [started] = results(env.results)
    assert started["type"] == "job_started" and started["request_id"] == f"msg-{message_id}"
    job_id = started["job_id"]

    assert submit.handler(event, Context()) == {"batchItemFailures": []}  # idempotency record
    again = shared.handle_request(body, message_id=message_id)  # the manifest itself
    assert again.job_id == job_id and "already" in again.detail
    assert [j.job_id for j in env.manifest.list_jobs()] == [job_id]

    report = pump_events(env, job_id)
    assert report.state == JobState.SUCCEEDED and report.objects == len(files)
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data


def test_a_request_whose_first_delivery_died_listing_is_listed_again(
    env: Env, tmp_path: Path
) -> None:
    """The function that took it died while listing: its job stayed 'created' with
    part of a listing. The next delivery fails that job and runs a new one."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = _tree(src)
    request = TransferRequest(
        request_id="r-died-listing",
        source=f"{src}/",
        destination=f"{dst}/",
        options=TransferOptions(recursive=True),
    )
    stale = Job(request=request)
    env.manifest.create_job(stale)
    assert submit.handler(sqs_event([request.model_dump_json()]), Context()) == {
        "batchItemFailures": []
    }
    [started] = results(env.results)
    assert started["type"] == "job_started" and started["job_id"] != stale.job_id
    assert env.manifest.get_job(stale.job_id).state == JobState.FAILED
    report = pump_events(env, started["job_id"])
    assert report.state == JobState.SUCCEEDED and report.objects == len(files)
    for rel, data in files.items():
        assert (dst / rel).read_bytes() == data


# ---------------------------------------------------------------- gateway_events


def test_gateway_events_fail_only_the_records_that_can_be_retried(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []

    def handle_event(event: Any) -> None:
        if event.chunk_id == 2:
            raise ThrottledError("DynamoDB throttled")
        seen.append(event.chunk_id)

    aws_common.configure()
    monkeypatch.setattr(shared.control_plane(), "handle_event", handle_event)
    bodies = [
        EventEnvelope(
            event=ChunkVerified(
                job_id="j-x", gateway_id="g", chunk_id=n, object_id=0, crc32c="00000000", length=1
            )
        ).model_dump_json()
        for n in range(4)
    ]
    bodies.insert(1, '{"event": {"type": "chunk_exploded"}}')
    event = sqs_event(bodies)
    response = gateway_events.handler(event, Context())
    throttled = event["Records"][3]["messageId"]
    assert response == {"batchItemFailures": [{"itemIdentifier": throttled}]}
    assert seen == [0, 1, 3]


# ---------------------------------------------------------------- bucket_events


def _s3_notification(name: str, bucket: str, key: str, size: int | None, etag: str) -> str:
    obj: dict[str, Any] = {"key": key.replace(" ", "+"), "eTag": etag, "sequencer": "0A1B2C"}
    if size is not None:
        obj["size"] = size
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2026-03-01T12:00:00.000Z",
                    "eventName": name,
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "skyhop",
                        "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                        "object": obj,
                    },
                }
            ]
        }
    )


def _eventbridge(detail_type: str, bucket: str, key: str, size: int, etag: str) -> str:
    return json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": "aws.s3",
            "account": "123456789012",
            "time": "2026-03-01T12:00:00Z",
            "region": "us-east-1",
            "resources": [f"arn:aws:s3:::{bucket}"],
            "detail": {
                "version": "0",
                "bucket": {"name": bucket},
                "object": {"key": key, "size": size, "etag": etag, "sequencer": "0A1B2D"},
                "request-id": "r",
                "requester": "123456789012",
                "reason": "PutObject",
            },
        }
    )


def test_bucket_events_replicate_by_the_rules(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    s3 = boto3.client("s3")
    for bucket in ("skyhop-src-bucket", "skyhop-dst-bucket", "skyhop-tagged-bucket"):
        s3.create_bucket(Bucket=bucket)
    s3.put_bucket_tagging(
        Bucket="skyhop-tagged-bucket", Tagging={"TagSet": [{"Key": "replicate", "Value": "yes"}]}
    )
    rules = ReplicationConfig(
        rules=[
            ReplicationRule(
                name="incoming",
                source_bucket="skyhop-src-bucket",
                prefix="in/",
                destination="s3://skyhop-dst-bucket/out/",
                propagate_deletes=True,
                inline_max_bytes=1024,
                exclude=["*.tmp"],
            ),
            ReplicationRule(
                name="tagged",
                bucket_tag="replicate=yes",
                destination="s3://skyhop-dst-bucket/tagged/",
            ),
        ]
    )
    monkeypatch.setenv("SKYHOP_RULES", rules.model_dump_json(exclude_defaults=True))
    aws_common.reset()
    bucket_events.reset()
    small, big = b"small object\n", bytes(2048)
    puts = {
        "in/my file.txt": small,
        "in/big.bin": big,
        "in/skip.tmp": small,
        "other/a.txt": small,
    }
    etags = {
        k: s3.put_object(Bucket="skyhop-src-bucket", Key=k, Body=v)["ETag"] for k, v in puts.items()
    }
    tagged_etag = s3.put_object(Bucket="skyhop-tagged-bucket", Key="t.txt", Body=small)["ETag"]
    bodies = [
        _s3_notification("ObjectCreated:Put", "skyhop-src-bucket", k, len(v), etags[k].strip('"'))
        for k, v in puts.items()
    ]
    bodies.append(
        _eventbridge(
            "Object Created", "skyhop-tagged-bucket", "t.txt", len(small), tagged_etag.strip('"')
        )
    )
    bodies.append(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}))
    assert bucket_events.handler(sqs_event(bodies), Context()) == {"batchItemFailures": []}

    def dst(key: str) -> bytes | None:
        try:
            return s3.get_object(Bucket="skyhop-dst-bucket", Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            return None

    assert dst("out/my file.txt") == small
    assert dst("tagged/t.txt") == small
    assert dst("out/skip.tmp") is None and dst("out/big.bin") is None and dst("other/a.txt") is None
    [queued] = [TransferRequest.model_validate_json(m.body) for m in env.requests.receive(10, 1)]
    assert (queued.source, queued.destination) == (
        "s3://skyhop-src-bucket/in/",
        "s3://skyhop-dst-bucket/out/",
    )
    assert queued.keys == ["big.bin"] and queued.options.recursive

    s3.delete_object(Bucket="skyhop-src-bucket", Key="in/my file.txt")
    deleted = _s3_notification(
        "ObjectRemoved:Delete", "skyhop-src-bucket", "in/my file.txt", None, ""
    )
    assert bucket_events.handler(sqs_event([deleted]), Context()) == {"batchItemFailures": []}
    assert dst("out/my file.txt") is None
    assert dst("tagged/t.txt") == small


def test_a_failed_inline_copy_is_retried_even_when_another_rule_queued_a_batch(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One rule copies inline into a bucket that does not exist yet, another queues a
    batch: the record must come again (the batch has the same request_id then)."""
    s3 = boto3.client("s3")
    for bucket in ("skyhop-src-two", "skyhop-bulk-dst"):
        s3.create_bucket(Bucket=bucket)
    rules = ReplicationConfig(
        rules=[
            ReplicationRule(
                name="inline",
                source_bucket="skyhop-src-two",
                prefix="in/",
                destination="s3://skyhop-late-dst/copy/",
            ),
            ReplicationRule(
                name="bulk",
                source_bucket="skyhop-src-two",
                prefix="in/",
                destination="s3://skyhop-bulk-dst/bulk/",
                inline_max_bytes=0,
            ),
        ]
    )
    monkeypatch.setenv("SKYHOP_RULES", rules.model_dump_json(exclude_defaults=True))
    aws_common.reset()
    bucket_events.reset()
    etag = s3.put_object(Bucket="skyhop-src-two", Key="in/a.txt", Body=b"hello")["ETag"]
    body = _s3_notification("ObjectCreated:Put", "skyhop-src-two", "in/a.txt", 5, etag.strip('"'))
    test_event = json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"})
    event = sqs_event([body, test_event])  # one record settles: a partial batch failure
    response = bucket_events.handler(event, Context())
    assert response == {"batchItemFailures": [{"itemIdentifier": event["Records"][0]["messageId"]}]}

    s3.create_bucket(Bucket="skyhop-late-dst")  # the operator fixes it; SQS delivers again
    assert bucket_events.handler(event, Context()) == {"batchItemFailures": []}
    assert s3.get_object(Bucket="skyhop-late-dst", Key="copy/a.txt")["Body"].read() == b"hello"
    queued = [TransferRequest.model_validate_json(m.body) for m in env.requests.receive(10, 1)]
    assert len({q.request_id for q in queued}) == 1  # the same batch both times


def test_a_malformed_notification_is_dropped_not_retried(env: Env) -> None:
    bad = json.dumps({"Records": [{"eventName": 5}]})
    assert bucket_events.handler(sqs_event([bad]), Context()) == {"batchItemFailures": []}


# ---------------------------------------------------------------- published payloads
#
# tests/events/README.md names each one's source; only the fields naming the object
# (bucket, key, size, ETag) are replaced, so that it names an object on moto.


def _replicating(monkeypatch: pytest.MonkeyPatch, **rule: Any) -> Any:
    s3 = boto3.client("s3")
    for bucket in ("ev-src", "ev-dst"):
        s3.create_bucket(Bucket=bucket)
    config = ReplicationConfig(
        rules=[ReplicationRule(name="r", source_bucket="ev-src", prefix="in/", **rule)]
    )
    monkeypatch.setenv("SKYHOP_RULES", config.model_dump_json(exclude_defaults=True))
    aws_common.reset()
    bucket_events.reset()
    return s3


def _keys(s3: Any, bucket: str) -> list[str]:
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_a_key_with_a_double_slash_keeps_it(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """#21 item 7: ``in//x.txt`` replicates onto ``out//x.txt``, never ``out/x.txt``
    (another object), inline and through a queued batch alike."""
    s3 = _replicating(monkeypatch, destination="s3://ev-dst/out/", inline_max_bytes=1024)
    s3.put_object(Bucket="ev-dst", Key="out/x.txt", Body=b"another object")
    small, big = b"under a double slash", bytes(4096)
    bodies = []
    for key, body in (("in//x.txt", small), ("in//big.bin", big)):
        etag = s3.put_object(Bucket="ev-src", Key=key, Body=body)["ETag"].strip('"')
        sample = events.load("s3-event.aws-lambda-go.json")
        bodies.append(
            json.dumps(
                events.s3_records(sample, bucket="ev-src", key=key, size=len(body), etag=etag)
            )
        )
    assert bucket_events.handler(sqs_event(bodies), Context()) == {"batchItemFailures": []}
    got = s3.get_object(Bucket="ev-dst", Key="out//x.txt")["Body"].read()
    assert got == small
    assert s3.get_object(Bucket="ev-dst", Key="out/x.txt")["Body"].read() == b"another object"
    [queued] = [TransferRequest.model_validate_json(m.body) for m in env.requests.receive(10, 1)]
    assert queued.keys == ["/big.bin"]
    # the bulk path lists exactly that key and writes it under the same name
    from skyhop.compute.local import LocalComputeProvider
    from skyhop.controlplane.service import ControlPlane
    from skyhop.state.sqlite import SQLiteManifest

    cp = ControlPlane(manifest=SQLiteManifest(":memory:"), compute=LocalComputeProvider())
    job = cp.create_job(queued)
    [entry] = list(cp.manifest.iter_objects(job.job_id))
    assert (entry.src_key, entry.dst_key) == ("in//big.bin", "out//big.bin")


def test_an_sns_wrapped_s3_event_is_unwrapped(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """#21 item 10: S3 -> SNS -> SQS without raw delivery (middy's published sample)."""
    s3 = _replicating(monkeypatch, destination="s3://ev-dst/out/")
    etag = s3.put_object(Bucket="ev-src", Key="in/file.csv", Body=b"a,b\n")["ETag"].strip('"')
    sample = events.load("sns-sqs-s3Event.middy.json")
    s3_event = json.loads(json.loads(events.sqs_body(sample))["Message"])
    body = events.sns_wrapped(
        sample, events.s3_records(s3_event, bucket="ev-src", key="in/file.csv", size=4, etag=etag)
    )
    assert bucket_events.handler(sqs_event([body]), Context()) == {"batchItemFailures": []}
    assert s3.get_object(Bucket="ev-dst", Key="out/file.csv")["Body"].read() == b"a,b\n"


def test_an_sns_message_that_is_no_bucket_event_is_logged_and_counted(
    env: Env,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Powertools' snsSqsEvent.json as it is: settled (never retried), one warning, a metric."""
    _replicating(monkeypatch, destination="s3://ev-dst/out/")
    sample = events.load("snsSqsEvent.powertools.json")
    assert bucket_events.handler(sample, Context()) == {"batchItemFailures": []}
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "not a bucket event" in warning.getMessage()
    assert '"UnrecognizedBucketEvents":[1.0]' in capsys.readouterr().out


def test_lifecycle_expirations_delete_on_both_paths(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#21 item 11: one rule for S3 -> SQS ``LifecycleExpiration:*`` and EventBridge's
    ``Object Deleted`` by ``Lifecycle Expiration`` (the AWS docs' samples): a delete,
    propagated where the rule says so."""
    s3 = _replicating(monkeypatch, destination="s3://ev-dst/out/", propagate_deletes=True)
    for name in ("a.txt", "b.txt"):
        s3.put_object(Bucket="ev-dst", Key=f"out/{name}", Body=b"copy")
    direct = events.s3_records(
        events.load("s3-LifecycleExpiration-Delete.awsdocs.json"),
        bucket="ev-src",
        key="in/a.txt",
        size=None,
        etag=None,
    )
    bridged = events.eventbridge_s3(
        events.load("eventbridge-ObjectDeleted-lifecycle.awsdocs.json"),
        bucket="ev-src",
        key="in/b.txt",
    )
    [sqs_kind] = {e.kind for e in bucket_events.object_events(json.dumps(direct))}
    [bridge_kind] = {e.kind for e in bucket_events.object_events(json.dumps(bridged))}
    assert sqs_kind == bridge_kind == "deleted"
    bodies = [json.dumps(direct), json.dumps(bridged)]
    assert bucket_events.handler(sqs_event(bodies), Context()) == {"batchItemFailures": []}
    assert _keys(s3, "ev-dst") == []


def test_published_s3_notifications_parse() -> None:
    """Every published S3 sample parses into what it says, as the handler reads it."""
    [created] = bucket_events.object_events(json.dumps(events.load("s3-event.aws-lambda-go.json")))
    assert (created.kind, created.uri, created.size) == (
        "created",
        "s3://sourcebucket/HappyFace.jpg",
        1024,
    )
    powertools = events.sqs_body(events.load("s3SqsEvent.powertools.json"))
    [put] = bucket_events.object_events(powertools)
    assert (put.uri, put.etag) == ("s3://xxx/test.pdf", "2e3ad1e983318bbd8e73b080e2997980")
    middy = events.sqs_body(events.load("sns-sqs-s3Event.middy.json"))
    [wrapped] = bucket_events.object_events(middy)
    assert (wrapped.kind, wrapped.uri, wrapped.size) == (
        "created",
        "s3://s3-upload/path/to/file.csv",
        9109,
    )
    lifecycle = json.dumps(events.load("s3-LifecycleExpiration-Delete.awsdocs.json"))
    [expired] = bucket_events.object_events(lifecycle)
    assert (expired.kind, expired.uri) == ("deleted", "s3://mybucket/expiration/delete")
    with pytest.raises(bucket_events.NotABucketEvent):
        bucket_events.object_events(events.sqs_body(events.load("snsSqsEvent.powertools.json")))


# ---------------------------------------------------------------- reaper


def _gateway_config(job_id: str, gateway_id: str) -> GatewayConfig:
    return GatewayConfig(
        job_id=job_id,
        gateway_id=gateway_id,
        role=GatewayRole.SOURCE,
        region="us-east-1",
        ca_cert_pem="ca",
        cert_pem="cert",
        key_pem="key",
        control_token="token",
    )


def test_reaper_tears_down_orphans_and_settles_jobs_whose_gateways_died(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYHOP_COMPUTE", "aws")
    monkeypatch.setenv("SKYHOP_REGIONS", "us-east-1")
    monkeypatch.setenv("SKYHOP_WAIT_READY", "false")
    aws_common.reset()
    request = TransferRequest(source="s3://skyhop-src-bucket/x", destination="/tmp/skyhop-x")
    done = Job(request=request, state=JobState.SUCCEEDED)
    env.manifest.create_job(done)
    ec2 = EC2ComputeProvider(wait_ready=False)
    orphans = ec2.launch([_gateway_config(done.job_id, "gw-orphan")])
    ec2.authorize(done.job_id, orphans)
    assert ec2.rules(done.job_id)

    lost = GatewaySpec(
        gateway_id="gw-lost", job_id="j-lost", region="us-east-1", role=GatewayRole.SOURCE
    )
    dying = Job(
        job_id="j-lost",
        request=request,
        state=JobState.RUNNING,
        objects_total=1,
        runtime=JobRuntime(gateways=[lost], compute="aws", attempt=5),
    )
    env.manifest.create_job(dying)
    env.manifest.put_objects(
        [
            ObjectEntry(
                job_id="j-lost",
                object_id=0,
                src_key="x",
                dst_key="x",
                size=1,
                chunk_size=1,
                n_chunks=1,
            )
        ]
    )
    env.manifest.put_chunks(
        [Chunk(job_id="j-lost", chunk_id=0, object_id=0, index=0, offset=0, length=1)]
    )

    sweep = reaper.handler({"source": "aws.events", "detail-type": "Scheduled Event"}, Context())
    assert sweep["reap"]["orphans_terminated"] == [done.job_id]
    assert sweep["interrupted"] == ["j-lost"] and sweep["failed"] == ["j-lost"]
    assert ec2.list_gateways(done.job_id) == [] and ec2.rules(done.job_id) == []
    settled = env.manifest.get_job("j-lost")
    assert settled.state == JobState.FAILED and "gw-lost" in settled.error
    # nothing left to do
    again = reaper.handler({}, Context())
    assert again["reap"]["orphans_terminated"] == [] and again["errors"] == []
    assert again["interrupted"] == again["failed"] == []


def test_infra_cdk_environment_translates_to_the_shared_settings() -> None:
    cdk = {
        "AWS_REGION": "eu-west-1",
        "SKYHOP_TABLE": "skyhop-manifest",
        "SKYHOP_EVENTS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/events",
        "SKYHOP_REQUESTS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/requests",
        "SKYHOP_RESULTS_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/1/results",
        "SKYHOP_LAUNCH_TEMPLATE_NAME": "skyhop-gateway",
        "SKYHOP_GATEWAY_SOURCE_PROFILE_ARN": "arn:aws:iam::1:instance-profile/gw-source",
        "SKYHOP_GATEWAY_RELAY_PROFILE_ARN": "arn:aws:iam::1:instance-profile/gw-relay",
        "SKYHOP_GATEWAY_DESTINATION_PROFILE_ARN": "arn:aws:iam::1:instance-profile/gw-dst",
        "SKYHOP_GATEWAY_DESTINATION_ROLE_ARN": "arn:aws:iam::1:role/gw-dst",
        "SKYHOP_KMS_KEY_ID": "arn:aws:kms:eu-west-1:1:key/k",
        "SKYHOP_REGIONS": "eu-west-1,us-east-1",
    }
    out = aws_common.translated_env(cdk)
    assert out["SKYHOP_MANIFEST"] == "dynamodb://skyhop-manifest"
    assert out["SKYHOP_EVENTS_QUEUE"] == cdk["SKYHOP_EVENTS_QUEUE_URL"]
    assert out["SKYHOP_COMPUTE"] == "aws"
    options = json.loads(out["SKYHOP_COMPUTE_OPTIONS"])
    assert options["launch_templates"] == {"eu-west-1": "skyhop-gateway"}
    # issue 19 item 9: each gateway role launches with its own identity, and only the
    # destination's role gets a job's key grant
    assert options["instance_profiles"] == {
        "source": "arn:aws:iam::1:instance-profile/gw-source",
        "relay": "arn:aws:iam::1:instance-profile/gw-relay",
        "destination": "arn:aws:iam::1:instance-profile/gw-dst",
    }
    assert options["grantee_roles"] == {"destination": "arn:aws:iam::1:role/gw-dst"}
    assert options["kms_keys"] == ["arn:aws:kms:eu-west-1:1:key/k"]
    # the options are exactly EC2ComputeProvider's keyword arguments
    provider = EC2ComputeProvider(regions=["eu-west-1"], **options)
    assert provider.launch_templates == {"eu-west-1": "skyhop-gateway"}
