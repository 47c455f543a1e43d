"""`make demo`: a real `skyhop cp` of a ~1 GiB tree through src -> relay -> dst gateways.

Generates a sample tree (one multi-part object and a thousand small files) under
./demo-data/src, copies it local -> local through three gateway processes on
loopback, and ends with the verification summary. State goes to
./demo-data/home so the user's ~/.skyhop is left alone.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def generate(src: Path, big_mib: int, small_files: int) -> int:
    """Write the sample tree; returns its size in bytes. Reuses a complete earlier one."""
    marker = src.parent / ".src-complete"
    if marker.exists() and marker.read_text() == f"{big_mib}:{small_files}":
        return sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    marker.unlink(missing_ok=True)
    shutil.rmtree(src, ignore_errors=True)
    (src / "big").mkdir(parents=True)
    rng = random.Random(7)
    with open(src / "big" / "dataset.bin", "wb") as fh:
        for _ in range(big_mib):
            fh.write(os.urandom(1024 * 1024))
    words = [b"skyhop", b"relay", b"gateway", b"chunk", b"verified", b"overlay", b"egress"]
    for i in range(small_files):
        sub = src / "small" / f"group {i % 10:02d}" / ("ünïcode" if i % 7 == 0 else "plain")
        sub.mkdir(parents=True, exist_ok=True)
        size = rng.randint(1024, 64 * 1024) if i % 50 else 0
        body = b" ".join(rng.choice(words) for _ in range(size // 6 + 1))[:size]
        (sub / f"file {i:04d}.txt").write_bytes(body)
    marker.write_text(f"{big_mib}:{small_files}")
    return sum(p.stat().st_size for p in src.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big-mib", type=int, default=960)
    parser.add_argument("--small-files", type=int, default=1000)
    parser.add_argument("--dir", default=str(ROOT / "demo-data"))
    args = parser.parse_args()
    base = Path(args.dir)
    src, dst = base / "src", base / "dst"
    print(f"generating the sample tree in {src} ...", flush=True)
    total = generate(src, args.big_mib, args.small_files)
    print(
        f"  {total / 2**20:.0f} MiB: one {args.big_mib} MiB object, {args.small_files} small files"
    )
    shutil.rmtree(dst, ignore_errors=True)
    env = dict(os.environ, SKYHOP_HOME=str(base / "home"))
    cmd = [
        sys.executable,
        "-m",
        "skyhop.cli",
        "cp",
        "-r",
        str(src),
        str(dst),
        "--relay",
        "local",
        "-y",
    ]
    print("$ skyhop " + " ".join(cmd[3:]), flush=True)
    result = subprocess.run(cmd, env=env, check=False)
    if result.returncode != 0:
        print(f"demo failed: skyhop exited with {result.returncode}", file=sys.stderr)
        return result.returncode
    # an independent check, outside skyhop: every file byte-identical
    import filecmp

    mismatched = 0
    checked = 0
    for path in src.rglob("*"):
        if path.is_file():
            checked += 1
            other = dst / path.relative_to(src)
            if not other.is_file() or not filecmp.cmp(path, other, shallow=False):
                mismatched += 1
    print(f"independent byte comparison: {checked} files, {mismatched} mismatches")
    return 0 if mismatched == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
