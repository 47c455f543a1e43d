"""Throughput and cost profiles: the measured facts every planner reads.

A profile holds, for a set of regions named ``cloud:region`` (``aws:us-east-1``,
``azure:eastus``, ``gcp:us-west1-a``):

* ``gbps[i][j]``: measured throughput of one gateway-VM pair from region i to
  region j with ``connections_per_vm_pair`` TCP connections (None: not measured,
  the edge is not used);
* ``usd_per_gb[i][j]``: the egress price of that edge;
* per region, the hourly price of the cloud's gateway instance type;
* per cloud, the instance type, the per-VM egress/ingress caps and the object
  store request prices.

The default profile ships in ``planner/data/default_profile.json`` (built by
``python -m skyhop.planner.build_profile``); a user may pass their own file
with the same schema.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cached_property
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skyhop.errors import PlanError

if TYPE_CHECKING:
    import numpy as np


def _numpy() -> ModuleType:
    """numpy, imported when a planner first needs the arrays: a direct or local
    plan never does, and numpy costs a third of a second at every CLI start."""
    import numpy

    return numpy


LOCAL = "local"
DEFAULT_PROFILE = "default_profile.json"

# GCS multi- and dual-region bucket locations, planned from one member region
GCP_MULTI_REGIONS = {
    "us": "us-central1",
    "eu": "europe-west1",
    "asia": "asia-east1",
    "nam4": "us-central1",
    "eur4": "europe-west4",
    "asia1": "asia-northeast1",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RequestPrices(_Strict):
    """Object-store request list prices of one cloud, USD per 1,000 requests."""

    get_per_1000: float = Field(ge=0)
    put_per_1000: float = Field(ge=0, description="PUT-class: put, create/upload-part/complete")
    list_per_1000: float = Field(ge=0)
    source: str = ""


class CloudSpec(_Strict):
    """The gateway instance type of a cloud and what one such VM can do."""

    instance_type: str
    vcpus: int = Field(ge=1)
    egress_gbps_per_vm: float = Field(gt=0)
    ingress_gbps_per_vm: float = Field(gt=0)
    caps_source: str = ""
    vm_price_source: str = ""
    requests: RequestPrices


class RegionSpec(_Strict):
    vm_usd_per_hour: float = Field(ge=0)
    price_note: str = ""


class Profile(BaseModel):
    """A throughput and cost profile (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    name: str
    source: str
    generated_by: str = ""
    connections_per_vm_pair: int = Field(64, ge=1)
    local_gbps: float = Field(1.0, gt=0, description="nominal rate of gateways on a laptop")
    clouds: dict[str, CloudSpec]
    regions: dict[str, RegionSpec]
    gbps: list[list[float | None]]
    usd_per_gb: list[list[float | None]]

    @model_validator(mode="after")
    def _shapes(self) -> Profile:
        n = len(self.regions)
        for label, grid in (("gbps", self.gbps), ("usd_per_gb", self.usd_per_gb)):
            if len(grid) != n or any(len(row) != n for row in grid):
                raise ValueError(f"{label} must be a {n}x{n} grid (one row and column per region)")
            if any(v is not None and v < 0 for row in grid for v in row):
                raise ValueError(f"{label} has a negative entry")
        for region in self.regions:
            cloud = cloud_of(region)
            if cloud not in self.clouds:
                raise ValueError(f"region {region!r}: cloud {cloud!r} is not described in clouds")
        return self

    # ------------------------------------------------------------ fast views

    @cached_property
    def region_names(self) -> list[str]:
        return list(self.regions)

    @cached_property
    def index(self) -> dict[str, int]:
        return {r: i for i, r in enumerate(self.regions)}

    @cached_property
    def gbps_array(self) -> np.ndarray:
        """Throughput grid, 0 where not measured and on the diagonal."""
        np = _numpy()
        arr = np.array([[0.0 if v is None else v for v in row] for row in self.gbps], dtype=float)
        np.fill_diagonal(arr, 0.0)
        return arr

    @cached_property
    def cost_array(self) -> np.ndarray:
        """Egress $/GB grid, NaN where unknown."""
        np = _numpy()
        return np.array(
            [[np.nan if v is None else v for v in row] for row in self.usd_per_gb], dtype=float
        )

    @cached_property
    def usable(self) -> np.ndarray:
        """Edges a planner may use: measured throughput and a known price."""
        np = _numpy()
        usable = (self.gbps_array > 0) & ~np.isnan(self.cost_array)
        np.fill_diagonal(usable, False)
        return usable

    @cached_property
    def vm_price_array(self) -> np.ndarray:
        np = _numpy()
        return np.array([spec.vm_usd_per_hour for spec in self.regions.values()], dtype=float)

    @cached_property
    def egress_cap_array(self) -> np.ndarray:
        np = _numpy()
        return np.array([self.cloud(r).egress_gbps_per_vm for r in self.regions], dtype=float)

    @cached_property
    def ingress_cap_array(self) -> np.ndarray:
        np = _numpy()
        return np.array([self.cloud(r).ingress_gbps_per_vm for r in self.regions], dtype=float)

    def cloud(self, region: str) -> CloudSpec:
        return self.clouds[cloud_of(region)]

    def link_gbps(self, src: str, dst: str) -> float:
        """Measured throughput of one VM pair on ``src -> dst`` (0 if not measured)."""
        return float(self.gbps_array[self.index[src], self.index[dst]])

    def pair_gbps(self, src: str, dst: str) -> float:
        """What one VM pair can carry on ``src -> dst``: the measurement, capped by
        the sender's egress and the receiver's ingress cap."""
        i, j = self.index[src], self.index[dst]
        if not self.usable[i, j]:
            return 0.0
        return float(
            min(self.gbps_array[i, j], self.egress_cap_array[i], self.ingress_cap_array[j])
        )

    def egress_usd_per_gb(self, src: str, dst: str) -> float:
        np = _numpy()
        if src == dst:
            return 0.0
        value = self.cost_array[self.index[src], self.index[dst]]
        return 0.0 if np.isnan(value) else float(value)

    # ------------------------------------------------------------ region names

    def resolve(self, name: str) -> str:
        """The profile's name for region ``name``, or PlanError naming the nearest ones.

        Accepts the exact ``cloud:region`` name, any capitalisation, Azure display
        names with spaces (``East US``), a region without its cloud prefix when only
        one cloud has it, and a GCP region for its profiled zone
        (``gcp:us-central1`` -> ``gcp:us-central1-a``).
        """
        raw = name
        name = name.strip().lower()
        if name == LOCAL:
            return LOCAL
        if name in self.index:
            return name
        cloud, _, bare = name.rpartition(":")
        bare = bare.replace(" ", "")
        if cloud == "gcp":
            bare = GCP_MULTI_REGIONS.get(bare, bare)
        clouds = [cloud] if cloud else list(self.clouds)
        for c in clouds:
            candidate = f"{c}:{bare}"
            if candidate in self.index:
                matches = [candidate]
                break
        else:
            matches = []
        if not matches:
            # a GCP (or other zonal) region given without its zone
            zones = sorted(
                r
                for r in self.regions
                if cloud_of(r) in clouds
                and re.fullmatch(re.escape(bare) + r"-[a-z]", r.split(":")[1])
            )
            matches = zones[:1]
        if not cloud and len({cloud_of(m) for m in matches}) > 1:
            matches = []
        if matches:
            return matches[0]
        raise PlanError(
            f"region {raw!r} is not in the profile {self.name}; nearest known: "
            + ", ".join(self.nearest(raw))
        )

    def nearest(self, name: str, n: int = 3) -> list[str]:
        """The ``n`` profiled regions whose names are closest to ``name``."""
        name = name.strip().lower()
        cloud, _, bare = name.rpartition(":")
        pool = [r for r in self.regions if cloud and cloud_of(r) == cloud] or list(self.regions)
        by_bare = {r.split(":", 1)[1]: r for r in pool}
        close = difflib.get_close_matches(bare, list(by_bare), n=n, cutoff=0.0)
        return [by_bare[c] for c in close]


class CustomRegion(_Strict):
    """A region of the user's own (an on-premises or S3-compatible endpoint, given in
    its storage remote): what one gateway moves to or from it, and what reading out
    of it costs."""

    name: str = Field(pattern=r"^[a-z][a-z0-9-]*:[A-Za-z0-9][A-Za-z0-9_.-]*$")
    gbps: float = Field(gt=0)
    egress_usd_per_gb: float = Field(0.0, ge=0)


def with_custom_regions(profile: Profile, regions: list[CustomRegion]) -> Profile:
    """``profile`` with ``regions`` added (those it has already are left alone).

    Links to and from a custom region carry its ``gbps`` (capped by the other
    end's per-VM caps, as any link); reading out of it costs its
    ``egress_usd_per_gb``; writing into it from a cloud region costs that
    region's dearest egress in the profile, the stand-in for internet egress
    (which profiles of inter-region links do not hold). Its gateways run on the
    user's own machines: no VM price, no request charges."""
    new = [r for r in dict((r.name, r) for r in regions).values() if r.name not in profile.regions]
    if not new:
        return profile
    data = profile.model_dump()
    n = len(profile.regions)
    dearest = [max((v for v in row if v is not None), default=0.0) for row in profile.usd_per_gb]
    for k, region in enumerate(new):
        cloud = cloud_of(region.name)
        if cloud not in data["clouds"]:
            data["clouds"][cloud] = {
                "instance_type": "your own machine",
                "vcpus": 1,
                "egress_gbps_per_vm": region.gbps,
                "ingress_gbps_per_vm": region.gbps,
                "caps_source": "storage remote",
                "requests": {"get_per_1000": 0, "put_per_1000": 0, "list_per_1000": 0},
            }
        data["regions"][region.name] = {"vm_usd_per_hour": 0.0, "price_note": "storage remote"}
        size = n + k
        for i, row in enumerate(data["gbps"]):
            row.append(region.gbps)
            data["usd_per_gb"][i].append(dearest[i] if i < n else new[i - n].egress_usd_per_gb)
        data["gbps"].append([region.gbps] * size + [None])
        data["usd_per_gb"].append([region.egress_usd_per_gb] * size + [None])
    data["name"] = f"{profile.name} + {', '.join(r.name for r in new)}"
    return Profile.model_validate(data)


def cloud_of(region: str) -> str:
    """``aws`` for ``aws:us-east-1``; ``local`` for ``local``."""
    return region.split(":", 1)[0] if ":" in region else region


def default_profile_path() -> Path:
    return Path(str(resources.files("skyhop.planner") / "data" / DEFAULT_PROFILE))


_CACHE: dict[str, Profile] = {}


def load_profile(path: str | Path | None = None) -> Profile:
    """Load a profile (the shipped default when ``path`` is None); cached per path."""
    target = Path(path) if path is not None else default_profile_path()
    key = str(target.resolve()) if target.exists() else str(target)
    if key in _CACHE:
        return _CACHE[key]
    try:
        data = json.loads(target.read_text())
    except FileNotFoundError:
        raise PlanError(f"profile {target} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PlanError(f"profile {target} is not readable JSON: {exc}") from None
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise PlanError(
            f"profile {target} is not a valid skyhop profile: {where}: {first['msg']}"
        ) from None
    _CACHE[key] = profile
    return profile
