"""Object stores: the protocol in :mod:`skyhop.stores.base`, one module per cloud."""

from skyhop.stores.base import (
    Capabilities,
    MultipartWriter,
    ObjectInfo,
    ObjectMeta,
    ObjectStore,
    capabilities,
    open_store,
)

__all__ = [
    "Capabilities",
    "MultipartWriter",
    "ObjectInfo",
    "ObjectMeta",
    "ObjectStore",
    "capabilities",
    "open_store",
]
