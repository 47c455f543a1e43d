"""``--gateways cloud``: the control plane runs in the CLI, the gateways on cloud VMs.

Like Skyplane, without a deployment: the job is the embedded control plane's
(SQLite manifest under ``SKYHOP_HOME``), but its gateways are launched by each
cloud's compute provider in the planned regions (source, relays, destination;
one provider per cloud of the route, :class:`~skyhop.compute.routed.RoutedComputeProvider`)
and controlled over their HTTPS API with the job's mutual TLS: EC2 instances,
GCE instances and Azure VMs, each provider built with ``ready_via_events=False``
(it opens the control port and waits for the control API itself) and the
keyword arguments in ``SKYHOP_AWS|GCP|AZURE_COMPUTE_OPTIONS`` (a JSON object:
GCE's ``project``, ``machine_type``, ``image``; Azure's ``subscription_id``,
``vm_size``; ...). Their control port opens only to this machine's address
(``--control-cidr``, else discovered, as a /32; a /0 is refused), their data
ports only to each other. An S3 destination's gateways get the job's data key
wrapped with the KMS key ``alias/skyhop-gateways`` (made once per region, found
by its alias after). Every gateway boots with a boot configuration only and
enrols for its secrets over mutual TLS.

Every gateway installs this machine's own skyhop wheel, by its SHA-256: EC2's
is uploaded here (:func:`skyhop.compute.ec2.wheel.publish_wheel`); GCE's and
Azure's providers publish it at their first launch (to ``wheel_bucket``, default
``skyhop-gateways-PROJECT``, and to ``wheel_account``, default the account of
``AZURE_STORAGE_CONNECTION_STRING``; see :mod:`skyhop.compute.gce` and
:mod:`skyhop.compute.azure_vm`).

Teardown (firewall rules revoked, gateways terminated) runs at the end, after
Ctrl-C and after an error. Against a crash (the CLI killed), every such job
has an open entry in this machine's job index (:mod:`skyhop.jobindex`) naming
the CLI's pid: ``skyhop cleanup``, and the next ``skyhop cp``/``sync``, look
for entries whose process is gone and remove what the job left behind, found
by its tags, naming each gateway and rule. Nothing here calls a cloud unless
such an entry exists. (A gateway left alone also stops itself after
``GatewayConfig.idle_timeout_s`` without a control call and powers its VM off,
which terminates an EC2 instance and stops a GCE or Azure VM.)

How a gateway boots (its configuration in user data, the package it installs)
is each provider's bootstrap: :mod:`skyhop.compute.startup`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from skyhop import jobindex
from skyhop.compute import startup
from skyhop.compute.base import ChecksCredentials, ComputeProvider, FirewallRules, open_provider
from skyhop.compute.routed import RoutedComputeProvider, cloud_of
from skyhop.controlplane.service import ControlPlane
from skyhop.errors import AccessError, SkyhopError, UsageError, first_line
from skyhop.jobindex import IndexEntry
from skyhop.models import GatewayMode, Job, TransferRequest
from skyhop.processes import process_alive, process_start_time

#: where this machine's public address is asked for (``SKYHOP_CHECKIP_URL`` overrides)
CHECKIP_URL = "https://checkip.amazonaws.com"
SCHEME_CLOUD = {"s3": "aws", "gs": "gcp", "az": "azure"}
COMPUTE_PREFIX = "cloud:"


def is_cloud_job(job: Job) -> bool:
    """A job of the local manifest whose gateways run on cloud VMs."""
    runtime = job.runtime
    if runtime is not None and runtime.compute.startswith(COMPUTE_PREFIX):
        return True
    return job.request.options.gateways == GatewayMode.CLOUD


def clouds_of(request: TransferRequest) -> list[str]:
    """The clouds a request's gateways run in: its ends' clouds and its relays'.
    A path on this machine cannot be read or written by a cloud gateway."""
    clouds: set[str] = set()
    for what, uri in (("source", request.source_uri), ("destination", request.destination_uri)):
        if uri.scheme == "local":
            raise UsageError(
                f"--gateways cloud: the {what} {uri} is on this machine, which cloud gateways "
                "cannot reach; copy it without --gateways cloud"
            )
        clouds.add(SCHEME_CLOUD[uri.scheme])
    for region in request.options.relays:
        clouds.add(cloud_of(region))
    return sorted(clouds)


def control_cidrs(given: Iterable[str], discover: Callable[[], str] | None = None) -> list[str]:
    """The ranges the gateways' control port opens to: ``given``, else this machine's
    public address as a /32 (or /128). A range wider than a /16 is refused: the
    control port is for this machine, not a network."""
    out = []
    for text in given:
        try:
            network = ipaddress.ip_network(text.strip(), strict=False)
        except ValueError:
            raise UsageError(f"--control-cidr {text!r} is not an address or CIDR range") from None
        if network.prefixlen < startup.WIDEST_CONTROL_PREFIX[network.version]:
            raise UsageError(
                f"--control-cidr {text}: too wide (it would open the gateways' control port "
                "to a whole network); give this machine's address"
            )
        out.append(str(network))
    if out:
        return sorted(set(out))
    address = ipaddress.ip_address((discover or discover_address)())
    return [f"{address}/{address.max_prefixlen}"]


def discover_address(url: str | None = None, timeout: float = 5.0) -> str:
    """This machine's public address, as a checkip service sees it."""
    url = url or os.environ.get("SKYHOP_CHECKIP_URL") or CHECKIP_URL
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed URL
            text = response.read(256).decode("ascii", "replace").strip()
        return str(ipaddress.ip_address(text))
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"--gateways cloud: could not discover this machine's public address from {url} "
            f"({first_line(exc)}): give it with --control-cidr ADDRESS/32"
        ) from None


# ---------------------------------------------------------------- providers


#: per cloud, the environment variable holding a JSON object of keyword arguments
#: for its compute provider (as ``SKYHOP_COMPUTE_OPTIONS`` for the functions)
OPTIONS_ENV = {
    "aws": "SKYHOP_AWS_COMPUTE_OPTIONS",
    "gcp": "SKYHOP_GCP_COMPUTE_OPTIONS",
    "azure": "SKYHOP_AZURE_COMPUTE_OPTIONS",
}


def provider_options(cloud: str) -> dict[str, Any]:
    """The provider keyword arguments this machine sets for ``cloud``: the JSON
    object in ``OPTIONS_ENV[cloud]`` (for GCE ``project``, ``machine_type``,
    ``image``, ...; for Azure ``subscription_id``, ``vm_size``, ...), and for AWS
    the ``SKYHOP_AWS_AMI`` / ``_INSTANCE_TYPE`` shortcuts and one instance profile per
    gateway role, ``SKYHOP_AWS_INSTANCE_PROFILE_SOURCE`` / ``_RELAY`` / ``_DESTINATION``."""
    name = OPTIONS_ENV[cloud]
    options: dict[str, Any] = {}
    raw = os.environ.get(name, "").strip()
    if raw:
        try:
            loaded = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"{name} is not JSON: {first_line(exc)}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"{name} must be a JSON object of provider options")
        options.update(loaded)
    if cloud == "aws":
        if os.environ.get("SKYHOP_AWS_AMI"):
            options["ami"] = os.environ["SKYHOP_AWS_AMI"]
        if os.environ.get("SKYHOP_AWS_INSTANCE_TYPE"):
            options["instance_type"] = os.environ["SKYHOP_AWS_INSTANCE_TYPE"]
        if os.environ.get("SKYHOP_AWS_INSTANCE_PROFILE"):
            raise UsageError(
                "SKYHOP_AWS_INSTANCE_PROFILE would give every gateway role the same identity "
                "(a relay holding the source's and the destination's storage access): set "
                "SKYHOP_AWS_INSTANCE_PROFILE_SOURCE, _RELAY and _DESTINATION instead"
            )
        profiles = {
            role: os.environ[f"SKYHOP_AWS_INSTANCE_PROFILE_{role.upper()}"]
            for role in ("source", "relay", "destination")
            if os.environ.get(f"SKYHOP_AWS_INSTANCE_PROFILE_{role.upper()}")
        }
        if profiles:
            options["instance_profiles"] = profiles
    return options


def open_providers(
    clouds: Iterable[str], cidrs: list[str] | None, regions: Iterable[str] = ()
) -> RoutedComputeProvider:
    """One compute provider per cloud (EC2, GCE, Azure VMs), each controlled over
    HTTPS from ``cidrs`` (None: providers that find, check and remove, never launch
    for this machine; ``regions`` are where to look, for EC2)."""
    providers: dict[str, ComputeProvider] = {}
    for cloud in clouds:
        if cloud not in OPTIONS_ENV:
            raise UsageError(f"--gateways cloud: no compute provider for {cloud!r}")
        options = provider_options(cloud)
        if cloud == "aws":
            options.setdefault("regions", [r for r in regions if cloud_of(r) == "aws"])
            if cidrs is not None and "package" not in options:
                # the gateways install this machine's own skyhop, by its SHA-256
                from skyhop.compute.ec2.wheel import publish_wheel

                aws_regions = [r.partition(":")[2] or r for r in options["regions"]]
                options["package"] = publish_wheel(
                    (aws_regions or [_default_aws_region()])[0]
                ).model_dump()
            cidr_option: object = cidrs or ()
        else:
            cidr_option = list(cidrs or [])
        try:
            providers[cloud] = open_provider(
                cloud, control_cidrs=cidr_option, ready_via_events=cidrs is None, **options
            )
        except TypeError as exc:  # an option the provider does not take
            raise UsageError(f"{OPTIONS_ENV[cloud]}: {first_line(exc)}") from None
        except UsageError as exc:  # e.g. no project or subscription
            raise UsageError(
                f"--gateways cloud in {cloud}: {first_line(exc)} (or set it in "
                f"{OPTIONS_ENV[cloud]})"
            ) from None
    return RoutedComputeProvider(providers, name=COMPUTE_PREFIX + "+".join(sorted(providers)))


#: how to give each cloud's credentials, for the message when there are none
CREDENTIALS_HINT = {
    "aws": "e.g. AWS_PROFILE",
    "gcp": "e.g. `gcloud auth application-default login` or GOOGLE_APPLICATION_CREDENTIALS",
    "azure": "e.g. `az login` or AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET",
}


def check_credentials(routed: RoutedComputeProvider) -> None:
    """Each cloud's credentials work, before anything is listed or launched."""
    for cloud, provider in sorted(routed.providers.items()):
        if not isinstance(provider, ChecksCredentials):
            continue
        try:
            provider.check_credentials()
        except SkyhopError as exc:
            raise AccessError(
                f"--gateways cloud: no usable {cloud} credentials to launch gateways with "
                f"({first_line(exc)}); set them up ({CREDENTIALS_HINT.get(cloud, 'see its docs')}) "
                "or run without --gateways cloud"
            ) from None


@dataclass
class CloudSetup:
    """What a ``--gateways cloud`` job runs with."""

    cp: ControlPlane
    routed: RoutedComputeProvider
    clouds: list[str]


def control_plane(
    request: TransferRequest,
    given_cidrs: Iterable[str],
    *,
    discover: Callable[[], str] | None = None,
) -> CloudSetup:
    """The embedded control plane with cloud gateways for ``request``."""
    from skyhop.config import manifest_path
    from skyhop.controlplane.planning import default_planner
    from skyhop.state.sqlite import SQLiteManifest

    clouds = clouds_of(request)
    check_credentials(open_providers(clouds, None))
    cidrs = control_cidrs(given_cidrs, discover)
    routed = open_providers(clouds, cidrs)
    factory = None
    if SCHEME_CLOUD[request.destination_uri.scheme] == "aws":
        # S3 destinations open the data key with KMS; GCE and Azure gateways receive it
        # when they enrol, over mutual TLS (their metadata / custom data hold none)
        from skyhop.crypto.kms import KMSKeyWrapper, ensure_key

        region = _key_region(request)
        key_arn = ensure_key(region)

        def factory(job: Job) -> KMSKeyWrapper:
            return KMSKeyWrapper(key_arn, job_id=job.job_id)

    cp = ControlPlane(
        manifest=SQLiteManifest(manifest_path()),
        compute=routed,
        event_sink="pull",
        planner=default_planner,
        key_wrapper_factory=factory,
    )
    return CloudSetup(cp, routed, clouds)


def _key_region(request: TransferRequest) -> str:
    for region in (request.options.dst_region, request.options.src_region):
        if region and cloud_of(region) == "aws":
            return region.partition(":")[2] or region
    return _default_aws_region()


def _default_aws_region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


# ---------------------------------------------------------------- local records and cleanup


def open_entry(job: Job, clouds: list[str]) -> IndexEntry:
    """Record, before anything is launched, that this process runs the job's gateways."""
    pid = os.getpid()
    regions = sorted({g.region for g in job.plan.gateways}) if job.plan else []
    return jobindex.add(
        IndexEntry(
            kind="cloud",
            request_id=job.request.request_id,
            job_id=job.job_id,
            where="+".join(clouds),
            source=job.request.source,
            destination=job.request.destination,
            pid=pid,
            pid_started=process_start_time(pid),
            regions=regions,
        )
    )


def close_entry(job: Job | IndexEntry, state: str | None = None) -> None:
    """The job's gateways and rules are gone (its teardown completed)."""
    request_id = job.request_id if isinstance(job, IndexEntry) else job.request.request_id
    jobindex.set_fields(request_id, open=False, state=state)


def orphaned() -> list[IndexEntry]:
    """Open cloud entries whose CLI process is gone: their gateways may be left behind."""
    return [
        e
        for e in jobindex.entries()
        if e.kind == "cloud" and e.open and not process_alive(e.pid, e.pid_started)
    ]


def leftovers(routed: RoutedComputeProvider, job_id: str) -> list[str]:
    """What the job still has in the clouds: gateways and firewall rules, by name."""
    names = [
        f"gateway {g.gateway_id} ({g.instance_id}, {g.region})"
        for g in routed.list_gateways(job_id)
    ]
    for cloud, provider in sorted(routed.providers.items()):
        if isinstance(provider, FirewallRules):
            names += [_rule_name(cloud, r) for r in provider.rules(job_id)]
    return names


def _rule_name(cloud: str, rule: dict[str, Any]) -> str:
    """One firewall rule as the cleanup names it (EC2's rule fields, or GCE's and
    Azure's ``name``, ``ports`` and ``sources``)."""

    def joined(value: object) -> str:
        if isinstance(value, list | tuple):
            return ",".join(str(v) for v in value)
        return str(value) if value else ""

    name = rule.get("SecurityGroupRuleId") or rule.get("name") or "?"
    ports = joined(rule.get("FromPort")) or joined(rule.get("ports")) or "?"
    sources = rule.get("CidrIpv4") or rule.get("CidrIpv6") or joined(rule.get("sources")) or "?"
    return f"firewall rule {name} ({cloud}, port {ports} from {sources})"


def clean_up(
    entries: list[IndexEntry] | None = None,
    *,
    say: Callable[[str], None] | None = None,
    providers: Callable[[IndexEntry], RoutedComputeProvider] | None = None,
) -> list[str]:
    """Remove what the jobs of ``entries`` (default: :func:`orphaned`) left in the
    clouds, naming each thing removed; the jobs stay resumable. Returns the names."""
    from skyhop.config import manifest_path
    from skyhop.state.sqlite import SQLiteManifest

    say = say or (lambda text: print(text, file=sys.stderr))
    removed: list[str] = []
    manifest = SQLiteManifest(manifest_path())
    for entry in orphaned() if entries is None else entries:
        if entry.job_id is None:
            continue
        clouds = entry.where.split("+")
        routed = providers(entry) if providers else _cleanup_providers(clouds, entry.regions)
        names = leftovers(routed, entry.job_id)
        cp = ControlPlane(manifest=manifest, compute=routed, event_sink="pull")
        job = manifest.get_job(entry.job_id)
        if job is not None and not job.state.finished:
            cp.interrupt(entry.job_id, "its CLI process was gone; its gateways were cleaned up")
        else:
            cp.teardown(entry.job_id)
        for name in names:
            say(f"skyhop: cleanup: job {entry.job_id}: removed {name}")
        if not names:
            say(f"skyhop: cleanup: job {entry.job_id}: nothing was left in {entry.where}")
        removed += names
        current = manifest.get_job(entry.job_id)
        close_entry(entry, current.state.value if current else None)
    return removed


def _cleanup_providers(clouds: list[str], regions: list[str]) -> RoutedComputeProvider:
    """Providers that find (by tags and labels) and remove a job's gateways and rules."""
    return open_providers(clouds, None, regions)
