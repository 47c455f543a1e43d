"""Filters: glob patterns (first match wins), size and age limits, on `cp`, on
`sync` and in replication rules; malformed filters are one-line errors."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from skyhop.controlplane.filters import (
    Filter,
    check_limits,
    compile_glob,
    matches,
    parse_duration,
)
from skyhop.controlplane.listing import matches as listing_matches
from skyhop.controlplane.replication import ObjectEvent, replicate
from skyhop.errors import UsageError
from skyhop.models import ReplicationConfig, ReplicationRule, TransferOptions
from skyhop.stores.base import ObjectInfo
from tests.fixtures.cli import run_cli, tree_digest


@pytest.mark.parametrize(
    ("pattern", "key", "expected"),
    [
        ("*.txt", "a.txt", True),
        ("*.txt", "deep/dir/a.txt", True),  # no '/': matches the name at any depth
        ("*.txt", "a.txt.bak", False),
        ("sub/*", "sub/c.txt", True),
        ("sub/*", "sub/x/c.txt", False),  # '*' stops at '/'
        ("sub/**", "sub/x/c.txt", True),
        ("sub/", "sub/x/c.txt", True),  # a trailing '/' means everything below
        ("sub/*", "other/sub/c.txt", False),  # with a '/', anchored at the start
        ("/top.txt", "top.txt", True),
        ("/top.txt", "s/top.txt", False),
        ("**/x.bin", "x.bin", True),
        ("**/x.bin", "a/b/x.bin", True),
        ("f?.bin", "f1.bin", True),
        ("f?.bin", "f12.bin", False),
        ("[ab]*", "b.log", True),
        ("[!ab]*", "b.log", False),
        ("[a-c]x", "cx", True),
        ("[a\\-z]", "-", True),  # an escaped '-' is itself, not a range
        ("[a\\-z]", "z", True),
        ("[a\\-z]", "b", False),
        ("{logs,tmp}/**", "tmp/a/b", True),
        ("{logs,tmp}/**", "data/a", False),
        ("*.{jpg,png}", "p/q.png", True),
        ("a\\*b", "a*b", True),
        ("a\\*b", "axb", False),
        ("ünï*", "dir/ünïcødé", True),
    ],
)
def test_glob_semantics(pattern: str, key: str, expected: bool):
    assert bool(compile_glob(pattern).search(key)) is expected


def test_first_match_wins_excludes_then_includes():
    include, exclude = ["*.txt", "keep/**"], ["*.tmp", "secret/**"]
    assert matches("a.txt", include, exclude)
    assert matches("keep/x.tmp", include, exclude) is False  # excludes are tried first
    assert matches("secret/a.txt", include, exclude) is False
    assert matches("b.log", include, exclude) is False  # includes given: no match, skipped
    assert matches("b.log", [], exclude)  # no includes: kept unless excluded
    assert listing_matches is matches  # listing re-exports it


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "must not be empty"),
        ("[abc", "'[' is never closed"),
        ("{a,b", "'{' is never closed"),
        ("a}", "without a '{'"),
        ("x\\", "lone"),
        ("[]", "'[' is never closed"),
    ],
)
def test_malformed_patterns(pattern: str, message: str):
    with pytest.raises(UsageError, match=re.escape(message)):
        compile_glob(pattern)
    with pytest.raises(ValidationError, match=re.escape(message)):
        TransferOptions(include=[pattern])
    with pytest.raises(ValidationError, match=re.escape(message)):
        ReplicationRule(name="r", source_bucket="b", destination="/tmp/x/", exclude=[pattern])


def test_durations():
    assert parse_duration("90") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("15m") == 900
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1.5d") == 1.5 * 86400
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("250ms") == 0.25
    for bad in ["", "soon", "1x", "h1", "-5s"]:
        with pytest.raises(UsageError, match="not a duration"):
            parse_duration(bad)


def test_size_and_age_limits():
    now = 1_000_000.0
    f = Filter(min_size=10, max_size=100, min_age=60, max_age=3600, now=now)

    def info(size: int, age: float | None) -> ObjectInfo:
        return ObjectInfo(key="k", size=size, mtime=None if age is None else now - age)

    assert f.accepts("k", info(10, 60))  # limits are inclusive
    assert f.accepts("k", info(100, 3600))
    assert not f.accepts("k", info(9, 100))
    assert not f.accepts("k", info(101, 100))
    assert not f.accepts("k", info(50, 30))  # too young
    assert not f.accepts("k", info(50, 7200))  # too old
    assert f.accepts("k", info(50, None))  # no modification time: ages do not apply
    assert Filter().empty and not f.empty
    with pytest.raises(UsageError, match="larger than --max-size"):
        check_limits(5, 1, None, None)
    with pytest.raises(UsageError, match="longer than --max-age"):
        Filter(min_age=10, max_age=5)
    with pytest.raises(ValidationError, match="larger than --max-size"):
        TransferOptions(min_size=2, max_size=1)
    with pytest.raises(ValidationError, match="larger than --max-size"):
        ReplicationConfig.model_validate(
            {
                "rules": [
                    {
                        "name": "r",
                        "source_bucket": "b",
                        "destination": "/tmp/x/",
                        "min_size": 9,
                        "max_size": 1,
                    }
                ]
            }
        )


def _tree(root: Path) -> None:
    old = time.time() - 10 * 86400
    for rel, size in {
        "a.txt": 10,
        "big.txt": 5000,
        "logs/x.log": 20,
        "logs/keep.txt": 30,
        "tmp/t.txt": 40,
        "old.txt": 50,
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    os.utime(root / "old.txt", (old, old))


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_cp_with_filters(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    res = run_cli(
        "cp",
        "-r",
        str(src),
        str(dst),
        "--include",
        "*.txt",
        "--exclude",
        "tmp/**",
        "--max-size",
        "1K",
        "--max-age",
        "1d",
        "--json",
    )
    assert res.code == 0, res.stderr
    assert _files(dst) == ["a.txt", "logs/keep.txt"]
    assert (dst / "a.txt").read_bytes() == (src / "a.txt").read_bytes()
    # a cp job writes its per-object CSV report too
    with open(res.report["csv"], encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert lines[0] == "key,size,action,checksum,checksum_method,seconds,error,reason"
    assert sorted(line.split(",")[2] for line in lines[1:]) == ["copied", "copied"]


def test_sync_with_filters(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    res = run_cli("sync", str(src), str(dst), "--min-size", "25", "--min-age", "1d", "--json")
    assert res.code == 0, res.stderr
    assert _files(dst) == ["old.txt"]
    assert res.report["sync"]["excluded"] == 5
    res = run_cli("sync", str(src), str(dst), "--exclude", "logs/", "--json")
    assert res.code == 0, res.stderr
    assert _files(dst) == ["a.txt", "big.txt", "old.txt", "tmp/t.txt"]
    assert tree_digest(dst)["big.txt"] == tree_digest(src)["big.txt"]


def test_cp_dry_run_lists_filtered_objects(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src)
    res = run_cli("cp", "-r", str(src), str(dst), "--include", "logs/*", "--dry-run")
    assert res.code == 0, res.stderr
    assert "would copy   2 objects" in res.stdout
    assert "logs/keep.txt" in res.stdout and "logs/x.log" in res.stdout
    assert "a.txt" not in res.stdout.replace("would", "")
    assert not dst.exists()


def test_filters_apply_to_a_single_object_too(tmp_path: Path):
    src = tmp_path / "f.tmp"
    src.write_bytes(b"abc")
    for args in (["--exclude", "*.tmp"], ["--min-size", "1K"], ["--include", "*.txt"]):
        res = run_cli("cp", str(src), str(tmp_path / "o"), *args)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert res.code != 0 and len(lines) == 1 and "filtered out" in lines[0], res.stderr
        assert not (tmp_path / "o").exists()
    res = run_cli("cp", str(src), str(tmp_path / "o"), "--exclude", "*.tmp", "--dry-run")
    assert res.code == 0 and "would copy   0 objects" in res.stdout, res.stdout
    res = run_cli("cp", str(src), str(tmp_path / "o"), "--include", "f.*")
    assert res.code == 0, res.stderr
    assert (tmp_path / "o").read_bytes() == b"abc"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--include", "[x"], "'[' is never closed"),
        (["--min-size", "10", "--max-size", "5"], "larger than --max-size"),
        (["--max-age", "yesterday"], "not a duration"),
        (["--min-size", "lots"], "not a size"),
    ],
)
def test_bad_cp_filters_are_one_line_errors(tmp_path: Path, args: list[str], needle: str):
    src = tmp_path / "src"
    _tree(src)
    res = run_cli("cp", "-r", str(src), str(tmp_path / "dst"), *args)
    assert res.code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("skyhop: error:") and needle in lines[0]
    assert not (tmp_path / "dst").exists()


def test_replication_rule_filters(tmp_path: Path):
    src = tmp_path / "bucket" / "in"
    src.mkdir(parents=True)
    for name, size in {"small.bin": 10, "mid.bin": 100, "big.bin": 1000, "x.tmp": 100}.items():
        (src / name).write_bytes(os.urandom(size))
    dst = tmp_path / "replica"
    rule = ReplicationRule(
        name="sized",
        source_bucket="",
        prefix=str(src).lstrip("/") + "/",
        destination=str(dst) + "/",
        min_size=50,
        max_size=500,
        exclude=["*.tmp"],
    )
    events = [
        ObjectEvent(kind="created", uri=f"file://{src}/{name}", size=(src / name).stat().st_size)
        for name in ["small.bin", "mid.bin", "big.bin", "x.tmp"]
    ]
    events.append(ObjectEvent(kind="created", uri=f"file://{src}/big.bin"))  # size unknown
    outcomes = replicate([rule], events, send_request=lambda _r: None)
    by_name = [(o.source.rsplit("/", 1)[1], o.action, o.reason) for o in outcomes]
    assert by_name == [
        ("small.bin", "skipped", "size outside the rule's limits"),
        ("mid.bin", "copied", None),
        ("big.bin", "skipped", "size outside the rule's limits"),
        ("big.bin", "skipped", "size outside the rule's limits"),
    ]
    assert _files(dst) == ["mid.bin"]
