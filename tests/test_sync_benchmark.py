"""The listing-memory benchmark runs end to end at a small scale (20,000 keys):
a dry run plans every key (copies, skips, deletes) and stays under the limit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_listing_memory_benchmark_small(tmp_path: Path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "listing_memory.py"),
            "--keys",
            "20000",
            "--dir",
            str(tmp_path / "bench"),
            "--skip-peer",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "planned: copy 18,000, skip 2,000, delete 20; CSV rows 20,020" in out
    assert "| skyhop sync --dry-run (streamed merge)" in out
    assert "limit 300 MiB: OK" in out
