"""`skyhop sync` on the local store: the real CLI with real gateway processes, and
the merge / comparison logic it is built on.

Every end-to-end test checks the bytes at the destination and the report."""

from __future__ import annotations

import csv
import json
import os
import threading
import time
from pathlib import Path

import pytest

from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane.planning import default_planner
from skyhop.controlplane.service import ControlPlane
from skyhop.controlplane.sync import SyncJob, compare, merge, relative
from skyhop.errors import StoreError
from skyhop.models import CompareMode, JobState, TransferOptions, TransferRequest
from skyhop.state.sqlite import SQLiteManifest
from skyhop.stores.base import ObjectInfo
from skyhop.stores.local import LocalStore
from skyhop.uri import StoreURI, parse_uri
from tests.fixtures.cli import (
    SMALL_PARTS,
    Result,
    run_cli,
    tree_digest,
    wait_no_gateways,
)

# ---------------------------------------------------------------- helpers


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def _csv_rows(report: dict) -> list[dict[str, str]]:
    with open(report["csv"], newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _actions(report: dict, prefix: Path) -> dict[str, str]:
    """relative key -> action, from the report's CSV."""
    base = str(prefix).lstrip("/") + "/"
    return {row["key"].removeprefix(base): row["action"] for row in _csv_rows(report)}


def _sync(*args: str) -> Result:
    return run_cli("sync", *args, "--json")


def _one_line_error(res: Result, *needles: str) -> None:
    assert res.code != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("skyhop: error:"), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]


FILES = {
    "a.txt": b"alpha\n",
    "b/c.bin": os.urandom(3000),
    "b/d/e.bin": os.urandom(70),
    "big/multi.bin": os.urandom(11 * 1024 * 1024 + 7),  # three 5 MiB parts
    "empty": b"",
}


# ---------------------------------------------------------------- end to end


def test_sync_then_second_sync_moves_nothing(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, FILES)
    first = _sync(str(src), str(dst), *SMALL_PARTS)
    assert first.code == 0, first.stderr
    report = first.report
    assert report["state"] == "succeeded"
    assert report["objects"] == len(FILES)
    assert report["sync"]["to_copy"] == len(FILES) and report["sync"]["skipped"] == 0
    assert tree_digest(dst) == tree_digest(src)
    rows = _csv_rows(report)
    assert {r["action"] for r in rows} == {"copied"}
    assert all(r["checksum"] and r["checksum_method"] and r["seconds"] for r in rows)
    assert wait_no_gateways(report["job_id"]) == []

    before = {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()}
    second = _sync(str(src), str(dst), *SMALL_PARTS)
    assert second.code == 0, second.stderr
    again = second.report
    assert again["objects"] == 0 and again["bytes"] == 0
    assert again["sync"]["skipped"] == len(FILES) and again["sync"]["to_copy"] == 0
    assert set(_actions(again, dst).values()) == {"skipped"}
    # nothing was rewritten
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*") if p.is_file()} == before


def test_one_changed_object_moves_only_that_object(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, FILES)
    assert _sync(str(src), str(dst), *SMALL_PARTS).code == 0
    (src / "b" / "c.bin").write_bytes(os.urandom(3001))  # size changed
    newer = src / "a.txt"  # same size, modified later than the destination copy
    newer.write_bytes(b"ALPHA\n")
    later = time.time() + 60
    os.utime(newer, (later, later))
    res = _sync(str(src), str(dst), *SMALL_PARTS)
    assert res.code == 0, res.stderr
    actions = _actions(res.report, dst)
    assert actions == {
        "a.txt": "copied",
        "b/c.bin": "copied",
        "b/d/e.bin": "skipped",
        "big/multi.bin": "skipped",
        "empty": "skipped",
    }
    assert res.report["objects"] == 2
    assert tree_digest(dst) == tree_digest(src)

    # --size-only does not see a same-size change; the default does
    newer.write_bytes(b"alpha\n")
    os.utime(newer, (later + 60, later + 60))
    res = _sync(str(src), str(dst), "--size-only")
    assert res.code == 0 and res.report["objects"] == 0
    assert (dst / "a.txt").read_bytes() == b"ALPHA\n"
    # --update keeps a destination object that is newer than the source's
    os.utime(dst / "a.txt", (later + 3600, later + 3600))
    res = _sync(str(src), str(dst), "--update")
    assert res.code == 0 and res.report["objects"] == 0
    assert (dst / "a.txt").read_bytes() == b"ALPHA\n"


def test_dry_run_changes_nothing_and_prints_every_kind(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"keep.txt": b"same", "new.txt": b"new", "changed.txt": b"v2 longer"})
    _tree(dst, {"keep.txt": b"same", "changed.txt": b"v1", "stale.txt": b"old"})
    _tree(src, {"older.txt": b"v1"})
    _tree(dst, {"older.txt": b"v2"})
    for side in (src, dst):  # a copy keeps the source's time: equal times are unchanged
        os.utime(side / "keep.txt", (1_000_000, 1_000_000))
    os.utime(src / "older.txt", (1_000_000, 1_000_000))  # replaced by an older version
    before = tree_digest(dst)
    res = run_cli("sync", str(src), str(dst), "--delete", "--dry-run")
    assert res.code == 0, res.stderr
    out = res.stdout
    # keys as the user reads them: relative to the destination named on the first line
    lines = out.splitlines()
    assert lines[0] == f"dry run: {src} -> {dst} (keys below it)"
    assert "copy   changed.txt  (9 bytes, size differs)" in lines
    assert "copy   new.txt  (3 bytes, missing at the destination)" in lines
    assert "skip   keep.txt  (4 bytes, unchanged)" in lines
    assert "copy   older.txt  (2 bytes, modification time differs)" in lines
    assert "delete stale.txt  (3 bytes, absent at the source)" in lines
    assert not any(str(dst).lstrip("/") in line for line in lines[1:6])
    assert "would copy   3 objects" in out
    assert "would skip   1 unchanged objects" in out
    assert "would delete 1 objects" in out
    assert "estimated cost $" in out
    assert tree_digest(dst) == before
    assert (
        not (skyhop_home / "manifest.db").exists()
        or not SQLiteManifest(skyhop_home / "manifest.db").list_jobs()
    )
    # the JSON form, and the CSV listing every planned action
    res = run_cli("sync", str(src), str(dst), "--delete", "--dry-run", "--json")
    assert res.code == 0, res.stderr
    report = res.report
    assert report["sync"]["dry_run"] is True
    assert report["plan"]["cost"] is not None
    assert _actions(report, dst) == {
        "changed.txt": "copy",
        "keep.txt": "skip",
        "new.txt": "copy",
        "older.txt": "copy",
        "stale.txt": "delete",
    }
    assert tree_digest(dst) == before


def test_dry_run_prints_first_n_then_a_count(tmp_path: Path):
    src = tmp_path / "src"
    _tree(src, {f"f{i:02d}": b"x" for i in range(12)})
    res = run_cli("sync", str(src), str(tmp_path / "dst"), "--dry-run", "--show", "5")
    assert res.code == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if line.startswith("copy ")]
    assert len(lines) == 5
    assert "... and 7 more" in res.stdout
    assert not (tmp_path / "dst").exists()


def test_delete_runs_after_verification(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"a": b"1", "sub/b": b"2"})
    _tree(dst, {"gone1": b"x", "sub/gone2": b"y", "sub/b": b"2", "keep.log": b"z"})
    stamp = (src / "sub" / "b").stat().st_mtime_ns
    os.utime(dst / "sub" / "b", ns=(stamp, stamp))  # as a copy keeps it
    res = _sync(str(src), str(dst), "--delete", "--exclude", "*.log")
    assert res.code == 0, res.stderr
    report = res.report
    assert report["sync"]["deleted"] == 2 and report["sync"]["to_delete"] == 2
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()) == [
        "a",
        "keep.log",  # excluded objects are never deleted
        "sub/b",
    ]
    actions = _actions(report, dst)
    assert actions["gone1"] == "deleted" and actions["sub/gone2"] == "deleted"
    assert actions["a"] == "copied" and actions["sub/b"] == "skipped"
    # without --delete, extra destination objects stay
    (dst / "extra").write_bytes(b"e")
    res = _sync(str(src), str(dst))
    assert res.code == 0 and (dst / "extra").exists()


def test_max_delete_refuses_and_writes_nothing(tmp_path: Path, skyhop_home: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"new.bin": os.urandom(6 * 1024 * 1024), "small": b"s"})
    _tree(dst, {f"old{i}": b"o" for i in range(3)})
    before = tree_digest(dst)
    res = run_cli("sync", str(src), str(dst), "--delete", "--max-delete", "2", *SMALL_PARTS)
    _one_line_error(res, "--max-delete 2", "would delete 3 objects", "refusing")
    assert res.code == 2
    assert tree_digest(dst) == before  # nothing copied, nothing deleted
    assert not list(dst.glob(".skyhop-*"))  # no multipart upload was started
    reports = skyhop_home / "reports"
    assert not reports.exists() or not list(reports.iterdir())
    jobs = SQLiteManifest(skyhop_home / "manifest.db").list_jobs()
    assert [j.state for j in jobs] == [JobState.FAILED]
    # a dry run says that the real sync would refuse
    res = run_cli("sync", str(src), str(dst), "--delete", "--max-delete", "2", "--dry-run")
    assert res.code == 0, res.stderr
    assert "refused      3 deletes planned, more than --max-delete 2" in res.stdout
    assert tree_digest(dst) == before
    # within the limit it runs
    res = _sync(str(src), str(dst), "--delete", "--max-delete", "3", *SMALL_PARTS)
    assert res.code == 0, res.stderr
    assert tree_digest(dst) == tree_digest(src)


def test_failed_copy_means_no_deletes(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"a.bin": os.urandom(1000)})
    _tree(dst, {"stale": b"s"})
    (dst / "a.bin").mkdir()  # a directory where the file goes: its write fails for good
    # the copy fails, so no delete may run
    res = run_cli("sync", str(src), str(dst), "--delete", "--json")
    assert res.code == 1, res.stderr
    report = res.report
    assert report["state"] == "failed"
    assert report["sync"]["deleted"] == 0
    assert "none of the 1 planned deletes ran" in report["sync"]["deletes_skipped"]
    assert (dst / "stale").read_bytes() == b"s"
    failed = [r for r in _csv_rows(report) if r["action"] == "failed"]
    assert failed and failed[0]["key"].endswith("/a.bin") and failed[0]["error"]
    assert any("a.bin" in f for f in report["failures"])


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--include", "[abc"], ["--include", "'[' is never closed"]),
        (["--exclude", "{a,b"], ["--exclude", "'{' is never closed"]),
        (["--min-size", "2K", "--max-size", "1K"], ["--min-size", "larger than --max-size"]),
        (["--min-age", "2d", "--max-age", "1d"], ["--min-age", "longer than --max-age"]),
        (["--min-age", "soon"], ["not a duration"]),
        (["--max-delete", "3"], ["--max-delete only makes sense with --delete"]),
        (["--max-delete", "-1", "--delete"], ["max_delete"]),
        (["--checksum", "--update"], ["not allowed with argument"]),
    ],
)
def test_bad_sync_options_are_one_line_errors(tmp_path: Path, args: list[str], needles: list[str]):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"a": b"1"})
    res = run_cli("sync", str(src), str(dst), *args)
    _one_line_error(res, *needles)
    assert not dst.exists()


def test_sync_source_errors(tmp_path: Path):
    src = tmp_path / "src"
    _tree(src, {"one.txt": b"1", "sub/two.txt": b"2"})
    res = run_cli("sync", str(tmp_path / "nope"), str(tmp_path / "dst"))
    _one_line_error(res, "source not found")
    res = run_cli("sync", str(src / "one.txt"), str(tmp_path / "dst"))
    _one_line_error(res, "is one object", "skyhop cp")
    res = run_cli("sync", str(src), str(src / "sub"))
    _one_line_error(res, "overlap")
    (tmp_path / "file").write_bytes(b"f")
    res = run_cli("sync", str(src), str(tmp_path / "file"))
    _one_line_error(res, "is a file, not a directory")
    assert not (tmp_path / "dst").exists()


def test_symlinks_cannot_make_source_and_destination_overlap(tmp_path: Path):
    """The local store follows links on the way to a key: a destination that is a
    link into (or onto) the source, or the other way round, is refused before
    anything is written or deleted."""
    src = tmp_path / "a"
    _tree(src, {"f1": b"1", "x/f2": b"2", "backup/old": b"3"})
    (tmp_path / "up").symlink_to(".")  # the destination leads to the source's parent
    (tmp_path / "into").symlink_to("a/backup")  # the destination leads inside the source
    (tmp_path / "srclink").symlink_to("a/x")  # the source leads inside the destination
    before = tree_digest(src)
    for args in (
        [str(src), str(tmp_path / "up")],
        [str(src), str(tmp_path / "into")],
        [str(tmp_path / "srclink"), str(src)],
    ):
        res = run_cli("sync", *args, "--delete")
        _one_line_error(res, "overlap")
        assert tree_digest(src) == before


def test_names_that_are_not_utf8_are_left_alone_on_both_sides(tmp_path: Path):
    """No object key can hold them: such a file is neither copied nor deleted, and
    the rest of the tree moves."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"a.txt": b"a"})
    _tree(dst, {"old.txt": b"old"})
    bad = os.fsdecode(b"bad\xffname")
    (src / bad).write_bytes(b"b")
    (dst / bad).write_bytes(b"keep me")
    res = run_cli("sync", str(src), str(dst), "--delete")
    assert res.code == 0, res.stderr
    assert "not valid UTF-8" in res.stderr and "Traceback" not in res.stderr
    assert (dst / "a.txt").read_bytes() == b"a" and not (dst / "old.txt").exists()
    assert (dst / bad).read_bytes() == b"keep me"
    assert sorted(os.listdir(dst)) == sorted(["a.txt", bad])


# ---------------------------------------------------------------- in process


class _BlockingStore(LocalStore):
    """A local store whose one-level listing of the source stops after ``pause_after``
    objects until ``release`` is set: proves that copying starts before the listing ends."""

    pause_after = 3
    release = threading.Event()

    def list_delimited(self, prefix: str):  # type: ignore[override]
        for n, entry in enumerate(super().list_delimited(prefix)):
            if n == self.pause_after and "/src/" in prefix:
                assert self.release.wait(60), "copying did not start before the listing ended"
            yield entry


def test_copying_overlaps_the_listing(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    files = {f"f{i:03d}": os.urandom(100 + i) for i in range(8)}
    _tree(src, files)
    _BlockingStore.release = threading.Event()

    def stores(uri: StoreURI) -> LocalStore:
        return _BlockingStore(uri)

    cp = ControlPlane(
        manifest=SQLiteManifest(tmp_path / "m.db"),
        compute=LocalComputeProvider(),
        planner=default_planner,
        stores=stores,
    )
    request = TransferRequest(
        source=str(src), destination=str(dst), options=TransferOptions(recursive=True)
    )
    sync = SyncJob(cp, request)
    job = sync.begin()
    assert not job.listing_complete and job.objects_total >= 1
    # the estimate shown now covers what was listed so far, and says so (#21 item 16)
    assert job.plan is not None and job.plan.bytes < sum(len(b) for b in files.values())
    assert any("first" in note and "listing goes on" in note for note in job.plan.notes)

    def release_when_copied() -> None:  # the first copy lands while the listing waits
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (dst / "f000").exists():
            time.sleep(0.05)
        _BlockingStore.release.set()

    threading.Thread(target=release_when_copied, daemon=True).start()
    report = sync.run()
    assert report.state == JobState.SUCCEEDED, report.failures
    assert report.objects == len(files)
    assert tree_digest(dst) == tree_digest(src)
    # the report's estimate is the whole sync's
    assert report.plan is not None and report.plan.bytes == sum(len(b) for b in files.values())


# ---------------------------------------------------------------- units


def _info(key: str, size: int = 1, mtime: float | None = 100.0, **sums: str) -> ObjectInfo:
    return ObjectInfo(key=key, size=size, mtime=mtime, checksums=sums)


def test_compare_modes():
    a, b = _info("k", 5, 200.0, md5="aa"), _info("k", 5, 100.0, md5="aa")
    assert compare(a, b, CompareMode.SIZE_MTIME, 1.0)[:2] == (True, "newer at the source")
    assert compare(b, a, CompareMode.SIZE_MTIME, 1.0)[0] is False
    assert compare(a, b, CompareMode.CHECKSUM, 1.0)[:3] == (False, "unchanged", "md5")
    c = _info("k", 5, 50.0, md5="bb")
    assert compare(c, b, CompareMode.CHECKSUM, 1.0)[:3] == (True, "md5 differs", "md5")
    # no comparable checksum: checksum mode falls back to size and time
    assert compare(_info("k", 5, 200.0), b, CompareMode.CHECKSUM, 1.0)[2] == "size+mtime"
    # crc32c wins over md5 and is compared however each side writes it
    d = _info("k", 5, 1.0, crc32c="0000002a", md5="x")
    e = _info("k", 5, 1.0, crc32c="AAAAKg==", md5="y")
    assert compare(d, e, CompareMode.CHECKSUM, 1.0)[:3] == (False, "unchanged", "crc32c")
    assert compare(a, b, CompareMode.SIZE, 1.0)[0] is False
    assert compare(_info("k", 6), b, CompareMode.SIZE, 1.0)[:2] == (True, "size differs")
    # update: a newer destination wins even when the sizes differ
    assert compare(_info("k", 9, 50.0), b, CompareMode.UPDATE, 1.0)[0] is False
    assert compare(_info("k", 9, 500.0), b, CompareMode.UPDATE, 1.0)[0] is True
    # within the modify window, times are equal
    assert compare(_info("k", 5, 100.5), b, CompareMode.SIZE_MTIME, 1.0)[0] is False


def test_kept_modification_times_compare_for_equality():
    def kept(mtime: float, precision: float = 1e-6, size: int = 5) -> ObjectInfo:
        return ObjectInfo(key="k", size=size, mtime=mtime, mtime_precision=precision)

    dst = kept(100.0)
    # an edit a moment later, or an older version: both differ
    assert compare(kept(100.2), dst, CompareMode.SIZE_MTIME)[:2] == (
        True,
        "modification time differs",
    )
    assert compare(kept(40.0), dst, CompareMode.SIZE_MTIME)[0] is True
    assert compare(kept(100.0000004), dst, CompareMode.SIZE_MTIME)[:2] == (False, "unchanged")
    # the coarser precision of the two decides (gsutil keeps whole seconds)
    assert compare(kept(100.6), kept(100.0, 1.0), CompareMode.SIZE_MTIME)[0] is False
    # a destination with only its write time: the source must be newer by 1 s
    written = _info("k", 5, 100.0)
    assert compare(kept(100.2), written, CompareMode.SIZE_MTIME)[0] is False
    assert compare(kept(40.0), written, CompareMode.SIZE_MTIME)[0] is False
    assert compare(kept(101.5), written, CompareMode.SIZE_MTIME)[:2] == (
        True,
        "newer at the source",
    )
    # an explicit window wins
    assert compare(kept(100.2), dst, CompareMode.SIZE_MTIME, 0.5)[0] is False
    # --update still keeps a destination newer than the source
    assert compare(kept(40.0), dst, CompareMode.UPDATE)[0] is False
    assert compare(kept(100.2), dst, CompareMode.UPDATE)[0] is True


def test_kept_time_forms_of_rclone_and_gsutil():
    from skyhop.stores import mtime

    stamp = 1_700_000_000.25
    assert mtime.unix_text(stamp) == "1700000000.250000000"
    assert mtime.rfc3339_text(stamp) == "2023-11-14T22:13:20.250000000Z"
    for text in (
        "1700000000.250000000",
        "2023-11-14T22:13:20.25Z",
        "2023-11-14T22:13:20.250000000Z",
        "2023-11-14T23:13:20.250000000+01:00",
    ):
        assert mtime.parse(text) == pytest.approx(stamp, abs=1e-6), text
    assert mtime.parse("yesterday") is None and mtime.parse("nan") is None
    assert mtime.kept({"Mtime": "1700000000.25", "owner": "a"}) == (stamp, 1e-6, {"owner": "a"})
    assert mtime.kept({"goog-reserved-file-mtime": "1700000000"}) == (1_700_000_000.0, 1.0, {})
    assert mtime.kept({"mtime": "not a time"}) == (None, None, {"mtime": "not a time"})


def _rel(keys: list[str], prefix: str = "p/"):
    return relative(iter([_info(prefix + k) for k in keys]), prefix, "test")


def test_merge_joins_in_byte_order_and_skips_markers():
    src = _rel([".skyhop-uploads/x", "a", "a-c", "a/", "a/b", "z", "ü"])
    dst = _rel(["a/b", "a0", "z", "é"])
    got = [(rel, s is not None, d is not None) for rel, s, d in merge(src, dst)]
    assert got == [
        ("a", True, False),
        ("a-c", True, False),
        ("a/b", True, True),
        ("a0", False, True),
        ("z", True, True),
        ("é", False, True),
        ("ü", True, False),
    ]


def test_unordered_listing_is_refused():
    with pytest.raises(StoreError, match="not in key order"):
        list(merge(_rel(["b", "a"]), _rel([])))
    with pytest.raises(StoreError, match="not in key order"):
        list(merge(_rel(["a"]), _rel(["x", "x"])))


def test_sync_plan_counts(tmp_path: Path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"a": b"1", "b": b"22", "c.tmp": b"t"})
    _tree(dst, {"b": b"22", "d": b"4"})
    os.utime(src / "b", (1, 1))
    os.utime(dst / "b", (1, 1))
    cp = ControlPlane(manifest=SQLiteManifest(tmp_path / "m.db"), compute=LocalComputeProvider())
    request = TransferRequest(
        source=str(src),
        destination=str(dst),
        options=TransferOptions(recursive=True, delete=True, exclude=["*.tmp"], dry_run=True),
    )
    sync = SyncJob(cp, request)
    actions = [(p.action, p.rel) for p in sync.plan.actions()]
    assert actions == [("copy", "a"), ("skip", "b"), ("delete", "d")]
    s = sync.summary
    assert (s.to_copy, s.skipped, s.to_delete, s.excluded) == (1, 1, 1, 1)
    assert (s.bytes_to_copy, s.bytes_skipped, s.bytes_to_delete) == (1, 2, 1)
    # a dry run in process: a report, no job, nothing at the destination touched
    report = SyncJob(cp, request).dry_run(None)
    assert report.sync is not None and report.sync.dry_run
    assert (
        json.loads(Path(report.csv or "").with_suffix(".json").read_text())["sync"]["to_copy"] == 1
    )
    assert cp.manifest.list_jobs() == []
    assert (dst / "d").exists()
    assert parse_uri(str(dst)).key.endswith("dst")
