"""What every cloud gateway VM runs at boot, and how its configuration is adapted.

Cloud providers (GCE, Azure, ...) hand a VM a shell script that installs skyhop
in a virtualenv and starts ``python -m gateway_vm --config PATH`` as a systemd
unit. Only how the configuration reaches the VM differs per cloud (a metadata
attribute on GCE, custom data on Azure); the caller passes the shell command
that writes it to ``$CONFIG``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex

from skyhop.errors import GatewayError, SkyhopError, UsageError
from skyhop.models import GatewayConfig, GatewaySpec

DATA_PORT = 7400
CONTROL_PORT = 7401
CONFIG_PATH = "/etc/skyhop/gateway.json"
RUNNER_PATH = "/opt/skyhop/run-gateway"


def vm_config(cfg: GatewayConfig) -> GatewayConfig:
    """The configuration as a VM gateway needs it: all interfaces, fixed ports, no parent."""
    return cfg.model_copy(
        update={
            "listen_host": "0.0.0.0",  # noqa: S104 - the cloud firewall admits only the job's peers
            "data_port": cfg.data_port or DATA_PORT,
            "control_port": cfg.control_port or CONTROL_PORT,
            "parent_pid": None,
        }
    )


def startup_script(write_config: str, package_spec: str) -> str:
    """A boot script: write the config with ``write_config`` (a shell command that writes
    ``$CONFIG``), install ``package_spec`` (a pip requirement) and start the gateway."""
    if not package_spec.strip():
        raise UsageError("empty package spec for the gateway VMs")
    return f"""#!/bin/bash
# skyhop gateway bootstrap
set -euo pipefail
umask 077
CONFIG={CONFIG_PATH}
mkdir -p /etc/skyhop
{write_config}
chmod 600 "$CONFIG"
if ! command -v python3 >/dev/null || ! python3 -m venv --help >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq python3-venv python3-pip
fi
test -x /opt/skyhop/bin/python || python3 -m venv /opt/skyhop
/opt/skyhop/bin/pip install -q --upgrade pip
/opt/skyhop/bin/pip install -q {shlex.quote(package_spec)}
cat > {RUNNER_PATH} <<'SKYHOP_RUNNER'
{runner_script()}SKYHOP_RUNNER
chmod 700 {RUNNER_PATH}
systemctl stop skyhop-gateway 2>/dev/null || true
systemd-run --unit skyhop-gateway --property=Restart=on-failure {RUNNER_PATH}
"""


def runner_script(python: str = "/opt/skyhop/bin/python", config: str = CONFIG_PATH) -> str:
    """The gateway's systemd command. A clean exit (the job is done, it was told to
    shut down, or it sat idle past its timeout) powers the VM off, so no VM idles
    after its job: on EC2 that terminates the instance (launched with
    InstanceInitiatedShutdownBehavior=terminate); on GCE and Azure it stops
    compute billing until the reaper deletes the VM. A crash exits non-zero and
    systemd restarts the gateway (Restart=on-failure)."""
    return f"""#!/bin/bash
{shlex.quote(python)} -m gateway_vm --config {shlex.quote(config)}
code=$?
if [ "$code" -eq 0 ]; then
  systemctl poweroff
fi
exit "$code"
"""


def peer_cidrs(gateways: list[GatewaySpec]) -> list[str]:
    """The gateways' addresses as /32 (or /128) ranges, sorted, each once."""
    cidrs = set()
    for g in gateways:
        try:
            address = ipaddress.ip_address(g.host)
        except ValueError:
            raise GatewayError(
                f"gateway {g.gateway_id} has no IP address yet (host {g.host!r})"
            ) from None
        cidrs.add(f"{address}/{address.max_prefixlen}")
    return sorted(cidrs)


def data_ports(gateways: list[GatewaySpec]) -> list[int]:
    """The data ports the job's gateways listen on, sorted, each once."""
    return sorted({g.data_port or DATA_PORT for g in gateways})


def control_ports(gateways: list[GatewaySpec] | list[GatewayConfig]) -> list[int]:
    return sorted({g.control_port or CONTROL_PORT for g in gateways})


def check_cidrs(cidrs: list[str]) -> list[str]:
    """Validated, normalised CIDRs (UsageError naming a bad one)."""
    out = []
    for cidr in cidrs:
        try:
            out.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            raise UsageError(f"not a CIDR range: {cidr!r}") from None
    return sorted(set(out))


def cloud_name(text: str, *, prefix: str = "skyhop-", limit: int = 63) -> str:
    """A resource name or label value made of lowercase letters, digits and hyphens."""
    name = re.sub(r"[^a-z0-9-]+", "-", (prefix + text).lower()).strip("-")
    if len(name) > limit:
        import hashlib

        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = name[: limit - 9].rstrip("-") + "-" + digest
    if not name or not name[0].isalpha():
        name = "s" + name[: limit - 1]
    return name


def control_api_probe(spec: GatewaySpec, cfg: GatewayConfig) -> bool:
    """True once the gateway's control API answers a status call."""
    from skyhop.gateway_api import GatewayClient

    client = GatewayClient(
        spec.host,
        spec.control_port,
        spec.gateway_id,
        cfg.ca_cert_pem,
        cfg.control_token,
        cfg.cert_pem,
        cfg.key_pem,
        timeout=5.0,
    )
    try:
        client.status()
    except SkyhopError:
        return False
    return True
