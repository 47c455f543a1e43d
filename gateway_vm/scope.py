"""What a gateway may touch: keys under the location of its own configuration.

A source reads only keys under its ``source_uri``, a destination writes only keys
under its ``destination_uri``; whoever sent the work (a control message, a chunk's
metadata from the previous hop) cannot widen that. A key that is absolute or holds
a ``.`` or ``..`` segment is refused too, whatever the store: on a local store it
would name another place, and no listing of a location produces one under it.
"""

from __future__ import annotations

from skyhop.uri import parse_uri


class OutOfScope(ValueError):
    """A key outside the location a gateway was configured for."""


def key_problem(key: str) -> str | None:
    """Why ``key`` is no key a gateway works on, or None."""
    if not key:
        return "an empty key"
    if "\x00" in key:
        return "a key holding a NUL byte"
    if key.startswith("/"):
        return f"the absolute key {key!r}"
    if any(part in (".", "..") for part in key.split("/")):
        return f"the key {key!r}, which holds a '.' or '..' segment"
    return None


def check_key(location: str | None, key: str, what: str) -> None:
    """Raise :class:`OutOfScope` unless ``key`` lies under ``location`` (a store URI
    from the gateway's configuration): the location's own key, or below it."""
    problem = key_problem(key)
    if problem is not None:
        raise OutOfScope(f"{what}: {problem} is refused")
    if not location:
        raise OutOfScope(f"{what}: this gateway has no location configured for {key!r}")
    base = parse_uri(location).key
    if base and key != base and not key.startswith(base.rstrip("/") + "/"):
        raise OutOfScope(f"{what}: key {key!r} is outside {location}, the only location allowed")
