"""Replication rules propagate delete events across clouds when the rule says so:
a real S3 notification (ObjectRemoved:Delete, parsed by the AWS function's adapter)
deletes the replica in GCS; a rule without ``propagate_deletes`` keeps its replica;
GCS and Azure deletes propagate the same way. Real emulators on every side."""

from __future__ import annotations

import json

import boto3
from azure.storage.blob import BlobServiceClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from functions.aws.bucket_events import object_events
from skyhop.controlplane.replication import ObjectEvent, replicate
from skyhop.models import ReplicationRule, TransferRequest
from skyhop.uri import parse_uri


def _s3_notification(
    kind: str, bucket: str, key: str, size: int | None = None, etag: str | None = None
) -> str:
    obj: dict[str, object] = {"key": key, "sequencer": "0062E99A88DC407460"}
    if size is not None:
        obj.update(size=size, eTag=etag)
    return json.dumps(
        {
            "Records": [
                {
                    "eventVersion": "2.1",
                    "eventSource": "aws:s3",
                    "awsRegion": "us-east-1",
                    "eventTime": "2026-11-25T00:00:00.000Z",
                    "eventName": kind,
                    "userIdentity": {"principalId": "AWS:EXAMPLE"},
                    "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                    "responseElements": {"x-amz-request-id": "1", "x-amz-id-2": "2"},
                    "s3": {
                        "s3SchemaVersion": "1.0",
                        "configurationId": "skyhop",
                        "bucket": {
                            "name": bucket,
                            "ownerIdentity": {"principalId": "EXAMPLE"},
                            "arn": f"arn:aws:s3:::{bucket}",
                        },
                        "object": obj,
                    },
                }
            ]
        }
    )


def test_delete_events_propagate_across_clouds(moto, gcs_bucket, azure_container, azurite_server):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="repl-src")
    etag = s3.put_object(Bucket="repl-src", Key="photos/a.jpg", Body=b"jpeg-a")["ETag"].strip('"')
    gcs = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    gbucket = gcs.bucket(parse_uri(gcs_bucket).bucket)
    azure = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    container = azure.get_container_client(parse_uri(azure_container).bucket)

    rules = [
        ReplicationRule(
            name="to-gcs",
            source_bucket="repl-src",
            prefix="photos/",
            destination=gcs_bucket + "mirror/",
            propagate_deletes=True,
        ),
        ReplicationRule(
            name="to-azure",
            source_bucket="repl-src",
            prefix="photos/",
            destination=azure_container + "mirror/",
        ),
    ]
    sent: list[TransferRequest] = []
    created = object_events(
        _s3_notification("ObjectCreated:Put", "repl-src", "photos/a.jpg", 6, etag)
    )
    outcomes = replicate(rules, created, send_request=sent.append)
    assert [(o.rule, o.action) for o in outcomes] == [("to-gcs", "copied"), ("to-azure", "copied")]
    assert gbucket.blob("mirror/a.jpg").download_as_bytes() == b"jpeg-a"
    assert container.get_blob_client("mirror/a.jpg").download_blob().readall() == b"jpeg-a"

    s3.delete_object(Bucket="repl-src", Key="photos/a.jpg")
    deleted = object_events(_s3_notification("ObjectRemoved:Delete", "repl-src", "photos/a.jpg"))
    assert [e.kind for e in deleted] == ["deleted"]
    outcomes = replicate(rules, deleted, send_request=sent.append)
    assert [(o.rule, o.action) for o in outcomes] == [
        ("to-gcs", "deleted"),
        ("to-azure", "skipped"),
    ]
    assert outcomes[1].reason == "rule does not propagate deletes"
    assert gbucket.get_blob("mirror/a.jpg") is None
    assert container.get_blob_client("mirror/a.jpg").exists()  # this rule keeps replicas
    assert sent == []

    # GCS and Azure sources: their delete events propagate to the other clouds
    gbucket.blob("in/b.txt").upload_from_string(b"b")
    container.upload_blob("in/c.txt", b"c")
    s3.put_object(Bucket="repl-src", Key="from-gcs/b.txt", Body=b"b")
    s3.put_object(Bucket="repl-src", Key="from-azure/c.txt", Body=b"c")
    back = [
        ReplicationRule(
            name="gcs-to-s3",
            source_bucket=parse_uri(gcs_bucket).bucket,
            prefix="in/",
            destination="s3://repl-src/from-gcs/",
            propagate_deletes=True,
        ),
        ReplicationRule(
            name="azure-to-s3",
            source_bucket=parse_uri(azure_container).bucket,
            prefix="in/",
            destination="s3://repl-src/from-azure/",
            propagate_deletes=True,
        ),
    ]
    events = [
        ObjectEvent(kind="deleted", uri=gcs_bucket + "in/b.txt"),
        ObjectEvent(kind="deleted", uri=azure_container + "in/c.txt"),
    ]
    outcomes = replicate(back, events, send_request=sent.append)
    assert [(o.rule, o.action) for o in outcomes] == [
        ("gcs-to-s3", "deleted"),
        ("azure-to-s3", "deleted"),
    ]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="repl-src").get("Contents", [])]
    assert "from-gcs/b.txt" not in keys and "from-azure/c.txt" not in keys


def test_a_rule_with_several_destinations(moto, gcs_bucket, azure_container, azurite_server):
    """A small object is read once and written to every destination; a large one goes
    as one multicast request; a delete reaches every destination; a destination that
    refuses fails alone."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="multi-src")
    s3.create_bucket(Bucket="multi-dst")
    etag = s3.put_object(Bucket="multi-src", Key="in/a.txt", Body=b"alpha")["ETag"].strip('"')
    dsts = ["s3://multi-dst/copy/", f"{gcs_bucket}copy/", f"{azure_container}copy/"]
    rule = ReplicationRule(
        name="fan",
        source_bucket="multi-src",
        prefix="in",
        destinations=dsts,
        propagate_deletes=True,
        inline_max_bytes=1000,
    )
    assert rule.destination == dsts[0] and rule.all_destinations == dsts
    sent: list[TransferRequest] = []
    small = ObjectEvent(kind="created", uri="s3://multi-src/in/a.txt", size=5, etag=etag)
    outcomes = replicate([rule], [small], send_request=sent.append)
    assert [(o.destination, o.action) for o in outcomes] == [(d + "a.txt", "copied") for d in dsts]
    assert s3.get_object(Bucket="multi-dst", Key="copy/a.txt")["Body"].read() == b"alpha"
    gcs = storage.Client(project="skyhop-test", credentials=AnonymousCredentials())
    gbucket = gcs.bucket(parse_uri(gcs_bucket).bucket)
    assert gbucket.blob("copy/a.txt").download_as_bytes() == b"alpha"
    az = BlobServiceClient.from_connection_string(azurite_server.connection_string)
    container = az.get_container_client(parse_uri(azure_container).bucket)
    assert container.download_blob("copy/a.txt").readall() == b"alpha"
    big = ObjectEvent(kind="created", uri="s3://multi-src/in/big.bin", size=10_000, etag="e")
    outcomes = replicate([rule], [big], send_request=sent.append)
    assert [o.action for o in outcomes] == ["queued"] * 3
    (request,) = sent
    assert request.multicast and request.all_destinations == dsts and request.keys == ["big.bin"]
    outcomes = replicate(
        [rule],
        [ObjectEvent(kind="deleted", uri="s3://multi-src/in/a.txt")],
        send_request=sent.append,
    )
    assert [o.action for o in outcomes] == ["deleted"] * 3
    assert not gbucket.blob("copy/a.txt").exists()
    # a destination that is gone fails alone
    broken = rule.model_copy(
        update={"destinations": [dsts[0], "s3://no-such-bucket-here/x/"], "destination": dsts[0]}
    )
    outcomes = replicate([broken], [small], send_request=sent.append)
    assert [o.action for o in outcomes] == ["copied", "failed"]
