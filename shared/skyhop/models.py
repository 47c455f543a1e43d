"""The pydantic models at every boundary of skyhop.

Messages (TransferRequest, gateway events) are versioned and published as JSON
Schema in ``schemas/``; records (Job, ObjectEntry, Chunk) are what the
ManifestStore keeps; RoutePlan and GatewaySpec are what the planner and the
compute providers exchange.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from skyhop.config import DEFAULT_CHUNK_SIZE, DEFAULT_MULTIPART_THRESHOLD
from skyhop.errors import UsageError
from skyhop.stores.base import ObjectMeta
from skyhop.uri import StoreURI, parse_uri

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000


def utcnow() -> datetime:
    """Timezone-aware now, for every timestamp skyhop records."""
    return datetime.now(UTC)


def new_job_id() -> str:
    """A short, URL- and filename-safe job id."""
    return "j-" + uuid.uuid4().hex[:16]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------- requests


class Compression(StrEnum):
    NONE = "none"
    ZSTD = "zstd"
    AUTO = "auto"  # zstd when a sample of the segment shrinks, else none


class CompareMode(StrEnum):
    """How ``sync`` decides that an object present on both sides needs copying
    (a missing object is always copied)."""

    SIZE_MTIME = "size-mtime"  # sizes differ, or the source is newer (the default)
    CHECKSUM = "checksum"  # sizes differ, or comparable checksums differ (else size-mtime)
    UPDATE = "update"  # the source is newer; a newer destination object is kept
    SIZE = "size"  # sizes differ


def _check_globs(patterns: list[str], what: str) -> list[str]:
    from skyhop.controlplane.filters import check_patterns  # stdlib-only module

    try:
        return check_patterns(patterns, what)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def _check_limits(obj: object) -> None:
    from skyhop.controlplane.filters import check_limits

    try:
        check_limits(
            getattr(obj, "min_size", None),
            getattr(obj, "max_size", None),
            getattr(obj, "min_age", None),
            getattr(obj, "max_age", None),
        )
    except UsageError as exc:
        raise ValueError(str(exc)) from None


class TransferOptions(_Strict):
    """How to move the data; every field has a sensible default."""

    recursive: bool = False
    multipart_threshold: int = Field(DEFAULT_MULTIPART_THRESHOLD, ge=MIN_PART_SIZE)
    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=MIN_PART_SIZE)
    compression: Compression = Compression.AUTO
    connections: int = Field(8, ge=1, le=256, description="parallel TLS connections per hop")
    relays: list[str] = Field(
        default_factory=list, description="regions to relay through, in order (overlay route)"
    )
    src_region: str | None = None
    dst_region: str | None = None
    gateways_per_region: int = Field(1, ge=1, le=64)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    verify_listing: bool = True
    min_size: int | None = Field(None, ge=0, description="skip objects smaller than this (bytes)")
    max_size: int | None = Field(None, ge=0, description="skip objects larger than this (bytes)")
    min_age: float | None = Field(None, ge=0, description="skip objects modified more recently (s)")
    max_age: float | None = Field(None, ge=0, description="skip objects modified longer ago (s)")
    compare: CompareMode = CompareMode.SIZE_MTIME
    modify_window: float = Field(
        1.0, ge=0, description="modification times closer than this (s) count as equal"
    )
    delete: bool = Field(False, description="sync: delete destination objects absent at the source")
    max_delete: int | None = Field(
        None, ge=0, description="sync: refuse (and delete nothing) when more would be deleted"
    )
    dry_run: bool = False
    bwlimit: int | None = Field(None, ge=1, description="bytes per second for the whole job")
    storage_class: str | None = Field(
        None, description="storage class / access tier of every written object"
    )

    @field_validator("include")
    @classmethod
    def _valid_include(cls, value: list[str]) -> list[str]:
        return _check_globs(value, "--include")

    @field_validator("exclude")
    @classmethod
    def _valid_exclude(cls, value: list[str]) -> list[str]:
        return _check_globs(value, "--exclude")

    @model_validator(mode="after")
    def _valid_limits(self) -> TransferOptions:
        _check_limits(self)
        return self


class TransferRequest(_Strict):
    """A request to copy SOURCE to DESTINATION (version 1 of the message)."""

    version: Literal[1] = 1
    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="idempotency key: a request seen again with the same id resumes or "
        "reports its job instead of starting a second one; a request that comes on a "
        "queue without one is known by its queue message id (msg-ID)",
    )
    source: str
    destination: str
    options: TransferOptions = Field(default_factory=TransferOptions)
    reply_to: str | None = Field(None, description="queue URI for result events, if any")
    keys: list[str] | None = Field(
        None,
        max_length=100_000,
        description="copy only these keys, relative to the source prefix (replication batches)",
    )

    @field_validator("keys")
    @classmethod
    def _relative_keys(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for key in value:
                if not key or key.startswith("/") or key.endswith("/") or "\x00" in key:
                    raise ValueError(f"bad key {key!r}: keys are relative object names")
        return value

    @field_validator("source", "destination")
    @classmethod
    def _valid_uri(cls, value: str) -> str:
        try:
            parse_uri(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value

    @property
    def source_uri(self) -> StoreURI:
        return parse_uri(self.source)

    @property
    def destination_uri(self) -> StoreURI:
        return parse_uri(self.destination)


# ---------------------------------------------------------------- manifest records


class JobState(StrEnum):
    CREATED = "created"  # manifest being written
    PLANNED = "planned"
    PROVISIONING = "provisioning"  # gateways launched; waiting for each one's gateway_ready
    RUNNING = "running"
    VERIFYING = "verifying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # resumable

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED)


class ObjectState(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"  # every chunk verified, multipart completed, checksum compared
    FAILED = "failed"


class ChunkState(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    VERIFIED = "verified"
    FAILED = "failed"


class Job(_Strict):
    job_id: str = Field(default_factory=new_job_id)
    request: TransferRequest
    state: JobState = JobState.CREATED
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    objects_total: int = 0
    bytes_total: int = 0
    chunks_total: int = 0
    plan: RoutePlan | None = None
    runtime: JobRuntime | None = None
    error: str | None = None
    listing_complete: bool = Field(
        True, description="False while objects are still being added (listing overlaps copying)"
    )
    sync: SyncSummary | None = None


class JobRuntime(_Strict):
    """How the control plane reaches the job's gateways while it runs.

    Holds the control token and the control plane's client certificate: the
    manifest store must be private to the control plane (SQLite under a 0700
    directory, DynamoDB encrypted at rest). No data key is ever kept here.
    """

    gateways: list[GatewaySpec] = Field(default_factory=list)
    ca_cert_pem: str = ""
    client_cert_pem: str = ""
    client_key_pem: str = ""
    control_token: str = ""
    compute: str = "local"
    attempt: int = 1
    launched_at: datetime | None = Field(
        None, description="when this attempt's gateways were launched (queue-controlled jobs)"
    )


class ObjectEntry(_Strict):
    """One object of a job: where it comes from, where it goes, how it is cut."""

    job_id: str
    object_id: int = Field(ge=0, description="dense index within the job")
    src_key: str
    dst_key: str
    size: int = Field(ge=0)
    src_etag: str | None = None
    src_version: str | None = None
    mtime: float | None = None
    chunk_size: int
    n_chunks: int = Field(ge=1)
    multipart: bool = False
    upload_id: str | None = None
    state: ObjectState = ObjectState.PENDING
    src_checksums: dict[str, str] = Field(default_factory=dict)
    crc32c: str | None = Field(None, description="full-object CRC32C (hex), combined from chunks")
    md5: str | None = Field(
        None,
        description="MD5 (hex) of the object's bytes, for an object that travelled as one chunk",
    )
    multipart_etag: str | None = Field(
        None,
        description="for a multipart object, the MD5 of its part MD5s with -N (S3's multipart ETag)",
    )
    checksum_method: str | None = None
    error: str | None = None
    meta: ObjectMeta | None = Field(None, description="metadata written at the destination")
    seconds: float | None = Field(None, description="first dispatch to verification")


class Chunk(_Strict):
    """A byte range of one object; the unit of transfer and verification."""

    job_id: str
    chunk_id: int = Field(ge=0, description="dense index within the job")
    object_id: int = Field(ge=0)
    index: int = Field(ge=0, description="index within its object; part number is index+1")
    offset: int = Field(ge=0)
    length: int = Field(ge=0)
    state: ChunkState = ChunkState.PENDING
    attempts: int = 0
    crc32c: str | None = None
    md5: str | None = Field(None, description="MD5 (hex) of the part as the destination wrote it")
    part_etag: str | None = None
    dispatched_at: datetime | None = None
    error: str | None = None


# ---------------------------------------------------------------- planning and compute


class Gateway(_Strict):
    """Gateways the plan puts in one region."""

    region: str
    count: int = Field(ge=1)
    role: Literal["source", "relay", "destination"]
    instance_type: str | None = None


class Edge(_Strict):
    """An overlay edge between two regions carrying part of the flow."""

    src: str
    dst: str
    gbps: float = Field(ge=0)
    connections: int = Field(ge=1)


class CostEstimate(_Strict):
    egress_usd: float = 0.0
    vm_usd: float = 0.0
    requests_usd: float = 0.0

    @property
    def total_usd(self) -> float:
        return self.egress_usd + self.vm_usd + self.requests_usd


class RoutePlan(_Strict):
    """Where gateways run and how data flows; every planner returns one."""

    planner: str
    src_region: str
    dst_region: str
    gateways: list[Gateway]
    edges: list[Edge]
    path: list[str] = Field(description="regions in order, source first, for single-path routes")
    throughput_gbps: float = Field(ge=0)
    bytes: int = Field(0, ge=0)
    seconds: float = Field(0.0, ge=0)
    cost: CostEstimate = Field(default_factory=CostEstimate)
    notes: list[str] = Field(default_factory=list)


class GatewayRole(StrEnum):
    SOURCE = "source"
    RELAY = "relay"
    DESTINATION = "destination"


class GatewaySpec(_Strict):
    """One gateway of a job, as the compute provider launched it."""

    gateway_id: str
    job_id: str
    region: str
    role: GatewayRole
    host: str = "127.0.0.1"
    data_port: int = 0
    control_port: int = 0
    instance_id: str | None = Field(None, description="process id, EC2 instance id, ...")
    next_hops: list[str] = Field(default_factory=list, description="gateway ids to send to")
    control_queue: str | None = Field(
        None, description="queue URI the gateway takes control messages from (else the HTTPS API)"
    )
    ready: bool = Field(
        True, description="False until a queue-controlled gateway posted gateway_ready"
    )
    ready_at: datetime | None = Field(
        None, description="the `at` of the gateway_ready event that made it ready"
    )


# ---------------------------------------------------------------- gateway configuration and work


class PeerSpec(_Strict):
    """A next hop a gateway sends to."""

    gateway_id: str
    host: str
    data_port: int


class GatewayConfig(_Strict):
    """Everything a gateway process needs, written by the control plane (mode 0600).

    End-to-end keys: the job's key is an X25519 key pair. Its private half
    reaches destination gateways only: ``data_key_b64`` when it travels to a
    local process, else ``wrapped_data_key`` for the gateway to unwrap with KMS
    (or an equivalent). Sources get the public half (``recipient_key_b64``)
    and derive a fresh AES-256-GCM key per chunk from it; relays get nothing.
    """

    job_id: str
    gateway_id: str
    role: GatewayRole
    region: str = "local"
    listen_host: str = "127.0.0.1"
    data_port: int = 0
    control_port: int = 0
    ca_cert_pem: str
    cert_pem: str
    key_pem: str
    control_token: str
    data_key_b64: str | None = Field(None, description="destination only: the job's private key")
    wrapped_data_key: str | None = None
    recipient_key_b64: str | None = Field(None, description="source only: the job's public key")
    key_wrap: Literal["none", "kms"] = "none"
    kms_key_id: str | None = None
    source_uri: str | None = None
    destination_uri: str | None = None
    next_hops: list[PeerSpec] = Field(default_factory=list)
    event_sink: str = Field("pull", description="'pull' (control API outbox) or a queue URI")
    control_queue: str | None = Field(
        None,
        description="queue URI to take control messages from (peers, chunks, drain, shutdown); "
        "the HTTPS control API then listens on loopback only when listen_host is a wildcard",
    )
    advertise_host: str | None = Field(
        None,
        description="the address peers reach this gateway at, reported in gateway_ready; None: "
        "listen_host, or on a VM listening on all interfaces its public address from the "
        "cloud's instance metadata",
    )
    connections: int = Field(8, ge=1, le=256)
    workers: int = Field(2, ge=1, le=64)
    segment_size: int = Field(4 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    compression: Compression = Compression.AUTO
    buffer_budget_bytes: int = Field(256 * 1024 * 1024, ge=8 * 1024 * 1024)
    idle_timeout_s: float = Field(
        600.0, gt=0, description="exit when no control call for this long"
    )
    parent_pid: int | None = Field(None, description="local mode: exit when this process is gone")
    bwlimit: int | None = Field(
        None, ge=1, description="source: bytes per second this gateway may send"
    )
    part_md5: bool = Field(
        True,
        description="destination: MD5 every written part (ChunkVerified.md5) to compare with "
        "MD5-based checksums (S3 ETags, GCS md5Hash, Azure Content-MD5); costs about 1.5 "
        "CPU-seconds per GB, so leave it off when neither store reports MD5s",
    )
    test_hooks: dict[str, str] = Field(default_factory=dict)


class ChunkWork(_Strict):
    """One chunk for a source gateway to read, seal and send."""

    chunk_id: int
    object_id: int
    index: int
    src_key: str
    dst_key: str
    offset: int
    length: int
    object_size: int
    multipart: bool = False
    upload_id: str | None = None
    src_etag: str | None = Field(None, description="pin the version read (If-Match)")
    meta: ObjectMeta | None = Field(None, description="metadata of a single-chunk object's write")
    attempt: int = Field(
        0, ge=0, description="the dispatch this work belongs to, echoed in chunk_failed (0: none)"
    )


class ChunkBatch(_Strict):
    job_id: str
    chunks: list[ChunkWork]


# ---------------------------------------------------------------- gateway control messages
#
# What a queue-controlled gateway (GatewayConfig.control_queue) takes from its own
# queue; each is applied through the same handler as the HTTPS control API's route.


class PeersMessage(_Strict):
    """Replace the gateway's next hops (``POST /v1/peers``)."""

    type: Literal["peers"] = "peers"
    peers: list[PeerSpec]


class ChunksMessage(_Strict):
    """Chunks for a source gateway to send (``POST /v1/chunks``)."""

    type: Literal["chunks"] = "chunks"
    batch: ChunkBatch


class DrainMessage(_Strict):
    """Accept no more chunks; finish those under way (``POST /v1/drain``)."""

    type: Literal["drain"] = "drain"


class ShutdownMessage(_Strict):
    """Stop the gateway (``POST /v1/shutdown``)."""

    type: Literal["shutdown"] = "shutdown"


ControlMessage = Annotated[
    PeersMessage | ChunksMessage | DrainMessage | ShutdownMessage, Field(discriminator="type")
]


class GatewayStatus(_Strict):
    gateway_id: str
    role: GatewayRole
    state: Literal["starting", "ready", "draining", "stopped"]
    chunks_queued: int = 0
    chunks_in_flight: int = 0
    chunks_done: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    errors: int = 0


# ---------------------------------------------------------------- gateway events


class _Event(_Strict):
    version: Literal[1] = 1
    job_id: str
    gateway_id: str
    at: datetime = Field(default_factory=utcnow)


class GatewayReady(_Event):
    type: Literal["gateway_ready"] = "gateway_ready"
    host: str
    data_port: int
    control_port: int


class ChunkVerified(_Event):
    type: Literal["chunk_verified"] = "chunk_verified"
    chunk_id: int
    object_id: int
    crc32c: str
    length: int
    part_etag: str | None = None
    seconds: float = 0.0
    md5: str | None = Field(None, description="MD5 (hex) of the bytes written, when computed")
    attempt: int = Field(
        0, ge=0, description="the dispatch that wrote it (a late one's bytes are as good)"
    )


class ChunkFailed(_Event):
    type: Literal["chunk_failed"] = "chunk_failed"
    chunk_id: int
    object_id: int | None = None
    reason: str
    retryable: bool = True
    attempt: int = Field(
        0,
        ge=0,
        description="the dispatch that failed (0: unknown); the failure of an earlier "
        "dispatch, late or delivered twice, changes nothing",
    )


class GatewayErrorEvent(_Event):
    type: Literal["gateway_error"] = "gateway_error"
    message: str
    fatal: bool = False


GatewayEvent = Annotated[
    GatewayReady | ChunkVerified | ChunkFailed | GatewayErrorEvent, Field(discriminator="type")
]


class EventEnvelope(BaseModel):
    """Wraps a gateway event for queues: ``{"event": {...}}``."""

    event: GatewayEvent


# ---------------------------------------------------------------- reports


class ObjectReport(_Strict):
    """One row of a job's CSV report. A dry run's rows say what *would* happen:
    ``copy``, ``skip``, ``delete``."""

    key: str
    size: int
    action: Literal["copied", "skipped", "deleted", "failed", "copy", "skip", "delete"]
    checksum: str | None = None
    checksum_method: str | None = None
    seconds: float | None = None
    error: str | None = None
    reason: str | None = None


class SyncSummary(_Strict):
    """What a sync (or a dry run) decided and did, beyond the copies."""

    dry_run: bool = False
    to_copy: int = 0
    bytes_to_copy: int = 0
    skipped: int = 0
    bytes_skipped: int = 0
    excluded: int = Field(0, description="objects the filters left out, on either side")
    to_delete: int = 0
    bytes_to_delete: int = 0
    deleted: int = 0
    delete_failures: int = 0
    deletes_skipped: str | None = Field(
        None, description="why planned deletes did not run (e.g. a copy failed)"
    )


class JobReport(_Strict):
    job_id: str
    state: JobState
    source: str
    destination: str
    objects: int
    objects_failed: int
    bytes: int
    seconds: float
    gbps: float
    chunks_resent: int = 0
    verification: VerificationSummary | None = None
    plan: RoutePlan | None = None
    failures: list[str] = Field(default_factory=list)
    sync: SyncSummary | None = None
    csv: str | None = Field(None, description="path of the per-object CSV report")


class VerificationSummary(_Strict):
    """The post-transfer listing check: every key and size compared."""

    checked: int
    missing: list[str] = Field(default_factory=list)
    size_mismatches: list[str] = Field(default_factory=list)
    checksum_mismatches: list[str] = Field(default_factory=list)
    checksum_methods: dict[str, int] = Field(default_factory=dict)

    @property
    def mismatches(self) -> int:
        return len(self.missing) + len(self.size_mismatches) + len(self.checksum_mismatches)

    @model_validator(mode="after")
    def _sorted(self) -> VerificationSummary:
        self.missing.sort()
        self.size_mismatches.sort()
        self.checksum_mismatches.sort()
        return self


Job.model_rebuild()
JobRuntime.model_rebuild()
JobReport.model_rebuild()


def plan_parts(size: int, chunk_size: int, multipart_threshold: int) -> tuple[int, int, bool]:
    """How an object of ``size`` bytes is cut: (chunk_size, n_chunks, multipart).

    Objects at or below the threshold travel as one chunk. Larger ones are cut
    into parts of ``chunk_size``, grown when needed to stay within the
    10,000-part limit of the stores.
    """
    if size <= multipart_threshold:
        return max(size, 1), 1, False
    part = max(chunk_size, MIN_PART_SIZE, -(-size // MAX_PARTS))
    return part, -(-size // part), True


# ---------------------------------------------------------------- replication rules


class ReplicationRule(_Strict):
    """Replicate objects created (and, if ``propagate_deletes``, deleted) under
    ``prefix`` of a source bucket to ``destination``.

    The source is one bucket (``source_bucket``) or every bucket carrying a tag
    (``bucket_tag`` as ``KEY=VALUE``). Objects up to ``inline_max_bytes`` are
    copied by the function itself; larger ones go through gateways.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")
    source_bucket: str | None = None
    bucket_tag: str | None = Field(None, pattern=r"^[^=]+=.*$")
    prefix: str = Field(
        "",
        description="a folder of the source bucket: 'logs' means 'logs/' (keys under "
        "'logs2/' do not match); the key below it is kept under the destination",
    )
    destination: str
    propagate_deletes: bool = False
    inline_max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    min_size: int | None = Field(None, ge=0)
    max_size: int | None = Field(None, ge=0)
    storage_class: str | None = None

    @field_validator("include")
    @classmethod
    def _valid_include(cls, value: list[str]) -> list[str]:
        return _check_globs(value, "include")

    @field_validator("exclude")
    @classmethod
    def _valid_exclude(cls, value: list[str]) -> list[str]:
        return _check_globs(value, "exclude")

    @field_validator("prefix")
    @classmethod
    def _folder_prefix(cls, value: str) -> str:
        # one meaning on every path: inline copies match by it, batched copies list
        # it as a folder, S3 and EventBridge filters select by it
        return value if not value or value.endswith("/") else value + "/"

    @field_validator("destination")
    @classmethod
    def _valid_destination(cls, value: str) -> str:
        try:
            parse_uri(value)
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ReplicationRule:
        if (self.source_bucket is None) == (self.bucket_tag is None):
            raise ValueError("give exactly one of source_bucket or bucket_tag")
        _check_limits(self)
        return self


class ReplicationConfig(_Strict):
    """The rules file (YAML or JSON) read by the CDK app and the bucket_events function."""

    version: Literal[1] = 1
    rules: list[ReplicationRule]

    @model_validator(mode="after")
    def _unique_names(self) -> ReplicationConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        return self
