"""The parts of the queue-controlled path: per-gateway SQS control queues (moto),
control messages cut to size, the address a cloud gateway advertises, and
deterministic request ids of replication batches."""

from __future__ import annotations

import http.server
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from gateway_vm.address import advertised_host, aws_address
from skyhop.controlplane.provision import MAX_CONTROL_MESSAGE_BYTES, chunk_messages
from skyhop.controlplane.replication import ObjectEvent, replicate
from skyhop.errors import GatewayError, UsageError
from skyhop.models import (
    ChunkBatch,
    ChunksMessage,
    ChunkWork,
    GatewayConfig,
    GatewayRole,
    ReplicationRule,
    TransferRequest,
)
from skyhop.queues.base import control_queue_name, job_of_control_queue, open_control_queues
from skyhop.queues.memory import MemoryControlQueues
from skyhop.queues.sqs import SQSControlQueues, SQSQueue

# ---------------------------------------------------------------- control queues


def test_control_queue_names_carry_the_job() -> None:
    name = control_queue_name("skyhop-ctl", "j-0123456789abcdef", "gw-j-0123456789abcdef-a2-h1-3")
    assert name == "skyhop-ctl-j-0123456789abcdef--a2-h1-3"
    assert job_of_control_queue("skyhop-ctl", name) == "j-0123456789abcdef"
    assert job_of_control_queue("skyhop-ctl", "skyhop-ctl-events") is None
    long = control_queue_name("skyhop-ctl", "j-1", "g" * 200)
    assert len(long) <= 80 and job_of_control_queue("skyhop-ctl", long) == "j-1"
    assert long != control_queue_name("skyhop-ctl", "j-1", "g" * 199)


def test_sqs_control_queues_are_made_per_gateway_and_deleted_per_job(moto) -> None:
    prefix = f"ctl-{uuid.uuid4().hex[:6]}"
    queues = open_control_queues(f"sqs://{prefix}")
    assert isinstance(queues, SQSControlQueues)
    a = queues.create("j-a", "gw-j-a-a1-h0-0")
    assert a == f"sqs://{prefix}-j-a--a1-h0-0?region=us-east-1"
    assert queues.create("j-a", "gw-j-a-a1-h0-0") == a  # idempotent
    b = queues.create("j-a", "gw-j-a-a1-h1-0")
    other = queues.create("j-b", "gw-j-b-a1-h0-0")
    client = boto3.client("sqs")
    url = SQSQueue(a).url
    tags = client.list_queue_tags(QueueUrl=url)["Tags"]
    assert tags == {"skyhop": "control", "skyhop:job": "j-a"}
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["MessageRetentionPeriod"] == "86400"

    # what the control plane sends, the gateway's own queue object receives
    queues.open(a).send('{"type": "drain"}')
    [message] = SQSQueue(a).receive(10, wait_seconds=1)
    assert message.body == '{"type": "drain"}'

    assert queues.jobs() == {"j-a", "j-b"}
    assert queues.delete_job("j-a", [a, b]) == 2
    assert queues.delete_job("j-a", [a, b]) == 0  # idempotent
    assert queues.jobs() == {"j-b"}
    assert queues.open(other).url  # the other job's queue is untouched
    names = client.list_queues(QueueNamePrefix=prefix).get("QueueUrls", [])
    assert [u.rsplit("/", 1)[-1] for u in names] == [f"{prefix}-j-b--a1-h0-0"]


@pytest.mark.parametrize(
    "uri",
    ["sqs://", "sqs://bad name", "sqs://ok/path", "memory://", "ftp://x", "skyhop-ctl"],
)
def test_bad_control_queue_uris_are_one_line_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError) as info:
        open_control_queues(uri)
    assert "\n" not in str(info.value) and uri in str(info.value)


def test_memory_control_queues() -> None:
    queues = MemoryControlQueues(f"memory://m-{uuid.uuid4().hex[:6]}")
    uri = queues.create("j-1", "gw-j-1-a1-h0-0")
    queues.open(uri).send("x")
    assert [m.body for m in queues.open(uri).receive(5)] == ["x"]
    assert queues.jobs() == {"j-1"}
    assert queues.delete_job("j-1") == 1 and queues.jobs() == set()


# ---------------------------------------------------------------- control messages


def _work(n: int, key: str) -> ChunkWork:
    return ChunkWork(
        chunk_id=n,
        object_id=n,
        index=0,
        src_key=key,
        dst_key=key,
        offset=0,
        length=1,
        object_size=1,
    )


def test_chunk_messages_are_cut_under_every_queue_limit() -> None:
    small = ChunkBatch(job_id="j", chunks=[_work(n, f"k{n}") for n in range(5)])
    assert len(chunk_messages(small)) == 1
    key = "k/" + "x" * 1000
    big = ChunkBatch(job_id="j", chunks=[_work(n, f"{key}{n}") for n in range(256)])
    bodies = chunk_messages(big)
    assert len(bodies) > 1
    assert all(len(b.encode()) <= MAX_CONTROL_MESSAGE_BYTES for b in bodies)
    parsed = [ChunksMessage.model_validate_json(b) for b in bodies]
    assert [c.chunk_id for m in parsed for c in m.batch.chunks] == list(range(256))
    assert {m.batch.job_id for m in parsed} == {"j"}


# ---------------------------------------------------------------- advertised address


class _FakeIMDSv2(http.server.BaseHTTPRequestHandler):
    """A local fake of EC2's instance metadata service (IMDSv2 token and the two
    address paths): no emulator of IMDS exists. Answers only with a token."""

    public: str | None = "203.0.113.7"

    def log_message(self, *args: Any) -> None:
        pass

    def do_PUT(self) -> None:
        if self.path != "/latest/api/token" or not self.headers.get(
            "X-aws-ec2-metadata-token-ttl-seconds"
        ):
            self._send(400, "")
            return
        self._send(200, "tok-123")

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != "tok-123":
            self._send(401, "")
        elif self.path == "/latest/meta-data/public-ipv4" and self.public:
            self._send(200, self.public)
        elif self.path == "/latest/meta-data/local-ipv4":
            self._send(200, "10.73.0.12")
        else:
            self._send(404, "")

    def _send(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def imds(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_FakeIMDSv2]]:
    handler = type("Handler", (_FakeIMDSv2,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(
        "AWS_EC2_METADATA_SERVICE_ENDPOINT", f"http://127.0.0.1:{server.server_port}"
    )
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    yield handler
    server.shutdown()
    server.server_close()


def _config(**fields: Any) -> GatewayConfig:
    return GatewayConfig(
        job_id="j",
        gateway_id="g",
        role=GatewayRole.DESTINATION,
        ca_cert_pem="ca",
        cert_pem="c",
        key_pem="k",
        control_token="t",
        **fields,
    )


def test_vm_gateways_advertise_their_public_address_from_imdsv2(imds, monkeypatch) -> None:
    monkeypatch.setattr("gateway_vm.address.gce_address", lambda: None)
    monkeypatch.setattr("gateway_vm.address.azure_address", lambda: None)
    assert advertised_host(_config(listen_host="0.0.0.0")) == "203.0.113.7"
    imds.public = None  # no public address: the private one
    assert aws_address() == "10.73.0.12"
    # the provider's value, or a real listen address, wins without asking
    assert advertised_host(_config(listen_host="0.0.0.0", advertise_host="198.51.100.1")) == (
        "198.51.100.1"
    )
    assert advertised_host(_config(listen_host="127.0.0.1")) == "127.0.0.1"


def test_no_address_at_all_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("aws_address", "gce_address", "azure_address"):
        monkeypatch.setattr(f"gateway_vm.address.{name}", lambda: None)
    with pytest.raises(GatewayError, match="advertise_host"):
        advertised_host(_config(listen_host="0.0.0.0"))


# ---------------------------------------------------------------- replication request ids


def test_replication_batches_have_deterministic_request_ids() -> None:
    rule = ReplicationRule(
        name="bulk", source_bucket="src", destination="s3://dst/out/", inline_max_bytes=0
    )
    tagged = ReplicationRule(
        name="tagged", bucket_tag="replicate=yes", destination="s3://dst/t/", inline_max_bytes=0
    )

    def events(*items: tuple[str, str]) -> list[ObjectEvent]:
        return [
            ObjectEvent(
                kind="created", uri=uri, size=10, etag=etag, bucket_tags={"replicate": "yes"}
            )
            for uri, etag in items
        ]

    def requests(batch: list[ObjectEvent]) -> list[TransferRequest]:
        sent: list[TransferRequest] = []
        replicate([rule, tagged], batch, send_request=sent.append)
        return sent

    first = requests(events(("s3://src/a", '"e1"'), ("s3://src/b", "e2")))
    again = requests(events(("s3://src/b", "e2"), ("s3://src/a", "e1"), ("s3://src/a", "e1")))
    assert [r.request_id for r in first] == [r.request_id for r in again]
    bulk = next(r for r in again if r.destination == "s3://dst/out/")
    assert bulk.keys == ["b", "a"]  # duplicates of one batch travel once
    changed = requests(events(("s3://src/a", "e9"), ("s3://src/b", "e2")))
    assert {r.request_id for r in changed}.isdisjoint({r.request_id for r in first})
    # a tag rule batches per bucket: two buckets, two requests with their own sources
    two = requests(events(("s3://other/x", "e1"), ("s3://third/y", "e1")))
    assert sorted(r.source for r in two) == ["s3://other/", "s3://third/"]
    assert len({r.request_id for r in two}) == 2
