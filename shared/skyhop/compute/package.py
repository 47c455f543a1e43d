"""What a gateway VM installs: this control plane's own skyhop, as a wheel, checked.

A gateway used to ``pip install skyhop`` at boot: whatever the public index
called ``skyhop`` that day, unpinned (skyhop is not published there, so that
was anyone's package). Now the control plane builds a wheel of exactly the code
it runs (:func:`build_wheel`: the ``skyhop`` and ``gateway_vm`` packages it
imports, under its own version), the deployment puts it where the VMs can fetch
it (a presigned or SAS URL; on GCE a V4 signed URL, or the object's URL fetched
with the VM's own service-account token), and the boot script (:func:`skyhop.compute.startup.startup_script`)
downloads it, refuses it unless its SHA-256 is the one in the user data, and
installs it with ``pip --require-hashes --no-deps``; the dependencies are then
installed at exactly the versions the control plane runs with
(:func:`pinned_requirements`).

No cloud SDK here: the providers upload and sign (:mod:`skyhop.compute.ec2.wheel`,
:mod:`skyhop.compute.gce_wheel`, :mod:`skyhop.compute.azure_wheel`).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import io
import re
import zipfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from skyhop.errors import UsageError

DIST = "skyhop"
PACKAGES = ("skyhop", "gateway_vm")
_SKIP = re.compile(r"(__pycache__|\.pyc$|\.pyo$)")
_EPOCH = (2020, 1, 1, 0, 0, 0)  # fixed timestamps: the same code makes the same wheel


class GatewayPackage(BaseModel):
    """Where a gateway VM fetches skyhop's wheel, and what it must hash to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str = Field(pattern=r"^https?://", description="where the VM downloads the wheel")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the wheel's SHA-256, hex")
    filename: str = Field(pattern=r"^skyhop-[A-Za-z0-9_.+!]+-py3-none-any\.whl$")
    requirements: list[str] = Field(
        default_factory=list,
        description="the dependencies, each pinned name==version, installed after the wheel",
    )
    auth: Literal["gce-metadata"] | None = Field(
        None,
        description="how the VM authorises the download: none (the URL is signed), or "
        "gce-metadata (its own service account's token, from the GCE metadata server)",
    )


def version() -> str:
    """The version of the skyhop this control plane runs."""
    try:
        return importlib.metadata.version(DIST)
    except importlib.metadata.PackageNotFoundError:
        raise UsageError("skyhop is not installed (pip install -e .): no version to pin") from None


def pinned_requirements(extra: str | None = None) -> list[str]:
    """skyhop's dependencies (and ``extra``'s), each at the version installed here."""
    found = []
    for text in importlib.metadata.requires(DIST) or []:
        name_part, _, marker = text.partition(";")
        marker = marker.strip()
        if marker and marker != f'extra == "{extra}"':
            continue
        name = re.split(r"[\s\[<>=!~;]", name_part.strip(), maxsplit=1)[0]
        extras = re.search(r"\[([^\]]+)\]", name_part)
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            raise UsageError(
                f"{name} (a dependency of skyhop{f'[{extra}]' if extra else ''}) is not "
                "installed here, so its version cannot be pinned for the gateways"
            ) from None
        found.append(f"{name}{f'[{extras.group(1)}]' if extras else ''}=={installed}")
    return sorted(set(found))


def _package_files(package: str) -> list[tuple[str, Path]]:
    spec = importlib.util.find_spec(package)  # located, not imported (skyhop imports no
    if spec is None or not spec.submodule_search_locations:  # gateway_vm: the rule)
        raise UsageError(f"package {package} is not importable here: nothing to put in the wheel")
    root = Path(next(iter(spec.submodule_search_locations)))
    return [
        (f"{package}/{path.relative_to(root).as_posix()}", path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and not _SKIP.search(path.as_posix())
    ]


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"sha256={digest}"


def build_wheel(directory: Path) -> Path:
    """Write the wheel of the skyhop this process runs into ``directory``; its path.
    The same code always makes the same bytes (so the same SHA-256)."""
    ver = version()
    info = f"{DIST}-{ver}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (name, path.read_bytes()) for package in PACKAGES for name, path in _package_files(package)
    ]
    requires = importlib.metadata.requires(DIST) or []
    metadata = "\n".join(
        ["Metadata-Version: 2.1", f"Name: {DIST}", f"Version: {ver}"]
        + [f"Requires-Dist: {r}" for r in requires]
        + [f"Provides-Extra: {e}" for e in ("aws", "gcp", "azure")]
    )
    entries.append((f"{info}/METADATA", (metadata + "\n").encode()))
    wheel = "Wheel-Version: 1.0\nGenerator: skyhop\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    entries.append((f"{info}/WHEEL", wheel.encode()))
    record = "".join(f"{name},{_record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{info}/RECORD,,\n"
    entries.append((f"{info}/RECORD", record.encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            item = zipfile.ZipInfo(name, date_time=_EPOCH)
            item.external_attr = 0o644 << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(item, data)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{DIST}-{ver}-py3-none-any.whl"
    path.write_bytes(buffer.getvalue())
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
