"""The control plane: the job state machine over the protocols.

:class:`~skyhop.controlplane.service.ControlPlane` holds the logic;
:class:`~skyhop.controlplane.embedded.EmbeddedRunner` runs a job in one
process; cloud functions call the same service methods one message at a time.
"""

from __future__ import annotations

from skyhop.controlplane.service import ControlPlane, Limits
from skyhop.models import Job, RoutePlan


def default_planner(job: Job) -> RoutePlan | None:
    """Plan with the shipped profile; local paths get a trivial direct plan."""
    try:
        from skyhop import planner
    except ImportError:  # pragma: no cover - the planner ships with the package
        return None
    options = job.request.options
    src = options.src_region or "local"
    dst = options.dst_region or "local"
    plan_fn = getattr(planner, "plan", None)
    if plan_fn is None:
        return None
    return plan_fn(
        src,
        dst,
        bytes=job.bytes_total,
        objects=job.objects_total,
        parts=job.chunks_total,
    )


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
