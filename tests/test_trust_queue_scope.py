"""Each EC2 gateway's control queue admits no other instance (#19 item 9, per-job queue
access): every gateway role may receive and delete on ``<prefix>-*`` (no static IAM
policy can name "this job's queues"), so :func:`provision.launch_queued` puts a queue
policy on each gateway's SQS control queue that denies receiving, deleting, changing
visibility and sending to any request made with EC2 instance credentials
(``ec2:SourceInstanceARN`` present) of an instance other than that gateway's own.
The control plane's requests (no such key) are unaffected.

moto (server mode) stores the policy but does not enforce it: these tests read back
the policy each queue carries and check that it names that gateway's instance, as
moto records it; and that a launch whose policy cannot be set is undone."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from skyhop.compute.base import InstanceIdentities
from skyhop.compute.ec2 import EC2ComputeProvider
from skyhop.compute.local import LocalComputeProvider
from skyhop.compute.routed import RoutedComputeProvider
from skyhop.controlplane import provision
from skyhop.errors import AccessError, GatewayError, UsageError
from skyhop.models import (
    GatewayConfig,
    GatewayRole,
    GatewaySpec,
    InstanceIdentity,
    Job,
    JobState,
    TransferOptions,
    TransferRequest,
)
from skyhop.queues.base import InstanceScopedControlQueues
from skyhop.queues.memory import MemoryControlQueues
from skyhop.queues.sqs import SQSControlQueues
from skyhop.state.sqlite import SQLiteManifest

EAST = "us-east-1"
WEST = "eu-west-1"
SCOPED_ACTIONS = {
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:SendMessage",
}


def _job(tmp_path: Path, **options: Any) -> tuple[SQLiteManifest, Job]:
    manifest = SQLiteManifest(tmp_path / f"m-{uuid.uuid4().hex[:6]}.db")
    job = Job(
        request=TransferRequest(
            source=f"{tmp_path}/src/",
            destination=f"{tmp_path}/dst/",
            options=TransferOptions(**options),
        ),
        state=JobState.PLANNED,
    )
    manifest.create_job(job)
    return manifest, job


def _sqs() -> Any:
    return boto3.client("sqs", region_name=EAST)


def _attributes(uri: str) -> dict[str, str]:
    name = uri.removeprefix("sqs://").split("?", 1)[0]
    url = _sqs().get_queue_url(QueueName=name)["QueueUrl"]
    return _sqs().get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]


def _deny(uri: str) -> tuple[dict[str, Any], str]:
    """The one statement of the queue's policy, and the queue's ARN."""
    attributes = _attributes(uri)
    policy = json.loads(attributes["Policy"])
    [statement] = policy["Statement"]
    return statement, attributes["QueueArn"]


def _instance_arn(queue_arn: str, region: str, instance_id: str) -> str:
    _, partition, _, _, account, _ = queue_arn.split(":")
    return f"arn:{partition}:ec2:{region}:{account}:instance/{instance_id}"


def _gateway_tag(region: str, instance_id: str) -> str:
    [reservation] = boto3.client("ec2", region_name=region).describe_instances(
        InstanceIds=[instance_id]
    )["Reservations"]
    tags = {t["Key"]: t["Value"] for t in reservation["Instances"][0].get("Tags", [])}
    return tags["skyhop:gateway"]


def _live_instances(job_id: str, regions: list[str]) -> list[str]:
    found = []
    for region in regions:
        pages = boto3.client("ec2", region_name=region).get_paginator("describe_instances")
        for page in pages.paginate(Filters=[{"Name": "tag:skyhop:job", "Values": [job_id]}]):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    if instance["State"]["Name"] not in ("shutting-down", "terminated"):
                        found.append(instance["InstanceId"])
    return found


def test_each_ec2_gateways_control_queue_denies_every_other_instance(moto, tmp_path: Path) -> None:
    # the gateways in two regions, their queues in the control plane's (us-east-1)
    compute = EC2ComputeProvider(regions=[EAST, WEST], wait_ready=False)
    queues = SQSControlQueues(f"sqs://ctl-{uuid.uuid4().hex[:8]}?region={EAST}")
    manifest, job = _job(tmp_path, src_region=f"aws:{WEST}", dst_region=f"aws:{EAST}")
    try:
        started = provision.launch_queued(job, compute, manifest, "memory://events", queues)
        assert started.state == JobState.PROVISIONING and started.runtime is not None
        gateways = started.runtime.gateways
        assert {g.region for g in gateways} == {f"aws:{WEST}", f"aws:{EAST}"}
        named = set()
        for spec in gateways:
            assert spec.control_queue and spec.instance_id and spec.instance_id.startswith("i-")
            statement, queue_arn = _deny(spec.control_queue)
            region = spec.region.removeprefix("aws:")
            mine = _instance_arn(queue_arn, region, spec.instance_id)
            assert statement["Effect"] == "Deny"
            assert statement["Principal"] == "*"
            assert set(statement["Action"]) == SCOPED_ACTIONS
            assert statement["Resource"] == queue_arn
            assert statement["Condition"] == {
                "Null": {"ec2:SourceInstanceARN": "false"},
                "ArnNotEquals": {"ec2:SourceInstanceARN": mine},
            }
            # the ARN names the instance moto launched for this very gateway
            assert _gateway_tag(region, spec.instance_id) == spec.gateway_id
            named.add(mine)
        assert len(named) == len(gateways) == 2  # each queue names a different instance
    finally:
        compute.revoke(job.job_id)
        compute.terminate(job.job_id)
        queues.delete_job(job.job_id)


def test_a_launch_whose_queue_policy_cannot_be_set_is_undone(moto, tmp_path: Path) -> None:
    """SetQueueAttributes refused (a stack deployed without the permission): no gateway
    keeps running with a queue every instance may drain."""
    client = _sqs()
    refused: list[str] = []

    def deny(params: dict[str, Any], **_: Any) -> None:
        if "Policy" in params.get("Attributes", {}):
            refused.append(params["QueueUrl"])
            raise ClientError(
                {
                    "Error": {"Code": "AccessDenied", "Message": "not authorized"},
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                "SetQueueAttributes",
            )

    client.meta.events.register("provide-client-params.sqs.SetQueueAttributes", deny)
    prefix = f"ctl-{uuid.uuid4().hex[:8]}"
    queues = SQSControlQueues(f"sqs://{prefix}?region={EAST}", client=client)
    compute = EC2ComputeProvider(regions=[EAST], wait_ready=False)
    manifest, job = _job(tmp_path, src_region=EAST, dst_region=EAST)
    try:
        with pytest.raises(AccessError, match="access denied"):
            provision.launch_queued(job, compute, manifest, "memory://events", queues)
        assert refused  # the launch got as far as the policy
        after = manifest.get_job(job.job_id)
        assert after is not None and after.state == JobState.INTERRUPTED
        assert after.error and "launching gateways" in after.error
        assert _sqs().list_queues(QueueNamePrefix=prefix).get("QueueUrls", []) == []
        assert _live_instances(job.job_id, [EAST]) == []
        assert compute.list_gateways(job.job_id) == []
    finally:
        compute.revoke(job.job_id)
        compute.terminate(job.job_id)


class _Processes(LocalComputeProvider):
    """Local-process gateways as the serverless tests run them: an instance id that is
    a pid (nothing launched here)."""

    ready_via_events = True

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        return [
            GatewaySpec(
                gateway_id=c.gateway_id,
                job_id=c.job_id,
                region=c.region,
                role=c.role,
                instance_id=str(4000 + i),
            )
            for i, c in enumerate(configs)
        ]


def test_local_process_gateways_get_no_queue_policy(moto, tmp_path: Path) -> None:
    assert not isinstance(LocalComputeProvider(), InstanceIdentities)
    queues = SQSControlQueues(f"sqs://ctl-{uuid.uuid4().hex[:8]}?region={EAST}")
    manifest, job = _job(tmp_path)
    try:
        started = provision.launch_queued(job, _Processes(), manifest, "memory://events", queues)
        assert started.runtime is not None
        for spec in started.runtime.gateways:
            assert spec.control_queue and "Policy" not in _attributes(spec.control_queue)
    finally:
        queues.delete_job(job.job_id)


def test_ec2_gateways_with_queues_that_cannot_be_scoped_still_launch(moto, tmp_path: Path) -> None:
    """In-memory control queues (tests) declare no scoping: nothing to set, nothing fails."""
    queues = MemoryControlQueues(f"memory://ctl-{uuid.uuid4().hex[:8]}")
    assert not isinstance(queues, InstanceScopedControlQueues)
    compute = EC2ComputeProvider(regions=[EAST], wait_ready=False)
    manifest, job = _job(tmp_path, src_region=EAST, dst_region=EAST)
    try:
        started = provision.launch_queued(job, compute, manifest, "memory://events", queues)
        assert started.state == JobState.PROVISIONING
    finally:
        compute.revoke(job.job_id)
        compute.terminate(job.job_id)


# ---------------------------------------------------------------- the two capabilities


def _spec(region: str, instance_id: str | None) -> GatewaySpec:
    return GatewaySpec(
        gateway_id="gw-1",
        job_id="j-1",
        region=region,
        role=GatewayRole.SOURCE,
        instance_id=instance_id,
    )


def test_the_ec2_provider_names_its_instances() -> None:
    ec2 = EC2ComputeProvider(regions=[EAST], wait_ready=False)
    assert isinstance(ec2, InstanceIdentities)
    assert ec2.instance_identity(_spec(f"aws:{WEST}", "i-0abc123def4567890")) == (
        InstanceIdentity(cloud="aws", region=WEST, instance_id="i-0abc123def4567890")
    )
    assert ec2.instance_identity(_spec(EAST, "i-0abc")).region == EAST
    for bad in (None, "1234", "i-*", "i-0abc/x", "arn:aws:ec2:::instance/i-1"):
        with pytest.raises(GatewayError):
            ec2.instance_identity(_spec(EAST, bad))


def test_routed_compute_names_the_instances_of_the_clouds_that_can() -> None:
    ec2 = EC2ComputeProvider(regions=[EAST], wait_ready=False)
    routed = RoutedComputeProvider({"aws": ec2, "gcp": LocalComputeProvider()})
    assert isinstance(routed, InstanceIdentities)
    assert routed.instance_identity(_spec(f"aws:{EAST}", "i-0abc")) == InstanceIdentity(
        cloud="aws", region=EAST, instance_id="i-0abc"
    )
    assert routed.instance_identity(_spec("gcp:us-central1", "1234")) is None


def test_restricting_a_queue_again_replaces_the_instance_it_admits(moto) -> None:
    queues = SQSControlQueues(f"sqs://ctl-{uuid.uuid4().hex[:8]}?region={EAST}")
    assert isinstance(queues, InstanceScopedControlQueues)
    uri = queues.create("j-1", "gw-j-1-a1-h0-0")
    try:
        for instance_id in ("i-0aaa", "i-0bbb"):  # a fresh attempt's instance
            queues.restrict_to_instance(
                uri, InstanceIdentity(cloud="aws", region=WEST, instance_id=instance_id)
            )
        statement, queue_arn = _deny(uri)
        assert statement["Condition"]["ArnNotEquals"] == {
            "ec2:SourceInstanceARN": _instance_arn(queue_arn, WEST, "i-0bbb")
        }
        with pytest.raises(UsageError, match="EC2"):
            queues.restrict_to_instance(
                uri, InstanceIdentity(cloud="gcp", region="us-central1", instance_id="123")
            )
    finally:
        queues.delete_job("j-1", [uri])
