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

from pydantic import TypeAdapter

from skyhop.controlplane import provision
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import GatewayError, SkyhopError
from skyhop.models import (
    ChunkState,
    EventEnvelope,
    GatewayEvent,
    GatewaySpec,
    Job,
    JobReport,
    JobRuntime,
)
from skyhop.queues.memory import MemoryQueue
from skyhop.state.base import JobProgress

log = logging.getLogger("skyhop.embedded")

_EVENT = TypeAdapter(GatewayEvent)

IDLE_GRACE = 5.0  # seconds with every gateway idle before unanswered chunks are re-sent

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

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"pump-{self.gateway.gateway_id}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        client = provision.gateway_client(self.runtime, self.gateway)
        cursor = 0
        errors = 0
        while not self.stop.is_set():
            try:
                events, cursor = client.events(after=cursor, wait=1.0)
                errors = 0
            except SkyhopError as exc:
                errors += 1
                if errors >= 3:
                    self.failed = str(exc)
                    return
                time.sleep(0.2)
                continue
            if events:
                self.queue.send_batch([EventEnvelope(event=e).model_dump_json() for e in events])


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
            self.cp.interrupt(job_id, "interrupted by the user")
            raise
        except BaseException as exc:
            self.cp.interrupt(job_id, str(exc).splitlines()[0] if str(exc) else repr(exc))
            raise
        finally:
            for pump in pumps:
                pump.stop.set()

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
            for message in messages:
                try:
                    event = EventEnvelope.model_validate_json(message.body).event
                except ValueError as exc:
                    log.warning("dropping malformed event: %s", exc)
                else:
                    self.cp.handle_event(event)
                self.queue.ack(message)
            now = time.monotonic()
            if now - last_progress >= self.tick:
                last_progress = now
                self.cp.dispatch(job_id)
                if self.on_progress is not None:
                    self.on_progress(job, self.cp.manifest.progress(job_id))
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
        counts = self.cp.manifest.progress(job.job_id).chunks
        if not counts.get(ChunkState.DISPATCHED):
            return
        assert job.runtime is not None
        for gateway in job.runtime.gateways:
            try:
                status = provision.gateway_client(job.runtime, gateway).status()
            except SkyhopError:
                return  # a dead gateway is _check_alive's business
            if status.chunks_queued or status.chunks_in_flight:
                return
        moved = self.cp.redispatch_stuck(job.job_id, older_than=timedelta(seconds=IDLE_GRACE))
        if moved:
            log.warning("%d chunk(s) were dispatched but never answered; sending them again", moved)
        self._last_event = time.monotonic()

    def _check_alive(self, job: Job, pumps: list[_Pump]) -> None:
        alive = {g.gateway_id for g in self.cp.compute.list_gateways(job.job_id)}
        assert job.runtime is not None
        for gateway in job.runtime.gateways:
            if gateway.gateway_id not in alive:
                raise GatewayError(
                    f"gateway {gateway.gateway_id} ({gateway.role.value}) died; "
                    f"resume with: skyhop cp --resume {job.job_id}"
                )
        for pump in pumps:
            if pump.failed:
                raise GatewayError(
                    f"lost gateway {pump.gateway.gateway_id}: {pump.failed}; "
                    f"resume with: skyhop cp --resume {job.job_id}"
                )


def parse_event(body: str) -> GatewayEvent:
    """A queue message body (an EventEnvelope or a bare event) as a typed event."""
    try:
        return EventEnvelope.model_validate_json(body).event
    except ValueError:
        return _EVENT.validate_json(body)
