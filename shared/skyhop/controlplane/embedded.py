"""The embedded default: the whole control plane in one process.

The manifest is SQLite, the event queue in-process, gateways are local
processes. Gateways keep their events in an outbox; one pump thread per
gateway long-polls it and feeds the in-process queue, which the loop below
drains into :meth:`ControlPlane.handle_event`, exactly as the cloud
``gateway_events`` function drains SQS.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import ModuleType
from typing import Any

from skyhop.compute.local import LocalComputeProvider, live_gateway_pids, sweep_stale_secrets
from skyhop.config import manifest_path
from skyhop.controlplane.planning import default_planner
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import GatewayError, Interrupted, SkyhopError, first_line
from skyhop.models import (
    ChunkFailed,
    ChunkState,
    ChunkVerified,
    EventEnvelope,
    GatewayRole,
    GatewaySpec,
    Job,
    JobReport,
    JobRuntime,
    parse_message,
)
from skyhop.queues.memory import MemoryQueue
from skyhop.state.base import JobProgress, batched
from skyhop.state.sqlite import SQLiteManifest


def _provision() -> ModuleType:
    """The gateway machinery (certificates, keys, the gateway API), imported when a job
    first needs gateways: a direct-path job never does, and loading it (x509 among
    others) costs a fifth of a second at every CLI start."""
    from skyhop.controlplane import provision

    return provision


log = logging.getLogger("skyhop.embedded")

IDLE_GRACE = 5.0  # seconds with every gateway idle before unanswered chunks are re-sent
STOP_GRACE = 30.0  # seconds a stopping job waits for the writes under way to be recorded

ProgressCallback = Callable[[Job, JobProgress], None]


@dataclass
class _Pump:
    """Moves one gateway's outbox into the in-process queue."""

    runtime: JobRuntime
    gateway: GatewaySpec
    queue: MemoryQueue
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failed: str | None = None
    polled: float = 0.0  # monotonic time the last poll of the outbox returned

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"pump-{self.gateway.gateway_id}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        client = _provision().gateway_client(self.runtime, self.gateway)
        cursor = 0
        errors = 0
        while not self.stop.is_set():
            try:
                events, cursor = client.events(after=cursor, wait=1.0)
                errors = 0
                polled = time.monotonic()
            except SkyhopError as exc:
                errors += 1
                if errors >= 3:
                    self.failed = str(exc)
                    return
                time.sleep(0.2)
                continue
            if events:
                self.queue.send_batch([EventEnvelope(event=e).model_dump_json() for e in events])
            self.polled = polled  # after the events are queued: all before it are in


class EmbeddedRunner:
    """Runs one job to completion in this process."""

    def __init__(
        self,
        cp: ControlPlane,
        *,
        on_progress: ProgressCallback | None = None,
        tick: float = 0.25,
    ) -> None:
        self.cp = cp
        self.on_progress = on_progress
        self.tick = tick
        self.queue = MemoryQueue(f"memory://events-{id(self)}")
        self._set_aside: set[str] = set()  # gateways of destinations set aside

    def run(self, job_id: str) -> JobReport:
        """Provision, move, verify and tear down; leaves the job resumable on
        Ctrl-C or a gateway failure (and re-raises)."""
        started = time.monotonic()
        pumps: list[_Pump] = []
        try:
            job = self.cp.start(job_id)
            assert job.runtime is not None
            for gateway in job.runtime.gateways:
                pump = _Pump(job.runtime, gateway, self.queue)
                pump.start()
                pumps.append(pump)
            self._loop(job, pumps)
            for pump in pumps:
                pump.stop.set()
            return self.cp.finish(job_id, started=started)
        except KeyboardInterrupt:
            if pumps:
                self._settle(job_id, pumps)
            self.cp.interrupt(job_id, "interrupted by the user")
            raise
        except Interrupted:
            raise  # interrupted already, with its reason
        except BaseException as exc:
            self.cp.interrupt(job_id, first_line(exc, limit=500))
            raise
        finally:
            for pump in pumps:
                pump.stop.set()

    def _settle(self, job_id: str, pumps: list[_Pump]) -> None:
        """The job is stopping (Ctrl-C): sources drop the chunks they have not
        started, the chunks under way finish, and their events are recorded, so a
        resume sends none of them again. Up to :data:`STOP_GRACE` seconds; a
        second Ctrl-C stops at once."""
        deadline = time.monotonic() + STOP_GRACE
        job = self.cp.require(job_id)
        gateways = job.runtime.gateways if job.runtime is not None else []
        clients = {g.gateway_id: _provision().gateway_client(job.runtime, g) for g in gateways}
        for gateway in gateways:
            if gateway.role == GatewayRole.SOURCE:
                try:
                    clients[gateway.gateway_id].drain(wait=0.0, discard=True)
                except SkyhopError as exc:
                    log.info("draining %s: %s", gateway.gateway_id, exc)
        idle_since: float | None = None
        while time.monotonic() < deadline:
            self._apply_queued()
            if idle_since is None:
                if self._idle(clients):
                    idle_since = time.monotonic()
            elif all(p.polled > idle_since or p.failed or p.thread is None for p in pumps):
                self._apply_queued()  # every outbox was read once more since: all is in
                return
            time.sleep(0.05)
        log.warning("stopping: gave up waiting for writes under way after %.0f s", STOP_GRACE)

    def _idle(self, clients: dict[str, Any]) -> bool:
        for client in clients.values():
            try:
                status = client.status()
            except SkyhopError:
                continue  # gone: nothing more will come from it
            if status.chunks_queued or status.chunks_in_flight:
                return False
        return True

    def _apply_queued(self) -> None:
        while True:
            messages = self.queue.receive(max_messages=256, wait_seconds=0.0)
            if not messages:
                return
            for message in messages:
                try:
                    event = parse_message(EventEnvelope, message.body).event
                except ValueError as exc:
                    log.warning("dropping malformed event: %s", exc)
                else:
                    if isinstance(event, ChunkVerified | ChunkFailed):
                        self.cp.handle_event(event)
                self.queue.ack(message)

    def _loop(self, job: Job, pumps: list[_Pump]) -> None:
        job_id = job.job_id
        last_check = 0.0
        last_progress = 0.0
        self._last_event = time.monotonic()
        while True:
            # wait only until the next tick is due: a full tick after the last event
            # would make the job's end (and each dispatch) late by up to a tick
            due = self.tick - (time.monotonic() - last_progress)
            messages = self.queue.receive(max_messages=256, wait_seconds=max(0.0, due))
            if messages:
                self._last_event = time.monotonic()
            failures = False
            # a round's events in one manifest transaction (a commit each was most
            # of a small file's cost), committed before waiting for more
            with batched(self.cp.manifest):
                for message in messages:
                    try:
                        event = parse_message(EventEnvelope, message.body).event
                    except ValueError as exc:
                        log.warning("dropping malformed event: %s", exc)
                    else:
                        self.cp.handle_event(event)
                        failures = failures or isinstance(event, ChunkFailed)
                    self.queue.ack(message)
            if failures:
                self.cp.check_interrupted(job_id)  # out of tries: stop here, resumable
            now = time.monotonic()
            if now - last_progress >= self.tick:
                last_progress = now
                self.cp.dispatch(job_id)
                if self.on_progress is not None:
                    self.on_progress(job, self.cp.progress(job_id))
                if self.cp.transfer_done(job_id) and len(self.queue) == 0:
                    return
            if now - last_check >= 1.0:
                last_check = now
                self._check_alive(job, pumps)
                self.cp.redispatch_stuck(job_id)
                self._resend_if_idle(job)
                if self.cp.stalled(job_id):
                    self.cp.complete_ready(job_id)

    def _resend_if_idle(self, job: Job) -> None:
        """Safety net: every gateway idle, no event for a while, yet chunks still
        dispatched means they were lost (never silently): send them again."""
        if time.monotonic() - self._last_event < IDLE_GRACE:
            return
        counts = self.cp.progress(job.job_id).chunks
        if not counts.get(ChunkState.DISPATCHED):
            return
        assert job.runtime is not None
        for gateway in job.runtime.gateways:
            if gateway.gateway_id in self._set_aside:
                continue
            try:
                status = _provision().gateway_client(job.runtime, gateway).status()
            except SkyhopError:
                return  # a dead gateway is _check_alive's business
            if status.chunks_queued or status.chunks_in_flight:
                return
        moved = self.cp.redispatch_stuck(job.job_id, older_than=timedelta(seconds=IDLE_GRACE))
        if moved:
            log.warning("%d chunk(s) were dispatched but never answered; sending them again", moved)
        self._last_event = time.monotonic()

    def _check_alive(self, job: Job, pumps: list[_Pump]) -> None:
        """A dead gateway interrupts the job, unless it is a multicast destination's:
        that destination is set aside and the others carry on."""
        alive = {g.gateway_id for g in self.cp.compute.list_gateways(job.job_id)}
        assert job.runtime is not None
        failed = {p.gateway.gateway_id: p.failed for p in pumps if p.failed}
        for gateway in job.runtime.gateways:
            if gateway.gateway_id in self._set_aside:
                continue
            if gateway.gateway_id in alive and gateway.gateway_id not in failed:
                continue
            what = (
                f"gateway {gateway.gateway_id} ({gateway.role.value}) died"
                if gateway.gateway_id not in alive
                else f"lost gateway {gateway.gateway_id}: {failed[gateway.gateway_id]}"
            )
            if job.legs and gateway.role == GatewayRole.DESTINATION:
                self._set_aside.add(gateway.gateway_id)
                self.cp.set_aside(job.job_id, gateway.legs, what)
                continue
            raise GatewayError(f"{what}; resume with: skyhop cp --resume {job.job_id}")


def embedded() -> ControlPlane:
    """The embedded default: SQLite manifest under SKYHOP_HOME, local gateway processes.

    Every start sweeps what a killed run left: gateway configurations (key
    material) of processes that are gone, and control credentials in the
    manifest of jobs that ended or that nothing runs any more."""
    cp = ControlPlane(
        manifest=SQLiteManifest(manifest_path()),
        compute=LocalComputeProvider(),
        event_sink="pull",
        planner=default_planner,
    )
    sweep_stale_secrets()
    cp.sweep_secrets(_still_run)
    return cp


def _still_run(job: Job) -> bool:
    """Whether a job's gateways still run (cloud gateways are the reaper's to judge)."""
    runtime = job.runtime
    if runtime is None or runtime.compute != "local":
        return True
    return bool(live_gateway_pids(runtime.gateways))
