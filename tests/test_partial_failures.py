"""One bad folder fails alone (#21 item 4): a destination folder that cannot be
written to (an object large enough to go in parts) and a source folder that
cannot be read fail with their reasons; everything else is copied, the report
names both, and no upload staging is left behind.

Permissions are real: the CLI runs as ``nobody`` (``setpriv``), for whom a mode
000 source folder cannot be listed and a mode 555 destination folder cannot be
written (root could do both), so the test needs root to start it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyhop.compute.local import LocalComputeProvider
from skyhop.controlplane.service import ControlPlane
from skyhop.controlplane.sync import SyncJob
from skyhop.errors import SkyhopError, StoreError
from skyhop.models import JobState, TransferOptions, TransferRequest
from skyhop.state.sqlite import SQLiteManifest
from skyhop.stores.base import open_store
from skyhop.stores.local import LocalStore
from tests.fixtures.cli import GATEWAYS, MIB, SMALL_PARTS, run_cli

NOBODY = 65534
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def place() -> Iterator[Path]:
    """A directory ``nobody`` may use (pytest's own is root's alone)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the CLI as an unprivileged user")
    base = Path("/tmp") / f"skyhop-perm-{uuid.uuid4().hex[:10]}"
    base.mkdir(mode=0o755)
    os.chown(base, NOBODY, NOBODY)
    try:
        yield base
    finally:
        for path in base.rglob("*"):
            if path.is_dir():
                path.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def _as_nobody(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        SKYHOP_HOME=str(home),
        HOME=str(home),
        PYTHONPATH=os.pathsep.join([str(ROOT / "shared"), str(ROOT)]),
    )
    return subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        + [sys.executable, "-m", "skyhop.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        stdin=subprocess.DEVNULL,
    )


def _tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def _own(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)


@pytest.mark.parametrize("command", ["cp", "sync"])
def test_a_bad_folder_fails_alone_and_the_rest_is_copied(place: Path, command: str) -> None:
    src, dst, home = place / "src", place / "dst", place / "home"
    good = {"a.txt": b"alpha\n", "ok/b.bin": os.urandom(3000), "z.txt": b"zulu\n"}
    _tree(src, {**good, "ro/big.bin": os.urandom(6 * MIB), "unreadable/c.txt": b"hidden"})
    (dst / "ro").mkdir(parents=True)
    (dst / "ro" / "keep.txt").write_bytes(b"already here")
    home.mkdir()
    for path in (src, dst, home):
        _own(path)
    (dst / "ro").chmod(0o555)  # no writes into it: the 6 MiB object's upload cannot start
    (src / "unreadable").chmod(0o000)  # not listable

    args = ["-r"] if command == "cp" else []
    res = _as_nobody(command, *args, str(src), str(dst), "--json", *SMALL_PARTS, home=home)
    assert res.returncode == 1, res.stderr
    assert res.stdout.strip(), res.stderr
    report = json.loads(res.stdout)
    assert report["state"] == "failed"
    failures = "\n".join(report["failures"])
    assert "ro/big.bin" in failures and "permission denied" in failures, failures
    assert "unreadable/" in failures and "permission denied" in failures, failures
    assert report["objects"] == len(good)
    for rel, body in good.items():
        assert (dst / rel).read_bytes() == body
    assert (dst / "ro" / "keep.txt").read_bytes() == b"already here"
    assert not (dst / "ro" / "big.bin").exists()
    staging = [p for p in dst.rglob(".skyhop-*")] + [p for p in src.rglob(".skyhop-*")]
    assert staging == []


def test_a_read_only_folder_fails_its_objects_alone_at_default_sizes(place: Path) -> None:
    """The issue's own case, at default part sizes: a 64 MiB object into a read-only
    destination folder (its multipart upload cannot start) and a small file beside
    it (its write is refused: the object fails, not retried until the whole job is
    interrupted), after an earlier 64 MiB object whose upload started first; and a
    source folder that cannot be read. Each fails with its reason, everything else
    is copied (the earlier big one whole), and no staging is left anywhere."""
    src, dst, home = place / "src", place / "dst", place / "home"
    big = os.urandom(64 * MIB)
    good = {"a-big.bin": big, "a.txt": b"alpha\n", "ok/b.bin": os.urandom(3000)}
    bad = {"ro/big.bin": big[::-1], "ro/small.txt": b"small", "unreadable/c.txt": b"hidden"}
    _tree(src, {**good, **bad})
    (dst / "ro").mkdir(parents=True)
    home.mkdir()
    for path in (src, dst, home):
        _own(path)
    (dst / "ro").chmod(0o555)
    (src / "unreadable").chmod(0o000)

    res = _as_nobody("cp", "-r", str(src), str(dst), "--json", home=home)
    assert res.returncode == 1 and res.stdout.strip(), (res.returncode, res.stderr)
    report = json.loads(res.stdout)
    assert report["state"] == "failed"
    failures = report["failures"]
    for key in ("ro/big.bin", "ro/small.txt", "unreadable/"):
        [line] = [f for f in failures if key in f]
        assert "permission denied" in line, failures
    assert len(failures) == 3, failures
    assert report["objects"] == len(good)
    for rel, body in good.items():
        assert (dst / rel).read_bytes() == body
    assert sorted(p.name for p in (dst / "ro").iterdir()) == []
    staging = [p for p in dst.rglob(".skyhop-*")] + [p for p in src.rglob(".skyhop-*")]
    assert staging == []


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """``dst/ro``: a read-only filesystem (refused even to root; gateway processes
    run as root here, so a folder's mode cannot stop them)."""
    path = tmp_path / "dst" / "ro"
    path.mkdir(parents=True)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs: {made.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@pytest.mark.parametrize("extra", [[], GATEWAYS], ids=["direct", "gateways"])
def test_a_read_only_filesystem_fails_its_objects_alone_on_both_paths(
    tmp_path: Path, skyhop_home: Path, read_only_mount: Path, extra: list[str]
) -> None:
    """A destination folder on a read-only filesystem, at default part sizes, on the
    direct path and through gateways: a 64 MiB object (its upload cannot start) and
    a small file (its write is refused) fail with the reason, after an earlier 64
    MiB object whose upload started first; the rest is copied, nothing is staged."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    big = os.urandom(64 * MIB)
    good = {"a-big.bin": big, "a.txt": b"alpha\n", "ok/b.bin": os.urandom(3000)}
    _tree(src, {**good, "ro/big.bin": big[::-1], "ro/small.txt": b"small"})
    res = run_cli("cp", "-r", str(src), str(dst), "--json", *extra, timeout=300)
    assert res.code == 1, res.stderr
    report = res.report
    assert report["state"] == "failed"
    failures = report["failures"]
    for key in ("ro/big.bin", "ro/small.txt"):
        [line] = [f for f in failures if key in f]
        assert "read-only file system" in line, failures
    assert len(failures) == 2, failures
    assert report["objects"] == len(good)
    for rel, body in good.items():
        assert (dst / rel).read_bytes() == body
    assert list(read_only_mount.iterdir()) == []
    assert list(dst.rglob(".skyhop-*")) == []


class _FailingListing(LocalStore):
    """A local store whose listing breaks after two objects (a lost NFS mount, say):
    the upload the sync started for the second, not yet in the manifest, must not
    stay behind."""

    def list(self, prefix: str):  # type: ignore[override]
        for n, info in enumerate(super().list(prefix)):
            if n == 2 and "/src/" in "/" + prefix:
                raise StoreError("the listing broke")
            yield info


def test_a_sync_abandoned_while_listing_leaves_no_upload_behind(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"a.txt": b"a", "b-big.bin": os.urandom(6 * MIB), "c.txt": b"c"})
    cp = ControlPlane(
        manifest=SQLiteManifest(tmp_path / "m.db"),
        compute=LocalComputeProvider(),
        stores=lambda uri: _FailingListing(uri) if uri.scheme == "local" else open_store(uri),
    )
    request = TransferRequest(
        source=str(src),
        destination=str(dst),
        options=TransferOptions(recursive=True, multipart_threshold=5 * MIB, chunk_size=5 * MIB),
    )
    sync = SyncJob(cp, request, list_workers=1)  # one plain listing: list() above
    sync.begin()  # the first object is planned; the rest is listed while it copies
    with pytest.raises(SkyhopError, match="the listing broke"):
        sync.run()
    assert list(dst.rglob(".skyhop-*")) == []
    [job] = cp.manifest.list_jobs()
    assert job.state == JobState.FAILED and "the listing broke" in (job.error or "")


def test_a_copy_whose_listing_breaks_leaves_no_upload_behind(tmp_path: Path) -> None:
    """cp: the listing breaks after a multipart object's upload started and before its
    entry was flushed to the manifest; the job fails with the reason and the upload's
    staging is aborted (the undo registered where it was started)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    _tree(src, {"a.txt": b"a", "b-big.bin": os.urandom(6 * MIB), "c.txt": b"c"})
    cp = ControlPlane(
        manifest=SQLiteManifest(tmp_path / "m.db"),
        compute=LocalComputeProvider(),
        stores=lambda uri: _FailingListing(uri) if uri.scheme == "local" else open_store(uri),
    )
    request = TransferRequest(
        source=str(src),
        destination=str(dst),
        options=TransferOptions(recursive=True, multipart_threshold=5 * MIB, chunk_size=5 * MIB),
    )
    with pytest.raises(SkyhopError, match="the listing broke"):
        cp.create_job(request)
    assert list(dst.rglob(".skyhop-*")) == []
    [job] = cp.manifest.list_jobs()
    assert job.state == JobState.FAILED and "the listing broke" in (job.error or "")
