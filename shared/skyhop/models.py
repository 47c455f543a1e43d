"""The pydantic models at every boundary of skyhop.

Messages (TransferRequest, gateway events) are versioned and published as JSON
Schema in ``schemas/``; records (Job, ObjectEntry, Chunk) are what the
ManifestStore keeps; RoutePlan and GatewaySpec are what the planner and the
compute providers exchange.

A message from another system (a request or a gateway event on a queue, a
rules file) is read with :func:`parse_message`: strict JSON, as its published
schema says (``"recursive": "true"``, ``"connections": "8"`` or ``"at":
1700000000`` are refused, not coerced), so a message the schema refuses the
model refuses too, and the other way round. What JSON Schema cannot say with
its own keywords is in the schemas as two skyhop keywords and one format
(:mod:`skyhop.schemas` validates them): ``x-skyhop-ordered`` (``min_size`` at
most ``max_size``, ``min_age`` at most ``max_age``), ``x-skyhop-unique`` (rule
names) and the format ``skyhop-glob`` (a pattern that compiles).
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from skyhop.config import DEFAULT_CHUNK_SIZE, DEFAULT_MULTIPART_THRESHOLD
from skyhop.errors import UsageError
from skyhop.patterns import check_limits, check_patterns
from skyhop.store_access import StoreAccess
from skyhop.stores.base import Capabilities, ObjectMeta
from skyhop.uri import LOCATION_PATTERN, StoreURI, check_location, parse_uri

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PARTS = 10_000


def utcnow() -> datetime:
    """Timezone-aware now, for every timestamp skyhop records."""
    return datetime.now(UTC)


def new_job_id() -> str:
    """A short, URL- and filename-safe job id."""
    return "j-" + uuid.uuid4().hex[:16]


class _Strict(BaseModel):
    # python-re: patterns are matched as the schemas' validators match them
    model_config = ConfigDict(extra="forbid", regex_engine="python-re")


M = TypeVar("M", bound=BaseModel)


def _integral(value: float) -> int | float:
    return int(value) if value.is_integer() else value


def _is_integral(value: object) -> bool:
    return isinstance(value, float) and value.is_integer()


def parse_message(model: type[M], body: str | bytes) -> M:
    """``body`` (JSON) as ``model``, strictly: types as the published schema says
    them, no coercion of strings to numbers or booleans, of numbers to times.

    A number with a zero fraction (``3.0``) is an integer, as JSON Schema says;
    everything else is pydantic's strict JSON mode."""
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        if not any(_is_integral(e.get("input")) for e in exc.errors()):
            raise
    normalised = json.dumps(json.loads(body, parse_float=lambda t: _integral(float(t))))
    return model.model_validate_json(normalised, strict=True)


def _missing(model: type[BaseModel], field: str) -> ValidationError:
    """A required-field error at ``field`` from a model validator (so it reads
    'destination: Field required' where a field's own error would, not as the
    model's)."""
    return ValidationError.from_exception_data(
        model.__name__, [InitErrorDetails(type="missing", loc=(field,), input={})]
    )


def _location(value: str) -> str:
    try:
        return check_location(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


_GLOBS = {"items": {"type": "string", "format": "skyhop-glob"}}
_ORDERED = {"x-skyhop-ordered": [["min_size", "max_size"], ["min_age", "max_age"]]}

#: a key below a source prefix: not empty, no NUL, not ending in ``/`` (a folder)
KEY_PATTERN = r"^(?![\s\S]*/(?![\s\S]))[^\x00]+(?![\s\S])"
_KEY = re.compile(KEY_PATTERN)
#: RFC 3339 (JSON Schema's ``date-time``): a date, ``T``, a time, an offset
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})(?![\s\S])"
)


def _rfc3339(value: Any) -> Any:
    if isinstance(value, str):
        if not _RFC3339.search(value):
            raise ValueError(f"{value!r} is not an RFC 3339 date-time with an offset")
        return _DATETIME.validate_python(value)
    return value


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


Timestamp = Annotated[datetime, BeforeValidator(_rfc3339)]


# ---------------------------------------------------------------- requests


class Compression(StrEnum):
    NONE = "none"
    ZSTD = "zstd"
    AUTO = "auto"  # zstd when a sample of the segment shrinks, else none


class GatewayMode(StrEnum):
    """Where a job's data moves (``skyhop cp --gateways``)."""

    AUTO = "auto"  # direct when no hop crosses machines (no relay), else gateways
    LOCAL = "local"  # gateway processes on this machine, even where direct would do
    CLOUD = "cloud"  # gateway VMs in the planned regions


class Encryption(StrEnum):
    """Whether gateways seal chunks end to end (AES-256-GCM) inside the job's TLS."""

    AES_GCM = "aes-256-gcm"
    NONE = "none"  # data already encrypted by the application: TLS only, CRC32C still checked


class CompareMode(StrEnum):
    """How ``sync`` decides that an object present on both sides needs copying
    (a missing object is always copied)."""

    SIZE_MTIME = "size-mtime"  # sizes differ, or the source is newer (the default)
    CHECKSUM = "checksum"  # sizes differ, or comparable checksums differ (else size-mtime)
    UPDATE = "update"  # the source is newer; a newer destination object is kept
    SIZE = "size"  # sizes differ


def _check_globs(patterns: list[str], what: str) -> list[str]:
    try:
        return check_patterns(patterns, what)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


def _check_limits(obj: object) -> None:
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

    model_config = ConfigDict(json_schema_extra=_ORDERED)

    recursive: bool = False
    multipart_threshold: int | None = Field(
        None,
        ge=MIN_PART_SIZE,
        description="objects larger than this go in parts (default: the destination store's)",
    )
    chunk_size: int | None = Field(
        None, ge=MIN_PART_SIZE, description="part size (default: the destination store's)"
    )
    compression: Compression = Compression.AUTO
    connections: int | None = Field(
        None,
        ge=1,
        le=256,
        description="parallel TLS connections per hop, or parts in flight on the direct path "
        "(default: 8 per hop, the stores' own concurrency on the direct path)",
    )
    relays: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="regions to relay through, in order (overlay route)",
    )
    src_region: str | None = None
    dst_region: str | None = None
    gateways_per_region: int = Field(1, ge=1, le=64)
    gateways: GatewayMode = Field(
        GatewayMode.AUTO,
        description="auto: the direct path (no gateways) when no hop crosses machines",
    )
    encryption: Encryption = Field(
        Encryption.AES_GCM, description="gateway path: seal chunks end to end, or TLS only"
    )
    include: list[str] = Field(default_factory=list, json_schema_extra=_GLOBS)
    exclude: list[str] = Field(default_factory=list, json_schema_extra=_GLOBS)
    verify_listing: bool = True
    min_size: int | None = Field(None, ge=0, description="skip objects smaller than this (bytes)")
    max_size: int | None = Field(None, ge=0, description="skip objects larger than this (bytes)")
    min_age: float | None = Field(None, ge=0, description="skip objects modified more recently (s)")
    max_age: float | None = Field(None, ge=0, description="skip objects modified longer ago (s)")
    compare: CompareMode = CompareMode.SIZE_MTIME
    modify_window: float | None = Field(
        None,
        ge=0,
        description="modification times closer than this (s) count as equal; default: the "
        "precision the destination keeps them at, or 1 s where it keeps only its write time",
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

    @property
    def direct(self) -> bool:
        """Whether a job with these options takes the direct path: gateways not forced
        (``--gateways local|cloud|N``) and no relay asked for."""
        return self.gateways == GatewayMode.AUTO and not self.relays

    def for_store(self, caps: Capabilities) -> TransferOptions:
        """These options with the part size and multipart threshold they leave open
        taken from the destination store's defaults (fixed once, when a job is made,
        so that a resumed job cuts objects the same way)."""
        return self.model_copy(
            update={
                "chunk_size": self.chunk_size or caps.part_size,
                "multipart_threshold": self.multipart_threshold or caps.multipart_threshold,
            }
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


#: destinations one request may name (a multicast job: one distribution tree)
MAX_DESTINATIONS = 16


class TransferRequest(_Strict):
    """A request to copy SOURCE to DESTINATION (version 1 of the message).

    Several destinations (``destinations``) make one multicast job: the source
    is read once and its chunks sent along one distribution tree, each
    destination verified on its own. ``destination`` is then the first of them;
    a one-destination request leaves ``destinations`` empty."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["destination"]},
                {"required": ["destinations"], "properties": {"destinations": {"minItems": 1}}},
            ],
            "x-skyhop-first-of": ["destination", "destinations"],
        },
    )

    version: Literal[1] = 1
    request_id: str = Field(
        default_factory=lambda: uuid.uuid4().hex,
        description="idempotency key: a request seen again with the same id resumes or "
        "reports its job instead of starting a second one; a request that comes on a "
        "queue without one is known by its queue message id (msg-ID)",
    )
    source: str = Field(
        description="where to copy from: s3://, gs://, az://, an Azure blob URL, or an "
        "absolute path (/PATH, file:///PATH)",
        json_schema_extra={"pattern": LOCATION_PATTERN},
    )
    destination: str = Field(
        "",
        description="where to copy to (the same forms as source); with several "
        "destinations, the first of them",
        json_schema_extra={"pattern": LOCATION_PATTERN},
    )
    destinations: list[str] = Field(
        default_factory=list,
        max_length=MAX_DESTINATIONS,
        description="several destinations (multicast): the source is read once and sent along "
        "one distribution tree; each is verified on its own, and the job succeeds only when "
        "every one verified every object. Empty for one destination",
        json_schema_extra={
            "items": {"type": "string", "pattern": LOCATION_PATTERN},
            "uniqueItems": True,
        },
    )
    options: TransferOptions = Field(default_factory=TransferOptions)
    reply_to: str | None = Field(None, description="queue URI for result events, if any")
    keys: list[str] | None = Field(
        None,
        max_length=100_000,
        description="copy only these keys, relative to the source prefix (replication "
        "batches); a key below the prefix may start with '/' ('in//x.txt' under 'in/' is "
        "'/x.txt'), none ends with '/' (a folder) or holds a NUL",
        json_schema_extra={"items": {"type": "string", "pattern": KEY_PATTERN}},
    )
    mode: Literal["copy", "sync"] = Field(
        "copy",
        description="'sync' (skyhop sync): make the destination prefix like the source "
        "prefix, copying only objects missing there or differing as options.compare says, "
        "and with options.delete removing those absent at the source once every copy is "
        "verified; 'copy' copies everything selected",
    )
    hold: bool = Field(
        False,
        description="list and plan, then wait in 'planned' for a start_job message (the "
        "CLI shows the plan and asks first); a held job not started within the reaper's "
        "hold window fails",
    )

    @field_validator("keys")
    @classmethod
    def _relative_keys(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for key in value:
                if not _KEY.search(key):
                    raise ValueError(f"bad key {key!r}: keys are object names below the prefix")
        return value

    @field_validator("source", "destination")
    @classmethod
    def _valid_uri(cls, value: str) -> str:
        if value == "":
            return value  # a destination given as `destinations` only
        return _location(value)

    @field_validator("destinations")
    @classmethod
    def _valid_uris(cls, value: list[str]) -> list[str]:
        return [_location(item) for item in value]

    @model_validator(mode="after")
    def _one_or_many(self) -> TransferRequest:
        many = list(self.destinations)
        if not self.source:
            raise ValueError("source is required")
        if not self.destination and not many:
            raise _missing(type(self), "destination")
        if many and self.destination and many[0] != self.destination:
            raise ValueError("destination must be the first of destinations")
        if not self.destination:
            self.destination = many[0]
        if len(set(many)) < len(many):
            twice = next(d for d in many if many.count(d) > 1)
            raise ValueError(f"destination {twice} is named twice")
        if len(many) <= 1:
            self.destinations = []  # the one-destination form
        if self.mode == "sync" and (len(many) > 1 or self.keys is not None):
            raise ValueError("a sync has one destination and takes no keys")
        return self

    @property
    def source_uri(self) -> StoreURI:
        return parse_uri(self.source)

    @property
    def destination_uri(self) -> StoreURI:
        return parse_uri(self.destination)

    @property
    def all_destinations(self) -> list[str]:
        """Every destination, in order (one for a one-destination request)."""
        return list(self.destinations) or [self.destination]

    @property
    def multicast(self) -> bool:
        return len(self.destinations) > 1


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
    legs: list[str] = Field(
        default_factory=list,
        description="multicast: the jobs of destinations 2..N (this job is destination 1); "
        "each holds that destination's objects and chunks",
    )
    leg_of: str | None = Field(
        None, description="a destination leg of a multicast job: the job it belongs to"
    )
    leg: int = Field(0, ge=0, description="which destination of its multicast job (0: the first)")
    report: JobReport | None = Field(
        None,
        description="the final report, kept with the job for whoever follows it from another "
        "machine (failure lists cut to REPORT_LIST_LIMIT entries each: the rest is counted)",
    )


#: ``JobRuntime.compute`` of a job on the direct path (no gateways: the CLI moves the data)
DIRECT = "direct"


class JobRuntime(_Strict):
    """How the control plane reaches the job's gateways while it runs.

    Holds the control token and the control plane's client certificate: the
    manifest store must be private to the control plane (SQLite under a 0700
    directory, DynamoDB encrypted at rest). No data key is kept here, except a
    queue-controlled destination's while it has not enrolled and no key wrapper
    holds it (:class:`PendingEnrolment`, removed when its token is spent).
    """

    gateways: list[GatewaySpec] = Field(default_factory=list)
    ca_cert_pem: str = ""
    ca_key_pem: str = Field(
        "",
        repr=False,
        description="queue-controlled gateways: the job CA's key, to certify the key each "
        "gateway makes at boot when it enrols (blanked with the other secrets)",
    )
    client_cert_pem: str = ""
    client_key_pem: str = ""
    control_token: str = ""
    compute: str = "local"
    attempt: int = 1
    launched_at: datetime | None = Field(
        None, description="when this attempt's gateways were launched (queue-controlled jobs)"
    )
    pid: int | None = Field(
        None, description="direct path: the process moving the data (this machine's)"
    )

    @property
    def has_secrets(self) -> bool:
        return bool(
            self.client_key_pem
            or self.control_token
            or self.ca_key_pem
            or any(g.enrolment is not None for g in self.gateways)
        )

    def without_secrets(self) -> JobRuntime:
        """This runtime with its credentials blanked: once the job's gateways are
        gone they open nothing, and the manifest keeps none after the job."""
        return self.model_copy(
            update={
                "client_key_pem": "",
                "control_token": "",
                "ca_key_pem": "",
                "gateways": [
                    g.model_copy(update={"enrolment": None}) if g.enrolment else g
                    for g in self.gateways
                ],
            }
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
    server_side: bool = Field(False, description="copied by the store itself (no bytes moved)")


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
    failures: int = Field(0, ge=0, description="attempts that ended in chunk_failed")
    crc32c: str | None = None
    md5: str | None = Field(None, description="MD5 (hex) of the part as the destination wrote it")
    part_etag: str | None = None
    dispatched_at: datetime | None = None
    retry_at: datetime | None = Field(
        None, description="back to pending after a failure: not sent again before this"
    )
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


class SeparateCopies(_Strict):
    """What a multicast plan is measured against: one direct copy per destination,
    each reading the source again and paying its own egress (run side by side)."""

    copies: int = Field(ge=1)
    throughput_gbps: float = Field(ge=0, description="the slowest copy's")
    seconds: float = Field(0.0, ge=0, description="the slowest copy's (they run side by side)")
    source_bytes_read: int = Field(0, ge=0)
    cost: CostEstimate = Field(default_factory=CostEstimate)


class RoutePlan(_Strict):
    """Where gateways run and how data flows; every planner returns one.

    A multicast plan (several destinations) is a distribution tree: ``edges``
    are its edges, each carrying the whole stream once; ``dst_regions`` names
    every destination's region in the request's order (``dst_region`` is the
    first, ``path`` the tree's path to it); ``separate`` is the baseline of one
    direct copy per destination."""

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
    dst_regions: list[str] = Field(
        default_factory=list, description="multicast: each destination's region, in order"
    )
    separate: SeparateCopies | None = Field(
        None, description="multicast: the same data as one direct copy per destination"
    )

    @property
    def multicast(self) -> bool:
        return len(self.dst_regions) > 1

    def tree_parent(self) -> dict[str, str]:
        """Each region's parent in the tree (the source has none)."""
        return {e.dst: e.src for e in self.edges if e.src != e.dst}


class GatewayRole(StrEnum):
    SOURCE = "source"
    RELAY = "relay"
    DESTINATION = "destination"


class PendingEnrolment(_Strict):
    """What the control plane keeps for a queue-controlled gateway until it enrols
    (:mod:`skyhop.enrolment`): the SHA-256 of its one-time token, never the token,
    and the secrets that are not derived from the job's master token (a destination's
    data key when no key wrapper holds it, an end's storage credentials). Spending
    the token removes it all, in the same conditional write."""

    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    data_key_b64: str | None = Field(None, repr=False)
    store_access: StoreAccess | None = Field(None, repr=False)


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
    legs: list[int] = Field(
        default_factory=list, description="multicast: the destinations reached through it"
    )
    control_queue: str | None = Field(
        None, description="queue URI the gateway takes control messages from (else the HTTPS API)"
    )
    ready: bool = Field(
        True, description="False until a queue-controlled gateway posted gateway_ready"
    )
    ready_at: datetime | None = Field(
        None, description="the `at` of the gateway_ready event that made it ready"
    )
    enrolment: PendingEnrolment | None = Field(
        None,
        repr=False,
        description="a queue-controlled gateway not yet enrolled: its one-time token's hash "
        "and what it is sent when it enrols (cleared when the token is spent)",
    )


class InstanceIdentity(_Strict):
    """The cloud instance a gateway runs on, as its cloud names it in the requests the
    instance makes with its own role's credentials (EC2: ``ec2:SourceInstanceARN``).
    A compute provider says it (:class:`~skyhop.compute.base.InstanceIdentities`);
    control queues that can be closed to every other instance turn it into a queue
    policy (:class:`~skyhop.queues.base.InstanceScopedControlQueues`)."""

    cloud: str = Field(description="the instance's cloud: aws")
    region: str = Field(description="the cloud's own region name (us-east-1, not aws:us-east-1)")
    instance_id: str = Field(description="the cloud's id of the instance (EC2: i-0abc...)")


# ---------------------------------------------------------------- gateway configuration and work


class PeerSpec(_Strict):
    """A next hop a gateway sends to. In a multicast tree, ``legs`` are the
    destinations reached through it; next hops with the same ``legs`` are one
    group (a chunk goes to one of them), and a chunk goes to every group that
    leads to a destination it is for."""

    gateway_id: str
    host: str
    data_port: int
    legs: list[int] = Field(default_factory=list, description="multicast: destinations behind it")


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
    control_token: str = Field(repr=False, description="this gateway's own bearer token")
    event_key_b64: str | None = Field(
        None,
        repr=False,
        description="the key this gateway signs its events with (its own: no other gateway "
        "holds it); None: its events carry no MAC, and the control plane drops them",
    )
    enrol_token: str | None = Field(
        None,
        repr=False,
        description="a boot configuration (cloud user data): the one-time credential the "
        "gateway proves itself with while it enrols; it holds no key or token, and gets them "
        "(EnrolSecrets) from the control plane over mutual TLS after it boots",
    )
    control_client_sha256: str | None = Field(
        None,
        description="SHA-256 fingerprint (hex) of the control plane's client certificate: the "
        "only certificate the control API accepts (None: the control API refuses every call)",
    )
    data_key_b64: str | None = Field(None, description="destination only: the job's private key")
    wrapped_data_key: str | None = None
    recipient_key_b64: str | None = Field(None, description="source only: the job's public key")
    key_wrap: Literal["none", "kms"] = "none"
    kms_key_id: str | None = None
    source_uri: str | None = None
    destination_uri: str | None = None
    store_access: StoreAccess | None = Field(
        None,
        repr=False,
        description="source or destination only: the endpoint and credentials of its own "
        "side's storage remote, when its location names one (a secret, like the data key)",
    )
    next_hops: list[PeerSpec] = Field(default_factory=list)
    leg: int = Field(
        0, ge=0, description="destination of a multicast job: which of its destinations it writes"
    )
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
    encryption: Encryption = Field(
        Encryption.AES_GCM,
        description="none: chunks travel unsealed inside TLS (no job key is given to anyone)",
    )
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


class EnrolSecrets(_Strict):
    """What the control plane sends an enrolling gateway over mutual TLS (POST
    /v1/enrol): its certificate, for the key it made at boot, and every secret its
    boot configuration lacked."""

    gateway_id: str
    cert_pem: str
    control_token: str = Field(repr=False)
    event_key_b64: str | None = Field(None, repr=False)
    data_key_b64: str | None = Field(None, repr=False)
    store_access: StoreAccess | None = Field(None, repr=False)


class ChunkTarget(_Strict):
    """Where one destination of a multicast job writes a chunk."""

    leg: int = Field(ge=0)
    dst_key: str
    upload_id: str | None = None
    meta: ObjectMeta | None = None
    attempt: int = Field(0, ge=0)


class ChunkWork(_Strict):
    """One chunk for a source gateway to read, seal and send.

    A multicast job's chunk names in ``targets`` each destination that still
    needs it (its key, upload and attempt there); the chunk is read once and
    sent towards all of them. The top-level ``dst_key``/``upload_id``/``attempt``
    are then the first target's."""

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
    targets: list[ChunkTarget] = Field(
        default_factory=list, description="multicast: each destination that still needs it"
    )

    def legs(self) -> list[int]:
        return [t.leg for t in self.targets] or [0]


class ChunkBatch(_Strict):
    job_id: str
    chunks: list[ChunkWork]


# ---------------------------------------------------------------- job control messages
#
# What the requests queue takes besides TransferRequests: orders for a job the
# control plane already has (the CLI's `--on` mode sends them). Each carries a
# request_id, the idempotency key of the requests queue.


class StartJob(_Strict):
    """Start a job created with ``hold`` (the user accepted its plan), or resume an
    interrupted one."""

    type: Literal["start_job"] = "start_job"
    version: Literal[1] = 1
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    job_id: str


class CancelJob(_Strict):
    """Cancel a job: it fails with ``reason``; its gateways are terminated, its firewall
    rules revoked, its control queues deleted and its multipart uploads aborted."""

    type: Literal["cancel_job"] = "cancel_job"
    version: Literal[1] = 1
    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    job_id: str
    reason: str = Field("cancelled by the user", max_length=500)


JobControl = Annotated[StartJob | CancelJob, Field(discriminator="type")]


class JobControlEnvelope(BaseModel):
    """A job control message, for schema publication and parsing."""

    message: JobControl


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
    discard: bool = Field(False, description="a source drops its queued chunks first")


class ShutdownMessage(_Strict):
    """Stop the gateway (``POST /v1/shutdown``)."""

    type: Literal["shutdown"] = "shutdown"


class EnrolledMessage(_Strict):
    """A queue-controlled gateway's secrets (:class:`EnrolSecrets` JSON), sealed to
    the X25519 key it posted in its :class:`GatewayEnrol`: X25519 with an ephemeral
    key, HKDF-SHA256, AES-256-GCM (:func:`skyhop.crypto.seal_to`). Only the gateway
    that made that key opens it; whoever reads the queue learns nothing."""

    type: Literal["enrolled"] = "enrolled"
    gateway_id: str = Field(max_length=256)
    ephemeral_key_b64: str = Field(max_length=64)
    nonce_b64: str = Field(max_length=32)
    sealed_b64: str = Field(max_length=48 * 1024)


ControlMessage = Annotated[
    PeersMessage | ChunksMessage | DrainMessage | ShutdownMessage | EnrolledMessage,
    Field(discriminator="type"),
]


#: a gateway's life: starting, ready (taking work), draining (its last chunks), stopped
GatewayState = Literal["starting", "ready", "draining", "stopped"]


class GatewayStatus(_Strict):
    gateway_id: str
    role: GatewayRole
    state: GatewayState
    chunks_queued: int = 0
    chunks_in_flight: int = 0
    chunks_done: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    bytes_read: int = Field(0, description="source: bytes read from its store (once per chunk)")
    errors: int = 0


# ---------------------------------------------------------------- gateway events


class _Event(_Strict):
    version: Literal[1] = 1
    job_id: str
    gateway_id: str
    at: Timestamp = Field(default_factory=utcnow, description="RFC 3339, with an offset")
    mac: str | None = Field(
        None,
        description="HMAC-SHA256 (hex) of the event without this field, under the sending "
        "gateway's own event key; the control plane drops an event whose MAC does not check",
    )


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
    leg: int = Field(0, ge=0, description="multicast: the destination that wrote it")


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
    leg: int = Field(0, ge=0, description="multicast: the destination it failed for")


class GatewayErrorEvent(_Event):
    type: Literal["gateway_error"] = "gateway_error"
    message: str
    fatal: bool = False


class GatewayEnrol(_Event):
    """A queue-controlled gateway, just booted, asks for its secrets: the one-time
    token of its boot configuration, the public half of the TLS key it made (to be
    certified by the job CA) and an X25519 public key to seal the secrets to. It
    has no event key yet, so it carries no MAC: the control plane checks the token
    against the hash it keeps before anything else, and spends it."""

    type: Literal["gateway_enrol"] = "gateway_enrol"
    token: str = Field(repr=False, min_length=16, max_length=256)
    tls_public_key_pem: str = Field(max_length=4096)
    seal_key_b64: str = Field(max_length=64)


GatewayEvent = Annotated[
    GatewayReady | ChunkVerified | ChunkFailed | GatewayErrorEvent | GatewayEnrol,
    Field(discriminator="type"),
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
    bytes: int = Field(description="bytes of the objects copied and verified")
    seconds: float
    gbps: float
    chunks_resent: int = Field(0, description="sends of a chunk beyond its first")
    chunks_resent_after_failure: int = Field(
        0,
        description="of chunks_resent, those after the chunk failed (a write, a read, a "
        "checksum); the rest were in flight when the job stopped or a gateway was lost",
    )
    verification: VerificationSummary | None = None
    plan: RoutePlan | None = None
    failures: list[str] = Field(default_factory=list)
    sync: SyncSummary | None = None
    csv: str | None = Field(None, description="path of the per-object CSV report")
    data_path: Literal["direct", "gateways"] = Field(
        "gateways", description="direct: moved by the CLI process itself, no gateways"
    )
    encryption: Encryption = Field(
        Encryption.AES_GCM, description="chunk sealing between gateways (none on the direct path)"
    )
    server_side_copies: int = Field(
        0, ge=0, description="objects the store copied itself (no bytes moved through skyhop)"
    )
    source_bytes_read: int | None = Field(
        None,
        ge=0,
        description="bytes the source gateways read from the source (a multicast job's once "
        "for every destination), when their counters could be asked",
    )
    destinations: list[JobReport] = Field(
        default_factory=list,
        description="multicast: each destination's own report (its leg job, state, "
        "verification and failures); the fields above sum them",
    )


class VerificationSummary(_Strict):
    """The post-transfer listing check: every key and size compared."""

    checked: int
    missing: list[str] = Field(default_factory=list)
    size_mismatches: list[str] = Field(default_factory=list)
    checksum_mismatches: list[str] = Field(default_factory=list)
    checksum_methods: dict[str, int] = Field(default_factory=dict)
    unlisted: int = Field(
        0, ge=0, description="mismatches left out of the lists above (a report kept short)"
    )

    @property
    def mismatches(self) -> int:
        return (
            len(self.missing)
            + len(self.size_mismatches)
            + len(self.checksum_mismatches)
            + self.unlisted
        )

    @model_validator(mode="after")
    def _sorted(self) -> VerificationSummary:
        self.missing.sort()
        self.size_mismatches.sort()
        self.checksum_mismatches.sort()
        return self


Job.model_rebuild()
JobRuntime.model_rebuild()
JobReport.model_rebuild()

#: How many failures and listing mismatches of each kind a report kept with its job
#: (``Job.report``) lists; the rest are counted (a manifest record stays small).
REPORT_LIST_LIMIT = 50


def short_report(report: JobReport, limit: int = REPORT_LIST_LIMIT) -> JobReport:
    """``report`` with each list cut to ``limit`` entries, the rest counted."""
    update: dict[str, object] = {}
    if len(report.failures) > limit:
        more = len(report.failures) - limit
        update["failures"] = [
            *report.failures[:limit],
            f"... and {more} more failure(s): see the CSV report",
        ]
    v = report.verification
    if v is not None:
        lists = {
            "missing": v.missing,
            "size_mismatches": v.size_mismatches,
            "checksum_mismatches": v.checksum_mismatches,
        }
        cut = sum(max(0, len(items) - limit) for items in lists.values())
        if cut:
            update["verification"] = v.model_copy(
                update={k: items[:limit] for k, items in lists.items()}
                | {"unlisted": v.unlisted + cut}
            )
    return report.model_copy(update=update) if update else report


def plan_parts(
    size: int, chunk_size: int | None, multipart_threshold: int | None
) -> tuple[int, int, bool]:
    """How an object of ``size`` bytes is cut: (chunk_size, n_chunks, multipart).

    Objects at or below the threshold travel as one chunk. Larger ones are cut
    into parts of ``chunk_size``, grown when needed to stay within the
    10,000-part limit of the stores. Sizes left open (options not yet fixed for
    a store, see :meth:`TransferOptions.for_store`) take the generic defaults.
    """
    chunk_size = chunk_size or DEFAULT_CHUNK_SIZE
    multipart_threshold = multipart_threshold or DEFAULT_MULTIPART_THRESHOLD
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

    model_config = ConfigDict(
        json_schema_extra={
            # exactly one source: a bucket, or the buckets carrying a tag
            "oneOf": [
                {
                    "required": ["source_bucket"],
                    "properties": {"source_bucket": {"type": "string"}},
                },
                {"required": ["bucket_tag"], "properties": {"bucket_tag": {"type": "string"}}},
            ],
            # a destination, or several
            "anyOf": [
                {"required": ["destination"]},
                {"required": ["destinations"], "properties": {"destinations": {"minItems": 1}}},
            ],
            "x-skyhop-ordered": [["min_size", "max_size"]],
            "x-skyhop-first-of": ["destination", "destinations"],
        }
    )

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}(?![\s\S])")
    source_bucket: str | None = None
    bucket_tag: str | None = Field(None, pattern=r"^[^=]+=")
    prefix: str = Field(
        "",
        description="a folder of the source bucket: 'logs' means 'logs/' (keys under "
        "'logs2/' do not match); the key below it is kept under the destination",
    )
    destination: str = Field(
        "",
        description="where replicas go (with several destinations, the first of them)",
        json_schema_extra={"pattern": LOCATION_PATTERN},
    )
    destinations: list[str] = Field(
        default_factory=list,
        max_length=MAX_DESTINATIONS,
        description="several destinations: small objects are written to each by the "
        "function, batches go as one multicast job (read once); empty for one destination",
        json_schema_extra={
            "items": {"type": "string", "pattern": LOCATION_PATTERN},
            "uniqueItems": True,
        },
    )
    propagate_deletes: bool = False
    inline_max_bytes: int = Field(64 * 1024 * 1024, ge=0)
    include: list[str] = Field(default_factory=list, json_schema_extra=_GLOBS)
    exclude: list[str] = Field(default_factory=list, json_schema_extra=_GLOBS)
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
        return value if value == "" else _location(value)

    @field_validator("destinations")
    @classmethod
    def _valid_destinations(cls, value: list[str]) -> list[str]:
        return [_location(item) for item in value]

    @model_validator(mode="after")
    def _one_source(self) -> ReplicationRule:
        many = list(self.destinations)
        if not self.destination and not many:
            raise _missing(type(self), "destination")
        if (self.source_bucket is None) == (self.bucket_tag is None):
            raise ValueError("give exactly one of source_bucket or bucket_tag")
        _check_limits(self)
        if many and self.destination and many[0] != self.destination:
            raise ValueError("destination must be the first of destinations")
        if len(set(many)) < len(many):
            raise ValueError(
                f"destination {next(d for d in many if many.count(d) > 1)} is named twice"
            )
        self.destination = self.destination or many[0]
        if len(many) <= 1:
            self.destinations = []
        return self

    @property
    def all_destinations(self) -> list[str]:
        """Every destination of the rule, in order."""
        return list(self.destinations) or [self.destination]


class ReplicationConfig(_Strict):
    """The rules file (YAML or JSON) read by the CDK app and the bucket_events function."""

    version: Literal[1] = 1
    rules: list[ReplicationRule] = Field(json_schema_extra={"x-skyhop-unique": "name"})

    @model_validator(mode="after")
    def _unique_names(self) -> ReplicationConfig:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {', '.join(dupes)}")
        return self
