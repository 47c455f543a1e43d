"""Replication latency (issue #11): from putting an object to a verified replica.

200 small objects (1-64 KiB) are put into a bucket on a moto server whose S3
notifications go to an SQS queue; pollers take batches of up to 10 messages
from that queue, as Lambda's SQS event source mapping does, and hand each
batch to the real ``bucket_events`` handler, which copies every object under
the rule inline and checks it after writing. An object counts as replicated
when the handler that copied it returned, and the replica's bytes are then
checked again against what was put.

Prints p50/p90/p99/max seconds from the start of each put to its verified
replica, against the target (p99 under 5 s); exits non-zero when the target
is missed or any replica is missing or differs.

    python -m benchmarks.replication_latency [--objects 200] [--pollers 4] [--rate 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import queue
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.fixtures.events import LambdaContext, sqs_event
from tests.fixtures.services import running_moto

SRC, DST = "skyhop-bench-src", "skyhop-bench-dst"
TARGET_P99 = 5.0


def keys_of(body: str) -> list[str]:
    from urllib.parse import unquote_plus

    raw = json.loads(body)
    return [unquote_plus(r["s3"]["object"]["key"]) for r in raw.get("Records", [])]


def poll(queue_url: str, queue_arn: str, env: dict[str, str], results: Any, stop: Any) -> None:
    """One concurrent "Lambda": receive up to 10 messages, invoke the handler, delete
    what it settled, report each object's completion time (CLOCK_MONOTONIC, the
    same in every process of the machine)."""
    os.environ.update(env)
    import logging

    logging.disable(logging.INFO)  # the handler's per-object log lines are not the subject
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - nor its metrics (EMF on stdout)
    from functions.aws import bucket_events

    client = boto3.client("sqs")
    from functions import common as shared
    from functions.aws.common import configure
    from skyhop.uri import parse_uri

    configure()  # what a warm invocation has done already: settings read, clients made
    for bucket in (SRC, DST):
        shared.store(parse_uri(f"s3://{bucket}/")).check_bucket()
    results.put(("ready", "", 0.0))
    while not stop.is_set():
        got = client.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if not got:
            continue
        response = bucket_events.handler(sqs_event(got, queue_arn), LambdaContext())
        finished = time.monotonic()
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for m in got:
            kind = "failed" if m["MessageId"] in failed else "done"
            for key in keys_of(m["Body"]):
                results.put((kind, key, finished))
            if kind == "done":
                client.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument(
        "--pollers", type=int, default=4, help="concurrent handler invocations (processes)"
    )
    parser.add_argument("--rate", type=float, default=0.0, help="puts per second (0: at once)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skyhop-repl-bench-"))
    rng = random.Random(args.seed)
    bodies = {
        f"in/obj-{i:05d}.bin": rng.randbytes(rng.randint(1024, 64 * 1024))
        for i in range(args.objects)
    }
    with running_moto(work):
        os.environ.update(
            {
                "SKYHOP_HOME": str(work / "home"),
                "AWS_EC2_METADATA_DISABLED": "true",
                "SKYHOP_COMPUTE": "local",
                "POWERTOOLS_TRACE_DISABLED": "1",
                "POWERTOOLS_METRICS_NAMESPACE": "skyhop-bench",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        )
        s3, sqs = boto3.client("s3"), boto3.client("sqs")
        for bucket in (SRC, DST):
            s3.create_bucket(Bucket=bucket)
        queue_url = sqs.create_queue(
            QueueName=f"bucket-events-{uuid.uuid4().hex[:6]}",
            Attributes={"VisibilityTimeout": "60"},
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=SRC,
            NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": queue_arn, "Events": ["s3:ObjectCreated:*"]}]
            },
        )
        from skyhop.models import ReplicationConfig, ReplicationRule

        rules = ReplicationConfig(
            rules=[
                ReplicationRule(
                    name="bench",
                    source_bucket=SRC,
                    prefix="in/",
                    destination=f"s3://{DST}/out/",
                    inline_max_bytes=1024 * 1024,
                )
            ]
        )
        os.environ["SKYHOP_RULES"] = rules.model_dump_json(exclude_defaults=True)
        put_at: dict[str, float] = {}
        done_at: dict[str, float] = {}
        failures: list[str] = []
        ctx = multiprocessing.get_context("spawn")
        results: Any = ctx.Queue()
        stop = ctx.Event()
        pollers = [
            ctx.Process(target=poll, args=(queue_url, queue_arn, dict(os.environ), results, stop))
            for _ in range(args.pollers)
        ]
        for proc in pollers:
            proc.start()
        for _ in pollers:  # each poller made its clients and is waiting for messages
            results.get(timeout=120)
        started = time.monotonic()
        for n, (key, body) in enumerate(bodies.items()):
            if args.rate > 0:
                time.sleep(max(0.0, started + n / args.rate - time.monotonic()))
            put_at[key] = time.monotonic()
            s3.put_object(Bucket=SRC, Key=key, Body=body)
        put_seconds = time.monotonic() - started
        deadline = time.monotonic() + 120
        while len(done_at) < len(bodies) and time.monotonic() < deadline:
            try:
                kind, key, at = results.get(timeout=1)
            except queue.Empty:
                continue
            if kind == "done":
                done_at.setdefault(key, at)
            else:
                failures.append(key)
        stop.set()
        for proc in pollers:
            proc.join(10)
            if proc.is_alive():
                proc.kill()

        wrong = []
        for key, body in bodies.items():
            dst_key = "out/" + key.removeprefix("in/")
            try:
                got = s3.get_object(Bucket=DST, Key=dst_key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                got = None
            if got is None or hashlib.sha256(got).digest() != hashlib.sha256(body).digest():
                wrong.append(key)
        latencies = [done_at[k] - put_at[k] for k in bodies if k in done_at]

    if not latencies:
        print("no object was replicated", file=sys.stderr)
        return 1
    p50, p90, p99 = (percentile(latencies, q) for q in (50, 90, 99))
    rows = [
        ("objects put", f"{len(bodies)}", ""),
        ("put phase (s)", f"{put_seconds:.2f}", ""),
        ("pollers", f"{args.pollers}", ""),
        ("replicated and verified", f"{len(latencies) - len(wrong)}", f"{len(bodies)}"),
        ("p50 put -> replica (s)", f"{p50:.3f}", ""),
        ("p90 put -> replica (s)", f"{p90:.3f}", ""),
        ("p99 put -> replica (s)", f"{p99:.3f}", f"< {TARGET_P99:g}"),
        ("max put -> replica (s)", f"{max(latencies):.3f}", ""),
        ("mean (s)", f"{statistics.fmean(latencies):.3f}", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'metric':<{width}}  {'value':>10}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>10}  {target}")
    ok = p99 < TARGET_P99 and not wrong and not failures and len(latencies) == len(bodies)
    if wrong:
        print(f"missing or different replicas: {wrong[:5]}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} message(s) failed in the handler", file=sys.stderr)
    print("PASS" if ok else f"FAIL: p99 {p99:.3f} s (target < {TARGET_P99:g} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
