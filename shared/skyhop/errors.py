"""The error family of skyhop.

Every error a user can cause or meet is a :class:`SkyhopError` whose ``str`` is
one line naming the problem; the CLI prints it and exits non-zero, without a
traceback. Subpackages raise these (or subclasses they own), never a cloud
SDK's exception.

Translating an SDK's errors is written once: :func:`translated` runs one SDK
call and turns what it raises into a SkyhopError with the adapter's
translator; :func:`from_status` maps an HTTP status the same way for every
cloud; :func:`first_line` is the one-line detail every message quotes. Each
cloud's translator lives in its kit (:mod:`skyhop.clouds`), each adapter adds
only what is its own (an already-existing queue, a gone receipt).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class SkyhopError(Exception):
    """Base class: a one-line, user-facing message."""

    exit_code: int = 1


class UsageError(SkyhopError):
    """Bad input from the user: a malformed URI, an unknown option value."""

    exit_code = 2


class NotFoundError(SkyhopError):
    """A source, bucket, job or object that does not exist."""


class AccessError(SkyhopError):
    """Missing credentials or permission denied. ``retryable``: whether a chunk that
    met it may pass when sent again (credentials can be renewed while the job
    retries, then resumed); a file or folder a local store may not write or read is
    that object's alone (``retryable=False``: it fails, the job goes on)."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def retryable(exc: SkyhopError) -> bool:
    """Whether a chunk that failed with ``exc`` may succeed when sent again: a
    StoreError or AccessError says; anything else (a checksum that did not match, a
    lost gateway) may pass. The one rule of the direct path and of gateways."""
    return bool(getattr(exc, "retryable", True))


class StoreError(SkyhopError):
    """An object store failed; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class ThrottledError(StoreError):
    """The store asked us to slow down (HTTP 429, 503 SlowDown); always retryable.

    :class:`skyhop.retry.Pacer` widens the gap between calls when it sees one.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class PreconditionFailed(StoreError):
    """An object changed while it was being read (ETag / generation mismatch)."""


class ConflictError(SkyhopError):
    """A conditional write lost: the record was not in the expected state."""


class IntegrityError(SkyhopError):
    """A chunk or object failed verification (checksum, authentication tag, size)."""


class GatewayError(SkyhopError):
    """A gateway could not be started, reached or died during a job."""


class Interrupted(SkyhopError):
    """A job stopped for a reason that may pass (a full disk, an unreachable store)
    and can be resumed as it is: ``skyhop cp --resume JOB`` once that is fixed."""


class PlanError(SkyhopError):
    """The planner cannot satisfy a request (unknown region, infeasible target)."""


# ---------------------------------------------------------------- translating SDK errors

#: turns an SDK exception met while doing ``what`` into a SkyhopError
Translator = Callable[[Exception, str], SkyhopError]


def first_line(value: object, *, limit: int = 300) -> str:
    """The first line of ``str(value)``, stripped and cut at ``limit`` characters; an
    exception with no message gives its type name."""
    text = str(value).strip()
    if text:
        return text.splitlines()[0].strip()[:limit]
    return type(value).__name__ if isinstance(value, BaseException) else ""


def translated(
    fn: Callable[[], T],
    what: str,
    translate: Translator,
    *,
    catch: tuple[type[Exception], ...] = (Exception,),
    passthrough: tuple[type[Exception], ...] = (),
) -> T:
    """Run one SDK call: a SkyhopError (and a ``passthrough`` exception) goes up as
    it is, anything else in ``catch`` as ``translate(exc, what)``; no SDK
    exception escapes."""
    try:
        return fn()
    except SkyhopError:
        raise
    except passthrough:
        raise
    except catch as exc:
        raise translate(exc, what) from None


def from_status(
    status: int, what: str, detail: str, *, kind: type[SkyhopError] = StoreError
) -> SkyhopError:
    """The SkyhopError of an HTTP ``status``: 401/403 access denied, 404 not found,
    412 precondition failed, else ``kind`` (a StoreError is retryable on 408, 429
    and 5xx)."""
    if status in (401, 403):
        return AccessError(f"{what}: access denied ({detail})")
    if status == 404:
        return NotFoundError(f"{what}: not found ({detail})")
    if status == 412:
        return PreconditionFailed(f"{what}: the object changed ({detail})")
    if kind is StoreError:
        return StoreError(f"{what}: {detail}", retryable=status in (408, 429) or status >= 500)
    return kind(f"{what}: {detail}")
