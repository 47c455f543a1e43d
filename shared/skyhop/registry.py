"""Implementations named by ``"module:attr"`` strings (the stores, manifests, queues,
compute providers and key wrappers each keep such a table), imported only when one
is opened: a cloud's SDK is needed only when that cloud is used, and a protocol
module imports none of its implementations."""

from __future__ import annotations

import importlib
from typing import Any

from skyhop.errors import UsageError


def resolve(target: str, what: str) -> Any:
    """The attribute that ``target`` (``module:attr``) names, its module imported now.
    A dependency that is not installed is a UsageError naming ``what`` and it."""
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(
            f"{what} needs an optional dependency that is not installed ({exc.name}); "
            "install skyhop with its extra"
        ) from None
    return getattr(module, attr)
