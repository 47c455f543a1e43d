"""From ``skyhop cp`` to the first byte at the destination, through a deployed
control plane (``--on aws``) and, measured in the same run, with gateways this
machine starts itself (``--gateways local``) and on the direct path (``--local``
alone: with the profile there, a plain ``cp -y`` of two buckets would use it).

The setup is the tests': moto in server mode (S3, SQS, KMS; DynamoDB served one
request at a time), the real ``submit`` and ``gateway_events`` Lambda handlers
run by poller threads (tests/fixtures/controlplane.py), gateways as local
processes controlled through SQS control queues. The CLI runs as a child
process with its own SKYHOP_HOME, as a user's would. A watcher polls the
destination bucket every 20 ms; "first byte" is when the first object (or the
first multipart part) is there, "done" when the CLI exits.

Prints the user's transcript of the ``--on aws`` copy (plan, progress, report)
and one table row per mode.

    python -m benchmarks.cloud_first_byte [--objects 8] [--size-mib 2] [--runs 1]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.fixtures.controlplane import DeployedAWS
from tests.fixtures.moto_serial import _SERVE
from tests.fixtures.services import free_port, running_moto, stop, wait_http

MIB = 1024 * 1024


@contextlib.contextmanager
def serial_moto(work: Path) -> Iterator[str]:
    port = free_port()
    with open(work / "moto-serial.log", "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVE, str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{endpoint}/moto-api/", proc=proc)
        yield endpoint
    finally:
        stop(proc)


class FirstObject:
    """The moment the first object (or multipart part) shows in ``bucket``."""

    def __init__(self, bucket: str, started: float) -> None:
        self.bucket, self.started = bucket, started
        self.at: float | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        s3 = boto3.client("s3")
        while not self.stop.is_set() and self.at is None:
            if s3.list_objects_v2(Bucket=self.bucket, MaxKeys=1).get("KeyCount"):
                self.at = time.monotonic()
                return
            for upload in s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []):
                parts = s3.list_parts(
                    Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                )
                if parts.get("Parts"):
                    self.at = time.monotonic()
                    return
            time.sleep(0.02)

    def seconds(self) -> float | None:
        self.stop.set()
        self.thread.join(5)
        return None if self.at is None else self.at - self.started


def run_cli(home: Path, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "skyhop.cli", *args],
        capture_output=True,
        text=True,
        env=dict(os.environ, SKYHOP_HOME=str(home)),
        stdin=subprocess.DEVNULL,
        timeout=600,
    )
    return proc.returncode, proc.stdout, proc.stderr


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=8)
    parser.add_argument("--size-mib", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skyhop-first-byte-"))
    rows: list[tuple[str, int, float | None, float, int]] = []
    transcript = ""
    mp = pytest.MonkeyPatch()
    with running_moto(work) as _moto, serial_moto(work) as dynamodb:
        os.environ.update(
            {
                "SKYHOP_HOME": str(work / "functions-home"),
                "AWS_EC2_METADATA_DISABLED": "true",
                "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
            }
        )
        plane = DeployedAWS(mp)
        plane.start()
        try:
            laptop = work / "laptop"
            laptop.mkdir()
            from skyhop import remotes

            (laptop / "remotes.toml").write_text(remotes.dumps({"aws": plane.profile()}))
            s3 = boto3.client("s3")
            s3.create_bucket(Bucket="bench-src")
            body = os.urandom(int(args.size_mib * MIB))
            for n in range(args.objects):
                s3.put_object(Bucket="bench-src", Key=f"in/obj-{n:03d}.bin", Body=body)
            modes = {
                "--on aws (deployed control plane)": ["--on", "aws"],
                "--gateways local (this machine)": ["--gateways", "local", "--local"],
                # --local: with one profile and both ends in the cloud, a plain `cp -y`
                # would run on that control plane too
                "direct (this process, no gateways)": ["--local"],
            }
            for run in range(args.runs):
                for label, extra in modes.items():
                    bucket = f"bench-dst-{run}-{len(rows)}"
                    s3.create_bucket(Bucket=bucket)
                    started = time.monotonic()
                    first = FirstObject(bucket, started)
                    code, out, err = run_cli(
                        laptop, "cp", "-r", "s3://bench-src/in/", f"s3://{bucket}/out/", "-y",
                        *extra,
                    )  # fmt: skip
                    done = time.monotonic() - started
                    rows.append((label, run, first.seconds(), done, code))
                    if extra[:1] == ["--on"] and not transcript:
                        transcript = (
                            f"$ skyhop cp -r s3://bench-src/in/ s3://{bucket}/out/ --on aws -y\n"
                        )
                        transcript += err + out
        finally:
            plane.stop()
            mp.undo()
    print(transcript)
    size = args.objects * args.size_mib
    print(f"{args.objects} objects, {size:g} MiB, S3 -> S3 on moto; seconds from `skyhop cp`:")
    width = max(len(r[0]) for r in rows)
    print(f"{'mode':<{width}}  run  first byte at destination  done   exit")
    for label, run, first_s, done, code in rows:
        shown = f"{first_s:.2f}" if first_s is not None else "-"
        print(f"{label:<{width}}  {run:>3}  {shown:>25}  {done:5.2f}  {code:>4}")
    return 0 if all(r[4] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
