"""Trust boundaries on the local machine (issue #19, items 4-7): a hostile
destination tree, file modes, the privacy of SKYHOP_HOME and its secrets, and
key names that hold terminal escapes. The copies run the real CLI with real
gateway processes on loopback."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from skyhop.errors import StoreError
from skyhop.stores.local import LocalStore
from skyhop.stores.localfs import SymlinkRefused
from skyhop.uri import parse_uri
from tests.fixtures.cli import GATEWAYS, MIB, SMALL_PARTS, run_cli

#: both data paths: the default (direct, in the CLI process) and local gateway processes
PATHS = [pytest.param([], id="direct"), pytest.param(GATEWAYS, id="gateways")]


def key(path: Path) -> str:
    return str(path).lstrip("/")


# ---------------------------------------------------------------- 4: symlinks in the destination


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "passwd").write_bytes(b"root:x:0:0\n")
    return victim


@pytest.mark.parametrize("path", PATHS)
def test_cp_never_writes_through_a_symlink_below_the_destination(
    tmp_path: Path, victim: Path, path: list[str]
):
    """``dst/sub -> victim``: the objects under ``sub`` (one whole, one multipart)
    fail with the reason; nothing in ``victim`` changes; the rest is copied."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "passwd").write_bytes(b"pwned\n")
    (src / "sub" / "big.bin").write_bytes(os.urandom(11 * MIB))
    (src / "ok.txt").write_bytes(b"fine")
    (src / "deeper").mkdir()
    (src / "deeper" / "also.txt").write_bytes(b"also fine")
    dst.mkdir()
    (dst / "sub").symlink_to(victim)
    res = run_cli("cp", "-r", str(src), str(dst), "--json", *SMALL_PARTS, *path)
    assert res.code == 1 and "Traceback" not in res.stderr, res.stderr
    assert (victim / "passwd").read_bytes() == b"root:x:0:0\n"
    assert sorted(p.name for p in victim.iterdir()) == ["passwd"]  # no part, no staging
    assert (dst / "ok.txt").read_bytes() == b"fine"
    assert (dst / "deeper" / "also.txt").read_bytes() == b"also fine"
    assert res.report["objects_failed"] == 2
    failures = res.report["failures"]
    assert len(failures) == 2 and all("symbolic link" in f for f in failures), failures


def test_a_destination_root_that_is_a_link_is_followed(tmp_path: Path):
    """The root itself is the user's choice: ``cp -r src link`` writes where it leads."""
    src, real = tmp_path / "src", tmp_path / "real"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f.txt").write_bytes(b"x")
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    res = run_cli("cp", "-r", str(src), str(tmp_path / "link"), "--json")
    assert res.code == 0, res.stderr
    assert (real / "a" / "f.txt").read_bytes() == b"x"


def test_store_refuses_links_in_every_write_path(tmp_path: Path, victim: Path):
    """put, multipart staging, parts, completion, delete and abort: none goes through
    a link below the root, whether the link is there first or planted mid-upload."""
    root = tmp_path / "dst"
    root.mkdir()
    (root / "sub").symlink_to(victim)
    store = LocalStore(parse_uri(str(root) + "/"))
    with pytest.raises(SymlinkRefused, match=r"dst/sub: it is a symbolic link"):
        store.put(key(root / "sub" / "passwd"), b"pwned")
    with pytest.raises(SymlinkRefused):
        store.put(key(root / "sub" / "new" / "x"), b"pwned")
    with pytest.raises(SymlinkRefused):
        store.create_multipart(key(root / "sub" / "passwd"))
    with pytest.raises(SymlinkRefused):
        store.delete(key(root / "sub" / "passwd"))
    assert isinstance(SymlinkRefused("x"), StoreError)

    # a link swapped in for a directory after the upload started
    (root / "later").mkdir()
    k = key(root / "later" / "big.bin")
    upload = store.create_multipart(k)
    tag = store.upload_part(k, upload, 1, b"one")
    os.rename(root / "later", tmp_path / "moved")
    (root / "later").symlink_to(victim)
    with pytest.raises(SymlinkRefused):
        store.upload_part(k, upload, 2, b"two")
    with pytest.raises(SymlinkRefused):
        store.complete_multipart(k, upload, [(1, tag)])
    with pytest.raises(SymlinkRefused):
        store.abort_multipart(k, upload)  # nothing is removed through the link
    assert sorted(p.name for p in victim.iterdir()) == ["passwd"]
    assert (victim / "passwd").read_bytes() == b"root:x:0:0\n"

    # a link at a part directory inside the staging directory
    (root / "later").unlink()
    os.rename(tmp_path / "moved", root / "later")
    staging = next((root / "later").glob(".skyhop-mpu-*"))
    part_dir = staging / "00002"
    part_dir.symlink_to(victim)
    with pytest.raises(SymlinkRefused):
        store.upload_part(k, upload, 2, b"two")
    part_dir.unlink()
    assert store.complete_multipart(k, upload, [(1, tag)]).size == 3

    # a link at the final name is replaced, never written through
    (root / "file-link").symlink_to(victim / "passwd")
    store.put(key(root / "file-link"), b"new")
    assert not (root / "file-link").is_symlink()
    assert (victim / "passwd").read_bytes() == b"root:x:0:0\n"


def test_keys_outside_the_root_follow_no_link(tmp_path: Path, victim: Path):
    (tmp_path / "elsewhere").symlink_to(victim)
    store = LocalStore(parse_uri(str(tmp_path / "dst") + "/"))
    with pytest.raises(SymlinkRefused):
        store.put(key(tmp_path / "elsewhere" / "passwd"), b"pwned")
    assert (victim / "passwd").read_bytes() == b"root:x:0:0\n"


# ---------------------------------------------------------------- 5: file modes


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("path", PATHS)
def test_local_modes_are_carried_and_others_get_the_umask(tmp_path: Path, moto, path: list[str]):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for name, mode in {"secret": 0o600, "script": 0o750, "public": 0o644}.items():
        (src / name).write_bytes(os.urandom(100))
        (src / name).chmod(mode)
    (src / "big-secret").write_bytes(os.urandom(11 * MIB))
    (src / "big-secret").chmod(0o600)
    res = run_cli("cp", "-r", str(src), str(dst), "--json", *SMALL_PARTS, *path)
    assert res.code == 0, res.stderr
    assert {p.name: _mode(p) for p in dst.iterdir()} == {
        "secret": 0o600,
        "script": 0o750,
        "public": 0o644,
        "big-secret": 0o600,
    }

    # from a store without modes: 0666 minus the umask of the writer
    import boto3

    s3 = boto3.client("s3")
    bucket = f"skyhop-modes-{'gw' if path else 'direct'}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="m/a.txt", Body=b"a")
    s3.put_object(Bucket=bucket, Key="m/big.bin", Body=os.urandom(11 * MIB))
    out = tmp_path / "from-s3"
    res = run_cli(
        "cp", "-r", f"s3://{bucket}/m/", str(out), "--json", *SMALL_PARTS, *path
    )  # umask 022 by default
    assert res.code == 0, res.stderr
    assert {p.name: _mode(p) for p in out.iterdir()} == {"a.txt": 0o644, "big.bin": 0o644}
    out2 = tmp_path / "from-s3-077"
    res = run_cli(
        "cp", "-r", f"s3://{bucket}/m/", str(out2), "--json", *SMALL_PARTS, *path, umask=0o077
    )
    assert res.code == 0, res.stderr
    assert {p.name: _mode(p) for p in out2.iterdir()} == {"a.txt": 0o600, "big.bin": 0o600}


def test_setid_bits_are_never_carried(tmp_path: Path):
    src = tmp_path / "s"
    src.write_bytes(b"x")
    src.chmod(0o4755)
    store = LocalStore(parse_uri(str(tmp_path) + "/"))
    info = store.head(key(src))
    assert info is not None and info.meta is not None and info.meta.mode == 0o755
    store.put(key(tmp_path / "d"), b"x", meta=info.meta)
    assert _mode(tmp_path / "d") == 0o755


# ---------------------------------------------------------------- 6: SKYHOP_HOME and job secrets


def _files(root: Path) -> dict[str, int]:
    return {
        p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode)
        for p in root.rglob("*")
        if not p.name.endswith(("-wal", "-shm"))
    }


def _secret_files(home: Path) -> list[str]:
    """Files under jobs/ that hold key material (gateway configurations)."""
    return sorted(
        p.relative_to(home).as_posix()
        for p in (home / "jobs").rglob("*")
        if p.is_file() and b"PRIVATE KEY" in p.read_bytes()
    )


def test_home_is_private_and_secrets_leave_with_the_job(tmp_path: Path, skyhop_home: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    res = run_cli("cp", "-r", str(src), str(tmp_path / "dst"), "--json", *GATEWAYS)
    assert res.code == 0, res.stderr
    assert stat.S_IMODE(skyhop_home.stat().st_mode) == 0o700
    modes = _files(skyhop_home)
    assert modes["reports"] == 0o700 and modes["jobs"] == 0o700
    job_id = res.report["job_id"]
    assert modes[f"reports/{job_id}.json"] == 0o600
    assert modes[f"reports/{job_id}.csv"] == 0o600
    assert modes["manifest.db"] == 0o600
    assert _secret_files(skyhop_home) == []
    from skyhop.state.sqlite import SQLiteManifest

    job = SQLiteManifest(skyhop_home / "manifest.db").get_job(job_id)
    assert job is not None and job.runtime is not None
    assert job.runtime.client_key_pem == "" and job.runtime.control_token == ""
    for name in ("manifest.db", "manifest.db-wal"):  # not even in freed pages or the log
        path = skyhop_home / name
        assert not path.exists() or b"PRIVATE KEY" not in path.read_bytes(), name


def test_a_loose_home_is_tightened_and_a_foreign_one_refused(tmp_path: Path):
    from skyhop.config import private_dir
    from skyhop.errors import UsageError

    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert stat.S_IMODE(private_dir(loose).stat().st_mode) == 0o700
    shared_tmp = tmp_path / "shared"
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)  # like /tmp: never chmod'ed by skyhop
    with pytest.raises(UsageError, match="open to other users"):
        private_dir(shared_tmp)
    assert stat.S_IMODE(shared_tmp.stat().st_mode) == 0o1777


def test_secrets_of_a_killed_cli_are_swept(tmp_path: Path, skyhop_home: Path):
    """SIGKILL leaves the gateway configurations and the manifest's credentials;
    the next run removes them, and the resumed job leaves none of its own."""
    import signal

    from skyhop.models import JobState
    from skyhop.state.sqlite import SQLiteManifest
    from tests.fixtures.cli import start_cli, wait_no_gateways

    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.bin").write_bytes(os.urandom(1000))
    proc = start_cli(
        "cp",
        "-r",
        str(src),
        str(dst),
        *GATEWAYS,
        env={"SKYHOP_TEST_HOOKS": "source:sleep_per_chunk=20"},
    )
    manifest = skyhop_home / "manifest.db"
    job_id = None
    for _ in range(600):
        if manifest.exists():
            jobs = SQLiteManifest(manifest).list_jobs()
            if jobs and jobs[0].state == JobState.RUNNING:
                job_id = jobs[0].job_id
                break
        import time

        time.sleep(0.05)
    assert job_id is not None
    assert _secret_files(skyhop_home)  # the running job's configurations
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert wait_no_gateways(job_id) == []
    left = SQLiteManifest(manifest).get_job(job_id)
    assert left is not None and left.runtime is not None and left.runtime.has_secrets
    assert _secret_files(skyhop_home)  # what SIGKILL leaves

    res = run_cli("status", job_id)  # any next run sweeps
    assert res.code == 0, res.stderr
    assert _secret_files(skyhop_home) == []
    swept = SQLiteManifest(manifest).get_job(job_id)
    assert swept is not None and swept.runtime is not None and not swept.runtime.has_secrets

    res = run_cli("cp", "--resume", job_id, "--json")
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in dst.iterdir()) == sorted(p.name for p in src.iterdir())
    assert _secret_files(skyhop_home) == []
    done = SQLiteManifest(manifest).get_job(job_id)
    assert done is not None and done.runtime is not None and not done.runtime.has_secrets


# ---------------------------------------------------------------- 7: key names on the terminal

EVIL = "evil\x1b[2J\x1b[31m\u202eexe.txt\x07"
SHOWN = "evil\\x1b[2J\\x1b[31m\\u202eexe.txt\\x07"


def test_unprintable_key_characters_are_printed_escaped(tmp_path: Path, victim: Path):
    src, dst = tmp_path / "src[bold]", tmp_path / "dst"
    (src / "sub").mkdir(parents=True)
    (src / EVIL).write_bytes(b"x")
    (src / "sub" / EVIL).write_bytes(b"y")
    dst.mkdir()
    (dst / "sub").symlink_to(victim)  # one object fails: its key is printed in the report

    dry = run_cli("sync", "--dry-run", str(src), str(dst))
    assert dry.code == 0, dry.stderr
    assert SHOWN in dry.stdout and "\x1b" not in dry.stdout and "\u202e" not in dry.stdout

    res = run_cli("cp", "-r", str(src), str(dst))
    assert res.code == 1, res.stderr
    out = res.stdout + res.stderr
    assert "FAILED" in out and SHOWN in out, out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert (dst / EVIL).read_bytes() == b"x"  # the name itself is copied exactly

    job_id = next(line.split()[1].rstrip(":") for line in res.stdout.splitlines() if "job " in line)
    status = run_cli("status", job_id, env={"COLUMNS": "500"})
    assert status.code == 0, status.stderr
    assert "src[bold]" in status.stdout  # no rich markup taken from a path

    from skyhop.terminal import printable

    assert printable("plain ünïcødé \\ back") == "plain ünïcødé \\ back"
    assert printable("a\nb\x9b\u2028\udcff") == "a\\x0ab\\x9b\\u2028\\udcff"
