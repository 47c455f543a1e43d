"""Provisioning: turn a job's route into gateway configurations, launch them,
wire next hops and open the firewall only between them.

Each attempt of a job gets a fresh CA, certificates, control token and data
key; nothing of the previous attempt is trusted. The data key is written only
into the configurations of the roles in :data:`KEY_ROLES` (wrapped when a
KeyWrapper is given); relays never receive it.

Two ways to control gateways:

* **HTTPS control API** (the embedded default, gateways as local processes):
  :func:`launch` returns once every gateway is ready, sets next hops over the
  API, opens the firewall and returns the runtime of a RUNNING job.
* **Control queues** (cloud functions: no fixed egress address to open a
  control port to, and VMs that take minutes to boot): :func:`launch_queued`
  creates one queue per gateway, records the job as PROVISIONING with every
  gateway not ready, and launches without waiting. Each gateway posts
  ``gateway_ready`` (with the address peers reach it at) to the events queue;
  :func:`record_ready` records it with a compare-and-swap on the job, so two
  functions handling two gateways' events at once cannot lose one. Once all
  are ready, :func:`connect` opens the firewall between their addresses and
  sends each its next hops; chunks then go to source gateways' queues
  (:func:`submit`), and teardown sends ``shutdown`` (:func:`shutdown_queued`)
  before the queues are deleted. The control plane then holds no client
  certificate and no control token: it cannot call a gateway's HTTPS API.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass

from skyhop import crypto
from skyhop.compute.base import ComputeProvider
from skyhop.errors import ConflictError, GatewayError, SkyhopError, ThrottledError
from skyhop.gateway_api import GatewayClient
from skyhop.models import (
    ChunkBatch,
    ChunksMessage,
    GatewayConfig,
    GatewayReady,
    GatewayRole,
    GatewaySpec,
    Job,
    JobRuntime,
    JobState,
    PeersMessage,
    PeerSpec,
    ShutdownMessage,
    utcnow,
)
from skyhop.queues.base import ControlQueues, Queue
from skyhop.state.base import ManifestStore

log = logging.getLogger("skyhop.controlplane")

#: The roles whose configurations carry the job's PRIVATE key (clear for local
#: processes, else wrapped): destinations only. Sources get the public half and
#: seal each chunk under a key derived from it (skyhop.crypto.sender_chunk_key);
#: relays get nothing. This is the one place that decides it.
KEY_ROLES = frozenset({GatewayRole.DESTINATION})

#: Control messages are cut to stay under every queue's message limit (Azure
#: Storage Queue's 64 KiB is the smallest).
MAX_CONTROL_MESSAGE_BYTES = 60 * 1024

#: Compare-and-swap rounds before a readiness update gives up (and is retried).
CAS_ROUNDS = 32

#: A queue-controlled gateway may wait long for its peers to boot and gets no
#: control calls while it waits; the reaper (orphans terminated, their queues
#: deleted, which stops the poller) is what ends a forgotten one.
QUEUED_IDLE_TIMEOUT_S = 2 * 3600.0

OpenQueue = Callable[[str], Queue]


def route(job: Job) -> list[str]:
    """Regions in order, source first: explicit relays win, else the plan's path."""
    options = job.request.options
    src = options.src_region or (job.plan.src_region if job.plan else "local")
    dst = options.dst_region or (job.plan.dst_region if job.plan else "local")
    if options.relays:
        return [src, *options.relays, dst]
    if job.plan and job.plan.path:
        return list(job.plan.path)
    return [src, dst]


def gateways_per_hop(job: Job, path: list[str]) -> list[int]:
    """How many gateways each hop gets: the plan's count for that region, else the option."""
    default = job.request.options.gateways_per_region
    counts = [default] * len(path)
    if job.plan and not job.request.options.relays:
        by_region = {g.region: g.count for g in job.plan.gateways}
        counts = [by_region.get(region, default) for region in path]
    return counts


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class _Build:
    """The configurations of one attempt and what the control plane keeps of it."""

    configs: list[GatewayConfig]
    hops: list[list[str]]  # gateway ids per hop, source hop first
    ca: crypto.JobCA
    token: str

    def next_hops(self, gateway_id: str) -> list[str]:
        for hop, ids in enumerate(self.hops[:-1]):
            if gateway_id in ids:
                return list(self.hops[hop + 1])
        return []


def _build(
    job: Job,
    event_sink: str,
    *,
    attempt: int,
    key_wrapper: crypto.KeyWrapper | None,
    control_queue: Callable[[str], str] | None = None,
) -> _Build:
    """One configuration per gateway along the route; ``control_queue(gateway_id)``
    gives a queue-controlled gateway its queue."""
    path = route(job)
    counts = gateways_per_hop(job, path)
    ca = crypto.JobCA.create(job.job_id)
    token = crypto.new_control_token()
    data_key = crypto.generate_job_key()
    public_fields: dict[str, object] = {
        "recipient_key_b64": crypto.encode_key(crypto.job_public_key(data_key))
    }
    key_fields: dict[str, object] = {"data_key_b64": base64.b64encode(data_key).decode()}
    if key_wrapper is not None:  # wrapped once, for every gateway that gets the key
        key_fields = {
            "wrapped_data_key": key_wrapper.wrap(data_key),
            "key_wrap": "none" if isinstance(key_wrapper, crypto.LocalKeyWrapper) else "kms",
        }
    del data_key
    options = job.request.options
    configs: list[GatewayConfig] = []
    hops: list[list[str]] = []
    for hop, (region, count) in enumerate(zip(path, counts, strict=True)):
        role = (
            GatewayRole.SOURCE
            if hop == 0
            else GatewayRole.DESTINATION
            if hop == len(path) - 1
            else GatewayRole.RELAY
        )
        ids = []
        for n in range(count):
            gateway_id = f"gw-{job.job_id}-a{attempt}-h{hop}-{n}"
            ids.append(gateway_id)
            issued = ca.issue_gateway_cert(gateway_id)
            configs.append(
                GatewayConfig(
                    job_id=job.job_id,
                    gateway_id=gateway_id,
                    role=role,
                    region=region,
                    ca_cert_pem=ca.cert_pem,
                    cert_pem=issued.cert_pem,
                    key_pem=issued.key_pem,
                    control_token=token,
                    source_uri=job.request.source if role == GatewayRole.SOURCE else None,
                    destination_uri=(
                        job.request.destination if role == GatewayRole.DESTINATION else None
                    ),
                    event_sink=event_sink,
                    control_queue=control_queue(gateway_id) if control_queue else None,
                    **({"idle_timeout_s": QUEUED_IDLE_TIMEOUT_S} if control_queue else {}),
                    connections=options.connections,
                    workers=_workers(),
                    compression=options.compression,
                    parent_pid=os.getpid(),
                    test_hooks=_test_hooks(role),
                    bwlimit=(
                        max(1, options.bwlimit // count)
                        if options.bwlimit and role == GatewayRole.SOURCE
                        else None
                    ),
                    **(  # type: ignore[arg-type]
                        key_fields
                        if role in KEY_ROLES
                        else public_fields
                        if role == GatewayRole.SOURCE
                        else {}
                    ),
                )
            )
        hops.append(ids)
    return _Build(configs, hops, ca, token)


def launch(
    job: Job,
    compute: ComputeProvider,
    event_sink: str,
    *,
    attempt: int = 1,
    key_wrapper: crypto.KeyWrapper | None = None,
) -> JobRuntime:
    """Launch the job's gateways along its route, wait until each is ready, set
    their next hops over the HTTPS control API, open the firewall between them,
    and return how to reach them."""
    built = _build(job, event_sink, attempt=attempt, key_wrapper=key_wrapper)
    client = built.ca.issue_client_cert("skyhop-control")
    specs = compute.launch(built.configs)
    runtime = JobRuntime(
        gateways=specs,
        ca_cert_pem=built.ca.cert_pem,
        client_cert_pem=client.cert_pem,
        client_key_pem=client.key_pem,
        control_token=built.token,
        compute=compute.name,
        attempt=attempt,
    )
    try:
        by_id = {s.gateway_id: s for s in specs}
        for hop, ids in enumerate(built.hops[:-1]):
            peers = [
                PeerSpec(gateway_id=i, host=by_id[i].host, data_port=by_id[i].data_port)
                for i in built.hops[hop + 1]
            ]
            for gateway_id in ids:
                gateway_client(runtime, by_id[gateway_id]).set_peers(peers)
                by_id[gateway_id].next_hops = [p.gateway_id for p in peers]
        compute.authorize(job.job_id, specs)
    except BaseException:
        compute.revoke(job.job_id)
        compute.terminate(job.job_id)
        raise
    return runtime


# ---------------------------------------------------------------- queue-controlled gateways


def launch_queued(
    job: Job,
    compute: ComputeProvider,
    manifest: ManifestStore,
    event_sink: str,
    queues: ControlQueues,
    *,
    attempt: int = 1,
    key_wrapper: crypto.KeyWrapper | None = None,
) -> Job:
    """Create a control queue per gateway, record the job as PROVISIONING with every
    gateway not ready, and launch the gateways without waiting for them.

    The runtime is written *before* the launch, so a gateway_ready handled at once
    finds its gateway. A launch that fails is undone (gateways, rules, queues) and
    leaves the job INTERRUPTED, to be resumed. When another caller moved the job
    first, nothing is launched and the job is returned as it is."""
    job_id = job.job_id
    made: list[str] = []

    def create(gateway_id: str) -> str:
        made.append(queues.create(job_id, gateway_id))
        return made[-1]

    try:
        built = _build(
            job, event_sink, attempt=attempt, key_wrapper=key_wrapper, control_queue=create
        )
    except BaseException:
        _delete_queues(queues, job_id, made)
        raise
    runtime = JobRuntime(
        gateways=[
            GatewaySpec(
                gateway_id=c.gateway_id,
                job_id=job_id,
                region=c.region,
                role=c.role,
                host=c.advertise_host or "",
                control_queue=c.control_queue,
                next_hops=built.next_hops(c.gateway_id),
                ready=False,
            )
            for c in built.configs
        ],
        ca_cert_pem=built.ca.cert_pem,
        compute=compute.name,
        attempt=attempt,
        launched_at=utcnow(),
    )
    try:
        job = manifest.update_job(
            job_id,
            expect={JobState.PLANNED, JobState.INTERRUPTED},
            state=JobState.PROVISIONING,
            runtime=runtime,
            error=None,
        )
    except ConflictError:
        log.info("job %s is being started by another caller", job_id)
        current = manifest.get_job(job_id)
        return current if current is not None else job
    try:
        specs = compute.launch(built.configs)
    except BaseException as exc:
        try:
            compute.revoke(job_id)
            compute.terminate(job_id)
        finally:
            _delete_queues(queues, job_id, made)
            manifest.update_job(
                job_id,
                expect={JobState.PROVISIONING},
                state=JobState.INTERRUPTED,
                error=f"launching gateways: {_one_line(exc)}",
            )
        raise
    launched = {s.gateway_id: s for s in specs}

    def merge(spec: GatewaySpec) -> GatewaySpec:
        found = launched.get(spec.gateway_id)
        if found is None:
            return spec
        update: dict[str, object] = {"instance_id": found.instance_id}
        if not spec.ready:  # the address a gateway reports wins over the provider's
            update.update(
                host=spec.host or found.host,
                data_port=found.data_port,
                control_port=found.control_port,
            )
        return spec.model_copy(update=update)

    updated = update_gateways(
        manifest, job_id, merge, states={JobState.PROVISIONING, JobState.RUNNING}
    )
    return updated[0] if updated is not None else job


def update_gateways(
    manifest: ManifestStore,
    job_id: str,
    change: Callable[[GatewaySpec], GatewaySpec],
    *,
    states: set[JobState],
) -> tuple[Job, bool] | None:
    """Apply ``change`` to every gateway of the job's runtime with a compare-and-swap
    (re-read and re-applied when another writer came first): the job, and whether
    this call wrote it. None when the job is gone, has no runtime or left ``states``."""
    for _ in range(CAS_ROUNDS):
        job = manifest.get_job(job_id)
        if job is None or job.runtime is None or job.state not in states:
            return None
        gateways = [change(g) for g in job.runtime.gateways]
        if gateways == job.runtime.gateways:
            return job, False
        runtime = job.runtime.model_copy(update={"gateways": gateways})
        try:
            return manifest.update_job(
                job_id, expect={job.state}, expect_updated_at=job.updated_at, runtime=runtime
            ), True
        except ConflictError:
            continue
    raise ThrottledError(f"job {job_id}: too many concurrent updates of its gateways, try again")


def record_ready(manifest: ManifestStore, event: GatewayReady) -> tuple[Job, bool] | None:
    """Record that a queue-controlled gateway is ready, at the address it reported.

    Returns the job and whether this event changed it (a duplicate or an older
    event does not); None when the event is not for a queue-controlled gateway
    of the job's current attempt (the embedded path, a previous attempt)."""

    def ready(spec: GatewaySpec) -> GatewaySpec:
        if spec.gateway_id != event.gateway_id:
            return spec
        if spec.ready_at is not None and event.at <= spec.ready_at:
            return spec  # a duplicate, or older than what is recorded
        return spec.model_copy(
            update={
                "ready": True,
                "ready_at": event.at,
                "host": event.host,
                "data_port": event.data_port,
                "control_port": event.control_port,
            }
        )

    job = manifest.get_job(event.job_id)
    if job is None or job.runtime is None:
        return None
    spec = next((g for g in job.runtime.gateways if g.gateway_id == event.gateway_id), None)
    if spec is None or spec.control_queue is None:
        return None
    return update_gateways(
        manifest, event.job_id, ready, states={JobState.PROVISIONING, JobState.RUNNING}
    )


def all_ready(job: Job) -> bool:
    return job.runtime is not None and all(g.ready for g in job.runtime.gateways)


def connect(job: Job, compute: ComputeProvider, open_queue: OpenQueue) -> None:
    """Open the firewall between the job's (ready) gateways' addresses, then send
    each gateway that forwards its next hops. Repeating it changes nothing."""
    if job.runtime is None:
        raise GatewayError(f"job {job.job_id} has no gateways")
    specs = job.runtime.gateways
    compute.authorize(job.job_id, specs)
    by_id = {g.gateway_id: g for g in specs}
    for spec in specs:
        if not spec.next_hops:
            continue
        if spec.control_queue is None:
            raise GatewayError(f"gateway {spec.gateway_id} has no control queue")
        peers = [
            PeerSpec(gateway_id=h, host=by_id[h].host, data_port=by_id[h].data_port)
            for h in spec.next_hops
        ]
        open_queue(spec.control_queue).send(PeersMessage(peers=peers).model_dump_json())


def submit(
    runtime: JobRuntime, gateway: GatewaySpec, batch: ChunkBatch, open_queue: OpenQueue
) -> None:
    """Hand a batch to a source gateway: through its control queue when it has one,
    else its HTTPS control API."""
    if gateway.control_queue is None:
        gateway_client(runtime, gateway).submit(batch)
        return
    open_queue(gateway.control_queue).send_batch(chunk_messages(batch))


def chunk_messages(batch: ChunkBatch) -> list[str]:
    """The batch as ``chunks`` control messages, each under MAX_CONTROL_MESSAGE_BYTES
    (a batch too large for one is cut in halves until it fits)."""
    body = ChunksMessage(batch=batch).model_dump_json()
    if len(body.encode()) <= MAX_CONTROL_MESSAGE_BYTES or len(batch.chunks) <= 1:
        return [body]
    half = len(batch.chunks) // 2
    return [
        *chunk_messages(batch.model_copy(update={"chunks": batch.chunks[:half]})),
        *chunk_messages(batch.model_copy(update={"chunks": batch.chunks[half:]})),
    ]


def shutdown_queued(job: Job | None, open_queue: OpenQueue) -> list[str]:
    """Send ``shutdown`` to every queue-controlled gateway of the job (best effort:
    a failure is logged; terminating the VMs follows anyway). Returns the queues."""
    if job is None or job.runtime is None:
        return []
    uris = [g.control_queue for g in job.runtime.gateways if g.control_queue]
    body = ShutdownMessage().model_dump_json()
    for uri in uris:
        try:
            open_queue(uri).send(body)
        except SkyhopError as exc:
            log.warning("shutdown message to %s failed: %s", uri, exc)
    return uris


def _delete_queues(queues: ControlQueues, job_id: str, uris: list[str]) -> None:
    try:
        queues.delete_job(job_id, uris)
    except SkyhopError as exc:
        log.warning("deleting the control queues of job %s failed: %s", job_id, exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def gateway_client(runtime: JobRuntime, gateway: GatewaySpec) -> GatewayClient:
    """A control-API client for one of the job's gateways."""
    if gateway.control_queue is not None or not runtime.client_cert_pem:
        raise GatewayError(
            f"gateway {gateway.gateway_id} is controlled through its queue, not its HTTPS API"
        )
    if not gateway.control_port:
        raise GatewayError(f"gateway {gateway.gateway_id} has no control port yet")
    return GatewayClient(
        host=gateway.host,
        control_port=gateway.control_port,
        gateway_id=gateway.gateway_id,
        ca_cert_pem=runtime.ca_cert_pem,
        token=runtime.control_token,
        cert_pem=runtime.client_cert_pem,
        key_pem=runtime.client_key_pem,
    )


def _test_hooks(role: GatewayRole) -> dict[str, str]:
    """Fault-injection hooks from ``SKYHOP_TEST_HOOKS`` (tests only), e.g.
    ``source:flip_wire=2,destination:...``."""
    raw = os.environ.get("SKYHOP_TEST_HOOKS", "")
    hooks: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        scope, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        if scope == role.value and key:
            hooks[key] = value
    return hooks
