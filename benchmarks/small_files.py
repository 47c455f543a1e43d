"""Many small files local -> local: skyhop (direct path and ``--gateways local``)
against rclone and cp, in the same run, interleaved (issue 21 item 13).

The tree: ``--files`` files (20,000 by default) of 0.5-4 KiB in 200 folders.
Every tool copies it into a new destination, checked afterwards key by key and
byte by byte (a run with a missing or different file counts as failed). The
table shows, per tool, the median wall seconds over ``--rounds``, files per
second, the peak RSS of the command's own process and the peak of the sum over
its process tree (the CLI plus any gateway processes, sampled every 20 ms), the
CPU seconds (user + system, of the command and the children it waited for: a
steadier figure than wall time on a shared machine) and the ratio to rclone.
skyhop's state (``SKYHOP_HOME``, its SQLite manifest) is on disk, under
``--home`` (default: a new directory in /tmp), as ``~/.skyhop`` would be.

    python -m benchmarks.small_files                      # 20,000 files, 2 rounds
    python -m benchmarks.small_files --files 5000 --rounds 3
    python -m benchmarks.small_files --tools skyhop,rclone
    python -m benchmarks.small_files --profile prof        # + py-spy flame graphs
    git archive main shared gateway_vm | tar -x -C /tmp/before
    python -m benchmarks.small_files --before /tmp/before  # + the skyhop rows of main

``--profile DIR`` also records one more run of each skyhop row under py-spy
(``.venv/bin/py-spy record``, the bench extra) into DIR/<row>.svg and a
collapsed-stack DIR/<row>.txt, not counted in the table.

Exit status 1 when a copy is incomplete or wrong.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
MiB = 1024 * 1024


def make_tree(root: Path, n: int, seed: int = 21) -> dict[str, str]:
    """``n`` files of 0.5-4 KiB under ``root``; returns key -> sha256 of the bytes."""
    rng = random.Random(seed)
    files = {}
    for i in range(n):
        rel = f"d{i % 200:03d}/f-{i:05d}.bin"
        body = rng.randbytes(rng.randint(512, 4096))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        files[rel] = hashlib.sha256(body).hexdigest()
    return files


def wrong(dst: Path, files: dict[str, str]) -> int:
    """Files missing or different under ``dst``, plus files that should not be there."""
    bad = 0
    for rel, digest in files.items():
        try:
            if hashlib.sha256((dst / rel).read_bytes()).hexdigest() != digest:
                bad += 1
        except OSError:
            bad += 1
    extra = sum(1 for p in dst.rglob("*") if p.is_file()) - len(files)
    return bad + max(extra, 0)


@dataclass
class Measured:
    seconds: float
    cpu: float  # user + system seconds of the process and the children it waited for
    rss: int  # peak RSS of the command's own process, bytes
    tree_rss: int  # peak of the sum of RSS over its process tree, bytes
    error: str


def run_measured(argv: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run ``argv``; wall seconds, peak RSS of the process (wait4) and of its tree."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        # not run from the repository: `python -m gateway_vm` would import the
        # checkout in the working directory before the one on PYTHONPATH
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
        peak_tree = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            try:
                top = psutil.Process(proc.pid)
            except psutil.Error:
                return
            while not done.is_set():
                total = 0
                try:
                    for p in [top, *top.children(recursive=True)]:
                        try:
                            total += p.memory_info().rss
                        except psutil.Error:
                            pass
                except psutil.Error:
                    break
                peak_tree = max(peak_tree, total)
                done.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
    rss = usage.ru_maxrss * 1024
    error = ""
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        error = f"exit {proc.returncode}: {lines[-1] if lines else ''}"
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(elapsed, cpu, rss, max(peak_tree, rss), error)


def skyhop(extra: list[str]) -> Callable[[Path, Path], list[str]]:
    return lambda src, dst: [
        str(BIN / "skyhop"),
        "cp",
        "-r",
        "-y",
        "-q",
        "--json",
        *extra,
        f"{src}/",
        f"{dst}/",
    ]


TOOLS: dict[str, Callable[[Path, Path], list[str]]] = {
    "skyhop": skyhop([]),
    "skyhop --gateways local": skyhop(["--gateways", "local"]),
    "rclone": lambda src, dst: ["rclone", "copy", str(src), str(dst)],
    "cp -r": lambda src, dst: ["cp", "-r", f"{src}/.", str(dst)],
}


def available(tool: str) -> bool:
    return tool != "rclone" or shutil.which("rclone") is not None


def with_before(tools: list[str], before: Path) -> dict[str, dict[str, str]]:
    """Extra rows running the skyhop rows from another checkout's ``shared/`` (the code
    before a change, measured in the same run): tool -> the environment it needs."""
    envs: dict[str, dict[str, str]] = {}
    for tool in [t for t in tools if t.startswith("skyhop")]:
        name = f"{tool} [before]"
        TOOLS[name] = TOOLS[tool]
        envs[name] = {"PYTHONPATH": f"{before / 'shared'}:{before}"}
    return envs


def profile(tool: str, src: Path, work: Path, env: dict[str, str], out: Path) -> None:
    spy = BIN / "py-spy"
    if not spy.exists():
        print("py-spy missing: pip install -e '.[bench]'", file=sys.stderr)
        return
    out.mkdir(parents=True, exist_ok=True)
    name = tool.replace(" ", "_").replace("-", "")
    for fmt, ext in (("flamegraph", "svg"), ("raw", "txt")):
        dst = work / f"prof-{name}-{ext}"
        dst.mkdir()
        argv = [str(spy), "record", "-f", fmt, "-r", "200", "-s", "-o", str(out / f"{name}.{ext}")]
        subprocess.run([*argv, "--", *TOOLS[tool](src, dst)], env=env, capture_output=True)
        shutil.rmtree(dst, ignore_errors=True)
    print(f"profile of {tool}: {out / name}.svg, {out / name}.txt", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated rows")
    parser.add_argument("--work", default="/dev/shm", help="directory for the trees (tmpfs)")
    parser.add_argument("--home", default="/tmp", help="where SKYHOP_HOME goes (disk)")
    parser.add_argument(
        "--before",
        default=None,
        metavar="DIR",
        help="also run the skyhop rows from the checkout DIR (e.g. git archive of main)",
    )
    parser.add_argument("--profile", default=None, metavar="DIR", help="py-spy each skyhop row")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    tools = [t for t in args.tools.split(",") if t]
    unknown = [t for t in tools if t not in TOOLS]
    if unknown:
        parser.error(f"unknown tool {unknown[0]!r}: choose from {', '.join(TOOLS)}")
    tools = [t for t in tools if available(t)]
    extra_env: dict[str, dict[str, str]] = {}
    if args.before:
        extra_env = with_before(tools, Path(args.before))
        tools += list(extra_env)
    work = Path(tempfile.mkdtemp(prefix="skyhop-small-", dir=args.work))
    home: Path | None = None
    try:
        src = work / "src"
        files = make_tree(src, args.files)
        total = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        home = Path(tempfile.mkdtemp(prefix="skyhop-small-home-", dir=args.home))
        env = dict(os.environ, SKYHOP_HOME=str(home))
        runs: dict[str, list[Measured]] = {t: [] for t in tools}
        failed: dict[str, int] = {}
        for r in range(args.rounds):
            shift = r % len(tools)
            for tool in tools[shift:] + tools[:shift]:
                slug = tool.replace(" ", "_").replace("[", "").replace("]", "")
                dst = work / f"dst-{r}-{slug}"
                dst.mkdir()
                # a home per row: a checkout's manifest is its own (its models may differ)
                tool_env = dict(env, SKYHOP_HOME=str(home / slug), **extra_env.get(tool, {}))
                m = run_measured(TOOLS[tool](src, dst), tool_env, work / "log.txt")
                bad = 0 if m.error else wrong(dst, files)
                shutil.rmtree(dst, ignore_errors=True)
                if m.error or bad:
                    failed[tool] = failed.get(tool, 0) + 1
                    print(f"  {tool}: FAILED ({bad} files wrong) {m.error}", file=sys.stderr)
                    continue
                runs[tool].append(m)
                print(f"  {tool:<24} {m.seconds:7.2f} s", file=sys.stderr)
        if args.profile:
            for tool in tools:
                if tool.startswith("skyhop"):
                    profile(tool, src, work, env, Path(args.profile))
        ref = statistics.median(m.seconds for m in runs["rclone"]) if runs.get("rclone") else None
        print(
            f"\n{args.files} files of 0.5-4 KiB ({total / MiB:.1f} MiB) local -> local, "
            f"median of {args.rounds} interleaved rounds"
        )
        print("")
        print(
            "| tool | seconds (runs) | files/s | CPU seconds | peak RSS "
            "| peak RSS, process tree | / rclone |"
        )
        print("|---|---|---|---|---|---|---|")
        for tool in tools:
            ms = runs[tool]
            if not ms:
                print(f"| {tool} | failed | | | | | |")
                continue
            secs = statistics.median(m.seconds for m in ms)
            each = "/".join(f"{m.seconds:.2f}" for m in ms)
            rss = max(m.rss for m in ms) / MiB
            tree = max(m.tree_rss for m in ms) / MiB
            cpu = statistics.median(m.cpu for m in ms)
            ratio = f"{secs / ref:.2f}" if ref else "n/a"
            print(
                f"| {tool} | {secs:.2f} ({each}) | {args.files / secs:,.0f} | {cpu:.2f} | "
                f"{rss:.0f} MiB | {tree:.0f} MiB | {ratio} |"
            )
        if failed:
            print(f"failed runs: {failed}")
        return 1 if failed else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if home is not None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
