"""benchmarks/manifest_throughput.py keeps working: a small run on SQLite (the
emulator-backed stores run in the benchmark itself, not in CI)."""

from __future__ import annotations

from benchmarks.manifest_throughput import measure, table


def test_the_benchmark_counts_round_trips_per_transition():
    result = measure("sqlite", chunks=200, sample=20, workers=2)
    assert result.trips == 1.0  # one conditional UPDATE per transition
    assert result.duplicate_trips == 1  # a duplicate event is one UPDATE that changes nothing
    assert result.rate_1 > 0 and result.rate_n > 0
    out = table([result], 200, 2)
    assert "sqlite" in out and "statements" in out
