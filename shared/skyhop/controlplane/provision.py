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
  gateway not ready, and launches without waiting. Each gateway boots with no
  secret, only a one-time token (its hash is in its spec), enrols over its
  queues (:func:`enrol_queued`: ``gateway_enrol`` in, its secrets sealed to a
  key it made out on its control queue), then posts ``gateway_ready`` (with the address peers reach it at) to the events queue;
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
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skyhop import crypto, enrolment, store_access, testhooks
from skyhop.cleanup import Cleanup
from skyhop.compute.base import ComputeProvider, InstanceIdentities, PowersOff, gateways_enrol
from skyhop.errors import ConflictError, GatewayError, SkyhopError, ThrottledError, first_line
from skyhop.gateway_api import GatewayClient
from skyhop.models import (
    ChunkBatch,
    ChunksMessage,
    Encryption,
    EnrolledMessage,
    GatewayConfig,
    GatewayEnrol,
    GatewayReady,
    GatewayRole,
    GatewaySpec,
    Job,
    JobRuntime,
    JobState,
    PeersMessage,
    PeerSpec,
    PendingEnrolment,
    ShutdownMessage,
    utcnow,
)
from skyhop.queues.base import ControlQueues, InstanceScopedControlQueues, Queue
from skyhop.state.base import ManifestStore
from skyhop.store_access import StoreAccess
from skyhop.uri import parse_uri

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

#: TLS connections per hop when the request does not say
DEFAULT_CONNECTIONS = 8


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
    """How many gateways each hop gets: the plan's count for that region, else the
    option. A route forced through relays (``--relay``) is planned too, so the
    planner's per-region caps hold for its relays as for any route."""
    default = job.request.options.gateways_per_region
    counts = [default] * len(path)
    if job.plan:
        by_region = {g.region: g.count for g in job.plan.gateways}
        counts = [by_region.get(region, default) for region in path]
    return counts


def planned_gateways(job: Job) -> int:
    """How many gateways the job's route takes."""
    return sum(gateways_per_hop(job, route(job)))


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class _Group:
    """Gateways of one role in one region, sending to the groups in ``next``: a hop
    of a route, or a node of a multicast tree (``leg``: the destination a
    destination group writes; ``legs``: the destinations reached through it)."""

    label: str  # in the gateway ids: h0, h1, ... along a route; s, rN, dN in a tree
    role: GatewayRole
    region: str
    count: int
    destination: str | None = None
    leg: int = 0
    legs: list[int] = field(default_factory=list)
    next: list[_Group] = field(default_factory=list)


@dataclass
class _Build:
    """The configurations of one attempt and what the control plane keeps of it."""

    configs: list[GatewayConfig]
    peers: dict[str, list[str]]  # gateway id -> the gateway ids it sends to
    legs: dict[str, list[int]]  # multicast: gateway id -> destinations behind it
    ca: crypto.JobCA
    token: str  # the master: each gateway holds crypto.gateway_token(token, its id)
    client: crypto.IssuedCert  # the control plane's own client certificate

    def next_hops(self, gateway_id: str) -> list[str]:
        return list(self.peers.get(gateway_id, []))


def _route_groups(job: Job) -> list[_Group]:
    """A one-destination job's route, one group per hop, source first."""
    path = route(job)
    counts = gateways_per_hop(job, path)
    groups: list[_Group] = []
    for hop, (region, count) in enumerate(zip(path, counts, strict=True)):
        last = hop == len(path) - 1
        role = (
            GatewayRole.SOURCE
            if hop == 0
            else GatewayRole.DESTINATION
            if last
            else GatewayRole.RELAY
        )
        groups.append(
            _Group(
                label=f"h{hop}",
                role=role,
                region=region,
                count=count,
                destination=job.request.destination if last else None,
            )
        )
    for a, b in zip(groups, groups[1:], strict=False):
        a.next = [b]
    return groups


def tree_groups(job: Job, legs: list[tuple[int, str]]) -> list[_Group]:
    """A multicast job's distribution tree for the destinations ``legs`` (index,
    location) still to be written, from its plan: the source group at the root; in
    each region of the tree that forwards (it has children, or holds several
    destinations) a relay group; one destination group per destination, in its
    region, fed by its region's relay or straight from its parent. A destination
    region that forwards thus runs a relay beside its destination gateways, and
    the source sends to destinations in its own region itself."""
    options = job.request.options
    plan = job.plan
    default = options.gateways_per_region
    src = options.src_region or (plan.src_region if plan else LOCAL_REGION)
    if plan is not None and plan.multicast:
        regions = list(plan.dst_regions)
        parent = {c: p for c, p in plan.tree_parent().items()}
    else:
        regions = [LOCAL_REGION] * len(job.request.all_destinations)
        parent = {}
    count = {(g.region, g.role): g.count for g in plan.gateways} if plan is not None else {}

    def located(leg: int) -> str:
        region = regions[leg] if leg < len(regions) else src
        return region if region in parent else src

    children: dict[str, list[str]] = {}
    for child, par in parent.items():
        children.setdefault(par, []).append(child)
    at: dict[str, list[tuple[int, str]]] = {}
    for leg, location in legs:
        at.setdefault(located(leg), []).append((leg, location))
    groups: list[_Group] = []

    def below(node: str) -> list[int]:
        out = [leg for leg, _ in at.get(node, [])]
        for c in children.get(node, []):
            out += below(c)
        return sorted(out)

    def entry(node: str) -> _Group | None:
        reached = below(node)
        if not reached:
            return None
        nxt = [g for g in (entry(c) for c in sorted(children.get(node, []))) if g is not None]
        kids = len(nxt)
        for leg, location in at.get(node, []):
            dest = _Group(
                label=f"d{leg}",
                role=GatewayRole.DESTINATION,
                region=node,
                count=count.get((node, "destination"), default),
                destination=location,
                leg=leg,
                legs=[leg],
            )
            groups.append(dest)
            nxt.append(dest)
        if node != src and not kids and len(nxt) == 1:
            return nxt[0]  # a leaf holding one destination: its parent sends to it
        role = GatewayRole.SOURCE if node == src else GatewayRole.RELAY
        group = _Group(
            label="s" if node == src else f"r{len(groups)}",
            role=role,
            region=node,
            count=count.get((node, role.value), default),
            legs=reached,
            next=nxt,
        )
        groups.append(group)
        return group

    root = entry(src)
    assert root is not None and root.role == GatewayRole.SOURCE
    groups.remove(root)
    return [root, *groups]


LOCAL_REGION = "local"


def _build(
    job: Job,
    event_sink: str,
    *,
    attempt: int,
    key_wrapper: crypto.KeyWrapper | None,
    control_queue: Callable[[str], str] | None = None,
    legs: list[tuple[int, str]] | None = None,
) -> _Build:
    """One configuration per gateway along the route (a multicast job: over its
    tree, for the destinations ``legs`` still to be written); ``control_queue(id)``
    gives a queue-controlled gateway its queue."""
    multicast = legs is not None
    groups = tree_groups(job, legs) if legs is not None else _route_groups(job)
    ca = crypto.JobCA.create(job.job_id)
    token = crypto.new_control_token()
    # the only certificate any of the job's control APIs accepts (gateway certificates,
    # from the same CA, are refused there)
    client = ca.issue_client_cert("skyhop-control")
    client_sha256 = crypto.cert_fingerprint(client.cert_pem)
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
    # each end's storage remote, resolved here, for that end's gateways only
    source_access = _side_access(job.request.source)
    options = job.request.options
    configs: list[GatewayConfig] = []
    ids: dict[int, list[str]] = {}
    for group in groups:
        role = group.role
        access = (
            source_access
            if role == GatewayRole.SOURCE
            else _side_access(group.destination)
            if group.destination
            else None
        )
        ids[id(group)] = []
        for n in range(group.count):
            gateway_id = f"gw-{job.job_id}-a{attempt}-{group.label}-{n}"
            ids[id(group)].append(gateway_id)
            issued = ca.issue_gateway_cert(gateway_id)
            extra: dict[str, Any] = {}
            if control_queue:
                extra["idle_timeout_s"] = QUEUED_IDLE_TIMEOUT_S
            if options.encryption != Encryption.NONE:  # with none, nothing to seal: no keys
                if role in KEY_ROLES:
                    extra.update(key_fields)
                elif role == GatewayRole.SOURCE:
                    extra.update(public_fields)
            configs.append(
                GatewayConfig(
                    job_id=job.job_id,
                    gateway_id=gateway_id,
                    role=role,
                    region=group.region,
                    ca_cert_pem=ca.cert_pem,
                    cert_pem=issued.cert_pem,
                    key_pem=issued.key_pem,
                    control_token=crypto.gateway_token(token, gateway_id),
                    control_client_sha256=client_sha256,
                    event_key_b64=base64.b64encode(
                        crypto.gateway_event_key(token, gateway_id)
                    ).decode(),
                    source_uri=job.request.source if role == GatewayRole.SOURCE else None,
                    destination_uri=group.destination if role == GatewayRole.DESTINATION else None,
                    store_access=access,
                    leg=group.leg,
                    event_sink=event_sink,
                    control_queue=control_queue(gateway_id) if control_queue else None,
                    connections=options.connections or DEFAULT_CONNECTIONS,
                    workers=_workers(),
                    compression=options.compression,
                    encryption=options.encryption,
                    parent_pid=os.getpid(),
                    test_hooks=_test_hooks(role, group.leg),
                    bwlimit=(
                        max(1, options.bwlimit // group.count)
                        if options.bwlimit and role == GatewayRole.SOURCE
                        else None
                    ),
                    **extra,
                )
            )
    peers: dict[str, list[str]] = {}
    behind: dict[str, list[int]] = {}
    for group in groups:
        hops = [i for nxt in group.next for i in ids[id(nxt)]]
        for gateway_id in ids[id(group)]:
            if hops:
                peers[gateway_id] = hops
            if multicast:
                behind[gateway_id] = list(group.legs)
    return _Build(configs, peers, behind, ca, token, client)


def _peer(spec: GatewaySpec) -> PeerSpec:
    """How a gateway is reached as a next hop (and, in a tree, what lies behind it)."""
    return PeerSpec(
        gateway_id=spec.gateway_id, host=spec.host, data_port=spec.data_port, legs=spec.legs
    )


def _side_access(location: str) -> StoreAccess | None:
    """The resolved storage remote a location names, if it names one."""
    uri = parse_uri(location)
    return store_access.access_for(uri.remote) if uri.remote else None


def launch(
    job: Job,
    compute: ComputeProvider,
    event_sink: str,
    *,
    attempt: int = 1,
    key_wrapper: crypto.KeyWrapper | None = None,
    legs: list[tuple[int, str]] | None = None,
) -> JobRuntime:
    """Launch the job's gateways along its route (a multicast job: its tree, for
    ``legs``), wait until each is ready, set their next hops over the HTTPS
    control API, open the firewall between them, and return how to reach them."""
    built = _build(job, event_sink, attempt=attempt, key_wrapper=key_wrapper, legs=legs)
    client = built.client
    # a VM's configuration travels in its user data or metadata: it gets a boot
    # configuration (no secret, a one-time enrolment token) and its secrets over mTLS
    boots = {c.gateway_id: enrolment.boot_config(c) for c in built.configs if _enrols(compute, c)}
    specs = compute.launch(
        [boots[c.gateway_id][0] if c.gateway_id in boots else c for c in built.configs]
    )
    runtime = JobRuntime(
        gateways=specs,
        ca_cert_pem=built.ca.cert_pem,
        client_cert_pem=client.cert_pem,
        client_key_pem=client.key_pem,
        control_token=built.token,
        compute=compute.name,
        attempt=attempt,
    )
    with Cleanup(f"wiring the gateways of job {job.job_id}") as undo:
        undo.add(compute.terminate, job.job_id)
        undo.add(compute.revoke, job.job_id)  # newest first: rules, then gateways
        by_id = {s.gateway_id: s for s in specs}
        if boots:
            full = {c.gateway_id: c for c in built.configs}
            for gateway_id, (_, token_sha256) in boots.items():
                spec = by_id[gateway_id]
                enrolment.enrol(spec, full[gateway_id], token_sha256, built.ca, client)
            for gateway_id in boots:
                _wait_control(runtime, by_id[gateway_id])
        for spec in specs:
            spec.legs = built.legs.get(spec.gateway_id, [])
        for gateway_id, hops in built.peers.items():
            peers = [_peer(by_id[i]) for i in hops]
            gateway_client(runtime, by_id[gateway_id]).set_peers(peers)
            by_id[gateway_id].next_hops = list(hops)
        compute.authorize(job.job_id, specs)
    return runtime


def _enrols(compute: ComputeProvider, cfg: GatewayConfig) -> bool:
    """Whether ``cfg``'s gateway is a VM that enrols (its provider is
    :class:`~skyhop.compute.base.Enrols`)."""
    return gateways_enrol(compute, cfg.region)


def _wait_control(runtime: JobRuntime, spec: GatewaySpec, timeout: float = 60.0) -> None:
    """Wait until an enrolled gateway's control API answers (it starts once enrolled)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            gateway_client(runtime, spec).status()
            return
        except GatewayError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)


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
    legs: list[tuple[int, str]] | None = None,
) -> Job:
    """Create a control queue per gateway, record the job as PROVISIONING with every
    gateway not ready, and launch the gateways without waiting for them.

    The runtime is written *before* the launch, so a gateway_ready handled at once
    finds its gateway. Once the launch names the instances, each gateway's queue is
    closed to every other instance (:func:`_restrict_queues`). A launch that fails
    (that included) is undone (gateways, rules, queues) and
    leaves the job INTERRUPTED, to be resumed. When another caller moved the job
    first, nothing is launched and the job is returned as it is."""
    job_id = job.job_id
    made: list[str] = []

    def create(gateway_id: str) -> str:
        made.append(queues.create(job_id, gateway_id))
        return made[-1]

    with Cleanup(f"building the gateways of job {job_id}") as undo:
        undo.add(_delete_queues, queues, job_id, made)
        built = _build(
            job,
            event_sink,
            attempt=attempt,
            key_wrapper=key_wrapper,
            control_queue=create,
            legs=legs,
        )
    # user data and metadata hold no secret: each gateway boots with a one-time token
    # and gets its secrets, sealed to a key it makes, on its queue (enrol_queued)
    boots = {c.gateway_id: enrolment.queued_boot(c) for c in built.configs}
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
                legs=built.legs.get(c.gateway_id, []),
                ready=False,
                enrolment=boots[c.gateway_id][1],
            )
            for c in built.configs
        ],
        ca_cert_pem=built.ca.cert_pem,
        ca_key_pem=built.ca.key_pem,  # certifies the keys the gateways make at boot
        control_token=built.token,  # the master: events are checked against its keys
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
    with Cleanup(f"launching the gateways of job {job_id}") as undo:
        undo.add(_interrupted, manifest, job_id, undo)  # last: the job is left resumable
        undo.add(_delete_queues, queues, job_id, made)
        undo.add(compute.terminate, job_id)
        undo.add(compute.revoke, job_id)
        specs = compute.launch([boots[c.gateway_id][0] for c in built.configs])
        _restrict_queues(
            compute, queues, specs, {c.gateway_id: c.control_queue for c in built.configs}
        )
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


def _restrict_queues(
    compute: ComputeProvider,
    queues: ControlQueues,
    specs: list[GatewaySpec],
    control: dict[str, str | None],
) -> None:
    """Close each gateway's control queue to every cloud instance but its own, before
    anything is sent on it (its enrolment's secrets are the first): where the compute
    names its instances (EC2) and the queues can be scoped to one (SQS). Every gateway
    role may take from every control queue; without this, one job's compromised
    gateway could read or drain every other gateway's orders. Local processes and
    queues that cannot be scoped get nothing; a failure fails the launch."""
    if not isinstance(compute, InstanceIdentities) or not isinstance(
        queues, InstanceScopedControlQueues
    ):
        return
    for spec in specs:
        uri = control.get(spec.gateway_id)
        instance = compute.instance_identity(spec)
        if uri is not None and instance is not None:
            queues.restrict_to_instance(uri, instance)


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


def enrol_queued(
    manifest: ManifestStore, event: GatewayEnrol
) -> tuple[str, EnrolledMessage, PendingEnrolment]:
    """Enrol a queue-controlled gateway: check the token it presents against the
    hash kept for it (before anything else), seal its secrets to the key it offers
    and spend the token with a conditional write on the job, so that a replayed or
    concurrent enrolment gets nothing. Returns its control queue, the message to
    send there and what was spent (:func:`unspend` gives it back when the message
    could not be sent); GatewayError (changing nothing) when it may not enrol."""
    where = f"enrolment of gateway {event.gateway_id!r} of job {event.job_id}"
    job = manifest.get_job(event.job_id)
    runtime = job.runtime if job is not None else None
    gateways = runtime.gateways if runtime is not None else []
    spec = next((g for g in gateways if g.gateway_id == event.gateway_id), None)
    pending = spec.enrolment if spec is not None else None
    if (
        runtime is None
        or spec is None
        or spec.control_queue is None
        or pending is None
        or not enrolment.token_matches(event.token, pending.token_sha256)
    ):
        raise GatewayError(f"{where}: no such gateway waits for that token")
    try:
        message = enrolment.seal_secrets(runtime, spec, pending, event)
    except GatewayError as exc:
        raise GatewayError(f"{where}: {exc}") from None

    def spend(g: GatewaySpec) -> GatewaySpec:
        if g.gateway_id != event.gateway_id or g.enrolment != pending:
            return g
        return g.model_copy(update={"enrolment": None})

    spent = update_gateways(
        manifest, event.job_id, spend, states={JobState.PROVISIONING, JobState.RUNNING}
    )
    if spent is None or not spent[1]:
        raise GatewayError(f"{where}: the token was spent meanwhile")
    return spec.control_queue, message, pending


def unspend(
    manifest: ManifestStore, job_id: str, gateway_id: str, pending: PendingEnrolment
) -> None:
    """Give back a token whose secrets could not be sent (nobody got them): the
    enrolment, delivered again, is then answered. A gateway enrolled or ready
    meanwhile keeps what it has."""

    def back(g: GatewaySpec) -> GatewaySpec:
        if g.gateway_id != gateway_id or g.enrolment is not None or g.ready:
            return g
        return g.model_copy(update={"enrolment": pending})

    update_gateways(manifest, job_id, back, states={JobState.PROVISIONING, JobState.RUNNING})


def record_ready(manifest: ManifestStore, event: GatewayReady) -> tuple[Job, bool] | None:
    """Record that a queue-controlled gateway is ready, at the address it reported.

    A gateway already ready is never moved: a later gateway_ready (it restarted)
    counts only at the address recorded, and then its next hops are sent again.
    Returns the job and whether this event changed it (a duplicate or an older
    event does not); None when the event is not for a queue-controlled gateway
    of the job's current attempt (the embedded path, a previous attempt)."""

    def ready(spec: GatewaySpec) -> GatewaySpec:
        if spec.gateway_id != event.gateway_id:
            return spec
        if spec.ready_at is not None and event.at <= spec.ready_at:
            return spec  # a duplicate, or older than what is recorded
        if spec.ready and (spec.host, spec.data_port, spec.control_port) != (
            event.host,
            event.data_port,
            event.control_port,
        ):
            log.warning(
                "gateway %s is ready at %s: a gateway_ready naming %s:%d does not move it",
                spec.gateway_id,
                spec.host,
                event.host,
                event.data_port,
            )
            return spec
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
        peers = [_peer(by_id[h]) for h in spec.next_hops]
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


def _interrupted(manifest: ManifestStore, job_id: str, undo: Cleanup) -> None:
    """A launch failed: the job is INTERRUPTED, saying why, to be resumed."""
    manifest.update_job(
        job_id,
        expect={JobState.PROVISIONING},
        state=JobState.INTERRUPTED,
        error=f"launching gateways: {first_line(undo.error, limit=500)}",
    )


#: how long teardown waits for the gateways it told to shut down to power their VMs
#: off (a gateway gives its workers up to 35 s to finish a store write, then exits)
POWER_OFF_WAIT = 60.0


def shutdown_https(
    job: Job | None,
    compute: ComputeProvider | None = None,
    *,
    wait: float = 10.0,
    power_off: float = POWER_OFF_WAIT,
    poll: float = 0.5,
) -> list[str]:
    """Tell each gateway VM controlled over HTTPS to shut down, and wait (up to
    ``wait`` seconds) until their control ports close, so each exits cleanly (its
    runner then powers the VM off) before the provider terminates it. Where
    ``compute`` can tell (:class:`~skyhop.compute.base.PowersOff`), wait (up to
    ``power_off`` seconds) until the VMs told are off: a closed control port comes
    before the gateway's exit and its runner's poweroff, and a VM terminated in
    between is cut off in the middle of its shutdown. Best effort: a gateway that
    does not answer, or is not off in time, is terminated anyway. Local gateway
    processes are stopped by their provider. Returns the gateway ids told."""
    if job is None or job.runtime is None or job.runtime.compute == "local":
        return []
    runtime = job.runtime
    told: list[GatewaySpec] = []
    for gateway in runtime.gateways:
        if gateway.control_queue is not None or not runtime.client_cert_pem:
            continue
        try:
            gateway_client(runtime, gateway).shutdown()
            told.append(gateway)
        except SkyhopError as exc:
            log.info("shutdown of %s: %s", gateway.gateway_id, exc)
    deadline = time.monotonic() + wait
    for gateway in told:
        while time.monotonic() < deadline and _listening(gateway):
            time.sleep(0.2)
    if told and isinstance(compute, PowersOff):
        _wait_powered_off(compute, job.job_id, {g.gateway_id for g in told}, power_off, poll)
    return [g.gateway_id for g in told]


def _wait_powered_off(
    compute: PowersOff, job_id: str, told: set[str], timeout: float, poll: float
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            still = compute.running(job_id) & told
        except SkyhopError as exc:
            log.info("job %s: cannot tell whether its gateways are off: %s", job_id, exc)
            return
        if not still:
            return
        if time.monotonic() >= deadline:
            log.info(
                "job %s: %s not off %g s after shutdown; terminating",
                job_id,
                ", ".join(sorted(still)),
                timeout,
            )
            return
        time.sleep(poll)


def _listening(gateway: GatewaySpec) -> bool:
    try:
        with socket.create_connection((gateway.host, gateway.control_port), timeout=1):
            return True
    except OSError:
        return False


def _delete_queues(queues: ControlQueues, job_id: str, uris: list[str]) -> None:
    try:
        queues.delete_job(job_id, uris)
    except SkyhopError as exc:
        log.warning("deleting the control queues of job %s failed: %s", job_id, exc)


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
        token=crypto.gateway_token(runtime.control_token, gateway.gateway_id),
        cert_pem=runtime.client_cert_pem,
        key_pem=runtime.client_key_pem,
    )


def _test_hooks(role: GatewayRole, leg: int = 0) -> dict[str, str]:
    """Fault-injection hooks from ``SKYHOP_TEST_HOOKS`` (tests only), e.g.
    ``source:flip_wire=2,destination:...``; ``destination1:...`` names the
    destination gateways of a multicast job's second destination only."""
    raw = testhooks.raw()  # none at all outside the test suite
    hooks: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        scope, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        if key and (scope == role.value or scope == f"{role.value}{leg}"):
            hooks[key] = value
    return hooks
