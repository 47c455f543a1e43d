"""Manifest stores: the protocol in :mod:`skyhop.state.base`, the write rules every
store follows in :mod:`skyhop.state.rules`; SQLite (``sqlite://``), DynamoDB
(``dynamodb://``), Firestore (``firestore://``) and Table Storage (``aztable://``);
:func:`open_manifest` opens one by URI."""

from skyhop.state.base import JobProgress, ManifestStore, open_manifest, register_manifest

__all__ = ["JobProgress", "ManifestStore", "open_manifest", "register_manifest"]
