"""Manifest stores: the protocol in :mod:`skyhop.state.base`; SQLite and DynamoDB."""

from skyhop.state.base import JobProgress, ManifestStore

__all__ = ["JobProgress", "ManifestStore"]
