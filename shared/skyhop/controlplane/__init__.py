"""The control plane: the job state machine over the protocols.

:class:`~skyhop.controlplane.service.ControlPlane` holds the logic;
:class:`~skyhop.controlplane.embedded.EmbeddedRunner` runs a job in one
process, and :func:`~skyhop.controlplane.embedded.embedded` builds the embedded
default; cloud functions call the same service methods one message at a time
(:mod:`~skyhop.controlplane.serverless`). :mod:`~skyhop.controlplane.planning`
holds the default planner. This package's ``__init__`` imports nothing, so
importing one of its modules loads only what that module needs.
"""
