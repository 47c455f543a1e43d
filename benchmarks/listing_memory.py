"""Peak memory of `skyhop sync --dry-run` over a million keys on the local store.

Generates (once, then reuses) a source tree of ``--keys`` empty files spread over
directories of 1,000, and a destination holding every 10th of them plus one
extra file per directory, so the dry run plans every kind of action: copies
(90 %), skips (10 %) and deletes (``--delete``). Then runs, each in a fresh
process whose peak RSS is read with ``getrusage``:

* ``skyhop sync --dry-run --delete``: both listings streamed in parallel over
  prefixes and merged in key order, every action written to the report CSV,
  the first 20 printed;
* the peer: the same comparison done the obvious way, both listings loaded
  into dicts first (what the merge-join avoids);
* the floor: the interpreter with skyhop's CLI imported.

Prints a table and exits 1 when the streamed dry run goes over ``--limit-mib``
(300 MiB by default)::

    python benchmarks/listing_memory.py                 # 1,000,000 keys
    python benchmarks/listing_memory.py --keys 20000    # quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PER_DIR = 1000

# Runs a command as a child and prints its peak RSS (KiB) and wall time as JSON.
_MEASURE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
print(json.dumps({
    "code": proc.returncode,
    "seconds": time.monotonic() - started,
    "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
    "stdout": proc.stdout[-4000:],
    "stderr": proc.stderr[-2000:],
}))
"""

# The peer: both listings in memory, then compared.
_MATERIALIZED = """
import sys
from skyhop.stores.local import LocalStore
from skyhop.uri import parse_uri
src, dst = sys.argv[1], sys.argv[2]
store = LocalStore(parse_uri("/"))
def listing(root):
    prefix = root.lstrip("/") + "/"
    return {i.key[len(prefix):]: i for i in store.list(prefix)}
a, b = listing(src), listing(dst)
copy = sum(1 for k, i in a.items() if k not in b or b[k].size != i.size)
delete = sum(1 for k in b if k not in a)
print(len(a), len(b), copy, delete)
"""


def _touch_tree(root: Path, names: list[tuple[int, str]]) -> None:
    made: set[int] = set()
    for d, name in names:
        directory = root / f"d{d:04d}"
        if d not in made:
            directory.mkdir(parents=True, exist_ok=True)
            made.add(d)
        os.close(os.open(directory / name, os.O_CREAT | os.O_WRONLY, 0o644))


def generate(base: Path, keys: int) -> tuple[Path, Path]:
    """The source and destination trees (reused when already complete)."""
    src, dst = base / "src", base / "dst"
    marker = base / ".complete"
    if marker.exists() and marker.read_text() == str(keys):
        return src, dst
    marker.unlink(missing_ok=True)
    shutil.rmtree(src, ignore_errors=True)
    shutil.rmtree(dst, ignore_errors=True)
    all_keys = [(i // PER_DIR, f"f{i % PER_DIR:04d}") for i in range(keys)]
    _touch_tree(src, all_keys)
    extra = [(d, "zz-only-at-destination") for d in range(-(-keys // PER_DIR))]
    kept = [k for n, k in enumerate(all_keys) if n % 10 == 0]
    _touch_tree(dst, kept + extra)
    for d, name in kept:  # as a previous sync left them: the source's mtime, so skipped
        stat = os.stat(src / f"d{d:04d}" / name)
        os.utime(dst / f"d{d:04d}" / name, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    marker.write_text(str(keys))
    return src, dst


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, env=env
    )
    if out.returncode != 0:
        raise SystemExit(f"measuring {cmd[:3]} failed: {out.stderr}")
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="where to generate (default: a temp dir)")
    parser.add_argument("--limit-mib", type=float, default=300.0)
    parser.add_argument("--skip-peer", action="store_true", help="skip the in-memory peer")
    args = parser.parse_args()

    base = Path(args.dir) if args.dir else Path(tempfile.gettempdir()) / "skyhop-listing-memory"
    started = time.monotonic()
    print(f"generating {args.keys:,} keys under {base} ...", flush=True)
    src, dst = generate(base, args.keys)
    print(f"  ready in {time.monotonic() - started:.1f} s", flush=True)
    env = dict(os.environ, SKYHOP_HOME=str(base / "home"))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "shared"), str(ROOT), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)

    rows: list[tuple[str, dict]] = []
    sync = measure(
        [
            sys.executable,
            "-m",
            "skyhop.cli",
            "sync",
            str(src),
            str(dst),
            "--dry-run",
            "--delete",
            "--json",
        ],
        env,
    )
    if sync["code"] != 0:
        print(sync["stderr"], file=sys.stderr)
        return 2
    report = json.loads(sync["stdout"])
    rows.append(("skyhop sync --dry-run (streamed merge)", sync))
    if not args.skip_peer:
        rows.append(
            (
                "peer: both listings in dicts",
                measure([sys.executable, "-c", _MATERIALIZED, str(src), str(dst)], env),
            )
        )
    rows.append(
        (
            "floor: python + skyhop.cli imported",
            measure([sys.executable, "-c", "import skyhop.cli"], env),
        )
    )

    s = report["sync"]
    with open(report["csv"], encoding="utf-8") as fh:
        csv_rows = sum(1 for _ in fh) - 1
    print()
    print(f"sync --dry-run over {args.keys:,} source keys on the local store")
    print(
        f"  planned: copy {s['to_copy']:,}, skip {s['skipped']:,}, delete {s['to_delete']:,}; "
        f"CSV rows {csv_rows:,}"
    )
    print()
    print(f"| {'case':<40} | {'seconds':>8} | {'keys/s':>9} | {'peak RSS MiB':>12} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 11}|{'-' * 14}|")
    for name, m in rows:
        rate = args.keys / m["seconds"] if "floor" not in name and m["seconds"] else 0
        print(
            f"| {name:<40} | {m['seconds']:>8.1f} | {rate:>9,.0f} | {m['maxrss_kib'] / 1024:>12.1f} |"
        )
    peak = sync["maxrss_kib"] / 1024
    verdict = "OK" if peak <= args.limit_mib else "OVER"
    print()
    print(f"streamed dry run peak {peak:.1f} MiB, limit {args.limit_mib:.0f} MiB: {verdict}")
    ok = peak <= args.limit_mib and s["to_copy"] + s["skipped"] == args.keys
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
