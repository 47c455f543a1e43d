"""The source archive a cloud function runs from (no cloud SDK here).

One zip per cloud, built the same way every time (sorted entries, fixed
timestamps), so equal inputs give equal bytes and the archive's SHA-256 names
it in the staging area:

* ``gcp``: ``main.py`` (from ``functions/gcp/``) at the root, as Cloud
  Functions wants it;
* ``azure``: ``function_app.py`` and ``host.json`` (from ``functions/azure/``)
  at the root, as the Python v2 programming model wants them;

and in both ``functions/__init__.py``, ``functions/common.py``, the ``skyhop``
package itself (it is not on PyPI; pure Python) and a ``requirements.txt``
with skyhop's dependencies plus that cloud's extra, which the cloud's build
installs. The ``functions/`` tree is read from a skyhop checkout: the
``functions_dir`` argument, ``$SKYHOP_FUNCTIONS_DIR``, or the checkout this
``skyhop`` package lives in.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

import skyhop
from skyhop.errors import UsageError

Target = Literal["gcp", "azure"]

ROOT_FILES: dict[str, list[str]] = {
    "gcp": ["main.py"],
    "azure": ["function_app.py", "host.json"],
}
# the runtime the cloud provides, besides skyhop's own dependencies
EXTRA_REQUIREMENTS: dict[str, list[str]] = {"gcp": [], "azure": []}
_EPOCH = (2020, 1, 1, 0, 0, 0)
_MARKER = re.compile(r"""^\s*extra\s*==\s*["']([\w\-]+)["']\s*$""")


class SourceArchive(BaseModel):
    target: Target
    data: bytes
    sha256: str
    files: list[str]

    @property
    def name(self) -> str:
        return f"skyhop-{self.target}-{self.sha256[:16]}.zip"


def find_functions_dir(functions_dir: str | os.PathLike[str] | None = None) -> Path:
    """The ``functions/`` directory of a skyhop checkout."""
    candidates = []
    if functions_dir:
        candidates.append(Path(functions_dir))
    elif os.environ.get("SKYHOP_FUNCTIONS_DIR"):
        candidates.append(Path(os.environ["SKYHOP_FUNCTIONS_DIR"]))
    else:
        candidates += [Path(skyhop.__file__).resolve().parents[2] / "functions", Path("functions")]
    for path in candidates:
        if (path / "common.py").is_file():
            return path.resolve()
    raise UsageError(
        f"no skyhop functions/ directory at {candidates[0]}: run from a skyhop checkout "
        "or pass --functions-dir"
    )


def requirements(target: Target) -> list[str]:
    """skyhop's dependencies and the ``target`` extra's, as requirement lines."""
    try:
        declared = importlib.metadata.requires("skyhop") or []
    except importlib.metadata.PackageNotFoundError:
        raise UsageError("skyhop is not installed (pip install 'skyhop[...]')") from None
    out: list[str] = []
    for line in declared:
        spec, _, marker = line.partition(";")
        spec = spec.strip()
        if spec.startswith("skyhop"):
            continue
        if marker.strip():
            match = _MARKER.match(marker)
            if match is None or match.group(1) != target:
                continue
        out.append(spec)
    return sorted(set(out + EXTRA_REQUIREMENTS[target]), key=str.lower)


def build_source(
    target: Target, functions_dir: str | os.PathLike[str] | None = None
) -> SourceArchive:
    """The zip a ``target`` function app is deployed from."""
    if target not in ROOT_FILES:
        raise UsageError(f"unknown deploy target {target!r}: use gcp or azure")
    fdir = find_functions_dir(functions_dir)
    entries: dict[str, bytes] = {}
    for name in ROOT_FILES[target]:
        path = fdir / target / name
        if not path.is_file():
            raise UsageError(f"missing {path}: the {target} function app is incomplete")
        entries[name] = path.read_bytes()
    for name in ("__init__.py", "common.py"):
        path = fdir / name
        entries[f"functions/{name}"] = path.read_bytes() if path.is_file() else b""
    package = Path(skyhop.__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            entries[f"skyhop/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    entries["requirements.txt"] = ("\n".join(requirements(target)) + "\n").encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=_EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, entries[name])
    data = buffer.getvalue()
    return SourceArchive(
        target=target, data=data, sha256=hashlib.sha256(data).hexdigest(), files=sorted(entries)
    )
