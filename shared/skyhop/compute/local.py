"""Gateways as local processes: ``python -m gateway_vm --config PATH``.

Each config is written to ``jobs_dir()/JOB/GATEWAY.json`` (mode 0600, it
holds the gateway's key material and is removed on terminate) with
``parent_pid`` set to this process, so a gateway exits when this process is
gone. Its stderr goes to ``jobs_dir()/JOB/GATEWAY.log``.

``region_netns`` maps a region to ``(network namespace, host IP)``: gateways
of that region are started with ``ip netns exec NS`` and listen on that IP
(for emulated-WAN runs; needs root). Elsewhere they listen on 127.0.0.1.

Firewalls: loopback and local namespaces have no firewall of skyhop's; the
gateways' mutual TLS against the job CA is what admits peers. ``authorize``
and ``revoke`` only record the allowed peer set per job (see
:meth:`allowed`), so callers exercise the same life cycle as on clouds.

Processes are started from one long-lived launcher thread, because Linux's
parent-death signal (which the gateways request) fires when the *thread*
that forked them exits.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from queue import Queue
from typing import IO, Any

from skyhop.cleanup import Cleanup
from skyhop.config import jobs_dir
from skyhop.errors import GatewayError, UsageError
from skyhop.models import GatewayConfig, GatewaySpec
from skyhop.processes import pid_alive

READY_TIMEOUT = 30.0
SHUTDOWN_GRACE = 5.0
TERM_GRACE = 40.0  # a gateway finishes the store writes under way before it exits


@dataclass
class _Running:
    proc: subprocess.Popen[bytes]
    spec: GatewaySpec
    config: GatewayConfig
    config_path: Path
    log_path: Path


class _Launcher:
    """Runs ``subprocess.Popen`` on one thread that lives as long as the process."""

    def __init__(self) -> None:
        self._q: Queue[tuple[Future[subprocess.Popen[bytes]], list[str], dict[str, Any]]] = Queue()
        threading.Thread(target=self._run, name="skyhop-launcher", daemon=True).start()

    def _run(self) -> None:
        while True:
            fut, cmd, kwargs = self._q.get()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(subprocess.Popen(cmd, **kwargs))  # noqa: S603 - our own command
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                fut.set_exception(exc)

    def popen(self, cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        fut: Future[subprocess.Popen[bytes]] = Future()
        self._q.put((fut, cmd, kwargs))
        return fut.result()


_LAUNCHER: _Launcher | None = None
_LAUNCHER_LOCK = threading.Lock()
_PROVIDERS: weakref.WeakSet[LocalComputeProvider] = weakref.WeakSet()


def _launcher() -> _Launcher:
    global _LAUNCHER
    with _LAUNCHER_LOCK:
        if _LAUNCHER is None:
            _LAUNCHER = _Launcher()
        return _LAUNCHER


@atexit.register
def _terminate_all() -> None:
    for provider in list(_PROVIDERS):
        provider.terminate_all(quick=True)


class LocalComputeProvider:
    """Gateways as child processes of this process, on loopback or in network namespaces."""

    name = "local"
    #: launch returns once each gateway printed its ready line
    ready_via_events = False

    def __init__(
        self,
        python: str = sys.executable,
        region_netns: dict[str, tuple[str, str]] | None = None,
        *,
        ready_timeout: float = READY_TIMEOUT,
    ) -> None:
        self.python = python
        self.region_netns = dict(region_netns or {})
        self.ready_timeout = ready_timeout
        self._lock = threading.RLock()
        self._running: dict[str, dict[str, _Running]] = {}
        self._allowed: dict[str, dict[str, str]] = {}
        _PROVIDERS.add(self)

    # ------------------------------------------------------------ protocol

    def ensure_network(self, region: str) -> None:
        """Nothing to create locally; a namespace region must be mapped already."""
        if region in self.region_netns and not self.region_netns[region][0]:
            raise UsageError(f"region {region!r} has no network namespace name")

    def launch(self, configs: list[GatewayConfig]) -> list[GatewaySpec]:
        """Start one gateway per config and return their specs once each printed its
        ready line; on any failure every gateway of this call is stopped and a
        GatewayError carries the tail of the failing gateway's stderr."""
        ids = [c.gateway_id for c in configs]
        if len(set(ids)) != len(ids):
            raise UsageError("gateway ids must be unique within a launch")
        started: list[_Running] = []
        with Cleanup("launching local gateways") as undo:
            for cfg in configs:
                running = self._start(cfg)
                undo.add(_remove, running.config_path)
                undo.add(_stop_process, running.proc, quick=True)
                started.append(running)
            specs = [self._await_ready(r, time.monotonic() + self.ready_timeout) for r in started]
        with self._lock:
            for r in started:
                self._running.setdefault(r.spec.job_id, {})[r.spec.gateway_id] = r
        return specs

    def authorize(self, job_id: str, gateways: list[GatewaySpec]) -> None:
        """Record the peers allowed for the job (loopback has no firewall to program)."""
        with self._lock:
            allowed = self._allowed.setdefault(job_id, {})
            for g in gateways:
                allowed[g.gateway_id] = g.host

    def revoke(self, job_id: str) -> None:
        with self._lock:
            self._allowed.pop(job_id, None)

    def allowed(self, job_id: str) -> dict[str, str]:
        """The peers ``authorize`` admitted for the job: gateway id -> host."""
        with self._lock:
            return dict(self._allowed.get(job_id, {}))

    def terminate(self, job_id: str) -> None:
        """SIGTERM each gateway (it stops as a shutdown call would), then SIGKILL; reap all."""
        with self._lock:
            running = list(self._running.pop(job_id, {}).values())
        threads = [
            threading.Thread(target=self._terminate_one, args=(r,), daemon=True) for r in running
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def list_gateways(self, job_id: str | None = None) -> list[GatewaySpec]:
        """Gateways whose process is alive now."""
        with self._lock:
            jobs = [job_id] if job_id is not None else list(self._running)
            return [
                r.spec
                for j in jobs
                for r in self._running.get(j, {}).values()
                if r.proc.poll() is None
            ]

    # ------------------------------------------------------------ helpers

    def terminate_all(self, *, quick: bool = False) -> None:
        """Stop every gateway this provider started (used at interpreter exit)."""
        with self._lock:
            running = [r for job in self._running.values() for r in job.values()]
            self._running.clear()
        for r in running:
            try:
                r.proc.send_signal(signal.SIGTERM)
            except OSError:
                pass
        for r in running:
            _stop_process(r.proc, quick=quick)
            _remove(r.config_path)

    def log_path(self, job_id: str, gateway_id: str) -> Path:
        return jobs_dir() / job_id / f"{gateway_id}.log"

    def _start(self, cfg: GatewayConfig) -> _Running:
        update: dict[str, Any] = {"parent_pid": os.getpid()}
        netns = self.region_netns.get(cfg.region)
        if netns is not None:
            update["listen_host"] = netns[1]
        cfg = cfg.model_copy(update=update)
        job_dir = jobs_dir() / cfg.job_id
        job_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config_path = job_dir / f"{cfg.gateway_id}.json"
        _write_private(config_path, cfg.model_dump_json())
        log_path = job_dir / f"{cfg.gateway_id}.log"
        cmd = [self.python, "-m", "gateway_vm", "--config", str(config_path)]
        if netns is not None:
            cmd = ["ip", "netns", "exec", netns[0], *cmd]
        with open(log_path, "ab") as log:
            try:
                proc = _launcher().popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    close_fds=True,
                    env=_child_env(),
                )
            except OSError as exc:
                _remove(config_path)
                raise GatewayError(
                    f"cannot start gateway {cfg.gateway_id}: {exc.strerror or exc}"
                ) from None
        spec = GatewaySpec(
            gateway_id=cfg.gateway_id,
            job_id=cfg.job_id,
            region=cfg.region,
            role=cfg.role,
            host=cfg.listen_host,
            instance_id=str(proc.pid),
            next_hops=[p.gateway_id for p in cfg.next_hops],
        )
        return _Running(proc, spec, cfg, config_path, log_path)

    def _await_ready(self, r: _Running, deadline: float) -> GatewaySpec:
        assert r.proc.stdout is not None
        line, timed_out = _read_line(r.proc.stdout, deadline)
        r.proc.stdout.close()
        gid = r.spec.gateway_id
        try:
            ready = json.loads(line) if line else None
        except ValueError:
            ready = None
        # a queue-controlled gateway says it is enrolling (over its queues) instead:
        # its ports come in its gateway_ready event
        if (
            not isinstance(ready, dict)
            or (ready.get("ready") is not True and ready.get("enrolling") is not True)
            or ready.get("gateway_id") != gid
        ):
            if timed_out:
                why = f"not ready within {self.ready_timeout:g} s"
            else:
                try:
                    r.proc.wait(5.0)  # stdout closed: the gateway is exiting
                except subprocess.TimeoutExpired:
                    pass
                code = r.proc.poll()
                why = f"exited with code {code}" if code is not None else "printed no ready line"
            _stop_process(r.proc, quick=True)
            raise GatewayError(f"gateway {gid} {why}: {_tail(r.log_path)}")
        r.spec = r.spec.model_copy(
            update={
                "data_port": int(ready.get("data_port", 0)),
                "control_port": int(ready.get("control_port", 0)),
            }
        )
        return r.spec

    def _terminate_one(self, r: _Running) -> None:
        # SIGTERM: the gateway stops as a shutdown call would stop it (its control API
        # takes only the control plane's certificate, which this provider never holds)
        _stop_process(r.proc, quick=False)
        _remove(r.config_path)


def live_gateway_pids(specs: list[GatewaySpec]) -> list[int]:
    """Pids of ``specs`` (local gateways) still running a gateway of their job, in
    whatever process started them: a job whose gateways live is being run by
    another process (Linux; elsewhere nothing is found)."""
    found: list[int] = []
    for spec in specs:
        try:
            pid = int(spec.instance_id or 0)
        except ValueError:
            continue
        if pid <= 0:
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if b"gateway_vm" in cmdline and spec.job_id.encode() in cmdline:
            found.append(pid)
    return found


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    # The child must import the same skyhop and gateway_vm as this process.
    roots = {str(Path(__file__).resolve().parents[2]), str(Path(__file__).resolve().parents[3])}
    existing = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([*existing, *sorted(roots - set(existing))])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def sweep_stale_secrets() -> int:
    """Remove the gateway configurations (each holds key material) under
    ``jobs_dir()`` whose launching process is gone: a CLI killed with SIGKILL
    never removed them. A live launcher's files are never touched. Returns how
    many files were removed."""
    removed = 0
    for job_dir in jobs_dir().iterdir():
        if job_dir.is_symlink() or not job_dir.is_dir():
            continue
        for path in job_dir.iterdir():
            if not (path.name.endswith(".json") or path.name.endswith(".json.tmp")):
                continue
            try:
                parent = json.loads(path.read_text()).get("parent_pid")
            except (OSError, ValueError, AttributeError):
                parent = None  # unreadable or half written: its writer's pid is unknown
            if isinstance(parent, int) and parent > 0 and pid_alive(parent):
                continue
            if not isinstance(parent, int) and time.time() - path.stat().st_mtime < 60:
                continue  # being written right now
            _remove(path)
            removed += 1
    return removed


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _read_line(stream: IO[bytes], deadline: float) -> tuple[str, bool]:
    """One line from a pipe, waiting until ``deadline``: (line, timed out).
    The line is '' when the pipe closed first."""
    fd = stream.fileno()
    buf = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return "", True
            chunk = os.read(fd, 4096)
            if not chunk:
                return "", False
            buf += chunk
    return buf.split(b"\n", 1)[0].decode(errors="replace"), False


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    tail = [line.strip() for line in text.strip().splitlines()[-lines:] if line.strip()]
    return " | ".join(tail) or "(empty log)"


def _stop_process(proc: subprocess.Popen[bytes], *, quick: bool) -> None:
    """SIGTERM, wait, SIGKILL, reap."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except OSError:
            pass
        try:
            proc.wait(0.5 if quick else TERM_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable
        pass
    if proc.stdout is not None and not proc.stdout.closed:
        proc.stdout.close()
