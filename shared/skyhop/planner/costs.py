"""What a transfer costs: egress, VM-hours and store requests.

Request charges are what surprises users with many small files, so they are
counted explicitly from the object and part counts:

* source: one LIST page per 1,000 objects, one ranged GET per part;
* destination: one PUT per single-part object; per multipart object a create,
  one upload-part per part and a complete (all PUT-class); one LIST page per
  1,000 objects for the final verification listing.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

from skyhop.config import DEFAULT_CHUNK_SIZE, DEFAULT_MULTIPART_THRESHOLD
from skyhop.errors import UsageError
from skyhop.models import plan_parts
from skyhop.planner.profile import LOCAL, Profile, cloud_of

GB = 1e9  # the clouds bill egress per decimal GB
LIST_PAGE = 1000


class Workload(BaseModel):
    """How much moves: bytes, objects and parts (chunks)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bytes: int = Field(ge=0)
    objects: int = Field(ge=0)
    parts: int = Field(ge=0, description="chunks over all objects; 1 per single-part object")
    multipart_objects: int = Field(ge=0)

    @property
    def gigabytes(self) -> float:
        return self.bytes / GB


def workload(
    nbytes: int,
    objects: int | None = None,
    parts: int | None = None,
    multipart_objects: int | None = None,
) -> Workload:
    """Fill in what the caller did not say.

    Without ``parts``, objects are taken as equal in size and cut as a transfer
    would cut them (:func:`skyhop.models.plan_parts` with the default chunk size
    and threshold). With ``parts`` but no ``multipart_objects``, the largest
    number of multipart objects consistent with the counts is assumed, so the
    request estimate is an upper bound.
    """
    if nbytes < 0:
        raise UsageError(f"bytes must be >= 0, got {nbytes}")
    if objects is None:
        objects = 1 if nbytes > 0 or parts else 0
    if objects < 0:
        raise UsageError(f"objects must be >= 0, got {objects}")
    if parts is None:
        if objects == 0:
            parts, multi = 0, 0
        else:
            avg = -(-nbytes // objects)
            _, n, is_multi = plan_parts(avg, DEFAULT_CHUNK_SIZE, DEFAULT_MULTIPART_THRESHOLD)
            parts, multi = n * objects, objects if is_multi else 0
        if multipart_objects is None:
            multipart_objects = multi
    if parts < objects:
        raise UsageError(f"parts ({parts}) must be at least the number of objects ({objects})")
    if multipart_objects is None:
        multipart_objects = min(objects, parts - objects)
    if multipart_objects > objects or (multipart_objects == 0 and parts > objects):
        raise UsageError(
            f"{multipart_objects} multipart objects do not fit {objects} objects in {parts} parts"
        )
    return Workload(bytes=nbytes, objects=objects, parts=parts, multipart_objects=multipart_objects)


def request_counts(work: Workload) -> dict[str, int]:
    """Requests by kind (see the module docstring)."""
    single = work.objects - work.multipart_objects
    pages = math.ceil(work.objects / LIST_PAGE) if work.objects else 0
    return {
        "src_list": pages,
        "src_get": work.parts,
        "dst_put": single,
        "dst_multipart_create": work.multipart_objects,
        "dst_upload_part": work.parts - single,
        "dst_multipart_complete": work.multipart_objects,
        "dst_list": pages,
    }


def request_usd(
    profile: Profile, src_region: str, dst_region: str, counts: dict[str, int]
) -> float:
    """Request charges of the source and destination stores (0 for local paths)."""
    total = 0.0
    src_cloud, dst_cloud = cloud_of(src_region), cloud_of(dst_region)
    if src_cloud != LOCAL and src_cloud in profile.clouds:
        prices = profile.clouds[src_cloud].requests
        total += counts["src_list"] * prices.list_per_1000 / 1000
        total += counts["src_get"] * prices.get_per_1000 / 1000
    if dst_cloud != LOCAL and dst_cloud in profile.clouds:
        prices = profile.clouds[dst_cloud].requests
        puts = sum(counts[k] for k in counts if k.startswith("dst_") and k != "dst_list")
        total += puts * prices.put_per_1000 / 1000
        total += counts["dst_list"] * prices.list_per_1000 / 1000
    return total


def transfer_seconds(nbytes: int, gbps: float) -> float:
    """Seconds to move ``nbytes`` at ``gbps`` Gbit/s (0 when nothing moves)."""
    if nbytes == 0:
        return 0.0
    if gbps <= 0:
        return math.inf
    return nbytes * 8 / (gbps * 1e9)


def vm_usd(profile: Profile, gateways: dict[str, int], seconds: float) -> float:
    """VM-hours of ``gateways`` (region -> count) for ``seconds``."""
    if not math.isfinite(seconds):
        return math.inf
    return sum(
        count * profile.regions[region].vm_usd_per_hour * seconds / 3600
        for region, count in gateways.items()
        if region in profile.regions
    )
