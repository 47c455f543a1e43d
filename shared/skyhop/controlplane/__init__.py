"""The control plane: the job state machine over the protocols.

:class:`~skyhop.controlplane.service.ControlPlane` holds the logic;
:class:`~skyhop.controlplane.embedded.EmbeddedRunner` runs a job in one
process; cloud functions call the same service methods one message at a time.
"""

from __future__ import annotations

from types import ModuleType

from skyhop.controlplane.service import ControlPlane, Limits
from skyhop.errors import SkyhopError
from skyhop.models import Job, RoutePlan


def default_planner(job: Job) -> RoutePlan | None:
    """Plan with the shipped profile; local paths get a trivial direct plan."""
    try:
        from skyhop import planner
    except ImportError:  # pragma: no cover - the planner ships with the package
        return None
    options = job.request.options
    src = _region(planner, job.request.source, options.src_region)
    dst = _region(planner, job.request.destination, options.dst_region)
    return planner.plan(
        src,
        dst,
        bytes=job.bytes_total,
        objects=job.objects_total,
        parts=job.chunks_total,
        relays=options.relays or None,
    )


def _region(planner: ModuleType, uri: str, override: str | None) -> str:
    """The region from the option, else the bucket's location, else local: a store
    that cannot tell its region still copies, with a nominal estimate."""
    try:
        return str(planner.region_of(uri, override))
    except SkyhopError:
        return str(planner.LOCAL)


def embedded() -> ControlPlane:
    """The embedded default: SQLite manifest under SKYHOP_HOME, local gateway processes."""
    from skyhop.compute.local import LocalComputeProvider
    from skyhop.config import manifest_path
    from skyhop.state.sqlite import SQLiteManifest

    return ControlPlane(
        manifest=SQLiteManifest(manifest_path()),
        compute=LocalComputeProvider(),
        event_sink="pull",
        planner=default_planner,
    )


__all__ = ["ControlPlane", "Limits", "default_planner", "embedded"]
