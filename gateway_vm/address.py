"""The address a gateway tells the control plane and its peers to reach it at.

``GatewayConfig.advertise_host`` when the provider filled it in; else the
``listen_host`` when it is a real address (local processes, network
namespaces); else, for a VM listening on all interfaces, its public address
from the cloud's instance metadata service, private address when it has no
public one:

* EC2: IMDSv2 (a session token from ``PUT /latest/api/token``, then
  ``public-ipv4`` or ``local-ipv4``); ``AWS_EC2_METADATA_SERVICE_ENDPOINT``
  overrides the endpoint and ``AWS_EC2_METADATA_DISABLED=true`` skips it, as
  for the AWS SDKs.
* GCE: the metadata server (``Metadata-Flavor: Google``), its host from
  ``GCE_METADATA_HOST`` as for the Google libraries.
* Azure: IMDS (``Metadata: true``), ``api-version=2021-02-01``;
  ``SKYHOP_AZURE_IMDS_ENDPOINT`` overrides the endpoint (as the EC2 and GCE
  variables do theirs).

Only link-local metadata addresses are contacted, each with a short timeout.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable

from skyhop.errors import GatewayError
from skyhop.models import GatewayConfig

log = logging.getLogger("gateway_vm")

WILDCARDS = {"", "0.0.0.0", "::"}  # noqa: S104 - what "all interfaces" looks like
TIMEOUT = 2.0
AWS_ENDPOINT = "http://169.254.169.254"
GCE_HOST = "metadata.google.internal"
AZURE_ENDPOINT = "http://169.254.169.254"
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def advertised_host(cfg: GatewayConfig) -> str:
    """Where peers reach this gateway (see the module docstring)."""
    if cfg.advertise_host:
        return cfg.advertise_host
    if cfg.listen_host not in WILDCARDS:
        return cfg.listen_host
    for probe in (aws_address, gce_address, azure_address):
        found = probe()
        if found:
            log.info("advertising %s (from %s)", found, probe.__name__.split("_")[0])
            return found
    raise GatewayError(
        "listening on all interfaces, but no advertise_host and no instance metadata "
        "service told this gateway's address"
    )


def aws_address() -> str | None:
    """EC2's public (else private) IPv4 address through IMDSv2."""
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    base = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", AWS_ENDPOINT).rstrip("/")
    token = _fetch(
        f"{base}/latest/api/token",
        {"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        method="PUT",
    )
    if not token:
        return None
    headers = {"X-aws-ec2-metadata-token": token}
    return _first_ip(
        lambda: _fetch(f"{base}/latest/meta-data/public-ipv4", headers),
        lambda: _fetch(f"{base}/latest/meta-data/local-ipv4", headers),
    )


def gce_address() -> str | None:
    """GCE's external (else internal) address from the metadata server."""
    host = os.environ.get("GCE_METADATA_HOST", GCE_HOST)
    base = f"http://{host}/computeMetadata/v1/instance/network-interfaces/0"
    headers = {"Metadata-Flavor": "Google"}
    return _first_ip(
        lambda: _fetch(f"{base}/access-configs/0/external-ip", headers),
        lambda: _fetch(f"{base}/ip", headers),
    )


def azure_address() -> str | None:
    """An Azure VM's public (else private) address from IMDS."""
    endpoint = os.environ.get("SKYHOP_AZURE_IMDS_ENDPOINT", AZURE_ENDPOINT).rstrip("/")
    base = f"{endpoint}/metadata/instance/network/interface/0/ipv4/ipAddress/0"
    query = "?api-version=2021-02-01&format=text"
    headers = {"Metadata": "true"}
    return _first_ip(
        lambda: _fetch(f"{base}/publicIpAddress{query}", headers),
        lambda: _fetch(f"{base}/privateIpAddress{query}", headers),
    )


def _first_ip(*candidates: Callable[[], str | None]) -> str | None:
    for candidate in candidates:
        text = (candidate() or "").strip()
        try:
            return str(ipaddress.ip_address(text))
        except ValueError:
            continue
    return None


def _fetch(url: str, headers: dict[str, str], *, method: str = "GET") -> str | None:
    request = urllib.request.Request(url, headers=headers, method=method)  # noqa: S310 - an http(s) metadata URL built here
    try:
        with _DIRECT.open(request, timeout=TIMEOUT) as response:
            text: str = response.read(4096).decode("ascii", "replace")
            return text
    except (urllib.error.URLError, OSError, ValueError):
        return None
