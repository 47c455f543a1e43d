"""Provisioning: turn a job's route into gateway configurations, launch them,
wire next hops and open the firewall only between them.

Each attempt of a job gets a fresh CA, certificates, control token and data
key; nothing of the previous attempt is trusted. The data key is written only
into destination gateways' configurations (wrapped when a KeyWrapper is
given); sources and relays never receive it.
"""

from __future__ import annotations

import base64
import os

from skyhop import crypto
from skyhop.compute.base import ComputeProvider
from skyhop.errors import GatewayError
from skyhop.gateway_api import GatewayClient
from skyhop.models import (
    GatewayConfig,
    GatewayRole,
    GatewaySpec,
    Job,
    JobRuntime,
    PeerSpec,
)


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


def launch(
    job: Job,
    compute: ComputeProvider,
    event_sink: str,
    *,
    attempt: int = 1,
    key_wrapper: crypto.KeyWrapper | None = None,
) -> JobRuntime:
    """Launch the job's gateways along its route and return how to reach them."""
    path = route(job)
    counts = gateways_per_hop(job, path)
    ca = crypto.JobCA.create(job.job_id)
    token = crypto.new_control_token()
    data_key = crypto.generate_data_key()
    client = ca.issue_client_cert("skyhop-control")
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
            key_fields: dict[str, object] = {}
            if role != GatewayRole.RELAY:  # TODO(envelope): destinations only
                if key_wrapper is None:
                    key_fields["data_key_b64"] = base64.b64encode(data_key).decode()
                else:
                    key_fields["wrapped_data_key"] = key_wrapper.wrap(data_key)
                    key_fields["key_wrap"] = "kms"
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
                    **key_fields,  # type: ignore[arg-type]
                )
            )
        hops.append(ids)
    del data_key
    specs = compute.launch(configs)
    runtime = JobRuntime(
        gateways=specs,
        ca_cert_pem=ca.cert_pem,
        client_cert_pem=client.cert_pem,
        client_key_pem=client.key_pem,
        control_token=token,
        compute=compute.name,
        attempt=attempt,
    )
    try:
        by_id = {s.gateway_id: s for s in specs}
        for hop, ids in enumerate(hops[:-1]):
            peers = [
                PeerSpec(gateway_id=i, host=by_id[i].host, data_port=by_id[i].data_port)
                for i in hops[hop + 1]
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


def gateway_client(runtime: JobRuntime, gateway: GatewaySpec) -> GatewayClient:
    """A control-API client for one of the job's gateways."""
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
