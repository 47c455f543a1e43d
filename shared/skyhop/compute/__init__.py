"""Compute providers: the protocol in :mod:`skyhop.compute.base`."""

from skyhop.compute.base import ComputeProvider, open_provider

__all__ = ["ComputeProvider", "open_provider"]
