"""No gateway process outlives its job: shutdown, signals, idle timeout, a
dead parent (even one killed with SIGKILL), a dead worker; launch failures
are one-line errors that carry the gateway's own words."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from gateway_vm.memory import cpus
from skyhop import crypto
from skyhop.compute.local import LocalComputeProvider
from skyhop.config import jobs_dir
from skyhop.errors import GatewayError
from skyhop.models import GatewayRole
from tests.fixtures.gateways import GatewayJob, gateway_job_fixture, provider_fixture  # noqa: F401 - pytest fixtures, registered by importing them

ROOT = Path(__file__).resolve().parents[1]
WORKERS = min(2, cpus())  # the fixtures ask for two; a gateway runs at most one per CPU


def _tree(pid: int) -> list[int]:
    proc = psutil.Process(pid)
    return [pid, *(c.pid for c in proc.children(recursive=True))]


def _trees(roots: list[int], expected: int, timeout: float = 10.0) -> list[int]:
    """The processes under ``roots``, once there are ``expected`` of them: a process
    that lives a moment (a library's helper a worker forks while starting, as
    ``find_library`` forked ``ldconfig``) is not counted, a lasting extra one is."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for root in roots for p in _tree(root)]
        if len(pids) == expected or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


def _gone(pids: list[int], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = []
        for pid in pids:
            try:
                if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                    alive.append(pid)
            except psutil.NoSuchProcess:
                pass
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_shutdown_call_stops_gateway_and_workers(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    (spec,) = job.launch(
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path))
    )
    pids = _trees([int(spec.instance_id or 0)], 1 + WORKERS)
    assert len(pids) == 1 + WORKERS  # the gateway and its workers
    job.clients["dst-0"].shutdown()
    assert _gone(pids)
    # a thread group's leader shows as a zombie while its other threads still exit,
    # and waitpid cannot reap it until they have: the provider sees it go a moment later
    assert _eventually(lambda: job.provider.list_gateways(job.job_id) == [])


def test_sigterm_is_graceful(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    (spec,) = job.launch(job.config("src-0", GatewayRole.SOURCE, source_uri=str(tmp_path)))
    pid = int(spec.instance_id or 0)
    pids = _tree(pid)
    os.kill(pid, signal.SIGTERM)
    assert _gone(pids)
    log = job.provider.log_path(job.job_id, "src-0").read_text()
    assert "stopping: SIGTERM" in log and "stopped" in log


def test_idle_gateway_exits(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    (spec,) = job.launch(
        job.config(
            "dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path), idle_timeout_s=1.0
        )
    )
    assert _gone(_tree(int(spec.instance_id or 0)), timeout=15)
    assert "idle for 1 s" in job.provider.log_path(job.job_id, "dst-0").read_text()


def test_dead_worker_stops_the_gateway(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    (spec,) = job.launch(
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path))
    )
    pids = _tree(int(spec.instance_id or 0))
    os.kill(pids[1], signal.SIGKILL)
    assert _gone(pids)
    assert "died" in job.provider.log_path(job.job_id, "dst-0").read_text()


def test_terminate_reaps_and_removes_configs(gateway_job: GatewayJob, tmp_path: Path) -> None:
    job = gateway_job
    specs = job.launch(
        job.config("src-0", GatewayRole.SOURCE, source_uri=str(tmp_path)),
        job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path)),
    )
    config = jobs_dir() / job.job_id / "dst-0.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert {s.gateway_id for s in job.provider.list_gateways(job.job_id)} == {"src-0", "dst-0"}
    pids = [p for s in specs for p in _tree(int(s.instance_id or 0))]
    job.provider.terminate(job.job_id)
    assert _gone(pids, timeout=1)
    assert job.provider.list_gateways() == []
    assert not config.exists()
    job.provider.terminate(job.job_id)  # idempotent


def test_launch_failures_carry_the_gateways_words(
    provider: LocalComputeProvider, tmp_path: Path
) -> None:
    job = GatewayJob(provider)
    no_key = job.config("dst-0", GatewayRole.DESTINATION, destination_uri=str(tmp_path))
    no_key = no_key.model_copy(update={"data_key_b64": None})
    with pytest.raises(
        GatewayError, match="gateway dst-0 exited with code 2: .*needs the job's private key"
    ) as info:
        job.launch(no_key)
    assert "\n" not in str(info.value)
    relay = job.config("relay-0", GatewayRole.RELAY, data_key_b64="A" * 44)
    with pytest.raises(GatewayError, match="must not be given any job key"):
        job.launch(relay)
    private = crypto.encode_key(job.data_key)
    source = job.config("src-9", GatewayRole.SOURCE, source_uri=str(tmp_path), data_key_b64=private)
    with pytest.raises(
        GatewayError, match="source gateway must not be given the job's private key"
    ):
        job.launch(source)
    ok = job.config("src-0", GatewayRole.SOURCE, source_uri=str(tmp_path))
    bad = job.config("src-1", GatewayRole.SOURCE, source_uri=None)
    with pytest.raises(GatewayError, match="needs source_uri"):
        job.launch(ok, bad)
    assert provider.list_gateways() == []  # the good one of a failed launch is stopped too


def test_the_parent_death_signal_starts_no_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every worker sets it as it starts; a helper process of its own (ctypes'
    find_library runs ``ldconfig -p``) made the orphan count below see one process
    too many under load."""
    started: list[object] = []

    class Recording(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: object, **kwargs: object) -> None:
            started.append(args[0] if args else kwargs.get("args"))
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(subprocess, "Popen", Recording)
    from gateway_vm.lifetime import set_parent_death_signal

    assert set_parent_death_signal(0) is True  # 0: clear it again
    assert started == []


_PARENT = textwrap.dedent(
    """
    import json, os, sys, time
    from skyhop import crypto
    from skyhop.compute.local import LocalComputeProvider
    from skyhop.models import GatewayConfig, GatewayRole

    ca = crypto.JobCA.create("j-orphan")
    key = crypto.generate_job_key()
    def cfg(gid, role, **kw):
        c = ca.issue_gateway_cert(gid)
        return GatewayConfig(job_id="j-orphan", gateway_id=gid, role=role, ca_cert_pem=ca.cert_pem,
                             cert_pem=c.cert_pem, key_pem=c.key_pem, control_token="t", **kw)
    provider = LocalComputeProvider()
    specs = provider.launch([
        cfg("src-0", GatewayRole.SOURCE, source_uri=sys.argv[1], **crypto.role_key_fields("source", key)),
        cfg("relay-0", GatewayRole.RELAY),
        cfg("dst-0", GatewayRole.DESTINATION, destination_uri=sys.argv[1],
            **crypto.role_key_fields("destination", key)),
    ])
    print(json.dumps([int(s.instance_id) for s in specs]), flush=True)
    sys.stdin.readline()  # the test has noted every process
    if sys.argv[2] == "exit":
        sys.exit(0)  # without terminate(): atexit must clean up
    time.sleep(600)
    """
)


@pytest.mark.parametrize("how", ["sigkill", "exit"])
def test_no_orphans_when_the_parent_dies(tmp_path: Path, how: str) -> None:
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    parent = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])},
    )
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        gateways = json.loads(line)
        pids = _trees(gateways, 3 * (1 + WORKERS))
        assert len(pids) == 3 * (1 + WORKERS)  # three gateways and their workers
        if how == "sigkill":
            parent.send_signal(signal.SIGKILL)
        else:
            assert parent.stdin is not None
            parent.stdin.write(b"go\n")
            parent.stdin.flush()
        parent.wait(30)
        assert _gone(pids, timeout=10), [p for p in pids if psutil.pid_exists(p)]
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
