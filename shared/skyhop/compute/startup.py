"""What every cloud gateway VM runs at boot, and how its configuration is adapted.

A VM gateway launched over HTTPS control (``provision.launch``) carries a boot
configuration (:func:`skyhop.enrolment.boot_config`): no private key, token,
data key or storage credential, only public material and a one-time enrolment
token; its secrets come over mutual TLS once it is up (:mod:`gateway_vm.enrol`).

Cloud providers (GCE, Azure, ...) hand a VM a shell script that installs skyhop
in a virtualenv (this control plane's own wheel, checked against its SHA-256:
:mod:`skyhop.compute.package`; an exact version from the index only when asked
for) and starts ``python -m gateway_vm --config PATH`` as a systemd unit. Only how the configuration reaches the VM differs per cloud (a metadata
attribute on GCE, custom data on Azure); the caller passes the shell command
that writes it to ``$CONFIG``.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
import ssl
from collections.abc import Mapping

from skyhop.compute.package import GatewayPackage
from skyhop.compute.package import version as package_version
from skyhop.errors import GatewayError, UsageError, first_line
from skyhop.models import GatewayConfig, GatewayRole, GatewaySpec

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


#: a pip requirement the boot script may install from an index: pinned to one version
_PINNED = re.compile(r"^skyhop(\[[a-z0-9,]+\])?==[0-9][0-9A-Za-z.+!-]*$")
DIST_DIR = "/opt/skyhop/dist"
GCE_SA_ACCESS_URL = (
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"
)
_READ_ACCESS_JSON = 'import json, sys; print(json.load(sys.stdin)["access_token"])'


def install_commands(package: GatewayPackage | str) -> str:
    """The boot script's install step. A :class:`~skyhop.compute.package.GatewayPackage`:
    download the wheel (with the VM's own GCE token when its ``auth`` says so), refuse
    it unless its SHA-256 is the one given, install it with ``--require-hashes
    --no-deps``, then its dependencies at the control plane's own versions. A string
    (an explicit opt-in): a pip requirement pinned to one version
    (``skyhop[gcp]==0.1.0``); an unpinned one (whatever the index calls skyhop that
    day) is refused."""
    if isinstance(package, str):
        spec = package.strip()
        if not _PINNED.match(spec):
            raise UsageError(
                f"gateway package {package!r} is not pinned: give skyhop's wheel "
                "(GatewayPackage: URL and SHA-256) or an exact version, skyhop[extra]==VERSION"
            )
        return f"/opt/skyhop/bin/pip install -q {shlex.quote(spec)}\n"
    wheel = f"{DIST_DIR}/{package.filename}"
    requirement = f"skyhop @ file://{wheel} --hash=sha256:{package.sha256}"
    deps = " ".join(shlex.quote(r) for r in package.requirements)
    fetch = (
        f"curl -fsS --retry 5 --retry-connrefused -o {shlex.quote(wheel)} "
        f"{shlex.quote(package.url)}"
    )
    lines = [f"mkdir -p {DIST_DIR}"]
    if package.auth == "gce-metadata":
        # the VM's own service account may read the object: its token, from the metadata
        # server, goes to curl on stdin (never on a command line)
        lines.append(
            f"token=$(curl -fsS --retry 5 -H 'Metadata-Flavor: Google' {GCE_SA_ACCESS_URL} | "
            f"/opt/skyhop/bin/python -c {shlex.quote(_READ_ACCESS_JSON)})"
        )
        fetch = f"printf 'Authorization: Bearer %s\\n' \"$token\" | {fetch} -H @-"
    lines += [
        fetch,
        f"echo {shlex.quote(package.sha256 + '  ' + wheel)} | sha256sum -c --quiet - || "
        '{ echo "skyhop: the gateway wheel does not match its SHA-256; not installing" >&2; '
        "exit 1; }",
        f"echo {shlex.quote(requirement)} > {DIST_DIR}/requirements.txt",
        f"/opt/skyhop/bin/pip install -q --no-deps --require-hashes -r {DIST_DIR}/requirements.txt",
    ]
    if deps:
        lines.append(f"/opt/skyhop/bin/pip install -q {deps}")
    return "\n".join(lines) + "\n"


def startup_script(write_config: str, package: GatewayPackage | str) -> str:
    """A boot script: write the config with ``write_config`` (a shell command that writes
    ``$CONFIG``), install skyhop (:func:`install_commands`) and start the gateway."""
    install = install_commands(package)
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
{install}cat > {RUNNER_PATH} <<'SKYHOP_RUNNER'
{runner_script()}SKYHOP_RUNNER
chmod 700 {RUNNER_PATH}
systemctl stop skyhop-gateway 2>/dev/null || true
systemd-run --unit skyhop-gateway --property=Restart=on-failure {RUNNER_PATH}
"""


def gateway_package(
    given: GatewayPackage | Mapping[str, object] | str | None, extra: str | None = None
) -> GatewayPackage | str:
    """What a provider's VMs install: the package it was given (a mapping, from a
    JSON options variable, is read as a GatewayPackage), else :func:`default_spec`
    (EC2's fallback when given no wheel; GCE and Azure publish their wheel instead).
    Checked now, so a bad one fails before anything launches."""
    if given is None:
        return default_spec(extra)
    if isinstance(given, GatewayPackage):
        return given
    if isinstance(given, str):
        install_commands(given)
        return given.strip()
    try:
        return GatewayPackage.model_validate(dict(given))
    except ValueError as exc:
        raise UsageError(f"gateway package: {first_line(exc)}") from None


def default_spec(extra: str | None = None) -> str:
    """This control plane's own version of skyhop (with ``extra``), as a pinned pip
    requirement: what a provider installs when it is given no wheel."""
    return f"skyhop{f'[{extra}]' if extra else ''}=={package_version()}"


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


#: the widest control range a provider accepts, by IP version: a control port is
#: for the control plane's own addresses, never for a whole network (let alone /0)
WIDEST_CONTROL_PREFIX = {4: 16, 6: 48}


def check_cidrs(cidrs: list[str]) -> list[str]:
    """Validated, normalised control CIDRs (UsageError naming a bad one): a range
    wider than a /16 (IPv6: /48), ``0.0.0.0/0`` and ``::/0`` above all, is refused."""
    out = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr.strip(), strict=False)
        except ValueError:
            raise UsageError(f"not a CIDR range: {cidr!r}") from None
        widest = WIDEST_CONTROL_PREFIX[network.version]
        if network.prefixlen < widest:
            raise UsageError(
                f"control CIDR {cidr.strip()} is too wide (it would open the gateways' "
                f"control port to a whole network): give the control plane's own "
                f"addresses, /{widest} at most"
            )
        out.append(str(network))
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
    """True once the gateway's control API answers over the job's mutual TLS (its
    certificate checked against its gateway id). The probe presents the gateway's
    own certificate, which the control API refuses (only the control plane's is
    accepted): any HTTP answer means it is up."""
    import http.client

    from skyhop.crypto import client_context

    if cfg.enrol_token:  # a boot configuration: up once its enrolment server speaks TLS
        return _speaks_tls(spec)
    try:
        ctx = client_context(cfg.ca_cert_pem, cfg.cert_pem, cfg.key_pem)
        raw = socket.create_connection((spec.host, spec.control_port), timeout=5.0)
        with raw, ctx.wrap_socket(raw, server_hostname=spec.gateway_id) as tls:
            conn = http.client.HTTPConnection(spec.host, spec.control_port, timeout=5.0)
            conn.sock = tls
            conn.request("GET", "/v1/status")
            return conn.getresponse().status > 0
    except (OSError, ssl.SSLError, http.client.HTTPException, ValueError):
        return False


def own_identities(what: str, identities: Mapping[str, str] | None) -> dict[str, str]:
    """Gateway role -> cloud identity (an instance profile, service account, managed
    identity), refused when two roles share one: each gateway role has its own (a
    relay none of the storage access of a source or destination, a source none of a
    destination's writes)."""
    out = dict(identities or {})
    unknown = sorted(set(out) - {r.value for r in GatewayRole})
    if unknown:
        raise UsageError(
            f"{what}: {unknown[0]!r} is not a gateway role (source, relay, destination)"
        )
    seen: dict[str, str] = {}
    for role, identity in sorted(out.items()):
        if identity in seen:
            raise UsageError(
                f"{what}: the {seen[identity]} and {role} gateways share the identity "
                f"{identity}: give each gateway role its own"
            )
        seen[identity] = role
    return out


def _speaks_tls(spec: GatewaySpec) -> bool:
    """True when a TLS 1.3 handshake with the gateway's control port completes (an
    enrolling gateway's certificate is self-signed: its key is not certified yet)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # nothing is sent: only whether it answers
    try:
        raw = socket.create_connection((spec.host, spec.control_port), timeout=5.0)
        with raw, ctx.wrap_socket(raw):
            return True
    except (OSError, ssl.SSLError):
        return False
