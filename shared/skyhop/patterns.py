"""Patterns, sizes and ages: the checks the request models and the filters share.

Patterns (``--include`` / ``--exclude``, and a rule's ``include`` / ``exclude``)
match the key *relative to the source prefix* (at the destination of a sync,
relative to the destination prefix), with ``/`` separating path segments:

==========  ==============================================================
``*``       any run of characters except ``/``
``**``      any run of characters, ``/`` included; ``**/`` also matches
            no directory at all (``**/x`` matches ``x`` and ``a/b/x``)
``?``       one character except ``/``
``[abc]``   one character of the set (ranges ``[a-z]``, negation ``[!abc]``)
``{a,b}``   either alternative (alternatives may hold other patterns)
``\\x``      the character ``x`` itself
==========  ==============================================================

A pattern without ``/`` matches an object's *name* at any depth (``*.tmp``
matches ``a.tmp`` and ``logs/b.tmp``). A pattern with a ``/`` matches the whole
relative key, from its start (a leading ``/`` is allowed and means the same).
A pattern ending in ``/`` matches everything below that directory
(``cache/`` is ``cache/**``).

**First match wins.** The rules are tried in this order: every exclude, in the
order given, then every include, in the order given. The first pattern that
matches decides: an exclude skips the object, an include selects it. A key no
pattern matched is selected when no include was given, and skipped otherwise.
A malformed pattern (unbalanced ``[`` or ``{``, an empty pattern, a trailing
``\\``) is a one-line :class:`~skyhop.errors.UsageError` before anything runs.

Size and age limits are inclusive: ``--min-size 1K`` keeps objects of 1024
bytes and more, ``--max-size`` those of at most that many; ``--min-age 1d``
keeps objects last modified at least a day ago, ``--max-age 1d`` those modified
within the last day. Ages are measured from one instant, taken when the filter
is built, so one job sees one consistent cut. An object whose store reports no
modification time passes the age limits.

This module depends on nothing but the standard library and
:mod:`skyhop.errors`: :mod:`skyhop.models` validates requests with it and
:class:`skyhop.controlplane.filters.Filter` is built on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from skyhop.errors import UsageError

__all__ = [
    "check_limits",
    "check_patterns",
    "compile_glob",
    "matches",
    "parse_duration",
]


# ---------------------------------------------------------------- globs


@lru_cache(maxsize=1024)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression of one pattern (see the module docstring)."""
    if not pattern:
        raise UsageError("invalid pattern '': a pattern must not be empty")
    if "\x00" in pattern:
        raise UsageError(f"invalid pattern {pattern!r}: contains a NUL byte")
    body = pattern.lstrip("/") if "/" in pattern else pattern
    anchored = "/" in pattern
    if body.endswith("/"):
        body += "**"
    regex, pos = _translate(pattern, body, 0, in_braces=False)
    if pos != len(body):  # pragma: no cover - _translate consumes everything or raises
        raise UsageError(f"invalid pattern {pattern!r}")
    if anchored:
        return re.compile(r"\A" + regex + r"\Z", re.DOTALL)
    return re.compile(r"(?:\A|/)" + regex + r"\Z", re.DOTALL)


def _translate(pattern: str, s: str, i: int, *, in_braces: bool) -> tuple[str, int]:
    """Translate ``s[i:]`` up to the end (or, inside braces, up to ``,`` / ``}``)."""
    out: list[str] = []
    n = len(s)
    while i < n:
        c = s[i]
        if c == "*":
            if s.startswith("**", i):
                j = i + 2
                while j < n and s[j] == "*":
                    j += 1
                if j < n and s[j] == "/" and (i == 0 or s[i - 1] == "/"):
                    out.append("(?:.*/)?")  # **/ : zero or more directories
                    j += 1
                else:
                    out.append(".*")
                i = j
            else:
                out.append("[^/]*")
                i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            cls, i = _char_class(pattern, s, i)
            out.append(cls)
        elif c == "{":
            alts: list[str] = []
            i += 1
            while True:
                alt, i = _translate(pattern, s, i, in_braces=True)
                alts.append(alt)
                if i >= n:
                    raise UsageError(f"invalid pattern {pattern!r}: '{{' is never closed")
                if s[i] == "}":
                    i += 1
                    break
                i += 1  # a ','
            out.append("(?:" + "|".join(alts) + ")")
        elif c in ",}" and in_braces:
            return "".join(out), i
        elif c == "}":
            raise UsageError(f"invalid pattern {pattern!r}: '}}' without a '{{'")
        elif c == "\\":
            if i + 1 >= n:
                raise UsageError(f"invalid pattern {pattern!r}: ends with a lone '\\'")
            out.append(re.escape(s[i + 1]))
            i += 2
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out), i


def _char_class(pattern: str, s: str, i: int) -> tuple[str, int]:
    """``[...]`` starting at ``s[i]``; returns its regex and the index after it."""
    j = i + 1
    negate = j < len(s) and s[j] in "!^"
    if negate:
        j += 1
    start = j
    if j < len(s) and s[j] == "]":  # a ']' first is a member
        j += 1
    while j < len(s) and s[j] != "]":
        j += 2 if s[j] == "\\" else 1
    if j >= len(s):
        raise UsageError(f"invalid pattern {pattern!r}: '[' is never closed")
    members = s[start:j]
    if not members:
        raise UsageError(f"invalid pattern {pattern!r}: empty character class '[]'")
    escaped = _class_members(members)
    regex = ("[^/" if negate else "[") + escaped + "]"
    try:
        re.compile(regex)
    except re.error as exc:
        raise UsageError(f"invalid pattern {pattern!r}: bad character class ({exc})") from None
    return regex, j + 1


def _class_members(members: str) -> str:
    """A class's members as regex: ``\\x`` is the character x itself (so ``[a\\-z]``
    holds a, - and z), an unescaped ``-`` between two members is a range."""
    out: list[str] = []
    k = 0
    while k < len(members):
        if members[k] == "\\" and k + 1 < len(members):
            out.append(re.escape(members[k + 1]))
            k += 2
            continue
        ch = members[k]
        out.append("\\" + ch if ch in "\\^[]" else ch)
        k += 1
    return "".join(out)


def check_patterns(patterns: Iterable[str], what: str = "pattern") -> list[str]:
    """Compile every pattern once; a malformed one raises UsageError naming it."""
    out = list(patterns)
    for pattern in out:
        try:
            compile_glob(pattern)
        except UsageError as exc:
            raise UsageError(f"{what}: {exc}") from None
    return out


def matches(rel_key: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    """Whether ``rel_key`` is selected: excludes, then includes, first match wins."""
    for pattern in exclude:
        if compile_glob(pattern).search(rel_key):
            return False
    for pattern in include:
        if compile_glob(pattern).search(rel_key):
            return True
    return not include


# ---------------------------------------------------------------- sizes, ages

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w|M|y)?")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "M": 30 * 86400.0,
    "y": 365 * 86400.0,
}


def parse_duration(text: str) -> float:
    """``90`` (seconds), ``90s``, ``15m``, ``2h``, ``7d``, ``2w``, ``1M``, ``1y``,
    ``1h30m``, ``1.5d`` -> seconds."""
    raw = text.strip()
    pos = 0
    total = 0.0
    matched = False
    while pos < len(raw):
        m = _DURATION.match(raw, pos)
        if m is None:
            break
        number, unit = m.groups()
        if unit is None and m.end() != len(raw):
            break
        total += float(number) * _UNIT_SECONDS[unit or "s"]
        pos = m.end()
        matched = True
    if not matched or pos != len(raw):
        raise UsageError(f"not a duration: {text!r} (e.g. 90s, 15m, 2h, 7d, 1h30m)")
    return total


def check_limits(
    min_size: int | None,
    max_size: int | None,
    min_age: float | None,
    max_age: float | None,
) -> None:
    """Refuse limits that select nothing, naming the options."""
    if min_size is not None and max_size is not None and min_size > max_size:
        raise UsageError(
            f"--min-size ({min_size} bytes) is larger than --max-size ({max_size} bytes)"
        )
    if min_age is not None and max_age is not None and min_age > max_age:
        raise UsageError(
            f"--min-age ({min_age:g} s) is longer than --max-age ({max_age:g} s): "
            "no object can be both"
        )
