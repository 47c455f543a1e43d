"""The gateway's main process: sockets, worker processes, control API, events,
and the rules that keep it from outliving its job.

Start-up order matters: the data socket is bound and the workers are forked
before any thread starts (fork copies only the calling thread), then the
control API, the event pump and the lifetime watch start, and finally the
ready line is printed.
"""

from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import os
import queue
import signal
import socket
import sys
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from gateway_vm import memory, scope
from gateway_vm.address import WILDCARDS, advertised_host
from gateway_vm.control_api import ApiError, ControlServer
from gateway_vm.control_queue import ControlQueuePoller
from gateway_vm.enrol import enrol, enrol_queued
from gateway_vm.events import EventRouter
from gateway_vm.lifetime import set_parent_death_signal
from gateway_vm.runtime import Counters, HookBudget, SharedBudget
from gateway_vm.worker import Shared, worker_main
from skyhop import crypto, store_access, testhooks
from skyhop.errors import SkyhopError, UsageError, first_line
from skyhop.models import (
    ChunkBatch,
    ChunkWork,
    Encryption,
    GatewayConfig,
    GatewayErrorEvent,
    GatewayReady,
    GatewayRole,
    GatewayState,
    GatewayStatus,
    PeerSpec,
)
from skyhop.processes import pid_alive

log = logging.getLogger("gateway_vm")

WATCH_INTERVAL = 0.5
WORKER_GRACE = 35.0  # covers a worker finishing a store write under way


def resolve_data_key(cfg: GatewayConfig) -> bytes | None:
    """The key material a gateway's role needs: a destination the job's private
    key, a source the job's public key, a relay nothing (and it must be given
    nothing: a relay or a source handed the private key refuses to start)."""
    has_private = cfg.data_key_b64 is not None or cfg.wrapped_data_key is not None
    if cfg.encryption == Encryption.NONE:
        if has_private or cfg.recipient_key_b64 is not None:
            raise UsageError("a gateway of a job with encryption none must not be given a key")
        return None
    if cfg.role == GatewayRole.RELAY:
        if has_private or cfg.recipient_key_b64 is not None:
            raise UsageError("a relay gateway must not be given any job key")
        return None
    if cfg.role == GatewayRole.SOURCE:
        if has_private:
            raise UsageError("a source gateway must not be given the job's private key")
        if cfg.recipient_key_b64 is None:
            raise UsageError("a source gateway needs the job's public key (recipient_key_b64)")
        return crypto.decode_key(cfg.recipient_key_b64)
    if cfg.data_key_b64 is not None:
        return crypto.decode_key(cfg.data_key_b64)
    if cfg.wrapped_data_key is not None:
        return crypto.open_key_wrapper(cfg.key_wrap, cfg.kms_key_id).unwrap(cfg.wrapped_data_key)
    raise UsageError(
        "a destination gateway needs the job's private key (data_key_b64 or wrapped_data_key)"
    )


def _hook_count(cfg: GatewayConfig, name: str) -> int:
    value = cfg.test_hooks.get(name)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"test hook {name}={value!r} is not an integer") from None


def inert_hooks(cfg: GatewayConfig) -> GatewayConfig:
    """``cfg`` without its test hooks unless the test suite started this gateway
    (:mod:`skyhop.testhooks`): a configuration that asks a cloud gateway to flip
    bits or drop chunks is obeyed nowhere but in the tests."""
    if not cfg.test_hooks or testhooks.enabled():
        return cfg
    log.warning(
        "ignoring test hooks %s: this gateway was not started by the test suite",
        ",".join(sorted(cfg.test_hooks)),
    )
    return cfg.model_copy(update={"test_hooks": {}})


class Gateway:
    def __init__(self, cfg: GatewayConfig) -> None:
        self.cfg = cfg
        # its own side's storage remote, and no other: never a remotes file (workers
        # are forked after this, so they inherit it)
        store_access.install([cfg.store_access] if cfg.store_access else [], only=True)
        self.state: GatewayState = "starting"
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.router = EventRouter(
            cfg.event_sink, base64.b64decode(cfg.event_key_b64) if cfg.event_key_b64 else None
        )
        self.submitted = 0
        self._submit_lock = threading.Lock()
        self._last_activity = time.monotonic()
        self._last_counts: tuple[int, ...] = ()
        self.peers: list[PeerSpec] = list(cfg.next_hops)
        self.workers: list[BaseProcess] = []
        self.listener: socket.socket | None = None
        self.control: ControlServer | None = None
        self.shared: Shared | None = None

    # ------------------------------------------------------------ start-up

    def start(self) -> dict[str, Any]:
        cfg, notes = memory.plan(inert_hooks(self.cfg))
        self.cfg = cfg
        for note in notes:
            log.info("%s", note)
        data_key = resolve_data_key(cfg)
        if cfg.role == GatewayRole.SOURCE and not cfg.source_uri:
            raise UsageError("a source gateway needs source_uri")
        if cfg.role == GatewayRole.DESTINATION and not cfg.destination_uri:
            raise UsageError("a destination gateway needs destination_uri")
        if cfg.parent_pid is not None:
            if cfg.parent_pid == os.getppid():
                set_parent_death_signal(signal.SIGTERM)
            if not pid_alive(cfg.parent_pid):
                raise UsageError(f"parent process {cfg.parent_pid} is gone")
        if cfg.role != GatewayRole.SOURCE:
            self.listener = _bind(cfg.listen_host, cfg.data_port)
            self.listener.listen(256)
        mp = multiprocessing.get_context("fork")
        hooks: dict[str, HookBudget] = {
            name: HookBudget(mp, _hook_count(cfg, name))
            for name in ("flip_wire", "flip_plain", "drop_chunk", "fail_write")
            if name in cfg.test_hooks
        }
        self.shared = Shared(
            config=cfg,
            data_key=data_key,
            listener=self.listener,
            work_q=mp.Queue(),
            ctl_qs=[mp.Queue() for _ in range(cfg.workers)],
            evt_q=mp.Queue(),
            counters=Counters(mp, cfg.workers),
            budget=SharedBudget(mp, memory.pool_capacity(cfg)),
            hooks=hooks,
        )
        for i in range(cfg.workers):
            proc = mp.Process(
                target=worker_main, args=(self.shared, i), name=f"worker-{i}", daemon=True
            )
            proc.start()
            self.workers.append(proc)
        del data_key
        tls = crypto.server_context(cfg.ca_cert_pem, cfg.cert_pem, cfg.key_pem)
        self.control = ControlServer(self, _control_host(cfg), cfg.control_port, tls)
        # a short poll interval: shutdown() waits for the serving loop to notice
        _thread(lambda: self.control.serve_forever(poll_interval=0.1), "control-api")
        _thread(self._pump_events, "events")
        _thread(self._watch, "watch")
        self.state = "ready"
        if cfg.control_queue:  # orders come from the gateway's own queue
            ControlQueuePoller(self, cfg.control_queue).start()
        data_port = self.listener.getsockname()[1] if self.listener else 0
        control_port = self.control.server_address[1]
        self.router.publish(
            GatewayReady(
                job_id=cfg.job_id,
                gateway_id=cfg.gateway_id,
                host=advertised_host(cfg),
                data_port=data_port,
                control_port=control_port,
            ).model_dump_json()
        )
        return {
            "ready": True,
            "gateway_id": cfg.gateway_id,
            "data_port": data_port,
            "control_port": control_port,
            "pid": os.getpid(),
        }

    # ------------------------------------------------------------ control API calls

    def touch(self) -> None:
        self._last_activity = time.monotonic()

    def submit(self, batch: ChunkBatch) -> int:
        if batch.job_id != self.cfg.job_id:
            raise ApiError(
                400, f"batch is for job {batch.job_id}, this gateway serves {self.cfg.job_id}"
            )
        if self.cfg.role != GatewayRole.SOURCE:
            raise ApiError(409, f"gateway {self.cfg.gateway_id} is a {self.cfg.role}, not a source")
        if self.state != "ready":
            raise ApiError(409, f"gateway {self.cfg.gateway_id} is {self.state}")
        for work in batch.chunks:
            _check_work(self.cfg, work)
        assert self.shared is not None
        with self._submit_lock:
            for work in batch.chunks:
                self.shared.work_q.put(work.model_dump_json())
            self.submitted += len(batch.chunks)
        return len(batch.chunks)

    def set_peers(self, peers: list[PeerSpec]) -> None:
        if self.cfg.role == GatewayRole.DESTINATION and peers:
            raise ApiError(409, "a destination gateway has no next hops")
        assert self.shared is not None
        self.peers = list(peers)
        payload = [p.model_dump_json() for p in peers]
        for q in self.shared.ctl_qs:
            q.put(("peers", payload))

    def status(self) -> GatewayStatus:
        assert self.shared is not None
        c = self.shared.counters
        taken, done, failed = c.total("taken"), c.total("done"), c.total("failed")
        queued = max(self.submitted - taken, 0) if self.cfg.role == GatewayRole.SOURCE else 0
        return GatewayStatus(
            gateway_id=self.cfg.gateway_id,
            role=self.cfg.role,
            state=self.state,
            chunks_queued=queued,
            chunks_in_flight=max(taken - done - failed, 0),
            chunks_done=done,
            bytes_sent=c.total("bytes_sent"),
            bytes_received=c.total("bytes_received"),
            bytes_read=c.total("bytes_read"),
            errors=c.total("errors") + failed,
        )

    def drain(self, wait: float, *, discard: bool = False) -> GatewayStatus:
        """Accept no more chunks; return once nothing is queued or in flight, or after
        ``wait`` s. ``discard``: a source also drops the chunks it has queued and not
        started (a job stopping: they stay dispatched in the manifest and go again
        on resume), so only those under way finish."""
        if self.state == "ready":
            self.state = "draining"
        if discard and self.cfg.role == GatewayRole.SOURCE:
            self._discard_queued()
        deadline = time.monotonic() + min(max(wait, 0.0), 600.0)
        while True:
            status = self.status()
            if status.chunks_queued == 0 and status.chunks_in_flight == 0:
                return status
            if time.monotonic() >= deadline or self.stop_event.is_set():
                return status
            time.sleep(0.05)
            self.touch()

    def _discard_queued(self) -> None:
        assert self.shared is not None
        dropped = 0
        with self._submit_lock:
            while True:
                try:
                    self.shared.work_q.get(timeout=0.05)
                except queue.Empty:
                    break
                except (EOFError, OSError):
                    break
                dropped += 1
            self.submitted -= dropped
        if dropped:
            log.info("draining: %d queued chunk(s) dropped", dropped)

    def request_stop(self, reason: str) -> None:
        if not self.stop_event.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self.stop_event.set()

    # ------------------------------------------------------------ background threads

    def _pump_events(self) -> None:
        assert self.shared is not None
        while True:
            try:
                item = self.shared.evt_q.get(timeout=0.5)
            except queue.Empty:
                if self.state == "stopped":
                    return
                continue
            except (EOFError, OSError):
                return
            try:
                self.router.publish(item)
            except Exception as exc:  # noqa: BLE001 - a bad event must not stop the pump
                log.warning("dropped an invalid event: %s", type(exc).__name__)

    def _watch(self) -> None:
        cfg = self.cfg
        while not self.stop_event.wait(WATCH_INTERVAL):
            if cfg.parent_pid is not None and not pid_alive(cfg.parent_pid):
                self.request_stop(f"parent process {cfg.parent_pid} is gone")
                return
            for proc in self.workers:
                if not proc.is_alive():
                    message = f"worker {proc.name} died (exit code {proc.exitcode})"
                    self._publish_error(message, fatal=True)
                    self.request_stop(message)
                    return
            if self.shared is not None:
                counts = tuple(
                    self.shared.counters.total(f)
                    for f in ("taken", "done", "failed", "bytes_received")
                )
                if counts != self._last_counts:
                    self._last_counts = counts
                    self.touch()
            if time.monotonic() - self._last_activity > cfg.idle_timeout_s:
                self.request_stop(f"idle for {cfg.idle_timeout_s:g} s")
                return

    def _publish_error(self, message: str, *, fatal: bool) -> None:
        try:
            self.router.publish(
                GatewayErrorEvent(
                    job_id=self.cfg.job_id,
                    gateway_id=self.cfg.gateway_id,
                    message=message,
                    fatal=fatal,
                ).model_dump_json()
            )
        except Exception:  # noqa: BLE001, S110 - reporting an error must not raise another
            pass

    # ------------------------------------------------------------ shutdown

    def wait(self) -> None:
        while not self.stop_event.wait(0.5):
            pass

    def close(self) -> None:
        self.state = "stopped"
        if self.shared is not None:
            for q in self.shared.ctl_qs:
                try:
                    q.put(("stop", None))
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + WORKER_GRACE
        for proc in self.workers:
            proc.join(max(deadline - time.monotonic(), 0.05))
        for proc in self.workers:
            if proc.is_alive():
                proc.kill()
                proc.join(1.0)
        if self.shared is not None:
            # Never block interpreter exit on undelivered work or control messages.
            self.shared.work_q.cancel_join_thread()
            for q in self.shared.ctl_qs:
                q.cancel_join_thread()
        if self.listener is not None:
            self.listener.close()
        if self.control is not None:
            self.control.shutdown()
            self.control.server_close()


def _check_work(cfg: GatewayConfig, work: ChunkWork) -> None:
    """Refuse (400, the whole batch) a chunk that reads outside this source's own
    location, or names a destination key no destination may write."""
    try:
        scope.check_key(cfg.source_uri, work.src_key, f"chunk {work.chunk_id} source")
        for dst_key in [work.dst_key, *(t.dst_key for t in work.targets)]:
            problem = scope.key_problem(dst_key)
            if problem is not None:
                raise scope.OutOfScope(f"chunk {work.chunk_id} destination: {problem} is refused")
    except scope.OutOfScope as exc:
        raise ApiError(400, str(exc)) from None


def _control_host(cfg: GatewayConfig) -> str:
    """Where the HTTPS control API listens: a queue-controlled gateway on all
    interfaces keeps it on loopback, so the data port is its only inbound port."""
    if cfg.control_queue and cfg.listen_host in WILDCARDS:
        return "::1" if ":" in cfg.listen_host else "127.0.0.1"
    return cfg.listen_host


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


def _thread(target: Any, name: str) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


def _announce(line: dict[str, Any]) -> None:
    """The one line a launcher reads on stdout (then it may close the pipe)."""
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def run(config_path: str) -> int:
    """Run a gateway from its config file until it is told, or has reason, to stop."""
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("SKYHOP_GATEWAY_LOG", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(processName)s: %(message)s",
    )
    try:
        with open(config_path, encoding="utf-8") as fh:
            cfg = GatewayConfig.model_validate_json(fh.read())
    except OSError as exc:
        print(f"gateway: cannot read config {config_path}: {exc.strerror}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"gateway: invalid config {config_path}: {first_line(exc)}", file=sys.stderr)
        return 2
    announced = False
    if cfg.enrol_token:  # a cloud VM's boot configuration: its secrets come after boot
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda _signum, _frame: stop.set())
        try:
            if cfg.control_queue:  # over its queues: the launcher need not wait for it
                _announce({"enrolling": True, "gateway_id": cfg.gateway_id, "pid": os.getpid()})
                announced = True
                cfg = enrol_queued(cfg, stop)
            else:  # over mutual TLS, the control plane calling it
                cfg = enrol(cfg, stop)
        except SkyhopError as exc:  # never enrolled: the job is gone, the VM powers off
            print(f"gateway {cfg.gateway_id}: {exc}", file=sys.stderr)
            return 0
        except OSError as exc:
            print(f"gateway {cfg.gateway_id}: cannot enrol: {exc.strerror or exc}", file=sys.stderr)
            return 2
    gateway = Gateway(cfg)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, _frame: gateway.request_stop(signal.Signals(signum).name))
    try:
        ready = gateway.start()
    except SkyhopError as exc:
        print(f"gateway {cfg.gateway_id}: {exc}", file=sys.stderr)
        gateway.close()
        return 2
    except OSError as exc:
        print(f"gateway {cfg.gateway_id}: cannot start: {exc.strerror or exc}", file=sys.stderr)
        gateway.close()
        return 2
    if not announced:
        _announce(ready)
    log.info("gateway %s (%s) ready: %s", cfg.gateway_id, cfg.role, ready)
    gateway.wait()
    gateway.close()
    log.info("gateway %s stopped (%s)", cfg.gateway_id, gateway.stop_reason)
    return 0
