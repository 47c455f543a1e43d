"""What the GCP and Azure function apps share: settings from the environment,
the :class:`~skyhop.controlplane.service.ControlPlane` built from them, parsing of
message bodies into pydantic models, and the rule that decides, for every
message, between *done*, *dropped* and *retry*.

No cloud SDK is imported here; each cloud's entry-point file turns its
trigger's payload (a CloudEvent, a queue message, an Event Grid event) into
text or :class:`~skyhop.controlplane.replication.ObjectEvent` and calls one of

    handle_request         a TransferRequest body  -> a running job (or, with ``hold``,
                           a planned one); a start_job / cancel_job body
                           (handle_job_control) -> the job started, or cancelled
                           and torn down in the cloud
    handle_gateway_event   an EventEnvelope body   -> the manifest, more dispatch, the report
    handle_object_events   bucket events           -> replication (inline copy or a request)
    run_reaper             a timer / scheduler tick -> stuck chunks, budgets, orphans

**Ack semantics.** A handler *returns* when the message is settled, either
done or dropped: a body that does not validate, or an error that retrying
cannot fix, is logged as one error line and dropped, so a poison message is
never delivered forever. It *raises* on a transient error (a retryable store
error, gateways that did not come up, a connection failure, anything
unexpected), so the runtime delivers the message again (Pub/Sub push: a 500
nacks; Azure queue trigger: the message becomes visible again), until the
message's delivery count reaches ``SKYHOP_MAX_DELIVERIES``; then it is dropped
with an error line too.

Environment (``skyhop deploy`` sets it):

==========================  ===================================================
``SKYHOP_MANIFEST``         the cloud's own manifest, as ``skyhop deploy`` sets it:
                            ``firestore://PROJECT/DATABASE/COLLECTION`` (GCP),
                            ``aztable://ACCOUNT/TABLE`` (Azure); or
                            ``dynamodb://TABLE[?region=R]``, or
                            ``sqlite:///ABS/PATH`` (default: the SQLite manifest
                            under ``SKYHOP_HOME``, private to one instance)
``SKYHOP_COMPUTE``          ``local`` (default), ``gcp``, ``azure`` or ``aws``
``SKYHOP_COMPUTE_OPTIONS``  JSON object of keyword arguments for the provider
                            (e.g. ``{"project": "p", "machine_type": "n2-standard-8"}``)
``SKYHOP_REGIONS``          comma-separated regions (the ``aws`` provider)
``SKYHOP_EVENTS_QUEUE``     queue URI gateways post their events to (default ``pull``)
``SKYHOP_CONTROL_QUEUES``   per-gateway control queues (``sqs://PREFIX``,
                            ``azq://ACCOUNT/PREFIX``, ``pubsub://PROJECT/PREFIX``):
                            gateways are launched without waiting, report ready
                            through the events queue and take their orders from
                            their queue (needed by cloud compute providers; see
                            :mod:`skyhop.controlplane.provision`). Default for
                            ``gcp``: ``pubsub://PROJECT/skyhop-ctl`` (the events
                            queue's project, else the ``project`` option); for
                            ``azure``: ``azq://ACCOUNT/skyhop-ctl`` (the events
                            queue's account)
``SKYHOP_REQUESTS_QUEUE``   queue URI replication sends TransferRequests to
``SKYHOP_RESULTS_QUEUE``    queue URI for job reports and rejections (optional;
                            a request's ``reply_to`` wins)
``SKYHOP_RULES``            the :class:`~skyhop.models.ReplicationConfig` as JSON
``SKYHOP_MAX_DELIVERIES``   deliveries of one message before it is dropped (default 5)
``SKYHOP_JOB_BUDGET_HOURS`` the reaper fails running jobs older than this (default 24)
``SKYHOP_TRANSFER_LOCATIONS`` comma-separated URIs requests may read and write
                            besides the rules' sources and destinations
                            (``s3://bucket``, ``gs://bucket/prefix/``,
                            ``file:///srv/exchange/``); nothing else is admitted
                            (:mod:`skyhop.controlplane.admission`)
``SKYHOP_REPLY_QUEUES``     comma-separated queue URIs a request may name as
                            ``reply_to`` (the results queue always may)
``SKYHOP_MAX_RELAYS``       relays a request may force (default 2)
``SKYHOP_MAX_GATEWAYS_PER_REGION`` gateways per region a request may ask (default 8)
``SKYHOP_MAX_GATEWAYS_PER_JOB``    gateways one job may launch (default 16)
``SKYHOP_MAX_GATEWAYS``     gateways all live jobs together may run (default 64)
==========================  ===================================================
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import IO, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from skyhop.compute.base import ComputeProvider, open_provider
from skyhop.controlplane.admission import Admission
from skyhop.controlplane.planning import default_planner
from skyhop.controlplane.replication import ObjectEvent, ReplicationOutcome, replicate
from skyhop.controlplane.serverless import (
    ReapReport,
    on_gateway_event,
    parse_event,
    reap,
    start_job,
    submit_request,
)
from skyhop.controlplane.service import ControlPlane, Limits
from skyhop.crypto import KeyWrapper
from skyhop.errors import GatewayError, SkyhopError, StoreError, UsageError, first_line
from skyhop.models import (
    CancelJob,
    Job,
    JobControlEnvelope,
    JobReport,
    JobState,
    ReplicationConfig,
    StartJob,
    TransferRequest,
    parse_message,
)
from skyhop.queues.base import CONTROL_QUEUE_PREFIX, Queue, open_control_queues, open_queue
from skyhop.state.base import ManifestStore
from skyhop.state.base import open_manifest as open_manifest_uri
from skyhop.stores.base import ObjectStore, open_store, store_cache_key
from skyhop.uri import StoreURI, parse_uri

LOGGER_NAME = "skyhop.functions"
logger = logging.getLogger(LOGGER_NAME)

ENV = {
    "manifest": "SKYHOP_MANIFEST",
    "compute": "SKYHOP_COMPUTE",
    "compute_options": "SKYHOP_COMPUTE_OPTIONS",
    "regions": "SKYHOP_REGIONS",
    "events_queue": "SKYHOP_EVENTS_QUEUE",
    "control_queues": "SKYHOP_CONTROL_QUEUES",
    "requests_queue": "SKYHOP_REQUESTS_QUEUE",
    "results_queue": "SKYHOP_RESULTS_QUEUE",
    "rules": "SKYHOP_RULES",
    "max_deliveries": "SKYHOP_MAX_DELIVERIES",
    "job_budget_hours": "SKYHOP_JOB_BUDGET_HOURS",
    "transfer_locations": "SKYHOP_TRANSFER_LOCATIONS",
    "reply_queues": "SKYHOP_REPLY_QUEUES",
    "max_relays": "SKYHOP_MAX_RELAYS",
    "max_gateways_per_region": "SKYHOP_MAX_GATEWAYS_PER_REGION",
    "max_gateways_per_job": "SKYHOP_MAX_GATEWAYS_PER_JOB",
    "max_gateways": "SKYHOP_MAX_GATEWAYS",
}


# ---------------------------------------------------------------- errors


class BadMessage(SkyhopError):
    """A message body that will never be valid: dropped, never retried."""


class ConfigError(UsageError):
    """The function's environment is wrong (fix the deployment; messages are retried)."""


class ReplicationFailed(SkyhopError):
    """Some rule could not replicate an object; the event is delivered again."""


def transient(exc: BaseException) -> bool:
    """Whether delivering the same message again may succeed."""
    if isinstance(exc, BadMessage | ValidationError):
        return False
    if isinstance(exc, StoreError):
        return exc.retryable
    if isinstance(exc, GatewayError | ConfigError | ReplicationFailed):
        return True
    # usage, not found, access, plan, integrity: the same again fails again; connection
    # failures and the unexpected: retried, up to the delivery cap
    return not isinstance(exc, SkyhopError)


def validation_message(exc: ValidationError, what: str) -> str:
    """The first problem of a ValidationError as one line naming the field."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or what
    return f"invalid {what}: {where}: {first['msg']}"


# ---------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with ``severity`` and ``message`` (the fields
    Cloud Logging and Application Insights read) and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            payload.update(fields)
        return json.dumps(payload, default=str)


class _Stream(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler that writes to whatever ``sys.stdout`` is at the time."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> IO[str]:
        return sys.stdout

    @stream.setter
    def stream(self, value: IO[str]) -> None:
        pass


def configure_logging(stdout: bool = False) -> logging.Logger:
    """Log INFO and up from the functions; with ``stdout``, also as JSON lines on
    standard output, once per process (what Cloud Run and Cloud Functions read as
    structured logs). Azure's worker forwards records itself: its app passes nothing."""
    logger.setLevel(logging.INFO)
    if stdout and not any(isinstance(h, _Stream) for h in logger.handlers):
        handler = _Stream()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    return logger


def log(level: int, message: str, **fields: Any) -> None:
    """One structured log line: ``message`` plus ``fields``."""
    logger.log(level, message, extra={"fields": {k: v for k, v in fields.items() if v is not None}})


# ---------------------------------------------------------------- settings


class Settings(BaseModel):
    """The functions' configuration, read once from the environment."""

    manifest: str | None = None
    compute: Literal["local", "gcp", "azure", "aws"] = "local"
    compute_options: dict[str, Any] = Field(default_factory=dict)
    regions: list[str] = Field(default_factory=list)
    events_queue: str = "pull"
    control_queues: str | None = None
    requests_queue: str | None = None
    results_queue: str | None = None
    rules: ReplicationConfig | None = None
    max_deliveries: int = Field(5, ge=1)
    job_budget_hours: float = Field(24.0, gt=0)
    transfer_locations: list[str] = Field(default_factory=list)
    reply_queues: list[str] = Field(default_factory=list)
    max_relays: int = Field(2, ge=0)
    max_gateways_per_region: int = Field(8, ge=1)
    max_gateways_per_job: int = Field(16, ge=2)
    max_gateways: int = Field(64, ge=2)

    @field_validator("rules", mode="before")
    @classmethod
    def _rules(cls, value: Any) -> Any:
        # the rules are a published message: read as strictly as a request
        if isinstance(value, str):
            try:
                json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
            return parse_message(ReplicationConfig, value)
        return value

    @field_validator("compute_options", mode="before")
    @classmethod
    def _json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not JSON: {exc}") from None
        return value

    @field_validator("regions", "transfer_locations", "reply_queues", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [r.strip() for r in value.split(",") if r.strip()]
        return value

    @classmethod
    def from_env(cls) -> Settings:
        values = {
            field: raw
            for field, name in ENV.items()
            if (raw := os.environ.get(name)) not in (None, "")
        }
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = ENV.get(str(first["loc"][0]), str(first["loc"][0])) if first["loc"] else "?"
            raise ConfigError(f"environment variable {name}: {first['msg']}") from None


@cache
def settings() -> Settings:
    return Settings.from_env()


def open_manifest(uri: str | None) -> ManifestStore:
    """``firestore://``, ``aztable://``, ``dynamodb://``, ``sqlite:///ABS/PATH`` (or
    None: the default SQLite file): any scheme :func:`skyhop.state.open_manifest` knows."""
    if not uri:
        from skyhop.config import manifest_path
        from skyhop.state.sqlite import SQLiteManifest

        return SQLiteManifest(manifest_path())
    try:
        return open_manifest_uri(uri)
    except UsageError as exc:
        raise ConfigError(f"SKYHOP_MANIFEST: {exc}") from None


def default_control_queues(s: Settings) -> str | None:
    """``SKYHOP_CONTROL_QUEUES`` when set, else the control queues the compute's cloud
    offers, beside the events queue: ``gcp`` -> ``pubsub://PROJECT/skyhop-ctl``,
    ``azure`` -> ``azq://ACCOUNT/skyhop-ctl``; None when nothing names where."""
    if s.control_queues:
        return s.control_queues
    scheme, _, rest = s.events_queue.partition("://")
    home = rest.split("/", 1)[0].split("?", 1)[0] if rest else ""
    if s.compute == "gcp":
        project = home if scheme == "pubsub" else s.compute_options.get("project")
        return f"pubsub://{project}/{CONTROL_QUEUE_PREFIX}" if project else None
    if s.compute == "azure" and scheme == "azq" and home:
        return f"azq://{home}/{CONTROL_QUEUE_PREFIX}"
    return None


def open_compute(s: Settings) -> ComputeProvider:
    options = dict(s.compute_options)
    if s.compute == "aws" and s.regions:
        options.setdefault("regions", s.regions)
    try:
        return open_provider(s.compute, **options)
    except TypeError as exc:
        raise ConfigError(f"SKYHOP_COMPUTE_OPTIONS for {s.compute}: {exc}") from None


KeyWrapperFactory = Callable[[Job], KeyWrapper]
_key_wrappers: list[KeyWrapperFactory] = []


def use_key_wrapper(factory: KeyWrapperFactory | None) -> None:
    """How a cloud's entry points wrap each job's data key for its gateways (AWS:
    KMS); None: keys travel in the clear (local gateways only)."""
    if _key_wrappers[:1] != ([factory] if factory else []):
        _key_wrappers[:] = [factory] if factory else []
        control_plane.cache_clear()


@cache
def admission() -> Admission:
    """What this deployment admits from its request queue (built once)."""
    s = settings()
    try:
        return Admission.build(
            transfer_locations=s.transfer_locations,
            rules=s.rules,
            reply_queues=s.reply_queues,
            results_queue=s.results_queue,
            max_relays=s.max_relays,
            max_gateways_per_region=s.max_gateways_per_region,
        )
    except UsageError as exc:
        raise ConfigError(f"SKYHOP_TRANSFER_LOCATIONS: {exc}") from None


def reply_queue(reply_to: str | None) -> str | None:
    """Where a request's results go: its ``reply_to`` when that is allowed, else the
    results queue (a sender never makes a function post to a queue of its choice)."""
    try:
        allowed = admission().reply_allowed(reply_to)
    except ConfigError:
        allowed = False
    return reply_to if reply_to and allowed else _results_queue()


@cache
def control_plane() -> ControlPlane:
    """The control plane of this process (built on first use, then kept)."""
    s = settings()
    return ControlPlane(
        limits=Limits(
            max_relays=s.max_relays,
            max_gateways_per_job=s.max_gateways_per_job,
            max_gateways_total=s.max_gateways,
        ),
        manifest=open_manifest(s.manifest),
        compute=open_compute(s),
        event_sink=s.events_queue,
        planner=default_planner,
        control_queues=open_control_queues(cq) if (cq := default_control_queues(s)) else None,
        key_wrapper_factory=_key_wrappers[0] if _key_wrappers else None,
    )


@cache
def queue(uri: str) -> Queue:
    """The queue behind ``uri``, opened once per process (clients are reused)."""
    return open_queue(uri)


_STORES: dict[str, ObjectStore] = {}


def store(uri: StoreURI) -> ObjectStore:
    """One store (and SDK client) per bucket per process, reused across invocations:
    making an SDK client costs more than copying a small object."""
    # a local store is opened at the object's folder: its root, below which it follows no link
    at = uri.with_key(uri.key.rpartition("/")[0] + "/") if uri.scheme == "local" else uri
    found = _STORES.get(store_cache_key(at))
    if found is None:
        found = _STORES[store_cache_key(at)] = open_store(at)
    return found


def reset() -> None:
    """Forget settings and clients (tests change the environment between cases)."""
    settings.cache_clear()
    admission.cache_clear()
    control_plane.cache_clear()
    queue.cache_clear()
    _key_wrappers.clear()
    _STORES.clear()


# ---------------------------------------------------------------- results


class Handled(BaseModel):
    """How a message was settled (the runtime acks it either way)."""

    action: Literal["done", "dropped"]
    detail: str = ""
    job_id: str | None = None
    report: JobReport | None = None
    outcomes: list[ReplicationOutcome] = Field(default_factory=list)


class RequestRejected(BaseModel):
    """Sent when a request will never run (fix it and send a new one)."""

    type: Literal["request_rejected"] = "request_rejected"
    request_id: str | None = None
    error: str


class JobStarted(BaseModel):
    type: Literal["job_started"] = "job_started"
    request_id: str
    job_id: str


def publish(uri: str | None, body: str) -> bool:
    """Send ``body`` to queue ``uri`` if there is one; a failure is logged, not
    raised: a result that cannot be delivered must not redo the work."""
    if not uri:
        return False
    try:
        queue(uri).send(body)
    except SkyhopError as exc:
        log(logging.WARNING, f"could not publish to {uri}: {first_line(exc, limit=500)}", queue=uri)
        return False
    return True


def settle(kind: str, delivery: int | None, fn: Callable[[], Handled], **fields: Any) -> Handled:
    """Run ``fn``; drop bad and hopeless messages with one error line, re-raise
    transient errors (so the message comes again) until the delivery cap."""
    try:
        return fn()
    except Exception as exc:
        reason = first_line(exc, limit=500)
        cap = _max_deliveries()
        if transient(exc) and (delivery is None or delivery < cap):
            log(logging.WARNING, f"{kind}: will retry: {reason}", delivery=delivery, **fields)
            raise
        if transient(exc):
            reason = f"gave up after {delivery} deliveries: {reason}"
        return drop(kind, reason, delivery, **fields)


def drop(kind: str, reason: str, delivery: int | None = None, **fields: Any) -> Handled:
    """Settle a message without doing its work: one error line, and an ack."""
    log(logging.ERROR, f"{kind}: dropped: {reason}", delivery=delivery, **fields)
    return Handled(action="dropped", detail=reason)


def _max_deliveries() -> int:
    try:
        return settings().max_deliveries
    except ConfigError:
        return 5


# ---------------------------------------------------------------- requests


def parse_request(body: str | bytes) -> TransferRequest:
    """A request from a queue, read strictly (as its published schema says)."""
    try:
        return parse_message(TransferRequest, body)
    except ValidationError as exc:
        raise BadMessage(validation_message(exc, "request")) from None


def find_job(cp: ControlPlane, request_id: str, scan: int = 1000) -> Job | None:
    """The job already made for ``request_id`` among the most recent ``scan`` jobs
    (a redelivered request resumes its job instead of starting a second one)."""
    for job in cp.manifest.list_jobs(limit=scan):
        if job.request.request_id == request_id:
            return job
    return None


def message_request_id(message_id: str) -> str:
    """The ``request_id`` of a request that came without one: its queue message's id,
    which SQS, Pub/Sub and Azure Storage Queue keep across redeliveries."""
    return f"msg-{message_id}"


def handle_request(
    body: str | bytes, *, delivery: int | None = None, message_id: str | None = None
) -> Handled:
    """A TransferRequest message: create and start its job, once.

    A request without a ``request_id`` is known by its queue message's id
    (``message_id``), so a redelivered copy of it finds the job its first
    delivery made instead of copying everything a second time."""
    loose = _loose(body)
    if loose.get("type") in JOB_CONTROL_TYPES:
        return handle_job_control(body, delivery=delivery)
    try:
        request = parse_request(body)
    except BadMessage as exc:
        _reject(loose.get("request_id"), loose.get("reply_to"), str(exc))
        return drop("request", str(exc), delivery, request_id=loose.get("request_id"))
    if message_id and "request_id" not in request.model_fields_set:
        request = request.model_copy(update={"request_id": message_request_id(message_id)})

    def run() -> Handled:
        cp = control_plane()
        try:
            admission().check(request)
        except UsageError as exc:
            _reject(request.request_id, request.reply_to, first_line(exc, limit=500))
            _record_rejection(cp, request, first_line(exc, limit=500))
            raise
        job = find_job(cp, request.request_id)
        if job is not None and job.state == JobState.CREATED:
            # its first delivery died while listing: that job holds part of a
            # listing at most and cannot be resumed; this delivery lists again
            cp.abort_uploads(job.job_id)
            cp.manifest.update_job(
                job.job_id, state=JobState.FAILED, error="listing interrupted; listed again"
            )
            job = None
        try:
            if job is None:
                job = submit_request(cp, request)
                if request.hold:
                    log(logging.INFO, "job planned; held for start_job", job_id=job.job_id)
                    return Handled(action="done", detail="job planned (held)", job_id=job.job_id)
            elif job.state == JobState.PLANNED and job.request.hold:
                # delivered again: the job still waits for its sender's start_job
                return Handled(action="done", detail="job planned (held)", job_id=job.job_id)
            elif job.state in (JobState.PLANNED, JobState.INTERRUPTED):
                job = start_job(cp, job.job_id)
            else:
                log(logging.INFO, f"job already {job.state.value}", job_id=job.job_id)
                return Handled(
                    action="done", detail=f"job already {job.state.value}", job_id=job.job_id
                )
        except SkyhopError as exc:
            if not transient(exc):
                _reject(request.request_id, request.reply_to, first_line(exc, limit=500))
                _record_rejection(cp, request, first_line(exc, limit=500))
            raise
        log(logging.INFO, "job started", job_id=job.job_id, request_id=request.request_id)
        publish(
            reply_queue(request.reply_to),
            JobStarted(request_id=request.request_id, job_id=job.job_id).model_dump_json(),
        )
        return Handled(action="done", detail="job started", job_id=job.job_id)

    return settle("request", delivery, run, request_id=request.request_id)


def _record_rejection(cp: ControlPlane, request: TransferRequest, error: str) -> None:
    """A request refused before it had a job (a source that does not exist, a
    destination it may not write) gets a failed job naming why, so a sender that
    follows the manifest (``skyhop cp --on``) learns it, as the results queue does."""
    try:
        if find_job(cp, request.request_id) is None:
            job = Job(request=request, state=JobState.FAILED, error=error)
            report = JobReport(
                job_id=job.job_id,
                state=JobState.FAILED,
                source=request.source,
                destination=request.destination,
                objects=0,
                objects_failed=0,
                bytes=0,
                seconds=0.0,
                gbps=0.0,
                failures=[f"refused: {error}"],
            )
            cp.manifest.create_job(job.model_copy(update={"report": report}))
    except SkyhopError as exc:
        log(logging.WARNING, f"could not record the rejection: {first_line(exc)}")


def _reject(request_id: str | None, reply_to: str | None, error: str) -> None:
    body = RequestRejected(request_id=request_id, error=error).model_dump_json()
    publish(reply_queue(reply_to), body)


def _results_queue() -> str | None:
    try:
        return settings().results_queue
    except ConfigError:
        return None


def _loose(body: str | bytes) -> dict[str, str]:
    """Best-effort ``request_id`` and ``reply_to`` of a body that did not validate."""
    try:
        raw = json.loads(body)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: raw[k] for k in ("request_id", "reply_to", "type") if isinstance(raw.get(k), str)}


# ---------------------------------------------------------------- job control


JOB_CONTROL_TYPES = ("start_job", "cancel_job")


def parse_job_control(body: str | bytes) -> StartJob | CancelJob:
    """A job control message, read strictly (as its published schema says)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        return parse_message(JobControlEnvelope, f'{{"message": {text}}}').message
    except ValidationError as exc:
        raise BadMessage(validation_message(exc, "job control message")) from None
    except ValueError as exc:
        raise BadMessage(f"job control message is not JSON: {first_line(exc)}") from None


def handle_job_control(body: str | bytes, *, delivery: int | None = None) -> Handled:
    """A ``start_job`` or ``cancel_job`` message on the requests queue: start a held
    (or interrupted) job, or cancel one: it fails, its gateways are terminated, its
    firewall rules revoked, its control queues deleted and its uploads aborted; the
    report is kept with the job and sent to its ``reply_to`` or the results queue."""
    try:
        message = parse_job_control(body)
    except BadMessage as exc:
        return drop("job control", str(exc), delivery)

    def run() -> Handled:
        cp = control_plane()
        job = cp.manifest.get_job(message.job_id)
        if job is None:
            raise BadMessage(f"unknown job {message.job_id!r}")
        if isinstance(message, StartJob):
            if job.state not in (JobState.PLANNED, JobState.INTERRUPTED):
                return Handled(
                    action="done", detail=f"job already {job.state.value}", job_id=job.job_id
                )
            job = start_job(cp, job.job_id)
            log(logging.INFO, "job started", job_id=job.job_id)
            return Handled(action="done", detail="job started", job_id=job.job_id)
        was = job.state
        job = cp.cancel(job.job_id, message.reason)
        if was.finished or job.state != JobState.FAILED or job.error != message.reason:
            return Handled(
                action="done", detail=f"job already {job.state.value}", job_id=job.job_id
            )
        log(logging.INFO, "job cancelled", job_id=job.job_id, reason=message.reason)
        if job.report is not None:
            publish(job.request.reply_to or _results_queue(), job.report.model_dump_json())
        return Handled(action="done", detail="job cancelled", job_id=job.job_id, report=job.report)

    return settle("job control", delivery, run, job_id=message.job_id)


# ---------------------------------------------------------------- gateway events


def handle_gateway_event(body: str | bytes, *, delivery: int | None = None) -> Handled:
    """One gateway event: conditional update, more dispatch, and the report when
    it finished the job (sent to the request's ``reply_to`` or the results queue)."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        event = parse_event(text)
    except ValidationError as exc:
        return drop("gateway event", validation_message(exc, "gateway event"), delivery)

    def run() -> Handled:
        cp = control_plane()
        report = on_gateway_event(cp, event)
        if report is None:
            return Handled(action="done", detail=event.type, job_id=event.job_id)
        log(
            logging.INFO,
            f"job {report.state.value}",
            job_id=event.job_id,
            objects=report.objects,
            objects_failed=report.objects_failed,
            bytes=report.bytes,
        )
        job = cp.manifest.get_job(event.job_id)
        reply_to = job.request.reply_to if job is not None else None
        publish(reply_queue(reply_to), report.model_dump_json())
        return Handled(
            action="done", detail=f"job {report.state.value}", job_id=event.job_id, report=report
        )

    return settle("gateway event", delivery, run, job_id=event.job_id, gateway_id=event.gateway_id)


# ---------------------------------------------------------------- bucket events


def still_there(event: ObjectEvent) -> bool:
    """Whether a deleted event's key holds an object again (an overwrite: GCS
    sends ``deleted`` for the replaced generation; a re-created object)."""
    uri = parse_uri(event.uri)
    return store(uri).head(uri.key) is not None


def send_request(request: TransferRequest) -> None:
    """Replication's bulk path: the request goes to ``SKYHOP_REQUESTS_QUEUE``."""
    uri = settings().requests_queue
    if not uri:
        raise ConfigError("SKYHOP_REQUESTS_QUEUE is not set: replication cannot queue bulk copies")
    queue(uri).send(request.model_dump_json())
    log(logging.INFO, "transfer request queued", request_id=request.request_id, queue=uri)


def handle_object_events(
    events: Iterable[ObjectEvent], *, delivery: int | None = None, message_id: str | None = None
) -> Handled:
    """Bucket events through the replication rules in ``SKYHOP_RULES``."""
    items = list(events)

    def run() -> Handled:
        config = settings().rules
        if config is None:
            raise ConfigError("SKYHOP_RULES is not set: no replication rules")
        live = []
        for event in items:
            if event.kind == "deleted" and still_there(event):
                log(logging.INFO, "delete skipped: the key holds an object again", uri=event.uri)
                continue
            live.append(event)
        outcomes = replicate(config.rules, live, send_request=send_request, stores=store)
        for o in outcomes:
            level = logging.ERROR if o.action == "failed" else logging.INFO
            log(level, f"object {o.action}", **o.model_dump(exclude_none=True))
        failed = [o for o in outcomes if o.action == "failed"]
        if failed:
            # the whole event may come again: copies are idempotent, and a batch
            # queued again has the same request_id, so it starts no second job
            raise ReplicationFailed(
                f"{failed[0].source} -> {failed[0].destination}: {failed[0].reason}"
            )
        return Handled(action="done", detail=f"{len(outcomes)} outcome(s)", outcomes=outcomes)

    return settle("bucket event", delivery, run, message_id=message_id)


# ---------------------------------------------------------------- reaper


def run_reaper() -> ReapReport:
    """Re-dispatch stuck chunks, wire or interrupt provisioning jobs, interrupt jobs
    whose gateways are gone and resume interrupted ones, fail jobs past their budget,
    tear down orphans (see :func:`skyhop.controlplane.serverless.reap`)."""
    budget = timedelta(hours=settings().job_budget_hours)
    report = reap(control_plane(), budget=budget)
    log(logging.INFO, "reaper sweep", **report.model_dump())
    return report
