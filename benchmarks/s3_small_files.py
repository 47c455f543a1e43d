"""1,000 small files (1-64 KiB) local -> S3 on one moto server: skyhop against
`aws s3 cp --recursive` (awscli from pip) on the same endpoint, in the same run.

Prints seconds for each, the bare PUTs alone (boto3 threads in this process:
the server's own floor, which both tools pay) and the ratio skyhop/aws-cli;
exits non-zero when skyhop is slower than aws-cli (ratio > 1) or any object is
missing or differs.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

from tests.fixtures.services import running_moto


def make_files(root: Path, n: int, seed: int = 11) -> dict[str, bytes]:
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        rel = f"dir{i % 20:02d}/file-{i:05d}.bin"
        body = rng.randbytes(rng.randint(1024, 64 * 1024))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(body)
        files[rel] = body
    return files


def check(bucket: str, prefix: str, files: dict[str, bytes]) -> int:
    """Number of objects missing or different in size under bucket/prefix."""
    s3 = boto3.client("s3")
    sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            sizes[obj["Key"][len(prefix) :]] = obj["Size"]
    return sum(1 for k, v in files.items() if sizes.get(k) != len(v))


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])
        raise SystemExit(f"{cmd[0:3]} failed with {proc.returncode}")
    return elapsed


def boto3_floor(src: Path, files: dict[str, bytes], bucket: str, threads: int = 10) -> float:
    """Seconds for the bare PUTs: boto3 ``put_object`` from ``threads`` threads of this
    process, client already made, no listing, no tool start-up. Both tools pay at
    least this on the same server; what each adds on top is its own."""
    from concurrent.futures import ThreadPoolExecutor

    from botocore.config import Config

    s3 = boto3.session.Session().client("s3", config=Config(max_pool_connections=threads))
    s3.create_bucket(Bucket=bucket)
    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda rel: s3.put_object(
                    Bucket=bucket, Key=f"data/{rel}", Body=(src / rel).read_bytes()
                ),
                files,
            )
        )
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of each tool")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skyhop-bench-"))
    try:
        src = work / "src"
        files = make_files(src, args.files)
        total = sum(len(b) for b in files.values())
        with running_moto(work) as moto:
            env = dict(os.environ, SKYHOP_HOME=str(work / "home"), AWS_EC2_METADATA_DISABLED="true")
            s3 = boto3.client("s3")
            awscli = [
                sys.executable,
                "-m",
                "awscli",
                "s3",
                "cp",
                "--recursive",
                "--quiet",
                "--endpoint-url",
                moto.endpoint,
            ]
            skyhop = [sys.executable, "-m", "skyhop.cli", "cp", "-r", "-y", "-q", "--json"]
            times: dict[str, list[float]] = {"aws s3 cp": [], "skyhop cp": []}
            bad = 0
            for r in range(args.rounds):
                for name in (
                    ("aws s3 cp", "skyhop cp") if r % 2 == 0 else ("skyhop cp", "aws s3 cp")
                ):
                    bucket = f"bench-{r}-{'aws' if name.startswith('aws') else 'sky'}"
                    s3.create_bucket(Bucket=bucket)
                    cmd = (awscli if name.startswith("aws") else skyhop) + [
                        str(src),
                        f"s3://{bucket}/data/",
                    ]
                    times[name].append(timed(cmd, env))
                    bad += check(bucket, "data/", files)
            floor = min(boto3_floor(src, files, f"bench-floor-{r}") for r in range(args.rounds))
        best = {k: min(v) for k, v in times.items()}
        ratio = best["skyhop cp"] / best["aws s3 cp"]
        print(
            f"\n{args.files} files, {total / 2**20:.1f} MiB, local -> S3 (moto server), "
            f"best of {args.rounds}"
        )
        print(f"{'tool':<12} {'seconds':>9} {'files/s':>9} {'MiB/s':>8}")
        for name, secs in best.items():
            print(f"{name:<12} {secs:>9.2f} {args.files / secs:>9.1f} {total / 2**20 / secs:>8.2f}")
        print(
            f"{'bare PUTs':<12} {floor:>9.2f} {args.files / floor:>9.1f} "
            f"{total / 2**20 / floor:>8.2f}   (boto3, 10 threads, in process)"
        )
        print(
            f"{'ratio':<12} {ratio:>9.2f}   (skyhop / aws-cli; <= 1.00 means skyhop is no slower)"
        )
        print(f"objects missing or wrong size: {bad}")
        return 0 if ratio <= 1.0 and bad == 0 else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
